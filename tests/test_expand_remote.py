"""Expansions reading remote charts, planned through `prbot plan` against the real stands of
tests/stands.py: a real OCI registry (docker-registry, charts pushed with `helm push`) and a Helm
chart repository served over HTTPS with a self-signed certificate, both on 127.0.0.1 and reached only
as the operator's stand-ins (PRBOT_REMOTE_STANDINS, PRBOT_REMOTE_CA).  Flux HelmReleases (an OCI
HelmRepository, a chartRef to an OCIRepository, an https HelmRepository) and Argo CD Applications (an
OCI chart source, an https chart source with `$values` from this repository) each show the Deployment
their chart creates; a version bump shows the change; a semver range picks the highest tag.  Attacks
beside: a registry `render.remote` does not allow, and one spelled to climb out of an allowed prefix."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from stands import OciRegistry, helm_repository, https_chart_repository, self_signed
from support import commit_all, init_repo, write

from prbot.cli import main
from prbot.remote import OCI_MANIFEST
from prbot.tools import find_tool

HOST = "registry.example.com"
THIS = "https://github.com/acme/fleet"


def deploy_chart(where: Path, name: str, version: str) -> Path:
    """A chart NAME-VERSION holding one Deployment (its image tagged with the chart's version),
    packaged with the real `helm package`: the .tgz path."""
    src = where / f"src-{name}-{version}" / name
    (src / "templates").mkdir(parents=True)
    (src / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: {version}\n")
    (src / "values.yaml").write_text("replicas: 1\ngreeting: hello\n")
    (src / "templates" / "deployment.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n"
        "  replicas: {{ .Values.replicas }}\n  selector:\n    matchLabels: {app: {{ .Release.Name }}}\n"
        "  template:\n    metadata:\n      labels: {app: {{ .Release.Name }}}\n    spec:\n      containers:\n"
        "        - name: web\n          image: \"example.com/web:{{ .Chart.Version }}\"\n"
        "          env:\n            - {name: GREETING, value: {{ .Values.greeting | quote }}}\n")
    out = where / "packaged"
    out.mkdir(exist_ok=True)
    done = subprocess.run([find_tool("helm"), "package", str(src), "--destination", str(out)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": str(where)})
    assert done.returncode == 0, done.stderr
    return out / f"{name}-{version}.tgz"


def config(remote: list[str]) -> str:
    return ("version: 1\nenvironments: [{name: dev}]\napps:\n  - name: web\n    path: 'releases/{env}'\n"
            f"render:\n  remote: {json.dumps(remote)}\n  repository: [\"{THIS}\"]\n")


def plan(repo: Path, base: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    code = main(["plan", "--repo", str(repo), "--base", base, "--format", "json"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return code, json.loads(out)


def the_target(data: dict[str, Any]) -> dict[str, Any]:
    [target] = [t for t in data["targets"] if (t["app"], t["env"]) == ("web", "dev")]
    return dict(target)


def change(t: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    [got] = [c for c in t["changes"] if (c["kind"], c["name"]) == (kind, name)]
    return dict(got)


def repository(tmp_path: Path, remote: list[str]) -> tuple[Path, str]:
    repo = init_repo(tmp_path / "fleet")
    write(repo, ".prbot.yml", config(remote))
    return repo, commit_all(repo, "config")


def helm_release(source: str, chart: str = "web", version: str = "1.0.0", kind: str = "HelmRepository") -> str:
    return ("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: apps\n"
            f"spec:\n  interval: 5m\n  chart:\n    spec:\n      chart: {chart}\n      version: '{version}'\n"
            f"      sourceRef: {{kind: {kind}, name: {source}}}\n  values:\n    greeting: from the release\n")


def helm_repository_doc(name: str, url: str, oci: bool) -> str:
    return ("apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n"
            f"  name: {name}\n  namespace: apps\nspec:\n  interval: 5m\n  url: {url}\n"
            + ("  type: oci\n" if oci else ""))


def release_and_source(url: str, oci: bool) -> str:
    """HelmRelease apps/web of chart web 1.0.0 from HelmRepository apps/charts at `url`."""
    return helm_release("charts") + "---\n" + helm_repository_doc("charts", url, oci)


def bump(repo: Path, rel: str, old: str, new: str) -> str:
    text = (repo / rel).read_text()
    assert old in text, (rel, old)
    (repo / rel).write_text(text.replace(old, new))
    return commit_all(repo, f"{old} -> {new}")


def expanded_deployment(code: int, data: dict[str, Any], origin: str, action: str = "added") -> str:
    t = the_target(data)
    assert code == 0 and t.get("not_expanded") is None and t["error"] is None, t
    deployment = change(t, "Deployment", "web")
    assert (deployment["namespace"], deployment["action"], deployment.get("from")) == ("apps", action, origin)
    return str(deployment["diff"])


@pytest.fixture
def oci(registry: OciRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """web 1.0.0, 1.1.0 and 2.0.0 pushed to the real registry under a namespace of this test's own,
    reached as oci://registry.example.com/…: version -> manifest digest."""
    namespace = f"x{abs(hash(tmp_path.name)) % 10**8}"
    digests = {v: registry.push(deploy_chart(tmp_path, "web", v), namespace) for v in ("1.0.0", "1.1.0", "2.0.0")}
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"oci://{HOST}/=oci://{registry.host}/")
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))
    return {"namespace": namespace, **digests}


# --------------------------------------------------------------------------------------------
# Flux
# --------------------------------------------------------------------------------------------

def test_a_helmrelease_from_an_oci_helmrepository_shows_its_deployment_a_bump_and_a_range(
        tmp_path: Path, oci: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    url = f"oci://{HOST}/{oci['namespace']}"
    repo, base = repository(tmp_path, [f"{url}/"])
    write(repo, "releases/dev/release.yaml", release_and_source(url, True))
    head = commit_all(repo, "web 1.0.0")
    diff = expanded_deployment(*plan(repo, base, capsys), "HelmRelease apps/web")
    assert "image: example.com/web:1.0.0" in diff and "value: from the release" in diff

    bumped = bump(repo, "releases/dev/release.yaml", "version: '1.0.0'", "version: '1.1.0'")
    diff = expanded_deployment(*plan(repo, head, capsys), "HelmRelease apps/web", "changed")
    assert "-        image: example.com/web:1.0.0" in diff and "+        image: example.com/web:1.1.0" in diff

    bump(repo, "releases/dev/release.yaml", "version: '1.1.0'", "version: '>=1.0.0 <3.0.0'")
    diff = expanded_deployment(*plan(repo, bumped, capsys), "HelmRelease apps/web", "changed")
    assert "+        image: example.com/web:2.0.0" in diff          # the highest tag in the range


def tag_latest(registry: OciRegistry, namespace: str, version: str) -> None:
    """Tag web VERSION `latest` in the registry too (the registry API: the manifest put again)."""
    accept = {"Accept": OCI_MANIFEST}
    with urllib.request.urlopen(urllib.request.Request(
            f"http://{registry.host}/v2/{namespace}/web/manifests/{version}", headers=accept), timeout=10) as got:
        manifest = got.read()
    put = urllib.request.Request(f"http://{registry.host}/v2/{namespace}/web/manifests/latest", data=manifest,
                                 method="PUT", headers={"Content-Type": OCI_MANIFEST})
    with urllib.request.urlopen(put, timeout=10) as answer:
        assert answer.status == 201


def test_a_helmrelease_chartref_to_an_ocirepository_by_tag_semver_and_digest(
        tmp_path: Path, oci: dict[str, str], registry: OciRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"oci://{HOST}/{oci['namespace']}"
    repo, base = repository(tmp_path, [f"{url}/"])
    write(repo, "releases/dev/release.yaml",
          "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: web\n  namespace: apps\n"
          "spec:\n  interval: 5m\n  chartRef: {kind: OCIRepository, name: web}\n  values: {replicas: 2}\n---\n"
          "apiVersion: source.toolkit.fluxcd.io/v1beta2\nkind: OCIRepository\nmetadata:\n  name: web\n"
          f"  namespace: apps\nspec:\n  interval: 5m\n  url: {url}/web\n  ref:\n    tag: 1.0.0\n")
    head = commit_all(repo, "web by tag")
    diff = expanded_deployment(*plan(repo, base, capsys), "HelmRelease apps/web")
    assert "image: example.com/web:1.0.0" in diff and "replicas: 2" in diff

    semver = bump(repo, "releases/dev/release.yaml", "tag: 1.0.0", "semver: '1.x'")
    diff = expanded_deployment(*plan(repo, head, capsys), "HelmRelease apps/web", "changed")
    assert "+        image: example.com/web:1.1.0" in diff           # the highest 1.x tag, not 2.0.0

    digest = bump(repo, "releases/dev/release.yaml", "semver: '1.x'", f"digest: {oci['2.0.0']}")
    diff = expanded_deployment(*plan(repo, semver, capsys), "HelmRelease apps/web", "changed")
    assert "+        image: example.com/web:2.0.0" in diff

    # no ref: Flux's default, the tag `latest` (not a version: taken as named), here 1.1.0's manifest
    tag_latest(registry, oci["namespace"], "1.1.0")
    bump(repo, "releases/dev/release.yaml", f"  ref:\n    digest: {oci['2.0.0']}\n", "")
    diff = expanded_deployment(*plan(repo, digest, capsys), "HelmRelease apps/web", "changed")
    assert "+        image: example.com/web:1.1.0" in diff


def test_a_helmrelease_from_an_https_helmrepository_trusted_through_the_operators_ca(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    served = tmp_path / "served"
    helm_repository(served, [deploy_chart(tmp_path, "web", v) for v in ("1.0.0", "1.1.0", "2.0.0")])
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))
    with https_chart_repository(served, cert, key) as (url, hits):
        monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://charts.example.com/={url}/")
        monkeypatch.setenv("PRBOT_REMOTE_CA", str(cert))
        repo, base = repository(tmp_path, ["https://charts.example.com/charts/"])
        write(repo, "releases/dev/release.yaml", release_and_source("https://charts.example.com/charts", False))
        head = commit_all(repo, "web 1.0.0")
        diff = expanded_deployment(*plan(repo, base, capsys), "HelmRelease apps/web")
        assert "image: example.com/web:1.0.0" in diff

        bumped = bump(repo, "releases/dev/release.yaml", "version: '1.0.0'", "version: '1.1.0'")
        diff = expanded_deployment(*plan(repo, head, capsys), "HelmRelease apps/web", "changed")
        assert "+        image: example.com/web:1.1.0" in diff

        bump(repo, "releases/dev/release.yaml", "version: '1.1.0'", "version: '*'")
        diff = expanded_deployment(*plan(repo, bumped, capsys), "HelmRelease apps/web", "changed")
        assert "+        image: example.com/web:2.0.0" in diff
        assert "/charts/web-2.0.0.tgz" in hits


# --------------------------------------------------------------------------------------------
# Argo CD
# --------------------------------------------------------------------------------------------

def application(name: str, sources: str) -> str:
    return ("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata:\n"
            f"  name: {name}\n  namespace: argocd\nspec:\n  project: default\n"
            f"  destination: {{server: https://kubernetes.default.svc, namespace: apps}}\n{sources}")


def test_an_application_with_an_oci_chart_source_shows_its_deployment_a_bump_and_a_range(
        tmp_path: Path, oci: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = repository(tmp_path, [f"oci://{HOST}/{oci['namespace']}/"])
    write(repo, "releases/dev/app.yaml", application("web", (
        f"  source:\n    repoURL: {HOST}/{oci['namespace']}\n    chart: web\n    targetRevision: 1.0.0\n"
        "    helm:\n      valuesObject: {greeting: from argo}\n")))
    head = commit_all(repo, "web 1.0.0")
    diff = expanded_deployment(*plan(repo, base, capsys), "Application argocd/web")
    assert "image: example.com/web:1.0.0" in diff and "value: from argo" in diff

    bumped = bump(repo, "releases/dev/app.yaml", "targetRevision: 1.0.0", "targetRevision: 1.1.0")
    diff = expanded_deployment(*plan(repo, head, capsys), "Application argocd/web", "changed")
    assert "+        image: example.com/web:1.1.0" in diff

    bump(repo, "releases/dev/app.yaml", "targetRevision: 1.1.0", "targetRevision: '>=1.0.0'")
    diff = expanded_deployment(*plan(repo, bumped, capsys), "Application argocd/web", "changed")
    assert "+        image: example.com/web:2.0.0" in diff


def test_an_application_with_an_https_chart_source_and_values_from_this_repository(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    served = tmp_path / "served"
    helm_repository(served, [deploy_chart(tmp_path, "web", v) for v in ("1.0.0", "1.1.0", "2.0.0")])
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))
    with https_chart_repository(served, cert, key) as (url, _):
        monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://charts.example.com/={url}/")
        monkeypatch.setenv("PRBOT_REMOTE_CA", str(cert))
        repo, base = repository(tmp_path, ["https://charts.example.com/charts/"])
        write(repo, "values/web.yaml", "greeting: from this repository\nreplicas: 4\n")
        write(repo, "releases/dev/app.yaml", application("web", (
            "  sources:\n    - repoURL: https://charts.example.com/charts\n      chart: web\n"
            "      targetRevision: 1.0.0\n      helm:\n        valueFiles: [$values/values/web.yaml]\n"
            f"    - repoURL: {THIS}.git\n      targetRevision: HEAD\n      ref: values\n")))
        head = commit_all(repo, "web 1.0.0")
        diff = expanded_deployment(*plan(repo, base, capsys), "Application argocd/web")
        assert "image: example.com/web:1.0.0" in diff and "value: from this repository" in diff
        assert "replicas: 4" in diff

        values = bump(repo, "values/web.yaml", "replicas: 4", "replicas: 5")   # the values file is an input
        diff = expanded_deployment(*plan(repo, head, capsys), "Application argocd/web", "changed")
        assert "-  replicas: 4" in diff and "+  replicas: 5" in diff

        bumped = bump(repo, "releases/dev/app.yaml", "targetRevision: 1.0.0", "targetRevision: 1.1.0")
        diff = expanded_deployment(*plan(repo, values, capsys), "Application argocd/web", "changed")
        assert "+        image: example.com/web:1.1.0" in diff

        bump(repo, "releases/dev/app.yaml", "targetRevision: 1.1.0", "targetRevision: 1.x")
        code, data = plan(repo, bumped, capsys)
        t = the_target(data)
        # 1.x: still 1.1.0, the highest 1.x (2.0.0 is outside it): only the Application changed
        assert code == 0 and t.get("not_expanded") is None, t
        assert [(c["kind"], c["action"]) for c in t["changes"]] == [("Application", "changed")]


# --------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("url", "why"), [
    ("oci://evil.example.com/charts", "oci://evil.example.com/charts/web (version 1.0.0) is not allowed"),
    # spelled to climb out of the allowed prefix: the path is not normalised into it
    ("oci://{host}/{ns}/../private", "/../private/web (version 1.0.0) is not allowed")])
def test_a_helmrelease_naming_a_registry_render_remote_does_not_allow_is_not_expanded(
        url: str, why: str, tmp_path: Path, oci: dict[str, str], registry: OciRegistry,
        capsys: pytest.CaptureFixture[str]) -> None:
    url = url.format(host=HOST, ns=oci["namespace"])
    repo, base = repository(tmp_path, [f"oci://{HOST}/{oci['namespace']}/"])
    write(repo, "releases/dev/release.yaml", release_and_source(url, True))
    commit_all(repo, "a release from elsewhere")
    code, data = plan(repo, base, capsys)
    t = the_target(data)
    assert code == 1                                           # a blind spot: not green
    assert t["status"] == "added" and t["error"] is None      # planned, with its own objects
    assert {(c["kind"], c["name"]) for c in t["changes"]} == {("HelmRelease", "web"), ("HelmRepository", "charts")}
    [reason] = t["not_expanded"]
    assert reason.startswith("HelmRelease apps/web: ") and why in reason, reason
    assert not registry.requests(r"/private/")                # nothing asked of the registry outside the prefix

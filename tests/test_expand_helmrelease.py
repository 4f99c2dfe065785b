"""Flux HelmReleases expanded: the plan shows what the release creates (the chart rendered with its
values, valuesFrom, postRenderers), with real git repositories, the real kubectl/Helm and a chart
repository served by a local stand-in (PRBOT_REMOTE_STANDINS, as the operator maps one in).  Attacks
beside: chart paths leaving the repository, another repository's GitRepository, Secret values,
self-expanding charts, oversized values."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import logging
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import commit_all, init_repo, write

from prbot.cli import main
from prbot.expand.helmrelease import release_name, set_path
from prbot.remote import pick_chart_versions, version_matches

CORPUS = Path(__file__).parent / "corpus" / "flux-helm-local"
FROM = "HelmRelease podinfo/podinfo"
REDIS_VERSIONS = ("1.2.0", "1.3.0", "1.4.0-rc.1", "2.0.0")


# --------------------------------------------------------------------------------------------
# A chart repository on a local stand-in host
# --------------------------------------------------------------------------------------------

class _Served(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        _Served.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


def _chart_archive(version: str) -> bytes:
    files = {"redis/Chart.yaml": f"apiVersion: v2\nname: redis\nversion: {version}\n",
             "redis/values.yaml": "architecture: replication\n",
             "redis/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                        "  name: {{ .Release.Name }}-chart\n"
                                        "data:\n  version: {{ .Chart.Version | quote }}\n"
                                        "  architecture: {{ .Values.architecture }}\n"}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def charts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """https://charts.example.com/charts/ served from a local directory: chart redis in four versions."""
    root = tmp_path / "standin"
    entries = []
    for version in REDIS_VERSIONS:
        data = _chart_archive(version)
        write(root, f"charts/redis-{version}.tgz", "")
        (root / f"charts/redis-{version}.tgz").write_bytes(data)
        entries.append(f"    - name: redis\n      version: {version}\n"
                       f"      digest: {hashlib.sha256(data).hexdigest()}\n"
                       f"      urls: [redis-{version}.tgz]\n")
    write(root, "charts/index.yaml", "apiVersion: v1\nentries:\n  redis:\n" + "".join(entries))
    _Served.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Served, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://charts.example.com/=http://127.0.0.1:{server.server_address[1]}/")
    try:
        yield root
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def layout(tmp_path: Path, config: str | None = None) -> tuple[Path, str]:
    """The corpus layout in a git repository: a first commit holding only `.prbot.yml` (the base a
    plan of everything starts from), then the layout."""
    repo = init_repo(tmp_path / "fleet")
    write(repo, ".prbot.yml", config if config is not None else (CORPUS / ".prbot.yml").read_text())
    base = commit_all(repo, "config")
    for path in CORPUS.rglob("*"):
        if path.is_file() and path.name != ".prbot.yml":
            write(repo, str(path.relative_to(CORPUS)), path.read_text())
    commit_all(repo, "layout")
    return repo, base


def plan(repo: Path, base: str, capsys: pytest.CaptureFixture[str], fmt: str = "json") -> tuple[int, Any]:
    code = main(["plan", "--repo", str(repo), "--base", base, "--format", fmt])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return code, json.loads(out) if fmt == "json" else out


def targets(data: dict) -> dict[str, dict]:
    return {f"{t['app']}/{t['env']}": t for t in data["targets"]}


def changes(t: dict) -> dict[tuple[str, str | None, str], tuple[str, str | None]]:
    return {(c["kind"], c["namespace"], c["name"]): (c["action"], c.get("from")) for c in t["changes"]}


def diff_of(t: dict, kind: str, name: str) -> str:
    [got] = [c["diff"] for c in t["changes"] if (c["kind"], c["name"]) == (kind, name)]
    return str(got)


def edit(repo: Path, rel: str, old: str, new: str) -> None:
    text = (repo / rel).read_text()
    assert old in text, (rel, old)
    (repo / rel).write_text(text.replace(old, new))


# --------------------------------------------------------------------------------------------
# What a release creates
# --------------------------------------------------------------------------------------------

def test_every_release_is_expanded_from_this_repository_and_the_chart_repository(
        tmp_path: Path, charts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = layout(tmp_path)
    code, data = plan(repo, base, capsys)
    got = targets(data)
    assert code == 0, data
    assert {k: (t["status"], t.get("not_expanded")) for k, t in got.items()} == {
        k: ("added", None) for k in ("podinfo/staging", "podinfo/production", "redis/staging", "redis/production")}
    staging = changes(got["podinfo/staging"])
    assert staging[("Deployment", "podinfo", "podinfo")] == ("added", FROM)
    # the chart's crds/ are installed (install.crds defaults to Create); cluster-scoped, no namespace
    assert staging[("CustomResourceDefinition", None, "canaries.podinfo.example.com")] == ("added", FROM)
    assert staging[("HelmRelease", "podinfo", "podinfo")] == ("added", None)
    assert "image: ghcr.io/stefanprodan/podinfo:6.7.1" in diff_of(got["podinfo/staging"], "Deployment", "podinfo")
    assert "value: hello from the base" in diff_of(got["podinfo/staging"], "Deployment", "podinfo")
    # postRenderers (production only): kustomize's images and a JSON patch on the chart's output
    production = diff_of(got["podinfo/production"], "Deployment", "podinfo")
    assert "image: registry.acme.example/mirror/podinfo:6.7.0" in production
    assert "acme.example/tier: production" in production and "replicas: 3" in production
    # a chart repository: semver ranges resolved against its index as Flux does (highest match, no
    # pre-release unless asked); release cache-redis (targetNamespace-name) installed in `cache`
    for env, version in (("staging", "1.3.0"), ("production", "1.2.0")):
        redis = got[f"redis/{env}"]
        assert changes(redis)[("ConfigMap", "cache", "cache-redis-chart")] == ("added", "HelmRelease redis/redis")
        assert f'version: {version}' in diff_of(redis, "ConfigMap", "cache-redis-chart")
        assert "architecture: standalone" in diff_of(redis, "ConfigMap", "cache-redis-chart")
    assert "/charts/redis-1.3.0.tgz" in _Served.requests and "/charts/redis-1.4.0-rc.1.tgz" not in _Served.requests
    code, text = plan(repo, base, capsys, "markdown")
    assert code == 0 and "`apps/Deployment podinfo/podinfo` · from `HelmRelease podinfo/podinfo`" in text


def test_values_valuesfrom_and_the_chart_each_change_the_deployment(
        tmp_path: Path, charts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, _ = layout(tmp_path)
    head = commit_all(repo, "settled")
    edit(repo, "apps/staging/podinfo-values.yaml", "tag: 6.7.1", "tag: 6.7.2")          # values
    code, data = plan(repo, head, capsys)
    assert code == 0 and list(targets(data)) == ["podinfo/staging"]
    staging = targets(data)["podinfo/staging"]
    assert changes(staging) == {("HelmRelease", "podinfo", "podinfo"): ("changed", None),
                                ("Deployment", "podinfo", "podinfo"): ("changed", FROM)}
    assert "+        image: ghcr.io/stefanprodan/podinfo:6.7.2" in diff_of(staging, "Deployment", "podinfo")

    head = commit_all(repo, "values")
    edit(repo, "apps/base/podinfo/podinfo-values.yaml", "hello from the base", "hi there")   # valuesFrom
    code, data = plan(repo, head, capsys)
    assert code == 0 and sorted(targets(data)) == ["podinfo/production", "podinfo/staging"]
    for t in targets(data).values():
        assert changes(t) == {("ConfigMap", "podinfo", "podinfo-values"): ("changed", None),
                              ("Deployment", "podinfo", "podinfo"): ("changed", FROM)}
        assert "+          value: hi there" in diff_of(t, "Deployment", "podinfo")

    head = commit_all(repo, "valuesFrom")
    # the chart: no file of the apps/ overlays changes, yet both are affected (the chart is in their closure)
    edit(repo, "charts/podinfo/templates/deployment.yaml", "  replicas:", "  minReadySeconds: 5\n  replicas:")
    code, data = plan(repo, head, capsys)
    assert code == 0 and sorted(targets(data)) == ["podinfo/production", "podinfo/staging"]
    for t in targets(data).values():
        assert changes(t) == {("Deployment", "podinfo", "podinfo"): ("changed", FROM)}
        assert "+  minReadySeconds: 5" in diff_of(t, "Deployment", "podinfo")

    head = commit_all(repo, "chart")
    edit(repo, "apps/base/podinfo/release.yaml", "  valuesFrom:", "  install:\n    crds: Skip\n  valuesFrom:")
    code, data = plan(repo, head, capsys)
    for t in targets(data).values():
        assert changes(t)[("CustomResourceDefinition", None, "canaries.podinfo.example.com")] == ("removed", FROM)


def test_a_chart_repository_render_remote_does_not_allow_is_named_and_the_target_still_renders(
        tmp_path: Path, charts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = (CORPUS / ".prbot.yml").read_text().replace('  remote: ["https://charts.example.com/charts/"]\n', "")
    repo, base = layout(tmp_path, config)
    code, data = plan(repo, base, capsys)
    got = targets(data)
    assert code == 1                                   # a blind spot: not green
    for env, version in (("staging", "1.x"), ("production", ">=1.0.0 <1.3.0")):
        redis = got[f"redis/{env}"]
        assert redis["status"] == "added" and redis["error"] is None          # not skipped: its own objects
        assert set(changes(redis)) == {("HelmRelease", "redis", "redis"), ("HelmRepository", "redis", "acme")}
        assert redis["not_expanded"] == [
            f"HelmRelease redis/redis: https://charts.example.com/charts/redis (version {version}) is not allowed "
            "by render.remote in .prbot.yml"]
    assert got["podinfo/staging"].get("not_expanded") is None
    assert _Served.requests == []
    code, text = plan(repo, base, capsys, "markdown")
    assert code == 1
    assert "❌ **Not expanded**" in text and "allow the chart's or source's URL prefix in `render.remote`" in text
    assert ("- not expanded: HelmRelease redis/redis: https://charts.example.com/charts/redis (version 1.x) is not "
            "allowed by render.remote in .prbot.yml") in text.replace("\u200b", "")   # autolinks broken, as all PR text


def test_semver_ranges_read_as_flux_reads_them() -> None:
    cases = {("6.5.4", "6.x"): True, ("7.0.0", "6.x"): False, ("6.6.0-rc.1", "6.x"): False,
             ("1.5.0", ">=1.0 <2"): True, ("2.0.0", ">=1.0 <2"): False, ("3.1.0", "*"): True,
             ("3.1.0-beta.1", "*"): False, ("1.0.0-alpha.2", ">=1.0.0-alpha"): True,
             ("1.2.9", "~1.2.3"): True, ("1.3.0", "~1.2.3"): False, ("1.9.0", "^1.2.3"): True,
             ("2.0.0", "^1.2.3"): False, ("0.2.9", "^0.2.3"): True, ("0.3.0", "^0.2.3"): False,
             ("1.4.5", "1.2 - 1.4.5"): True, ("1.4.6", "1.2 - 1.4.5"): False, ("2.1.0", "1.x || 2.x"): True,
             ("5.0.0", ">=4.0.0, <6"): True, ("1.2.0", ">1.2"): False, ("1.3.0", ">1.2"): True}
    assert {case: version_matches(*case) for case in cases} == cases
    entries = [{"version": v} for v in ("6.0.0", "6.5.4", "7.0.0", "6.11.0-rc.1", "6.10.1")]
    assert [e["version"] for e in pick_chart_versions(entries, "6.x")] == ["6.10.1", "6.5.4", "6.0.0"]
    assert [e["version"] for e in pick_chart_versions(entries, "6.5.4")] == ["6.5.4"]
    assert pick_chart_versions(entries, "8.x") == []


def test_release_names_and_target_paths_follow_flux() -> None:
    obj = {"metadata": {"name": "podinfo"}, "spec": {"targetNamespace": "apps"}}
    assert release_name(obj) == "apps-podinfo"
    assert release_name({"metadata": {"name": "x"}, "spec": {"releaseName": "given"}}) == "given"
    long = {"metadata": {"name": "n" * 60}, "spec": {}}
    assert release_name(long) == "n" * 40 + "-" + hashlib.sha256(("n" * 60).encode()).hexdigest()[:12]
    assert set_path({}, r"a.b\.c[1].d", "v") == {"a": {"b.c": [None, {"d": "v"}]}}


# --------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("chart", ["../../etc", "/etc", "./charts/evil", "./charts/leaky"])
def test_a_chart_path_leaving_the_repository_is_refused(
        chart: str, tmp_path: Path, charts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, _ = layout(tmp_path)
    os.symlink("/etc", repo / "charts/evil")
    shutil.copytree(repo / "charts/podinfo", repo / "charts/leaky")      # a chart holding one link out
    os.symlink("/etc/passwd", repo / "charts/leaky/templates/passwd.yaml")
    head = commit_all(repo, "links")
    edit(repo, "apps/base/podinfo/release.yaml", "chart: ./charts/podinfo", f"chart: {chart}")
    code, data = plan(repo, head, capsys)
    assert code == 1
    for t in targets(data).values():
        assert t["status"] == "changed" and t["error"] is None           # its own objects still shown
        [reason] = t["not_expanded"]
        assert reason.startswith(f"{FROM}: refused: ") and ("outside the repository" in reason
                                                           or "leaves the repository" in reason), reason
        assert changes(t) == {("HelmRelease", "podinfo", "podinfo"): ("changed", None)}
        assert "root:" not in json.dumps(t)


@pytest.mark.parametrize("url", ["https://github.com/evil/flux-fleet.git", "https://github.com/acme/flux-fleet-evil",
                                 "https://github.com.evil.example/acme/flux-fleet", "file:///work/acme/flux-fleet"])
def test_a_gitrepository_of_another_repository_is_not_read_as_this_one(
        url: str, tmp_path: Path, charts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, _ = layout(tmp_path)
    head = commit_all(repo, "settled")
    edit(repo, "apps/base/podinfo/source.yaml", "https://github.com/acme/flux-fleet.git", url)
    code, data = plan(repo, head, capsys)
    assert code == 1
    for t in targets(data).values():
        [reason] = t["not_expanded"]
        assert "GitRepository podinfo/fleet" in reason and "which is not this repository" in reason
        # what the release made at base is not shown as removed: unknown, named as not expanded
        assert changes(t) == {("GitRepository", "podinfo", "fleet"): ("changed", None)}


def test_this_repository_is_also_its_origin_in_any_spelling(tmp_path: Path, charts: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from support import git

    config = (CORPUS / ".prbot.yml").read_text().replace('  repository: ["https://github.com/acme/flux-fleet"]\n', "")
    repo, base = layout(tmp_path, config)
    code, data = plan(repo, base, capsys)
    assert "is not this repository" in targets(data)["podinfo/staging"]["not_expanded"][0]
    git(repo, "remote", "add", "origin", "git@GitHub.com:acme/flux-fleet.git")
    code, data = plan(repo, base, capsys)
    assert code == 0 and targets(data)["podinfo/staging"].get("not_expanded") is None
    assert changes(targets(data)["podinfo/staging"])[("Deployment", "podinfo", "podinfo")] == ("added", FROM)


SECRET = "S3cr3t-Value-Never-Shown"


def test_a_secret_in_valuesfrom_never_reaches_the_comment_the_json_the_log_or_an_error(
        tmp_path: Path, charts: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    repo, _ = layout(tmp_path)
    head = commit_all(repo, "settled")
    write(repo, "apps/staging/kustomization.yaml", (repo / "apps/staging/kustomization.yaml").read_text()
          + f"secretGenerator:\n  - name: redis-auth\n    namespace: podinfo\n    literals: [password={SECRET}]\n"
          "generatorOptions:\n  disableNameSuffixHash: true\n")
    edit(repo, "apps/staging/podinfo-values.yaml", "spec:\n", "spec:\n  valuesFrom:\n    - kind: ConfigMap\n"
         "      name: podinfo-values\n    - kind: Secret\n      name: redis-auth\n      valuesKey: password\n"
         "      targetPath: redis.password\n")
    caplog.set_level(logging.DEBUG)
    code, data = plan(repo, head, capsys)
    staging = targets(data)["podinfo/staging"]
    assert code == 0 and staging.get("not_expanded") is None
    assert changes(staging)[("Secret", "podinfo", "podinfo-redis")] == ("added", FROM)   # the chart used it
    code, text = plan(repo, head, capsys, "markdown")
    # a chart failing with the value in its message: the reason is shown without it
    write(repo, "charts/podinfo/templates/check.yaml",
          '{{- if .Values.redis.password }}{{ fail (printf "refusing password %s" .Values.redis.password) }}'
          '{{- end }}\n')
    commit_all(repo, "a chart failing")           # a new file: planned once committed (tracked)
    code, failed = plan(repo, head, capsys)
    [reason] = targets(failed)["podinfo/staging"]["not_expanded"]
    assert "refusing password ***" in reason
    _, failed_text = plan(repo, head, capsys, "markdown")
    for shown in (json.dumps(data), text, json.dumps(failed), failed_text, caplog.text):
        assert SECRET not in shown
        assert "UzNjcjN0LVZhbHVlLU5ldmVyLVNob3du" not in shown          # nor its base64


def test_a_release_expanding_into_itself_stops_at_the_depth_limit(
        tmp_path: Path, charts: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, _ = layout(tmp_path)
    head = commit_all(repo, "settled")
    write(repo, "charts/podinfo/templates/again.yaml",
          "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {{ .Release.Name }}x\n"
          "  namespace: podinfo\nspec:\n  install:\n    crds: Skip\n  chart:\n    spec:\n"
          "      chart: ./charts/podinfo\n      sourceRef:\n"
          "        kind: GitRepository\n        name: fleet\n")
    commit_all(repo, "a chart releasing itself")
    code, data = plan(repo, head, capsys)
    staging = targets(data)["podinfo/staging"]
    assert code == 1 and staging["not_expanded"] == [
        "HelmRelease podinfo/podinfoxxx: expansions nested more than 3 deep"]
    assert changes(staging)[("Deployment", "podinfo", "podinfoxx")] == (
        "added", "HelmRelease podinfo/podinfo › HelmRelease podinfo/podinfox › HelmRelease podinfo/podinfoxx")


def test_huge_values_are_refused_within_the_limits(tmp_path: Path, charts: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    repo, _ = layout(tmp_path)
    head = commit_all(repo, "settled")
    big = "".join(f"  k{i}: {'v' * 100}\n" for i in range(12_000))            # ~1.3 MB of values
    write(repo, "apps/base/podinfo/podinfo-values.yaml", "ui:\n  message: hi\nextra:\n" + big)
    code, data = plan(repo, head, capsys)
    for t in targets(data).values():
        assert t["not_expanded"] == [f"{FROM}: refused: valuesFrom holds more than 1024 KiB"]
        assert changes(t)[("ConfigMap", "podinfo", "podinfo-values")][0] == "changed"
    write(repo, "apps/base/podinfo/podinfo-values.yaml", "ui:\n  message: hi\n")
    edit(repo, "apps/staging/podinfo-values.yaml", "  values:\n",
         "  values:\n    extra:\n" + big.replace("  k", "      k"))
    code, data = plan(repo, head, capsys)
    assert targets(data)["podinfo/staging"]["not_expanded"] == [f"{FROM}: refused: its values are larger than 1024 KiB"]

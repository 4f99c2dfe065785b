"""Argo CD Applications expanded when their target renders: the sources rendered with the real
kubectl and Helm in the jail, what cannot be rendered named per Application, never the target failed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import commit_all, init_repo, write
from test_remote import chart_repository, standin  # noqa: F401 - the fixture, used by name

from prbot.expand import normalise_repository_url
from prbot.model import Target
from prbot.remote import Remotes, vendor
from prbot.render import render_target
from prbot.renderers.closure import input_closure

CORPUS = Path(__file__).parent / "corpus" / "argocd-example-apps"
URL = "https://github.com/acme/argocd-example-apps.git"
THIS = (normalise_repository_url(URL),)


def render(root: Path, path: str = "apps") -> Any:
    return render_target(root, Target("apps", "dev", path, "plain"), repository_urls=THIS)


def objects_of(rendered: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in rendered}


def application(name: str, source: dict[str, Any] | None = None, sources: list[dict[str, Any]] | None = None,
                namespace: str = "web") -> str:
    spec: dict[str, Any] = {"project": "default", "destination": {"server": "https://kubernetes.default.svc",
                                                                  "namespace": namespace}}
    if source is not None:
        spec["source"] = source
    if sources is not None:
        spec["sources"] = sources
    return yaml.safe_dump({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                           "metadata": {"name": name, "namespace": "argocd"}, "spec": spec}, sort_keys=False)


DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "ghcr.io/acme/web:1.0.0"}]
"""
CHART = "apiVersion: v2\nname: web\nversion: 0.1.0\n"
CHART_TEMPLATE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
data:
  colour: {{ .Values.colour | quote }}
  size: {{ .Values.size | quote }}
"""


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(CORPUS, root)
    return root


# -- the example layout --------------------------------------------------------------------------------------

def test_app_of_apps_renders_every_kind_of_source(corpus: Path) -> None:
    got = render(corpus, "argocd/prod")
    assert got.not_expanded == []
    objs = objects_of(got)
    assert {k for k in objs if k[0] == "Application"} == {
        ("Application", "argocd", name) for name in
        ("root-prod", "guestbook-prod", "kustomize-guestbook-prod", "helm-guestbook-prod", "multi-guestbook-prod")}
    # a plain directory, the destination namespace set on what names none
    plain = objs[("Deployment", "guestbook-prod", "guestbook-ui")]
    assert plain["spec"]["template"]["spec"]["containers"][0]["image"] == "gcr.io/heptio-images/ks-guestbook-demo:0.2"
    # kustomize with the Application's options around the directory's own kustomization
    kust = objs[("Deployment", "kustomize-guestbook-prod", "kustomize-guestbook-ui-prod")]
    assert kust["metadata"]["labels"] == {"env": "prod"}
    assert kust["spec"]["template"]["spec"]["containers"][0]["image"] == "gcr.io/heptio-images/ks-guestbook-demo:0.1"
    # a chart with valueFiles and parameters: values-prod.yaml then --set
    helm = objs[("Deployment", "helm-guestbook-prod", "helm-guestbook-prod")]
    assert helm["spec"]["replicas"] == 3
    assert objs[("Service", "helm-guestbook-prod", "helm-guestbook-prod")]["spec"]["type"] == "LoadBalancer"
    # multi-source: the chart with $values/envs/prod/guestbook.yaml, release name from the Application
    multi = objs[("Deployment", "multi-guestbook-prod", "guestbook")]
    assert multi["spec"]["replicas"] == 2
    assert multi["spec"]["template"]["spec"]["containers"][0]["image"] == "gcr.io/google-samples/gb-frontend:v4"
    index = got.index(multi)
    assert got.origin_of(index) == "Application argocd/root-prod › Application argocd/multi-guestbook-prod"


def test_a_missing_value_file_is_ignored_when_the_application_says_so(corpus: Path) -> None:
    got = render(corpus, "argocd/dev")
    assert got.not_expanded == []
    objs = objects_of(got)
    assert objs[("Deployment", "helm-guestbook-dev", "helm-guestbook-dev")]["spec"]["replicas"] == 1
    assert objs[("Service", "helm-guestbook-dev", "helm-guestbook-dev")]["spec"]["type"] == "ClusterIP"


def test_what_the_applications_read_is_in_the_targets_closure(corpus: Path) -> None:
    files = input_closure(corpus, Target("root", "prod", "argocd/prod", "plain")).files
    assert {"apps/templates/multi-source.yaml", "apps/values-prod.yaml", "guestbook/guestbook-ui-svc.yaml",
            "kustomize-guestbook/kustomization.yaml", "helm-guestbook/values-prod.yaml",
            "envs/prod/guestbook.yaml", "envs/dev/guestbook.yaml"} <= files


# -- attacks -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "why"), [
    ("../../", "climbs out of the repository"), ("/etc", "is absolute"), ("link", "outside the repository")])
def test_a_path_leaving_the_repository_is_refused_and_named(tmp_path: Path, path: str, why: str) -> None:
    outside = tmp_path / "outside"
    write(outside, "secret.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n")
    root = tmp_path / "repo"
    write(root, "apps/web.yaml", application("web", {"repoURL": URL, "path": path}))
    (root / "link").symlink_to(outside, target_is_directory=True)
    got = render(root)
    assert [o["kind"] for o in got] == ["Application"]
    [reason] = got.not_expanded
    assert reason.startswith("Application argocd/web: ") and why in reason, reason


@pytest.mark.parametrize("url", [
    "https://github.com/acme/argocd-example-apps-evil", "https://github.com.evil.com/acme/argocd-example-apps",
    "https://github.com/acme/argocd-example-apps@evil.com/x", "https://evil.com/github.com/acme/argocd-example-apps",
    "https://github.com/acme/argocd-example-apps/../../evil/x", "file:///acme/argocd-example-apps"])
def test_another_repository_is_never_read_from_the_checkout(tmp_path: Path, url: str) -> None:
    root = tmp_path / "repo"
    write(root, "apps/web.yaml", application("web", {"repoURL": url, "path": "manifests"}))
    write(root, "manifests/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local-only}\n")
    got = render(root)
    assert [o["kind"] for o in got] == ["Application"]
    [reason] = got.not_expanded
    assert "is in another repository" in reason and reason.startswith("Application argocd/web: spec.source: ")


def test_credentials_in_a_repo_url_are_never_shown(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, "apps/web.yaml", application("web", {"repoURL": "https://x-access-token:ghs_s3cr3t@github.com/o/r",
                                                     "path": "p"}))
    [reason] = render(root).not_expanded
    assert "s3cr3t" not in reason and "x-access-token" not in reason and "https://github.com/o/r" in reason


def test_userinfo_naming_this_repository_still_reads_it(tmp_path: Path) -> None:
    """The matching strips credentials and `.git`: the same repository spelled another way is local."""
    root = tmp_path / "repo"
    write(root, "apps/web.yaml", application("web", {"repoURL": "https://token@github.com/acme/argocd-example-apps/",
                                                     "path": "manifests"}))
    write(root, "manifests/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: local}\n")
    got = render(root)
    assert got.not_expanded == [] and ("ConfigMap", "web", "local") in objects_of(got)


def _chart_repo(root: Path) -> None:
    write(root, "charts/web/Chart.yaml", CHART)
    write(root, "charts/web/values.yaml", "colour: blue\nsize: s\n")
    write(root, "charts/web/templates/cm.yaml", CHART_TEMPLATE)


@pytest.mark.parametrize(("value_file", "why"), [
    ("../../../etc/passwd", "climbs out of the repository"), ("/etc/passwd", "is absolute"),
    ("$values/../../etc/passwd", "climbs out of the repository"), ("$vals/web.yaml", "names no source"),
    ("$values/config/leak.yaml", "outside the repository"), ("../../config/leak.yaml", "outside the repository")])
def test_value_files_leaving_the_repository_or_undeclared_are_refused(tmp_path: Path, value_file: str,
                                                                      why: str) -> None:
    root = tmp_path / "repo"
    _chart_repo(root)
    (root / "config").mkdir()
    (root / "config/leak.yaml").symlink_to("/etc/passwd")
    write(root, "apps/web.yaml", application("web", sources=[
        {"repoURL": URL, "path": "charts/web", "helm": {"valueFiles": [value_file]}},
        {"repoURL": URL, "ref": "values"}]))
    got = render(root)
    assert [o["kind"] for o in got] == ["Application"]
    [reason] = got.not_expanded
    assert why in reason and "root:" not in reason, reason


def test_helm_values_parameters_and_values_object_in_argo_cds_order(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _chart_repo(root)
    write(root, "envs/prod/web.yaml", "colour: red\nsize: m\n")
    write(root, "apps/web.yaml", application("web", sources=[
        {"repoURL": URL, "path": "charts/web", "helm": {
            "valueFiles": ["$config/envs/prod/web.yaml"], "valuesObject": {"size": "l"},
            "parameters": [{"name": "colour", "value": "green,ish", "forceString": True}]}},
        {"repoURL": URL, "ref": "config"}]))
    got = render(root)
    assert got.not_expanded == []
    assert objects_of(got)[("ConfigMap", "web", "web")]["data"] == {"colour": "green,ish", "size": "l"}


def test_an_app_of_apps_cycle_stops_at_the_depth_limit(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, "apps/self.yaml", application("self", {"repoURL": URL, "path": "apps"}, namespace="argocd"))
    got = render(root)
    assert all(o["kind"] == "Application" for o in got) and 1 < len(got) <= 4
    [reason] = got.not_expanded
    assert reason == "Application argocd/self: expansions nested more than 3 deep"


def test_a_remote_chart_not_allowed_is_named_and_the_target_kept(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, "apps/redis.yaml", application("redis", {"repoURL": "https://charts.bitnami.com/bitnami",
                                                         "chart": "redis", "targetRevision": "17.3.7"}))
    write(root, "apps/oci.yaml", application("podinfo", {"repoURL": "ghcr.io/stefanprodan/charts",
                                                         "chart": "podinfo", "targetRevision": "6.5.0"}))
    write(root, "apps/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept}\n")
    got = render(root)
    assert sorted(o["metadata"]["name"] for o in got) == ["kept", "podinfo", "redis"]
    assert sorted(got.not_expanded) == [
        "Application argocd/podinfo: oci://ghcr.io/stefanprodan/charts/podinfo (version 6.5.0) is not allowed "
        "by render.remote in .prbot.yml",
        "Application argocd/redis: https://charts.bitnami.com/bitnami/redis (version 17.3.7) is not allowed by "
        "render.remote in .prbot.yml"]


def test_kustomize_options_reading_outside_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, "web/kustomization.yaml", "resources: [deploy.yaml]\n")
    write(root, "web/deploy.yaml", DEPLOYMENT)
    write(root, "apps/web.yaml", application("web", {"repoURL": URL, "path": "web", "kustomize": {
        "patches": [{"path": "../../../etc/passwd"}]}}))
    got = render(root)
    [reason] = got.not_expanded
    assert "patch ../../../etc/passwd climbs out of the repository" in reason


def test_a_plain_directory_with_recurse_include_and_exclude(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    for rel in ("m/a.yaml", "m/sub/b.yaml", "m/sub/skip.yaml", "m/README.md"):
        write(root, rel, f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {Path(rel).stem}}}\n"
              if rel.endswith(".yaml") else "not yaml\n")
    write(root, "apps/m.yaml", application("m", {"repoURL": URL, "path": "m", "directory": {
        "recurse": True, "exclude": "*skip*"}}))
    write(root, "apps/j.yaml", application("j", {"repoURL": URL, "path": "j"}))
    write(root, "j/main.jsonnet", "{}\n")
    got = render(root)
    assert sorted(k[2] for k in objects_of(got) if k[0] == "ConfigMap") == ["a", "b"]
    assert got.not_expanded == ["Application argocd/j: spec.source: j/main.jsonnet is jsonnet, which prbot does "
                                "not render"]


def test_an_allowed_chart_from_a_chart_repository_renders_with_the_applications_values(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://charts.example.com/={url}/")
    chart_repository(served)
    root = tmp_path / "repo"
    write(root, "apps/web.yaml", application("web", sources=[
        {"repoURL": "https://charts.example.com/charts/", "chart": "web", "targetRevision": "1.2.0",
         "helm": {"releaseName": "site", "valueFiles": ["values.yaml", "values-missing.yaml", "$values/envs/web.yaml"],
                  "ignoreMissingValueFiles": True, "parameters": [{"name": "extra", "value": "x"}]}},
        {"repoURL": URL, "targetRevision": "HEAD", "ref": "values"}]))
    write(root, "envs/web.yaml", "greeting: hi\n")
    target = Target("apps", "dev", "apps", "plain")
    ref = "https://charts.example.com/charts/web (version 1.2.0)"
    closure = input_closure(root, target)
    assert closure.optional_remote == (ref,) and "envs/web.yaml" in closure.files
    with Remotes(prefixes=("https://charts.example.com/charts/",), cache_dir=tmp_path / "cache") as remotes:
        got = render_target(root, target, remotes={ref: vendor(remotes, ref)}, repository_urls=THIS)
    assert got.not_expanded == []
    assert objects_of(got)[("ConfigMap", "web", "site-chart")]["data"] == {"greeting": "hi"}


def test_kustomize_patches_components_and_replicas_wrap_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write(root, "web/base/kustomization.yaml", "namePrefix: base-\nresources: [deploy.yaml]\n")
    write(root, "web/base/deploy.yaml", DEPLOYMENT)
    write(root, "web/overlay/kustomization.yaml", "resources: [../base]\n")
    write(root, "web/overlay/fix.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: base-web}\n"
                                        "spec: {template: {spec: {serviceAccountName: fixed}}}\n")
    write(root, "web/components/extra/kustomization.yaml",
          "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: [cm.yaml]\n")
    write(root, "web/components/extra/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n")
    write(root, "apps/web.yaml", application("web", {"repoURL": URL, "path": "web/overlay", "kustomize": {
        "namePrefix": "app-", "namespace": "shop", "replicas": [{"name": "base-web", "count": 4}],
        "patches": [{"path": "fix.yaml"}], "components": ["../components/extra"]}}))
    got = render(root)
    assert got.not_expanded == []
    objs = objects_of(got)
    deploy = objs[("Deployment", "shop", "app-base-web")]       # the directory's own prefix kept under it
    assert deploy["spec"]["replicas"] == 4
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == "fixed"
    assert ("ConfigMap", "shop", "app-extra") in objs
    files = input_closure(root, Target("apps", "dev", "apps", "plain")).files
    assert {"web/overlay/fix.yaml", "web/base/deploy.yaml", "web/components/extra/cm.yaml"} <= files


# -- a Helm target that is itself an app of apps, and paths computed entirely by a template -----------------

CHILD_CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: guestbook}\ndata: {colour: blue}\n"


def _templated_application(path_text: str) -> str:
    return ("apiVersion: argoproj.io/v1alpha1\nkind: Application\n"
            "metadata: {name: guestbook, namespace: argocd}\n"
            "spec:\n  project: default\n"
            "  destination: {server: https://kubernetes.default.svc, namespace: web}\n"
            f"  source:\n    repoURL: {{{{ .Values.repoURL }}}}\n    path: {path_text}\n")


def _app_of_apps_chart(root: Path, template: str, values: str = "") -> None:
    write(root, "apps/Chart.yaml", "apiVersion: v2\nname: apps\nversion: 0.1.0\n")
    write(root, "apps/values.yaml", f"repoURL: {URL}\n{values}")
    write(root, "apps/templates/gb.yaml", template)
    write(root, "guestbook/cm.yaml", CHILD_CM)


def test_a_helm_target_that_is_an_app_of_apps_expands_its_applications(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _app_of_apps_chart(root, _templated_application("guestbook"))
    target = Target("apps", "dev", "apps", "helm", chart="apps")
    assert "guestbook/cm.yaml" in input_closure(root, target).files
    got = render_target(root, target, repository_urls=THIS)
    assert got.not_expanded == []
    assert objects_of(got)[("ConfigMap", "web", "guestbook")]["data"] == {"colour": "blue"}


def test_a_path_computed_entirely_by_a_template_makes_the_whole_repository_an_input(tmp_path: Path) -> None:
    """Upstream's `path: {{ .path | default .name | quote }}`: no literal part, any directory may be read
    (the chart reached through a plain root Application, as argocd-example-apps does)."""
    root = init_repo(tmp_path / "repo")
    _app_of_apps_chart(root, _templated_application("{{ .Values.path | default \"none\" | quote }}"),
                       "path: guestbook\n")
    write(root, "root/apps.yaml", application("apps", {"repoURL": URL, "path": "apps"}, namespace="argocd"))
    write(root, "elsewhere/deep/other.yaml", "a: 1\n")
    commit_all(root)
    target = Target("root", "dev", "root", "plain")
    files = input_closure(root, target).files
    assert {"guestbook/cm.yaml", "elsewhere/deep/other.yaml"} <= files
    assert not any(f == ".git" or f.startswith(".git/") for f in files)
    got = render_target(root, target, repository_urls=THIS)
    assert got.not_expanded == []
    assert objects_of(got)[("ConfigMap", "web", "guestbook")]["data"] == {"colour": "blue"}


def test_a_chart_path_the_closure_missed_is_named_as_existing(tmp_path: Path) -> None:
    """A source written by `toYaml` from values holds no `path:` in the template: prbot cannot see it,
    and says the directory exists but was not read (not that it may not exist)."""
    root = tmp_path / "repo"
    spec = ("apiVersion: argoproj.io/v1alpha1\nkind: Application\nmetadata: {name: web, namespace: argocd}\n"
            "spec:\n  project: default\n  destination: {server: https://kubernetes.default.svc, namespace: web}\n"
            "  source: {{- toYaml .Values.source | nindent 4 }}\n")
    _app_of_apps_chart(root, spec, f"source: {{repoURL: {URL}, path: charts/web}}\n")
    write(root, "charts/web/Chart.yaml", CHART)
    write(root, "charts/web/templates/cm.yaml", CHART_TEMPLATE)
    got = render_target(root, Target("apps", "dev", "apps", "helm", chart="apps"), repository_urls=THIS)
    assert got.not_expanded == ["Application argocd/web: charts/web exists but is not among the target's inputs "
                                "(prbot's reading of what the target reads missed it)"]


def test_a_whole_repository_input_never_follows_a_link_out_of_it(tmp_path: Path) -> None:
    """Attack: a fully templated path makes the repository an input; a symbolic link to a directory
    outside adds none of its files, and an Application pointed at it is refused, the target kept."""
    outside = tmp_path / "outside"
    write(outside, "secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: stolen}\nstringData: {k: s3cr3t}\n")
    root = tmp_path / "repo"
    _app_of_apps_chart(root, _templated_application("{{ .Values.path | quote }}"), "path: leak\n")
    (root / "leak").symlink_to(outside, target_is_directory=True)
    target = Target("apps", "dev", "apps", "helm", chart="apps")
    closure = input_closure(root, target)
    assert "guestbook/cm.yaml" in closure.files and not any(f.startswith("leak") for f in closure.files)
    got = render_target(root, target, repository_urls=THIS)
    assert [o["kind"] for o in got] == ["Application"]
    [reason] = got.not_expanded
    assert "outside the repository" in reason and "s3cr3t" not in reason, reason

"""Argo CD Applications: what each source renders (the pure reading of `prbot.expand.application`)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from prbot.expand.application import (
    HELM,
    KUSTOMIZE,
    PLAIN,
    DirectoryOptions,
    chart_ref,
    detect,
    directory_files,
    glob_match,
    helm_arguments,
    image_entry,
    read_application,
    wrapper_kustomization,
)

REPO = "https://github.com/acme/gitops"


def this_repo(url: str) -> bool:
    """Stand-in for the framework's matching (the real one is tested with the framework)."""
    u = url.lower().removesuffix("/").removesuffix(".git")
    return u in ("https://github.com/acme/gitops", "git@github.com:acme/gitops")


def app(source: dict[str, Any] | None = None, sources: list[dict[str, Any]] | None = None,
        name: str = "guestbook", namespace: str = "guestbook") -> dict[str, Any]:
    spec: dict[str, Any] = {"project": "default",
                            "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace}}
    if source is not None:
        spec["source"] = source
    if sources is not None:
        spec["sources"] = sources
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd"}, "spec": spec}


def test_a_path_in_this_repository_is_local_and_detected_as_argo_cd_does() -> None:
    plan = read_application(app({"repoURL": f"{REPO}.git", "path": "guestbook/", "targetRevision": "HEAD"}), this_repo)
    [src] = plan.sources
    assert (src.local, src.path, src.remote, src.problem) == (True, "guestbook", "", "")
    assert (plan.name, plan.namespace) == ("guestbook", "guestbook")
    files = {"kust/kustomization.yaml", "chart/Chart.yaml", "both/Chart.yaml", "both/Kustomization"}
    for path, want in (("kust", KUSTOMIZE), ("chart", HELM), ("both", KUSTOMIZE), ("plain", PLAIN)):
        [s] = read_application(app({"repoURL": REPO, "path": path}), this_repo).sources
        assert detect(files.__contains__, s) == want, path
    # options name the renderer, whatever the directory holds (as Argo CD's explicit type)
    [s] = read_application(app({"repoURL": REPO, "path": "kust", "directory": {"recurse": True}}), this_repo).sources
    assert detect(files.__contains__, s) == PLAIN
    [s] = read_application(app({"repoURL": REPO, "path": "kust", "helm": {}}), this_repo).sources
    assert detect(files.__contains__, s) == KUSTOMIZE          # an empty block says nothing
    [s] = read_application(app({"repoURL": REPO, "path": "x", "helm": {"releaseName": "r"},
                                "kustomize": {"namePrefix": "p-"}}), this_repo).sources
    assert s.problem == "spec.source: multiple application source types (kustomize, helm)"


def test_sources_win_over_source_and_a_ref_only_source_renders_nothing() -> None:
    plan = read_application(app({"repoURL": REPO, "path": "ignored"}, sources=[
        {"repoURL": "https://charts.example.com/", "chart": "web", "targetRevision": "1.2.3",
         "helm": {"valueFiles": ["$values/envs/prod/web.yaml"]}},
        {"repoURL": REPO, "targetRevision": "HEAD", "ref": "values"}]), this_repo)
    chart, values = plan.sources
    assert (chart.where, chart.remote, chart.explicit) == (
        "spec.sources[0]", "https://charts.example.com/web (version 1.2.3)", HELM)
    assert [(v.path, v.remote, v.problem) for v in chart.helm.value_files] == [("envs/prod/web.yaml", "", "")]
    assert values.ref_only and values.local


def test_values_of_a_ref_source_in_another_repository_are_a_remote_reference() -> None:
    plan = read_application(app(sources=[
        {"repoURL": REPO, "path": "charts/web", "helm": {"valueFiles": ["$cfg/web/values.yaml", "values-prod.yaml"]}},
        {"repoURL": "https://github.com/acme/config.git", "targetRevision": "v2", "ref": "cfg"}]), this_repo)
    files = plan.sources[0].helm.value_files
    assert [(v.path, v.remote) for v in files] == [
        ("", "https://github.com/acme/config.git//web/values.yaml?ref=v2"), ("charts/web/values-prod.yaml", "")]


def test_chart_sources_name_their_remote_reference() -> None:
    assert chart_ref("https://charts.bitnami.com/bitnami/", "redis", "17.3.7") == \
        "https://charts.bitnami.com/bitnami/redis (version 17.3.7)"
    assert chart_ref("ghcr.io/acme/charts", "web", "1.0.0") == "oci://ghcr.io/acme/charts/web (version 1.0.0)"
    assert chart_ref("oci://ghcr.io/acme/charts", "web", "") == "oci://ghcr.io/acme/charts/web (chart)"
    [s] = read_application(app({"repoURL": "https://x.example", "chart": "../../etc"}), this_repo).sources
    assert s.problem == "spec.source: chart '../../etc' is not a chart name"


def test_a_path_in_another_repository_is_a_remote_git_reference() -> None:
    [s] = read_application(app({"repoURL": "https://github.com/argoproj/argocd-example-apps", "path": "guestbook",
                                "targetRevision": "master"}), this_repo).sources
    assert (s.local, s.remote) == (False, "https://github.com/argoproj/argocd-example-apps//guestbook?ref=master")


def test_helm_options_become_arguments_in_argo_cds_order() -> None:
    [s] = read_application(app({"repoURL": REPO, "path": "helm-guestbook", "helm": {
        "valueFiles": ["values-prod.yaml"], "values": "replicaCount: 3\n", "valuesObject": {"replicaCount": 5},
        "parameters": [{"name": "image.tag", "value": "v1"}, {"name": "annotations.x", "value": "1,2",
                                                                "forceString": True},
                       {"name": "image.tag", "value": "v2"}, {"name": "list", "value": "{a,b}"}],
        "ignoreMissingValueFiles": True, "skipCrds": True}}), this_repo).sources
    h = s.helm
    assert (h.release_name, h.values, h.ignore_missing) == ("guestbook", {"replicaCount": 5}, True)
    assert [v.path for v in h.value_files] == ["helm-guestbook/values-prod.yaml"]
    assert helm_arguments(h, ["./helm-guestbook/values-prod.yaml"], "app-values.yaml") == [
        "--values", "./helm-guestbook/values-prod.yaml", "--values", "app-values.yaml",
        "--set-string", "annotations.x=1\\,2", "--set", "image.tag=v2", "--set", "list={a,b}"]
    [s] = read_application(app({"repoURL": REPO, "path": "c", "helm": {"releaseName": "rel",
                                                                       "values": "a: [1"}}), this_repo).sources
    assert s.helm.release_name == "rel" and s.helm.values_problem.startswith("helm.values is not YAML")
    assert "--include-crds" in helm_arguments(s.helm, [], None)


def test_kustomize_options_become_a_kustomization_around_the_path() -> None:
    [s] = read_application(app({"repoURL": REPO, "path": "apps/web/overlays/dev", "kustomize": {
        "images": ["ghcr.io/acme/web:1.5.0", "old=new/img:2@sha256:abc"], "namePrefix": "dev-", "nameSuffix": "-x",
        "commonLabels": {"team": "a"}, "commonAnnotations": {"note": "n"}, "namespace": "web",
        "replicas": [{"name": "web", "count": "3"}],
        "patches": [{"path": "fix.yaml", "target": {"kind": "Deployment"}},
                    {"patch": "- op: add\n  path: /x\n  value: 1\n", "target": {"kind": "Service"}}],
        "components": ["../../components/tls"]}}), this_repo).sources
    k = s.kustomize
    assert k.components == ("apps/web/components/tls",)
    assert k.patches[0]["path"] == "apps/web/overlays/dev/fix.yaml"
    out = wrapper_kustomization("../../apps/web/overlays/dev", k,
                                {"apps/web/overlays/dev/fix.yaml": "kind: Deployment\n"}, "../..")
    assert out == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../../apps/web/overlays/dev"], "namespace": "web", "namePrefix": "dev-", "nameSuffix": "-x",
        "commonLabels": {"team": "a"}, "commonAnnotations": {"note": "n"},
        "images": [{"name": "ghcr.io/acme/web", "newTag": "1.5.0"},
                   {"name": "old", "newName": "new/img", "newTag": "2", "digest": "sha256:abc"}],
        "replicas": [{"name": "web", "count": 3}],
        "patches": [{"target": {"kind": "Deployment"}, "patch": "kind: Deployment\n"},
                    {"target": {"kind": "Service"}, "patch": "- op: add\n  path: /x\n  value: 1\n"}],
        "components": ["../../apps/web/components/tls"]}
    assert image_entry("localhost:5000/web") == {"name": "localhost:5000/web"}
    [s] = read_application(app({"repoURL": REPO, "path": "a", "kustomize": {
        "commonLabels": {"x": "y"}, "labelWithoutSelector": True}}), this_repo).sources
    assert wrapper_kustomization("a", s.kustomize, {}, ".")["labels"] == [
        {"pairs": {"x": "y"}, "includeSelectors": False}]


def test_plain_directories_pick_files_as_argo_cd_does() -> None:
    listing = ["a.yaml", "b.json", "README.md", "c.jsonnet", "sub/d.yml", "sub/deeper/e.yaml", ".hidden/f.yaml",
               "sub/skip-me.yaml"]
    assert directory_files(listing, DirectoryOptions()) == (["a.yaml", "b.json"], ["c.jsonnet"])
    assert directory_files(listing, DirectoryOptions(recurse=True, exclude="*skip-me*")) == (
        ["a.yaml", "b.json", "sub/d.yml", "sub/deeper/e.yaml"], ["c.jsonnet"])
    assert directory_files(listing, DirectoryOptions(recurse=True, include="{a.yaml,sub/*}")) == (
        ["a.yaml", "sub/d.yml", "sub/deeper/e.yaml", "sub/skip-me.yaml"], [])
    assert glob_match("*.yaml", "x/y.yaml") and glob_match("[!b]*.json", "a.json") and not glob_match("[!b]*", "b.json")


def test_an_application_without_sources_and_odd_documents_never_raise() -> None:
    assert read_application(app(), this_repo).problem == "it has no spec.source or spec.sources"
    odd: list[Any] = [{"kind": "Application"}, {"spec": []}, {"spec": {"sources": [1, None, {"repoURL": 3}]}},
                      {"spec": {"source": {"repoURL": REPO, "path": 7, "helm": {"parameters": [None, {"name": 1}]}}}}]
    for doc in odd:
        read_application(doc, this_repo)
    plan = read_application(odd[2], this_repo)
    assert [s.problem for s in plan.sources] == [
        "spec.sources[0] is not a mapping", "spec.sources[1] is not a mapping", "spec.sources[2] has no repoURL"]


def test_jsonnet_and_plugins_are_named() -> None:
    [s] = read_application(app({"repoURL": REPO, "path": "j", "directory": {"jsonnet": {"tlas": [{"name": "a"}]}}}),
                           this_repo).sources
    assert s.problem == "spec.source: jsonnet is not rendered by prbot"
    [s] = read_application(app({"repoURL": REPO, "path": "p", "plugin": {"name": "cmp"}}), this_repo).sources
    assert s.problem == "spec.source: config management plugins are not rendered by prbot"


# -- attacks -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["../../", "../other-checkout", "/etc", "a/../../b", "a/\\..\\..\\b"])
def test_a_path_climbing_out_is_refused_and_named(path: str) -> None:
    [s] = read_application(app({"repoURL": REPO, "path": path}), this_repo).sources
    assert s.problem.startswith(f"spec.source: path {path!r} ") and s.path == path and not s.remote
    assert ("absolute" in s.problem) is path.startswith("/")


@pytest.mark.parametrize("url", ["https://github.com/acme/gitops-evil", "https://github.com.evil.com/acme/gitops",
                                 "https://github.com/acme/gitops@evil.com/x", "https://evil.com/github.com/acme/gitops",
                                 "https://github.com/acme/gitops/../evil"])
def test_look_alike_repositories_are_remote_never_local(url: str) -> None:
    [s] = read_application(app({"repoURL": url, "path": "guestbook"}), this_repo).sources
    assert not s.local and s.remote.startswith(url.rstrip("/") + "//guestbook")


@pytest.mark.parametrize("value_file", ["../../../etc/passwd", "/etc/passwd", "$values/../../etc/passwd",
                                        "$values//etc/passwd"])
def test_value_files_climbing_out_are_refused(value_file: str) -> None:
    plan = read_application(app(sources=[
        {"repoURL": REPO, "path": "charts/web", "helm": {"valueFiles": [value_file]}},
        {"repoURL": REPO, "ref": "values"}]), this_repo)
    [vf] = plan.sources[0].helm.value_files
    assert vf.path == "" and vf.remote == "" and ("climbs out" in vf.problem or "absolute" in vf.problem)


def test_a_values_reference_to_an_undeclared_source_is_named() -> None:
    plan = read_application(app(sources=[
        {"repoURL": REPO, "path": "charts/web", "helm": {"valueFiles": ["$vals/web.yaml"]}},
        {"repoURL": REPO, "ref": "values"}]), this_repo)
    [vf] = plan.sources[0].helm.value_files
    assert vf.problem == "$vals names no source of this Application (no source has ref: vals)"


def test_kustomize_patches_and_components_climbing_out_are_named() -> None:
    [s] = read_application(app({"repoURL": REPO, "path": "a", "kustomize": {
        "patches": [{"path": "../../etc/passwd"}], "components": ["/etc"]}}), this_repo).sources
    from prbot.expand.application import kustomize_problems
    assert kustomize_problems(s.kustomize) == ["patch ../../etc/passwd climbs out of the repository",
                                               "/etc is absolute: a source path is read inside the repository only"]


def test_the_example_layout_reads() -> None:
    from pathlib import Path
    root = Path(__file__).parent / "corpus" / "argocd-example-apps"
    docs = [d for f in sorted((root / "argocd").rglob("*.yaml")) for d in yaml.safe_load_all(f.read_text())
            if isinstance(d, dict) and d.get("kind") == "Application"]
    assert docs, "the corpus holds Applications"
    for doc in docs:
        plan = read_application(doc, lambda u: u.removesuffix(".git").endswith("acme/argocd-example-apps"))
        assert all(not s.problem for s in plan.sources), plan

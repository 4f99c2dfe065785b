"""Layouts drawn from public GitOps repositories (tests/corpus/README.md), each checked, listed,
bumped, planned and promoted as a user would, with the real kubectl and both Helm versions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import TOOLS, commit_all, init_repo, snapshot_files, write

from prbot import tools
from prbot.cli import main

CORPUS = Path(__file__).parent / "corpus"
LAYOUTS = sorted(p.name for p in CORPUS.iterdir() if (p / ".prbot.yml").is_file())


def layout(name: str, tmp_path: Path) -> Path:
    """A git repository holding a copy of tests/corpus/NAME, one commit on main."""
    repo = tmp_path / name
    shutil.copytree(CORPUS / name, repo)
    init_repo(repo)
    commit_all(repo, "initial")
    return repo


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def changed(before: dict[str, bytes], after: dict[str, bytes]) -> dict[str, tuple[str, str]]:
    return {k: (before.get(k, b"").decode(), after.get(k, b"").decode())
            for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}


def plan_json(capsys: pytest.CaptureFixture[str], repo: Path, *extra: str) -> dict:
    code, out, err = run(capsys, "plan", "--repo", str(repo), "--base", "HEAD", "--format", "json", *extra)
    assert code == 0, err
    return json.loads(out)


def images_in(target: dict) -> set[str]:
    """`image: …` lines added by the target's diffs."""
    return {line.split("image:", 1)[1].strip() for c in target["changes"] for line in c["diff"].splitlines()
            if line.startswith("+") and "image:" in line}


@pytest.mark.parametrize("name", LAYOUTS)
def test_each_layout_is_a_valid_configuration(name: str, tmp_path: Path, capsys) -> None:
    repo = layout(name, tmp_path)
    assert run(capsys, "check-config", "--repo", str(repo)) == (0, ".prbot.yml: ok\n", "")


def test_the_corpus_holds_every_layout_of_the_readme() -> None:
    readme = (CORPUS / "README.md").read_text()
    assert LAYOUTS == ["argocd-apps", "argocd-example-apps", "chart-values-env", "flux-helm-local",
                       "flux-helmrelease", "flux-kustomization", "helmcharts", "single-env"]
    assert all(f"`{name}/`" in readme for name in LAYOUTS)


# -- kustomize helmCharts with a chart in the repository ----------------------------------------------------

def test_helmcharts_render_with_helm3_beside_helm4_and_edit_the_overlay(tmp_path: Path, capsys) -> None:
    versions = tools.versions("helm") | tools.versions("helm3")
    assert versions["helm"].startswith("v4.") and versions["helm3"].startswith("v3."), "both Helm versions present"
    repo = layout("helmcharts", tmp_path)
    before = snapshot_files(repo)

    code, out, err = run(capsys, "bump", "quay.io/acme/quarkus:1.2.0", "--env", "dev", "--repo", str(repo))
    assert (code, out, err) == (0, "quarkus/dev: quarkus/overlays/dev/kustomization.yaml 1.1.0 → 1.2.0\n", "")
    rel = "quarkus/overlays/dev/kustomization.yaml"
    assert changed(before, snapshot_files(repo)) == {rel: (
        before[rel].decode(), before[rel].decode().replace('newTag: "1.1.0"', 'newTag: "1.2.0"'))}

    plan = plan_json(capsys, repo)
    [dev] = plan["targets"]
    assert (dev["env"], dev["status"], dev["error"]) == ("dev", "changed", None)
    assert [(c["kind"], c["namespace"], c["name"]) for c in dev["changes"]] == [
        ("Deployment", "demo-dev", "quarkus-app")]
    assert images_in(dev) == {"quay.io/acme/quarkus:1.2.0"}
    assert plan["tools"] == tools.versions("kubectl") | {"helm3": versions["helm3"]}

    commit_all(repo, "bump dev")
    before = snapshot_files(repo)
    code, out, _ = run(capsys, "promote", "dev", "prod", "--repo", str(repo))
    assert (code, out) == (0, "quarkus/prod: quarkus/overlays/prod/kustomization.yaml 1.0.0 → 1.2.0\n")
    rel = "quarkus/overlays/prod/kustomization.yaml"
    assert changed(before, snapshot_files(repo)) == {rel: (
        before[rel].decode(), before[rel].decode() + "images:\n- name: quay.io/acme/quarkus\n  newTag: 1.2.0\n")}
    [prod] = plan_json(capsys, repo)["targets"]
    assert images_in(prod) == {"quay.io/acme/quarkus:1.2.0"} and prod["env"] == "prod"


def test_helmcharts_without_helm3_say_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys) -> None:
    only4 = tmp_path / "helm4-only"
    only4.mkdir()
    for name in ("kubectl", "helm"):
        (only4 / name).symlink_to(TOOLS / name)
    monkeypatch.setenv("PATH", f"{only4}{os.pathsep}/usr/bin:/bin")
    repo = layout("helmcharts", tmp_path)
    write(repo, "quarkus/base/values.yaml",
          "image:\n  repository: quay.io/acme/quarkus\n  tag: \"1.0.1\"\nreplicas: 1\n")
    code, out, _ = run(capsys, "plan", "--repo", str(repo), "--base", "HEAD", "--format", "json")
    assert code == 1
    errors = {t["env"]: t["error"] for t in json.loads(out)["targets"]}
    assert set(errors) == {"dev", "prod"}
    assert all("helmCharts need Helm 3" in e and "run `prbot tools install`" in e for e in errors.values())


# -- one chart, values-{env}.yaml beside it ------------------------------------------------------------------

def test_chart_with_values_per_environment(tmp_path: Path, capsys) -> None:
    repo = layout("chart-values-env", tmp_path)
    code, out, _ = run(capsys, "targets", "--repo", str(repo), "--format", "json")
    assert code == 0
    assert [(t["env"], t["path"], t["values"]) for t in json.loads(out)] == [
        ("staging", "helm-guestbook", ["helm-guestbook/values.yaml", "helm-guestbook/values-staging.yaml"]),
        ("production", "helm-guestbook", ["helm-guestbook/values.yaml", "helm-guestbook/values-production.yaml"])]

    before = snapshot_files(repo)
    code, out, err = run(capsys, "bump", "gcr.io/google-samples/gb-frontend:v6", "--env", "staging",
                         "--repo", str(repo))
    assert (code, out, err) == (0, "guestbook/staging: helm-guestbook/values-staging.yaml v5 → v6\n", "")
    assert changed(before, snapshot_files(repo)) == {"helm-guestbook/values-staging.yaml": (
        "image:\n  tag: v5   # staging tries new frontends first\n",
        "image:\n  tag: v6   # staging tries new frontends first\n")}
    # production reads the chart directory, values-staging.yaml included (Helm loads every file of
    # a chart): it is planned, and renders unchanged
    staging, production = plan_json(capsys, repo)["targets"]
    assert (staging["env"], production["env"], production["status"]) == ("staging", "production", "unchanged")
    assert images_in(staging) == {"gcr.io/google-samples/gb-frontend:v6"}

    commit_all(repo, "bump staging")
    before = snapshot_files(repo)
    code, out, _ = run(capsys, "promote", "staging", "production", "--repo", str(repo))
    assert (code, out) == (0, "guestbook/production: helm-guestbook/values-production.yaml v5 → v6\n")
    assert changed(before, snapshot_files(repo)) == {"helm-guestbook/values-production.yaml": (
        "service:\n  type: LoadBalancer\n", "service:\n  type: LoadBalancer\nimage:\n  tag: v6\n")}
    staging, production = plan_json(capsys, repo)["targets"]
    assert (staging["status"], production["status"]) == ("unchanged", "changed")
    assert images_in(production) == {"gcr.io/google-samples/gb-frontend:v6"}


# -- a directory one environment has ------------------------------------------------------------------------

def test_single_environment_directory_and_empty_overlays(tmp_path: Path, capsys) -> None:
    repo = layout("single-env", tmp_path)
    code, out, _ = run(capsys, "targets", "--repo", str(repo), "--format", "json")
    assert {(t["app"], t["env"]) for t in json.loads(out)} == {
        ("api", "dev"), ("api", "staging"), ("api", "prod"), ("legacy", "prod"), ("machinesets", "prod")}

    before = snapshot_files(repo)
    code, _, err = run(capsys, "bump", "registry.example.com/legacy:2.1.0", "--env", "dev", "--repo", str(repo))
    assert code == 1 and err == "prbot: no target of dev uses registry.example.com/legacy\n"
    code, out, _ = run(capsys, "bump", "registry.example.com/legacy:2.1.0", "--env", "prod", "--repo", str(repo))
    assert (code, out) == (0, "legacy/prod: k8s/production/legacy.yaml 2.0.0 → 2.1.0\n")
    rel = "k8s/production/legacy.yaml"
    assert changed(before, snapshot_files(repo)) == {rel: (
        before[rel].decode(), before[rel].decode().replace('"registry.example.com/legacy:2.0.0"',
                                                           '"registry.example.com/legacy:2.1.0"'))}
    plan = plan_json(capsys, repo)
    assert [(t["app"], t["env"], t["status"]) for t in plan["targets"]] == [("legacy", "prod", "changed")]

    # an empty overlay directory (only .gitkeep) appearing in a PR is no `+0` new target
    commit_all(repo, "bump")
    write(repo, "machinesets/overlays/staging/.gitkeep", "")
    assert plan_json(capsys, repo)["targets"] == []


def test_policy_refusals_and_force(tmp_path: Path, capsys) -> None:
    repo = layout("single-env", tmp_path)
    before = snapshot_files(repo)
    code, out, err = run(capsys, "bump", "registry.example.com/legacy:1.9.0", "--env", "prod", "--repo", str(repo))
    assert (code, out) == (2, "")
    assert err == ("prbot: refused: legacy/prod: k8s/production/legacy.yaml: registry.example.com/legacy "
                   "2.0.0 → 1.9.0: 1.9.0 is a lower version than 2.0.0 (policy: semver)\n"
                   "prbot: nothing written: 1 problem(s) above; --force to move anyway\n")
    code, out, err = run(capsys, "bump", "registry.example.com/legacy:latest", "--env", "prod", "--repo", str(repo))
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert "tag latest does not match ^[0-9]+\\.[0-9]+\\.[0-9]+$" in err and "--force" in err
    assert snapshot_files(repo) == before

    code, out, _ = run(capsys, "bump", "registry.example.com/legacy:1.9.0", "--env", "prod", "--repo", str(repo),
                       "--force")
    assert (code, out) == (0, "legacy/prod: k8s/production/legacy.yaml 2.0.0 → 1.9.0\n")


# -- Flux HelmRelease ------------------------------------------------------------------------------------------

def test_flux_helmrelease_values_in_patches_and_plain_files(tmp_path: Path, capsys) -> None:
    repo = layout("flux-helmrelease", tmp_path)
    before = snapshot_files(repo)
    code, out, err = run(capsys, "bump", "public.ecr.aws/docker/library/redis:8.6.3", "--env", "staging",
                         "--repo", str(repo))
    assert (code, err) == (0, "")
    assert out == ("podinfo/staging: apps/staging/podinfo-values.yaml 8.6.2 → 8.6.3\n"
                   "redis/staging: releases/staging/redis.yaml 7.4.1 → 8.6.3\n")
    code, out, _ = run(capsys, "bump", "ghcr.io/stefanprodan/podinfo:6.7.2", "--env", "staging", "--repo", str(repo))
    assert (code, out) == (0, "podinfo/staging: apps/staging/podinfo-values.yaml 6.7.1 → 6.7.2\n")
    patch = "apps/staging/podinfo-values.yaml"
    release = "releases/staging/redis.yaml"
    old_patch, old_release = before[patch].decode(), before[release].decode()
    assert changed(before, snapshot_files(repo)) == {
        # the base HelmRelease is shared with production: the override goes into staging's own patch
        patch: (old_patch, old_patch.replace("tag: 6.7.1 ", "tag: 6.7.2 ") + "    redis:\n      tag: 8.6.3\n"),
        release: (old_release, old_release.replace('tag: "7.4.1"', 'tag: "8.6.3"'))}

    code, out, err = run(capsys, "plan", "--repo", str(repo), "--base", "HEAD", "--format", "json")
    assert code == 1, err                 # the releases cannot be expanded: a blind spot, named
    plan = json.loads(out)
    got = {(t["app"], t["env"]): t for t in plan["targets"]}
    assert set(got) == {("podinfo", "staging"), ("redis", "staging")}
    for target in got.values():           # rendered as the objects they are; no schema for the CRD
        assert [(c["kind"], c["action"]) for c in target["changes"]] == [("HelmRelease", "changed")]
        assert {v["level"] for v in target["validation"]} == {"skipped"}
    assert got[("podinfo", "staging")]["not_expanded"] == [
        "HelmRelease podinfo/podinfo: oci://ghcr.io/stefanprodan/charts/podinfo (version >=1.0.0-alpha) is not "
        "allowed by render.remote in .prbot.yml"]
    assert got[("redis", "staging")]["not_expanded"] == [
        "HelmRelease redis/redis: its chart source HelmRepository redis/bitnami is not among the target's objects"]
    assert "+      tag: 8.6.3" in got[("podinfo", "staging")]["changes"][0]["diff"]

    commit_all(repo, "bump staging")
    before = snapshot_files(repo)
    code, out, _ = run(capsys, "promote", "staging", "production", "--repo", str(repo))
    assert code == 0
    assert sorted(out.splitlines()) == [
        "podinfo/production: apps/production/podinfo-values.yaml 6.7.0 → 6.7.2",
        "podinfo/production: apps/production/podinfo-values.yaml 8.6.2 → 8.6.3",
        "redis/production: releases/production/redis.yaml 7.2.4 → 8.6.3"]
    patch = "apps/production/podinfo-values.yaml"
    assert changed(before, snapshot_files(repo))[patch] == (
        before[patch].decode(), before[patch].decode() + "    image:\n      tag: 6.7.2\n    redis:\n      tag: 8.6.3\n")


def test_flux_kustomization_postbuild_reaches_overlays_listed_as_targets(tmp_path: Path, capsys) -> None:
    # apps/{env} use ${cluster_name} and ${replicas}: sync.flux.root finds the Flux Kustomization
    # deploying them (clusters/{env}/apps.yaml) and its postBuild applies before validation
    repo = layout("flux-kustomization", tmp_path)
    code, out, err = run(capsys, "bump", "ghcr.io/acme/web:1.5.0", "--env", "staging", "--repo", str(repo))
    assert (code, out, err) == (0, "web/staging: apps/staging/kustomization.yaml 1.4.0 → 1.5.0\n", "")
    plan = plan_json(capsys, repo)
    web = next(t for t in plan["targets"] if (t["app"], t["env"]) == ("web", "staging"))
    assert [(c["kind"], c["action"]) for c in web["changes"]] == [("Deployment", "changed")]
    assert "+        image: ghcr.io/acme/web:1.5.0" in web["changes"][0]["diff"]
    assert web["validation"] == []                                        # replicas: 1, a number
    config = repo / ".prbot.yml"                                          # without the root, as before:
    config.write_text(config.read_text().replace(', root: "clusters/{env}"}', "}"))
    code, out, _ = run(capsys, "plan", "--repo", str(repo), "--base", "HEAD", "--format", "json")
    web = next(t for t in json.loads(out)["targets"] if (t["app"], t["env"]) == ("web", "staging"))
    assert code == 1
    assert [v["message"] for v in web["validation"]] == ["spec.replicas: '${replicas}' is not of type 'integer'"]
    subprocess.run(["git", "checkout", "-q", ".prbot.yml"], cwd=repo, check=True)
    commit_all(repo, "bump staging")

    # the cluster-vars ConfigMap is an input of every app overlay of its environment
    vars_file = repo / "clusters/staging/cluster-vars.yaml"
    vars_file.write_text(vars_file.read_text().replace("cluster_name: staging", "cluster_name: staging-eu"))
    plan = plan_json(capsys, repo)
    web = next(t for t in plan["targets"] if (t["app"], t["env"]) == ("web", "staging"))
    assert "-    cluster: staging\n+    cluster: staging-eu" in web["changes"][0]["diff"]
    assert ("web", "production") not in {(t["app"], t["env"]) for t in plan["targets"]}
    # the cluster root expands its Kustomizations (render.repository: the GitRepository is this one)
    root = next(t for t in plan["targets"] if (t["app"], t["env"]) == ("cluster", "staging"))
    assert [(c["kind"], c["name"], c["action"], c.get("from")) for c in root["changes"]] == [
        ("ConfigMap", "cluster-vars", "changed", None),
        ("Deployment", "web", "changed", "Kustomization flux-system/apps"),
        ("IngressClass", "staging-eu-nginx", "added", "Kustomization flux-system/infra-configs"),
        ("IngressClass", "staging-nginx", "removed", "Kustomization flux-system/infra-configs")]


def test_promote_is_all_or_nothing(tmp_path: Path, capsys) -> None:
    repo = layout("flux-helmrelease", tmp_path)
    run(capsys, "bump", "public.ecr.aws/docker/library/redis:8.6.3", "--env", "staging", "--repo", str(repo))
    commit_all(repo, "bump staging")
    write(repo, "releases/production/redis.yaml",
          (repo / "releases/production/redis.yaml").read_text().replace("architecture: standalone",
                                                                        "architecture: [standalone"))
    before = snapshot_files(repo)
    code, out, err = run(capsys, "promote", "staging", "production", "--repo", str(repo))
    assert (code, out) == (2, "")
    lines = err.splitlines()
    assert lines[0].startswith("prbot: error: releases/production/redis.yaml:") and "invalid YAML" in lines[0]
    assert lines[0].endswith("(redis/production)")
    assert lines[-1] == "prbot: nothing written: 1 problem(s) above"
    assert snapshot_files(repo) == before, "podinfo/production's patch is not written either"


# -- Argo CD Applications ------------------------------------------------------------------------------------

def test_argocd_application_images(tmp_path: Path, capsys) -> None:
    repo = layout("argocd-apps", tmp_path)
    before = snapshot_files(repo)
    for image in ("ghcr.io/acme/web:1.6.0", "quay.io/acme/quarkus:0.9.2", "ghcr.io/acme/worker:2.2.0"):
        code, out, err = run(capsys, "bump", image, "--env", "dev", "--repo", str(repo))
        assert code == 0 and err == "" and out.startswith("apps/dev: argocd/dev/"), (image, err)
    after = snapshot_files(repo)
    assert changed(before, after) == {
        "argocd/dev/quarkus.yaml": (before["argocd/dev/quarkus.yaml"].decode(),
                                    before["argocd/dev/quarkus.yaml"].decode().replace('"0.9.1"', '"0.9.2"')),
        "argocd/dev/web.yaml": (before["argocd/dev/web.yaml"].decode(),
                                before["argocd/dev/web.yaml"].decode().replace("web:1.5.0", "web:1.6.0")),
        "argocd/dev/worker.yaml": (before["argocd/dev/worker.yaml"].decode(),
                                   before["argocd/dev/worker.yaml"].decode().replace("tag: 2.1.0", "tag: 2.2.0"))}
    # their sources are other repositories and charts render.remote does not allow: the Applications
    # are shown, each named as not expanded, and the plan fails rather than pass over what it cannot see
    code, out, _ = run(capsys, "plan", "--repo", str(repo), "--base", "HEAD", "--format", "json")
    [dev] = json.loads(out)["targets"]
    assert code == 1 and dev["status"] == "changed"
    assert sorted((c["kind"], c["name"]) for c in dev["changes"]) == [
        ("Application", "quarkus-dev"), ("Application", "web-dev"), ("Application", "worker-dev")]
    assert [n.split(": ", 2)[:2] for n in dev["not_expanded"]] == [
        ["Application openshift-gitops/quarkus-dev",
         "https://redhat-developer.github.io/redhat-helm-charts/quarkus (version 0.0.3) is not allowed by "
         "render.remote in .prbot.yml"],
        ["Application argocd/web-dev", "spec.source"],
        ["Application argocd/worker-dev",
         "https://charts.example.com/worker (version 3.1.0) is not allowed by render.remote in .prbot.yml"]]

    commit_all(repo, "bump dev")
    code, out, _ = run(capsys, "promote", "dev", "staging", "--repo", str(repo))
    assert code == 0 and sorted(out.splitlines()) == [
        "apps/staging: argocd/staging/quarkus.yaml 0.9.0 → 0.9.2",
        "apps/staging: argocd/staging/web.yaml 1.4.0 → 1.6.0",
        "apps/staging: argocd/staging/worker.yaml 2.0.0 → 2.2.0"]
    rendered = subprocess.run(["git", "diff", "--stat"], cwd=repo, capture_output=True, text=True).stdout
    assert "3 files changed, 3 insertions(+), 3 deletions(-)" in rendered


def test_argocd_app_of_apps_shows_what_each_source_renders(tmp_path: Path, capsys) -> None:
    repo = layout("argocd-example-apps", tmp_path)
    subprocess.run(["git", "remote", "add", "origin", "https://github.com/acme/argocd-example-apps.git"], cwd=repo,
                   check=True)
    write(repo, "envs/prod/guestbook.yaml", "replicaCount: 2\nimage:\n  tag: v5\n")
    write(repo, "kustomize-guestbook/guestbook-ui-svc.yaml",
          (repo / "kustomize-guestbook/guestbook-ui-svc.yaml").read_text().replace("port: 80", "port: 8080"))
    plan = plan_json(capsys, repo)
    status = {t["env"]: t["status"] for t in plan["targets"]}
    assert status == {"dev": "changed", "prod": "changed"}
    prod = next(t for t in plan["targets"] if t["env"] == "prod")
    assert prod.get("not_expanded", []) == [] and prod["error"] is None, prod
    assert images_in(prod) == {"gcr.io/google-samples/gb-frontend:v5"}
    changes = {(c["kind"], c["namespace"], c["name"]): c for c in prod["changes"]}
    assert set(changes) == {("Deployment", "multi-guestbook-prod", "guestbook"),
                            ("Service", "kustomize-guestbook-prod", "kustomize-guestbook-ui-prod")}
    assert changes[("Deployment", "multi-guestbook-prod", "guestbook")]["from"] == \
        "Application argocd/root-prod › Application argocd/multi-guestbook-prod"
    dev = next(t for t in plan["targets"] if t["env"] == "dev")
    assert {(c["kind"], c["name"]) for c in dev["changes"]} == {("Service", "kustomize-guestbook-ui-dev")}


def test_promote_never_moves_an_environment_back_unless_forced(tmp_path: Path, capsys) -> None:
    repo = layout("argocd-apps", tmp_path)
    write(repo, "argocd/staging/web.yaml", (repo / "argocd/staging/web.yaml").read_text().replace("1.4.0", "3.0.0"))
    commit_all(repo, "staging got a hotfix release")
    before = snapshot_files(repo)
    code, out, err = run(capsys, "promote", "dev", "staging", "--repo", str(repo))
    assert (code, out) == (2, "")
    assert "prbot: refused: apps/staging: argocd/staging/web.yaml: ghcr.io/acme/web 3.0.0 → 1.5.0: " \
           "1.5.0 is a lower version than 3.0.0\n" in err
    assert snapshot_files(repo) == before
    code, out, _ = run(capsys, "promote", "dev", "staging", "--repo", str(repo), "--force")
    assert code == 0 and "apps/staging: argocd/staging/web.yaml 3.0.0 → 1.5.0" in out

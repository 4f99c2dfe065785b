"""The Flux Kustomization expander (`prbot.expand.flux_kustomization`) with the real kustomize/kubectl
in the jail: Flux's amendments of `spec.path`'s kustomization, its generated kustomization, postBuild,
`sync.flux.root` for overlays listed as targets, and the attacks a hostile repository can try."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from support import commit_all, git, init_repo, write

from prbot.cli import main
from prbot.config import load_config_file
from prbot.errors import RenderError
from prbot.model import Target
from prbot.render import render_target
from prbot.renderers.closure import input_closure
from prbot.targets import discover_targets

CORPUS = Path(__file__).parent / "corpus" / "flux-kustomization"
THIS = ("github.com/acme/fleet",)
SOURCE = """\
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: flux-system, namespace: flux-system}
spec: {url: "https://github.com/acme/fleet.git", ref: {branch: main}}
"""


def flux_kustomization(name: str, spec: str) -> str:
    return ("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
            f"metadata: {{name: {name}, namespace: flux-system}}\n"
            "spec:\n  sourceRef: {kind: GitRepository, name: flux-system}\n" + spec)


def cluster(tmp_path: Path, files: dict[str, str]) -> Path:
    repo = tmp_path / "repo"
    for rel, text in {"clusters/prod/flux-system.yaml": SOURCE, **files}.items():
        write(repo, rel, text)
    return repo


def render_cluster(repo: Path, rel: str = "clusters/prod", **kw: object) -> list[dict]:
    target = Target("cluster", "prod", rel, "plain")
    return render_target(repo, target, repository_urls=THIS, **kw)  # type: ignore[arg-type]


def by_name(rendered: list[dict]) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in rendered}


def test_the_cluster_root_expands_what_flux_applies(tmp_path: Path) -> None:
    repo = tmp_path / "fleet"
    shutil.copytree(CORPUS, repo)
    rendered = render_cluster(repo, "clusters/production")
    assert rendered.not_expanded == []
    objects = by_name(rendered)
    web = objects["Deployment/web"]
    assert web["spec"]["replicas"] == 3 and web["metadata"]["namespace"] == "web"
    assert web["metadata"]["labels"] == {
        "app.kubernetes.io/name": "web", "cluster": "production",
        "kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}
    env = {e["name"]: e["value"] for e in web["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"PUBLIC_URL": "https://web.production.example.com", "LOG_LEVEL": "info"}
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/web:1.3.2"
    assert "IngressClass/production-nginx" in objects
    origins = {f"{rendered[i]['kind']}/{rendered[i]['metadata']['name']}": o for i, o in rendered.origins.items()}
    assert origins == {"Deployment/web": "Kustomization flux-system/apps",
                       "Service/web": "Kustomization flux-system/apps",
                       "IngressClass/production-nginx": "Kustomization flux-system/infra-configs"}


def test_flux_amends_the_kustomization_of_its_path(tmp_path: Path) -> None:
    repo = cluster(tmp_path, {
        "clusters/prod/apps.yaml": flux_kustomization("apps", """\
  path: ./apps
  targetNamespace: shop
  namePrefix: prod-
  components: [../components/audit, ../components/absent]
  ignoreMissingComponents: true
  images: [{name: ghcr.io/acme/web, newTag: "2.0.0"}]
  patches:
    - patch: '[{"op": "replace", "path": "/spec/replicas", "value": 4}]'
      target: {kind: Deployment}
  commonMetadata:
    labels: {team: shop}
    annotations: {owner: "shop@example.com"}
"""),
        "apps/kustomization.yaml": "namespace: ignored\nresources: [web.yaml]\n"
                                   "images: [{name: ghcr.io/acme/web, newTag: '1.0.0'}]\n",
        "apps/web.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n"
                         "  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n"
                         "    spec: {containers: [{name: web, image: 'ghcr.io/acme/web:0.1'}]}\n",
        "components/audit/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
                                               "commonAnnotations: {audited: 'yes'}\n",
    })
    rendered = render_cluster(repo)
    assert rendered.not_expanded == []
    web = by_name(rendered)["Deployment/prod-web"]
    assert web["metadata"]["namespace"] == "shop"
    assert web["spec"]["replicas"] == 4
    assert web["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/web:2.0.0"
    assert web["metadata"]["annotations"] == {"audited": "yes", "owner": "shop@example.com"}
    assert web["metadata"]["labels"]["team"] == "shop"


def test_v1beta2_strategic_merge_and_json6902_patches(tmp_path: Path) -> None:
    repo = cluster(tmp_path, {
        "clusters/prod/apps.yaml": flux_kustomization("apps", """\
  path: ./apps
  patchesStrategicMerge:
    - {apiVersion: v1, kind: ConfigMap, metadata: {name: cm}, data: {merged: "yes"}}
  patchesJson6902:
    - target: {version: v1, kind: ConfigMap, name: cm}
      patch: [{op: add, path: /data/json, value: "6902"}]
""").replace("kustomize.toolkit.fluxcd.io/v1", "kustomize.toolkit.fluxcd.io/v1beta2"),
        "apps/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: b}\n"})
    rendered = render_cluster(repo)
    assert rendered.not_expanded == []
    assert by_name(rendered)["ConfigMap/cm"]["data"] == {"a": "b", "merged": "yes", "json": "6902"}


def test_a_path_without_kustomization_gets_flux_generated_one(tmp_path: Path) -> None:
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {0}}}\ndata: {{k: v}}\n"
    repo = cluster(tmp_path, {
        "clusters/prod/infra.yaml": flux_kustomization("infra", "  path: ./infra\n"),
        "infra/a.yaml": cm.format("a"),
        "infra/deep/b.yml": cm.format("b"),
        "infra/deep/notes.txt": "not a manifest",
        "infra/kdir/kustomization.yaml": "resources: [c.yaml]\nnamePrefix: k-\n",
        "infra/kdir/c.yaml": cm.format("c"),
        "infra/kdir/ignored.yaml": cm.format("not-listed"),
    })
    rendered = render_cluster(repo)
    assert rendered.not_expanded == []
    assert {"ConfigMap/a", "ConfigMap/b", "ConfigMap/k-c"} <= set(by_name(rendered))
    assert "ConfigMap/not-listed" not in by_name(rendered)
    write(repo, "infra/deep/values.yaml", "replicas: 3\n")            # not a Kubernetes object: Flux fails
    rendered = render_cluster(repo)
    assert rendered.not_expanded == ["Kustomization flux-system/infra: failed to decode Kubernetes YAML from "
                                     "infra/deep/values.yaml: a document is not a Kubernetes object"]


def test_flux_bootstrap_layout_applies_itself_once(tmp_path: Path) -> None:
    # clusters/prod/flux-system holds the Kustomization applying clusters/prod, itself included
    repo = cluster(tmp_path, {
        "clusters/prod/flux-system.yaml": "",
        "clusters/prod/flux-system/kustomization.yaml": "resources: [gotk-sync.yaml]\n",
        "clusters/prod/flux-system/gotk-sync.yaml": SOURCE + "---\n" + flux_kustomization(
            "flux-system", "  path: ./clusters/prod\n"),
        "clusters/prod/apps.yaml": flux_kustomization("apps", "  path: ./apps\n"),
        "apps/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n"})
    target = Target("flux-system", "prod", "clusters/prod/flux-system", "kustomize")
    rendered = render_target(repo, target, repository_urls=THIS)
    assert rendered.not_expanded == []
    got = sorted((f"{o['kind']}/{o['metadata']['name']}", rendered.origins.get(i)) for i, o in enumerate(rendered))
    assert got == [
        ("ConfigMap/app", "Kustomization flux-system/flux-system › Kustomization flux-system/apps"),
        ("GitRepository/flux-system", None),
        ("Kustomization/apps", "Kustomization flux-system/flux-system"),
        ("Kustomization/flux-system", None)]


def test_the_closure_follows_the_path_and_the_root(tmp_path: Path) -> None:
    repo = tmp_path / "fleet"
    shutil.copytree(CORPUS, repo)
    files = input_closure(repo, Target("cluster", "production", "clusters/production", "plain")).files
    assert {"apps/production/kustomization.yaml", "apps/base/web/deployment.yaml",
            "infrastructure/configs/ingress-class.yaml"} <= files
    config = load_config_file(repo / ".prbot.yml")
    web = next(t for t in discover_targets(config, repo) if (t.app, t.env) == ("web", "production"))
    assert web.flux == ("clusters/production", "flux-system", "apps")
    assert "clusters/production/cluster-vars.yaml" in input_closure(repo, web).files


def test_a_root_without_the_named_kustomization_fails_the_target(tmp_path: Path) -> None:
    repo = tmp_path / "fleet"
    shutil.copytree(CORPUS, repo)
    target = Target("web", "production", "apps/production", "kustomize",
                    flux=("clusters/production", "flux-system", "nope"))
    with pytest.raises(RenderError, match="sync.flux.root clusters/production defines no Flux Kustomization "
                                          "flux-system/nope"):
        render_target(repo, target)


# -- attacks ----------------------------------------------------------------------------------------------

def test_a_root_linked_outside_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(CORPUS / "clusters" / "production", outside)
    repo = tmp_path / "fleet"
    shutil.copytree(CORPUS, repo)
    shutil.rmtree(repo / "clusters" / "production")
    os.symlink(outside, repo / "clusters" / "production")
    target = Target("web", "production", "apps/production", "kustomize",
                    flux=("clusters/production", "flux-system", "apps"))
    with pytest.raises(RenderError, match=r"refused: clusters/production: sync.flux.root resolves \(through a "
                                          r"symbolic link\) outside the repository"):
        render_target(repo, target)
    missing = dataclasses.replace(target, flux=("clusters/nope", "flux-system", "apps"))
    with pytest.raises(RenderError, match="sync.flux.root clusters/nope is not a directory of the repository"):
        render_target(repo, missing)


@pytest.mark.parametrize(("path", "message"), [
    ("../outside", "refused: spec.path ../outside leaves the repository"),
    ("/etc", "refused: spec.path /etc is an absolute path outside the repository"),
    ("./apps/linked", "refused: spec.path ./apps/linked resolves (through a symbolic link) outside the repository"),
])
def test_a_path_climbing_out_is_refused(tmp_path: Path, path: str, message: str) -> None:
    outside = tmp_path / "outside"
    write(outside, "secret.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: stolen}\n")
    repo = cluster(tmp_path, {"clusters/prod/apps.yaml": flux_kustomization("apps", f"  path: {path}\n"),
                              "apps/keep.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep}\n"})
    os.symlink(outside, repo / "apps" / "linked")
    rendered = render_cluster(repo)
    assert rendered.not_expanded == [f"Kustomization flux-system/apps: {message}"]
    assert "ConfigMap/stolen" not in by_name(rendered)


def test_a_component_climbing_out_is_refused(tmp_path: Path) -> None:
    repo = cluster(tmp_path, {
        "clusters/prod/apps.yaml": flux_kustomization("apps", "  path: ./apps\n  components: [../../../etc]\n"),
        "apps/keep.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keep}\n"})
    rendered = render_cluster(repo)
    assert rendered.not_expanded == ["Kustomization flux-system/apps: refused: spec.components ../../../etc "
                                     "leaves the repository"]


def test_a_patch_path_is_never_read(tmp_path: Path) -> None:
    # Flux's patches are inline: a `path` (here to a file of the repository) is dropped, as Flux drops it
    repo = cluster(tmp_path, {
        "clusters/prod/apps.yaml": flux_kustomization("apps", "  path: ./apps\n  patches:\n"
                                                      "    - path: ../private/patch.yaml\n"
                                                      "      patch: '[{\"op\": \"add\", \"path\": \"/data/x\", "
                                                      "\"value\": \"inline\"}]'\n"
                                                      "      target: {kind: ConfigMap}\n"),
        "apps/kustomization.yaml": "resources: [cm.yaml]\n",
        "apps/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: b}\n",
        "private/patch.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {leaked: 'yes'}\n"})
    rendered = render_cluster(repo)
    assert rendered.not_expanded == []
    assert by_name(rendered)["ConfigMap/cm"]["data"] == {"a": "b", "x": "inline"}


@pytest.mark.parametrize(("source", "message"), [
    ("apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: other, namespace: flux-system}\n"
     "spec: {url: 'https://deploy:s3cr3t-t0ken@github.com/evil/other.git'}\n",
     "its source GitRepository flux-system/other is another repository (github.com/evil/other), which prbot "
     "does not read (list this repository's other URLs in render.repository)"),
    ("", "its source GitRepository flux-system/other is not among the target's objects, so prbot cannot tell "
         "which repository it names"),
])
def test_a_source_in_another_repository_is_not_read(tmp_path: Path, source: str, message: str) -> None:
    repo = cluster(tmp_path, {
        "clusters/prod/apps.yaml": flux_kustomization("apps", "  path: ./apps\n").replace(
            "name: flux-system}", "name: other}"),
        "clusters/prod/other.yaml": source,
        "apps/keep.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-this-repository}\n"})
    rendered = render_cluster(repo)
    assert rendered.not_expanded == [f"Kustomization flux-system/apps: {message}"]
    assert "ConfigMap/from-this-repository" not in by_name(rendered)
    assert "s3cr3t" not in json.dumps(rendered.not_expanded)


def test_an_oci_source_is_not_read(tmp_path: Path) -> None:
    repo = cluster(tmp_path, {"clusters/prod/apps.yaml": flux_kustomization("apps", "  path: ./\n").replace(
        "{kind: GitRepository, name: flux-system}", "{kind: OCIRepository, name: manifests}")})
    assert render_cluster(repo).not_expanded == [
        "Kustomization flux-system/apps: its source OCIRepository flux-system/manifests is not read (prbot renders "
        "this repository's GitRepository sources only)"]


def test_kustomizations_building_each_other_stop_at_the_depth_limit(tmp_path: Path) -> None:
    repo = cluster(tmp_path, {"clusters/prod/ping.yaml": flux_kustomization("ping", "  path: ./pong\n"),
                              "pong/pong.yaml": flux_kustomization("pong", "  path: ./clusters/prod\n")})
    rendered = render_cluster(repo)
    assert rendered.not_expanded == ["Kustomization flux-system/pong: expansions nested more than 3 deep"]
    assert len(rendered) == 2 + 1 + 2 + 1
    self_only = cluster(tmp_path / "self", {
        "clusters/prod/self.yaml": flux_kustomization("self", "  path: ./clusters/prod\n")})
    rendered = render_cluster(self_only)            # a Kustomization applying itself adds nothing
    assert (rendered.not_expanded, len(rendered)) == ([], 2)


def test_substitution_bombs_stop_at_the_output_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRBOT_RENDER_OUTPUT", "1M")
    repo = cluster(tmp_path, {
        "clusters/prod/apps.yaml": flux_kustomization("apps", "  path: ./apps\n  postBuild:\n    substitute:\n"
                                                      f"      v: {'x' * 60_000}\n"),
        "apps/bomb.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n"
                          + "".join(f"  k{i}: ${{v}}${{v}}${{v}}${{v}}${{v}}\n" for i in range(10))})
    rendered = render_cluster(repo)
    assert len(rendered.not_expanded) == 1
    assert rendered.not_expanded[0].startswith("Kustomization flux-system/apps: postBuild: ConfigMap bomb: the "
                                               "substituted objects exceed")


SECRET = "pa55-w0rd-from-secret"


def secret_fleet(tmp_path: Path) -> Path:
    repo = tmp_path / "fleet"
    shutil.copytree(CORPUS, repo)
    write(repo, "clusters/staging/cluster-secrets.yaml",
          "apiVersion: v1\nkind: Secret\nmetadata: {name: cluster-secrets, namespace: flux-system}\n"
          f"stringData: {{db_password: {SECRET}}}\n")
    init_repo(repo)
    commit_all(repo, "initial")
    write(repo, "apps/staging/kustomization.yaml",
          "namespace: web\nresources: [../base/web, db.yaml]\n")
    write(repo, "apps/staging/db.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: db}\ndata: {url: 'postgres://app:${db_password}@db'}\n"
          "---\napiVersion: v1\nkind: Secret\nmetadata: {name: db}\nstringData: {password: '${db_password}'}\n")
    git(repo, "add", "-A")
    return repo


def test_secret_values_never_reach_the_comment_json_or_logs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    repo = secret_fleet(tmp_path)
    caplog.set_level(logging.DEBUG)
    outputs = []
    for fmt in ("json", "markdown"):
        code = main(["plan", "--repo", str(repo), "--base", "HEAD", "--format", fmt])
        out, err = capsys.readouterr()
        assert code == 0, err
        outputs.append(out + err)
    plan = json.loads(outputs[0])
    web = next(t for t in plan["targets"] if (t["app"], t["env"]) == ("web", "staging"))
    diffs = "\n".join(c["diff"] for c in web["changes"])
    assert "url: postgres://app:(secret:db_password)@db" in diffs         # the ConfigMap shows where, not what
    assert "password: '***'" in diffs or "password: ***" in diffs          # the Secret is masked
    for text in [*outputs, caplog.text]:
        assert SECRET not in text


def test_an_injected_value_fails_the_target_without_showing_it(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "fleet"
    shutil.copytree(CORPUS, repo)
    init_repo(repo)
    commit_all(repo, "initial")
    vars_file = repo / "clusters/staging/cluster-vars.yaml"
    vars_file.write_text(vars_file.read_text().replace(
        "cluster_name: staging", 'cluster_name: "staging\\r    injected: Secret"'))
    code = main(["plan", "--repo", str(repo), "--base", "HEAD", "--format", "json"])
    out, _ = capsys.readouterr()
    web = next(t for t in json.loads(out)["targets"] if (t["app"], t["env"]) == ("web", "staging"))
    assert code == 1
    assert web["error"] == ("postBuild of Kustomization flux-system/apps: Deployment web/web: a substituted "
                            "value changes the object's structure at metadata.labels (a value may replace one "
                            "scalar only)")
    assert "injected" not in json.dumps(web)


def _plan_json(repo: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["plan", "--repo", str(repo), "--base", "HEAD~1", "--head", "HEAD", "--format", "json"])
    out, err = capsys.readouterr()
    return code, json.loads(out)


def _oci_app(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "oci")
    write(repo, ".prbot.yml", "version: 1\nenvironments:\n  - name: prod\napps:\n  - name: app\n    path: app\n")
    write(repo, "app/kustomization.yaml", "resources: [sync.yaml]\n")
    write(repo, "app/sync.yaml", flux_kustomization("app", "  path: ./\n  interval: 1m\n").replace(
        "{kind: GitRepository, name: flux-system}", "{kind: OCIRepository, name: x}"))
    write(repo, "NOTES.md", "notes\n")
    commit_all(repo, "initial")
    return repo


def test_an_unrelated_edit_plans_no_oci_sourced_kustomization(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    repo = _oci_app(tmp_path)
    write(repo, "NOTES.md", "more notes\n")
    commit_all(repo, "notes")
    code, plan = _plan_json(repo, capsys)
    assert code == 0
    assert [t["app"] for t in plan["targets"]] == []


def test_an_oci_sourced_kustomization_changed_is_named_not_expanded(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    repo = _oci_app(tmp_path)
    sync = repo / "app/sync.yaml"
    sync.write_text(sync.read_text().replace("interval: 1m", "interval: 5m"))
    commit_all(repo, "interval")
    _, plan = _plan_json(repo, capsys)
    [app] = [t for t in plan["targets"] if t["app"] == "app"]
    assert "Kustomization flux-system/app: its source OCIRepository flux-system/x is not read" in json.dumps(app)


def test_a_source_ref_without_kind_reads_nothing(tmp_path: Path) -> None:
    repo = cluster(tmp_path, {"clusters/prod/apps.yaml": flux_kustomization("apps", "  path: ./apps\n").replace(
        "{kind: GitRepository, name: flux-system}", "{name: flux-system}"),
        "apps/keep.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-this-repository}\n"})
    files = input_closure(repo, Target("cluster", "prod", "clusters/prod", "plain")).files
    assert "apps/keep.yaml" not in files
    rendered = render_cluster(repo)
    assert rendered.not_expanded == ["Kustomization flux-system/apps: spec.sourceRef flux-system/flux-system has no "
                                     "kind (Flux requires one)"]


TENANT_BASE = """\
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: dev-team, namespace: apps}
spec: {url: "https://github.com/acme/fleet", ref: {branch: main}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: dev-team, namespace: apps}
spec:
  interval: 5m
  sourceRef: {kind: GitRepository, name: dev-team}
  prune: true
"""


def _tenants(tmp_path: Path, inline: bool) -> Path:
    repo = init_repo(tmp_path / ("inline" if inline else "file"))
    write(repo, ".prbot.yml", "version: 1\nenvironments:\n  - name: staging\n  - name: production\n"
          "apps:\n  - name: tenants\n    path: \"tenants/{env}\"\n"
          "render:\n  repository: [\"https://github.com/acme/fleet\"]\n")
    write(repo, "tenants/base/dev-team/kustomization.yaml", "resources: [sync.yaml]\n")
    write(repo, "tenants/base/dev-team/sync.yaml", TENANT_BASE)
    for env in ("staging", "production"):
        patch = ("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
                 f"metadata: {{name: dev-team, namespace: apps}}\nspec: {{path: ./deploy/{env}}}\n")
        if inline:
            write(repo, f"tenants/{env}/kustomization.yaml", "resources: [../base/dev-team]\npatches:\n"
                  "  - patch: |\n" + "".join(f"      {line}\n" for line in patch.splitlines()))
        else:
            write(repo, f"tenants/{env}/kustomization.yaml",
                  "resources: [../base/dev-team]\npatches:\n  - path: dev-team-patch.yaml\n")
            write(repo, f"tenants/{env}/dev-team-patch.yaml", patch)
        write(repo, f"deploy/{env}/cm.yaml",
              f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: team, namespace: apps}}\ndata: {{env: {env}}}\n")
    write(repo, "README.md", "tenants\n")
    commit_all(repo, "initial")
    return repo


@pytest.mark.parametrize("inline", [False, True])
def test_a_base_without_path_patched_per_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     inline: bool) -> None:
    repo = _tenants(tmp_path, inline)
    files = input_closure(repo, Target("tenants", "staging", "tenants/staging", "kustomize")).files
    assert "deploy/staging/cm.yaml" in files
    assert not any(f.startswith("deploy/production/") or f == "README.md" for f in files)
    write(repo, "README.md", "tenants, documented\n")
    commit_all(repo, "docs")
    code, plan = _plan_json(repo, capsys)
    assert (code, plan["targets"]) == (0, [])
    write(repo, "deploy/staging/cm.yaml", (repo / "deploy/staging/cm.yaml").read_text().replace(
        "env: staging", "env: staging-2"))
    commit_all(repo, "staging data")
    code, plan = _plan_json(repo, capsys)
    assert [(t["app"], t["env"]) for t in plan["targets"]] == [("tenants", "staging")], plan
    assert "staging-2" in json.dumps(plan["targets"][0])

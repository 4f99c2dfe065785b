"""`prbot rbac --env ENV`: the least-privilege RBAC an environment's cluster must grant prbot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support import write

from prbot.cli import main
from prbot.validate import validate_objects

FORBIDDEN_VERBS = {"proxy", "impersonate", "escalate", "bind", "*"}
FORBIDDEN_RESOURCES = {"pods/exec", "pods/attach", "pods/portforward", "services/proxy", "pods/proxy",
                       "nodes/proxy", "*"}


def rbac(capsys: pytest.CaptureFixture[str], repo: Path, env: str, *extra: str) -> tuple[int, list[dict], str]:
    code = main(["rbac", "--env", env, "--repo", str(repo), *extra])
    out, err = capsys.readouterr()
    return code, [doc for doc in yaml.safe_load_all(out) if doc] if code == 0 else [], out + err


def rules(docs: list[dict], kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [rule for doc in docs if doc["kind"] == kind and doc["metadata"].get("namespace") == namespace
            for rule in doc["rules"]]


def grants(docs: list[dict], kind: str, namespace: str | None = None) -> set[tuple[str, str, str, str]]:
    """(group, resource, verb, name or '') of every rule of the Role/ClusterRole."""
    return {(group, resource, verb, name)
            for rule in rules(docs, kind, namespace) for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]
            for name in rule.get("resourceNames") or [""]}


def assert_least_privilege(docs: list[dict]) -> None:
    for doc in docs:
        for rule in doc.get("rules", ()):
            assert not set(rule["verbs"]) & FORBIDDEN_VERBS, rule
            assert not any("/" in r or r in FORBIDDEN_RESOURCES for r in rule["resources"]), rule
            assert "*" not in rule["apiGroups"], rule
            assert "nonResourceURLs" not in rule, rule
            if doc["kind"] == "ClusterRole" and "" in rule["apiGroups"] and "secrets" in rule["resources"]:
                assert not set(rule["verbs"]) & {"get", "list", "watch"}, rule


def test_example_repo_gets_its_syncs_and_dry_runs_and_nothing_more(example_repo: Path, capsys) -> None:
    code, docs, text = rbac(capsys, example_repo, "staging")
    assert code == 0, text
    assert_least_privilege(docs)
    # Argo CD: get/patch of the Applications by name in the Argo CD namespace
    assert grants(docs, "Role", "argocd") == {
        ("argoproj.io", "applications", verb, name) for verb in ("get", "patch")
        for name in ("shop-staging", "worker-staging")}
    # Flux: the HelmRelease by name, its sources in its namespace
    flux = grants(docs, "Role", "flux-system")
    assert ("helm.toolkit.fluxcd.io", "helmreleases", "patch", "billing-staging") in flux
    assert ("source.toolkit.fluxcd.io", "helmcharts", "patch", "") in flux
    assert not any(g[1] == "secrets" for g in flux)
    # dry-run: get and (dry) apply of the rendered kinds, in the owned namespaces only
    shop = grants(docs, "Role", "shop-staging")
    assert ("apps", "deployments", "get", "") in shop and ("apps", "deployments", "patch", "") in shop
    assert not any(verb in ("delete", "list", "watch") for _, _, verb, _ in shop)
    namespaces = {doc["metadata"].get("namespace") for doc in docs if doc["kind"] == "Role"}
    assert namespaces == {"argocd", "flux-system", "shop-staging", "worker-staging", "billing-staging"}
    # staging is not the preview environment: nothing cluster-wide
    assert [doc for doc in docs if doc["kind"].startswith("Cluster")] == []
    # every Role has its binding to the ServiceAccount
    bindings = [doc for doc in docs if doc["kind"] == "RoleBinding"]
    assert len(bindings) == len(namespaces)
    assert all(b["subjects"] == [{"kind": "ServiceAccount", "name": "prbot", "namespace": "prbot"}] for b in bindings)


def test_the_preview_environment_gets_namespaces_and_never_reads_secrets_cluster_wide(
        example_repo: Path, capsys) -> None:
    code, docs, text = rbac(capsys, example_repo, "dev", "--service-account", "tools/bot")
    assert code == 0, text
    assert_least_privilege(docs)
    cluster = grants(docs, "ClusterRole")
    assert {("", "namespaces", verb, "") for verb in ("create", "delete")} <= cluster
    assert ("", "secrets", "create", "") in cluster and ("", "secrets", "get", "") not in cluster
    assert "cluster-wide" in text and "pr-*" in text
    assert all(s == {"kind": "ServiceAccount", "name": "bot", "namespace": "tools"}
               for doc in docs if doc["kind"].endswith("Binding") for s in doc["subjects"])


def test_the_printed_objects_validate_against_the_kubernetes_schemas(example_repo: Path, capsys) -> None:
    code, docs, text = rbac(capsys, example_repo, "dev")
    assert code == 0, text
    assert docs and validate_objects(docs, None) == []


APPLY_CONFIG = """\
version: 1
environments:
  - name: dev
    cluster: dev
  - name: prod
    cluster: prod
  - name: local
apps:
  - path: "apps/{app}/{env}"
    namespace: "{app}-{env}"
    sync:
      apply: {prune: true}
preview: {environment: prod}
"""

HOSTILE = """\
apiVersion: v1
kind: Pod/exec
metadata: {name: shell, namespace: kube-system}
---
apiVersion: v1
kind: Service
metadata: {name: svc}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: x}
---
apiVersion: "*/v1"
kind: Anything
metadata: {name: wild}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: escape, namespace: "../kube-system"}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: secrets.core}
spec:
  group: ""
  scope: Cluster
  names: {kind: Secret, plural: secrets}
  versions: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: exec-everything}
rules:
  - apiGroups: [""]
    resources: [pods/exec, secrets]
    verbs: ["*"]
"""


def test_apply_grants_the_rendered_kinds_in_their_namespaces_and_prunes(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    write(repo, ".prbot.yml", APPLY_CONFIG)
    write(repo, "apps/api/dev/all.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\n"
          "spec: {selector: {matchLabels: {a: b}}, template: {metadata: {labels: {a: b}}, "
          "spec: {containers: [{name: c, image: i}]}}}\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\n"
          "metadata: {name: api, namespace: edge}\nspec: {}\n")
    code, docs, text = rbac(capsys, repo, "dev")
    assert code == 0, text
    assert_least_privilege(docs)
    api = grants(docs, "Role", "api-dev")
    assert {("apps", "deployments", verb, "") for verb in ("get", "create", "patch", "list", "delete")} <= api
    assert ("", "configmaps", "get", "prbot-applied.api.dev") in api        # the record of what was applied
    assert ("networking.k8s.io", "ingresses", "delete", "") in grants(docs, "Role", "edge")
    code, docs, text = rbac(capsys, repo, "local")                            # no cluster: nothing to grant
    assert code == 0 and docs == [] and "no cluster" in text


def test_a_target_that_would_need_exec_or_cluster_wide_secrets_gets_neither(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    write(repo, ".prbot.yml", APPLY_CONFIG)
    write(repo, "apps/evil/prod/all.yaml", HOSTILE)
    code, docs, text = rbac(capsys, repo, "prod")
    assert code == 0, text
    assert_least_privilege(docs)
    every = {g for doc in docs if doc["kind"] in ("Role", "ClusterRole")
             for g in grants(docs, doc["kind"], doc["metadata"].get("namespace"))}
    assert not any(resource.startswith("pods") for _, resource, _, _ in every)    # no Pod/exec kind
    assert not any(group == "*" for group, _, _, _ in every)
    assert ("", "secrets", "get", "") not in grants(docs, "ClusterRole")  # no CRD makes Secret cluster-wide
    assert ("", "secrets", "get", "") in grants(docs, "Role", "evil-prod")        # its own namespace only
    roles = {doc["metadata"].get("namespace") for doc in docs if doc["kind"] == "Role"}
    assert "kube-system" not in roles and not any(".." in (ns or "") for ns in roles)
    # the ClusterRole it renders may be applied (by name), never with bind/escalate
    cluster = grants(docs, "ClusterRole")
    assert ("rbac.authorization.k8s.io", "clusterroles", "patch", "") in cluster
    assert not any(verb in ("bind", "escalate") for _, _, verb, _ in cluster)
    assert validate_objects(docs, None) == []


def test_a_hostile_sync_spec_names_no_wildcard(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    write(repo, ".prbot.yml", "version: 1\nenvironments:\n  - name: dev\n    cluster: dev\napps:\n"
          "  - path: \"apps/{app}/{env}\"\n    sync:\n      argocd: {application: \"*\", namespace: \"*\"}\n")
    write(repo, "apps/a/dev/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    code = main(["rbac", "--env", "dev", "--repo", str(repo)])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "application" in err          # refused whole: no RBAC printed


def test_unknown_environment_and_bad_service_account_are_bad_input(example_repo: Path, capsys) -> None:
    code, _, text = rbac(capsys, example_repo, "qa")
    assert code == 2 and "qa" in text
    code, _, text = rbac(capsys, example_repo, "dev", "--service-account", "Not/A Name")
    assert code == 2 and "--service-account" in text


# --------------------------------------------------------------------------------------------
# Every call prbot makes is inside the RBAC it prints: the deploy, prune, dry-run and preview
# flows run against the fake API, then each recorded request is authorised against the printed
# Roles the way the API server would (discovery, which every authenticated user may read, aside).
# A new cluster call that needs a new permission fails here until `prbot rbac` grants it.
# --------------------------------------------------------------------------------------------

SHA = "0123456789abcdef0123456789abcdef01234567"
FLOW_CONFIG = """\
version: 1
environments:
  - name: dev
    cluster: dev
apps:
  - path: "apps/{app}/{env}"
    namespace: "{app}-{env}"
    sync:
      apply: {prune: true}
"""
FLOW_OBJECTS = """\
apiVersion: v1
kind: Namespace
metadata: {name: api-dev}
---
apiVersion: v1
kind: Namespace
metadata: {name: edge}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: "1"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: t}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, image: "ghcr.io/acme/api:1"}]}
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: edge}
spec: {ports: [{port: 80}]}
"""


def authorised(docs: list[dict], verb: str, group: str, resource: str, namespace: str | None, name: str) -> bool:
    for doc in docs:
        if doc["kind"] == "Role" and doc["metadata"]["namespace"] != namespace:
            continue
        if doc["kind"] not in ("Role", "ClusterRole"):
            continue
        for rule in doc["rules"]:
            if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"] and (
                    not rule.get("resourceNames") or (name and name in rule["resourceNames"])):
                return True
    return False


def refused_calls(fake: Any, docs: list[dict]) -> list[str]:
    """The recorded requests the printed RBAC would refuse (verb group/resource namespace/name)."""
    out = []
    for call in fake.requests:
        parts = [p for p in call.segments if p]
        if parts in (["api"], ["apis"], ["version"]):
            continue                                      # discovery and /version: every user may read them
        if parts[:1] == ["api"]:
            group, rest = "", parts[2:]
        elif parts[:1] == ["apis"]:
            group, rest = parts[1], parts[3:]
        else:
            out.append(f"{call.method} {call.path}")
            continue
        if not rest:
            continue                                      # discovery: /api/v1, /apis/GROUP/VERSION
        namespace = None
        if rest[0] == "namespaces" and len(rest) > 2:
            namespace, rest = rest[1], rest[2:]
        resource, name = rest[0], (rest[1] if len(rest) > 1 else "")
        if len(rest) > 2:
            resource = f"{resource}/{rest[2]}"           # a subresource: never granted
        verb = {"GET": "get" if name else "list", "PATCH": "patch", "DELETE": "delete",
                "POST": "create", "PUT": "update"}[call.method]
        if not authorised(docs, verb, group, resource, namespace, name):
            out.append(f"{verb} {group or 'core'}/{resource} {namespace or '-'}/{name}")
    return out


def test_every_call_of_deploy_prune_dry_run_and_preview_is_inside_the_printed_rbac(
        tmp_path: Path, fake_kube: Any, cluster: Any, capsys) -> None:
    from kubehelp import FAST

    from prbot.cluster.client import ClusterClient
    from prbot.cluster.deploy import Deployer
    from prbot.cluster.dryrun import dry_run_objects
    from prbot.config import SyncSpec, load_config_file
    from prbot.render import render_target
    from prbot.targets import discover_targets

    repo = tmp_path / "repo"
    write(repo, ".prbot.yml", FLOW_CONFIG)
    write(repo, "apps/api/dev/all.yaml", FLOW_OBJECTS)
    code, docs, text = rbac(capsys, repo, "dev")
    assert code == 0, text
    config = load_config_file(repo / ".prbot.yml")
    (target,) = discover_targets(config, repo)
    objects = render_target(repo, target)
    spec = config.apps[0].sync
    assert spec is not None
    kept = [o for o in objects if o["kind"] != "Service"]

    deployer = Deployer({"dev": cluster}, retry=FAST)
    try:
        deployer.start("dev", target, spec, SHA, objects=objects)                  # first deploy: creates
        client = ClusterClient(cluster, retry=FAST)
        try:
            dry = dry_run_objects(client, objects, namespace=target.namespace, base=objects)
        finally:
            client.close()
        assert dry.status == "ok", dry.errors
        ticket, _ = deployer.start("dev", target, spec, SHA, objects=kept)         # the Service pruned
        deployer.poll(ticket)
        # the preview of PR 7 on the preview environment (the first one): up, then down
        preview = type(target)(app="pr-7", env="dev", path="", renderer="plain", namespace="pr-7")
        confined = SyncSpec("apply", {"prune": True, "confine": True})
        moved = [{**o, "metadata": {**o["metadata"], "namespace": "pr-7"}} for o in objects
                 if o["kind"] not in ("Namespace", "Secret")]     # Secrets in previews: see the next test
        deployer.start("dev", preview, confined, SHA,
                       objects=[{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pr-7"}}, *moved])
        deployer.start("dev", preview, confined, SHA, objects=[])
    finally:
        deployer.close()
    assert fake_kube.live("v1", "Service", "edge", "api") is None                  # the flows did run
    assert fake_kube.live("v1", "Namespace", None, "pr-7") is None
    assert fake_kube.deletes() and fake_kube.applies()
    refused = refused_calls(fake_kube, docs)
    assert refused == [], "\n".join(refused)
    # and the check bites: without the Role of the target's namespace its calls are refused
    narrower = [d for d in docs if d["metadata"].get("namespace") != "api-dev"]
    assert any("api-dev/" in call for call in refused_calls(fake_kube, narrower))


def test_a_preview_rendering_secrets_is_told_it_cannot_prune_them(example_repo: Path, capsys) -> None:
    code, docs, text = rbac(capsys, example_repo, "dev")            # shop renders a Secret
    assert code == 0 and "render Secrets" in text and "403" in text
    assert ("", "secrets", "list", "") not in grants(docs, "ClusterRole")


def test_argocd_and_flux_syncs_of_the_example_repo_stay_inside_the_printed_rbac(
        example_repo: Path, fake_kube: Any, cluster: Any, capsys) -> None:
    from kubehelp import FAST

    from prbot.cluster.deploy import Deployer
    from prbot.config import load_config_file
    from prbot.targets import discover_targets

    code, docs, text = rbac(capsys, example_repo, "dev")
    assert code == 0, text
    fake_kube.seed({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                    "metadata": {"name": "shop-dev", "namespace": "argocd"},
                    "spec": {"project": "default", "destination": {"namespace": "shop-dev"},
                             "source": {"repoURL": "https://github.com/acme/gitops.git",
                                        "path": "apps/shop/envs/dev", "targetRevision": "main"}},
                    "status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}})
    fake_kube.seed({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
                    "metadata": {"name": "acme", "namespace": "flux-system"},
                    "spec": {"url": "https://charts.example.com"}})
    fake_kube.seed({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
                    "metadata": {"name": "flux-system-billing-dev", "namespace": "flux-system"},
                    "spec": {"chart": "billing", "sourceRef": {"kind": "HelmRepository", "name": "acme"}}})
    fake_kube.seed({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                    "metadata": {"name": "billing-dev", "namespace": "flux-system"},
                    "spec": {"chart": {"spec": {"chart": "billing", "version": "1.0.0",
                                                "sourceRef": {"kind": "HelmRepository", "name": "acme"}}}}})
    config = load_config_file(example_repo / ".prbot.yml")
    targets = {t.app: t for t in discover_targets(config, example_repo) if t.env == "dev"}
    deployer = Deployer({"dev": cluster}, retry=FAST)
    try:
        for app in ("shop", "billing"):
            spec = config.apps[targets[app].app_index].sync
            assert spec is not None
            ticket, _ = deployer.start("dev", targets[app], spec, SHA, repo_urls=["https://github.com/acme/gitops"])
            for _ in range(2):
                ticket, _ = deployer.poll(ticket)
    finally:
        deployer.close()
    assert fake_kube.patches("Application") and fake_kube.patches("HelmRelease") and fake_kube.patches("HelmChart")
    refused = refused_calls(fake_kube, docs)
    assert refused == [], "\n".join(refused)


def test_apply_and_previews_grant_the_target_s_own_objects_and_the_dry_run_what_it_expands_to(
        tmp_path: Path, capsys) -> None:
    """prbot applies a HelmRelease, never the chart's objects (the cluster's Flux installs those); the
    plan's dry-run sends the expanded objects too, so it alone is granted their kinds."""
    repo = tmp_path / "repo"
    write(repo, ".prbot.yml", APPLY_CONFIG + 'render:\n  repository: ["https://github.com/acme/fleet"]\n')
    write(repo, "apps/web/prod/release.yaml",
          "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: web}\nspec:\n"
          "  chart:\n    spec:\n      chart: ./charts/web\n      sourceRef: {kind: GitRepository, name: fleet}\n"
          "---\napiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: fleet}\n"
          "spec: {url: 'https://github.com/acme/fleet.git'}\n")
    write(repo, "charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n")
    write(repo, "charts/web/templates/sts.yaml", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\n"
          "spec: {selector: {matchLabels: {a: b}}, serviceName: web, template: {metadata: {labels: {a: b}}, "
          "spec: {containers: [{name: c, image: i}]}}}\n")
    code, docs, text = rbac(capsys, repo, "prod")
    assert code == 0, text
    assert_least_privilege(docs)
    web = grants(docs, "Role", "web-prod")
    assert {("helm.toolkit.fluxcd.io", "helmreleases", verb, "") for verb in ("create", "patch", "delete")} <= web
    # the dry-run: get, create, patch of the StatefulSet; never applied, listed or deleted by prbot
    assert {v for g, r, v, _ in web if (g, r) == ("apps", "statefulsets")} == {"get", "create", "patch"}
    preview = grants(docs, "ClusterRole")
    assert ("helm.toolkit.fluxcd.io", "helmreleases", "create", "") in preview
    assert not {r for _, r, _, _ in preview} & {"statefulsets"}

"""Pure sync logic: the writes a sync asks for, from live objects — no server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from kubehelp import configmap, deployment, namespace, widget_crd

from prbot.cluster.sync import (
    REFRESH_ANNOTATION,
    REQUESTED_AT_ANNOTATION,
    TARGET_LABEL,
    ObjectRef,
    Request,
    apply_record,
    apply_requests,
    argocd_sync,
    flux_sources,
    flux_sync,
    prune_requests,
    record_ref,
    record_scope,
    subject,
    target_label,
)
from prbot.config import SyncSpec
from prbot.errors import NotServed
from prbot.model import Target

SHA = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"
SHOP = Target(app="shop", env="dev", path="apps/shop/envs/dev", renderer="kustomize", namespace="shop-dev")
APP = ObjectRef("argoproj.io/v1alpha1", "Application", "shop-dev", "argocd")
FLUX_2_3 = {"argoproj.io/Application": "v1alpha1", "kustomize.toolkit.fluxcd.io/Kustomization": "v1",
            "helm.toolkit.fluxcd.io/HelmRelease": "v2", "source.toolkit.fluxcd.io/GitRepository": "v1",
            "source.toolkit.fluxcd.io/HelmRepository": "v1", "source.toolkit.fluxcd.io/HelmChart": "v1",
            "source.toolkit.fluxcd.io/OCIRepository": "v1beta2"}
FLUX_2_2 = {**FLUX_2_3, "helm.toolkit.fluxcd.io/HelmRelease": "v2beta2",
            "source.toolkit.fluxcd.io/HelmRepository": "v1beta2", "source.toolkit.fluxcd.io/HelmChart": "v1beta2"}


def served(table: dict[str, str]) -> Any:
    """A cluster's discovery as `prbot.cluster.sync` asks it: (group, kind) -> apiVersion or None."""
    def versions(group: str, kind: str) -> str | None:
        version = table.get(f"{group}/{kind}")
        return f"{group}/{version}" if version else None
    return versions


DISCOVERY = served(FLUX_2_3)


def application(**extra: Any) -> dict[str, Any]:
    app: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "shop-dev", "namespace": "argocd", "resourceVersion": "812"},
        "spec": {"project": "default", "destination": {"namespace": "shop-dev"},
                 "source": {"repoURL": "https://github.com/acme/gitops.git", "path": "apps/shop/envs/dev",
                            "targetRevision": "main"}},
        "status": {"sync": {"status": "Synced", "revision": OLD}, "health": {"status": "Healthy"},
                   "operationState": {"phase": "Succeeded", "finishedAt": "2024-01-01T00:00:00Z",
                                      "operation": {"sync": {"revision": OLD}},
                                      "syncResult": {"revision": OLD}}}}
    for key, value in extra.items():
        app[key] = value
    return app


def test_subject_expands_the_spec_patterns() -> None:
    argocd = SyncSpec("argocd", {"application": "{app}-{env}", "namespace": "argocd"})
    assert subject(SHOP, argocd, DISCOVERY) == APP
    flux = SyncSpec("flux", {"kind": "HelmRelease", "name": "{app}", "namespace": "flux-{env}"})
    assert subject(SHOP, flux, DISCOVERY) == ObjectRef("helm.toolkit.fluxcd.io/v2", "HelmRelease", "shop", "flux-dev")
    flux = SyncSpec("flux", {"kind": "Kustomization", "name": "apps", "namespace": "flux-system"})
    assert subject(SHOP, flux, DISCOVERY) == ObjectRef("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "apps",
                                                       "flux-system")
    assert subject(SHOP, SyncSpec("apply", {"prune": True}), DISCOVERY) is None


def test_subject_is_asked_at_the_version_the_cluster_serves() -> None:
    flux = SyncSpec("flux", {"kind": "HelmRelease", "name": "{app}", "namespace": "flux-{env}"})
    assert subject(SHOP, flux, served(FLUX_2_2)).api_version == "helm.toolkit.fluxcd.io/v2beta2"   # type: ignore[union-attr]
    argocd = SyncSpec("argocd", {"application": "{app}-{env}", "namespace": "argocd"})
    newer = served({**FLUX_2_3, "argoproj.io/Application": "v1"})
    assert subject(SHOP, argocd, newer) == ObjectRef("argoproj.io/v1", "Application", "shop-dev", "argocd")
    without_flux = served({"argoproj.io/Application": "v1alpha1"})
    with pytest.raises(NotServed, match='"Kustomization" in version "kustomize.toolkit.fluxcd.io"'):
        subject(SHOP, SyncSpec("flux", {"kind": "Kustomization", "name": "a", "namespace": "b"}), without_flux)


# --------------------------------------------------------------------------------------------
# Argo CD
# --------------------------------------------------------------------------------------------

def test_argocd_sync_after_a_finished_operation() -> None:
    step = argocd_sync(application(), APP, SHA, info=[("Reason", "merge of acme/gitops#12")])
    assert step.wait is None and step.error is None and not step.already
    [request] = step.requests
    assert (request.verb, request.ref, request.patch_type) == ("patch", APP, "merge")
    assert request.body == {
        "metadata": {"annotations": {REFRESH_ANNOTATION: "normal"}, "resourceVersion": "812"},
        "operation": {"initiatedBy": {"username": "prbot"}, "sync": {"revision": SHA},
                      "info": [{"name": "Reason", "value": "merge of acme/gitops#12"}]}}
    assert request.why == "sync Application argocd/shop-dev at 0123456"


def test_argocd_sync_waits_for_a_running_operation() -> None:
    running = application(operation={"sync": {"revision": OLD}, "initiatedBy": {"username": "alice"}})
    assert argocd_sync(running, APP, SHA).wait == "waiting for the running operation"
    app = application()
    app["status"]["operationState"] = {"phase": "Running", "operation": {"sync": {"revision": OLD}}}
    assert argocd_sync(app, APP, SHA).wait == "waiting for the running operation"
    # an operation already syncing the SHA (ours, re-sent after a restart, or Argo CD's auto-sync): nothing to send
    ours = application(operation={"sync": {"revision": SHA}, "initiatedBy": {"automated": True}})
    step = argocd_sync(ours, APP, SHA)
    assert step.already and step.requests == () and step.wait is None


def test_argocd_sync_keeps_the_applications_sync_policy() -> None:
    app = application()
    app["spec"]["syncPolicy"] = {"automated": {"prune": True, "selfHeal": True},
                                 "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"]}
    [request] = argocd_sync(app, APP, SHA).requests
    assert request.body["operation"]["sync"] == {"revision": SHA, "prune": True,
                                                 "syncOptions": ["CreateNamespace=true", "ServerSideApply=true"]}


def test_argocd_sync_checks_the_repository() -> None:
    urls = ["git@github.com:acme/gitops.git", "https://github.com/acme/gitops"]
    assert argocd_sync(application(), APP, SHA, repo_urls=urls).requests
    other = application()
    other["spec"]["source"]["repoURL"] = "https://charts.example.com"
    assert argocd_sync(other, APP, SHA, repo_urls=urls).error == (
        "Application argocd/shop-dev syncs https://charts.example.com, not this repository")
    multi = application()
    del multi["spec"]["source"]
    multi["spec"]["sources"] = [{"repoURL": "https://charts.example.com", "chart": "shop", "targetRevision": "1.2.0"},
                                {"repoURL": "ssh://git@github.com/ACME/gitops.git", "targetRevision": "main",
                                 "ref": "values"}]
    [request] = argocd_sync(multi, APP, SHA, repo_urls=urls).requests
    assert request.body["operation"]["sync"] == {"revisions": ["1.2.0", SHA]}
    assert "needs the repository URL" in (argocd_sync(multi, APP, SHA).error or "")
    assert "has no source in this repository" in (
        argocd_sync(multi, APP, SHA, repo_urls=["https://github.com/acme/other"]).error or "")


def test_argocd_sync_of_a_missing_application() -> None:
    assert argocd_sync(None, APP, SHA).error == "Application argocd/shop-dev does not exist"


# --------------------------------------------------------------------------------------------
# Flux
# --------------------------------------------------------------------------------------------

KS = ObjectRef("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "apps", "flux-system")
HR = ObjectRef("helm.toolkit.fluxcd.io/v2", "HelmRelease", "billing-dev", "flux-system")


def kustomization(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": KS.api_version, "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {"interval": "10m", "path": "./apps", "prune": True,
                     "sourceRef": {"kind": "GitRepository", "name": "flux-system"}, **spec}}


def helmrelease(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": HR.api_version, "kind": "HelmRelease",
                           "metadata": {"name": "billing-dev", "namespace": "flux-system"}, "spec": spec}
    if status:
        obj["status"] = status
    return obj


def test_flux_sync_annotates_the_source_then_the_kustomization() -> None:
    step = flux_sync(kustomization(), KS, "2024-05-01T10:00:00.000000Z", DISCOVERY)
    body = {"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: "2024-05-01T10:00:00.000000Z"}}}
    assert step.requests == (
        Request("patch", ObjectRef("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system"),
                body, "merge", "reconcile GitRepository flux-system/flux-system"),
        Request("patch", KS, body, "merge", "reconcile Kustomization flux-system/apps"),
    )


def test_flux_sources_of_a_helmrelease() -> None:
    chart = {"chart": {"spec": {"chart": "billing", "sourceRef": {"kind": "HelmRepository", "name": "acme",
                                                                  "namespace": "charts"}}}}
    assert flux_sources(helmrelease(chart), DISCOVERY) == ([
        ObjectRef("source.toolkit.fluxcd.io/v1", "HelmRepository", "acme", "charts"),
        ObjectRef("source.toolkit.fluxcd.io/v1", "HelmChart", "flux-system-billing-dev", "charts")], [])
    # the HelmChart Flux recorded in the status wins over the conventional name
    assert flux_sources(helmrelease(chart, {"helmChart": "charts/custom"}), DISCOVERY)[0][1] == ObjectRef(
        "source.toolkit.fluxcd.io/v1", "HelmChart", "custom", "charts")
    git = {"chart": {"spec": {"chart": "./charts/billing", "sourceRef": {"kind": "GitRepository",
                                                                         "name": "flux-system"}}}}
    assert flux_sources(helmrelease(git), DISCOVERY)[0][0] == ObjectRef("source.toolkit.fluxcd.io/v1", "GitRepository",
                                                                        "flux-system", "flux-system")
    oci = {"chartRef": {"kind": "OCIRepository", "name": "billing", "apiVersion": "source.toolkit.fluxcd.io/v1"}}
    assert flux_sources(helmrelease(oci), served({**FLUX_2_3, "source.toolkit.fluxcd.io/OCIRepository": "v1"})) == (
        [ObjectRef("source.toolkit.fluxcd.io/v1", "OCIRepository", "billing", "flux-system")], [])


def test_flux_2_2_sources_are_asked_at_v1beta2() -> None:
    """Flux 2.0–2.2 serves HelmChart and HelmRepository only at v1beta2: asking at v1 fails."""
    chart = {"chart": {"spec": {"chart": "billing", "sourceRef": {"kind": "HelmRepository", "name": "acme"}}}}
    hr = ObjectRef("helm.toolkit.fluxcd.io/v2beta2", "HelmRelease", "billing-dev", "flux-system")
    step = flux_sync(helmrelease(chart), hr, "t", served(FLUX_2_2))
    assert [r.ref.api_version for r in step.requests] == [
        "source.toolkit.fluxcd.io/v1beta2", "source.toolkit.fluxcd.io/v1beta2", "helm.toolkit.fluxcd.io/v2beta2"]
    assert step.notes == ()


def test_a_source_kind_the_cluster_does_not_serve_is_skipped_with_a_note() -> None:
    oci = {"chartRef": {"kind": "OCIRepository", "name": "billing"}}
    no_oci = served({k: v for k, v in FLUX_2_3.items() if not k.endswith("/OCIRepository")})
    step = flux_sync(helmrelease(oci), HR, "t", no_oci)
    assert [r.ref for r in step.requests] == [HR]                      # the HelmRelease is still asked
    assert step.notes == ("OCIRepository flux-system/billing not asked to reconcile: the cluster serves no "
                          "OCIRepository in source.toolkit.fluxcd.io",)


def test_flux_sync_refuses_a_missing_or_suspended_object() -> None:
    assert flux_sync(None, KS, "t", DISCOVERY).error == "Kustomization flux-system/apps does not exist"
    error = flux_sync(kustomization(suspend=True), KS, "t", DISCOVERY).error or ""
    assert error.startswith("Kustomization flux-system/apps is suspended: resume it (flux resume kustomization apps")


# --------------------------------------------------------------------------------------------
# apply
# --------------------------------------------------------------------------------------------

def test_target_label_is_a_valid_label_value() -> None:
    valid = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
    assert target_label(SHOP) == "shop.dev"
    odd = [Target(app="a" * 70, env="prod", path="", renderer="plain"),
           Target(app="_weird app", env="dev", path="", renderer="plain"),
           Target(app="a" * 70 + "x", env="prod", path="", renderer="plain")]
    labels = [target_label(t) for t in odd]
    assert all(valid.match(label) for label in labels)
    assert len(set(labels)) == len(labels)                           # never two targets with one value


def namespaced(api_version: str, kind: str) -> bool:
    return kind not in ("Namespace", "CustomResourceDefinition", "ClusterRole")


def test_apply_requests_label_and_order_the_objects() -> None:
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "reader", "namespace": "stray", "labels": {"team": "shop"}}}
    objects = [deployment("web", 2), configmap("cfg", {"a": "b"}, namespace="other"), role, namespace("shop-dev"),
               widget_crd()]
    requests = apply_requests(SHOP, objects, namespaced=namespaced, default_namespace="shop-dev")
    assert [(r.verb, str(r.ref)) for r in requests] == [
        ("apply", "Namespace shop-dev"), ("apply", "CustomResourceDefinition widgets.example.com"),
        ("apply", "ConfigMap other/cfg"), ("apply", "ClusterRole reader"), ("apply", "Deployment shop-dev/web")]
    for request in requests:
        assert request.body["metadata"]["labels"][TARGET_LABEL] == "shop.dev"
    assert requests[3].body["metadata"] == {"name": "reader", "labels": {"team": "shop", TARGET_LABEL: "shop.dev"}}
    assert objects[0]["metadata"] == {"name": "web", "labels": {"app": "web"}}          # the input is not changed
    with pytest.raises(ValueError, match="has no metadata.name"):
        apply_requests(SHOP, [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}], namespaced=namespaced,
                       default_namespace="x")


def labelled(obj: dict[str, Any], value: str = "shop.dev") -> dict[str, Any]:
    obj["metadata"].setdefault("labels", {})[TARGET_LABEL] = value
    return obj


def test_prune_requests_only_what_the_target_applied_and_owns() -> None:
    applied = apply_requests(SHOP, [deployment("web", 1), configmap("cfg", {})], namespaced=namespaced,
                             default_namespace="shop-dev")
    record = record_ref(SHOP, "shop-dev")
    live = [labelled(deployment("web", 1, namespace="shop-dev")),            # still rendered
            labelled(configmap("old", {}, namespace="shop-dev")),            # gone from the render: pruned
            labelled(deployment("old-web", 1, namespace="shop-dev")),        # pruned, before the ConfigMap
            labelled(configmap("elsewhere", {}, namespace="kube-system")),   # not an owned namespace
            labelled(configmap("theirs", {}, namespace="shop-dev"), "billing.dev"),   # another target's
            configmap("unlabelled", {}, namespace="shop-dev"),
            labelled({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": record.name,
                                                                            "namespace": "shop-dev"}}),
            labelled({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                      "metadata": {"name": "old-reader"}})]
    doomed = prune_requests(SHOP, applied, live, owned_namespaces={"shop-dev"}, record=record)
    assert [(r.verb, str(r.ref)) for r in doomed] == [
        ("delete", "Deployment shop-dev/old-web"), ("delete", "ClusterRole old-reader"),
        ("delete", "ConfigMap shop-dev/old")]


def test_the_record_of_what_was_applied() -> None:
    ref = record_ref(SHOP, "shop-dev")
    assert ref == ObjectRef("v1", "ConfigMap", "prbot-applied.shop.dev", "shop-dev")
    request = apply_record(SHOP, ref, ["Deployment.apps", "ConfigMap", "Deployment.apps"], ["shop-dev", ""])
    assert request.body["data"] == {"kinds": "ConfigMap,Deployment.apps", "namespaces": "-,shop-dev"}
    assert request.body["metadata"]["labels"] == {TARGET_LABEL: "shop.dev", "app.kubernetes.io/managed-by": "prbot"}
    assert record_scope(request.body) == ({"ConfigMap", "Deployment.apps"}, {"", "shop-dev"})
    assert record_scope(None) == (set(), set())


def test_one_module_imports_the_kubernetes_client() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "prbot"
    pattern = re.compile(r"^\s*(from|import)\s+kubernetes(\.|\s|$)", re.MULTILINE)
    importers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if pattern.search(p.read_text()))
    assert importers == ["cluster/client.py"]
    # the pure parts load without it
    code = ("import sys, prbot.cluster, prbot.cluster.sync, prbot.cluster.health, prbot.cluster.clusters; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'urllib3')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

"""Pure health logic: one read of live objects gives one `Progress` — no server."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubehelp import deployment

from prbot.cluster.health import (
    argocd_progress,
    at_revision,
    flux_progress,
    rollout_progress,
    workload_state,
)
from prbot.progress import Progress

SHA = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"
TOKEN = "2024-05-01T10:00:00.000000Z"


def test_progress_is_a_small_serialisable_value() -> None:
    p = Progress("progressing", "2 of 3 workloads ready;\n Deployment shop-dev/web: 1 of 2 replicas updated", 2, 3)
    assert p.reason == "2 of 3 workloads ready; Deployment shop-dev/web: 1 of 2 replicas updated"
    assert not p.done and not p.ok and p.workloads() == "2 of 3 workloads ready"
    assert Progress.from_json(p.to_json()) == p
    assert str(Progress("healthy", "Synced and Healthy at 0123456", 1, 1)) == (
        "healthy: Synced and Healthy at 0123456 (1 of 1 workload ready)")
    assert Progress("failed", "x").done and Progress("healthy", "x").ok
    assert len(Progress("failed", "x" * 1000).reason) == 300
    with pytest.raises(ValueError):
        Progress("done", "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(("revision", "expected"), [
    (SHA, True), (SHA.upper(), True), (f"main@sha1:{SHA}", True), (f"main/{SHA}", True), (f"sha1:{SHA}", True),
    (f"refs/heads/main@sha1:{SHA}", True), (SHA[:12], True), (f"main@sha1:{OLD}", False), ("main", False),
    ("", False), (None, False), (SHA[:5], False),
])
def test_at_revision(revision: Any, expected: bool) -> None:
    assert at_revision(revision, SHA) is expected


# --------------------------------------------------------------------------------------------
# Argo CD
# --------------------------------------------------------------------------------------------

def app(phase: str | None = "Succeeded", revision: str = SHA, sync: str = "Synced", health: str = "Healthy",
        message: str = "", operation: dict[str, Any] | None = None, health_message: str = "",
        resources: list[tuple[str, str]] = ()) -> dict[str, Any]:
    status: dict[str, Any] = {"sync": {"status": sync, "revision": revision},
                              "health": {"status": health, **({"message": health_message} if health_message else {})},
                              "resources": [{"kind": "Deployment", "name": n, "namespace": "shop-dev",
                                             "health": {"status": h}} for n, h in resources]}
    if phase is not None:
        status["operationState"] = {"phase": phase, "message": message,
                                    "operation": {"sync": {"revision": revision}},
                                    "syncResult": {"revision": revision}}
    obj: dict[str, Any] = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                           "metadata": {"name": "shop-dev", "namespace": "argocd"}, "status": status}
    if operation is not None:
        obj["operation"] = operation
    return obj


def test_argocd_healthy_at_the_sha() -> None:
    p = argocd_progress(app(resources=[("web", "Healthy"), ("api", "Healthy")]), SHA)
    assert (p.state, p.ready, p.total, p.revision) == ("healthy", 2, 2, SHA)
    assert p.reason == "Synced and Healthy at 0123456; 2 of 2 workloads healthy"
    # only status.sync.revision says where it is (no syncResult revision)
    bare = app()
    del bare["status"]["operationState"]["syncResult"]
    assert argocd_progress(bare, SHA).state == "healthy"


@pytest.mark.parametrize(("obj", "state", "reason"), [
    (None, "failed", "the Argo CD Application does not exist"),
    (app(operation={"sync": {"revision": SHA}, "initiatedBy": {"username": "prbot"}}, revision=OLD),
     "syncing", "sync to 0123456 requested; waiting for Argo CD to start it"),
    (app(operation={"sync": {"revision": OLD}, "initiatedBy": {"username": "alice"}}, revision=OLD),
     "waiting", "waiting for the running operation (sync to fedcba9 by alice)"),
    (app(operation={"sync": {"revision": SHA}}, phase="Running", message="one or more tasks are running"),
     "syncing", "Argo CD is syncing 0123456: one or more tasks are running"),
    (app(phase=None, revision=OLD), "waiting", "Argo CD has not run a sync yet"),
    (app(revision=OLD), "waiting", "Argo CD has not synced 0123456 yet (last sync: fedcba9, Succeeded)"),
    (app(phase="Failed", message="one or more objects failed to apply"), "failed",
     "sync failed: one or more objects failed to apply"),
    (app(phase="Error", message="rpc error: repository not found"), "failed",
     "sync error: rpc error: repository not found"),
    (app(health="Degraded", health_message='Deployment "web" exceeded its progress deadline'), "failed",
     'Degraded: Deployment "web" exceeded its progress deadline'),
    (app(health="Progressing", resources=[("web", "Healthy"), ("api", "Progressing")]), "progressing",
     "Synced, Progressing: Deployment api: Progressing"),
    (app(sync="OutOfSync"), "progressing", "OutOfSync, Healthy"),
    (app(health="Suspended"), "progressing", "Synced, Suspended"),
])
def test_argocd_states(obj: dict[str, Any] | None, state: str, reason: str) -> None:
    p = argocd_progress(obj, SHA)
    assert (p.state, p.reason) == (state, reason)


def test_argocd_a_degraded_app_before_the_sync_is_not_a_failure_of_this_sync() -> None:
    stale = app(revision=OLD, health="Degraded", health_message="old trouble")
    assert argocd_progress(stale, SHA).state == "waiting"


# --------------------------------------------------------------------------------------------
# Flux
# --------------------------------------------------------------------------------------------

def ks(handled: str | None = TOKEN, ready: str = "True", reason: str = "ReconciliationSucceeded",
       message: str = "", applied: str | None = f"main@sha1:{SHA}", stalled: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": ready, "reason": reason,
                                              "message": message}]}
    if stalled:
        status["conditions"].append({"type": "Stalled", "status": "True", "reason": "InvalidPath",
                                     "message": "path ./apps not found"})
    if handled:
        status["lastHandledReconcileAt"] = handled
    if applied:
        status["lastAppliedRevision"] = applied
    return {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"}, "spec": {}, "status": status}


def git(revision: str) -> dict[str, Any]:
    return {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
            "metadata": {"name": "flux-system", "namespace": "flux-system"},
            "status": {"artifact": {"revision": revision}}}


def test_flux_healthy_at_the_sha_in_either_spelling() -> None:
    p = flux_progress(ks(), TOKEN, SHA, workloads=(2, 2))
    assert (p.state, p.reason, p.ready, p.total, p.revision) == (
        "healthy", "Ready, applied 0123456", 2, 2, f"main@sha1:{SHA}")
    assert flux_progress(ks(applied=SHA), TOKEN, SHA).state == "healthy"


@pytest.mark.parametrize(("obj", "sources", "state", "reason"), [
    (None, [], "failed", "the Flux object does not exist"),
    (ks(handled="an-earlier-request"), [], "syncing", "reconcile requested; waiting for Flux to handle it"),
    (ks(handled=None), [], "syncing", "reconcile requested; waiting for Flux to handle it"),
    (ks(applied=f"main@sha1:{OLD}"), [git(f"main@sha1:{OLD}")], "syncing",
     "waiting for the source to fetch 0123456 (it has main@fedcba9)"),
    (ks(applied=f"main@sha1:{OLD}"), [git(f"main@sha1:{SHA}")], "syncing",
     "waiting for Flux to apply 0123456 (applied: main@fedcba9)"),
    (ks(ready="False", reason="HealthCheckFailed", message="timeout waiting for: [Deployment/shop-dev/web]"), [],
     "failed", "HealthCheckFailed: timeout waiting for: [Deployment/shop-dev/web]"),
    (ks(ready="False", reason="BuildFailed", message="kustomize build failed"), [], "failed",
     "BuildFailed: kustomize build failed"),
    (ks(ready="False", reason="DependencyNotReady", message="dependency 'flux-system/infra' is not ready"), [],
     "waiting", "dependency not ready: dependency 'flux-system/infra' is not ready"),
    (ks(ready="Unknown", reason="Progressing", message="Reconciliation in progress"), [], "progressing",
     "reconciling: Reconciliation in progress"),
    (ks(ready="Unknown", reason="Progressing", applied=None), [], "syncing", "reconciling"),
    (ks(stalled=True), [], "failed", "Stalled: path ./apps not found"),
])
def test_flux_states(obj: dict[str, Any] | None, sources: list[dict[str, Any]], state: str, reason: str) -> None:
    p = flux_progress(obj, TOKEN, SHA, sources=sources)
    assert (p.state, p.reason) == (state, reason)


def test_flux_suspended_is_a_failure() -> None:
    obj = ks()
    obj["spec"]["suspend"] = True
    assert flux_progress(obj, TOKEN, SHA).reason == (
        "the Kustomization is suspended (flux resume kustomization flux-system/apps)")


def hr(chart_version: str = "1.4.0") -> dict[str, Any]:
    return {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "billing-dev", "namespace": "flux-system"}, "spec": {},
            "status": {"lastHandledReconcileAt": TOKEN, "lastAttemptedRevision": chart_version,
                       "history": [{"chartVersion": chart_version, "status": "deployed"}],
                       "conditions": [{"type": "Ready", "status": "True", "reason": "UpgradeSucceeded",
                                       "message": "Helm upgrade succeeded"}]}}


def test_flux_helmrelease_revision() -> None:
    # a chart from the Git repository: the source must be at the SHA
    assert flux_progress(hr(), TOKEN, SHA, sources=[git(f"main@sha1:{SHA}")]).reason == (
        "Ready, released chart 1.4.0 from 0123456")
    assert flux_progress(hr(), TOKEN, SHA, sources=[git(f"main@sha1:{OLD}")]).state == "syncing"
    # a chart version built from the revision (reconcileStrategy: Revision)
    assert flux_progress(hr(f"1.4.0+{SHA[:12]}"), TOKEN, SHA).state == "healthy"
    # a chart from a Helm repository carries no commit: Ready after the request is enough
    helm_repo = {"kind": "HelmRepository", "status": {"artifact": {"revision": "sha256:abc"}}}
    p = flux_progress(hr(), TOKEN, SHA, sources=[helm_repo])
    assert (p.state, p.reason) == ("healthy", "Ready, released chart 1.4.0")
    failed = hr()
    failed["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "UpgradeFailed",
                                       "message": "Helm upgrade failed: context deadline exceeded"}]
    assert flux_progress(failed, TOKEN, SHA).reason == "UpgradeFailed: Helm upgrade failed: context deadline exceeded"


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------

def rolled(obj: dict[str, Any], status: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["generation"] = generation
    obj["status"] = status
    return obj


WEB = deployment("web", 3, namespace="shop-dev")


@pytest.mark.parametrize(("obj", "state", "detail"), [
    (None, "progressing", "not found"),
    (rolled(WEB, {"observedGeneration": 1}), "progressing", "waiting for the controller to observe the new generation"),
    (rolled(WEB, {"observedGeneration": 2, "updatedReplicas": 1, "replicas": 3}), "progressing",
     "1 of 3 replicas updated"),
    (rolled(WEB, {"observedGeneration": 2, "updatedReplicas": 3, "replicas": 4, "availableReplicas": 3}),
     "progressing", "1 old replicas pending termination"),
    (rolled(WEB, {"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 2}),
     "progressing", "2 of 3 updated replicas available"),
    (rolled(WEB, {"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3}),
     "ready", "3 of 3 replicas available"),
    (rolled(WEB, {"observedGeneration": 2, "updatedReplicas": 1, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
         "message": 'ReplicaSet "web-2" has timed out progressing.'}]}), "failed",
     'exceeded its progress deadline (ReplicaSet "web-2" has timed out progressing.)'),
])
def test_deployment_rollout(obj: dict[str, Any] | None, state: str, detail: str) -> None:
    assert workload_state(obj) == (state, detail)


def test_statefulset_and_daemonset_rollout() -> None:
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "generation": 3},
           "spec": {"replicas": 2}}
    assert workload_state(rolled(sts, {"observedGeneration": 3, "readyReplicas": 1}, 3))[0] == "progressing"
    assert workload_state(rolled(sts, {"observedGeneration": 3, "readyReplicas": 2, "currentRevision": "db-1",
                                       "updateRevision": "db-2", "updatedReplicas": 1}, 3)) == (
        "progressing", "1 of 2 replicas updated")
    assert workload_state(rolled(sts, {"observedGeneration": 3, "readyReplicas": 2, "currentRevision": "db-2",
                                       "updateRevision": "db-2"}, 3)) == ("ready", "2 of 2 replicas ready")
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"}, "spec": {}}
    assert workload_state(rolled(ds, {"observedGeneration": 2, "desiredNumberScheduled": 3,
                                      "updatedNumberScheduled": 2})) == ("progressing", "2 of 3 pods updated")
    assert workload_state(rolled(ds, {"observedGeneration": 2, "desiredNumberScheduled": 3,
                                      "updatedNumberScheduled": 3, "numberAvailable": 3})) == (
        "ready", "3 of 3 pods available")


def test_rollout_progress_counts_workloads() -> None:
    ready = rolled(WEB, {"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})
    rolling = rolled(WEB, {"observedGeneration": 2, "updatedReplicas": 1, "replicas": 3})
    p = rollout_progress([("Deployment shop-dev/web", ready), ("Deployment shop-dev/api", rolling),
                          ("Deployment shop-dev/db", ready)])
    assert (p.state, p.ready, p.total) == ("progressing", 2, 3)
    assert p.reason == "2 of 3 workloads ready; Deployment shop-dev/api: 1 of 3 replicas updated"
    assert rollout_progress([("Deployment shop-dev/web", ready)]) == Progress("healthy", "1 of 1 workload ready", 1, 1)
    assert rollout_progress([]) == Progress("healthy", "applied; no workloads to wait for")
    stuck = rolled(WEB, {"observedGeneration": 2, "conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": ""}]})
    p = rollout_progress([("Deployment shop-dev/web", ready), ("Deployment shop-dev/api", stuck)])
    assert (p.state, p.reason, p.ready, p.total) == (
        "failed", "Deployment shop-dev/api exceeded its progress deadline", 1, 2)

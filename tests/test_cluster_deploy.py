"""Sync and health end to end: the Deployer, the real kubernetes client, the fake API server and its
controllers.  Every poll is one `Deployer.poll` on a ticket that went through JSON, as a restarted
worker would see it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakekube import CLUSTER_SCOPED_CRDS, FLUX_2_2, FakeKube
from kubehelp import FAST, closed_port, configmap, deployment, namespace, widget, widget_crd

from prbot.cluster.client import ClusterClient
from prbot.cluster.clusters import ClusterRef, MissingCluster
from prbot.cluster.deploy import Deployer, Ticket
from prbot.cluster.sync import REFRESH_ANNOTATION, REQUESTED_AT_ANNOTATION, TARGET_LABEL
from prbot.config import SyncSpec
from prbot.errors import InvalidName, TransientError
from prbot.model import Target
from prbot.progress import Progress

SHA = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"
SHOP = Target(app="shop", env="dev", path="apps/shop/envs/dev", renderer="kustomize", namespace="shop-dev")
ARGOCD = SyncSpec("argocd", {"application": "{app}-{env}", "namespace": "argocd"})
REPO = ["https://github.com/acme/gitops.git"]


@pytest.fixture
def deployer(cluster: ClusterRef) -> Iterator[Deployer]:
    d = Deployer({"dev": cluster}, retry=FAST)
    yield d
    d.close()


def restart(ticket: Ticket) -> Ticket:
    """The ticket as the store gives it back (after a worker restart)."""
    return Ticket.from_json(json.loads(json.dumps(ticket.to_json())))


def poll(cluster: ClusterRef, ticket: Ticket, times: int) -> tuple[Ticket, list[Progress]]:
    """`times` polls, each by a fresh Deployer on a ticket read back from JSON."""
    seen = []
    for _ in range(times):
        d = Deployer({"dev": cluster}, retry=FAST)
        try:
            ticket, progress = d.poll(restart(ticket))
        finally:
            d.close()
        seen.append(progress)
    return ticket, seen


# --------------------------------------------------------------------------------------------
# Argo CD
# --------------------------------------------------------------------------------------------

def argo_app(fake: FakeKube, **extra: Any) -> None:
    fake.seed({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
               "metadata": {"name": "shop-dev", "namespace": "argocd"},
               "spec": {"project": "default", "destination": {"namespace": "shop-dev"},
                        "source": {"repoURL": "git@github.com:acme/gitops.git", "path": "apps/shop/envs/dev",
                                   "targetRevision": "main"}},
               "status": {"sync": {"status": "Synced", "revision": OLD}, "health": {"status": "Healthy"},
                          "operationState": {"phase": "Succeeded", "finishedAt": "2024-01-01T00:00:00Z",
                                             "operation": {"sync": {"revision": OLD}},
                                             "syncResult": {"revision": OLD}}},
               **extra})


def test_argocd_sync_then_healthy_after_three_polls(fake_kube: FakeKube, cluster: ClusterRef,
                                                    deployer: Deployer) -> None:
    argo_app(fake_kube)
    fake_kube.script("Application", outcome="healthy", steps=3, workloads=["web", "api"])
    ticket, progress = deployer.start("dev", SHOP, ARGOCD, SHA, repo_urls=REPO, info=[("PR", "acme/gitops#12")])
    assert progress == Progress("syncing", "sync to 0123456 requested from Argo CD")
    [patch] = fake_kube.patches("Application")
    assert patch.content_type == "application/merge-patch+json"
    assert patch.path == "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/shop-dev"
    assert patch.body["operation"] == {"initiatedBy": {"username": "prbot"}, "sync": {"revision": SHA},
                                       "info": [{"name": "PR", "value": "acme/gitops#12"}]}
    assert patch.body["metadata"]["annotations"] == {REFRESH_ANNOTATION: "normal"}
    live = fake_kube.live("argoproj.io/v1alpha1", "Application", "argocd", "shop-dev")
    assert live is not None and live["operation"]["sync"]["revision"] == SHA

    ticket, seen = poll(cluster, ticket, 3)
    assert [p.state for p in seen] == ["syncing", "progressing", "healthy"]
    assert seen[1].reason.startswith("Synced, Progressing") and (seen[1].ready, seen[1].total) == (1, 2)
    assert seen[2] == Progress("healthy", "Synced and Healthy at 0123456; 2 of 2 workloads healthy", 2, 2, SHA)
    live = fake_kube.live("argoproj.io/v1alpha1", "Application", "argocd", "shop-dev")
    assert live is not None and "operation" not in live
    assert live["status"]["operationState"]["syncResult"]["revision"] == SHA
    assert ticket.polls == 3


def test_argocd_a_running_operation_is_waited_for(fake_kube: FakeKube, cluster: ClusterRef,
                                                  deployer: Deployer) -> None:
    argo_app(fake_kube, operation={"sync": {"revision": OLD}, "initiatedBy": {"username": "alice"}})
    ticket, progress = deployer.start("dev", SHOP, ARGOCD, SHA, repo_urls=REPO, info=[("PR", "#12")])
    assert progress == Progress("waiting", "waiting for the running operation (sync to fedcba9 by alice)")
    assert fake_kube.patches("Application") == [] and not ticket.requested
    ticket, [again] = poll(cluster, ticket, 1)
    assert again.state == "waiting" and fake_kube.patches("Application") == []
    argo_app(fake_kube)                                       # alice's operation finished
    ticket, [sent] = poll(cluster, ticket, 1)
    assert sent.state == "syncing" and ticket.requested and len(fake_kube.patches("Application")) == 1
    assert fake_kube.patches("Application")[0].body["operation"]["info"] == [{"name": "PR", "value": "#12"}]
    ticket, seen = poll(cluster, ticket, 2)
    assert [p.state for p in seen] == ["syncing", "healthy"]


@pytest.mark.parametrize(("outcome", "reason"), [
    ("failed", 'sync failed: one or more objects failed to apply, reason: Deployment.apps "web" is invalid'),
    ("degraded", 'Degraded: Deployment "web" exceeded its progress deadline'),
])
def test_argocd_failed_sync(fake_kube: FakeKube, cluster: ClusterRef, deployer: Deployer, outcome: str,
                            reason: str) -> None:
    argo_app(fake_kube)
    fake_kube.script("Application", "shop-dev", "argocd", outcome=outcome, steps=2)
    ticket, _ = deployer.start("dev", SHOP, ARGOCD, SHA)
    ticket, seen = poll(cluster, ticket, 2)
    assert [p.state for p in seen] == ["syncing", "failed"] and seen[-1].reason == reason


def test_argocd_never_healthy_keeps_polling(fake_kube: FakeKube, cluster: ClusterRef, deployer: Deployer) -> None:
    """A sync that never ends: every poll says so; the flow's deadline decides (no wait here)."""
    argo_app(fake_kube)
    fake_kube.script("Application", outcome="stuck")
    ticket, _ = deployer.start("dev", SHOP, ARGOCD, SHA)
    ticket, seen = poll(cluster, ticket, 6)
    assert {p.state for p in seen} == {"syncing"} and not any(p.done for p in seen)
    assert fake_kube.running("Application") == ["Application argocd/shop-dev"]


def test_argocd_missing_application_or_wrong_repository(fake_kube: FakeKube, deployer: Deployer) -> None:
    _, progress = deployer.start("dev", SHOP, ARGOCD, SHA)
    assert progress == Progress("failed", "Application argocd/shop-dev does not exist")
    argo_app(fake_kube)
    _, progress = deployer.start("dev", SHOP, ARGOCD, SHA, repo_urls=["https://github.com/acme/other"])
    assert progress.state == "failed" and progress.reason.endswith("not this repository")
    assert fake_kube.patches("Application") == []


def test_argocd_on_demand_advance(fake_kube: FakeKube, cluster: ClusterRef, deployer: Deployer) -> None:
    fake_kube.advance_on_read = False
    argo_app(fake_kube)
    ticket, _ = deployer.start("dev", SHOP, ARGOCD, SHA)
    ticket, seen = poll(cluster, ticket, 2)
    assert [p.state for p in seen] == ["syncing", "syncing"]          # nothing moves by itself
    fake_kube.settle()
    ticket, [done] = poll(cluster, ticket, 1)
    assert done.state == "healthy"


# --------------------------------------------------------------------------------------------
# Flux
# --------------------------------------------------------------------------------------------

FLUX_KS = SyncSpec("flux", {"kind": "Kustomization", "name": "{app}-{env}", "namespace": "flux-system"})
FLUX_HR = SyncSpec("flux", {"kind": "HelmRelease", "name": "{app}-{env}", "namespace": "flux-system"})


def flux_repo(fake: FakeKube) -> None:
    fake.seed({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
               "metadata": {"name": "flux-system", "namespace": "flux-system"},
               "spec": {"url": "https://github.com/acme/gitops", "ref": {"branch": "main"}, "interval": "1m"},
               "status": {"artifact": {"revision": f"main@sha1:{OLD}"}}})
    fake.set_source_revision("flux-system", "flux-system", f"main@sha1:{SHA}")      # the merge was pushed


def ready_deployment(fake: FakeKube, name: str) -> None:
    obj = deployment(name, 2, namespace="shop-dev")
    obj["metadata"]["generation"] = 1
    fake.seed(obj)
    fake.update_status("apps/v1", "Deployment", "shop-dev", name, {
        "observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2})


def test_flux_kustomization_sync_then_healthy(fake_kube: FakeKube, cluster: ClusterRef, deployer: Deployer) -> None:
    flux_repo(fake_kube)
    fake_kube.seed({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                    "metadata": {"name": "shop-dev", "namespace": "flux-system"},
                    "spec": {"interval": "10m", "path": "./apps/shop/envs/dev", "prune": True,
                             "sourceRef": {"kind": "GitRepository", "name": "flux-system"}}})
    ready_deployment(fake_kube, "web")
    fake_kube.script("Kustomization", outcome="healthy", steps=2, workloads=["shop-dev/web"])
    ticket, progress = deployer.start("dev", SHOP, FLUX_KS, SHA)
    assert progress.state == "syncing" and ticket.token
    patches = fake_kube.patches(content_type="application/merge-patch+json")
    assert [p.path for p in patches] == [
        "/apis/source.toolkit.fluxcd.io/v1/namespaces/flux-system/gitrepositories/flux-system",
        "/apis/kustomize.toolkit.fluxcd.io/v1/namespaces/flux-system/kustomizations/shop-dev"]
    for p in patches:
        assert p.body == {"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: ticket.token}}}
    ticket, seen = poll(cluster, ticket, 2)
    assert seen[0] == Progress("syncing", "reconcile requested; waiting for Flux to handle it", 0, 0)
    assert seen[1] == Progress("healthy", "Ready, applied 0123456", 1, 1, f"main@sha1:{SHA}")


def test_flux_reconcile_failure(fake_kube: FakeKube, cluster: ClusterRef, deployer: Deployer) -> None:
    flux_repo(fake_kube)
    fake_kube.seed({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                    "metadata": {"name": "shop-dev", "namespace": "flux-system"},
                    "spec": {"sourceRef": {"kind": "GitRepository", "name": "flux-system"}}})
    fake_kube.script("Kustomization", outcome="failed", steps=1, message="kustomize build failed: missing resource")
    ticket, _ = deployer.start("dev", SHOP, FLUX_KS, SHA)
    ticket, [failed] = poll(cluster, ticket, 1)
    assert failed == Progress("failed", "HealthCheckFailed: kustomize build failed: missing resource")


def test_flux_helmrelease_and_its_chart_sources(fake_kube: FakeKube, cluster: ClusterRef, deployer: Deployer) -> None:
    fake_kube.seed({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
                    "metadata": {"name": "acme", "namespace": "flux-system"},
                    "spec": {"url": "https://charts.example.com"}})
    fake_kube.seed({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
                    "metadata": {"name": "flux-system-shop-dev", "namespace": "flux-system"},
                    "spec": {"chart": "shop", "sourceRef": {"kind": "HelmRepository", "name": "acme"}}})
    fake_kube.seed({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                    "metadata": {"name": "shop-dev", "namespace": "flux-system"},
                    "spec": {"chart": {"spec": {"chart": "shop", "version": "1.4.0",
                                                "sourceRef": {"kind": "HelmRepository", "name": "acme"}}}}})
    ticket, _ = deployer.start("dev", SHOP, FLUX_HR, SHA)
    assert [str(s) for s in ticket.sources] == ["HelmRepository flux-system/acme",
                                                "HelmChart flux-system/flux-system-shop-dev"]
    ticket, seen = poll(cluster, ticket, 2)
    assert seen[-1] == Progress("healthy", "Ready, released chart 1.4.0", 0, 0, "1.4.0")
    # a chart source that does not exist yet is not an error: the HelmRelease is still asked
    fake_kube.seed({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                    "metadata": {"name": "shop-dev", "namespace": "flux-system"},
                    "spec": {"chartRef": {"kind": "OCIRepository", "name": "gone"}}})
    ticket, progress = deployer.start("dev", SHOP, FLUX_HR, SHA)
    assert progress.state == "syncing" and ticket.sources == []


def test_flux_2_2_helmrelease_is_reconciled_at_the_versions_served(tmp_path: Path) -> None:
    """Flux 2.0–2.2 serves HelmChart and HelmRepository only at v1beta2 and HelmRelease at v2beta2:
    prbot asks each at what discovery says, never at a version of its own."""
    with FakeKube(versions=FLUX_2_2) as fake:
        ref = ClusterRef("dev", fake.write_kubeconfig(tmp_path / "config"))
        fake.seed({"apiVersion": "source.toolkit.fluxcd.io/v1beta2", "kind": "HelmRepository",
                   "metadata": {"name": "acme", "namespace": "flux-system"}, "spec": {"url": "https://charts.example"}})
        fake.seed({"apiVersion": "source.toolkit.fluxcd.io/v1beta2", "kind": "HelmChart",
                   "metadata": {"name": "flux-system-shop-dev", "namespace": "flux-system"},
                   "spec": {"chart": "shop", "sourceRef": {"kind": "HelmRepository", "name": "acme"}}})
        fake.seed({"apiVersion": "helm.toolkit.fluxcd.io/v2beta2", "kind": "HelmRelease",
                   "metadata": {"name": "shop-dev", "namespace": "flux-system"},
                   "spec": {"chart": {"spec": {"chart": "shop", "version": "1.4.0",
                                               "sourceRef": {"kind": "HelmRepository", "name": "acme"}}}}})
        deployer = Deployer({"dev": ref}, retry=FAST)
        ticket, progress = deployer.start("dev", SHOP, FLUX_HR, SHA)
        deployer.close()
        assert progress == Progress("syncing", "reconcile requested from Flux for HelmRelease flux-system/shop-dev")
        assert [r.path for r in fake.patches()] == [
            "/apis/source.toolkit.fluxcd.io/v1beta2/namespaces/flux-system/helmrepositories/acme",
            "/apis/source.toolkit.fluxcd.io/v1beta2/namespaces/flux-system/helmcharts/flux-system-shop-dev",
            "/apis/helm.toolkit.fluxcd.io/v2beta2/namespaces/flux-system/helmreleases/shop-dev"]
        chart = fake.live("source.toolkit.fluxcd.io/v1beta2", "HelmChart", "flux-system", "flux-system-shop-dev")
        assert chart["metadata"]["annotations"][REQUESTED_AT_ANNOTATION] == ticket.token
        ticket, seen = poll(ref, ticket, 2)
        assert seen[-1] == Progress("healthy", "Ready, released chart 1.4.0", 0, 0, "1.4.0")


def test_argocd_application_served_only_at_another_version(tmp_path: Path) -> None:
    with FakeKube(versions={"Application": ["v1beta1"]}) as fake:
        ref = ClusterRef("dev", fake.write_kubeconfig(tmp_path / "config"))
        fake.seed({"apiVersion": "argoproj.io/v1beta1", "kind": "Application",
                   "metadata": {"name": "shop-dev", "namespace": "argocd"},
                   "spec": {"source": {"repoURL": REPO[0], "path": "apps/shop/envs/dev"}}})
        deployer = Deployer({"dev": ref}, retry=FAST)
        ticket, progress = deployer.start("dev", SHOP, ARGOCD, SHA, repo_urls=REPO)
        deployer.close()
        assert progress == Progress("syncing", "sync to 0123456 requested from Argo CD")
        assert ticket.subject is not None and ticket.subject.api_version == "argoproj.io/v1beta1"
        [patch] = fake.patches("Application")
        assert patch.path.startswith("/apis/argoproj.io/v1beta1/")
        ticket, seen = poll(ref, ticket, 3)
        assert seen[-1].state == "healthy"


def test_a_sync_kind_the_cluster_does_not_serve_fails_with_the_reason(tmp_path: Path) -> None:
    with FakeKube(versions={"Kustomization": []}) as fake:        # Flux's kustomize controller is not installed
        ref = ClusterRef("dev", fake.write_kubeconfig(tmp_path / "config"))
        deployer = Deployer({"dev": ref}, retry=FAST)
        ticket, progress = deployer.start("dev", SHOP, FLUX_KS, SHA)
        deployer.close()
        assert progress == Progress("failed", "cluster dev does not serve Kustomization (kustomize.toolkit.fluxcd.io): "
                                              "is the controller that defines it installed? Nothing was synced")
        assert fake.patches() == [] and ticket.subject is None


def test_a_source_kind_not_served_is_skipped_with_a_note(tmp_path: Path) -> None:
    with FakeKube(versions={"OCIRepository": []}) as fake:
        ref = ClusterRef("dev", fake.write_kubeconfig(tmp_path / "config"))
        fake.seed({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                   "metadata": {"name": "shop-dev", "namespace": "flux-system"},
                   "spec": {"chartRef": {"kind": "OCIRepository", "name": "shop"}}})
        deployer = Deployer({"dev": ref}, retry=FAST)
        ticket, progress = deployer.start("dev", SHOP, FLUX_HR, SHA)
        deployer.close()
        note = ("(note: OCIRepository flux-system/shop not asked to reconcile: the cluster serves no OCIRepository "
                "in source.toolkit.fluxcd.io)")
        assert progress.state == "syncing" and progress.reason.endswith(note)
        assert [r.path for r in fake.patches()] == [
            "/apis/helm.toolkit.fluxcd.io/v2/namespaces/flux-system/helmreleases/shop-dev"]
        ticket, seen = poll(ref, ticket, 2)              # every poll still says it
        assert [p.reason.endswith(note) for p in seen] == [True, True]


# --------------------------------------------------------------------------------------------
# Direct apply
# --------------------------------------------------------------------------------------------

APPLY = SyncSpec("apply", {"prune": True})
LABEL = (TARGET_LABEL, "shop.dev")


def rendered(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [namespace("shop-dev"), configmap("settings", {"LOG_LEVEL": "info"}), deployment("web", 2),
            deployment("api", 1), *extra]


def test_apply_then_rollout(fake_kube: FakeKube, cluster: ClusterRef, deployer: Deployer) -> None:
    fake_kube.script("Deployment", outcome="healthy", steps=3)
    ticket, progress = deployer.start("dev", SHOP, APPLY, SHA, objects=rendered())
    assert progress == Progress("syncing", "applied 4 objects, pruned 0")
    applies = fake_kube.applies()
    assert [a.path.rsplit("/", 1)[1] for a in applies] == [
        "shop-dev", "settings", "api", "web", "prbot-applied.shop.dev", "prbot-applied.shop.dev"]
    for a in applies:
        assert a.query == {"fieldManager": "prbot", "force": "true"}
        assert a.body["metadata"]["labels"][TARGET_LABEL] == "shop.dev"
    assert sorted(o["metadata"]["name"] for o in fake_kube.objects(label=LABEL)) == [
        "api", "prbot-applied.shop.dev", "settings", "shop-dev", "web"]
    web = fake_kube.live("apps/v1", "Deployment", "shop-dev", "web")
    assert web is not None and web["metadata"]["managedFields"][-1]["manager"] == "prbot"
    ticket, seen = poll(cluster, ticket, 3)
    assert [(p.state, p.ready, p.total) for p in seen] == [
        ("progressing", 0, 2), ("progressing", 0, 2), ("healthy", 2, 2)]
    assert seen[0].reason == "0 of 2 workloads ready; Deployment shop-dev/api: 0 of 1 replicas updated"
    assert seen[-1].reason == "2 of 2 workloads ready"


def test_apply_prunes_what_is_no_longer_rendered(fake_kube: FakeKube, cluster: ClusterRef,
                                                 deployer: Deployer) -> None:
    deployer.start("dev", SHOP, APPLY, SHA, objects=rendered(configmap("extra", {})))
    # what prbot must never delete: another target's object, and ours outside the namespaces it owns
    fake_kube.seed({**configmap("theirs", {}, namespace="shop-dev"),
                    "metadata": {"name": "theirs", "namespace": "shop-dev", "labels": {TARGET_LABEL: "billing.dev"}}})
    fake_kube.seed({**configmap("stray", {}, namespace="kube-system"),
                    "metadata": {"name": "stray", "namespace": "kube-system", "labels": {TARGET_LABEL: "shop.dev"}}})
    fake_kube.seed({**configmap("hand-made", {}, namespace="shop-dev")})

    ticket, progress = deployer.start("dev", SHOP, APPLY, SHA, objects=[namespace("shop-dev"), deployment("web", 2)])
    assert progress == Progress("syncing", "applied 2 objects, pruned 3")
    assert sorted(d.path.rsplit("/", 1)[1] for d in fake_kube.deletes()) == ["api", "extra", "settings"]
    assert fake_kube.live("v1", "ConfigMap", "shop-dev", "theirs") is not None
    assert fake_kube.live("v1", "ConfigMap", "kube-system", "stray") is not None
    assert fake_kube.live("v1", "ConfigMap", "shop-dev", "hand-made") is not None
    record = fake_kube.live("v1", "ConfigMap", "shop-dev", "prbot-applied.shop.dev")
    assert record is not None and record["data"] == {"kinds": "Deployment.apps,Namespace", "namespaces": "-,shop-dev"}
    # a kind gone from the render entirely is still pruned: the record remembers it was applied
    deployer.start("dev", SHOP, APPLY, SHA, objects=rendered())
    deployer.start("dev", SHOP, APPLY, SHA, objects=[namespace("shop-dev")])
    assert fake_kube.objects("Deployment", namespace="shop-dev") == []
    assert fake_kube.live("v1", "ConfigMap", "shop-dev", "settings") is None


PREVIEW = Target(app="pr-7", env="dev", path="", renderer="plain", namespace="pr-7")
CONFINED = SyncSpec("apply", {"prune": True, "confine": True})


def custom(api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "spec": {}}


def test_a_confined_apply_sends_only_what_discovery_says_is_namespaced(fake_kube: FakeKube,
                                                                      deployer: Deployer) -> None:
    for definition in (*CLUSTER_SCOPED_CRDS, widget_crd()):
        fake_kube.seed(definition)
    objects = [namespace("pr-7"), configmap("settings", {}, namespace="kube-system"),
               deployment("web", 1, namespace="default"), widget("knob", namespace="kube-system"),
               custom("rbac.authorization.k8s.io/v1", "ClusterRole", "admin-ish"),
               custom("external-secrets.io/v1beta1", "ClusterSecretStore", "vault", namespace="pr-7"),
               custom("gateway.networking.k8s.io/v1", "GatewayClass", "public"),
               custom("scheduling.k8s.io/v1", "PriorityClass", "urgent"),
               custom("monitoring.coreos.com/v1", "ServiceMonitor", "web"),
               custom("v1/../../apis/rbac.authorization.k8s.io/v1", "ClusterRole", "sneaky"),
               namespace("other")]
    ticket, progress = deployer.start("dev", PREVIEW, CONFINED, SHA, objects=objects)
    assert (progress.state, progress.reason) == ("syncing", "applied 4 objects, pruned 0")
    scoped = "cluster-scoped on cluster dev: a preview creates only namespaced objects"
    assert [what for what, _ in progress.left_out] == [
        "ClusterRole admin-ish", "ClusterSecretStore vault", "GatewayClass public", "PriorityClass urgent",
        "ServiceMonitor web", "ClusterRole sneaky", "Namespace other"]
    assert {reason for what, reason in progress.left_out if what != "ServiceMonitor web" and "sneaky" not in what} \
        == {scoped}
    assert dict(progress.left_out)["ServiceMonitor web"] == \
        "cluster dev does not serve ServiceMonitor (monitoring.coreos.com/v1)"
    assert dict(progress.left_out)["ClusterRole sneaky"].startswith("apiVersion ")
    assert Progress.from_json(json.loads(json.dumps(progress.to_json()))) == progress
    # every namespaced object is in pr-7, whatever namespace it named; nothing cluster-wide was made
    assert fake_kube.live("v1", "ConfigMap", "pr-7", "settings") is not None
    assert fake_kube.live("apps/v1", "Deployment", "pr-7", "web") is not None
    assert fake_kube.objects("ConfigMap", namespace="kube-system") == []
    assert fake_kube.objects("Deployment", namespace="default") == []
    for kind in ("ClusterRole", "ClusterSecretStore", "GatewayClass", "PriorityClass"):
        assert fake_kube.objects(kind) == [], kind
    assert fake_kube.live("v1", "Namespace", None, "other") is None
    labelled = fake_kube.objects(namespace="pr-7", label=(TARGET_LABEL, "pr-7.dev"))
    assert sorted(o["metadata"]["name"] for o in labelled) == ["knob", "prbot-applied.pr-7.dev", "settings", "web"]


def test_the_client_refuses_a_cluster_scoped_kind_when_told_namespaced_only(fake_kube: FakeKube,
                                                                            cluster: ClusterRef) -> None:
    with ClusterClient(cluster, retry=FAST) as client:
        with pytest.raises(InvalidName, match="ClusterRole admin-ish is cluster-scoped: not sent to the cluster"):
            client.apply(custom("rbac.authorization.k8s.io/v1", "ClusterRole", "admin-ish"), namespace="pr-7",
                         namespaced_only=True)
        client.apply(configmap("fine", {}), namespace="default", namespaced_only=True)
    assert [a.path.rsplit("/", 1)[1] for a in fake_kube.applies()] == ["fine"]
    assert fake_kube.objects("ClusterRole") == []


def test_apply_without_prune_leaves_objects(fake_kube: FakeKube, deployer: Deployer) -> None:
    keep = SyncSpec("apply", {"prune": False})
    deployer.start("dev", SHOP, keep, SHA, objects=rendered())
    _, progress = deployer.start("dev", SHOP, keep, SHA, objects=[namespace("shop-dev")])
    assert progress == Progress("syncing", "applied 1 objects")
    assert fake_kube.deletes() == [] and fake_kube.live("apps/v1", "Deployment", "shop-dev", "api") is not None


def test_apply_removes_fields_prbot_no_longer_applies(fake_kube: FakeKube, deployer: Deployer) -> None:
    labelled = configmap("settings", {"A": "1", "B": "2"})
    deployer.start("dev", SHOP, APPLY, SHA, objects=[namespace("shop-dev"), labelled])
    deployer.start("dev", SHOP, APPLY, SHA, objects=[namespace("shop-dev"), configmap("settings", {"A": "1"})])
    live = fake_kube.live("v1", "ConfigMap", "shop-dev", "settings")
    assert live is not None and live["data"] == {"A": "1"}


def test_apply_with_a_crd_and_its_custom_resources(fake_kube: FakeKube, cluster: ClusterRef,
                                                   deployer: Deployer) -> None:
    ticket, progress = deployer.start("dev", SHOP, APPLY, SHA,
                                      objects=[namespace("shop-dev"), widget_crd(), widget("w")])
    assert progress.state == "syncing" and ticket.requested and ticket.pending == []
    assert fake_kube.live("example.com/v1", "Widget", "shop-dev", "w") is not None


def test_apply_waits_for_a_crd_to_be_established(tmp_path: Path) -> None:
    with FakeKube(establish_crds=False) as fake:
        ref = ClusterRef("dev", fake.write_kubeconfig(tmp_path / "config"))
        deployer = Deployer({"dev": ref}, retry=FAST)
        ticket, progress = deployer.start("dev", SHOP, APPLY, SHA,
                                          objects=[namespace("shop-dev"), widget_crd(), widget("w")])
        assert progress == Progress("syncing", "applied 2 objects, pruned 0; waiting for the cluster to serve Widget")
        assert [o["kind"] for o in ticket.pending] == ["Widget"] and not ticket.requested
        ticket, [still] = poll(ref, ticket, 1)
        assert still == Progress("syncing", "waiting for the cluster to serve Widget")
        fake.establish()
        ticket, [applied] = poll(ref, ticket, 1)
        assert applied.reason == "applied 1 more objects" and ticket.pending == [] and ticket.requested
        ticket, [healthy] = poll(ref, ticket, 1)
        assert healthy == Progress("healthy", "applied; no workloads to wait for")
        deployer.close()


def test_apply_refused_object_fails_without_pruning(fake_kube: FakeKube, deployer: Deployer) -> None:
    deployer.start("dev", SHOP, APPLY, SHA, objects=rendered())
    fake_kube.refuse("ConfigMap", 'ConfigMap "settings" is invalid: data: Too long', name="settings")
    _, progress = deployer.start("dev", SHOP, APPLY, SHA, objects=[namespace("shop-dev"),
                                                                    configmap("settings", {"x": "y"})])
    assert progress == Progress("failed", 'apply refused: ConfigMap shop-dev/settings: ConfigMap "settings" is '
                                          "invalid: data: Too long")
    assert fake_kube.deletes() == []


@pytest.mark.parametrize(("outcome", "state"), [("failed", "failed"), ("stuck", "progressing")])
def test_apply_rollout_that_fails_or_never_ends(fake_kube: FakeKube, cluster: ClusterRef, deployer: Deployer,
                                                outcome: str, state: str) -> None:
    fake_kube.script("Deployment", "api", outcome=outcome, steps=2)
    ticket, _ = deployer.start("dev", SHOP, APPLY, SHA, objects=rendered())
    ticket, seen = poll(cluster, ticket, 4)
    assert seen[-1].state == state
    if outcome == "failed":
        assert seen[-1].reason == ('Deployment shop-dev/api exceeded its progress deadline (ReplicaSet "api-2" has '
                                   "timed out progressing.)")
    else:
        assert seen[-1].reason.startswith("1 of 2 workloads ready; Deployment shop-dev/api")


# --------------------------------------------------------------------------------------------
# Clusters that cannot be used
# --------------------------------------------------------------------------------------------

def test_an_unreachable_cluster_is_a_transient_error(tmp_path: Path) -> None:
    kubeconfig = FakeKube(operators=False).write_kubeconfig(tmp_path / "config",
                                                            server=f"http://127.0.0.1:{closed_port()}")
    deployer = Deployer({"dev": ClusterRef("dev", kubeconfig)}, retry=FAST)
    with pytest.raises(TransientError, match=r"^cluster dev: cannot reach the API server .*: connection refused$"):
        deployer.start("dev", SHOP, ARGOCD, SHA)
    with pytest.raises(MissingCluster, match="environment 'dev' uses cluster 'prod'"):
        deployer.start("prod", SHOP, ARGOCD, SHA)
    deployer.close()


def test_a_broken_kubeconfig_is_a_failure_to_fix(tmp_path: Path) -> None:
    deployer = Deployer({"dev": ClusterRef("dev", tmp_path / "gone")}, retry=FAST)
    _, progress = deployer.start("dev", SHOP, ARGOCD, SHA)
    assert progress.state == "failed" and progress.reason.startswith(f"cluster dev: cannot read {tmp_path / 'gone'}")
    deployer.close()


def test_server_errors_are_transient(fake_kube: FakeKube, deployer: Deployer) -> None:
    argo_app(fake_kube)
    fake_kube.fail("Application", times=100)
    with pytest.raises(TransientError, match="still failing after retries"):
        deployer.start("dev", SHOP, ARGOCD, SHA)

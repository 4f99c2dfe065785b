"""A preview creates nothing cluster-wide, end to end: the App with the fake GitHub and the fake
Kubernetes API.  Only objects the live cluster's discovery says are namespaced are applied, forced
into `pr-<n>` whatever namespace they name; cluster-scoped kinds — custom (`ClusterSecretStore`,
`GatewayClass`) or built-in (`PriorityClass`, `StorageClass`, a `Namespace`) — and kinds the cluster
does not serve are left out and listed, each with its reason, in the preview comment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from appkit import Bot
from fakegithub import FakeGitHub
from fakekube import CLUSTER_SCOPED_CRDS, FakeKube, crd
from gitops import overlay, repo_files

from prbot.flows.preview import PREVIEW_MARKER

REPO = "acme/gitops"
DEV = "apps/app/envs/dev"
ENVS = ("dev", "staging", "prod")

EXTRA = """\
apiVersion: external-secrets.io/v1beta1
kind: ClusterSecretStore
metadata: {name: vault}
spec: {provider: {vault: {server: "https://vault.example"}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: public}
spec: {controllerName: example.com/gateway}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: urgent}
value: 1000000
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: fast}
provisioner: example.com/fast
---
apiVersion: v1
kind: Namespace
metadata: {name: elsewhere}
---
apiVersion: external-secrets.io/v1beta1
kind: ExternalSecret
metadata: {name: db, namespace: kube-system}
spec: {secretStoreRef: {name: vault, kind: ClusterSecretStore}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {mode: preview}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: app}
spec: {selector: {matchLabels: {app: app}}}
"""


def with_extra(extra: str) -> dict[str, str]:
    """The dev overlay rendering `extra` besides the app."""
    kustomization = overlay("ccccccc").replace("  - ../../base\n", "  - ../../base\n  - extra.yaml\n")
    return {f"{DEV}/kustomization.yaml": kustomization, f"{DEV}/extra.yaml": extra}


class World:
    def __init__(self, tmp_path: Path, fake: FakeGitHub, kube: FakeKube) -> None:
        self.fake, self.kube = fake, kube
        fake.add_installation("acme")
        fake.create_repo(REPO, files=repo_files(clusters=True, preview=True))
        fake.set_permission(REPO, "alice", "write")
        kubeconfig = kube.write_kubeconfig(tmp_path / "kube" / "config")
        clusters = tmp_path / "clusters.yaml"
        clusters.write_text(yaml.safe_dump({env: {"kubeconfig": str(kubeconfig)} for env in ENVS}))
        for env in ENVS:
            kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"app-{env}"}})
        for definition in (*CLUSTER_SCOPED_CRDS, crd("external-secrets.io", "ExternalSecret", "externalsecrets",
                                                     ("v1beta1",))):
            kube.seed(definition)
        fake.drain_events()
        self.bot = Bot(tmp_path, fake, clusters_file=clusters, deploy_poll=0.0)

    def preview(self, files: dict[str, str]) -> int:
        self.fake.commit(REPO, "preview-me", files, user="alice")
        number = self.fake.open_pull(REPO, head="preview-me", user="alice", title="Preview me")
        self.bot.deliver_events()
        self.fake.comment(REPO, number, "/prbot preview", user="alice")
        self.bot.deliver_events()
        self.bot.settle()
        return number

    def comment(self, number: int) -> str:
        [body] = [c.body for c in self.fake.comments(REPO, number) if c.body.startswith(PREVIEW_MARKER)]
        return body


@pytest.fixture
def world(tmp_path: Path, fake_github: FakeGitHub, fake_kube: FakeKube) -> Iterator[World]:
    w = World(tmp_path, fake_github, fake_kube)
    yield w
    w.bot.stop()


def test_only_namespaced_objects_go_in_and_the_rest_is_listed_as_left_out(world: World) -> None:
    number = world.preview(with_extra(EXTRA))
    ns = f"pr-{number}"
    kube = world.kube
    for kind in ("ClusterSecretStore", "GatewayClass", "PriorityClass", "StorageClass", "ServiceMonitor"):
        assert kube.objects(kind) == [], kind                         # nothing cluster-wide
    assert kube.live("v1", "Namespace", None, "elsewhere") is None
    # namespaced objects, custom or built-in, land in the preview's namespace whatever they named
    secret = kube.live("external-secrets.io/v1beta1", "ExternalSecret", ns, "db")
    assert secret is not None and secret["metadata"]["labels"]["prbot.dev/pr"] == str(number)
    assert kube.objects("ExternalSecret", namespace="kube-system") == []
    assert kube.live("v1", "ConfigMap", ns, "settings") is not None
    assert kube.live("v1", "ConfigMap", "default", "settings") is None
    assert kube.live("apps/v1", "Deployment", ns, "app") is not None

    comment = world.comment(number)
    assert f"namespace `{ns}` of **dev**" in comment and "(3 objects)" in comment
    assert "\n\nLeft out — a preview creates only objects the cluster says are namespaced, in its own namespace (6):" \
        in comment
    scoped = "cluster-scoped on cluster dev: a preview creates only namespaced objects"
    for what in ("ClusterSecretStore vault", "GatewayClass public", "PriorityClass urgent", "StorageClass fast",
                 "Namespace elsewhere"):
        assert f"- `{what}`: {scoped}" in comment, what
    assert "- `ServiceMonitor app`: cluster dev does not serve ServiceMonitor (monitoring.coreos.com/v1)" in comment

    world.fake.close_pull(REPO, number, user="alice")                 # torn down: nothing of it stays
    world.bot.deliver_events()
    assert kube.live("v1", "Namespace", None, ns) is None
    assert kube.objects(label=("prbot.dev/pr", str(number))) == []


def test_a_rendered_namespace_of_the_preview_itself_is_not_applied(world: World) -> None:
    """A PR cannot relabel its preview's namespace (e.g. relax its pod security): the namespace is
    prbot's, the rendered one is left out; a kind served only at another version is left out too."""
    number = world.preview(with_extra("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n"))
    ns = f"pr-{number}"
    hostile = (f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n"
               "    pod-security.kubernetes.io/enforce: privileged\n---\n"
               "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: GatewayClass\nmetadata: {name: old}\n"
               "spec: {controllerName: example.com/gateway}\n")
    world.fake.commit(REPO, "preview-me", {f"{DEV}/extra.yaml": hostile}, user="alice")   # a push re-applies
    world.bot.deliver_events()
    world.bot.settle()
    live = world.kube.live("v1", "Namespace", None, ns)
    assert live is not None and "pod-security.kubernetes.io/enforce" not in (live["metadata"].get("labels") or {})
    assert world.kube.live("v1", "ConfigMap", ns, "settings") is None               # pruned: no longer rendered
    assert world.kube.objects("GatewayClass") == []
    comment = world.comment(number)
    assert f"- `Namespace {ns}`: the namespace itself is prbot's, not the rendered one" in comment
    assert ("- `GatewayClass old`: cluster dev does not serve GatewayClass (gateway.networking.k8s.io/v1beta1)"
            in comment)

"""The Kubernetes API stand-in behaves as the real API does where prbot relies on it, through the
official client (`ClusterClient`): what end-to-end tests build on must itself be right."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from fakekube import FakeKube, label_matcher
from kubehelp import FAST, configmap, deployment, namespace, widget, widget_crd

from prbot.cluster.client import ClusterClient
from prbot.cluster.clusters import ClusterRef
from prbot.errors import ApiError, NotServed


@pytest.fixture
def client(cluster: ClusterRef) -> Iterator[ClusterClient]:
    with ClusterClient(cluster, retry=FAST) as c:
        yield c


def test_objects_need_their_namespace(fake_kube: FakeKube, client: ClusterClient) -> None:
    with pytest.raises(ApiError) as err:
        client.apply(configmap("cfg", {"a": "b"}, namespace="missing"), namespace="missing")
    assert (err.value.status, err.value.message, err.value.kind, err.value.name) == (
        404, 'namespaces "missing" not found', "namespaces", "missing")
    client.apply(namespace("missing"), namespace=None)
    created = client.apply(configmap("cfg", {"a": "b"}, namespace="missing"), namespace="missing")
    assert created["metadata"]["namespace"] == "missing" and created["metadata"]["generation"] == 1
    # deleting the namespace takes its objects with it
    assert client.delete("v1", "Namespace", "missing", None) is True
    assert fake_kube.live("v1", "ConfigMap", "missing", "cfg") is None
    assert client.delete("v1", "Namespace", "missing", None) is False          # already gone


def test_dry_run_never_persists_any_write(fake_kube: FakeKube, client: ClusterClient) -> None:
    client.apply(configmap("cfg", {"a": "b"}, namespace="default"), namespace="default", dry_run=True)
    assert fake_kube.live("v1", "ConfigMap", "default", "cfg") is None
    fake_kube.seed(configmap("cfg", {"a": "b"}, namespace="default"))
    client.patch("v1", "ConfigMap", "cfg", "default", {"data": {"a": "c"}}, dry_run=True)
    client.delete("v1", "ConfigMap", "cfg", "default", dry_run=True)
    live = fake_kube.live("v1", "ConfigMap", "default", "cfg")
    assert live is not None and live["data"] == {"a": "b"}


def test_merge_patch_json_patch_and_the_resource_version_precondition(fake_kube: FakeKube,
                                                                      client: ClusterClient) -> None:
    stored = fake_kube.seed(configmap("cfg", {"a": "1", "b": "2"}, namespace="default"))
    version = stored["metadata"]["resourceVersion"]
    patched = client.patch("v1", "ConfigMap", "cfg", "default",
                           {"metadata": {"resourceVersion": version, "annotations": {"x": "y"}}, "data": {"b": None}})
    assert patched["data"] == {"a": "1"} and patched["metadata"]["annotations"] == {"x": "y"}
    with pytest.raises(ApiError) as err:                                   # the version moved on
        client.patch("v1", "ConfigMap", "cfg", "default", {"metadata": {"resourceVersion": version}, "data": {}})
    assert err.value.status == 409
    patched = client.patch("v1", "ConfigMap", "cfg", "default", [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "add", "path": "/metadata/labels", "value": {"team": "shop"}},
        {"op": "replace", "path": "/data/a", "value": "3"},
        {"op": "copy", "from": "/data/a", "path": "/data/c"},
        {"op": "remove", "path": "/metadata/annotations/x"},
    ], patch_type="json")
    assert patched["data"] == {"a": "3", "c": "3"} and patched["metadata"]["labels"] == {"team": "shop"}
    with pytest.raises(ApiError) as err:
        client.patch("v1", "ConfigMap", "cfg", "default", [{"op": "test", "path": "/data/a", "value": "9"}],
                     patch_type="json")
    assert err.value.status == 422
    with pytest.raises(ApiError) as err:
        client.patch("v1", "ConfigMap", "gone", "default", {"data": {}})
    assert err.value.status == 404


def test_server_side_apply_owns_fields_per_manager(fake_kube: FakeKube, client: ClusterClient) -> None:
    client.apply(configmap("cfg", {"a": "1", "b": "2"}, namespace="default"), namespace="default")
    client.apply(configmap("cfg", {"c": "3"}, namespace="default"), namespace="default", field_manager="other")
    client.apply(configmap("cfg", {"a": "1"}, namespace="default"), namespace="default")    # prbot drops b
    live = fake_kube.live("v1", "ConfigMap", "default", "cfg")
    assert live is not None and live["data"] == {"a": "1", "c": "3"}
    assert {m["manager"] for m in live["metadata"]["managedFields"]} == {"prbot", "other"}
    # Secrets: stringData lands in data, base64
    client.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
                  "stringData": {"k": "v"}}, namespace="default")
    secret = fake_kube.live("v1", "Secret", "default", "s")
    assert secret is not None and secret["data"] == {"k": base64.b64encode(b"v").decode()}


def test_generation_moves_with_the_spec_only(fake_kube: FakeKube, client: ClusterClient) -> None:
    fake_kube.script("Deployment", outcome="stuck")
    first = client.apply(deployment("web", 1, namespace="default"), namespace="default")
    labelled = deployment("web", 1, namespace="default")
    labelled["metadata"]["labels"]["tier"] = "front"
    second = client.apply(labelled, namespace="default")
    scaled = client.apply({**labelled, "spec": {**labelled["spec"], "replicas": 3}}, namespace="default")
    assert [o["metadata"]["generation"] for o in (first, second, scaled)] == [1, 1, 2]
    # writes never change the status: controllers do
    live = client.get("apps/v1", "Deployment", "web", "default")
    assert live is not None and live["status"]["observedGeneration"] == 2


def test_list_with_label_selectors(fake_kube: FakeKube, client: ClusterClient) -> None:
    for name, labels in (("a", {"app": "shop", "tier": "web"}), ("b", {"app": "shop"}), ("c", {"app": "billing"})):
        fake_kube.seed({**configmap(name, {}, namespace="default"),
                        "metadata": {"name": name, "namespace": "default", "labels": labels}})
    fake_kube.seed({**configmap("d", {}, namespace="other"),
                    "metadata": {"name": "d", "namespace": "other", "labels": {"app": "shop"}}})

    def names(selector: str | None, ns: str | None = "default") -> list[str]:
        return [o["metadata"]["name"] for o in client.list("v1", "ConfigMap", namespace=ns, label_selector=selector)]

    assert names("app=shop") == ["a", "b"]
    assert names("app=shop", None) == ["a", "b", "d"]
    assert names("app=shop,tier") == ["a"] and names("app=shop,!tier") == ["b"]
    assert names("app in (shop, billing),tier!=web") == ["b", "c"] and names("app notin (shop)") == ["c"]
    assert all(o["kind"] == "ConfigMap" for o in client.list("v1", "ConfigMap", namespace="default"))
    assert label_matcher("a==b")({"a": "b"}) and not label_matcher("a=b")({})


def test_crds_are_served_once_created(fake_kube: FakeKube, client: ClusterClient) -> None:
    with pytest.raises(NotServed):
        client.resource("example.com/v1", "Widget")
    client.apply(widget_crd(), namespace=None)
    client.refresh_discovery()
    info = client.resource("example.com/v1", "Widget")
    assert (info.plural, info.namespaced, info.api_version) == ("widgets", True, "example.com/v1")
    assert client.preferred("example.com", "Widget") == info
    client.apply(widget("w", "default"), namespace="default")
    assert [w["metadata"]["name"] for w in client.list("example.com/v1", "Widget")] == ["w"]
    # the operators' CRDs are installed
    for api_version, kind in (("argoproj.io/v1alpha1", "Application"), ("kustomize.toolkit.fluxcd.io/v1",
                                                                        "Kustomization"),
                              ("helm.toolkit.fluxcd.io/v2", "HelmRelease"), ("source.toolkit.fluxcd.io/v1",
                                                                            "GitRepository"),
                              ("source.toolkit.fluxcd.io/v1", "HelmRepository")):
        assert client.resource(api_version, kind).namespaced


def test_create_replace_and_conflicts(fake_kube: FakeKube, client: ClusterClient) -> None:
    """POST and PUT, through the typed client's own paths (the dynamic client's create/replace)."""
    from kubernetes.dynamic.exceptions import ConflictError

    dynamic = client._connect()
    resource = dynamic.resources.get(api_version="v1", kind="ConfigMap")
    dynamic.create(resource, body=configmap("cfg", {"a": "1"}), namespace="default")
    with pytest.raises(ConflictError):
        dynamic.create(resource, body=configmap("cfg", {"a": "1"}), namespace="default")
    live = fake_kube.live("v1", "ConfigMap", "default", "cfg")
    assert live is not None
    replaced = dynamic.replace(resource, body={**configmap("cfg", {"a": "2"}),
                                               "metadata": {"name": "cfg", "resourceVersion":
                                                            live["metadata"]["resourceVersion"]}},
                               namespace="default")
    assert replaced.data.a == "2"
    with pytest.raises(ConflictError):
        dynamic.replace(resource, body={**configmap("cfg", {"a": "3"}),
                                        "metadata": {"name": "cfg", "resourceVersion": "1"}}, namespace="default")


def test_requests_are_logged_for_assertions(fake_kube: FakeKube, client: ClusterClient) -> None:
    client.apply(configmap("cfg", {"a": "1"}, namespace="default"), namespace="default")
    client.patch("v1", "ConfigMap", "cfg", "default", {"data": {"a": "2"}})
    client.delete("v1", "ConfigMap", "cfg", "default")
    assert [r.method for r in fake_kube.touching("default")] == ["PATCH", "PATCH", "DELETE"]
    assert [r.content_type for r in fake_kube.patches("ConfigMap")] == ["application/apply-patch+yaml",
                                                                        "application/merge-patch+json"]
    assert len(fake_kube.applies("ConfigMap")) == 1 and len(fake_kube.deletes("ConfigMap")) == 1
    assert fake_kube.touching("kube-system") == []

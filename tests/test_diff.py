"""prbot.diff: keys, noise, Secret masking, hash-suffix renames and unified diffs of rendered objects."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import pytest
from support import write

from prbot.config import AppSpec, Config, Environment, HelmSpec
from prbot.diff import (
    ObjectChange,
    describe,
    diff_objects,
    mask_secret_pair,
    mask_secrets,
    object_key,
    split_path,
    strip_noise,
)
from prbot.render import render_target
from prbot.renderers.base import parse_documents
from prbot.targets import discover_targets

CONFIG = Config(
    version=1,
    environments=(Environment("dev"), Environment("staging"), Environment("prod")),
    apps=(AppSpec(path="apps/{app}/envs/{env}", namespace="{app}-{env}"),
          AppSpec(name="billing", path="billing/{env}", namespace="billing-{env}",
                  helm=HelmSpec(chart="charts/billing", values=("values.yaml",)))),
    diff_ignore=(r"metadata.annotations.example\.com/build-time",),
)


def render(repo: Path, app: str, env: str) -> list[dict[str, Any]]:
    [target] = [t for t in discover_targets(CONFIG, repo) if t.app == app and t.env == env]
    return render_target(repo, target)


def yaml_objects(text: str) -> list[dict[str, Any]]:
    return parse_documents(text)


def deployment(name: str = "web", namespace: str | None = "shop", **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": name}}
    if namespace:
        meta["namespace"] = namespace
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": name, "image": f"acme/{name}:1.0.0"}]}}}}
    obj.update(extra)
    return obj


def secret(name: str, data: dict[str, str] | None = None, string_data: dict[str, str] | None = None,
           namespace: str = "shop") -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                           "metadata": {"name": name, "namespace": namespace}}
    if data is not None:
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    if string_data is not None:
        obj["stringData"] = dict(string_data)
    return obj


def by_name(changes: list[ObjectChange]) -> dict[str, ObjectChange]:
    return {c.name: c for c in changes}


# --------------------------------------------------------------------------------------------
# Real renderings of the example repository
# --------------------------------------------------------------------------------------------

def test_kustomize_bump_and_secret_change_render_as_reviewers_expect(example_repo: Path) -> None:
    before = render(example_repo, "shop", "dev")
    kustomization = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    kustomization.write_text(kustomization.read_text()
                             .replace('newTag: "1.1.0"', 'newTag: "1.2.0"')
                             .replace("example-dev-password", "rotated-dev-password"))
    after = render(example_repo, "shop", "dev")

    changes = diff_objects(before, after, default_namespace="shop-dev", ignore=CONFIG.diff_ignore)

    assert [(c.kind, c.action) for c in changes] == [("Secret", "changed"), ("Deployment", "changed")]
    sec, dep = changes
    # the generated Secret got a new hash suffix: one rename, not an add and a remove
    assert sec.renamed_from is not None and sec.renamed_from.startswith("shop-secrets-")
    assert sec.name.startswith("shop-secrets-") and sec.name != sec.renamed_from
    assert sec.to_json()["renamed_from"] == sec.renamed_from
    assert f"-  name: {sec.renamed_from}" in sec.diff and f"+  name: {sec.name}" in sec.diff
    assert "-  DATABASE_PASSWORD: '*** (before)'" in sec.diff
    assert "+  DATABASE_PASSWORD: '*** (after)'" in sec.diff
    assert dep.group == "apps" and dep.namespace == "shop-dev" and dep.name == "shop"
    assert dep.diff.startswith("--- a/apps/Deployment/shop-dev/shop\n"
                               "+++ b/apps/Deployment/shop-dev/shop\n@@ ")
    assert "-        image: registry.cn-hangzhou.aliyuncs.com/demo/shop:1.1.0" in dep.diff
    assert "+        image: registry.cn-hangzhou.aliyuncs.com/demo/shop:1.2.0" in dep.diff
    assert f"+            name: {sec.name}" in dep.diff
    everything = json.dumps([c.to_json() for c in changes])
    for value in ("example-dev-password", "rotated-dev-password"):
        assert value not in everything
        assert base64.b64encode(value.encode()).decode() not in everything


def test_a_new_target_shows_every_object_added_with_secrets_masked(example_repo: Path) -> None:
    after = render(example_repo, "shop", "prod")

    changes = diff_objects([], after, default_namespace="shop-prod")

    assert [(c.kind, c.action) for c in changes] == [
        ("ConfigMap", "added"), ("Secret", "added"), ("Service", "added"), ("Deployment", "added")]
    for change in changes:
        header, body = change.diff.split("\n@@", 1)
        assert header.startswith("--- /dev/null\n+++ b/")
        lines = body.split("\n")[1:]
        assert lines and all(line.startswith("+") for line in lines)
    sec = changes[1]
    assert "+  DATABASE_PASSWORD: '***'" in sec.diff
    assert "example-prod-password" not in sec.diff
    assert base64.b64encode(b"example-prod-password").decode() not in sec.diff


def test_helm_chart_bump_alone_is_noise_and_a_value_change_is_not(example_repo: Path) -> None:
    before = render(example_repo, "billing", "dev")
    chart = example_repo / "charts/billing/Chart.yaml"
    chart.write_text(chart.read_text().replace("version: 0.3.0", "version: 0.4.0"))
    values = example_repo / "billing/dev/values.yaml"
    values.write_text(values.read_text() + "unusedByTemplates: true   # moves checksum/config only\n")
    bumped = render(example_repo, "billing", "dev")
    def noise(objects: list[dict[str, Any]]) -> tuple[str, str]:
        [dep] = [o for o in objects if o["kind"] == "Deployment"]
        return (dep["metadata"]["labels"]["helm.sh/chart"],
                dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert noise(bumped)[0] == "billing-0.4.0" != noise(before)[0]         # the noise is really there
    assert noise(bumped)[1] != noise(before)[1]

    assert diff_objects(before, bumped, default_namespace="billing-dev") == []

    values.write_text(values.read_text().replace('tag: "2.4.0"', 'tag: "2.5.0"'))
    changes = diff_objects(before, render(example_repo, "billing", "dev"), default_namespace="billing-dev")
    assert [(c.kind, c.name, c.namespace) for c in changes] == [("Deployment", "billing-dev", "billing-dev")]
    diff = changes[0].diff
    assert "+      - image: ghcr.io/acme/billing:2.5.0" in diff
    assert "helm.sh/chart" not in diff and "checksum/" not in diff


def test_removed_target_shows_every_line_removed(example_repo: Path) -> None:
    before = render(example_repo, "worker", "dev")

    changes = diff_objects(before, [], default_namespace="worker-dev")

    assert [(c.group, c.kind, c.namespace, c.name, c.action) for c in changes] == [
        ("apps", "Deployment", "worker-dev", "worker", "removed"),
        ("batch", "CronJob", "worker-dev", "worker-cleanup", "removed")]
    header, body = changes[0].diff.split("\n@@", 1)
    assert header == "--- a/apps/Deployment/worker-dev/worker\n+++ /dev/null"
    assert all(line.startswith("-") for line in body.split("\n")[1:])
    assert "-  namespace: worker-dev" in changes[0].diff


def test_ignore_path_with_escaped_dots_from_the_config(example_repo: Path) -> None:
    write(example_repo, "apps/worker/envs/dev/extra.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stamp\n  annotations:\n"
          "    example.com/build-time: '2024-05-01T10:00:00Z'\ndata:\n  a: b\n")
    before = render(example_repo, "worker", "dev")
    write(example_repo, "apps/worker/envs/dev/extra.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stamp\n  annotations:\n"
          "    example.com/build-time: '2024-05-02T11:00:00Z'\ndata:\n  a: b\n")
    after = render(example_repo, "worker", "dev")

    assert diff_objects(before, after, default_namespace="worker-dev", ignore=CONFIG.diff_ignore) == []
    [change] = diff_objects(before, after, default_namespace="worker-dev")
    assert "+    example.com/build-time: '2024-05-02T11:00:00Z'" in change.diff


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------

def test_object_key_groups_namespaces_and_cluster_scope() -> None:
    assert object_key(deployment(namespace=None), "shop-dev") == ("apps", "Deployment", "shop-dev", "web")
    assert object_key(deployment(namespace="other"), "shop-dev") == ("apps", "Deployment", "other", "web")
    assert object_key(deployment(namespace=None), None) == ("apps", "Deployment", None, "web")
    assert object_key({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, "ns") == \
        ("", "ConfigMap", "ns", "c")
    cluster = [("v1", "Namespace"), ("v1", "PersistentVolume"),
               ("rbac.authorization.k8s.io/v1", "ClusterRole"),
               ("apiextensions.k8s.io/v1", "CustomResourceDefinition"), ("storage.k8s.io/v1", "StorageClass"),
               ("scheduling.k8s.io/v1", "PriorityClass"), ("networking.k8s.io/v1", "IngressClass"),
               ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration"),
               ("apiregistration.k8s.io/v1", "APIService"), ("node.k8s.io/v1", "RuntimeClass")]
    for api_version, kind in cluster:
        obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "namespace": "ignored"}}
        assert object_key(obj, "shop-dev")[2] is None, kind
    assert object_key({"kind": "Thing"}, "ns") == ("", "Thing", "ns", "")       # no crash on a bare object


def test_default_namespace_is_applied_to_keys_and_content() -> None:
    implicit = deployment(namespace=None)
    explicit = deployment(namespace="shop-dev")
    assert diff_objects([implicit], [explicit], default_namespace="shop-dev") == []

    [added] = diff_objects([], [implicit], default_namespace="shop-dev")
    assert (added.namespace, added.action) == ("shop-dev", "added")
    assert "+  namespace: shop-dev" in added.diff

    moved = diff_objects([deployment(namespace="a")], [deployment(namespace="b")])
    assert [(c.namespace, c.action) for c in moved] == [("a", "removed"), ("b", "added")]


def test_cluster_scoped_objects_get_no_namespace_even_with_a_default() -> None:
    objects = yaml_objects("""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules: []
---
apiVersion: v1
kind: Namespace
metadata: {name: shop-dev}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Cluster
  names: {kind: Widget, plural: widgets}
  versions: []
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: big}
""")
    changes = diff_objects([], objects, default_namespace="shop-dev")

    assert [(c.group, c.kind, c.namespace, c.name) for c in changes] == [
        ("", "Namespace", None, "shop-dev"),
        ("apiextensions.k8s.io", "CustomResourceDefinition", None, "widgets.example.com"),
        ("rbac.authorization.k8s.io", "ClusterRole", None, "reader"),
        ("example.com", "Widget", None, "big")]          # cluster-scoped by its CRD in the same rendering
    assert changes[2].diff.startswith("--- /dev/null\n+++ b/rbac.authorization.k8s.io/ClusterRole/reader\n")
    assert "namespace:" not in changes[2].diff


def test_describe_is_a_log_safe_identity() -> None:
    assert describe(deployment(namespace="shop-dev")) == "apps/Deployment shop-dev/web"
    assert describe(secret("db", {"password": "hunter2-secret"})) == "Secret shop/db"
    assert describe({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                     "metadata": {"name": "r"}}) == "rbac.authorization.k8s.io/ClusterRole r"


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------

def test_default_noise_is_stripped_on_object_and_pod_template() -> None:
    obj = deployment()
    obj["metadata"]["labels"]["helm.sh/chart"] = "web-1.0.0"
    obj["metadata"]["annotations"] = {"checksum/config": "abc", "keep": "me"}
    template_meta = obj["spec"]["template"]["metadata"]
    template_meta["labels"]["helm.sh/chart"] = "web-1.0.0"
    template_meta["annotations"] = {"checksum/secret": "def"}
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"metadata": {
                "annotations": {"checksum/config": "1"}, "labels": {"helm.sh/chart": "x", "app": "c"}}}}}}}

    stripped = strip_noise(obj, [])
    cron_stripped = strip_noise(cron, [])

    assert stripped["metadata"]["labels"] == {"app": "web"}
    assert stripped["metadata"]["annotations"] == {"keep": "me"}
    assert stripped["spec"]["template"]["metadata"] == {"labels": {"app": "web"}}
    assert cron_stripped["spec"]["jobTemplate"]["spec"]["template"]["metadata"] == {"labels": {"app": "c"}}
    assert obj["metadata"]["labels"]["helm.sh/chart"] == "web-1.0.0"            # input untouched


def test_ignore_paths_escaped_unescaped_and_wildcards() -> None:
    obj = deployment()
    obj["metadata"]["annotations"] = {"example.com/build-time": "now", "a.b": "keep"}
    obj["spec"]["template"]["spec"]["containers"] = [
        {"name": "a", "image": "x", "env": [{"name": "BUILD", "value": "1"}]},
        {"name": "b", "image": "y", "env": [{"name": "BUILD", "value": "2"}]}]

    escaped = strip_noise(obj, [r"metadata.annotations.example\.com/build-time"])
    unescaped = strip_noise(obj, ["metadata.annotations.example.com/build-time"])
    wildcard = strip_noise(obj, ["spec.template.spec.containers.*.env", "spec.replicas"])
    indexed = strip_noise(obj, ["spec.template.spec.containers.1.image", "metadata.annotations.*"])

    assert escaped["metadata"]["annotations"] == {"a.b": "keep"}
    assert unescaped["metadata"]["annotations"] == {"a.b": "keep"}
    assert [c.get("env") for c in wildcard["spec"]["template"]["spec"]["containers"]] == [None, None]
    assert "replicas" not in wildcard["spec"]
    assert indexed["spec"]["template"]["spec"]["containers"][1] == {"name": "b", "env": [
        {"name": "BUILD", "value": "2"}]}
    assert "annotations" not in indexed["metadata"]             # emptied by the ignore: no `{}` left
    assert split_path(r"metadata.annotations.example\.com/build-time") == [
        "metadata", "annotations", "example.com/build-time"]
    assert strip_noise(obj, ["no.such.path", "spec.replicas.deeper", ""]) == obj


def test_noise_only_change_is_not_listed_but_a_real_one_is() -> None:
    before = deployment()
    after = deployment()
    after["metadata"]["labels"]["helm.sh/chart"] = "web-2.0.0"
    after["spec"]["template"]["metadata"]["annotations"] = {"checksum/config": "new"}
    assert diff_objects([before], [after]) == []

    after["spec"]["replicas"] = 3
    [change] = diff_objects([before], [after])
    assert "-  replicas: 1\n+  replicas: 3" in change.diff
    assert "checksum" not in change.diff and "helm.sh/chart" not in change.diff


# --------------------------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------------------------

VALUES = ("hunter2-password", "s3cr3t-token-value", "kept-api-key", "new-key-value", "dropped-value")


def _assert_no_values(text: str) -> None:
    for value in VALUES:
        assert value not in text
        assert base64.b64encode(value.encode()).decode() not in text


def test_mask_secrets_masks_data_string_data_and_last_applied() -> None:
    obj = secret("db", {"password": "hunter2-password"}, {"token": "s3cr3t-token-value"})
    obj["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration":
            json.dumps({"data": {"password": "hunter2-password"}}),
        "team": "shop"}

    masked = mask_secrets(obj)

    assert masked["data"] == {"password": "***"}
    assert masked["stringData"] == {"token": "***"}
    assert masked["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/last-applied-configuration": "***", "team": "shop"}
    _assert_no_values(json.dumps(masked))
    assert obj["stringData"] == {"token": "s3cr3t-token-value"}                  # input untouched
    assert mask_secrets(deployment()) == deployment()


def test_changed_secret_shows_which_keys_changed_never_values() -> None:
    before = secret("db", {"password": "hunter2-password", "api": "kept-api-key", "old": "dropped-value"},
                    {"token": "s3cr3t-token-value"})
    after = secret("db", {"password": "new-key-value", "api": "kept-api-key", "added": "new-key-value"},
                   {"token": "hunter2-password"})

    [change] = diff_objects([before], [after])

    assert change.action == "changed"
    lines = change.diff.split("\n")
    assert "-  password: '*** (before)'" in lines and "+  password: '*** (after)'" in lines
    assert "-  token: '*** (before)'" in lines and "+  token: '*** (after)'" in lines
    assert "   api: '***'" in lines                                           # unchanged: context
    assert "+  added: '***'" in lines and "-  old: '***'" in lines
    _assert_no_values(change.diff)
    _assert_no_values(json.dumps(change.to_json()))

    masked_before, masked_after = mask_secret_pair(before, after)
    assert masked_before["data"] == {"password": "*** (before)", "api": "***", "old": "***"}
    assert masked_after["stringData"] == {"token": "*** (after)"}


def test_an_unchanged_secret_is_not_listed() -> None:
    same = secret("db", {"a": "hunter2-password"})
    assert diff_objects([same], [secret("db", {"a": "hunter2-password"})]) == []


def test_removed_secret_and_malformed_secret_data_are_masked() -> None:
    broken = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "odd"}, "data": "hunter2-password",
              "stringData": ["s3cr3t-token-value"]}
    changes = diff_objects([secret("db", string_data={"token": "s3cr3t-token-value"}), broken], [],
                           default_namespace="shop")
    assert [c.action for c in changes] == ["removed", "removed"]
    for change in changes:
        _assert_no_values(change.diff)
    assert "-data: '***'" in by_name(changes)["odd"].diff


# --------------------------------------------------------------------------------------------
# Renames, order, format
# --------------------------------------------------------------------------------------------

def configmap(name: str, data: dict[str, str], namespace: str = "shop") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data}


def test_hash_suffix_rename_is_paired_only_when_unambiguous() -> None:
    [paired] = diff_objects([configmap("app-config-hf678c7m2b", {"LOG": "info"})],
                            [configmap("app-config-5d8t2k9mbg", {"LOG": "debug"})])
    assert (paired.action, paired.name, paired.renamed_from) == ("changed", "app-config-5d8t2k9mbg",
                                                                 "app-config-hf678c7m2b")
    assert paired.diff.startswith("--- a/ConfigMap/shop/app-config-hf678c7m2b\n"
                                  "+++ b/ConfigMap/shop/app-config-5d8t2k9mbg\n")
    assert "-  LOG: info\n+  LOG: debug" in paired.diff

    # not kustomize's hash alphabet ("a" and "e" never occur) -> an add and a remove
    plain = diff_objects([configmap("app-config-aaaaaaaaaa", {})], [configmap("app-config-eeeeeeeeee", {})])
    assert sorted(c.action for c in plain) == ["added", "removed"]
    # two candidates on one side: no guessing
    ambiguous = diff_objects([configmap("c-hf678c7m2b", {})],
                             [configmap("c-5d8t2k9mbg", {}), configmap("c-2222222222", {})])
    assert sorted(c.action for c in ambiguous) == ["added", "added", "removed"]
    assert all(c.renamed_from is None and "renamed_from" not in c.to_json() for c in ambiguous)
    # other namespaces never pair
    other = diff_objects([configmap("c-hf678c7m2b", {}, "a")], [configmap("c-5d8t2k9mbg", {}, "b")])
    assert sorted(c.action for c in other) == ["added", "removed"]


def test_order_is_deterministic_and_follows_review_order() -> None:
    objects = yaml_objects("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: b, namespace: x}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: a, namespace: x}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: x}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: hook}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w, namespace: x}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: rb, namespace: x}
---
apiVersion: v1
kind: Secret
metadata: {name: s, namespace: x}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: c, namespace: x}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
---
apiVersion: v1
kind: Namespace
metadata: {name: x}
""")
    expected = ["Namespace", "CustomResourceDefinition", "ConfigMap", "Secret", "RoleBinding", "Service",
                "Deployment", "Deployment", "Widget", "ValidatingWebhookConfiguration"]
    first = diff_objects([], objects)
    assert [c.kind for c in first] == expected
    assert [c.name for c in first if c.kind == "Deployment"] == ["a", "b"]
    rng = random.Random(7)
    for _ in range(5):
        shuffled = [dict(reversed(list(o.items()))) for o in rng.sample(objects, len(objects))]
        assert diff_objects([], shuffled) == first


def test_unified_diff_has_headers_hunks_and_three_lines_of_context() -> None:
    before = deployment()
    before["metadata"]["labels"].update({f"l{i:02d}": str(i) for i in range(30)})
    after = json.loads(json.dumps(before))
    after["metadata"]["labels"]["l15"] = "changed"

    [change] = diff_objects([before], [after])

    lines = change.diff.split("\n")
    assert lines[:2] == ["--- a/apps/Deployment/shop/web", "+++ b/apps/Deployment/shop/web"]
    assert lines[2].startswith("@@ -") and lines[2].endswith(" @@")
    assert lines[3:] == ["     l12: '12'", "     l13: '13'", "     l14: '14'",
                         "-    l15: '15'", "+    l15: changed",
                         "     l16: '16'", "     l17: '17'", "     l18: '18'"]


def test_yaml_is_normalised_sorted_and_multiline_strings_are_blocks() -> None:
    text = "server {\n  listen 80;\n}\n"
    obj = configmap("nginx", {"z": "1", "nginx.conf": text})
    shuffled = {"data": {"nginx.conf": text, "z": "1"}, "metadata": obj["metadata"], "kind": "ConfigMap",
                "apiVersion": "v1"}
    [added] = diff_objects([], [obj])
    assert diff_objects([], [shuffled]) == [added]
    assert diff_objects([obj], [shuffled]) == []
    assert added.diff.split("\n")[3:] == [
        "+apiVersion: v1", "+data:", "+  nginx.conf: |", "+    server {", "+      listen 80;", "+    }",
        "+  z: '1'", "+kind: ConfigMap", "+metadata:", "+  name: nginx", "+  namespace: shop"]


def test_duplicates_keep_the_last_and_odd_objects_do_not_crash() -> None:
    first = deployment()
    last = deployment()
    last["spec"]["replicas"] = 5
    odd: list[Any] = [{"kind": "Thing"}, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": "broken"},
                      {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m"},
                       "data": {1: "a", "b": 2}}]

    [change] = diff_objects([deployment()], [first, last])
    assert "+  replicas: 5" in change.diff
    assert len(diff_objects([], odd, default_namespace="ns")) == 3


def test_object_change_json_shape() -> None:
    [change] = diff_objects([], [deployment()])
    data = change.to_json()
    assert set(data) == {"group", "kind", "namespace", "name", "action", "diff"}
    assert (data["group"], data["kind"], data["namespace"], data["name"], data["action"]) == \
        ("apps", "Deployment", "shop", "web", "added")


@pytest.mark.parametrize("path, expected", [
    ("a.b.c", ["a", "b", "c"]),
    (r"a.b\.c", ["a", "b.c"]),
    (r"a\\.b", ["a\\", "b"]),
    ("a.*.c", ["a", "*", "c"]),
])
def test_split_path(path: str, expected: list[str]) -> None:
    assert split_path(path) == expected

"""prbot.validate: offline schema validation of rendered objects."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from support import write

from prbot.config import AppSpec, Config, Environment, HelmSpec
from prbot.render import render_target
from prbot.renderers.base import parse_documents
from prbot.targets import discover_targets
from prbot.validate import ValidationIssue, known_versions, validate_objects

CONFIG = Config(
    version=1,
    environments=(Environment("dev", kubernetes_version="1.33"), Environment("staging"), Environment("prod")),
    apps=(AppSpec(path="apps/{app}/envs/{env}", namespace="{app}-{env}"),
          AppSpec(name="billing", path="billing/{env}", namespace="billing-{env}",
                  helm=HelmSpec(chart="charts/billing", values=("values.yaml",)))),
)

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app.kubernetes.io/name: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: acme/web:1.0.0
          ports: [{containerPort: 8080}]
          resources:
            limits: {cpu: 500m, memory: 256Mi}
"""


def deployment() -> dict[str, Any]:
    [obj] = parse_documents(DEPLOYMENT)
    return obj


def errors(issues: list[ValidationIssue]) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in issues if i.level == "error"]


def test_every_rendered_example_target_is_valid(example_repo: Path) -> None:
    targets = discover_targets(CONFIG, example_repo)
    assert {t.renderer for t in targets} == {"kustomize", "helm", "plain"}
    for target in targets:
        objects = render_target(example_repo, target)
        assert objects
        assert validate_objects(objects, CONFIG.env(target.env).kubernetes_version) == [], target.path


def test_valid_deployment_passes() -> None:
    assert validate_objects([deployment()], "1.33") == []
    assert validate_objects([deployment()], None) == []
    assert validate_objects([], "1.33") == []


def test_wrong_type_is_an_error_with_path_and_message() -> None:
    obj = deployment()
    obj["spec"]["replicas"] = "two"

    assert [i.to_json() for i in validate_objects([obj], "1.33")] == [
        {"kind": "Deployment", "name": "web", "level": "error", "path": "spec.replicas",
         "message": "spec.replicas: 'two' is not of type 'integer'"}]


def test_rendered_target_with_a_bad_value_reports_list_paths(example_repo: Path) -> None:
    patch = example_repo / "apps/shop/envs/dev/replicas.yaml"
    patch.write_text(patch.read_text().replace("replicas: 1", 'replicas: "two"')
                     + "  template:\n    spec:\n      containers:\n        - name: shop\n"
                       "          ports:\n            - containerPort: http-port\n")
    [target] = [t for t in discover_targets(CONFIG, example_repo) if t.key == "shop/dev"]

    issues = validate_objects(render_target(example_repo, target), "1.33")

    assert errors(issues) == [
        ("spec.replicas", "spec.replicas: 'two' is not of type 'integer'"),
        ("spec.template.spec.containers[0].ports[0].containerPort",
         "spec.template.spec.containers[0].ports[0].containerPort: 'http-port' is not of type 'integer'")]
    assert {(i.kind, i.name) for i in issues} == {("Deployment", "shop")}


def test_unknown_field_is_an_error() -> None:
    obj = deployment()
    obj["spec"]["replica"] = 3                                   # typo of replicas
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"

    assert errors(validate_objects([obj], "1.33")) == [
        ("spec.replica", "spec.replica: unknown field"),
        ("spec.template.spec.containers[0].imagePullPolicyy",
         "spec.template.spec.containers[0].imagePullPolicyy: unknown field")]


def test_required_fields_and_enums_and_int_or_string() -> None:
    obj = deployment()
    del obj["spec"]["selector"]
    obj["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = [1]
    obj["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] = 7

    assert errors(validate_objects([obj], "1.33")) == [
        ("spec.selector", "spec.selector: required field is missing"),
        ("spec.template.metadata.labels.app\\.kubernetes\\.io/part-of",
         "spec.template.metadata.labels.app\\.kubernetes\\.io/part-of: 7 is not of type 'string'"),
        ("spec.template.spec.containers[0].resources.limits.cpu",
         "spec.template.spec.containers[0].resources.limits.cpu: [1] is not of type 'string' or 'number'")]


def test_custom_resources_are_skipped_not_passed_and_crds_are_validated() -> None:
    objects = parse_documents("""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: big}
spec: {size: 3}
---
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: shop-dev, namespace: argocd}
""")

    assert [i.to_json() for i in validate_objects(objects, "1.33")] == [
        {"kind": "Widget", "name": "big", "level": "skipped", "path": "",
         "message": "no schema for example.com/v1 Widget"},
        {"kind": "Application", "name": "shop-dev", "level": "skipped", "path": "",
         "message": "no schema for argoproj.io/v1alpha1 Application"}]


def test_built_in_kind_at_an_api_version_no_longer_served_is_an_error() -> None:
    pdb = {"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
           "spec": {"minAvailable": 1}}
    typo = {"apiVersion": "apps/v1", "kind": "Deploymnet", "metadata": {"name": "web"}}

    assert errors(validate_objects([pdb, typo], "1.33")) == [
        ("apiVersion", "apiVersion: policy/v1beta1 PodDisruptionBudget is not served by Kubernetes 1.33; "
                       "use policy/v1"),
        ("kind", "kind: apps/v1 has no kind Deploymnet in Kubernetes 1.33")]


def test_missing_identity_fields_are_errors() -> None:
    issues = validate_objects([{"kind": "ConfigMap", "metadata": {"name": "a"}},
                               {"apiVersion": "v1", "metadata": {"name": "b"}},
                               {"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}}], "1.33")

    assert [(i.kind, i.name, i.level, i.path, i.message) for i in issues] == [
        ("ConfigMap", "a", "error", "apiVersion", "apiVersion: required field is missing"),
        ("", "b", "error", "kind", "kind: required field is missing"),
        ("ConfigMap", "", "error", "metadata.name", "metadata.name: required field is missing")]


def test_generate_name_counts_as_a_name() -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"generateName": "migrate-"},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "m", "image": "acme/m:1"}]}}}}
    assert validate_objects([job], "1.33") == []


SECRET_VALUES = ("hunter2-plain-text!", "correct horse battery staple", "1234567890123", "tok-in-a-list")


def test_secret_values_never_appear_in_any_message() -> None:
    last_applied = json.dumps({"data": {"p": SECRET_VALUES[0]}})
    bad = {"apiVersion": "v1", "kind": "Secret", "type": 12345,
           "metadata": {"name": "db",
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied}},
           "data": {"not-base64": SECRET_VALUES[0], "number": int(SECRET_VALUES[2]),
                    "map": {"nested": SECRET_VALUES[1]}},
           "stringData": {"list": [SECRET_VALUES[3]], "ok": SECRET_VALUES[1]},
           "immutable": SECRET_VALUES[1],
           "extraField": SECRET_VALUES[1]}
    whole = copy.deepcopy(bad)
    whole["data"] = SECRET_VALUES[1]

    issues = validate_objects([bad, whole], "1.33")

    assert errors(issues) == [
        ("data.map", "data.map: value is not of type 'string'"),
        ("data.not-base64", "data.not-base64: value is not valid base64 (use stringData for plain text)"),
        ("data.number", "data.number: value is not of type 'string'"),
        ("extraField", "extraField: unknown field"),
        ("immutable", "immutable: value is not of type 'boolean'"),
        ("stringData.list", "stringData.list: value is not of type 'string'"),
        ("type", "type: value is not of type 'string'"),
        ("data", "data: value is not of type 'object'"),
        ("extraField", "extraField: unknown field"),
        ("immutable", "immutable: value is not of type 'boolean'"),
        ("stringData.list", "stringData.list: value is not of type 'string'"),
        ("type", "type: value is not of type 'string'")]
    text = json.dumps([i.to_json() for i in issues])
    for value in SECRET_VALUES:
        assert value not in text
        assert base64.b64encode(value.encode()).decode() not in text


def test_valid_secret_passes_and_an_unquoted_config_map_number_is_an_error() -> None:
    objects = parse_documents("""
apiVersion: v1
kind: Secret
metadata: {name: db}
data: {password: aHVudGVyMg==}
stringData: {token: abc}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {port: 80}
""")
    assert errors(validate_objects(objects, "1.33")) == [
        ("data.port", "data.port: 80 is not of type 'string'")]


def test_yaml_timestamps_are_strings_as_the_api_server_reads_them(example_repo: Path) -> None:
    write(example_repo, "apps/worker/envs/dev/stamp.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stamp\n  annotations:\n"
          "    built: 2024-05-01\ndata:\n  at: 2024-05-01T10:00:00Z\n")
    [target] = [t for t in discover_targets(CONFIG, example_repo) if t.key == "worker/dev"]
    assert validate_objects(render_target(example_repo, target), "1.33") == []


@pytest.mark.parametrize("requested, used", [("1.99", known_versions()[-1]), ("1.10", known_versions()[0]),
                                             ("v2.0", known_versions()[-1])])
def test_unknown_version_falls_back_with_one_warning(requested: str, used: str) -> None:
    obj = deployment()
    obj["spec"]["replicas"] = "two"

    issues = validate_objects([deployment(), obj], requested)

    assert [i.level for i in issues] == ["warning", "error"]
    assert issues[0].message.startswith(f"no schemas for Kubernetes {requested} ")
    assert issues[0].message.endswith(f"validated against {used}, the nearest known")


def test_known_versions_and_patch_versions() -> None:
    versions = known_versions()
    assert "1.33" in versions
    assert versions == tuple(sorted(versions, key=lambda v: tuple(map(int, v.split(".")))))
    assert validate_objects([deployment()], "1.33.4") == []
    assert validate_objects([deployment()], "v1.30") == []
    assert [i.level for i in validate_objects([deployment()], "latest")] == ["warning"]


def test_version_changes_what_is_served() -> None:
    # flowcontrol.apiserver.k8s.io/v1beta3 was removed in Kubernetes 1.32
    flow = {"apiVersion": "flowcontrol.apiserver.k8s.io/v1beta3", "kind": "FlowSchema",
            "metadata": {"name": "f"}, "spec": {"priorityLevelConfiguration": {"name": "p"}}}
    assert validate_objects([flow], "1.29") == []
    assert [i.path for i in validate_objects([flow], "1.33")] == ["apiVersion"]


def test_three_hundred_objects_validate_with_one_schema_load() -> None:
    objects = []
    for i in range(300):
        obj = deployment()
        obj["metadata"]["name"] = f"web-{i}"
        objects.append(obj)
    objects[150]["spec"]["replicas"] = "many"
    issues = validate_objects(objects, "1.32")
    assert [(i.name, i.path, i.level) for i in issues] == [("web-150", "spec.replicas", "error")]

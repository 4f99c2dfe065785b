"""Server-side dry-run through the real kubernetes client against a fake API server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakekube import TOKEN, FakeKube
from support import write

from prbot.config import load_config, load_config_file
from prbot.errors import PrbotError
from prbot.kube import (
    ClusterClient,
    ClusterRef,
    clusters_from_env,
    default_retry,
    dry_run_objects,
    load_clusters,
    make_dry_runner,
)
from prbot.plan import DryRun, DryRunError, make_plan
from prbot.render import render_target
from prbot.targets import Target, discover_targets

FAST = default_retry(attempts=3, backoff_factor=0.001, backoff_max=0.01)


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    with FakeKube() as fake:
        yield fake


@pytest.fixture
def cluster(fake_kube: FakeKube, tmp_path: Path) -> ClusterRef:
    return ClusterRef("dev", fake_kube.write_kubeconfig(tmp_path / "kube" / "config"))


@pytest.fixture
def client(cluster: ClusterRef) -> Iterator[ClusterClient]:
    with ClusterClient(cluster, retry=FAST) as c:
        yield c


def configmap(name: str, data: dict[str, str], namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def deployment(name: str, replicas: int, image: str = "registry.example.com/web:1.0.0",
               namespace: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {"app": name}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": name, "image": image}]}}}}


def changed_lines(diff: str) -> list[str]:
    return [line for line in diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def summary(dry_run: DryRun) -> list[tuple[str, str, str | None, str, str]]:
    return [(c.group, c.kind, c.namespace, c.name, c.action) for c in dry_run.changes]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# dry_run_objects
# --------------------------------------------------------------------------------------------

def test_nothing_live_every_object_added_and_nothing_persisted(fake_kube: FakeKube, client: ClusterClient) -> None:
    objects = [deployment("web", 2), configmap("web-config", {"LOG_LEVEL": "info"}),
               {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}]
    result = dry_run_objects(client, objects, default_namespace="demo", ignore=())
    assert result.status == "ok" and result.errors == []
    assert summary(result) == [("", "Namespace", None, "demo", "added"),
                               ("", "ConfigMap", "demo", "web-config", "added"),
                               ("apps", "Deployment", "demo", "web", "added")]
    web = next(c for c in result.changes if c.name == "web")
    assert "+  replicas: 2" in web.diff and "+  namespace: demo" in web.diff
    for noise in ("managedFields", "resourceVersion", "uid:", "creationTimestamp", "generation"):
        assert noise not in web.diff
    # every object went through a server-side apply as the contract says, and none was stored
    applies = fake_kube.applies()
    assert [r.path for r in applies] == ["/apis/apps/v1/namespaces/demo/deployments/web",
                                         "/api/v1/namespaces/demo/configmaps/web-config",
                                         "/api/v1/namespaces/demo"]
    for r in applies:
        assert r.query == {"fieldManager": "prbot", "dryRun": "All", "force": "true"}
        assert r.content_type == "application/apply-patch+yaml"
    assert fake_kube.live("apps/v1", "Deployment", "demo", "web") is None
    assert fake_kube.live("v1", "Namespace", None, "demo") is None


def test_live_object_differs_shows_only_the_real_change(fake_kube: FakeKube, client: ClusterClient) -> None:
    live = deployment("web", 1, namespace="demo")
    live["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"spec":{"replicas":1}}',
        "example.com/build-time": "yesterday"}
    live["spec"]["progressDeadlineSeconds"] = 600          # a server default the manifests leave out
    live["status"] = {"replicas": 1, "readyReplicas": 1}
    fake_kube.seed(live)
    fake_kube.seed(configmap("web-config", {"LOG_LEVEL": "info"}, namespace="demo"))
    before = fake_kube.live("apps/v1", "Deployment", "demo", "web")
    assert before is not None and before["metadata"]["managedFields"]     # the noise is there

    rendered = deployment("web", 3)
    rendered["metadata"]["annotations"] = {"example.com/build-time": "today"}
    result = dry_run_objects(client, [rendered, configmap("web-config", {"LOG_LEVEL": "info"})],
                             default_namespace="demo", ignore=[r"metadata.annotations.example\.com/build-time"])
    assert result.status == "ok"
    [change] = result.changes                      # the ConfigMap is unchanged, so not listed
    assert (change.group, change.kind, change.namespace, change.name, change.action) == (
        "apps", "Deployment", "demo", "web", "changed")
    assert changed_lines(change.diff) == ["-  replicas: 1", "+  replicas: 3"]
    assert change.diff.startswith("--- a/apps/Deployment/demo/web\n+++ b/apps/Deployment/demo/web\n")
    assert fake_kube.live("apps/v1", "Deployment", "demo", "web") == before      # dry-run persisted nothing


def test_refusal_reports_the_api_message_and_other_objects_still_run(fake_kube: FakeKube,
                                                                     client: ClusterClient) -> None:
    fake_kube.refuse("Service", 'Service "web" is invalid: spec.ports[0].port: Invalid value: 0:\n'
                                "  must be between 1 and 65535, inclusive")
    fake_kube.refuse("Deployment", 'deployments.apps "web" is forbidden: User "prbot" cannot patch resource',
                     code=403, reason="Forbidden")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"ports": [{"port": 0}]}}
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "demo"}}
    result = dry_run_objects(client, [service, deployment("web", 1), widget, configmap("cfg", {"a": "b"})],
                             default_namespace="demo", ignore=())
    assert result.status == "failed"
    assert result.errors == [
        DryRunError("", "Service", "demo", "web",
                    'Service "web" is invalid: spec.ports[0].port: Invalid value: 0: '
                    "must be between 1 and 65535, inclusive"),
        DryRunError("apps", "Deployment", "demo", "web",
                    'deployments.apps "web" is forbidden: User "prbot" cannot patch resource'),
        DryRunError("example.com", "Widget", "demo", "w",
                    'no matches for kind "Widget" in version "example.com/v1": '
                    "the cluster does not serve it (is its CRD installed?)"),
    ]
    assert summary(result) == [("", "ConfigMap", "demo", "cfg", "added")]
    assert json.loads(json.dumps(result.to_json()))["status"] == "failed"


@pytest.mark.parametrize("code", [503, 429, 500])
def test_transient_failures_are_retried(fake_kube: FakeKube, client: ClusterClient, code: int) -> None:
    fake_kube.fail("ConfigMap", times=2, code=code)
    result = dry_run_objects(client, [configmap("cfg", {"a": "b"})], default_namespace="demo", ignore=())
    assert result.status == "ok" and summary(result) == [("", "ConfigMap", "demo", "cfg", "added")]
    assert len(fake_kube.applies("ConfigMap")) == 3            # two failures, then the answer


def test_persistent_server_errors_become_a_dry_run_error(fake_kube: FakeKube, client: ClusterClient) -> None:
    fake_kube.fail("ConfigMap", times=100)
    result = dry_run_objects(client, [configmap("cfg", {"a": "b"}), deployment("web", 1)],
                             default_namespace="demo", ignore=())
    assert result.status == "failed"
    [error] = result.errors
    assert (error.kind, error.namespace, error.name) == ("ConfigMap", "demo", "cfg")
    assert error.message == ("the server is currently unable to handle the request "
                             "(HTTP 503, still failing after retries)")
    assert len(fake_kube.applies("ConfigMap")) == 4            # the first try and FAST's three retries
    assert summary(result) == [("apps", "Deployment", "demo", "web", "added")]


def test_unreachable_cluster_fails_every_object_without_raising(tmp_path: Path) -> None:
    kubeconfig = FakeKube().write_kubeconfig(tmp_path / "config", server=f"http://127.0.0.1:{closed_port()}")
    with ClusterClient(ClusterRef("dev", kubeconfig), retry=FAST) as c:
        result = dry_run_objects(c, [configmap("cfg", {"a": "b"}), deployment("web", 1)],
                                 default_namespace="demo", ignore=())
    assert result.status == "failed" and result.changes == []
    assert [(e.kind, e.name) for e in result.errors] == [("ConfigMap", "cfg"), ("Deployment", "web")]
    for error in result.errors:
        assert error.message.startswith("cannot reach the API server http://127.0.0.1:")
        assert "refused" in error.message.lower() and "\n" not in error.message
        assert TOKEN not in error.message


def test_bad_credentials_or_kubeconfig_fail_the_dry_run_not_the_plan(fake_kube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "config")
    kubeconfig.write_text(kubeconfig.read_text().replace(TOKEN, "wrong-token-value"))
    with ClusterClient(ClusterRef("dev", kubeconfig), retry=FAST) as c:
        result = dry_run_objects(c, [configmap("cfg", {"a": "b"})], default_namespace="demo", ignore=())
    assert result.errors == [DryRunError("", "ConfigMap", "demo", "cfg", "discovery failed: Unauthorized")]
    assert fake_kube.applies() == []

    with ClusterClient(ClusterRef("dev", tmp_path / "gone"), retry=FAST) as c:
        result = dry_run_objects(c, [configmap("cfg", {"a": "b"})], default_namespace="demo", ignore=())
    [error] = result.errors
    assert result.status == "failed" and error.message.startswith(f"cannot read {tmp_path / 'gone'}")


def test_secret_values_never_appear(fake_kube: FakeKube, client: ClusterClient,
                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    live_value, new_value, kept_value, echoed = "live-password-1", "new-password-2", "kept-token-3", "echoed-4"
    b64 = {v: base64.b64encode(v.encode()).decode() for v in (live_value, new_value, kept_value, echoed)}
    fake_kube.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {
        "name": "db", "namespace": "demo", "annotations": {
            "kubectl.kubernetes.io/last-applied-configuration":
                json.dumps({"stringData": {"password": live_value}})}},
        "data": {"password": b64[live_value], "token": b64[kept_value]}})
    fake_kube.refuse("Secret", f'Secret "other" is invalid: data[key]: Invalid value: "{echoed}": bad',
                     name="other")
    rendered = [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
         "stringData": {"password": new_value}, "data": {"token": b64[kept_value]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "fresh"}, "data": {"token": b64[new_value]}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other"}, "stringData": {"key": echoed}},
    ]
    result = dry_run_objects(client, rendered, default_namespace="demo", ignore=())
    # the fake echoed the values: they travelled over HTTP, and came back in the answers
    assert any(b64[new_value] in json.dumps(r.body) or new_value in json.dumps(r.body)
               for r in fake_kube.applies("Secret"))
    text = json.dumps(result.to_json()) + caplog.text
    assert 'dry-run refused on Secret demo/other: Secret "other" is invalid' in caplog.text
    for value in (live_value, new_value, kept_value, echoed, *b64.values()):
        assert value not in text
    db = next(c for c in result.changes if c.name == "db")
    assert db.action == "changed"
    assert sorted(changed_lines(db.diff)) == ["+  password: '*** (after)'", "-  password: '*** (before)'"]
    assert "token: '***'" in db.diff
    fresh = next(c for c in result.changes if c.name == "fresh")
    assert fresh.action == "added" and "token: '***'" in fresh.diff
    [error] = result.errors
    assert error.name == "other" and error.message == 'Secret "other" is invalid: data[key]: Invalid value: "***": bad'


def test_namespaces_defaulted_and_dropped_as_discovery_says(fake_kube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "config", namespace="team-a")
    cluster_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "reader", "namespace": "stray"}, "rules": []}
    with ClusterClient(ClusterRef("dev", kubeconfig), retry=FAST) as c:
        result = dry_run_objects(c, [configmap("cfg", {"a": "b"}), configmap("elsewhere", {}, namespace="other"),
                                     cluster_role], default_namespace=None, ignore=())
    assert result.status == "ok"
    assert summary(result) == [("", "ConfigMap", "other", "elsewhere", "added"),
                               ("", "ConfigMap", "team-a", "cfg", "added"),
                               ("rbac.authorization.k8s.io", "ClusterRole", None, "reader", "added")]
    paths = [r.path for r in fake_kube.applies()]
    assert paths == ["/api/v1/namespaces/team-a/configmaps/cfg", "/api/v1/namespaces/other/configmaps/elsewhere",
                     "/apis/rbac.authorization.k8s.io/v1/clusterroles/reader"]
    assert "namespace" not in fake_kube.applies("ClusterRole")[0].body["metadata"]


# --------------------------------------------------------------------------------------------
# PRBOT_CLUSTERS
# --------------------------------------------------------------------------------------------

def two_context_kubeconfig(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("apiVersion: v1\nkind: Config\n"
                    "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
                    "users: [{name: u, user: {token: s3cr3t-token}}]\n"
                    "contexts:\n- {name: dev-admin, context: {cluster: c, user: u}}\n"
                    "- {name: prod-admin, context: {cluster: c, user: u}}\n"
                    "current-context: dev-admin\n")
    return path


def test_load_clusters(tmp_path: Path) -> None:
    kubeconfig = two_context_kubeconfig(tmp_path / "kube" / "dev.kubeconfig")
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(f"# cluster map\ndev: {{kubeconfig: kube/dev.kubeconfig}}\n"
                        f"prod:\n  kubeconfig: {kubeconfig}\n  context: prod-admin\n")
    assert load_clusters(clusters) == {
        "dev": ClusterRef("dev", kubeconfig, None),
        "prod": ClusterRef("prod", kubeconfig, "prod-admin"),
    }
    json_file = tmp_path / "clusters.json"
    json_file.write_text(json.dumps({"dev": {"kubeconfig": str(kubeconfig), "context": "dev-admin"}}))
    assert load_clusters(json_file) == {"dev": ClusterRef("dev", kubeconfig, "dev-admin")}
    assert clusters_from_env({"PRBOT_CLUSTERS": str(json_file)}) == load_clusters(json_file)
    assert clusters_from_env({}) == {}
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert load_clusters(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize(("text", "expected"), [
    ("- dev\n", ":1: expected a mapping of cluster names"),
    ("dev: kube/dev.kubeconfig\n", ":1: dev: expected {kubeconfig: PATH, context: NAME}"),
    ("dev:\n  context: dev-admin\n", ":1: dev.kubeconfig is required"),
    ("dev:\n  kubeconfig: kube/dev.kubeconfig\n  contxt: dev-admin\n",
     ":3: dev: unknown key 'contxt' (did you mean 'context'?)"),
    ("dev:\n  kubeconfig: [a]\n", ":2: dev.kubeconfig must be a path"),
    ("dev:\n  kubeconfig: kube/missing\n", ":2: dev.kubeconfig: "),
    ("dev:\n  kubeconfig: kube/dev.kubeconfig\n  context: staging-admin\n",
     ":3: dev.context: 'staging-admin' is not a context of "),
    ("dev: {kubeconfig: kube/dev.kubeconfig\n", ":2: "),
    ("dev: {kubeconfig: kube/dev.kubeconfig}\ndev: {kubeconfig: kube/dev.kubeconfig}\n", ":2: "),
    ("dev:\n  kubeconfig: kube/broken\n", ":2: dev.kubeconfig: "),
    ("dev:\n  kubeconfig: kube/nocurrent\n", ":2: dev: "),
])
def test_load_clusters_errors(tmp_path: Path, text: str, expected: str) -> None:
    two_context_kubeconfig(tmp_path / "kube" / "dev.kubeconfig")
    write(tmp_path, "kube/broken", "users: [{name: u, user: {token: s3cr3t-token}}\n  - oops: [\n")
    write(tmp_path, "kube/nocurrent", "contexts: [{name: a, context: {}}]\n")
    clusters = write(tmp_path, "clusters.yaml", text)
    with pytest.raises(PrbotError) as err:
        load_clusters(clusters)
    message = str(err.value)
    assert message.startswith(f"{clusters}{expected}")
    assert "\n" not in message and "s3cr3t" not in message


def test_load_clusters_reports_every_problem_count(tmp_path: Path) -> None:
    clusters = write(tmp_path, "clusters.yaml", "dev: {}\nprod: {kubeconfig: nope}\n")
    with pytest.raises(PrbotError, match=r"clusters.yaml:1: dev.kubeconfig is required \(and 1 more\)$"):
        load_clusters(clusters)
    with pytest.raises(PrbotError, match="cannot read the cluster map"):
        load_clusters(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------------------------
# make_dry_runner
# --------------------------------------------------------------------------------------------

CONFIG = """\
version: 1
environments:
  - name: dev
    cluster: dev
  - name: staging
    cluster: staging
  - name: prod
apps:
  - path: "apps/{app}/envs/{env}"
    namespace: "{app}-{env}"
"""


def target(env: str) -> Target:
    return Target(app="web", env=env, path=f"apps/web/envs/{env}", renderer="plain", namespace=f"web-{env}")


def test_dry_runner_only_for_environments_with_a_known_cluster(fake_kube: FakeKube, cluster: ClusterRef) -> None:
    runner = make_dry_runner(load_config(CONFIG), {"dev": cluster}, retry=FAST)
    objects = [configmap("cfg", {"a": "b"})]
    assert runner(target("prod"), objects) is None          # no cluster configured
    assert runner(target("staging"), objects) is None       # cluster not in the map
    assert fake_kube.requests == []
    first = runner(target("dev"), objects)
    second = runner(target("dev"), [deployment("web", 1)])
    assert first is not None and summary(first) == [("", "ConfigMap", "web-dev", "cfg", "added")]
    assert second is not None and summary(second) == [("apps", "Deployment", "web-dev", "web", "added")]
    # one client for the cluster: the server's version is discovered once for both calls
    assert [r.path for r in fake_kube.requests].count("/version") == 1
    runner.close()


# --------------------------------------------------------------------------------------------
# End to end: make_plan with the dry-run against the fake cluster
# --------------------------------------------------------------------------------------------

def test_plan_dry_run_of_a_changed_target(example_repo: Path, fake_kube: FakeKube, cluster: ClusterRef) -> None:
    config = load_config_file(example_repo / ".prbot.yml")
    [shop_dev] = [t for t in discover_targets(config, example_repo) if t.key == "shop/dev"]
    live_objects = render_target(example_repo, shop_dev)
    for obj in live_objects:                              # the cluster runs what main renders
        fake_kube.seed(obj)
    kustomization = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace('newTag: "1.1.0"', 'newTag: "1.2.0"'))

    runner = make_dry_runner(config, {"dev": cluster}, retry=FAST)
    plan = make_plan(example_repo, config, "HEAD", dry_runner=runner)
    data = json.loads(json.dumps(plan.to_json()))
    [t] = data["targets"]
    assert (t["app"], t["env"], t["status"]) == ("shop", "dev", "changed")
    image = "registry.cn-hangzhou.aliyuncs.com/demo/shop"
    dry_run = t["dry_run"]
    assert dry_run["status"] == "ok" and dry_run["errors"] == []
    [change] = dry_run["changes"]
    assert {k: change[k] for k in ("group", "kind", "namespace", "name", "action")} == {
        "group": "apps", "kind": "Deployment", "namespace": "shop-dev", "name": "shop", "action": "changed"}
    assert changed_lines(change["diff"]) == [f"-        image: {image}:1.1.0",
                                             f"+        image: {image}:1.2.0"]
    assert plan.failed is False
    # every rendered object was dry-run applied; the Secret's value never reached the plan
    assert sorted(r.body["kind"] for r in fake_kube.applies()) == sorted(o["kind"] for o in live_objects)
    secret = "example-dev-password"
    assert secret not in json.dumps(data)
    assert base64.b64encode(secret.encode()).decode() not in json.dumps(data)
    runner.close()


def test_plan_without_a_cluster_map_leaves_dry_run_null(example_repo: Path) -> None:
    config = load_config_file(example_repo / ".prbot.yml")
    kustomization = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace('newTag: "1.1.0"', 'newTag: "1.2.0"'))
    plan = make_plan(example_repo, config, "HEAD", dry_runner=make_dry_runner(config, {}))
    assert [t.dry_run for t in plan.targets] == [None]

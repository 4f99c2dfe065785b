"""Object names become URL paths: every name, namespace, apiVersion and kind is checked against
Kubernetes' own rules before a request is made, and each request names exactly one object (or one
collection).  Attack tests: path traversal, subresource injection, query injection, the same tricks
in namespaces, very long names — through the dry-run, the apply, and the client itself, against
the fake API server, which checks names as the real one does and serves `proxy`."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from fakekube import TOKEN, FakeKube
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kubehelp import FAST, configmap, namespace

from prbot.cluster.client import ClusterClient
from prbot.cluster.clusters import ClusterRef
from prbot.cluster.deploy import Deployer
from prbot.cluster.dryrun import dry_run_objects, make_dry_runner
from prbot.cluster.names import check_name, check_namespace, name_rule
from prbot.config import SyncSpec, load_config_file
from prbot.errors import ApiError, InvalidName
from prbot.model import Target
from prbot.plan import DryRun, make_plan
from prbot.render import render_target
from prbot.report import render_markdown
from prbot.targets import discover_targets

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def client(cluster: ClusterRef) -> Iterator[ClusterClient]:
    with ClusterClient(cluster, retry=FAST) as c:
        yield c


@pytest.fixture
def demo(fake_kube: FakeKube) -> str:
    fake_kube.seed(namespace("demo"))
    return "demo"


def obj(api_version: str, kind: str, name: str, ns: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, "data": {"k": "v"}}


def assert_only_plain_requests(fake: FakeKube) -> None:
    """What every attack test asserts of the server: each request was discovery or one object or
    collection of a namespace that is a valid name, never a subresource, never outside a dry-run,
    and nothing reached kube-system."""
    assert fake.strays() == []
    assert fake.subresource_calls == []
    assert fake.touching("kube-system") == []
    for r in fake.requests:
        if r.method != "GET":
            assert r.query.get("dryRun") == "All", r


# --------------------------------------------------------------------------------------------
# The rules, per kind
# --------------------------------------------------------------------------------------------

def test_each_kind_gets_the_api_servers_rule() -> None:
    assert name_rule("", "ConfigMap") == "RFC 1123 subdomain"
    assert name_rule("example.com", "Widget") == "RFC 1123 subdomain"
    assert name_rule("", "Namespace") == "RFC 1123 label"
    assert name_rule("", "Service") == "RFC 1035 label"
    assert name_rule("rbac.authorization.k8s.io", "ClusterRole") == "path segment name"
    check_name("v1", "ConfigMap", "web.config-1")
    check_name("rbac.authorization.k8s.io/v1", "ClusterRole", "system:controller:job-controller")
    check_name("v1", "Service", "web")
    for api_version, kind, name in [("v1", "Service", "1web"), ("v1", "Service", "web.internal"),
                                    ("v1", "Namespace", "a.b"), ("v1", "ConfigMap", "Web"),
                                    ("v1", "ConfigMap", "a" * 254),
                                    ("rbac.authorization.k8s.io/v1", "Role", ".."),
                                    ("rbac.authorization.k8s.io/v1", "Role", "a/b"),
                                    ("rbac.authorization.k8s.io/v1", "Role", "a%2Fb")]:
        with pytest.raises(InvalidName):
            check_name(api_version, kind, name)
    with pytest.raises(InvalidName) as err:
        check_namespace("a" * 64)
    assert err.value.message == ('namespace "' + "a" * 64 + '" is not valid (a namespace name is an RFC 1123 label): '
                                 "it is 64 characters long, at most 63 are allowed: not sent to the cluster")


def test_a_refusal_message_is_one_line_and_bounded() -> None:
    with pytest.raises(InvalidName) as err:
        check_name("v1", "ConfigMap", "x\r\nX-Injected: 1" + "y" * 5000)
    message = err.value.message
    assert "\n" not in message and "\r" not in message and len(message) < 400
    assert message.startswith('ConfigMap name "x\\r\\nX-Injected: 1yyy')
    assert "(5016 characters)" in message


# --------------------------------------------------------------------------------------------
# The dry-run: one attack per class, each beside a good object that is still dry-run
# --------------------------------------------------------------------------------------------

HOSTILE = {
    "path traversal": obj("v1", "ConfigMap", "../../kube-system/configmaps/cluster-info"),
    "subresource proxy": obj("v1", "Service", "admin:8080/proxy/api/reset"),
    "subresource exec": obj("v1", "Pod", "web/exec"),
    "query ?": obj("v1", "ConfigMap", "cfg?dryRun=false"),
    "query #": obj("v1", "ConfigMap", "cfg#"),
    "encoded slash": obj("v1", "ConfigMap", "..%2F..%2Fkube-system%2Fconfigmaps%2Fcluster-info"),
    "encoded query": obj("v1", "ConfigMap", "cfg%3FdryRun%3Dfalse"),
    "namespace traversal": obj("v1", "ConfigMap", "cfg", "demo/../../kube-system"),
    "namespace subresource": obj("v1", "ConfigMap", "cfg", "demo/services/admin:8080/proxy"),
    "namespace query": obj("v1", "ConfigMap", "cfg", "demo?dryRun=false"),
    "namespace dot-dot": obj("v1", "ConfigMap", "cfg", ".."),
    "very long name": obj("v1", "ConfigMap", "a" * 254),
    "very long dotted name": obj("v1", "ConfigMap", "a." * 200 + "a"),
    "very long namespace": obj("v1", "ConfigMap", "cfg", "d" * 64),
    "apiVersion traversal": obj("v1/../../api/v1/namespaces/kube-system/secrets", "Secret", "x"),
    "RBAC dot-dot": obj("rbac.authorization.k8s.io/v1", "Role", ".."),
    "header injection": obj("v1", "ConfigMap", "cfg\r\nX-Injected: 1"),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE))
def test_a_hostile_name_fails_its_object_before_any_request(fake_kube: FakeKube, client: ClusterClient, demo: str,
                                                            attack: str) -> None:
    fake_kube.seed(configmap("cluster-info", {"kubeconfig": "real"}, namespace="kube-system"))
    dry = dry_run_objects(client, [HOSTILE[attack], configmap("good", {"a": "b"})], namespace="demo", base=[])
    assert dry.status == "failed"
    [error] = dry.errors
    assert "not valid" in error.message and error.message.endswith("not sent to the cluster")
    assert "\n" not in error.message and len(error.message) < 400
    assert [(c.kind, c.namespace, c.name, c.action) for c in dry.changes] == [("ConfigMap", "demo", "good", "added")]
    assert_only_plain_requests(fake_kube)
    assert [r.segments[-1] for r in fake_kube.requests if r.method != "GET"] == ["good"]
    live = fake_kube.live("v1", "ConfigMap", "kube-system", "cluster-info")
    assert live is not None and live["data"] == {"kubeconfig": "real"}


def test_the_traversal_of_the_issue_names_the_rule_it_breaks(fake_kube: FakeKube, client: ClusterClient,
                                                             demo: str) -> None:
    dry = dry_run_objects(client, [HOSTILE["path traversal"]], namespace="demo", base=[])
    [error] = dry.errors
    assert error.message == ('ConfigMap name "../../kube-system/configmaps/cluster-info" is not valid (a ConfigMap '
                             "name is an RFC 1123 subdomain): an RFC 1123 subdomain has lowercase letters, digits, "
                             "'-' and '.', starting and ending with a letter or digit: not sent to the cluster")
    assert [r for r in fake_kube.requests if r.method != "GET"] == []
    assert_only_plain_requests(fake_kube)


def test_a_namespace_trick_in_the_targets_own_namespace_fails_every_namespaced_object(
        fake_kube: FakeKube, client: ClusterClient) -> None:
    dry = dry_run_objects(client, [configmap("a", {}), configmap("b", {})], namespace="demo/../kube-system",
                          base=[])
    assert dry.status == "failed" and len(dry.errors) == 2 and dry.changes == []
    assert all(e.message.startswith('namespace "demo/../kube-system" is not valid (a namespace name is')
               for e in dry.errors)
    assert_only_plain_requests(fake_kube)


def test_a_huge_name_is_cut_in_the_report(fake_kube: FakeKube, client: ClusterClient, demo: str) -> None:
    dry = dry_run_objects(client, [obj("v1", "ConfigMap", "x" * 100_000)], namespace="demo", base=[])
    [error] = dry.errors
    assert len(error.name) <= 254 and len(error.message) < 400
    assert_only_plain_requests(fake_kube)


def test_a_role_name_the_api_allows_stays_one_segment_and_the_query_stays(fake_kube: FakeKube,
                                                                           client: ClusterClient, demo: str) -> None:
    """The variant: RBAC names are path segments, so `?`, `#` and `:` are valid in them — the client
    must encode them, so the name is the last segment and `dryRun=All` still is the query."""
    name = "reader?dryRun=false&force=false#x:y"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": name},
            "rules": []}
    dry = dry_run_objects(client, [role], namespace="demo", base=[])
    assert dry.errors == [] and [(c.name, c.action) for c in dry.changes] == [(name, "added")]
    [apply] = fake_kube.applies("Role")
    assert apply.segments == ("apis", "rbac.authorization.k8s.io", "v1", "namespaces", "demo", "roles", name)
    assert apply.query == {"fieldManager": "prbot", "force": "true", "dryRun": "All"}
    assert fake_kube.objects("Role") == []                            # a dry-run: nothing persisted
    assert_only_plain_requests(fake_kube)


# --------------------------------------------------------------------------------------------
# The plan: the hostile target fails with a clear message, the others are still planned
# --------------------------------------------------------------------------------------------

def test_plan_with_hostile_names_fails_that_target_only(example_repo: Path, fake_kube: FakeKube,
                                                       cluster: ClusterRef) -> None:
    config = load_config_file(example_repo / ".prbot.yml")
    targets = {t.key: t for t in discover_targets(config, example_repo)}
    fake_kube.seed(namespace("worker-dev"))
    for key in ("shop/dev", "worker/dev"):
        for live in render_target(example_repo, targets[key]):
            fake_kube.seed({**live, "metadata": {"namespace": targets[key].namespace, **live["metadata"]}})
    fake_kube.seed(configmap("cluster-info", {"kubeconfig": "real"}, namespace="kube-system"))
    (example_repo / "apps/worker/envs/dev/hostile.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ../../kube-system/configmaps/cluster-info\n"
        "data:\n  a: b\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: admin:8080/proxy/api/reset\n"
        "spec:\n  ports: [{port: 80}]\n")
    kustomization = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace('newTag: "1.1.0"', 'newTag: "1.2.0"'))
    runner = make_dry_runner(config, {"dev": cluster}, retry=FAST)
    plan = make_plan(example_repo, config, "HEAD", dry_runner=runner, untracked=True)   # hostile.yaml is new
    runner.close()
    by_key = {f"{t.app}/{t.env}": t for t in plan.targets}
    worker, shop = by_key["worker/dev"].dry_run, by_key["shop/dev"].dry_run
    assert isinstance(worker, DryRun) and isinstance(shop, DryRun)
    assert worker.status == "failed", worker.errors
    assert sorted((e.kind, e.name) for e in worker.errors) == [
        ("ConfigMap", "../../kube-system/configmaps/cluster-info"), ("Service", "admin:8080/proxy/api/reset")]
    assert all("is not valid" in e.message for e in worker.errors)
    assert shop.status == "ok" and [c.name for c in shop.changes] == ["shop"]
    assert_only_plain_requests(fake_kube)
    comment = "\n".join(render_markdown(plan))
    assert "internal data" not in comment and "not sent to the cluster" in comment


# --------------------------------------------------------------------------------------------
# The apply (deploy): refused before any write
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("hostile", [
    obj("v1", "ConfigMap", "../../kube-system/configmaps/cluster-info"),
    obj("v1", "Service", "admin:8080/proxy/api/reset"),
    obj("v1", "ConfigMap", "cfg", "shop-dev/../kube-system"),
    obj("v1", "ConfigMap", "cfg?dryRun=All"),
], ids=["traversal", "proxy", "namespace", "query"])
def test_apply_of_a_hostile_name_fails_before_any_write(fake_kube: FakeKube, cluster: ClusterRef,
                                                        hostile: dict[str, Any]) -> None:
    shop = Target(app="shop", env="dev", path="apps/shop/envs/dev", renderer="kustomize", namespace="shop-dev")
    deployer = Deployer({"dev": cluster}, retry=FAST)
    try:
        _, progress = deployer.start("dev", shop, SyncSpec("apply", {"prune": True}), SHA,
                                     objects=[namespace("shop-dev"), configmap("settings", {}), hostile])
    finally:
        deployer.close()
    assert progress.state == "failed"
    assert "is not valid" in progress.reason and progress.reason.endswith("not sent to the cluster")
    assert [r for r in fake_kube.requests if r.method != "GET"] == []       # nothing written at all
    assert fake_kube.strays() == [] and fake_kube.subresource_calls == []


# --------------------------------------------------------------------------------------------
# The client: every verb checks, and a body cannot disagree with the path
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../secrets/x", "web/proxy", "x/exec", "a?b", "a#b", "a%2Fb", ".", "A" * 300])
def test_every_verb_refuses_a_bad_name_without_a_request(fake_kube: FakeKube, client: ClusterClient,
                                                         name: str) -> None:
    client.resource("v1", "ConfigMap")                    # discovery out of the way
    before = len(fake_kube.requests)
    calls = [lambda: client.get("v1", "ConfigMap", name, "default"),
             lambda: client.patch("v1", "ConfigMap", name, "default", {"data": {}}),
             lambda: client.delete("v1", "ConfigMap", name, "default"),
             lambda: client.apply(configmap(name, {}), namespace="default", dry_run=True),
             lambda: client.get("v1", "ConfigMap", "ok", name.lower()),
             lambda: client.list("v1", "ConfigMap", namespace=name.lower())]
    for call in calls:
        with pytest.raises(InvalidName):
            call()
    assert fake_kube.requests[before:] == []


def test_a_body_whose_namespace_disagrees_with_the_request_is_not_sent(fake_kube: FakeKube,
                                                                       client: ClusterClient, demo: str) -> None:
    client.check()
    before = len(fake_kube.requests)
    with pytest.raises(InvalidName) as err:
        client.apply(configmap("cfg", {}, namespace="kube-system"), namespace="demo", dry_run=True)
    assert "is not the namespace it is sent to (demo)" in err.value.message
    with pytest.raises(InvalidName):
        client.apply(obj("v1//", "ConfigMap", "cfg"), namespace="demo", dry_run=True)
    assert [r for r in fake_kube.requests[before:] if r.method != "GET"] == []


# --------------------------------------------------------------------------------------------
# The property: whatever the name, a request path is /api(s)/…/namespaces/<ns>/<plural>/<name>
# --------------------------------------------------------------------------------------------

_TRICKY = "abz09-.:/?#%&=;@+ \t\r\n\x00~ÄЖ😀AZ"
NAMES = st.one_of(st.text(alphabet=_TRICKY, min_size=0, max_size=20),
                  st.text(alphabet="az09-.:?#&= ", min_size=1, max_size=12),        # mostly valid path segments
                  st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?", fullmatch=True),
                  st.sampled_from(["..", ".", "%2e%2e", "a/..", "x/proxy", "x/exec", "a?dryRun=false", "a" * 254,
                                   "a" * 253, "%3F", "system:controller:x"]))
KINDS = st.sampled_from([("v1", "ConfigMap", "configmaps"), ("v1", "Service", "services"),
                         ("rbac.authorization.k8s.io/v1", "Role", "roles"),
                         ("apps/v1", "Deployment", "deployments")])


def test_property_a_request_names_exactly_one_object(tmp_path: Path) -> None:
    with FakeKube(operators=False) as fake:
        ref = ClusterRef("dev", fake.write_kubeconfig(tmp_path / "config"))
        with ClusterClient(ref, retry=FAST) as client:
            client.check()
            for api_version, kind, _ in [("v1", "ConfigMap", ""), ("v1", "Service", ""),
                                         ("rbac.authorization.k8s.io/v1", "Role", ""), ("apps/v1", "Deployment", "")]:
                client.resource(api_version, kind)            # discovery out of the way

            @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
            @example(name="a?dryRun=false", ns="default", kind=("rbac.authorization.k8s.io/v1", "Role", "roles"),
                     verb="apply")
            @example(name="\U0001f600", ns="default", kind=("rbac.authorization.k8s.io/v1", "Role", "roles"),
                     verb="apply")
            @given(name=NAMES, ns=st.one_of(st.just("default"), NAMES), kind=KINDS,
                   verb=st.sampled_from(["get", "apply", "delete"]))
            def check(name: str, ns: str, kind: tuple[str, str, str], verb: str) -> None:
                api_version, kind_name, plural = kind
                before = len(fake.requests)
                try:
                    if verb == "get":
                        client.get(api_version, kind_name, name, ns)
                    elif verb == "delete":
                        client.delete(api_version, kind_name, name, ns, dry_run=True)
                    else:
                        client.apply(obj(api_version, kind_name, name), namespace=ns, dry_run=True)
                except InvalidName:
                    assert fake.requests[before:] == []          # refused: nothing was sent
                    return
                except ApiError as e:                            # the API's own refusal (no such namespace)
                    assert e.status == 404, e.message
                [sent] = fake.requests[before:]
                prefix = ("api", "v1") if api_version == "v1" else ("apis", *api_version.split("/"))
                assert sent.segments == (*prefix, "namespaces", ns, plural, name)
                query = parse_qs(sent.raw_query, keep_blank_values=True)
                if verb == "get":
                    assert query == {}
                else:
                    assert query["dryRun"] == ["All"] and set(query) <= {"dryRun", "fieldManager", "force",
                                                                          "propagationPolicy"}
                    assert all(len(values) == 1 for values in query.values())
                check_namespace(ns)                               # only validated parts were sent
                check_name(api_version, kind_name, name)

            check()
    assert fake.subresource_calls == []


# --------------------------------------------------------------------------------------------
# The fake API behaves as the real one where it matters here
# --------------------------------------------------------------------------------------------

def _send(fake: FakeKube, method: str, path: str, body: dict[str, Any] | None = None,
          content_type: str = "application/apply-patch+yaml") -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(fake.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_fake_rejects_invalid_names_and_bodies_that_disagree_with_the_path(fake_kube: FakeKube) -> None:
    apply = "/api/v1/namespaces/default/configmaps/{}?fieldManager=prbot"
    code, answer = _send(fake_kube, "PATCH", apply.format("Bad_Name"), configmap("Bad_Name", {}))
    assert (code, answer["reason"]) == (422, "Invalid") and "RFC 1123 subdomain" in answer["message"]
    code, answer = _send(fake_kube, "PATCH", apply.format("a%25b"), configmap("a%b", {}))
    assert (code, answer["reason"]) == (400, "BadRequest")
    code, answer = _send(fake_kube, "PATCH", apply.format("one"), configmap("two", {}))
    assert (code, answer["message"]) == (400, "the name of the object does not match the name on the URL")
    code, answer = _send(fake_kube, "PATCH", apply.format("one"), configmap("one", {}, namespace="kube-system"))
    assert code == 400 and "namespace of the provided object does not match" in answer["message"]
    code, answer = _send(fake_kube, "GET", "/api/v1/namespaces/Not_A_Label/configmaps")
    assert code == 400
    code, answer = _send(fake_kube, "PATCH", "/api/v1/namespaces/default/services/1web?fieldManager=prbot",
                         {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "1web"}})
    assert code == 422 and "DNS-1035" in answer["message"]
    # a path-encoded slash is a slash to the API server: it names another path
    code, _ = _send(fake_kube, "GET", "/api/v1/namespaces/default/configmaps/x%2Fproxy")
    assert code == 404
    assert fake_kube.objects("ConfigMap") == []


def test_the_fake_serves_proxy_and_fails_the_test_that_calls_it(tmp_path: Path) -> None:
    fake = FakeKube().start()
    code, answer = _send(fake, "GET", "/api/v1/namespaces/default/services/admin:8080/proxy/api/reset")
    assert (code, answer["proxied"]) == (200, "api/reset")
    code, answer = _send(fake, "POST", "/api/v1/namespaces/default/pods/web/exec", {})
    assert code == 400
    assert [r.path for r in fake.subresource_calls] == [
        "/api/v1/namespaces/default/services/admin:8080/proxy/api/reset", "/api/v1/namespaces/default/pods/web/exec"]
    with pytest.raises(AssertionError, match="subresource requests prbot must never make"):
        fake.__exit__(None, None, None)


def test_a_sync_subject_named_by_a_hostile_app_directory_is_not_requested(fake_kube: FakeKube,
                                                                          cluster: ClusterRef) -> None:
    """A PR can add an app directory, and its name fills `{app}` in the Argo CD Application's name."""
    hostile = Target(app="x/proxy/api", env="dev", path="apps/x/envs/dev", renderer="plain", namespace="x-dev")
    deployer = Deployer({"dev": cluster}, retry=FAST)
    try:
        _, progress = deployer.start("dev", hostile, SyncSpec("argocd", {"application": "{app}-{env}",
                                                                         "namespace": "argocd"}), SHA)
    finally:
        deployer.close()
    assert progress.state == "failed"
    assert progress.reason.startswith('Application name "x/proxy/api-dev" is not valid')
    assert [r for r in fake_kube.requests if r.method != "GET"] == []
    assert fake_kube.strays() == [] and fake_kube.subresource_calls == []

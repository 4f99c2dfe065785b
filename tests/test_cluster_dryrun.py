"""Server-side dry-run through the real kubernetes client against the fake API server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakekube import TOKEN, FakeKube
from kubehelp import (
    FAST,
    black_hole,
    changed_lines,
    closed_port,
    configmap,
    deployment,
    namespace,
    secret,
    summary,
    widget,
    widget_crd,
)
from support import commit_all, git

from prbot.cluster.client import ClusterClient
from prbot.cluster.clusters import ClusterMap, ClusterRef
from prbot.cluster.dryrun import RequestBudget, dry_run_objects, make_dry_runner
from prbot.config import load_config, load_config_file
from prbot.errors import RequestBudgetSpent
from prbot.model import Target
from prbot.plan import DryRun, DryRunError, make_plan
from prbot.render import render_target
from prbot.report import render_markdown
from prbot.targets import discover_targets


@pytest.fixture
def client(cluster: ClusterRef) -> Iterator[ClusterClient]:
    with ClusterClient(cluster, retry=FAST) as c:
        yield c


@pytest.fixture
def demo(fake_kube: FakeKube) -> str:
    """The namespace "demo" exists on the cluster."""
    fake_kube.seed(namespace("demo"))
    return "demo"


def run(client: ClusterClient, objects: list[dict[str, Any]], *, ns: str | None = "demo",
        base: list[dict[str, Any]] | None = None, ignore: tuple[str, ...] = ()) -> DryRun:
    return dry_run_objects(client, objects, namespace=ns, base=base or [], ignore=ignore)


# --------------------------------------------------------------------------------------------
# The dry-run of owned objects
# --------------------------------------------------------------------------------------------

def test_nothing_live_every_object_added_and_nothing_persisted(fake_kube: FakeKube, client: ClusterClient,
                                                               demo: str) -> None:
    objects = [deployment("web", 2), configmap("web-config", {"LOG_LEVEL": "info"}), namespace("demo")]
    result = run(client, objects)
    assert result.status == "ok" and result.errors == [] and result.skipped == []
    assert summary(result) == [("", "ConfigMap", "demo", "web-config", "added"),
                               ("apps", "Deployment", "demo", "web", "added")]          # the Namespace is live
    web = next(c for c in result.changes if c.name == "web")
    assert "+  replicas: 2" in web.diff and "+  namespace: demo" in web.diff
    for noise in ("managedFields", "resourceVersion", "uid:", "creationTimestamp", "generation"):
        assert noise not in web.diff
    # every object went through a server-side apply as the contract says (Namespaces first), none stored
    applies = fake_kube.applies()
    assert [r.path for r in applies] == ["/api/v1/namespaces/demo",
                                         "/api/v1/namespaces/demo/configmaps/web-config",
                                         "/apis/apps/v1/namespaces/demo/deployments/web"]
    for r in applies:
        assert r.query == {"fieldManager": "prbot", "dryRun": "All", "force": "true"}
        assert r.content_type == "application/apply-patch+yaml"
    assert fake_kube.live("apps/v1", "Deployment", "demo", "web") is None


def test_live_object_differs_shows_only_the_real_change(fake_kube: FakeKube, client: ClusterClient,
                                                        demo: str) -> None:
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
    result = run(client, [rendered, configmap("web-config", {"LOG_LEVEL": "info"})],
                 ignore=(r"metadata.annotations.example\.com/build-time",))
    assert result.status == "ok"
    [change] = result.changes                      # the ConfigMap is unchanged, so not listed
    assert (change.group, change.kind, change.namespace, change.name, change.action) == (
        "apps", "Deployment", "demo", "web", "changed")
    assert changed_lines(change.diff) == ["-  replicas: 1", "+  replicas: 3"]
    assert change.diff.startswith("--- a/apps/Deployment/demo/web\n+++ b/apps/Deployment/demo/web\n")
    assert fake_kube.live("apps/v1", "Deployment", "demo", "web") == before      # dry-run persisted nothing


def test_refusal_reports_the_api_message_and_other_objects_still_run(fake_kube: FakeKube, client: ClusterClient,
                                                                     demo: str) -> None:
    fake_kube.refuse("Service", 'Service "web" is invalid: spec.ports[0].port: Invalid value: 0:\n'
                                "  must be between 1 and 65535, inclusive")
    fake_kube.refuse("Deployment", 'deployments.apps "web" is forbidden: User "prbot" cannot patch resource',
                     code=403, reason="Forbidden")
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"ports": [{"port": 0}]}}
    result = run(client, [service, deployment("web", 1), widget("w", "demo"), configmap("cfg", {"a": "b"})])
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
def test_transient_failures_are_retried(fake_kube: FakeKube, client: ClusterClient, demo: str, code: int) -> None:
    fake_kube.fail("ConfigMap", times=2, code=code)
    result = run(client, [configmap("cfg", {"a": "b"})])
    assert result.status == "ok" and summary(result) == [("", "ConfigMap", "demo", "cfg", "added")]
    assert len(fake_kube.applies("ConfigMap")) == 3            # two failures, then the answer


def test_persistent_server_errors_become_a_dry_run_error(fake_kube: FakeKube, client: ClusterClient,
                                                         demo: str) -> None:
    fake_kube.fail("ConfigMap", times=100)
    result = run(client, [configmap("cfg", {"a": "b"}), deployment("web", 1)])
    assert result.status == "failed"
    [error] = result.errors
    assert (error.kind, error.namespace, error.name) == ("ConfigMap", "demo", "cfg")
    assert error.message == ("the server is currently unable to handle the request "
                             "(HTTP 503, still failing after retries)")
    assert len(fake_kube.applies("ConfigMap")) == 4            # the first try and FAST's three retries
    assert summary(result) == [("apps", "Deployment", "demo", "web", "added")]


def test_namespaces_defaulted_and_dropped_as_discovery_says(fake_kube: FakeKube, tmp_path: Path) -> None:
    fake_kube.seed(namespace("team-a"))
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "config", namespace="team-a")
    cluster_role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "reader", "namespace": "stray"}, "rules": []}
    base = [configmap("cfg", {}), cluster_role]        # the target had these at base: team-a and the role
    with ClusterClient(ClusterRef("dev", kubeconfig), retry=FAST) as c:
        result = run(c, [configmap("cfg", {"a": "b"}), cluster_role], ns=None, base=base)
    assert result.status == "ok"
    assert summary(result) == [("", "ConfigMap", "team-a", "cfg", "added"),
                               ("rbac.authorization.k8s.io", "ClusterRole", None, "reader", "added")]
    assert [r.path for r in fake_kube.applies()] == ["/api/v1/namespaces/team-a/configmaps/cfg",
                                                     "/apis/rbac.authorization.k8s.io/v1/clusterroles/reader"]
    assert "namespace" not in fake_kube.applies("ClusterRole")[0].body["metadata"]


# --------------------------------------------------------------------------------------------
# Attacks: the dry-run reads only what the target owns
# --------------------------------------------------------------------------------------------

def other_team(fake: FakeKube) -> None:
    fake.seed(configmap("db", {"host": "db.internal", "password": "hunter2-other-team"}, namespace="other-team"))
    fake.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "other-team"},
               "data": {"password": base64.b64encode(b"s3cret-other-team").decode()}})


def test_an_object_in_another_teams_namespace_is_refused_before_any_request(fake_kube: FakeKube,
                                                                            client: ClusterClient) -> None:
    other_team(fake_kube)
    fake_kube.seed(namespace("shop-dev"))
    attack = [configmap("db", {"host": "db.internal", "password": "guess"}, namespace="other-team"),
              secret("db", {"password": "guess"}, namespace="other-team"),
              deployment("web", 1, namespace="other-team"),
              deployment("web", 1)]                                 # the target's own, in shop-dev
    base = [deployment("web", 1)]
    result = run(client, attack, ns="shop-dev", base=base)
    assert fake_kube.touching("other-team") == []                   # not one request named it
    assert result.status == "failed"
    refused = {(e.kind, e.namespace, e.name) for e in result.errors}
    assert refused == {("ConfigMap", "other-team", "db"), ("Secret", "other-team", "db"),
                       ("Deployment", "other-team", "web")}
    assert {e.message for e in result.errors} == {
        "namespace other-team is not owned by this target (its namespace in .prbot.yml, or a namespace it "
        "rendered at base): not sent to the cluster"}
    assert summary(result) == [("apps", "Deployment", "shop-dev", "web", "added")]
    text = json.dumps(result.to_json())
    for leaked in ("hunter2-other-team", "db.internal\\n", "s3cret-other-team",
                   base64.b64encode(b"s3cret-other-team").decode()):
        assert leaked not in text
    # the comment names the reason once, with the objects it concerns
    [comment] = render_markdown(_plan_with(result))
    assert comment.count("is not owned by this target") == 1


def test_a_pr_cannot_widen_what_the_target_owns(fake_kube: FakeKube, client: ClusterClient) -> None:
    """A PR adding a Namespace object, or moving the target's objects, owns nothing new."""
    other_team(fake_kube)
    fake_kube.seed(namespace("shop-dev"))
    base = [configmap("settings", {"a": "b"})]                           # shop-dev only
    attack = [namespace("other-team"), configmap("db", {"password": "x"}, namespace="other-team"),
              namespace("kube-system"), configmap("cfg", {"a": "b"}, namespace="kube-system")]
    result = run(client, attack, ns="shop-dev", base=base)
    assert fake_kube.touching("other-team") == [] and fake_kube.touching("kube-system") == []
    assert fake_kube.applies() == []
    assert result.changes == [] and "hunter2" not in json.dumps(result.to_json())
    notes = {(e.kind, e.namespace, e.name): e.message for e in result.skipped}
    assert notes[("ConfigMap", "other-team", "db")] == notes[("Namespace", None, "other-team")] == (
        "would be created: namespace other-team is new in this change (not sent to the cluster)")

    # the base's own namespaces are owned, the configured one too; one the head adds is not
    base = [configmap("settings", {}, namespace="legacy")]
    fake_kube.seed(namespace("legacy"))
    result = run(client, [configmap("settings", {"a": "c"}, namespace="legacy"),
                          configmap("x", {}, namespace="newer")], ns="shop-dev", base=base)
    assert summary(result) == [("", "ConfigMap", "legacy", "settings", "added")]
    assert [(e.namespace, e.name) for e in result.errors] == [("newer", "x")]
    assert fake_kube.touching("newer") == []


def test_context_lines_never_show_another_teams_object(fake_kube: FakeKube, client: ClusterClient) -> None:
    """Even a ConfigMap named like another team's, in the target's own namespace, diffs against the
    target's namespace only — the other team's live object is never read."""
    other_team(fake_kube)
    fake_kube.seed(namespace("shop-dev"))
    result = run(client, [configmap("db", {"host": "db.internal"})], ns="shop-dev", base=[configmap("x", {})])
    [change] = result.changes
    assert change.action == "added" and "hunter2" not in change.diff
    assert all("/namespaces/other-team" not in r.path for r in fake_kube.requests)


def test_cluster_scoped_objects_are_dry_run_only_when_the_target_had_them_at_base(
        fake_kube: FakeKube, client: ClusterClient, demo: str) -> None:
    fake_kube.seed({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "cluster-admin"}, "rules": [{"verbs": ["*"], "resources": ["*"],
                                                                      "apiGroups": ["*"]}]})
    mine = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "shop-reader"},
            "rules": [{"verbs": ["get"], "resources": ["pods"], "apiGroups": [""]}]}
    guess = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "cluster-admin"},
             "rules": []}
    result = run(client, [mine, guess], base=[mine])
    assert summary(result) == [("rbac.authorization.k8s.io", "ClusterRole", None, "shop-reader", "added")]
    [note] = result.skipped
    assert (note.kind, note.name) == ("ClusterRole", "cluster-admin")
    assert note.message.startswith("cluster-scoped and new in this target: not sent to the cluster")
    assert not any("cluster-admin" in r.path for r in fake_kube.requests)
    assert result.status == "ok"


def test_a_guessed_secret_shows_the_same_whether_the_guess_is_right_or_wrong(fake_kube: FakeKube,
                                                                            client: ClusterClient, demo: str) -> None:
    fake_kube.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "demo"},
                    "data": {"password": base64.b64encode(b"the-real-password").decode()}})
    base = [configmap("x", {})]
    right = run(client, [secret("db", {"password": "the-real-password"})], base=base)
    wrong = run(client, [secret("db", {"password": "a-wrong-guess"})], base=base)
    assert right.to_json() == wrong.to_json()
    assert "the-real-password" not in json.dumps(right.to_json())
    # a new key still shows (its name, never a value), the same either way
    right = run(client, [secret("db", {"password": "the-real-password", "user": "admin"})], base=base)
    wrong = run(client, [secret("db", {"password": "nope", "user": "admin"})], base=base)
    assert right.to_json() == wrong.to_json()
    [change] = right.changes
    assert changed_lines(change.diff) == ["+  user: '***'"]


def test_secret_values_never_appear(fake_kube: FakeKube, client: ClusterClient, demo: str,
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
    result = run(client, rendered)
    # the values travelled over HTTP to the fake, and came back in its answers
    assert any(b64[new_value] in json.dumps(r.body) or new_value in json.dumps(r.body)
               for r in fake_kube.applies("Secret"))
    text = json.dumps(result.to_json()) + caplog.text
    assert 'dry-run refused on Secret demo/other: Secret "other" is invalid' in caplog.text
    for value in (live_value, new_value, kept_value, echoed, *b64.values()):
        assert value not in text
    fresh = next(c for c in result.changes if c.name == "fresh")
    assert fresh.action == "added" and "token: '***'" in fresh.diff
    [error] = result.errors
    assert error.name == "other" and error.message == 'Secret "other" is invalid: data[key]: Invalid value: "***": bad'


# --------------------------------------------------------------------------------------------
# Namespaces the change creates, CRDs the change adds
# --------------------------------------------------------------------------------------------

def test_objects_in_a_namespace_the_change_creates_would_be_created(fake_kube: FakeKube,
                                                                    client: ClusterClient) -> None:
    """The target's namespace is rendered but not live yet: no NotFound refusal per object."""
    objects = [namespace("shop-preview"), deployment("web", 1), configmap("cfg", {"a": "b"})]
    result = run(client, objects, ns="shop-preview")
    assert result.status == "ok" and result.errors == []
    assert summary(result) == [("", "Namespace", None, "shop-preview", "added")]
    assert sorted((e.kind, e.namespace) for e in result.skipped) == [("ConfigMap", "shop-preview"),
                                                                     ("Deployment", "shop-preview")]
    assert {e.message for e in result.skipped} == {
        "would be created: namespace shop-preview does not exist yet, this change creates it"}
    assert [r.path for r in fake_kube.applies()] == ["/api/v1/namespaces/shop-preview"]
    # without the Namespace object, a missing namespace is a real refusal by the API
    result = run(client, [deployment("web", 1)], ns="gone")
    [error] = result.errors
    assert error.message == 'namespaces "gone" not found'


def test_custom_resources_whose_crd_the_change_adds_are_not_refused(fake_kube: FakeKube, client: ClusterClient,
                                                                    demo: str) -> None:
    result = run(client, [widget_crd(), widget("w")])
    assert result.status == "ok" and result.errors == []
    notes = {e.kind: e.message for e in result.skipped}
    assert notes["Widget"] == ("would be created with the CustomResourceDefinition widgets.example.com, which the "
                               "cluster does not serve yet")
    assert notes["CustomResourceDefinition"].startswith("cluster-scoped and new in this target")
    # the CRD rendered at base too: it is dry-run; its custom resources still wait for it
    result = run(client, [widget_crd(), widget("w")], base=[widget_crd()])
    assert summary(result) == [("apiextensions.k8s.io", "CustomResourceDefinition", None, "widgets.example.com",
                                "added")]
    assert [e.kind for e in result.skipped] == ["Widget"]
    assert not any(r.path.startswith("/apis/example.com/v1/") for r in fake_kube.requests)
    # once the CRD is live the custom resources are dry-run as any object
    fake_kube.seed(widget_crd())
    with ClusterClient(client.ref, retry=FAST) as fresh:
        result = run(fresh, [widget_crd(), widget("w")], base=[widget_crd()])
    assert ("example.com", "Widget", "demo", "w", "added") in summary(result)


# --------------------------------------------------------------------------------------------
# An unusable cluster: one line per cluster, quickly, nothing on stderr
# --------------------------------------------------------------------------------------------

def _unreachable(tmp_path: Path, server: str, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
                 timeout: tuple[float, float] | None = None) -> tuple[list[DryRun | None], float]:
    kubeconfig = FakeKube(operators=False).write_kubeconfig(tmp_path / "config", server=server)
    config = load_config(CONFIG)
    kwargs: dict[str, Any] = {"timeout": timeout} if timeout else {}
    runner = make_dry_runner(config, {"dev": ClusterRef("dev", kubeconfig)}, **kwargs)
    started = time.monotonic()
    try:
        results = [runner(target("dev", app), [configmap("cfg", {"a": "b"}), deployment("web", 1)], [])
                   for app in ("web", "api", "db")]
    finally:
        runner.close()
    return results, time.monotonic() - started


def _one_line_each(results: list[DryRun | None], expected: str) -> None:
    for result in results:
        assert result is not None and result.status == "failed" and result.changes == []
        [error] = result.errors
        assert (error.kind, error.name) == ("", "")
        assert error.message.startswith("cluster dev: cannot reach the API server http://127.0.0.1:")
        assert error.message.endswith(expected) and "\n" not in error.message and TOKEN not in error.message
        assert "hTTP" not in error.message and "object at 0x" not in error.message


def test_a_closed_port_fails_at_once_with_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    results, _ = _unreachable(tmp_path, f"http://127.0.0.1:{closed_port()}", capfd, caplog)
    _one_line_each(results, "connection refused")
    out, err = capfd.readouterr()
    assert out == "" and err == ""                         # no urllib3 retry warnings on stderr
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["prbot.cluster.dryrun"]          # one line for the cluster
    assert "cannot reach the API server" in warnings[0].getMessage()


def test_a_black_holed_address_fails_within_seconds_with_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with black_hole() as port:
        results, elapsed = _unreachable(tmp_path, f"http://127.0.0.1:{port}", capfd, caplog)
    _one_line_each(results, "connection timed out after 3s")
    assert elapsed < 10          # one connect timeout (3 s) for three targets: the cluster is tried once
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_a_server_that_never_answers_is_bounded_by_the_read_timeout(tmp_path: Path,
                                                                   capfd: pytest.CaptureFixture[str],
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Discovery has a timeout too (the client sends its requests with none)."""
    import socket

    with socket.socket() as server:                 # accepts connections (the kernel does), never answers
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        results, elapsed = _unreachable(tmp_path, f"http://127.0.0.1:{server.getsockname()[1]}", capfd, caplog,
                                        timeout=(1.0, 0.5))
    _one_line_each(results, "no answer within 0.5s (read timed out)")
    assert elapsed < 5


def test_an_https_server_that_refuses_reads_in_words(tmp_path: Path) -> None:
    """The transport reason of an HTTPS cluster: "connection refused", not "hTTPSConnection(…)"."""
    kubeconfig = FakeKube(operators=False).write_kubeconfig(tmp_path / "config",
                                                            server=f"https://127.0.0.1:{closed_port()}")
    with ClusterClient(ClusterRef("prod", kubeconfig), retry=FAST) as c:
        result = run(c, [configmap("cfg", {})])
    [error] = result.errors
    assert re.fullmatch(r"cluster prod: cannot reach the API server https://127\.0\.0\.1:\d+: connection refused",
                        error.message), error.message


def test_the_comment_says_a_cluster_failure_once_and_lists_what_was_not_sent() -> None:
    down = DryRun(status="failed", errors=[DryRunError("", "", None, "", "cluster dev: cannot reach the API "
                                                                         "server https://10.0.0.1:6443: connection "
                                                                         "timed out after 3s")])
    [comment] = render_markdown(_plan_with(down))
    assert comment.count("cannot reach the API server") == 1
    assert "**Server-side dry-run:** ❌ not run" in comment and "❌ failed |" in comment
    notes = DryRun(status="ok", skipped=[
        DryRunError("", "ConfigMap", "shop-preview", f"cfg-{i}", "would be created: namespace shop-preview "
                    "does not exist yet, this change creates it") for i in range(7)])
    [comment] = render_markdown(_plan_with(notes))
    assert comment.count("would be created: namespace shop-preview") == 1
    assert "`ConfigMap shop-preview/cfg-0`" in comment and "and 2 more" in comment


def test_bad_credentials_or_kubeconfig_fail_the_dry_run_not_the_plan(fake_kube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "config")
    kubeconfig.write_text(kubeconfig.read_text().replace(TOKEN, "wrong-token-value"))
    with ClusterClient(ClusterRef("dev", kubeconfig), retry=FAST) as c:
        result = run(c, [configmap("cfg", {"a": "b"})])
    assert result.errors == [DryRunError("", "", None, "", "cluster dev: discovery failed: Unauthorized")]
    assert fake_kube.applies() == []

    with ClusterClient(ClusterRef("dev", tmp_path / "gone"), retry=FAST) as c:
        result = run(c, [configmap("cfg", {"a": "b"})])
    [error] = result.errors
    assert result.status == "failed" and error.message.startswith(f"cluster dev: cannot read {tmp_path / 'gone'}")


# --------------------------------------------------------------------------------------------
# make_dry_runner
# --------------------------------------------------------------------------------------------

CONFIG = """\
version: 1
environments:
  - name: dev
    cluster: dev
  - name: staging
    cluster: stage
  - name: prod
apps:
  - path: "apps/{app}/envs/{env}"
    namespace: "{app}-{env}"
"""


def target(env: str, app: str = "web") -> Target:
    return Target(app=app, env=env, path=f"apps/{app}/envs/{env}", renderer="plain", namespace=f"{app}-{env}")


def test_dry_runner_per_environment(fake_kube: FakeKube, cluster: ClusterRef, tmp_path: Path) -> None:
    fake_kube.seed(namespace("web-dev"))
    clusters = ClusterMap({"dev": cluster, "staging": cluster}, source=tmp_path / "clusters.yaml")
    runner = make_dry_runner(load_config(CONFIG), clusters, retry=FAST)
    objects = [configmap("cfg", {"a": "b"})]
    assert runner(target("prod"), objects, []) is None          # no cluster configured
    assert fake_kube.requests == []
    # a cluster missing from PRBOT_CLUSTERS: an error naming the environment, the cluster and the file
    missing = runner(target("staging"), objects, [])
    assert missing is not None and missing.status == "failed"
    [error] = missing.errors
    assert error.message == (f"environment 'staging' uses cluster 'stage', which is not in PRBOT_CLUSTERS "
                             f"({tmp_path / 'clusters.yaml'}) (known: dev, staging; did you mean 'staging'?)")
    assert list(runner.missing) == ["staging"]
    assert fake_kube.requests == []
    first = runner(target("dev"), objects, [])
    second = runner(target("dev"), [deployment("web", 1)], [])
    assert first is not None and summary(first) == [("", "ConfigMap", "web-dev", "cfg", "added")]
    assert second is not None and summary(second) == [("apps", "Deployment", "web-dev", "web", "added")]
    # one client for the cluster: the server's version is discovered once for both calls
    assert [r.path for r in fake_kube.requests].count("/version") == 1
    runner.close()


# --------------------------------------------------------------------------------------------
# End to end: make_plan with the dry-run against the fake cluster
# --------------------------------------------------------------------------------------------

def _plan_with(dry: DryRun) -> Any:
    from prbot.plan import Plan, TargetPlan

    return Plan(base="a" * 40, head="b" * 40, targets=[
        TargetPlan(app="shop", env="dev", path="apps/shop/envs/dev", renderer="kustomize", status="changed",
                   dry_run=dry)])


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
    secret_value = "example-dev-password"
    assert secret_value not in json.dumps(data)
    assert base64.b64encode(secret_value.encode()).decode() not in json.dumps(data)
    runner.close()


def test_plan_of_a_pr_moving_objects_to_another_namespace(example_repo: Path, fake_kube: FakeKube,
                                                          cluster: ClusterRef) -> None:
    """The attack end to end: the PR edits a manifest to name another team's namespace."""
    other_team(fake_kube)
    config = load_config_file(example_repo / ".prbot.yml")
    [shop_dev] = [t for t in discover_targets(config, example_repo) if t.key == "shop/dev"]
    for obj in render_target(example_repo, shop_dev):
        fake_kube.seed(obj)
    kustomization = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    text = kustomization.read_text()
    assert "namespace: shop-dev" in text
    kustomization.write_text(text.replace("namespace: shop-dev", "namespace: other-team"))
    runner = make_dry_runner(config, {"dev": cluster}, retry=FAST)
    plan = make_plan(example_repo, config, "HEAD", dry_runner=runner)
    runner.close()
    [t] = plan.targets
    assert t.dry_run is not None and t.dry_run.status == "failed" and t.dry_run.changes == []
    assert {e.namespace for e in t.dry_run.errors} == {"other-team"}
    assert fake_kube.touching("other-team") == []
    comment = "\n".join(render_markdown(plan))
    assert "hunter2" not in comment and comment.count("is not owned by this target") == 1


def test_plan_whose_environment_cluster_is_not_in_the_map(example_repo: Path) -> None:
    config = load_config_file(example_repo / ".prbot.yml")
    kustomization = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace('newTag: "1.1.0"', 'newTag: "1.2.0"'))
    runner = make_dry_runner(config, ClusterMap(source=Path("/etc/prbot/clusters.yaml")))
    plan = make_plan(example_repo, config, "HEAD", dry_runner=runner)
    [t] = plan.targets
    assert t.dry_run is not None and t.dry_run.status == "failed" and plan.failed
    assert [e.message for e in t.dry_run.errors] == [
        "environment 'dev' uses cluster 'dev', which is not in PRBOT_CLUSTERS (/etc/prbot/clusters.yaml) "
        "(known: none)"]
    assert "dev" in runner.missing


# --------------------------------------------------------------------------------------------
# `prbot plan` with PRBOT_CLUSTERS
# --------------------------------------------------------------------------------------------

def _bump(example_repo: Path, env: str, *apps: str) -> None:
    for app in apps:
        path = example_repo / f"apps/{app}/envs/{env}"
        manifest = path / ("kustomization.yaml" if app == "shop" else "worker.yaml")
        text = manifest.read_text()
        changed = re.sub(r'newTag: "[^"]+"', 'newTag: "9.9.9"', text)
        changed = re.sub(r"acme/worker:[0-9.]+", "acme/worker:9.9.9", changed)
        assert changed != text
        manifest.write_text(changed)


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "prbot.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_cli_plan_exits_2_naming_an_environment_whose_cluster_is_not_in_the_map(
        example_repo: Path, fake_kube: FakeKube, tmp_path: Path) -> None:
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "dev.kubeconfig")
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(f"dev: {{kubeconfig: {kubeconfig}}}\n")
    _bump(example_repo, "staging", "worker")
    proc = _cli("plan", "--repo", str(example_repo), "--base", "HEAD", env={"PRBOT_CLUSTERS": str(clusters)})
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [(
        f"prbot: error: environment 'staging' uses cluster 'staging', which is not in PRBOT_CLUSTERS "
        f"({clusters}) (known: dev)")]
    # --no-cluster plans without it
    proc = _cli("plan", "--repo", str(example_repo), "--base", "HEAD", "--no-cluster",
                env={"PRBOT_CLUSTERS": str(clusters)})
    assert proc.returncode == 0, proc.stderr


def test_cli_plan_with_an_unreachable_cluster_says_so_once(example_repo: Path, tmp_path: Path) -> None:
    kubeconfig = FakeKube(operators=False).write_kubeconfig(tmp_path / "dev.kubeconfig",
                                                            server=f"http://127.0.0.1:{closed_port()}")
    (tmp_path / "clusters.yaml").write_text(f"dev: {{kubeconfig: {kubeconfig}}}\n")
    _bump(example_repo, "dev", "shop", "worker")
    proc = _cli("plan", "--repo", str(example_repo), "--base", "HEAD", "--format", "json",
                env={"PRBOT_CLUSTERS": str(tmp_path / "clusters.yaml")})
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()                     # one line for the cluster, for both targets
    assert line.startswith("prbot: dry-run: cluster dev: cannot reach the API server http://127.0.0.1:")
    assert line.endswith(": connection refused")
    targets = json.loads(proc.stdout)["targets"]
    assert len(targets) == 2
    for t in targets:
        [error] = t["dry_run"]["errors"]
        assert error["kind"] == "" and error["message"] == line.removeprefix("prbot: dry-run: ")


# --------------------------------------------------------------------------------------------
# Ownership comes from the default branch: a target the PR adds owns nothing until merged
# --------------------------------------------------------------------------------------------

PAYMENTS = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: db
data:
  host: guess
---
apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: guess
"""


def payments_team(fake: FakeKube, ns: str) -> None:
    """Another team's namespace `ns`, with values that must never reach a comment."""
    fake.seed(namespace(ns))
    fake.seed(configmap("db", {"host": "db.payments.internal", "password": "hunter2-payments"}, namespace=ns))
    fake.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": ns},
               "data": {"password": base64.b64encode(b"s3cret-payments").decode()}})


def _pr(repo: Path, files: dict[str, str | None], *, config: str | None = None) -> None:
    """Commit `config` (as .prbot.yml) on main, then `files` (None: removed) on branch "pr"."""
    if config is not None:
        (repo / ".prbot.yml").write_text(config)
        commit_all(repo, "config")
    git(repo, "checkout", "-q", "-b", "pr")
    for rel, text in files.items():
        path = repo / rel
        if text is None:
            git(repo, "rm", "-q", "-r", rel)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    commit_all(repo, "the PR")


def _plan_pr(repo: Path, cluster: ClusterRef, **kwargs: Any) -> tuple[Any, str]:
    config = load_config_file(repo / ".prbot.yml")        # main's (the PR does not change it)
    runner = make_dry_runner(config, {"dev": cluster}, retry=FAST, **kwargs)
    try:
        plan = make_plan(repo, config, "main", "pr", dry_runner=runner)
    finally:
        runner.close()
    return plan, "\n".join(render_markdown(plan))


def _assert_owns_nothing(t: Any, comment: str) -> None:
    assert t.status == "added"
    dry = t.dry_run
    assert isinstance(dry, DryRun) and dry.status == "ok" and dry.changes == [] and dry.errors == []
    assert sorted((e.kind, e.name) for e in dry.skipped) == [("ConfigMap", "db"), ("Secret", "db")]
    assert {e.message for e in dry.skipped} == {
        "not sent to the cluster: this target is new in this change, and a target owns nothing on the "
        "cluster until it is merged (what a target owns comes from the default branch)"}
    assert "a target owns nothing on the cluster until it is merged" in comment
    assert "⏭️ 2 not sent" in comment and "the live objects already match" not in comment
    for value in ("hunter2", "db.payments.internal", "s3cret", base64.b64encode(b"s3cret-payments").decode()):
        assert value not in comment


def test_a_new_directory_does_not_make_another_teams_namespace_owned(example_repo: Path, fake_kube: FakeKube,
                                                                     cluster: ClusterRef) -> None:
    """Issue 15: with namespace "{app}-{env}", a PR adding apps/payments/envs/dev/ read payments-dev."""
    payments_team(fake_kube, "payments-dev")
    _pr(example_repo, {"apps/payments/envs/dev/app.yaml": PAYMENTS})
    plan, comment = _plan_pr(example_repo, cluster)
    [t] = plan.targets
    assert (t.app, t.env) == ("payments", "dev")
    _assert_owns_nothing(t, comment)
    assert fake_kube.touching("payments-dev") == []
    assert fake_kube.requests == []                     # nothing at all was sent for the new target


def test_a_namespace_pattern_of_the_app_alone_reaches_no_namespace(example_repo: Path, fake_kube: FakeKube,
                                                                   cluster: ClusterRef) -> None:
    """With namespace "{app}", a directory's name is any namespace: kube-system is one PR away."""
    payments_team(fake_kube, "kube-system")
    config = (example_repo / ".prbot.yml").read_text().replace('namespace: "{app}-{env}"', 'namespace: "{app}"')
    _pr(example_repo, {"apps/kube-system/envs/dev/app.yaml": PAYMENTS}, config=config)
    plan, comment = _plan_pr(example_repo, cluster)
    [t] = plan.targets
    assert (t.app, t.env) == ("kube-system", "dev")
    _assert_owns_nothing(t, comment)
    assert fake_kube.touching("kube-system") == [] and fake_kube.requests == []


def test_a_target_renamed_in_the_pr_owns_nothing_under_its_new_name(example_repo: Path, fake_kube: FakeKube,
                                                                     cluster: ClusterRef) -> None:
    """A target moved to a new directory is a new target (another app key): the old name's namespace
    is not carried over, and the new one is not owned until merged."""
    payments_team(fake_kube, "payments-dev")
    fake_kube.seed(namespace("worker-dev"))
    worker = (example_repo / "apps/worker/envs/dev/worker.yaml").read_text()
    _pr(example_repo, {"apps/worker/envs/dev": None, "apps/payments/envs/dev/worker.yaml": worker,
                       "apps/payments/envs/dev/app.yaml": PAYMENTS})
    plan, comment = _plan_pr(example_repo, cluster)
    by_key = {(t.app, t.env): t for t in plan.targets}
    assert by_key[("worker", "dev")].status == "removed" and by_key[("worker", "dev")].dry_run is None
    payments = by_key[("payments", "dev")]
    assert payments.status == "added" and payments.dry_run is not None
    assert payments.dry_run.changes == [] and payments.dry_run.errors == []
    assert len(payments.dry_run.skipped) >= 3 and all("owns nothing on the cluster until it is merged" in e.message
                                                      for e in payments.dry_run.skipped)
    assert fake_kube.touching("payments-dev") == [] and fake_kube.touching("worker-dev") == []
    assert "hunter2" not in comment and "s3cret" not in comment


def test_an_existing_target_still_owns_its_configured_namespace(example_repo: Path, fake_kube: FakeKube,
                                                                cluster: ClusterRef) -> None:
    """The other side of the rule: a target on the default branch that rendered nothing there still
    owns its configured namespace, so the objects a PR adds to it are dry-run."""
    fake_kube.seed(namespace("payments-dev"))
    (example_repo / "apps/payments/envs/dev").mkdir(parents=True)
    (example_repo / "apps/payments/envs/dev/empty.yaml").write_text("# nothing yet\n")
    commit_all(example_repo, "payments, empty")
    _pr(example_repo, {"apps/payments/envs/dev/empty.yaml": "# nothing yet\n---\n" + PAYMENTS})
    plan, _ = _plan_pr(example_repo, cluster)
    [t] = plan.targets
    assert t.status == "changed" and t.dry_run is not None and t.dry_run.skipped == []
    assert summary(t.dry_run) == [("", "ConfigMap", "payments-dev", "db", "added"),
                                  ("", "Secret", "payments-dev", "db", "added")]


# --------------------------------------------------------------------------------------------
# The request budget: one per plan, shared by every target
# --------------------------------------------------------------------------------------------

BUDGET_SPENT = ("not sent to the cluster: the plan's dry-run request budget is spent (3 requests per object "
                "rendered, at most {cap} in all: PRBOT_DRYRUN_REQUESTS)")


def test_two_thousand_objects_send_at_most_the_budget(fake_kube: FakeKube, cluster: ClusterRef,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: 2,000 rendered objects made 4,012 API requests in one plan."""
    monkeypatch.setenv("PRBOT_DRYRUN_REQUESTS", "300")
    fake_kube.seed(namespace("web-dev"))
    objects = [configmap(f"cfg-{i:04}", {"i": str(i)}) for i in range(2000)]
    runner = make_dry_runner(load_config(CONFIG), {"dev": cluster}, retry=FAST)
    try:
        dry = runner(target("dev"), objects, [])
    finally:
        runner.close()
    assert dry is not None and dry.status == "ok" and dry.errors == []
    assert len(fake_kube.requests) == 300                 # every request the budget allows, no more
    sent = len(dry.changes)
    assert 140 <= sent <= 150 and sent + len(dry.skipped) == 2000
    assert {e.message for e in dry.skipped} == {BUDGET_SPENT.format(cap=300)}
    # the objects sent are the first ones in order; the comment says why the rest were not
    assert [c.name for c in dry.changes] == [f"cfg-{i:04}" for i in range(sent)]
    comment = "\n".join(render_markdown(_plan_with(dry)))
    assert "the plan's dry-run request budget is spent" in comment and f"and {len(dry.skipped) - 5} more" in comment
    assert f"| ✅ {sent} changes · ⏭️ {len(dry.skipped)} not sent |" in comment      # the table says so too


def test_the_budget_is_shared_by_every_target_of_the_plan(fake_kube: FakeKube, cluster: ClusterRef) -> None:
    fake_kube.seed(namespace("web-dev"))
    runner = make_dry_runner(load_config(CONFIG), {"dev": cluster}, retry=FAST, requests=100)
    results: list[DryRun] = []
    counts: list[int] = []
    try:
        for app in ("a", "b", "c", "d", "e"):
            fake_kube.seed(namespace(f"{app}-dev"))
            got = runner(target("dev", app), [configmap(f"cfg-{i}", {"i": str(i)}) for i in range(30)], [])
            assert got is not None
            results.append(got)
            counts.append(len(fake_kube.requests))
    finally:
        runner.close()
    assert counts[-1] == 100                                    # one budget for the plan, not one per target
    first, second, *rest = results
    assert len(first.changes) == 30 and first.skipped == []     # the first fits
    assert 0 < len(second.changes) < 30 and {e.message for e in second.skipped} == {BUDGET_SPENT.format(cap=100)}
    for dry in rest:                                            # the budget is spent: nothing more is sent
        assert dry.changes == [] and len(dry.skipped) == 30 and dry.status == "ok"
    assert counts[2] == counts[3] == counts[4] == 100


def test_retries_count_against_the_budget(fake_kube: FakeKube, cluster: ClusterRef) -> None:
    """A cluster answering 503 (an admission webhook failing on what the PR renders) makes every
    request be sent again: each retry is a request of the budget too."""
    fake_kube.seed(namespace("web-dev"))
    fake_kube.fail("ConfigMap", 10_000)
    runner = make_dry_runner(load_config(CONFIG), {"dev": cluster}, retry=FAST, requests=30)
    try:
        dry = runner(target("dev"), [configmap(f"cfg-{i}", {"i": str(i)}) for i in range(20)], [])
    finally:
        runner.close()
    assert dry is not None and dry.changes == []
    assert len(fake_kube.requests) <= 30                   # 4 attempts each: 90 requests without the gate on retries
    assert dry.errors and all("503" in e.message or "navailable" in e.message for e in dry.errors)
    assert {e.message for e in dry.skipped} == {BUDGET_SPENT.format(cap=30)}
    assert len(dry.errors) + len(dry.skipped) == 20


def test_the_budget_is_in_proportion_to_the_objects_with_a_cap() -> None:
    """3 requests per object handed to the dry-run, plus 20, never beyond the cap: a plan of a
    few objects cannot send a thousand requests, however high PRBOT_DRYRUN_REQUESTS is."""
    budget = RequestBudget(10_000)
    budget.grant(10)
    for _ in range(50):
        budget.take()
    with pytest.raises(RequestBudgetSpent, match="PRBOT_DRYRUN_REQUESTS"):
        budget.take()
    assert budget.used == 50 and budget.spent
    budget.grant(1)                          # another target's object: 3 more
    for _ in range(3):
        budget.take()
    with pytest.raises(RequestBudgetSpent):
        budget.take()
    capped = RequestBudget(100)
    capped.grant(2000)
    for _ in range(100):
        capped.take()
    with pytest.raises(RequestBudgetSpent):
        capped.take()


def test_the_plan_deadline_stops_the_dry_run(fake_kube: FakeKube, cluster: ClusterRef) -> None:
    fake_kube.seed(namespace("web-dev"))
    runner = make_dry_runner(load_config(CONFIG), {"dev": cluster}, retry=FAST)
    try:
        dry = runner(target("dev"), [configmap("cfg", {"a": "b"})], [], deadline=time.monotonic() - 1)
    finally:
        runner.close()
    assert dry is not None and dry.changes == [] and fake_kube.requests == []
    assert [e.message for e in dry.skipped] == [
        "not sent to the cluster: the plan's time budget (PRBOT_PLAN_BUDGET) ran out"]


def test_dryrun_requests_setting_is_read_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from prbot.errors import PrbotError
    from prbot.limits import Limits

    assert Limits.from_env({}).dryrun_requests == 1000
    assert Limits.from_env({"PRBOT_DRYRUN_REQUESTS": "250"}).dryrun_requests == 250
    with pytest.raises(PrbotError, match="PRBOT_DRYRUN_REQUESTS"):
        Limits.from_env({"PRBOT_DRYRUN_REQUESTS": "0"})
    monkeypatch.setenv("PRBOT_DRYRUN_REQUESTS", "lots")
    with pytest.raises(PrbotError, match="PRBOT_DRYRUN_REQUESTS"):
        make_dry_runner(load_config(CONFIG), {})

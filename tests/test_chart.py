"""The Helm chart that installs prbot (deploy/chart): rendered with the pinned Helm, linted, and its
objects validated with the same offline Kubernetes schemas prbot validates a PR's objects with."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from prbot import tools
from prbot.validate import validate_objects

CHART = Path(__file__).resolve().parent.parent / "deploy" / "chart"
KUBERNETES = "1.33"

EVERYTHING_ON = {
    "github": {"appId": 123456, "apiUrl": "https://ghe.example.com/api/v3"},
    "secrets": {"existingSecret": "prbot-app"},
    "redis": {"enabled": True},
    "worker": {"replicas": 3, "threads": 2},
    "web": {"replicas": 2},
    "ingress": {"enabled": True, "className": "nginx", "host": "prbot.acme.dev",
                "tls": [{"secretName": "prbot-tls", "hosts": ["prbot.acme.dev"]}]},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
    "clusters": {"existingSecret": "prbot-clusters"},
    "env": {"PRBOT_DEPLOY_TIMEOUT": 600, "PRBOT_DISK_FLOOR_MB": "2048"},
}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    binary = tools.which("helm")
    assert binary, "helm is not installed: prbot tools install"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)


def template(tmp_path: Path, values: dict[str, Any] | None = None, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "prbot", str(CHART), "--namespace", "prbot", "--kube-version", f"v{KUBERNETES}.0"]
    if values is not None:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    for s in sets:
        args += ["--set", s]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_default_values_render_a_web_deployment_with_sqlite_on_the_volume(tmp_path: Path) -> None:
    objects = by_kind(template(tmp_path))
    assert set(objects) == {("ServiceAccount", "prbot"), ("Secret", "prbot"), ("PersistentVolumeClaim", "prbot-data"),
                            ("Service", "prbot"), ("Deployment", "prbot-web")}
    web = objects[("Deployment", "prbot-web")]
    assert web["spec"]["strategy"] == {"type": "Recreate"}           # one SQLite writer
    pod = web["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:4] == ["prbot", "serve", "--host", "0.0.0.0"]
    env = env_of(container)
    assert env["PRBOT_DATA_DIR"] == "/data" and "PRBOT_QUEUE_URL" not in env
    assert env["GITHUB_PRIVATE_KEY"] == {"secretKeyRef": {"name": "prbot", "key": "github-private-key"}}
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "prbot-data"}} in pod["volumes"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert pod["automountServiceAccountToken"] is False


def test_options_on_render_workers_redis_ingress_and_service_monitor(tmp_path: Path) -> None:
    objects = by_kind(template(tmp_path, EVERYTHING_ON))
    assert ("Secret", "prbot") not in objects                          # the operator's Secret is used
    worker = objects[("Deployment", "prbot-worker")]
    assert worker["spec"]["replicas"] == 3
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["prbot", "worker", "--threads", "2", "--metrics-port", "9100"]
    env = env_of(container)
    assert env["PRBOT_QUEUE_URL"] == "redis://prbot-redis:6379/0"
    assert env["GITHUB_APP_ID"] == "123456" and env["GITHUB_API_URL"] == "https://ghe.example.com/api/v3"
    assert env["GITHUB_WEBHOOK_SECRET"] == {"secretKeyRef": {"name": "prbot-app", "key": "github-webhook-secret"}}
    assert env["PRBOT_CLUSTERS"] == "/etc/prbot/clusters/clusters.yaml"
    assert env["PRBOT_DEPLOY_TIMEOUT"] == "600" and env["PRBOT_DISK_FLOOR_MB"] == "2048"
    assert objects[("Deployment", "prbot-web")]["spec"]["replicas"] == 2
    redis = objects[("StatefulSet", "prbot-redis")]
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"]
    ingress = objects[("Ingress", "prbot")]
    assert ingress["spec"]["rules"][0]["host"] == "prbot.acme.dev"
    monitor = objects[("ServiceMonitor", "prbot")]
    assert {e["path"] for e in monitor["spec"]["endpoints"]} == {"/metrics"}
    assert ("NetworkPolicy", "prbot-redis") in objects


def test_external_redis_url_from_a_secret(tmp_path: Path) -> None:
    objects = by_kind(template(tmp_path, {"queue": {"existingSecret": "redis-url", "key": "url"},
                                          "worker": {"replicas": 1}}))
    env = env_of(objects[("Deployment", "prbot-worker")]["spec"]["template"]["spec"]["containers"][0])
    assert env["PRBOT_QUEUE_URL"] == {"secretKeyRef": {"name": "redis-url", "key": "url"}}
    assert ("StatefulSet", "prbot-redis") not in objects


@pytest.mark.parametrize("values", [None, EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_rendered_objects_validate_against_the_kubernetes_schemas(tmp_path: Path, values: dict | None) -> None:
    objects = template(tmp_path, values)
    issues = validate_objects(objects, KUBERNETES)
    assert [i for i in issues if i.level != "skipped"] == []
    assert {i.kind for i in issues} <= {"ServiceMonitor"}             # a CRD: no built-in schema


def test_helm_lint_passes_strict() -> None:
    done = helm("lint", "--strict", str(CHART))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("setting", "needle"), [
    ("worker.replicas=-1", "/worker/replicas"),
    ("jail.seccompProfile.type=RuntimeDefault", "/jail/seccompProfile/type"),
    ("queue.url=http://redis:6379", "/queue/url"),
    ("github.appId=abc", "/github/appId"),
    ("env.PRBOT_QUEUE_URL=redis://elsewhere", "PRBOT_QUEUE_URL"),
    ("web.colour=blue", "colour"),
])
def test_the_schema_refuses_bad_values(setting: str, needle: str) -> None:
    done = helm("template", "prbot", str(CHART), "--set", setting)
    assert done.returncode != 0 and needle in done.stderr, done.stderr


def test_workers_without_a_redis_queue_are_refused() -> None:
    done = helm("template", "prbot", str(CHART), "--set", "worker.replicas=2")
    assert done.returncode != 0 and "needs a Redis queue" in done.stderr


def test_values_schema_is_json_and_lists_every_top_level_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])


def test_security_context_is_what_the_render_jail_needs_and_nothing_more(tmp_path: Path) -> None:
    objects = by_kind(template(tmp_path, EVERYTHING_ON))
    for name in ("prbot-web", "prbot-worker"):
        pod = objects[("Deployment", name)]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65534
        assert "hostPID" not in pod and "hostNetwork" not in pod and "hostIPC" not in pod
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 65534, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "Unconfined"}, "appArmorProfile": {"type": "Unconfined"}}


def test_a_localhost_seccomp_profile_replaces_unconfined(tmp_path: Path) -> None:
    objects = by_kind(template(tmp_path, {"jail": {
        "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/prbot-userns.json"},
        "appArmorProfile": {"type": "Unconfined"}}}))
    context = objects[("Deployment", "prbot-web")]["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert context["seccompProfile"] == {"type": "Localhost", "localhostProfile": "profiles/prbot-userns.json"}


def test_secret_values_from_values_land_in_the_secret_only(tmp_path: Path) -> None:
    objects = template(tmp_path, {"secrets": {"privateKey": "PEM-VALUE", "webhookSecret": "HOOK-VALUE"}})
    found = by_kind(objects)
    assert found[("Secret", "prbot")]["stringData"]["github-webhook-secret"] == "HOOK-VALUE"
    web = yaml.safe_dump(found[("Deployment", "prbot-web")])
    assert "HOOK-VALUE" not in web and "PEM-VALUE" not in web

"""The Flask app: signed real GitHub payloads and registry samples, and every way to get it wrong."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY as PROM
from service_support import (
    GITHUB_FIXTURES,
    REGISTRY_FIXTURES,
    REGISTRY_TOKEN,
    WEBHOOK_SECRET,
    fixture_bytes,
    github_headers,
    sign,
    wait_for,
)

from prbot.errors import SettingsError
from prbot.service import create_app
from prbot.service.jobs import Job, Registry, Runtime
from prbot.service.queue import Queue
from prbot.service.settings import Secret, Settings
from prbot.service.worker import Worker


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"github_webhook_secret": Secret(WEBHOOK_SECRET), "registry_token": Secret(REGISTRY_TOKEN),
                              "data_dir": tmp_path / "data", "poll_max_delay": 0.1, "heartbeat_seconds": 0.25}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings, configure_logging=False)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def queued_messages(settings: Settings) -> list[dict[str, Any]]:
    """The messages waiting in the queue (what a worker would run), read through huey."""
    queue = Queue(settings)
    return [task.args[0] for task in queue.huey.pending()]


def js(resp: Any) -> Any:
    """The JSON body of a test-client response."""
    return resp.get_json()


def webhook_metric(event: str, outcome: str) -> float:
    return PROM.get_sample_value("prbot_webhooks_total", {"event": event, "outcome": outcome}) or 0.0


def post_github(client: FlaskClient, fixture: str, event: str, delivery: str | None = None,
                body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    data = body if body is not None else fixture_bytes(fixture)
    h = github_headers(data, event, delivery or str(uuid.uuid4()))
    h.update(headers or {})
    return client.post("/webhooks/github", data=data, headers=h)


# -- GitHub --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fixture", "event", "repo", "pr"), [
    ("pull_request.opened.json", "pull_request", "Codertocat/Hello-World", 2),
    ("pull_request.synchronize.json", "pull_request", "Codertocat/Hello-World", 2),
    ("issue_comment.created.json", "issue_comment", "Codertocat/Hello-World", 1),
    ("push.json", "push", "Codertocat/Hello-World", None),
    ("package.published.docker.json", "package", "Codertocat/hello-world-npm", None),
    ("installation.created.json", "installation", None, None),
    ("ping.json", "ping", "Octocoders/Hello-World", None),
])
def test_signed_github_event_is_queued_as_one_job(client: FlaskClient, settings: Settings, fixture: str, event: str,
                                                  repo: str | None, pr: int | None) -> None:
    delivery = str(uuid.uuid4())
    before = webhook_metric(event, "queued")
    resp = post_github(client, fixture, event, delivery)
    assert resp.status_code == 202, resp.json
    assert js(resp)["status"] == "queued" and js(resp)["delivery"] == delivery
    [message] = queued_messages(settings)
    assert message["kind"] == "github_event"
    assert message["payload"] == {"event": event, "delivery": delivery,
                                  "body": json.loads((GITHUB_FIXTURES / fixture).read_text())}
    assert (message["repo"], message["pr"], message["delivery"]) == (repo, pr, delivery)
    assert webhook_metric(event, "queued") == before + 1


def test_wrong_or_missing_signature_is_401_and_queues_nothing(client: FlaskClient, settings: Settings) -> None:
    body = fixture_bytes("pull_request.opened.json")
    wrong = post_github(client, "", "pull_request", body=body, headers={"X-Hub-Signature-256": sign(body, "other")})
    assert wrong.status_code == 401 and "does not match" in js(wrong)["error"]
    tampered = post_github(client, "", "pull_request", body=body + b" ",
                           headers={"X-Hub-Signature-256": sign(body)})
    assert tampered.status_code == 401
    sha1 = post_github(client, "", "pull_request", body=body, headers={"X-Hub-Signature-256": "sha1=abc"})
    assert sha1.status_code == 401
    garbage = post_github(client, "", "pull_request", body=body, headers={"X-Hub-Signature-256": "sha256=ü"})
    assert garbage.status_code == 401
    headers = github_headers(body, "pull_request", "d-unsigned")
    del headers["X-Hub-Signature-256"]
    missing = client.post("/webhooks/github", data=body, headers=headers)
    assert missing.status_code == 401 and "missing" in js(missing)["error"]
    assert queued_messages(settings) == []


@pytest.mark.parametrize(("body", "reason"), [(b"{not json", "not JSON"), (b"[1, 2]", "not a JSON object"),
                                              (b"\xff\xfe", "not JSON"), (b"", "not JSON"), (b"null", "not a JSON")])
def test_signed_body_that_is_not_a_json_object_is_400(client: FlaskClient, settings: Settings, body: bytes,
                                                      reason: str) -> None:
    resp = post_github(client, "", "pull_request", body=body)
    assert resp.status_code == 400 and reason in js(resp)["error"]
    assert queued_messages(settings) == []


HOSTILE_BODIES = [
    (b"[" * 100_000, "nested too deeply"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
    (b'"just a string"', "not a JSON object"),
    (b'{"action": "opened", "x": "caf\xe9"}', "not UTF-8"),
    (b"\xef\xbb\xbf{}", "not JSON"),                                # a BOM: UTF-8, but not a JSON text
    (b'{"action": "opened", "action": "closed"}', "appears twice"),
    (b'{"number": NaN}', "NaN is not a JSON value"),
    (b'{"number": 1e999}', "out of range"),
    (b'{"number": ' + b"9" * 5000 + b"}", "not JSON"),
    (b'{"title": "\\ud800"}', "unpaired"),
]


@pytest.mark.parametrize(("body", "reason"), HOSTILE_BODIES)
def test_signed_hostile_bodies_are_refused_with_a_one_line_reason(client: FlaskClient, settings: Settings,
                                                                  body: bytes, reason: str) -> None:
    resp = post_github(client, "", "pull_request", body=body)      # signed: the HMAC passes
    assert resp.status_code == 400, resp.status_code
    assert reason in js(resp)["error"] and "\n" not in js(resp)["error"] and len(js(resp)["error"]) < 200
    assert queued_messages(settings) == []


@pytest.mark.parametrize(("body", "reason"), HOSTILE_BODIES)
def test_registry_hostile_bodies_are_refused_with_a_one_line_reason(client: FlaskClient, settings: Settings,
                                                                    body: bytes, reason: str) -> None:
    resp = client.post(f"/webhooks/registry/generic?token={REGISTRY_TOKEN}", data=body)
    assert 400 <= resp.status_code < 500 and "\n" not in js(resp)["error"]
    assert reason == "not a JSON object" or reason in js(resp)["error"]
    assert queued_messages(settings) == []


def test_missing_event_or_delivery_is_400(client: FlaskClient) -> None:
    body = fixture_bytes("ping.json")
    no_event = client.post("/webhooks/github", data=body, headers={"X-Hub-Signature-256": sign(body),
                                                                   "X-GitHub-Delivery": "d-x"})
    assert no_event.status_code == 400 and "X-GitHub-Event" in js(no_event)["error"]
    no_delivery = client.post("/webhooks/github", data=body, headers={"X-Hub-Signature-256": sign(body),
                                                                      "X-GitHub-Event": "ping"})
    assert no_delivery.status_code == 400 and "X-GitHub-Delivery" in js(no_delivery)["error"]


def test_duplicate_delivery_is_acknowledged_once_also_after_a_restart(settings: Settings) -> None:
    delivery = str(uuid.uuid4())
    first_app = create_app(settings, configure_logging=False).test_client()
    assert post_github(first_app, "pull_request.opened.json", "pull_request", delivery).status_code == 202
    again = post_github(first_app, "pull_request.opened.json", "pull_request", delivery)
    assert again.status_code == 200 and js(again)["status"] == "duplicate"
    restarted = create_app(settings, configure_logging=False).test_client()     # same SQLite file
    after = post_github(restarted, "pull_request.opened.json", "pull_request", delivery)
    assert after.status_code == 200 and js(after)["status"] == "duplicate"
    assert len(queued_messages(settings)) == 1
    other = post_github(restarted, "pull_request.opened.json", "pull_request")   # a new delivery id
    assert other.status_code == 202
    assert len(queued_messages(settings)) == 2


def test_delivery_ids_expire(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, delivery_ttl=0.2)
    client = create_app(settings, configure_logging=False).test_client()
    assert post_github(client, "ping.json", "ping", "d-exp").status_code == 202
    store = Queue(settings).store
    wait_for(lambda: store.get("delivery:d-exp") is None, 10, "the delivery id to expire")
    assert store.purge_expired() >= 1


def test_huge_body_is_refused(tmp_path: Path) -> None:
    client = create_app(make_settings(tmp_path, max_github_body=4096), configure_logging=False).test_client()
    body = json.dumps({"x": "a" * 10000}).encode()
    resp = post_github(client, "", "push", body=body)
    assert resp.status_code == 413 and "larger than 4096" in js(resp)["error"]


def test_queue_down_refuses_the_delivery_so_a_redelivery_works(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    client = create_app(settings, configure_logging=False).test_client()
    assert client.get("/readyz").status_code == 200
    db = settings.sqlite_path
    queue = Queue(settings)
    queue.huey.storage.sql("DROP TABLE task", commit=True)        # the queue's table is gone
    resp = post_github(client, "ping.json", "ping", "d-down")
    assert resp.status_code == 503 and "queue unavailable" in js(resp)["error"]
    assert queue.store.get("delivery:d-down") is None, "not remembered: GitHub's redelivery is processed"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "queue" in js(ready)["failed"]
    assert db.exists()


def test_readyz_names_an_unreachable_redis(tmp_path: Path) -> None:
    from service_support import free_port

    settings = make_settings(tmp_path, queue_url=f"redis://127.0.0.1:{free_port()}/0")
    client = create_app(settings, configure_logging=False).test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert set(js(resp)["failed"]) == {"store", "queue"}
    assert client.get("/healthz").status_code == 200
    assert post_github(client, "ping.json", "ping").status_code == 503


def test_create_app_requires_the_webhook_secret(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="GITHUB_WEBHOOK_SECRET"):
        create_app(Settings(data_dir=tmp_path), configure_logging=False)
    app = create_app(Settings.from_env({"GITHUB_WEBHOOK_SECRET": "x", "PRBOT_DATA_DIR": str(tmp_path)}),
                     configure_logging=False, max_registry_body=10)
    assert app.extensions["prbot"].settings.max_registry_body == 10


# -- registries ------------------------------------------------------------------------------------------

REGISTRY_SAMPLES = {"acr": "acr-aliyun.push.json", "azure": "azure-acr.push.json", "dockerhub": "dockerhub.push.json",
                    "harbor": "harbor.push.json", "quay": "quay.push.json"}


@pytest.mark.parametrize("provider", sorted(REGISTRY_SAMPLES))
def test_registry_sample_is_queued(client: FlaskClient, settings: Settings, provider: str) -> None:
    body = (REGISTRY_FIXTURES / REGISTRY_SAMPLES[provider]).read_bytes()
    resp = client.post(f"/webhooks/registry/{provider}?token={REGISTRY_TOKEN}", data=body)
    assert resp.status_code == 202, resp.json
    [message] = queued_messages(settings)
    assert message["kind"] == "registry_push"
    assert message["payload"] == {"provider": provider, "images": js(resp)["images"], "repo": None}
    assert len(js(resp)["images"]) == 1 and ":" in js(resp)["images"][0]["image"]


def test_generic_endpoint_with_bearer_token_and_repo_narrowing(client: FlaskClient, settings: Settings) -> None:
    digest = "sha256:" + "d" * 64
    resp = client.post("/webhooks/registry/generic?repo=acme/gitops",
                       json={"image": "ghcr.io/acme/app:1.4.0", "digest": digest},
                       headers={"Authorization": f"Bearer {REGISTRY_TOKEN}"})
    assert resp.status_code == 202
    assert js(resp)["images"] == [{"image": "ghcr.io/acme/app:1.4.0", "digest": digest}]
    [message] = queued_messages(settings)
    assert message["payload"] == {"provider": "generic", "images": [{"image": "ghcr.io/acme/app:1.4.0",
                                                                     "digest": digest}], "repo": "acme/gitops"}
    assert message["repo"] is None


@pytest.mark.parametrize(("url", "headers", "status"), [
    ("/webhooks/registry/generic", {}, 401),
    ("/webhooks/registry/generic?token=wrong", {}, 401),
    ("/webhooks/registry/generic?token=", {"Authorization": "Bearer wrong"}, 401),
    ("/webhooks/registry/generic", {"Authorization": f"Basic {REGISTRY_TOKEN}"}, 401),
    ("/webhooks/registry/generic?token=ü", {}, 401),
    ("/webhooks/registry/nexus?token=" + REGISTRY_TOKEN, {}, 404),
])
def test_registry_refusals(client: FlaskClient, settings: Settings, url: str, headers: dict[str, str],
                           status: int) -> None:
    resp = client.post(url, json={"image": "ghcr.io/acme/app:1"}, headers=headers)
    assert resp.status_code == status and js(resp)["error"]
    assert queued_messages(settings) == []


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "not JSON"),
    (b'{"image": "ghcr.io/Acme/app:1"}', "uppercase"),
    (b'{"image": "ghcr.io/acme/app"}', "has no tag"),
    (b'{"image": ["x"]}', "image: expected a string"),
    (b'{"image": "ghcr.io/acme/app:1", "digest": "sha256:12"}', "digest"),
    (b'{}', "missing field image"),
])
def test_unreadable_registry_payload_is_400_with_a_reason(client: FlaskClient, settings: Settings, body: bytes,
                                                          reason: str) -> None:
    resp = client.post(f"/webhooks/registry/generic?token={REGISTRY_TOKEN}", data=body)
    assert resp.status_code == 400 and reason in js(resp)["error"]
    assert "\n" not in js(resp)["error"]
    assert queued_messages(settings) == []


def test_registry_bad_narrowing_and_huge_body(client: FlaskClient) -> None:
    bad = client.post(f"/webhooks/registry/generic?token={REGISTRY_TOKEN}&repo=../../etc",
                      json={"image": "ghcr.io/acme/app:1"})
    assert bad.status_code == 400 and "owner/name" in js(bad)["error"]
    huge = client.post(f"/webhooks/registry/generic?token={REGISTRY_TOKEN}",
                       data=b'{"image": "' + b"a" * 2_000_000 + b'"}')
    assert huge.status_code == 413


def test_registry_non_push_is_acknowledged_not_queued(client: FlaskClient, settings: Settings) -> None:
    payload = json.loads((REGISTRY_FIXTURES / "azure-acr.push.json").read_text())
    payload["action"] = "delete"
    resp = client.post(f"/webhooks/registry/azure?token={REGISTRY_TOKEN}", json=payload)
    assert resp.status_code == 200 and js(resp)["status"] == "ignored" and "delete" in js(resp)["reason"]
    assert queued_messages(settings) == []


def test_registry_endpoints_are_off_without_a_token(tmp_path: Path) -> None:
    client = create_app(make_settings(tmp_path, registry_token=None), configure_logging=False).test_client()
    resp = client.post("/webhooks/registry/generic?token=", json={"image": "ghcr.io/acme/app:1"})
    assert resp.status_code == 403 and "PRBOT_REGISTRY_TOKEN" in js(resp)["error"]


# -- health, metrics and the whole path to a handler ------------------------------------------------------

def test_health_and_metrics(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and js(ready)["queue"] == "sqlite"
    post_github(client, "ping.json", "ping")
    from prbot.service.metrics import record_github_response

    record_github_response("post", 201, "4321")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'prbot_webhooks_total{event="ping",outcome="queued"}' in text
    assert 'prbot_github_requests_total{method="POST",status="201"}' in text
    assert "prbot_github_rate_limit_remaining 4321.0" in text
    assert "prbot_job_latency_seconds_bucket" in text or "prbot_job_latency_seconds" in text


@pytest.fixture
def worker(settings: Settings) -> Iterator[tuple[Worker, list[Job]]]:
    seen: list[Job] = []
    registry = Registry()

    @registry.register("github_event")
    def on_event(rt: Runtime, job: Job) -> None:
        seen.append(job)

    w = Worker(settings, registry)
    w.start()
    yield w, seen
    w.stop()


def test_a_webhook_reaches_its_handler_once(client: FlaskClient, worker: tuple[Worker, list[Job]]) -> None:
    _, seen = worker
    delivery = str(uuid.uuid4())
    assert post_github(client, "issue_comment.created.json", "issue_comment", delivery).status_code == 202
    assert post_github(client, "issue_comment.created.json", "issue_comment", delivery).status_code == 200
    wait_for(lambda: len(seen) == 1, 30, "the handler")
    job = seen[0]
    assert job.kind == "github_event" and job.delivery == delivery and job.pr == 1
    assert job.payload["event"] == "issue_comment" and job.payload["body"]["comment"]["id"] > 0


def test_layers_keep_to_their_side() -> None:
    """The web layer never imports the engine (plan, render, edit) or PyGithub; the core never imports
    the service, Flask or huey."""
    import subprocess
    import sys

    code = ("import sys, prbot.service.app, prbot.service.webhooks, prbot.service.worker;"
            "print(sorted(m for m in sys.modules if m in ('prbot.plan','prbot.render','prbot.edit','github')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = ("import sys, prbot.plan, prbot.edit, prbot.render, prbot.report, prbot.images, prbot.config;"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask','huey','redis','gunicorn')"
            " or m.startswith('prbot.service') or m.startswith('prbot.registries')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # the blueprints reach shared state through prbot.service.context, never through the app factory
    code = "import sys, prbot.service.webhooks; print('prbot.service.app' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""The whole App under test: the Flask app and a real queue worker (SQLite), talking to the fake
GitHub (`tests/fakegithub`) over HTTP and, when asked, to the fake Kubernetes API (`tests/fakekube`).

    bot = Bot(tmp_path, fake_github)              # started; bot.stop() at the end (the fixture does)
    bot.registry_push("acr", payload)             # POST /webhooks/registry/acr with the token
    bot.deliver_events()                          # sign and POST every webhook the fake recorded
    bot.settle()                                  # until the queue is idle and no job runs
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from fakegithub import FakeGitHub, Webhook
from service_support import REGISTRY_TOKEN, WEBHOOK_SECRET, github_headers

import prbot.service.handlers  # noqa: F401  (fills the job registry)
from prbot.service.app import create_app
from prbot.service.queue import Queue
from prbot.service.settings import Secret, Settings
from prbot.service.worker import Worker


class Bot:
    def __init__(self, tmp_path: Path, fake: FakeGitHub, *, threads: int = 2, **overrides: Any) -> None:
        self.fake = fake
        self.settings = Settings.from_env(
            {}, github_app_id=str(fake.app_id), github_private_key=Secret(fake.private_key),
            github_webhook_secret=Secret(WEBHOOK_SECRET), github_api_url=fake.api_url,
            registry_token=Secret(REGISTRY_TOKEN), data_dir=tmp_path / "prbot-data", poll_max_delay=0.05,
            retry_base=0.05, retry_max=0.5, heartbeat_seconds=0.5, lease_seconds=2.0,
            **overrides)
        self.app = create_app(self.settings, configure_logging=False)
        self.client = self.app.test_client()
        self.queue = Queue(self.settings)
        self.worker = Worker(self.settings, threads=threads)
        self.worker.start()
        self.responses: list[tuple[str, int, dict[str, Any]]] = []

    def stop(self) -> None:
        self.worker.stop(graceful=True, timeout=30)
        self.queue.close()

    # ------------------------------------------------------------------ input
    def post_github(self, event: str, payload: dict[str, Any] | bytes, delivery: str | None = None) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        resp = self.client.post("/webhooks/github", data=body,
                                headers=github_headers(body, event, delivery or uuid.uuid4().hex))
        self.responses.append((event, resp.status_code, resp.get_json(silent=True) or {}))
        return resp

    def deliver(self, hook: Webhook) -> Any:
        resp = self.client.post("/webhooks/github", data=hook.body, headers=hook.headers(WEBHOOK_SECRET))
        self.responses.append((hook.event, resp.status_code, resp.get_json(silent=True) or {}))
        return resp

    def deliver_events(self, *, settle: bool = True, rounds: int = 10) -> list[Webhook]:
        """Deliver what the fake recorded, let the bot work, and again with what that caused."""
        delivered: list[Webhook] = []
        for _ in range(rounds):
            events = self.fake.drain_events()
            if not events:
                break
            for hook in events:
                assert self.deliver(hook).status_code in (200, 202), hook.event
            delivered += events
            if settle:
                self.settle()
        return delivered

    def registry_push(self, provider: str, payload: dict[str, Any], **query: str) -> Any:
        params = {"token": REGISTRY_TOKEN, **query}
        resp = self.client.post(f"/webhooks/registry/{provider}", json=payload, query_string=params)
        self.responses.append((f"registry/{provider}", resp.status_code, resp.get_json(silent=True) or {}))
        return resp

    # ------------------------------------------------------------------ waiting
    def idle(self) -> bool:
        return self.queue.pending() == 0 and next(iter(self.queue.store.items("run:")), None) is None

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until no job is queued, scheduled or running (twice in a row, a little apart)."""
        deadline = time.monotonic() + timeout
        calm = 0
        while calm < 2:
            if time.monotonic() > deadline:
                raise AssertionError(f"the queue did not settle in {timeout}s: {self.queue.pending()} pending")
            calm = calm + 1 if self.idle() else 0
            time.sleep(0.05)
        self.fake.assert_healthy()

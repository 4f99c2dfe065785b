"""`prbot demo --serve`: try the real App before installing it.

The served App — its Flask web app (webhooks and the environments page) and its queue worker with
the real job handlers (`prbot.service.handlers`) — runs on 127.0.0.1 against the in-process
stand-ins of `prbot demo` instead of GitHub and the clusters: the worker's GitHub client is a
`StandinApp` over the `MemoryForge`, its deployer the `StandinClusters`.  A player then acts as
the outside world does, over HTTP: the registry's push webhook, and GitHub's `pull_request`
webhooks (signed with the webhook secret) when a PR opens and merges.  The environments page
(`/status`, token access with a token made for this run) shows push → bump PR → plan → merge →
deploy → promotion as the worker does it; the process serves until Ctrl-C (or `linger` seconds).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import tempfile
import threading
import time
import urllib.request
import uuid
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from werkzeug.serving import WSGIRequestHandler, make_server

import prbot.service.handlers  # noqa: F401  (registers the job handlers the worker runs)
from prbot import flows
from prbot.demo import DIGEST, PUSHED, REPO, make_world
from prbot.errors import NotFound, PrbotError
from prbot.ports import PullRequest
from prbot.repoindex import RepoIndex
from prbot.service.app import create_app
from prbot.service.boards import StoreBoards
from prbot.service.jobs import Job
from prbot.service.queue import Queue
from prbot.service.settings import Secret, Settings
from prbot.service.worker import Worker
from prbot.standins import MemoryForge

INSTALLATION = 1
STEP_TIMEOUT = 300.0


class _Quiet(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


@dataclass(frozen=True)
class _Repository:
    full_name: str


class StandinApp:
    """What the worker's handlers ask of the GitHub App (`prbot.github.GitHubApp`), over one
    stand-in repository."""

    def __init__(self, forge: MemoryForge) -> None:
        self._forge = forge

    def forge(self, installation_id: int, full_name: str) -> MemoryForge:
        if installation_id != INSTALLATION or full_name != self._forge.full_name:
            raise NotFound(f"{full_name} is not installed", status=404)
        return self._forge

    def bot_login(self) -> str:
        return self._forge.bot_login

    def installation_ids(self) -> list[int]:
        return [INSTALLATION]

    def repositories(self, installation_id: int) -> list[_Repository]:
        return [_Repository(self._forge.full_name)] if installation_id == INSTALLATION else []


class Player:
    """The outside world, over HTTP: the registry and GitHub's webhooks."""

    def __init__(self, base_url: str, forge: MemoryForge, webhook_secret: str, registry_token: str,
                 say: Callable[[str], None], stop: threading.Event) -> None:
        self.base, self.forge, self.secret, self.token = base_url, forge, webhook_secret, registry_token
        self.say, self.stop = say, stop

    def play(self) -> bool:
        say = self.say
        say(f"1. The registry reports a push of {PUSHED}")
        self._post("/webhooks/registry/generic", {"image": PUSHED, "digest": DIGEST},
                   {"Authorization": f"Bearer {self.token}"})
        bump = self._wait("the bump PR", lambda: self._pull("bump"))
        if bump is None:
            return False
        say(f"2. The worker opened the bump PR #{bump.number} ({bump.title}); GitHub tells prbot, which plans it")
        self._pull_event("opened", bump)
        if self._wait("the plan check", lambda: self._check_passed(bump)) is None:
            return False
        merged = self.forge.run_auto_merge() or [bump.number]
        if not self.forge.get_pull(bump.number).merged:
            self.forge.merge_pull(bump.number, sha=self.forge.get_pull(bump.number).head_sha, method="merge")
        say(f"3. PR #{merged[0]} is merged (auto-merge into dev); GitHub tells prbot, which deploys the merge")
        self._pull_event("closed", self.forge.get_pull(bump.number))
        promotion = self._wait("the promotion PR", lambda: self._pull("promote"))
        if promotion is None:
            return False
        say(f"4. dev became healthy: the worker opened the promotion PR #{promotion.number} ({promotion.title})")
        self._pull_event("opened", promotion)
        self._wait("the promotion's plan", lambda: self._check_passed(promotion))
        say("5. Done: the page shows the promotion waiting for review.")
        return True

    # -- helpers ------------------------------------------------------------------------------
    def _pull(self, label: str) -> PullRequest | None:
        found = [p for _, p in sorted(self.forge.pulls.items()) if label in p.labels and p.state == "open"]
        return found[0] if found else None

    def _check_passed(self, pr: PullRequest) -> bool | None:
        run = self.forge.find_check_run(self.forge.get_pull(pr.number).head_sha, flows.CHECK_NAME)
        return True if run is not None and run.status == "completed" else None

    def _wait(self, what: str, found: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + STEP_TIMEOUT
        while time.monotonic() < deadline and not self.stop.is_set():
            value = found()
            if value is not None:
                return value
            time.sleep(0.2)
        if not self.stop.is_set():
            self.say(f"gave up waiting for {what} after {STEP_TIMEOUT:.0f}s")
        return None

    def _pull_event(self, action: str, pr: PullRequest) -> None:
        body = {"action": action, "number": pr.number, "installation": {"id": INSTALLATION},
                "repository": {"full_name": REPO, "default_branch": self.forge.default_branch},
                "sender": {"login": pr.author, "type": "Bot" if pr.author.endswith("[bot]") else "User"},
                "pull_request": {"number": pr.number, "title": pr.title, "state": pr.state, "draft": pr.draft,
                                 "merged": pr.merged, "merge_commit_sha": pr.merge_commit_sha,
                                 "head": {"ref": pr.head_ref, "sha": pr.head_sha},
                                 "base": {"ref": pr.base_ref, "sha": pr.base_sha},
                                 "labels": [{"name": name} for name in pr.labels], "user": {"login": pr.author},
                                 "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
        raw = json.dumps(body).encode()
        signature = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
        self._post("/webhooks/github", raw, {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": str(uuid.uuid4()),
                                             "X-Hub-Signature-256": signature})

    def _post(self, path: str, body: dict[str, Any] | bytes, headers: dict[str, str]) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
        with urllib.request.urlopen(req, timeout=30) as resp:          # noqa: S310 - our own 127.0.0.1 server
            if resp.status not in (200, 202):
                raise PrbotError(f"{path} answered {resp.status}")


def serve_demo(out: TextIO, *, host: str = "127.0.0.1", port: int = 8080, open_browser: bool = False,
               linger: float | None = None, stop: threading.Event | None = None, workdir: Path | None = None) -> int:
    """Serve the App on the stand-ins and play the story; then serve until `stop` is set, Ctrl-C,
    or `linger` seconds.  0 when the story reached the promotion PR."""
    stop = stop or threading.Event()

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    with tempfile.TemporaryDirectory(prefix="prbot-demo-serve-") as tmp:
        base = Path(workdir or tmp)
        world = make_world(base / "world", lambda what, body: say(f"   · bot: {what}"))
        page_token, webhook_secret, registry_token = (secrets.token_urlsafe(18) for _ in range(3))
        settings = Settings(github_webhook_secret=Secret(webhook_secret), registry_token=Secret(registry_token),
                            data_dir=base / "service", status_page="token", status_token=Secret(page_token),
                            deploy_poll=1.0, poll_max_delay=0.2, heartbeat_seconds=1.0, lease_seconds=10.0,
                            retry_base=0.5, retry_max=5.0)
        queue = Queue(settings)
        app = create_app(settings, queue=queue, configure_logging=False,
                         boards=StoreBoards(queue.store, queue, refresh=2.0))
        worker = Worker(settings, threads=2)
        worker.runtime.services["github"] = StandinApp(world.forge)
        worker.runtime.services["deployer"] = world.clusters
        server = make_server(host, port, app, threaded=True, request_handler=_Quiet)
        served = threading.Thread(target=server.serve_forever, name="prbot-demo-web", daemon=True)
        worker.start()
        served.start()
        queue.enqueue(Job("index_repo", {"installation": INSTALLATION}, repo=REPO))   # as an installation does
        deadline = time.monotonic() + STEP_TIMEOUT
        while RepoIndex(queue.store).get(REPO) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        base_url = f"http://{host}:{server.server_port}"
        page = f"{base_url}/status/{REPO}?token={page_token}"
        say(f"prbot is serving on {base_url} (web app + worker, on stand-ins for GitHub and the clusters).\n"
            f"The environments page: {page}")
        if open_browser:
            webbrowser.open(page)
        try:
            ok = Player(base_url, world.forge, webhook_secret, registry_token, say, stop).play()
            say("Serving until Ctrl-C." if linger is None else f"Serving for {linger:g}s more.")
            stop.wait(linger)
        except KeyboardInterrupt:
            ok = True
        finally:
            server.shutdown()
            served.join(10)
            worker.stop(graceful=True, timeout=60)          # running jobs end before their files go
            queue.close()
        say("Stopped.")
    return 0 if ok else 1

"""Helpers for the service tests: fixtures, signing, waiting, free ports, a private redis-server."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from support import PROJECT

WEBHOOK_SECRET = "whsec-test-3f1c9a7e55d0"
REGISTRY_TOKEN = "regtok-test-8b2e64c1a9f7"


def _fixtures_dir() -> Path:
    candidates = [os.environ.get("PRBOT_FIXTURES"), PROJECT.parent / "shared" / "fixtures",
                  PROJECT.parent.parent / "shared" / "fixtures", "/work/shared/fixtures"]
    for c in candidates:
        if c and (Path(c) / "registry").is_dir():
            return Path(c)
    raise RuntimeError("shared/fixtures not found beside the checkout (set PRBOT_FIXTURES)")


FIXTURES = _fixtures_dir()
GITHUB_FIXTURES = FIXTURES / "github-webhooks"
REGISTRY_FIXTURES = FIXTURES / "registry"


def fixture_bytes(name: str) -> bytes:
    return (GITHUB_FIXTURES / name).read_bytes()


def sign(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(body: bytes, event: str, delivery: str, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": sign(body, secret), "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
            "Content-Type": "application/json"}


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns a truthy value (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(method: str, url: str, body: bytes | None = None,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, data = http(method, url, body, headers)
    return status, json.loads(data) if data else None


def wait_http_ok(url: str, timeout: float = 60.0, proc: subprocess.Popen[Any] | None = None) -> None:
    def ok() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before answering {url}")
        try:
            return http("GET", url, timeout=2)[0] == 200
        except OSError:
            return False

    wait_for(ok, timeout, f"{url} to answer 200")


@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A private redis-server on a free local port (no persistence); yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp), "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(port=port, socket_connect_timeout=1)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {proc.returncode}")
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for(up, 20, "redis-server to start")
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

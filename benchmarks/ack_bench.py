"""Webhook acknowledgement latency of a served prbot (issue 7: median under 50 ms).

Starts `prbot serve` (gunicorn + the in-process worker, SQLite queue in a temporary data dir,
GITHUB_API_URL pointing at a closed local port so GitHub is unreachable), then sends real HTTP
requests from this process over one keep-alive connection: signed `pull_request` deliveries
(the real octokit sample, each with a new delivery id), a few replays (duplicates) and registry
pushes.  The in-process worker consumes the jobs meanwhile (no handler is registered, so each job
ends at once), as it would in production.  Prints the median, p90, p99 and max per kind.

Run: python benchmarks/ack_bench.py [--requests 300] [--backend sqlite|procfile]
  sqlite:   `prbot serve` (one process, the Dockerfile's command)
  procfile: the Procfile's gunicorn web command (2 worker processes; no queue worker)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import free_port, wait_up  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-webhook-secret"
TOKEN = "bench-registry-token"


def _fixture(name: str) -> bytes:
    for base in (ROOT.parent / "shared", ROOT.parent.parent / "shared", Path("/work/shared")):
        path = base / "fixtures" / name
        if path.is_file():
            return path.read_bytes()
    raise SystemExit(f"fixture {name} not found (shared/fixtures beside the checkout)")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def _app_key() -> str:
    """A real RSA key: `prbot serve` refuses a private key the App could not sign its JWT with."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=300, help="signed GitHub deliveries to send (max 5000)")
    ap.add_argument("--backend", choices=("sqlite", "procfile"), default="sqlite")
    args = ap.parse_args()
    n = max(10, min(args.requests, 5000))
    body = _fixture("github-webhooks/pull_request.opened.json")
    acr = _fixture("registry/acr-aliyun.push.json")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": _app_key(), "GITHUB_WEBHOOK_SECRET": SECRET,
               "PRBOT_REGISTRY_TOKEN": TOKEN, "PRBOT_REGISTRY_RATE_LIMIT": "0",
               "PRBOT_DATA_DIR": tmp, "PORT": str(port),
               "GITHUB_API_URL": f"http://127.0.0.1:{free_port()}"}       # nothing listens there
        bindir = Path(sys.executable).parent
        if args.backend == "sqlite":
            argv = [str(bindir / "prbot"), "serve", "--port", str(port)]
        else:
            web = (ROOT / "Procfile").read_text().splitlines()[0].split(": ", 1)[1]
            argv = [str(bindir / "gunicorn"), *shlex.split(web)[1:]]
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_up(port, proc)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            timings: dict[str, list[float]] = {"github (new delivery)": [], "github (duplicate)": [],
                                               "registry (acr)": []}
            signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()

            def post(kind: str, path: str, data: bytes, headers: dict[str, str], expect: int) -> None:
                start = time.perf_counter()
                conn.request("POST", path, body=data, headers=headers)
                resp = conn.getresponse()
                resp.read()
                timings[kind].append((time.perf_counter() - start) * 1000)
                if resp.status != expect:
                    raise SystemExit(f"{kind}: expected {expect}, got {resp.status}")

            for _ in range(20):                                           # warm-up
                post("github (new delivery)", "/webhooks/github", body,
                     {"X-Hub-Signature-256": signature, "X-GitHub-Event": "pull_request",
                      "X-GitHub-Delivery": str(uuid.uuid4())}, 202)
            timings = {k: [] for k in timings}
            last = ""
            for i in range(n):
                last = str(uuid.uuid4())
                post("github (new delivery)", "/webhooks/github", body,
                     {"X-Hub-Signature-256": signature, "X-GitHub-Event": "pull_request", "X-GitHub-Delivery": last},
                     202)
                if i % 10 == 0:
                    post("github (duplicate)", "/webhooks/github", body,
                         {"X-Hub-Signature-256": signature, "X-GitHub-Event": "pull_request",
                          "X-GitHub-Delivery": last}, 200)
                    post("registry (acr)", f"/webhooks/registry/acr?token={TOKEN}", acr, {}, 202)
            print(f"prbot webhook ack latency, {args.backend}, {n} deliveries of {len(body)} bytes, "
                  f"GitHub unreachable ({os.cpu_count()} cores)")
            for kind, values in timings.items():
                print(f"  {kind:24s} n={len(values):5d}  median {statistics.median(values):6.1f} ms  "
                      f"p90 {_pct(values, 90):6.1f} ms  p99 {_pct(values, 99):6.1f} ms  max {max(values):6.1f} ms")
            median = statistics.median(timings["github (new delivery)"])
            print(json.dumps({"median_ms": round(median, 2), "aim_ms": 50, "ok": median < 50}))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())

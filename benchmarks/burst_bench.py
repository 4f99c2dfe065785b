"""Burst benchmark (issue 7): a burst of registry pushes against GitHub's write pace.

Builds a synthetic GitOps repository with N images (one kustomize app each, dev/staging/prod
overlays; half the images `policy: semver`, half `policy: pushed`) in the fake GitHub of
`tests/fakegithub`, paced at GitHub's documented 80 content-creating requests a minute (more get the
secondary-rate-limit 403 with `Retry-After`).  Starts `prbot serve` against it (gunicorn, the SQLite
queue and its in-process worker, production retry settings), fires the burst over HTTP — every
image pushed several times, out of order, tags repeated, some refused by the image's `tags` rule —
and waits until every image has its one bump PR at its highest version (semver) or its last pushed
tag (pushed), labelled.  Prints:

  pushes, PRs opened, API writes (and per PR), secondary-rate-limit answers, elapsed time,
  the pace's floor (writes / pace) and elapsed / floor (aim <= 1.5).

Run from a checkout: python benchmarks/burst_bench.py [--images 12] [--pushes 60] [--quick]
(the real kubectl must be on PATH or in .tools/bin: `prbot tools install` or scripts/fetch-tools).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT), str(ROOT / "tests")]
TOOLS = ROOT / ".tools" / "bin"

from fakegithub import FakeGitHub  # noqa: E402
from serving import free_port, wait_up  # noqa: E402

from prbot.branches import bump_branch  # noqa: E402
from prbot.images import parse_semver  # noqa: E402

REPO = "acme/gitops"
ENVS = ("dev", "staging", "prod")
SECRET = "bench-webhook-secret"
TOKEN = "bench-registry-token"
SEMVER_RULE = r"^v[0-9]+\.[0-9]+\.[0-9]+$"
SHA_RULE = "^[0-9a-f]{7,40}$"


# --------------------------------------------------------------------------------------------
# The GitOps repository and the burst
# --------------------------------------------------------------------------------------------

def image_of(i: int) -> str:
    return f"registry.example.com/bench/svc{i:03d}"


def semver_image(i: int) -> bool:
    return i % 2 == 0


def repo_files(n: int) -> dict[str, str]:
    rules = "".join(f"  - repository: {image_of(i)}\n    policy: {'semver' if semver_image(i) else 'pushed'}\n"
                    f"    tags: '{SEMVER_RULE if semver_image(i) else SHA_RULE}'\n" for i in range(n))
    files = {".prbot.yml": "version: 1\nenvironments:\n" + "".join(f"  - name: {e}\n" for e in ENVS)
             + 'apps:\n  - path: "apps/{app}/envs/{env}"\nimages:\n' + rules}
    for i in range(n):
        app, image = f"svc{i:03d}", image_of(i)
        files[f"apps/{app}/base/kustomization.yaml"] = "resources:\n  - deployment.yaml\n"
        files[f"apps/{app}/base/deployment.yaml"] = (
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}\nspec:\n  selector:\n"
            f"    matchLabels: {{app: {app}}}\n  template:\n    metadata:\n      labels: {{app: {app}}}\n"
            f"    spec:\n      containers:\n        - name: {app}\n          image: {image}:v0.0.0\n")
        start = "v1.0.0" if semver_image(i) else "0000000"
        for env in ENVS:
            files[f"apps/{app}/envs/{env}/kustomization.yaml"] = (
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\n"
                f"images:\n  - name: {image}\n    newTag: \"{start}\"\n")
    return files


def make_burst(n: int, pushes: int, rng: random.Random) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """`pushes` pushes spread over `n` images, interleaved: out of order, repeated (the same push
    delivered again), some refused.  Also the tag each image's PR must end at."""
    per_image: dict[str, list[str]] = {}
    for i in range(n):
        count = pushes // n + (1 if i < pushes % n else 0)
        if semver_image(i):
            tags = [f"v1.{rng.randint(1, 12)}.{rng.randint(0, 9)}" for _ in range(count)]
        else:
            tags = [f"{rng.getrandbits(28):07x}" for _ in range(count)]
        for k in range(1, count):
            roll = rng.random()
            if roll < 0.2:
                tags[k] = tags[rng.randrange(k)]                 # the same tag again
            elif roll < 0.3:
                tags[k] = "latest"                                # refused by the image's `tags`
        per_image[image_of(i)] = tags
    order = [image for image, tags in per_image.items() for _ in tags]
    rng.shuffle(order)
    cursor = Counter[str]()
    sequence = []
    for image in order:
        sequence.append((image, per_image[image][cursor[image]]))
        cursor[image] += 1
    expected: dict[str, str] = {}
    for i in range(n):
        image = image_of(i)
        accepted = [t for _, t in ((im, t) for im, t in sequence if im == image)
                    if re.fullmatch(SEMVER_RULE if semver_image(i) else SHA_RULE, t)]
        if not accepted:
            continue
        if semver_image(i):
            best = max(accepted, key=lambda t: parse_semver(t) or (0, 0, 0, 0, ()))
            if best != "v1.0.0":
                expected[image] = best
        else:
            expected[image] = list(dict.fromkeys(accepted))[-1]       # a repeat is the same push again
    return sequence, expected


# --------------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------------

def _missing(fake: FakeGitHub, expected: dict[str, str]) -> list[str]:
    """The images whose PR is not (yet) open at the expected tag with its labels."""
    pulls = {p.head_ref: p for p in fake.pulls(REPO, state="open")}
    missing = []
    for image, tag in expected.items():
        pr = pulls.get(bump_branch("dev", image))
        if pr is None or pr.title != f"Bump {image} to {tag} in dev" \
                or sorted(fake.labels(REPO, pr.number)) != ["bump", "env:dev", "prbot"]:
            missing.append(image)
    return missing


def _writes_per_pull(fake: FakeGitHub) -> dict[int, int]:
    counts: Counter[int] = Counter()
    created = iter(sorted(p.number for p in fake.pulls(REPO, state="all")))
    for w in fake.api_writes():
        if w.method == "POST" and w.path == f"/repos/{REPO}/pulls":
            counts[next(created)] += 1
        elif m := re.fullmatch(rf"/repos/{REPO}/(?:pulls|issues)/(\d+)(?:/labels)?", w.path):
            counts[int(m.group(1))] += 1
    return dict(counts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    sequence, expected = make_burst(args.images, args.pushes, rng)
    with tempfile.TemporaryDirectory(prefix="prbot-burst-") as tmp, FakeGitHub(Path(tmp) / "github") as fake:
        fake.add_installation("acme")
        fake.create_repo(REPO, files=repo_files(args.images))
        fake.drain_events()
        fake.pace_writes(args.pace)
        port = free_port()
        path = os.environ.get("PATH", "")
        env = {**os.environ, "GITHUB_APP_ID": str(fake.app_id), "GITHUB_PRIVATE_KEY": fake.private_key,
               "GITHUB_WEBHOOK_SECRET": SECRET, "PRBOT_REGISTRY_TOKEN": TOKEN, "PRBOT_REGISTRY_RATE_LIMIT": "0",
               "GITHUB_API_URL": fake.api_url,
               "PRBOT_DATA_DIR": str(Path(tmp) / "data"), "PORT": str(port),
               "PATH": f"{TOOLS}{os.pathsep}{path}" if TOOLS.is_dir() else path}
        log_path = Path(args.log) if args.log else Path(tmp) / "serve.log"
        prbot = str(Path(sys.executable).parent / "prbot")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([prbot, "serve", "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=log)
            workers = [subprocess.Popen([prbot, "worker", "--threads", str(args.threads)], env=env, cwd=ROOT,
                                        stdout=log, stderr=log) for _ in range(args.workers)]
        try:
            wait_up(port, proc)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            started = time.monotonic()
            for image, tag in sequence:
                digest = "sha256:" + hashlib.sha256(f"{image}:{tag}".encode()).hexdigest()
                body = json.dumps({"image": f"{image}:{tag}", "digest": digest}).encode()
                conn.request("POST", f"/webhooks/registry/generic?token={TOKEN}", body=body,
                             headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 202:
                    raise SystemExit(f"push {image}:{tag} answered {resp.status}")
            sent = time.monotonic() - started
            deadline = started + args.timeout
            while _missing(fake, expected):
                if time.monotonic() > deadline or proc.poll() is not None:
                    missing = _missing(fake, expected)
                    raise SystemExit(f"after {time.monotonic() - started:.0f}s {len(missing)} image(s) still lack "
                                     f"their PR: {missing[:5]} (log: {log_path})")
                time.sleep(0.1)
            elapsed = time.monotonic() - started
            writes = len(fake.api_writes())
            time.sleep(args.quiet)                    # nothing more should come: no stray writes
            if len(fake.api_writes()) != writes or _missing(fake, expected):
                raise SystemExit(f"the bot kept writing after the final state (log: {log_path})")
            pulls = fake.pulls(REPO, state="all")
            per_pull = _writes_per_pull(fake)
            limited = sum(1 for r in fake.requests if r.status in (403, 429))
        finally:
            for p in (proc, *workers):
                p.send_signal(signal.SIGTERM)
            for p in (proc, *workers):
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    floor = writes / args.pace * 60.0
    return {"images": args.images, "pushes": len(sequence), "prs": len(pulls),
            "prs_expected": len(expected), "writes": writes,
            "writes_per_pr": round(writes / max(1, len(pulls)), 2), "max_writes_per_pr": max(per_pull.values(),
                                                                                           default=0),
            "rate_limited": limited, "sent_s": round(sent, 2), "elapsed_s": round(elapsed, 2),
            "floor_s": round(floor, 2), "ratio": round(elapsed / floor, 2) if floor else None, "aim": 1.5}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12, help="images (one app each) in the GitOps repository")
    ap.add_argument("--pushes", type=int, default=60, help="pushes in the burst, spread over the images")
    ap.add_argument("--pace", type=int, default=80, help="writes a minute the fake GitHub allows (GitHub: 80)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    ap.add_argument("--quiet", type=float, default=3.0, help="seconds without writes that end the run")
    ap.add_argument("--workers", type=int, default=0, help="`prbot worker` processes beside `prbot serve`")
    ap.add_argument("--threads", type=int, default=2, help="threads of each `prbot worker`")
    ap.add_argument("--log", help="keep the bot's JSON log in this file")
    ap.add_argument("--quick", action="store_true", help="4 images, 20 pushes")
    args = ap.parse_args()
    if args.quick:
        args.images, args.pushes = 4, 20
    if args.images < 1 or args.pushes < args.images:
        ap.error("need at least one image and a push per image")
    result = run(args)
    print(f"prbot burst: {result['pushes']} pushes over {result['images']} images at {args.pace} writes/min, "
          f"prbot serve + {args.workers} worker(s) ({os.cpu_count()} cores)")
    print(f"  PRs opened        {result['prs']} (expected {result['prs_expected']})")
    print(f"  API writes        {result['writes']} ({result['writes_per_pr']} per PR, at most "
          f"{result['max_writes_per_pr']}); {result['rate_limited']} secondary-rate-limit answers")
    print(f"  pushes sent in    {result['sent_s']:.2f} s")
    print(f"  elapsed           {result['elapsed_s']:.2f} s (first push → every PR final)")
    print(f"  pace floor        {result['floor_s']:.2f} s ({result['writes']} writes at {args.pace}/min)")
    print(f"  elapsed / floor   {result['ratio']} (aim <= 1.5)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

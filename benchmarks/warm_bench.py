"""Service benchmark for warm base renders (issue 18): webhook received → check run completed for a
pull request touching N targets, with and without the default branch warmed.

Each round builds the same synthetic GitOps repository (`plan_bench.build_repo`'s layout: APPS
kustomize apps x dev/staging/prod, the first N targets using `components/common`) in the fake
GitHub of `tests/fakegithub`, starts the App in process (the Flask app and a queue worker on
SQLite, `tests/e2e/appkit.Bot`, real kubectl in the render jail, an empty render cache), pushes a
change of the component to main and delivers that push webhook; once the queue is idle (the warm
job done, when warming is on) a PR changing the component again is opened and its webhook is
delivered: the time until the `prbot/plan` check run is completed is measured.  Cold rounds run
with `PRBOT_WARM_TARGETS=0`.  Cold and warm rounds alternate; the best of each is compared.

Run from a checkout: python benchmarks/warm_bench.py [--apps 30] [--targets 60] [--repeat 2]
Prints warm, cold and warm / cold (aim <= 0.6), and the load average beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]
TOOLS = ROOT / ".tools" / "bin"
if TOOLS.is_dir():
    os.environ["PATH"] = f"{TOOLS}{os.pathsep}{os.environ['PATH']}"

from appkit import Bot  # noqa: E402
from fakegithub import FakeGitHub  # noqa: E402
from plan_bench import build_repo  # noqa: E402

from prbot.flows import CHECK_NAME  # noqa: E402

REPO = "acme/gitops"
COMPONENT = "components/common/kustomization.yaml"


def repo_files(apps: int, targets: int) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        root = build_repo(Path(tmp) / "repo", apps, targets)
        return {str(p.relative_to(root)): p.read_text() for p in root.rglob("*")
                if p.is_file() and ".git" not in p.relative_to(root).parts}


def one_round(files: dict[str, str], *, warm: bool) -> tuple[float, int]:
    """Seconds from the PR webhook to its completed check run, and the check's conclusion count."""
    with tempfile.TemporaryDirectory(prefix="prbot-warm-bench-") as tmp, FakeGitHub(Path(tmp) / "gh") as fake:
        fake.add_installation("acme")
        fake.create_repo(REPO, files=files)
        fake.drain_events()
        bot = Bot(Path(tmp), fake, warm_targets=500 if warm else 0)
        try:
            component = files[COMPONENT]
            fake.commit(REPO, "main", {COMPONENT: component.replace("team: platform", "team: platform-v2")})
            bot.deliver_events()                      # the push: the warm job (if on) runs to the end
            head = fake.commit(REPO, "change", {COMPONENT: component.replace("team: platform", "team: platform-v3")})
            fake.drain_events()                       # the branch's own push: nothing to measure
            fake.open_pull(REPO, head="change")
            [hook] = [h for h in fake.drain_events() if h.event == "pull_request"]
            start = time.perf_counter()
            assert bot.deliver(hook).status_code in (200, 202)
            while True:
                runs = [r for r in fake.check_runs(REPO, head) if r.name == CHECK_NAME and r.status == "completed"]
                if runs:
                    break
                if time.perf_counter() - start > 900:
                    raise SystemExit("the check run did not complete in 15 minutes")
                time.sleep(0.02)
            elapsed = time.perf_counter() - start
            assert runs[0].conclusion == "success", runs[0].output
            bot.settle()
            return elapsed, len(runs)
        finally:
            bot.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", type=int, default=30)
    ap.add_argument("--targets", type=int, default=60, help="targets the PR touches (<= 3 x apps)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    files = repo_files(args.apps, args.targets)
    cold: list[float] = []
    warm: list[float] = []
    for _ in range(args.repeat):
        cold.append(one_round(files, warm=False)[0])
        warm.append(one_round(files, warm=True)[0])
        print(f"  round: cold {cold[-1]:.2f}s, warm {warm[-1]:.2f}s (load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"PR touching {args.targets} targets, webhook -> check run completed: cold {min(cold):.2f}s, "
          f"warm {min(warm):.2f}s, warm/cold {min(warm) / min(cold):.2f} (aim <= 0.6)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

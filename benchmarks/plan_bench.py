"""Plan benchmark on a synthetic GitOps repository (issues: plan engine speed, plans at the
renderer's speed).

Prints three ratios:
  (a) plan time for a one-overlay change in a 100 apps x 3 envs repo / the same in a 1-app repo
      (aim <= 1.5: the cost follows the change, not the repo);
  (b) plan time for a change to a component used by 90 targets / serial `kubectl kustomize` of
      those targets at base and head (aim <= 0.60 on 2 cores), with where the plan's time went
      (`prbot plan --timings`: thread-seconds per stage, and prbot's own stages against the
      renders', aim <= 20 %);
  (c) as (a), the way the service plans a pull request: base and head are commits of a bare
      mirror (no working tree), both exported sparsely (aim <= 1.5).
(a) and (b) time the whole CLI process (`prbot plan`, interpreter start and imports included),
with the render jail as configured (on by default); (c) times `make_plan` in process.  (b)'s plan
and serial runs alternate, and the best of each is compared, so a busy machine slows both.

Run: python benchmarks/plan_bench.py [--apps 100] [--repeat 3]
Every plan runs with an empty render cache, so the figures measure rendering, not the cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TOOLS = ROOT / ".tools" / "bin"
if TOOLS.is_dir():
    os.environ["PATH"] = f"{TOOLS}{os.pathsep}{os.environ['PATH']}"

from prbot import gitrepo  # noqa: E402
from prbot.config import load_config  # noqa: E402
from prbot.plan import make_plan  # noqa: E402
from prbot.render import RenderPool  # noqa: E402

ENVS = ("dev", "staging", "prod")
CONFIG = """version: 1
environments:
  - name: dev
  - name: staging
  - name: prod
apps:
  - path: "apps/{app}/envs/{env}"
    namespace: "{app}-{env}"
"""


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.com"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build_repo(dest: Path, apps: int, component_users: int) -> Path:
    """`apps` kustomize apps x 3 envs; the first `component_users` targets use components/common."""
    _write(dest / ".prbot.yml", CONFIG)
    _write(dest / "components/common/kustomization.yaml",
           "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
           "commonLabels:\n  team: platform\n")
    n = 0
    for i in range(apps):
        app = f"app{i:03d}"
        base = dest / "apps" / app / "base"
        _write(base / "kustomization.yaml", "resources:\n  - deployment.yaml\n  - service.yaml\n"
               "configMapGenerator:\n  - name: cfg\n    literals: [MODE=base]\n")
        _write(base / "deployment.yaml", f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
spec:
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}}}
    spec:
      containers:
        - name: main
          image: registry.example.com/team/{app}:1.0.0
          envFrom: [{{configMapRef: {{name: cfg}}}}]
""")
        _write(base / "service.yaml", f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {app}\n"
               f"spec:\n  selector: {{app: {app}}}\n  ports: [{{port: 80}}]\n")
        for env in ENVS:
            comps = "components:\n  - ../../../../components/common\n" if n < component_users else ""
            n += 1
            _write(dest / "apps" / app / "envs" / env / "kustomization.yaml",
                   f"namespace: {app}-{env}\nresources:\n  - ../../base\n{comps}"
                   f"images:\n  - name: registry.example.com/team/{app}\n    newTag: \"1.0.0\"\n")
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "synthetic")
    return dest


def time_cli_plan(repo: Path, cache: Path, changed: int, checkout: Path = ROOT) -> tuple[float, str]:
    """Seconds for `prbot plan --base HEAD --format json --timings` of the working tree, as a whole
    process with an empty render cache, and its stage table; `checkout`: the prbot to run (another
    one, e.g. an export of an older commit, runs without --timings)."""
    import json

    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "PRBOT_CACHE_DIR": str(cache), "PYTHONPATH": str(checkout)}
    start = time.perf_counter()
    timings = ["--timings"] if checkout == ROOT else []
    proc = subprocess.run([sys.executable, "-c", "import sys; from prbot.cli import main; sys.exit(main())",
                           "plan", "--base", "HEAD", "--format", "json", "--no-cluster", *timings],
                          cwd=repo, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    statuses = [t["status"] for t in json.loads(proc.stdout)["targets"]]
    assert statuses == ["changed"] * changed, statuses
    return elapsed, proc.stderr.strip()


def time_mirror_plan(mirror: Path, cache: Path, base: str, head: str, changed: int) -> float:
    """Seconds for one plan of base...head in a bare mirror, as `time_plan`."""
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["PRBOT_CACHE_DIR"] = str(cache)
    text = gitrepo.read_file(mirror, base, ".prbot.yml")
    assert text is not None
    config = load_config(text.decode())
    start = time.perf_counter()
    plan = make_plan(mirror, config, base, head, pool=RenderPool())
    elapsed = time.perf_counter() - start
    assert not plan.failed, [t.error for t in plan.targets if t.failed]
    statuses = [t.status for t in plan.targets]
    assert statuses == ["changed"] * changed, statuses
    return elapsed


def pull_request_mirror(repo: Path, dest: Path) -> Path:
    """A bare mirror of `repo` holding main and a branch `pr` that changes one overlay's tag."""
    _git(repo, "checkout", "-q", "-b", "pr")
    p = repo / "apps/app000/envs/dev/kustomization.yaml"
    p.write_text(p.read_text().replace('newTag: "1.0.0"', 'newTag: "1.0.2"'))
    _git(repo, "commit", "-q", "-am", "bump app000 in dev")
    _git(repo, "checkout", "-q", "main")
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(dest)], check=True, capture_output=True)
    return dest


def best(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    return min(fn() for _ in range(repeat))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", type=int, default=100)
    ap.add_argument("--component-users", type=int, default=90)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare", type=Path, metavar="DIR",
                    help="also time (b) with the prbot of this checkout (e.g. `git archive` of an older "
                    "commit), alternating with this one: before/after in one run")
    args = ap.parse_args()
    kubectl = shutil.which("kubectl")
    if not kubectl:
        print("kubectl not found: run scripts/fetch-tools", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="prbot-bench-") as tmp:
        t = Path(tmp)
        big = build_repo(t / "big", args.apps, args.component_users)
        small = build_repo(t / "small", 1, 0)
        cache = t / "cache"

        # (a) one overlay changes
        for repo in (big, small):
            p = repo / "apps/app000/envs/dev/kustomization.yaml"
            p.write_text(p.read_text().replace('newTag: "1.0.0"', 'newTag: "1.0.1"'))
        big_t = best(lambda: time_cli_plan(big, cache, 1)[0], args.repeat)
        small_t = best(lambda: time_cli_plan(small, cache, 1)[0], args.repeat)
        for repo in (big, small):
            _git(repo, "checkout", "-q", "--", ".")

        # (c) the same change as a pull request in a bare mirror
        big_mirror = pull_request_mirror(big, t / "big-mirror.git")
        small_mirror = pull_request_mirror(small, t / "small-mirror.git")
        big_m = best(lambda: time_mirror_plan(big_mirror, cache, "main", "pr", 1), args.repeat)
        small_m = best(lambda: time_mirror_plan(small_mirror, cache, "main", "pr", 1), args.repeat)

        # (b) the shared component changes
        comp = big / "components/common/kustomization.yaml"
        comp.write_text(comp.read_text().replace("team: platform", "team: platform-v2"))
        users = [big / "apps" / f"app{i // 3:03d}" / "envs" / ENVS[i % 3] for i in range(args.component_users)]
        def serial() -> float:
            with tempfile.TemporaryDirectory() as base_tree:
                subprocess.run(["git", "worktree", "add", "-q", "--detach", base_tree, "HEAD"], cwd=big,
                               check=True, capture_output=True)
                try:
                    start = time.perf_counter()
                    for d in users:
                        rel = d.relative_to(big)
                        for root in (Path(base_tree), big):
                            subprocess.run([kubectl, "kustomize", str(root / rel)], check=True,
                                           capture_output=True)
                    return time.perf_counter() - start
                finally:
                    subprocess.run(["git", "worktree", "remove", "--force", base_tree], cwd=big, check=True)
        plans: list[tuple[float, str]] = []
        raws: list[float] = []
        others: list[float] = []
        for _ in range(args.repeat):                  # alternating: a busy spell slows both sides
            plans.append(time_cli_plan(big, cache, len(users)))
            raws.append(serial())
            if args.compare:
                others.append(time_cli_plan(big, cache, len(users), checkout=args.compare.resolve())[0])
        plan_t, stages = min(plans)
        raw_t = min(raws)

    print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (at the end)")
    print(f"(a) one-overlay change: {args.apps}-app repo {big_t:.2f}s, 1-app repo {small_t:.2f}s, "
          f"ratio {big_t / small_t:.2f} (aim <= 1.5)")
    print(f"(b) component used by {len(users)} targets: plan {plan_t:.2f}s, serial kubectl kustomize "
          f"x{2 * len(users)} {raw_t:.2f}s, ratio {plan_t / raw_t:.2f} (aim <= 0.60)")
    if others:
        print(f"    {args.compare}: plan {min(others):.2f}s, ratio {min(others) / raw_t:.2f}")
    print("    where the plan's time went (thread-seconds; `own/render`: prbot's stages / the renders', aim <= 20 %):")
    print("\n".join(f"    {line}" for line in stages.splitlines()))
    print(f"(c) one-overlay pull request in a bare mirror: {args.apps}-app mirror {big_m:.2f}s, 1-app mirror "
          f"{small_m:.2f}s, ratio {big_m / small_m:.2f} (aim <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

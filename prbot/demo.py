"""`prbot demo`: the whole flow on a generated sample repository, with no GitHub and no cluster.

registry push -> bump PR into the first environment -> plan comment -> merge -> promotion PR.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TextIO

from prbot.branches import bump_branch, promote_branch
from prbot.config import CONFIG_FILE, load_config_file
from prbot.edit import bump, promote
from prbot.errors import PrbotError
from prbot.images import parse_image
from prbot.plan import make_plan
from prbot.pushes import decide
from prbot.report import render_markdown
from prbot.targets import discover_targets

EXAMPLE = Path(__file__).resolve().parent / "examples" / "gitops"
PUSHED = "registry.cn-hangzhou.aliyuncs.com/demo/shop:1.2.0"


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "prbot", "GIT_AUTHOR_EMAIL": "prbot@example.com",
           "GIT_COMMITTER_NAME": "prbot", "GIT_COMMITTER_EMAIL": "prbot@example.com",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    proc = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def _section(out: TextIO, title: str) -> None:
    print(f"\n{'═' * 100}\n▶ {title}\n{'═' * 100}", file=out)


def generate_repo(dest: Path) -> Path:
    """A git repository holding the sample GitOps repo, one commit on `main`."""
    shutil.copytree(EXAMPLE, dest)
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "Initial GitOps repository")
    return dest


def _keep_dir(keep: Path) -> Path:
    """`--keep DIR`: a new or empty directory to hold the sample repository."""
    keep = Path(keep).expanduser().absolute()
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise PrbotError(f"{keep}: exists and is not an empty directory (--keep needs a new or empty one)")
    if keep.is_dir():
        keep.rmdir()                      # generate_repo copies into a new directory
    return keep


def run_demo(out: TextIO, workdir: Path | None = None, keep: Path | None = None) -> int:
    """Narrate the flow on a sample repository created in `keep` (kept), else in a temporary
    directory (`workdir` when given) that is deleted at the end."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="prbot-demo-") as tmp:
        repo = generate_repo(_keep_dir(keep) if keep is not None else Path(workdir or tmp) / "gitops")
        config = load_config_file(repo / CONFIG_FILE)
        where = "kept" if keep is not None else "temporary, deleted at the end; prbot demo --keep DIR keeps it"
        print(f"Sample GitOps repository: {repo}  ({where}; environments: {' → '.join(config.env_names)})",
              file=out)

        _section(out, f"1. A registry push arrives: {PUSHED}")
        pushed = parse_image(PUSHED)
        decision = decide(config, pushed, current_tag=None)
        print(f"images[] rule {decision.rule.repository if decision.rule else '-'}: {decision.reason}", file=out)
        if not decision.accepted or decision.env is None:
            return 1
        env = decision.env

        branch = bump_branch(env, pushed.repository)
        _section(out, f"2. prbot opens the bump PR: branch {branch} → main")
        _git(repo, "checkout", "-q", "-b", branch)
        result = bump(repo, config, str(decision.image), env)
        for e in result.edits:
            print(f"  {e.target}: {e.path} {e.old} → {e.new}", file=out)
        _git(repo, "commit", "-q", "-am", f"Bump {pushed.repository} to {pushed.tag} in {env}")

        _section(out, "3. The plan comment prbot posts on the PR (and the check run prbot/plan)")
        plan = make_plan(repo, config, "main", branch)
        print("\n\n".join(render_markdown(plan)), file=out)
        print(f"\ncheck run prbot/plan: {'failure' if plan.failed else 'success'}", file=out)

        _section(out, "4. A reviewer approves and merges")
        _git(repo, "checkout", "-q", "main")
        _git(repo, "merge", "-q", "--no-ff", "-m", f"Merge {branch}", branch)
        merge_sha = _git(repo, "rev-parse", "HEAD")
        targets = {(t.app, t.env): t for t in discover_targets(config, repo)}
        for t in plan.targets:
            spec = config.apps[targets[(t.app, t.env)].app_index]
            how = spec.sync.kind if spec.sync else "no sync configured"
            print(f"  deployment {t.env} @ {merge_sha[:7]}: sync {t.app}-{t.env} via {how}, "
                  f"then wait until healthy", file=out)

        nxt = config.next_env(env)
        if nxt is None:
            return 0
        _section(out, f"5. {env} is healthy: prbot opens the promotion PR {env} → {nxt.name}")
        for app in sorted({t.app for t in plan.targets}):
            pbranch = promote_branch(nxt.name, app)
            _git(repo, "checkout", "-q", "-b", pbranch, "main")
            presult = promote(repo, config, env, nxt.name, app)
            for e in presult.edits:
                print(f"  {e.target}: {e.path} {e.old} → {e.new}", file=out)
            if not presult.edits:
                print(f"  {app}: nothing to promote", file=out)
                continue
            _git(repo, "commit", "-q", "-am", f"Promote {app} from {env} to {nxt.name}")
            pplan = make_plan(repo, config, "main", pbranch)
            print(f"\nbranch {pbranch} → main, plan comment:\n", file=out)
            print("\n\n".join(render_markdown(pplan)), file=out)
        print(f"\nDemo finished in {time.monotonic() - started:.1f}s.", file=out)
        if keep is not None:
            print(f"The sample repository is kept in {repo}, with the PR branches: try\n"
                  f"  prbot targets --repo {repo}\n"
                  f"  prbot plan --repo {repo} --base main --head {promote_branch(nxt.name, 'shop')}",
                  file=out)
    return 0


"""`prbot demo`: the whole story on a sample repository, with no GitHub and no cluster.

registry push → bump PR → plan comment and check → merge → sync → healthy → promotion PR, then a
few `/prbot` commands.  Every step is the worker's own use case (`prbot.flows`, wired as
`prbot.service.handlers` wires them) run against in-process stand-ins (`prbot.standins`): GitHub is a
`MemoryForge` over a real bare repository, the repository mirror is the real `prbot.workspace.Mirror`
cloning it through its ``file://`` URL, the store is a `MemoryStore`, and the clusters are
`StandinClusters` playing Argo CD and Flux one step per poll.  What the bot posts is printed as it
posts it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from prbot import flows
from prbot.config import CONFIG_FILE, load_config_file
from prbot.errors import PrbotError
from prbot.images import parse_image
from prbot.ports import Permission
from prbot.pushes import decide
from prbot.standins import MemoryForge, MemoryStore, StandinClusters
from prbot.workspace import Mirror

EXAMPLE = Path(__file__).resolve().parent / "examples" / "gitops"
REPO = "acme/gitops"
PUSHED = "registry.cn-hangzhou.aliyuncs.com/demo/shop:1.2.0"
DIGEST = "sha256:" + hashlib.sha256(PUSHED.encode()).hexdigest()     # what the registry would send
RULE = "═" * 100
PEOPLE: dict[str, Permission] = {"carol": "write", "dave": "read", "alice": "admin", "erin": "write"}
SRE = {"acme/sre": {"erin"}}              # prod's deployers: alice and @acme/sre
MAX_POLLS = 40


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Alice", "GIT_AUTHOR_EMAIL": "alice@example.com",
           "GIT_COMMITTER_NAME": "Alice", "GIT_COMMITTER_EMAIL": "alice@example.com",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    proc = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise PrbotError(f"git {args[0]} failed: {proc.stderr.strip()[:300]}")
    return proc.stdout.strip()


def generate_origin(work: Path, origin: Path) -> Path:
    """The sample GitOps repository as GitHub would hold it: a bare repository, one commit on `main`
    (made in `work`, a scratch working tree)."""
    shutil.copytree(EXAMPLE, work)
    _git(work, "init", "-q", "-b", "main")
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "Initial GitOps repository")
    origin.parent.mkdir(parents=True, exist_ok=True)
    _git(work, "clone", "-q", "--bare", str(work), str(origin))
    return origin


def _keep_dir(keep: Path) -> Path:
    """`--keep DIR`: a new or empty directory to hold the sample repository."""
    keep = Path(keep).expanduser().absolute()
    if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        raise PrbotError(f"{keep}: exists and is not an empty directory (--keep needs a new or empty one)")
    return keep


def keep_clone(origin: Path, dest: Path) -> list[str]:
    """A working clone of the stand-in GitHub repository in `dest`, on `main`, with every branch of
    GitHub (the PR branches) as a local branch and no remote (the stand-in is gone after the demo)."""
    if dest.is_dir():
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    _git(dest.parent, "clone", "-q", str(origin), str(dest))
    branches = [b for b in _git(dest, "for-each-ref", "--format=%(refname:lstrip=3)", "refs/remotes/origin/").split()
                if b not in ("HEAD", "main")]
    for branch in branches:
        _git(dest, "branch", "-q", branch, f"origin/{branch}")
    _git(dest, "remote", "remove", "origin")
    return branches


class DemoClock:
    """The flows' clock: real time at the start, then moved on by each poll's delay instead of
    sleeping, so the result comment says how long a real rollout would have taken."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Narrator:
    """Prints the story: sections, what people and registries do, and every post of the bot."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def section(self, title: str) -> None:
        print(f"\n{RULE}\n▶ {title}\n{RULE}", file=self.out)

    def say(self, text: str) -> None:
        print(text, file=self.out)

    def post(self, what: str, body: str) -> None:
        """The stand-in GitHub's listener: one line per write, then the text posted, verbatim."""
        print(f"  → {what}", file=self.out)
        if body:
            print(f"{body.rstrip()}\n", file=self.out)


def _labels(forge: MemoryForge, number: int) -> str:
    return ", ".join(forge.pulls[number].labels) or "none"


def run_demo(out: TextIO, workdir: Path | None = None, keep: Path | None = None, pause: float = 0.0) -> int:
    """Tell the story on a sample repository in a temporary directory (`workdir` when given),
    deleted at the end; with `keep`, a clone of the stand-in GitHub repository is left there.
    `pause`: seconds to wait between polls of the rollout, for a person watching (0 in tests)."""
    started = time.monotonic()
    keep_at = _keep_dir(keep) if keep is not None else None
    with tempfile.TemporaryDirectory(prefix="prbot-demo-") as tmp:
        base = Path(workdir or tmp)
        origin = generate_origin(base / "sample", base / "github" / "acme" / "gitops.git")
        narrator = Narrator(out)
        forge = MemoryForge(REPO, origin, permissions=dict(PEOPLE), teams={k: set(v) for k, v in SRE.items()},
                            required_checks=(flows.CHECK_NAME,), listener=narrator.post)
        clusters = StandinClusters(source=origin)
        clock = DemoClock()
        repo = flows.Repo(forge=forge, workspace=Mirror.for_forge(base / "prbot-data", forge), store=MemoryStore(),
                          bot_login=forge.bot_login, render_cache=base / "render-cache", deployer=clusters,
                          clock=clock)
        config = load_config_file(EXAMPLE / CONFIG_FILE)
        where = (f"kept in {keep_at} at the end" if keep_at is not None
                 else "temporary, deleted at the end; prbot demo --keep DIR keeps it")
        narrator.say(f"Sample GitOps repository: {REPO} on a stand-in GitHub at {forge.clone_url}  ({where})\n"
                     f"environments: {' → '.join(config.env_names)} · clusters: stand-ins playing Argo CD and Flux "
                     f"· people: carol (write), dave (read), alice (admin) and erin (@acme/sre), prod's deployers")

        # 1. push → bump PR ----------------------------------------------------------------------
        image = parse_image(f"{PUSHED}@{DIGEST}")
        narrator.section(f"1. The registry reports a push: {PUSHED}")
        decision = decide(config, image)
        narrator.say(f"images[] rule {decision.rule.repository if decision.rule else '-'}: {decision.reason}\n"
                     f"prbot opens (or updates) the bump PR — what it posts:")
        flows.record_push(repo.store, REPO, flows.Push(image, at=1.0))
        bumped = flows.bump_pending(repo, image.repository)
        if bumped is None or bumped.pull is None:
            narrator.say(f"no bump PR: {bumped.reason if bumped else 'no push recorded'}")
            return 1
        bump_pr = bumped.pull.number
        narrator.say(f"PR #{bump_pr} · branch {bumped.pull.head_ref} · labels: {_labels(forge, bump_pr)}")

        # 2. plan ----------------------------------------------------------------------------------
        narrator.section(f"2. prbot plans PR #{bump_pr}: the sticky plan comment and the check run {flows.CHECK_NAME}")
        planned = flows.plan_pull_request(repo, bump_pr)
        narrator.say(f"check run {flows.CHECK_NAME}: {planned.conclusion}")

        # 3. merge ---------------------------------------------------------------------------------
        narrator.section(f"3. PR #{bump_pr} is merged")
        if not forge.run_auto_merge():
            missing = forge.missing_checks(bump_pr)
            if missing:
                narrator.say(f"PR #{bump_pr} cannot merge: required check {missing[0]} has not passed")
                return 1
            head = forge.get_pull(bump_pr).head_sha
            narrator.say("carol approves and merges:")
            forge.merge_pull(bump_pr, sha=head, method="merge")
        merged = forge.get_pull(bump_pr)
        narrator.say(f"main is now {merged.merge_commit_sha}")

        # 4. deploy --------------------------------------------------------------------------------
        narrator.section("4. The merge deploys: a GitHub Deployment, the sync, and the result comment as it moves")
        state = flows.deploy_merged(repo, clusters, bump_pr)
        if state is None:
            narrator.say("nothing to deploy: no changed target has a cluster and a sync")
            return 1

        def promote(repo: flows.Repo, state: flows.DeployState, entry: Any) -> str | None:
            # as the worker's deploy_poll job does (prbot.service.handlers)
            provenance = flows.Provenance(pr=state.pr, author=state.author, deployment=entry.deployment,
                                          sha=state.sha)
            return flows.promote_healthy(repo, state.sha, entry.env, [t.app for t in entry.targets], provenance)

        # the deploy job schedules the first poll; each poll says when the next one is due
        delay: float | None = None if state.done else flows.deploy.POLL_DELAYS[0]
        polls = 0
        while delay is not None and polls < MAX_POLLS:
            polls += 1
            clock.advance(delay)
            if pause:
                time.sleep(pause)
            narrator.say(f"\n· poll {polls}, {delay:.0f}s later:")
            delay = flows.poll_deploy(repo, clusters, state.sha, promote=promote)
        final = flows.load_state(repo, state.sha)
        if final is None or not final.done:
            narrator.say("the rollout did not finish")
            return 1
        for entry in final.envs:
            took = (entry.finished or clock()) - entry.started
            narrator.say(f"{entry.env}: {entry.state} after {took:.0f}s ({entry.reason})")

        # 5. promotion -----------------------------------------------------------------------------
        promotions = sorted(n for n, p in forge.pulls.items() if "promote" in p.labels and p.state == "open")
        failed = [e.env for e in final.envs if e.state != "healthy"]
        if failed:
            narrator.section(f"5. {', '.join(failed)} did not become healthy: nothing is promoted")
        for number in promotions:
            pr = forge.pulls[number]
            narrator.section(f"5. The promotion PR #{number} ({pr.head_ref}) is planned like any PR")
            narrator.say(f"PR #{number}: {pr.title} · labels: {_labels(forge, number)}")
            flows.plan_pull_request(repo, number)

        # 6. slash commands ------------------------------------------------------------------------
        if promotions:
            number = promotions[0]
            narrator.section(f"6. People talk to prbot on PR #{number}")
            _command(narrator, repo, forge, number, "dave", "/prbot lock staging release freeze")
            _command(narrator, repo, forge, number, "carol", "/prbot promote prod")

        narrator.section("The end")
        for number, pr in sorted(forge.pulls.items()):
            state_word = "merged" if pr.merged else pr.state
            narrator.say(f"PR #{number} [{state_word}] {pr.title}  ({pr.head_ref})")
        for dep in sorted(forge.deployments.values(), key=lambda d: d.id):
            narrator.say(f"deployment {dep.id}: {dep.environment} at {dep.sha[:7]} — "
                         f"{' → '.join(s for s, _ in forge.statuses.get(dep.id, []))}")
        if keep_at is not None:
            branches = keep_clone(origin, keep_at)
            head = next((b for b in branches if b.startswith("prbot/promote/")), "main")
            narrator.say(f"\nThe sample repository is kept in {keep_at}: a clone of the stand-in GitHub repository "
                         f"after the story (main with PR #{bump_pr} merged, and the PR branches "
                         f"{', '.join(branches)}). Try\n"
                         f"  prbot targets --repo {keep_at}\n"
                         f"  prbot plan --repo {keep_at} --base main --head {head}")
        narrator.say(f"\nDemo finished in {time.monotonic() - started:.1f}s.")
    return 0


def _command(narrator: Narrator, repo: flows.Repo, forge: MemoryForge, number: int, user: str, body: str) -> None:
    """A person comments a `/prbot` command; the worker's command job runs it."""
    narrator.say(f"\n{user} ({forge.permission(user)}) comments: {body}")
    comment = forge.add_user_comment(number, user, body)
    flows.run_commands(repo, number=number, comment_id=comment.id, user=user, body=body)

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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from prbot import flows
from prbot.config import CONFIG_FILE, load_config_file
from prbot.errors import PrbotError
from prbot.image_rules import decide
from prbot.images import parse_image
from prbot.ports import Permission
from prbot.standins import Listener, MemoryForge, MemoryStore, StandinClusters
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


@dataclass
class World:
    """The stand-ins the demo runs the flows against."""

    origin: Path                       # the stand-in GitHub's bare repository
    forge: MemoryForge
    clusters: StandinClusters
    clock: DemoClock
    repo: flows.Repo                   # what every flow takes: forge, mirror, store, deployer, clock


def make_world(base: Path, listener: Listener | None = None, *, fail: Iterable[str] = ()) -> World:
    """The sample repository on a stand-in GitHub (`acme/gitops`: carol may write, dave may read,
    alice and erin of @acme/sre deploy prod; `prbot/plan` is a required check), the real mirror of
    it under `base`, a memory store and stand-in clusters; `fail`: targets ("app/env") whose
    rollout fails."""
    origin = generate_origin(base / "sample", base / "github" / "acme" / "gitops.git")
    forge = MemoryForge(REPO, origin, permissions=dict(PEOPLE), teams={k: set(v) for k, v in SRE.items()},
                        required_checks=(flows.CHECK_NAME,), listener=listener)
    clusters = StandinClusters(source=origin, fail=frozenset(fail))
    clock = DemoClock()
    repo = flows.Repo(forge=forge, workspace=Mirror.for_forge(base / "prbot-data", forge), store=MemoryStore(),
                      bot_login=forge.bot_login, render_cache=base / "render-cache", deployer=clusters, clock=clock)
    return World(origin, forge, clusters, clock, repo)


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


def run_demo(out: TextIO, workdir: Path | None = None, keep: Path | None = None, pause: float = 0.0) -> int:
    """Tell the story on a sample repository in a temporary directory (`workdir` when given),
    deleted at the end; with `keep`, a clone of the stand-in GitHub repository is left there.
    `pause`: seconds to wait between polls of the rollout, for a person watching (0 in tests)."""
    started = time.monotonic()
    keep_at = _keep_dir(keep) if keep is not None else None
    with tempfile.TemporaryDirectory(prefix="prbot-demo-") as tmp:
        narrator = Narrator(out)
        story = Story(make_world(Path(workdir or tmp), narrator.post), narrator, pause)
        where = (f"a clone is kept in {keep_at} at the end" if keep_at is not None
                 else "temporary, deleted at the end; prbot demo --keep DIR keeps it")
        narrator.say(f"Sample GitOps repository: {REPO} on a stand-in GitHub at {story.world.origin}  ({where})\n"
                     f"environments: {' → '.join(story.config.env_names)} · clusters: stand-ins playing Argo CD "
                     f"and Flux · people: carol (write), dave (read), alice (admin) and erin (@acme/sre), "
                     f"prod's deployers")
        code = story.tell()
        if code == 0 and keep_at is not None:
            story.keep(keep_at)
        narrator.say(f"\nDemo finished in {time.monotonic() - started:.1f}s.")
    return code


class Story:
    """The steps of the demo, each the worker's job for the event that starts it."""

    def __init__(self, world: World, narrator: Narrator, pause: float = 0.0) -> None:
        self.world, self.narrator, self.pause = world, narrator, pause
        self.forge, self.repo = world.forge, world.repo
        self.config = load_config_file(EXAMPLE / CONFIG_FILE)
        self.bump_pr: int | None = None

    def tell(self) -> int:
        bump_pr = self.push()
        if bump_pr is None:
            return 1
        self.plan(bump_pr, f"2. prbot plans PR #{bump_pr}: the sticky plan comment and the check run "
                           f"{flows.CHECK_NAME}")
        if not self.merge(bump_pr):
            return 1
        state = self.deploy(bump_pr)
        if state is None:
            return 1
        promotions = sorted(n for n, p in self.forge.pulls.items() if "promote" in p.labels and p.state == "open")
        failed = [e.env for e in state.envs if e.state != "healthy"]
        if failed:
            self.narrator.section(f"5. {', '.join(failed)} did not become healthy: nothing is promoted from it")
        for number in promotions:
            pr = self.forge.pulls[number]
            self.plan(number, f"5. The promotion PR #{number} ({pr.head_ref}) is planned like any PR")
        if promotions:
            self.narrator.section(f"6. People talk to prbot on PR #{promotions[0]}")
            self.command(promotions[0], "dave", "/prbot lock staging release freeze")
            self.command(promotions[0], "carol", "/prbot promote prod")
        self.the_end()
        return 0

    # -- the steps --------------------------------------------------------------------------------
    def push(self) -> int | None:
        """A registry push: the `registry_push` job records it, the `bump` job opens the bump PR."""
        say = self.narrator.say
        image = parse_image(f"{PUSHED}@{DIGEST}")
        self.narrator.section(f"1. The registry reports a push: {PUSHED}")
        decision = decide(self.config, image)
        say(f"images[] rule {decision.rule.repository if decision.rule else '-'}: {decision.reason}\n"
            f"prbot opens (or updates) the bump PR — what it posts:")
        flows.record_push(self.repo.store, REPO, flows.Push(image, at=1.0))
        bumped = flows.bump_pending(self.repo, image.repository)
        if bumped is None or bumped.pull is None:
            say(f"no bump PR: {bumped.reason if bumped else 'no push recorded'}")
            return None
        number = bumped.pull.number
        say(f"PR #{number} · branch {bumped.pull.head_ref} · labels: {self._labels(number)}")
        return number

    def plan(self, number: int, title: str) -> None:
        """A PR opened: the `plan` job posts the sticky comment and completes the check run."""
        self.narrator.section(title)
        pr = self.forge.get_pull(number)
        self.narrator.say(f"PR #{number}: {pr.title} · labels: {self._labels(number)}")
        planned = flows.plan_pull_request(self.repo, number)
        self.narrator.say(f"check run {flows.CHECK_NAME}: {planned.conclusion}")

    def merge(self, number: int) -> bool:
        """GitHub merges the PR by itself when auto-merge is on, else a writer merges it."""
        say = self.narrator.say
        self.narrator.section(f"3. PR #{number} is merged")
        if not self.forge.run_auto_merge():
            missing = self.forge.missing_checks(number)
            if missing:
                say(f"PR #{number} cannot merge: the required check {missing[0]} has not passed")
                return False
            say("carol approves and merges:")
            self.forge.merge_pull(number, sha=self.forge.get_pull(number).head_sha, method="merge")
        say(f"main is now {self.forge.get_pull(number).merge_commit_sha}")
        return True

    def deploy(self, number: int) -> flows.DeployState | None:
        """The merge: the `deploy` job starts the sync, then `deploy_poll` jobs follow it, each
        scheduled after the delay the previous one asked for, promoting what turns healthy."""
        say = self.narrator.say
        self.narrator.section("4. The merge deploys: a GitHub Deployment, the sync, and the result comment as it "
                              "moves")
        clusters, clock = self.world.clusters, self.world.clock
        state = flows.deploy_merged(self.repo, clusters, number)
        if state is None:
            say("nothing to deploy: no changed target has a cluster and a sync")
            return None
        delay: float | None = None if state.done else flows.deploy.POLL_DELAYS[0]
        polls = 0
        while delay is not None and polls < MAX_POLLS:
            polls += 1
            clock.advance(delay)
            if self.pause:
                time.sleep(self.pause)
            say(f"\n· poll {polls}, {delay:.0f}s later:")
            delay = flows.poll_deploy(self.repo, clusters, state.sha)
        final = flows.load_state(self.repo, state.sha)
        if final is None or not final.done:
            say(f"the rollout did not finish in {polls} polls")
            return None
        for entry in final.envs:
            took = (entry.finished or clock()) - entry.started
            say(f"{entry.env}: {entry.state} after {took:.0f}s ({entry.reason})")
        return final

    def command(self, number: int, user: str, body: str) -> None:
        """A person comments a `/prbot` command; the `command` job runs it."""
        self.narrator.say(f"\n{user} ({self.forge.permission(user)}) comments: {body}")
        comment = self.forge.add_user_comment(number, user, body)
        flows.run_commands(self.repo, number=number, comment_id=comment.id, user=user, body=body)

    def the_end(self) -> None:
        say = self.narrator.say
        self.narrator.section("The end")
        for number, pr in sorted(self.forge.pulls.items()):
            say(f"PR #{number} [{'merged' if pr.merged else pr.state}] {pr.title}  ({pr.head_ref})")
        for dep in sorted(self.forge.deployments.values(), key=lambda d: d.id):
            say(f"deployment {dep.id}: {dep.environment} at {dep.sha[:7]} — "
                f"{' → '.join(s for s, _ in self.forge.statuses.get(dep.id, []))}")

    def keep(self, dest: Path) -> None:
        branches = keep_clone(self.world.origin, dest)
        head = next((b for b in branches if b.startswith("prbot/promote/")), "main")
        self.narrator.say(f"\nThe sample repository is kept in {dest}: a clone of the stand-in GitHub repository as "
                          f"the story leaves it (main with the bump merged; the PR branches {', '.join(branches)}). "
                          f"Try\n  prbot targets --repo {dest}\n"
                          f"  prbot plan --repo {dest} --base main --head {head}")

    def _labels(self, number: int) -> str:
        return ", ".join(self.forge.pulls[number].labels) or "none"

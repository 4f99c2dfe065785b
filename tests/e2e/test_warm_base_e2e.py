"""Warm base renders (issue 18): a push to the default branch queues a background job rendering its
targets into the worker's render cache, a newer push supersedes an older one, and a PR planned
against the warmed head renders only its head side.

Renders are counted by what they leave behind: one entry per rendering in the render cache
(`<data dir>/render-cache`, keyed by the closure digest), which every job of the worker shares.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from appkit import Bot
from fakegithub import FakeGitHub
from gitops import DEPLOYMENT, overlay, repo_files

from prbot.flows import CHECK_NAME
from prbot.report.markdown import MARKER
from prbot.service.handlers import github_event
from prbot.service.jobs import Job, Runtime
from prbot.service.queue import PRIORITIES, ROUTING, priority_of
from prbot.service.settings import Settings
from prbot.service.store import SqliteStore

REPO = "acme/gitops"
SHA = "a" * 40


def route(body: dict[str, Any], tmp_path: Path, **settings: Any) -> list[Job]:
    queued: list[Job] = []

    def enqueue(job: Job, delay: float) -> str:
        queued.append(job)
        return str(len(queued))

    rt = Runtime(Settings(data_dir=tmp_path, **settings), SqliteStore(tmp_path / "store.db"), enqueue,
                 lambda *a, **k: None)
    github_event(rt, Job("github_event", {"event": "push", "delivery": "d1", "body": body}, delivery="d1"))
    return queued


def push(ref: str = "refs/heads/main", after: str = SHA) -> dict[str, Any]:
    return {"ref": ref, "after": after, "installation": {"id": 7}, "sender": {"login": "carol", "type": "User"},
            "repository": {"full_name": REPO, "default_branch": "main"},
            "commits": [{"added": [], "modified": ["apps/app/base/deployment.yaml"], "removed": []}]}


def test_a_push_to_the_default_branch_queues_a_background_warm_job(tmp_path: Path) -> None:
    [job] = route(push(), tmp_path)
    payload = dict(job.payload)
    assert isinstance(payload.pop("token"), str)
    assert (job.kind, payload) == ("warm_base", {"installation": 7, "repo": REPO, "sha": SHA})
    assert job.supersede == f"warm_base:{REPO}"       # a newer push's job replaces a queued older one
    assert job.repo is None                           # no repository lock: a plan never waits for it
    others = [p for kind, p in PRIORITIES.items() if kind != "warm_base"]
    assert priority_of("warm_base") < min([ROUTING, *others])              # the lowest of every job kind
    assert route(push(ref="refs/heads/feature"), tmp_path) == []             # other branches: nothing
    assert route(push(after="0" * 40), tmp_path) == []                       # a deleted branch: nothing
    assert route(push(after="$(reboot)"), tmp_path) == []                    # not a sha: nothing
    assert route(push(), tmp_path, warm_targets=0) == []                     # warming off


@pytest.fixture
def fake(fake_github: FakeGitHub) -> FakeGitHub:
    fake_github.add_installation("acme")
    fake_github.create_repo(REPO, files=repo_files())
    fake_github.drain_events()
    return fake_github


def cache_entries(bot: Bot) -> set[str]:
    return {p.name for p in (bot.settings.data_dir / "render-cache").glob("??/*.json")}


def two_pushes_then_a_pr(bot: Bot, fake: FakeGitHub) -> tuple[set[str], set[str]]:
    """Two pushes to main the bot hears of together, then a PR from the second one changing one
    target: (cache entries after the pushes, entries the PR's plan added)."""
    for replicas in (2, 3):
        fake.commit(REPO, "main", {"apps/app/base/deployment.yaml": DEPLOYMENT.replace("replicas: 1",
                                                                                      f"replicas: {replicas}")})
    bot.deliver_events()
    warmed = cache_entries(bot)
    head = fake.commit(REPO, "bump", {"apps/app/envs/dev/kustomization.yaml": overlay("2222222")})
    number = fake.open_pull(REPO, head="bump")
    bot.deliver_events()
    [run] = [r for r in fake.check_runs(REPO, head) if r.name == CHECK_NAME]
    assert (run.status, run.conclusion) == ("completed", "success"), run.output
    [comment] = [c.body for c in fake.comments(REPO, number) if c.body.startswith(MARKER)]
    assert "2222222" in comment                                  # the plan of the PR
    return warmed, cache_entries(bot) - warmed


@pytest.fixture
def bot(tmp_path: Path, fake: FakeGitHub) -> Iterator[Bot]:
    b = Bot(tmp_path, fake)
    yield b
    b.stop()


def test_a_pr_against_a_warmed_default_branch_renders_only_its_head(bot: Bot, fake: FakeGitHub) -> None:
    warmed, by_the_plan = two_pushes_then_a_pr(bot, fake)
    # the three targets of the newest main only (whichever job ran, it warmed the head it fetched)
    assert len(warmed) == 3
    # the PR's base side came from the cache: only its head rendering of app/dev is new
    assert len(by_the_plan) == 1


def test_without_warming_the_pr_renders_both_sides(tmp_path: Path, fake: FakeGitHub) -> None:
    bot = Bot(tmp_path, fake, warm_targets=0)
    try:
        warmed, by_the_plan = two_pushes_then_a_pr(bot, fake)
    finally:
        bot.stop()
    assert warmed == set()
    assert len(by_the_plan) == 2

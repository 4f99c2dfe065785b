"""GitHub outages end to end (issue 16): jobs whose transient failures outlast the retry budget go
to the dead-letter set and run once GitHub is back, planning the PR's head of then; a redelivery of
an event whose job failed runs again instead of being taken for a duplicate."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from appkit import Bot
from fakegithub import FakeGitHub
from gitops import overlay, repo_files
from prometheus_client import REGISTRY as PROM
from service_support import wait_for

from prbot.report.markdown import MARKER

REPO = "acme/gitops"
DEV = "apps/app/envs/dev/kustomization.yaml"


@pytest.fixture
def fake(fake_github: FakeGitHub) -> FakeGitHub:
    fake_github.add_installation("acme")
    fake_github.create_repo(REPO, files=repo_files())
    fake_github.set_permission(REPO, "writer", "write")
    fake_github.drain_events()
    return fake_github


@pytest.fixture
def bot(tmp_path: Path, fake: FakeGitHub) -> Iterator[Bot]:
    b = Bot(tmp_path, fake, max_attempts=2, dead_letter_retry=1.0)
    yield b
    b.stop()


def plan_check(fake: FakeGitHub, sha: str) -> object | None:
    return next((r for r in fake.check_runs(REPO, sha) if r.name == "prbot/plan" and r.status == "completed"), None)


def test_github_502_past_the_retry_budget_dead_letters_then_plans_the_current_head(
        bot: Bot, fake: FakeGitHub, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="prbot.worker")
    fake.commit(REPO, "change", {DEV: overlay("abcdef2")}, user="writer")
    number = fake.open_pull(REPO, head="change", user="writer")
    fake.fail(502, times=100_000, path=r"/pulls")                # GitHub answers 502 for minutes
    for hook in fake.drain_events():
        assert bot.deliver(hook).status_code == 202
    wait_for(lambda: list(bot.queue.store.items("dead:")), 60, "the plan to reach the dead-letter set")
    wait_for(lambda: PROM.get_sample_value("prbot_dead_letters") == 1, 10, "the dead-letter gauge")
    assert any("kept in the dead-letter set" in r.getMessage() for r in caplog.records)
    fake.commit(REPO, "change", {DEV: overlay("abcdef3")}, user="writer")   # pushed during the outage,
    fake.drain_events()                                                   # its webhook lost
    head = fake.pull(REPO, number).head_sha
    fake.heal()
    wait_for(lambda: plan_check(fake, head), 60, "the dead-lettered plan to run on the current head")
    bot.settle()
    assert not list(bot.queue.store.items("dead:"))
    wait_for(lambda: PROM.get_sample_value("prbot_dead_letters") == 0, 10, "the gauge to drop")
    [comment] = [c.body for c in fake.comments(REPO, number) if c.body.startswith(MARKER)]
    assert "abcdef3" in comment


def test_a_redelivery_of_an_event_whose_job_failed_runs_again(bot: Bot, fake: FakeGitHub) -> None:
    fake.commit(REPO, "change", {DEV: overlay("abcdef2")}, user="writer")
    number = fake.open_pull(REPO, head="change", user="writer")
    head = fake.pull(REPO, number).head_sha
    fake.fail(422, times=1, method="GET", path=r"/pulls/\d+$")   # the plan fails for good
    [hook] = [h for h in fake.drain_events() if h.event == "pull_request"]
    assert bot.deliver(hook).status_code == 202
    bot.settle()
    assert plan_check(fake, head) is None
    state = json.loads(bot.queue.store.get(f"delivery:{hook.delivery}") or "{}")
    assert state.get("state") == "failed"
    again = bot.deliver(hook)                                        # GitHub's redelivery: the same id
    assert again.status_code == 202 and again.get_json()["status"] == "queued"
    bot.settle()
    assert plan_check(fake, head) is not None
    assert bot.deliver(hook).get_json()["status"] == "duplicate", "once it ran, a redelivery is a duplicate"

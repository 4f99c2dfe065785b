"""`/prbot status` through the served App: the webhook of a writer's comment, the queue, the worker,
the GitHub adapter against the fake GitHub, and the board as the bot's reply."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from appkit import Bot
from fakegithub import FakeGitHub
from gitops import OLD_TAG, acr_push, repo_files

from prbot.report.markdown import MARKER

REPO = "acme/gitops"


@pytest.fixture
def bot(tmp_path: Path, fake_github: FakeGitHub) -> Iterator[Bot]:
    fake_github.add_installation("acme")
    fake_github.create_repo(REPO, files=repo_files())
    fake_github.set_permission(REPO, "reader", "read")
    fake_github.set_permission(REPO, "writer", "write")
    b = Bot(tmp_path, fake_github)
    yield b
    b.stop()


def test_status_replies_with_the_board_and_the_open_bump_pr(bot: Bot, fake_github: FakeGitHub) -> None:
    fake = fake_github
    fake.drain_events()
    assert bot.registry_push("acr", acr_push("3f9c2e1")).status_code == 202
    bot.settle()
    [pr] = fake.pulls(REPO, state="open")
    bot.deliver_events()                                   # its plan comment

    asked = fake.comment(REPO, pr.number, "/prbot status", user="writer")
    bot.deliver_events()
    [reply] = [c.body for c in fake.comments(REPO, pr.number) if c.user.type == "Bot"
               and not c.body.startswith(MARKER)]
    assert reply.startswith(f"### Where every version runs — {REPO}\n")
    assert "| app | dev | staging | prod |" in reply
    assert f"| app | `{OLD_TAG}` / — | `{OLD_TAG}` / — | `{OLD_TAG}` / — |" in reply     # main: the PR is not merged
    assert f"- #{pr.number} Bump " in reply and "— bump into dev (" in reply
    assert "```mermaid\nflowchart LR\n" in reply
    assert [r.content for c in fake.comments(REPO, pr.number) if c.id == asked for r in c.reactions] == [
        "eyes", "rocket"]

    reader = fake.comment(REPO, pr.number, "/prbot status", user="reader")     # no write: reactions only
    bot.deliver_events()
    assert len([c for c in fake.comments(REPO, pr.number) if c.user.type == "Bot"]) == 2
    assert [r.content for c in fake.comments(REPO, pr.number) if c.id == reader for r in c.reactions] == [
        "eyes", "confused"]

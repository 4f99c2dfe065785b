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
from prbot.service.settings import Secret

REPO = "acme/gitops"
TOKEN = "served-status-token-0123456789"


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


def test_the_served_page_is_built_by_the_worker_and_kept(tmp_path: Path, fake_github: FakeGitHub) -> None:
    """The web process renders nothing: the first look asks the worker for the board (a `board`
    job), the page says it is being built, and the next look shows it."""
    fake = fake_github
    fake.add_installation("acme")
    fake.create_repo(REPO, files=repo_files())
    bot = Bot(tmp_path, fake, status_page="token", status_token=Secret(TOKEN))
    try:
        fake.drain_events()
        assert bot.registry_push("acr", acr_push("3f9c2e1")).status_code == 202     # indexes the repository
        bot.settle()
        auth = {"Authorization": f"Bearer {TOKEN}"}
        first = bot.client.get(f"/status/{REPO}", headers=auth)
        assert first.status_code == 200 and b'id="building"' in first.data
        bot.settle()
        page = bot.client.get(f"/status/{REPO}", headers=auth)
        html = page.data.decode()
        assert page.status_code == 200 and 'id="board"' in html and OLD_TAG in html
        assert "Bump " in html and 'data-kind="bump"' in html                      # the open bump PR
        assert "workers: <b" in html and TOKEN not in html
        assert bot.client.get(f"/status/{REPO}").status_code == 401
    finally:
        bot.stop()

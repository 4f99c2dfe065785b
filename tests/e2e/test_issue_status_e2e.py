"""`/prbot status` on a plain issue (not a PR) through the served App: the fake GitHub's issue, its
`issue_comment` webhook (no `pull_request` key in `issue`) signed and posted to the app, the queue,
the worker, and the board posted on that issue.  An issue runs `status` and `help` only: the commands
that act on a PR or an environment are refused there with a reply and change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from appkit import Bot
from fakegithub import FakeGitHub, Webhook
from gitops import OLD_TAG, acr_push, repo_files

from prbot.flows import get_lock

REPO = "acme/gitops"
NOT_PULL = "this command works on pull requests only (on an issue: `/prbot status`, `/prbot help`)"


@pytest.fixture
def bot(tmp_path: Path, fake_github: FakeGitHub) -> Iterator[Bot]:
    fake_github.add_installation("acme")
    fake_github.create_repo(REPO, files=repo_files())
    fake_github.set_permission(REPO, "reader", "read")
    fake_github.set_permission(REPO, "writer", "write")
    b = Bot(tmp_path, fake_github)
    yield b
    b.stop()


def bot_replies(fake: FakeGitHub, number: int) -> list[str]:
    return [c.body for c in fake.comments(REPO, number) if c.user.type == "Bot"]


def reactions(fake: FakeGitHub, number: int, comment_id: int) -> list[str]:
    return [r.content for c in fake.comments(REPO, number) if c.id == comment_id for r in c.reactions]


def comment_hook(fake: FakeGitHub) -> Webhook:
    """The one `issue_comment` webhook the fake recorded since the last drain (the others dropped)."""
    [hook] = [h for h in fake.drain_events() if h.event == "issue_comment"]
    return hook


def test_status_on_an_issue_posts_the_board_there_once(bot: Bot, fake_github: FakeGitHub) -> None:
    fake = fake_github
    fake.drain_events()
    assert bot.registry_push("acr", acr_push("3f9c2e1")).status_code == 202
    bot.settle()
    [pr] = fake.pulls(REPO, state="open")
    bot.deliver_events()                                   # its plan comment
    issue = fake.open_issue(REPO, title="Where does app run?", user="writer")
    assert issue == pr.number + 1                          # one number sequence for issues and PRs
    bot.deliver_events()                                   # `issues.opened`: acknowledged, nothing done
    assert bot_replies(fake, issue) == []

    asked = fake.comment(REPO, issue, "/prbot status", user="writer")
    hook = comment_hook(fake)
    assert "pull_request" not in hook.payload["issue"] and hook.payload["issue"]["number"] == issue
    assert bot.deliver(hook).status_code == 202
    bot.settle()
    [board] = bot_replies(fake, issue)
    assert board.startswith(f"### Where every version runs — {REPO}\n")
    assert "| app | dev | staging | prod |" in board
    assert f"| app | `{OLD_TAG}` / — | `{OLD_TAG}` / — | `{OLD_TAG}` / — |" in board
    assert f"- #{pr.number} Bump " in board                # the open bump PR is on the board
    assert "```mermaid\nflowchart LR\n" in board
    assert reactions(fake, issue, asked) == ["eyes", "rocket"]
    assert len(bot_replies(fake, pr.number)) == 1          # the PR got nothing but its plan

    writes = len(fake.api_writes())
    assert bot.deliver(hook).status_code in (200, 202)     # GitHub's redelivery: the same delivery id
    assert bot.deliver(Webhook(hook.event, hook.payload)).status_code in (200, 202)     # a new delivery id
    bot.settle()
    assert bot_replies(fake, issue) == [board]
    assert len(fake.api_writes()) == writes                # no second board, no reaction

    outsider = fake.comment(REPO, issue, "/prbot status", user="reader")       # read permission
    bot.deliver_events()
    assert bot_replies(fake, issue) == [board]
    assert reactions(fake, issue, outsider) == ["eyes", "confused"]
    fake.comment(REPO, issue, "/prbot help", user="reader")                     # what outsiders get
    bot.deliver_events()
    assert len(bot_replies(fake, issue)) == 2
    assert bot_replies(fake, issue)[1].startswith("**prbot commands**")


def test_pr_and_environment_commands_on_an_issue_are_refused_and_change_nothing(
        bot: Bot, fake_github: FakeGitHub) -> None:
    fake = fake_github
    fake.drain_events()
    main = fake.branch_sha(REPO, "main")
    issue = fake.open_issue(REPO, title="ship it", user="writer")
    bot.deliver_events()
    asked = fake.comment(REPO, issue, "/prbot sync dev\n/prbot promote prod\n/prbot lock prod freeze\n"
                                      "/prbot rollback prod\n/prbot merge", user="writer")
    bot.deliver_events()
    [reply] = bot_replies(fake, issue)
    lines = reply.splitlines()
    for command in ("/prbot sync dev", "/prbot promote prod", "/prbot lock prod freeze", "/prbot rollback prod"):
        assert f"- `{command}`: failed — {NOT_PULL}" in lines
    assert any(line.startswith("- `/prbot merge`: ") for line in lines)      # no such command: said so
    assert reactions(fake, issue, asked) == ["eyes", "confused"]
    store = bot.queue.store
    assert get_lock(store, REPO, "prod") is None
    assert fake.pulls(REPO) == [] and fake.deployments(REPO) == []
    assert fake.branch_sha(REPO, "main") == main and fake.issues(REPO)[0].state == "open"

    # an outsider's attempt, with mentions and a link to echo: no reply at all, nothing changed
    writes = len(fake.api_writes())
    sneaky = fake.comment(REPO, issue, "/prbot lock prod @everyone https://evil.example\n/prbot sync dev",
                          user="reader")
    bot.deliver_events()
    assert bot_replies(fake, issue) == [reply]
    assert reactions(fake, issue, sneaky) == ["eyes", "confused"]
    assert len(fake.api_writes()) == writes + 2            # the two reactions only
    assert get_lock(store, REPO, "prod") is None and fake.pulls(REPO) == []

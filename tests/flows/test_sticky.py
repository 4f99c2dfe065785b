"""The sticky comment (`prbot.flows.sticky`): a PR's bot comments of one kind are made exactly the
parts given — edited in place, created when missing, the surplus deleted — and nobody else's."""

from __future__ import annotations

import pytest
from flowkit import GitOps

from prbot import flows
from prbot.ports import PullRequest

MARK = "<!-- test:sticky -->"


def mine(body: str) -> bool:
    return body.startswith(MARK)


@pytest.fixture
def pr(gitops: GitOps) -> PullRequest:
    return gitops.open_pr("feature", {"NOTES.md": "notes\n"})


def writes(gitops: GitOps) -> list[str]:
    """What the bot does to comments from now on ("commented …", "edited …", "deleted …")."""
    seen: list[str] = []
    gitops.forge.listener = lambda what, body: seen.append(what.split()[0])
    return seen


def sticky(gitops: GitOps, pr: PullRequest, *parts: str) -> list[int]:
    return flows.sticky_comment(gitops.forge, pr.number, [f"{MARK}\n{p}" for p in parts],
                                bot_login=gitops.forge.bot_login, is_mine=mine)


def bodies(gitops: GitOps, pr: PullRequest) -> list[str]:
    return [c.body for c in gitops.forge.list_comments(pr.number)]


def test_parts_are_created_then_edited_in_place(gitops: GitOps, pr: PullRequest) -> None:
    first = sticky(gitops, pr, "one", "two")
    assert bodies(gitops, pr) == [f"{MARK}\none", f"{MARK}\ntwo"]
    seen = writes(gitops)
    again = sticky(gitops, pr, "one", "TWO")
    assert again == first and seen == ["edited"]                    # only the part that changed
    assert bodies(gitops, pr) == [f"{MARK}\none", f"{MARK}\nTWO"]
    seen.clear()
    assert sticky(gitops, pr, "one", "TWO") == first and seen == []   # nothing changed: no write


def test_fewer_parts_delete_the_surplus_and_more_parts_are_added(gitops: GitOps, pr: PullRequest) -> None:
    a, b, c = sticky(gitops, pr, "a", "b", "c")
    assert sticky(gitops, pr, "A") == [a]
    assert bodies(gitops, pr) == [f"{MARK}\nA"]
    ids = sticky(gitops, pr, "A", "B")
    assert ids[0] == a and ids[1] not in (b, c)
    assert bodies(gitops, pr) == [f"{MARK}\nA", f"{MARK}\nB"]


def test_other_peoples_comments_and_other_kinds_are_left_alone(gitops: GitOps, pr: PullRequest) -> None:
    quoted = gitops.comment(pr.number, "carol", f"{MARK}\nI quote the bot")
    other = gitops.forge.create_comment(pr.number, "a bot comment of another kind")
    sticky(gitops, pr, "mine")
    assert sticky(gitops, pr) == []                                 # no parts: ours are deleted
    assert bodies(gitops, pr) == [quoted.body, other.body]


def test_the_default_kind_is_the_plan_comment(gitops: GitOps, pr: PullRequest) -> None:
    gitops.forge.create_comment(pr.number, "<!-- prbot:deploy -->\nthe deploy result")
    [plan] = flows.sticky_comment(gitops.forge, pr.number, ["<!-- prbot:plan -->\nplan 1"],
                                  bot_login=gitops.forge.bot_login)
    assert flows.sticky_comment(gitops.forge, pr.number, ["<!-- prbot:plan -->\nplan 2"],
                                bot_login=gitops.forge.bot_login) == [plan]
    assert bodies(gitops, pr) == ["<!-- prbot:deploy -->\nthe deploy result", "<!-- prbot:plan -->\nplan 2"]

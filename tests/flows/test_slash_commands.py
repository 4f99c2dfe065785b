"""`/prbot …` comments → their commands (`prbot.flows.slash_commands`): 👀 then 🚀 or 😕 on the
comment, and one reply holding the answers, refusals and typos."""

from __future__ import annotations

import pytest
from flowkit import GitOps, overlay, overlay_path

from prbot import flows
from prbot.ports import PullRequest


@pytest.fixture
def pr(gitops: GitOps) -> PullRequest:
    return gitops.open_pr("feature", {overlay_path("staging"): overlay("staging", "1.1.0")})


def say(gitops: GitOps, pr: PullRequest, user: str, body: str) -> tuple[flows.CommandOutcome, list[str], list[str]]:
    """`user` comments `body` on the PR: (the outcome, the bot's new comments, the reactions to it)."""
    before = len(gitops.bot_comments(pr.number))
    comment = gitops.comment(pr.number, user, body)
    outcome = flows.run_commands(gitops.repo, number=pr.number, comment_id=comment.id, user=user, body=body)
    reactions = [r for cid, r in gitops.forge.reactions if cid == comment.id]
    return outcome, gitops.bot_comments(pr.number)[before:], reactions


def test_help_lists_the_commands_to_anyone(gitops: GitOps, pr: PullRequest) -> None:
    outcome, [reply], reactions = say(gitops, pr, "dave", "/prbot help")
    assert outcome.ran == ["help"]
    assert reply.startswith("**prbot commands**\n\n| command | does |")
    for usage in ("/prbot plan", "/prbot promote [ENV]", "/prbot lock ENV [reason]", "/prbot unlock ENV"):
        assert f"| `{usage}` |" in reply
    assert reactions == ["eyes", "rocket"]


def test_plan_by_a_writer_posts_the_plan_and_no_reply(gitops: GitOps, pr: PullRequest) -> None:
    outcome, posted, reactions = say(gitops, pr, "carol", "/prbot plan")
    assert outcome.ran == ["plan"] and outcome.plan is not None and outcome.plan.status == "posted"
    [plan] = posted
    assert plan.startswith("<!-- prbot:plan -->") and "shop:1.1.0" in plan
    run = gitops.forge.find_check_run(pr.head_sha, flows.CHECK_NAME)
    assert run is not None and run.conclusion == "success"
    assert reactions == ["eyes", "rocket"]


def test_plan_by_a_reader_is_refused_without_a_reply(gitops: GitOps, pr: PullRequest) -> None:
    """Users without write get a reply only for `help` (the bot is no relay for outsiders' text):
    a refusal is a reaction."""
    outcome, replies, reactions = say(gitops, pr, "dave", "/prbot plan")
    assert outcome.refused == ["plan"] and outcome.ran == []
    assert replies == []
    assert gitops.forge.checks == {}
    assert reactions == ["eyes", "confused"]


def test_lock_and_unlock_by_a_writer(gitops: GitOps, pr: PullRequest) -> None:
    store, name = gitops.repo.store, gitops.repo.name
    _, [locked], reactions = say(gitops, pr, "carol", "/prbot lock staging release freeze")
    assert locked == ("🔒 **staging** is locked (release freeze). Merges into it take no sync and PRs touching it "
                      "fail the plan check until `/prbot unlock staging`.")
    assert reactions == ["eyes", "rocket"]
    lock = flows.get_lock(store, name, "staging")
    assert lock is not None and (lock.by, lock.reason, lock.at) == ("carol", "release freeze", gitops.clock())
    _, [again], _ = say(gitops, pr, "alice", "/prbot lock staging")
    assert again == "🔒 **staging** was already locked by `carol` (release freeze)."
    _, [unlocked], _ = say(gitops, pr, "carol", "/prbot unlock staging")
    assert unlocked == "🔓 **staging** is unlocked."
    assert flows.get_lock(store, name, "staging") is None
    _, [not_locked], _ = say(gitops, pr, "carol", "/prbot unlock staging")
    assert not_locked == "**staging** was not locked."


def test_lock_and_unlock_of_prod_are_for_its_deployers_only(gitops: GitOps, pr: PullRequest) -> None:
    store, name = gitops.repo.store, gitops.repo.name
    outcome, [reply], reactions = say(gitops, pr, "carol", "/prbot lock prod")
    assert outcome.refused == ["lock"]
    assert reply == ("- `/prbot lock prod`: refused — only the deployers of this environment (`alice`) may run "
                     "`/prbot lock`")
    assert reactions == ["eyes", "confused"] and flows.get_lock(store, name, "prod") is None
    say(gitops, pr, "alice", "/prbot lock prod")
    _, [refused], _ = say(gitops, pr, "carol", "/prbot unlock prod")
    assert refused.startswith("- `/prbot unlock prod`: refused — only the deployers of this environment")
    assert flows.get_lock(store, name, "prod") is not None
    outcome, replies, reactions = say(gitops, pr, "dave", "/prbot unlock staging")
    assert outcome.refused == ["unlock"] and replies == [] and reactions == ["eyes", "confused"]


def test_a_typo_gets_a_suggestion_and_the_other_commands_still_run(gitops: GitOps, pr: PullRequest) -> None:
    body = "Let's freeze.\n/prbot plna\n/prbot lock stagin\n/prbot lock staging"
    outcome, [reply], reactions = say(gitops, pr, "carol", body)
    assert outcome.ran == ["lock"]
    assert reply.splitlines() == [
        "- `/prbot plna`: unknown command `plna` — did you mean `plan`? (`/prbot help` lists the commands)",
        "- `/prbot lock stagin`: unknown environment `stagin` — did you mean `staging`? "
        "(known: `dev`, `staging`, `prod`)",
        "🔒 **staging** is locked. Merges into it take no sync and PRs touching it fail the plan check until "
        "`/prbot unlock staging`.",
    ]
    assert reactions == ["eyes", "confused"]


def test_a_comment_without_a_command_is_left_alone(gitops: GitOps, pr: PullRequest) -> None:
    body = "Looks good.\n> /prbot plan\n```\n/prbot lock staging\n```"
    outcome, posted, reactions = say(gitops, pr, "carol", body)
    assert (outcome.ran, outcome.refused, posted, reactions) == ([], [], [], [])
    assert flows.get_lock(gitops.repo.store, gitops.repo.name, "staging") is None

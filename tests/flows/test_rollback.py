"""`/prbot rollback` (`prbot.flows.rollback`): a PR restoring the images an environment ran at its
previous successful GitHub Deployment."""

from __future__ import annotations

from typing import Literal

import pytest
from flowkit import GitOps, overlay, overlay_path

from prbot import flows
from prbot.config import load_config
from prbot.errors import PrbotError

BRANCH = "prbot/rollback/staging"


def merge_into(gitops: GitOps, env: str, tag: str) -> str:
    pr = gitops.open_pr(f"{env}-{tag}", {overlay_path(env): overlay(env, tag)}, title=f"shop {tag} in {env}")
    return gitops.merge(pr.number)


def deployed(gitops: GitOps, env: str, sha: str, state: Literal["success", "failure"] = "success") -> int:
    """A GitHub Deployment of `sha` to `env` that ended in `state`; its id."""
    deployment = gitops.forge.create_deployment(ref=sha, environment=env, description="", payload={})
    gitops.forge.set_deployment_status(deployment.id, state=state, description="")
    return deployment.id


def test_rollback_opens_a_pr_restoring_the_previous_successful_deployment(gitops: GitOps) -> None:
    good = merge_into(gitops, "staging", "1.1.0")
    previous = deployed(gitops, "staging", good)
    deployed(gitops, "staging", merge_into(gitops, "staging", "1.3.0"), state="failure")   # not counted
    bad = merge_into(gitops, "staging", "1.2.0")
    current = deployed(gitops, "staging", bad)
    gitops.repo.workspace.fetch(gitops.repo.default_ref())
    outcome = flows.open_rollback(gitops.repo, load_config(gitops.file("main", ".prbot.yml") or ""), "staging",
                                  requested_by="alice")
    assert outcome.status == "opened" and outcome.to is not None and outcome.to.id == previous
    [pr] = gitops.open_pulls()
    assert (pr.head_ref, pr.base_ref) == (BRANCH, "main")
    assert pr.title == f"Roll back staging to {good[:7]}"
    assert set(pr.labels) == {"prbot", "rollback", "env:staging"}
    assert gitops.file(BRANCH, overlay_path("staging")) == overlay("staging", "1.1.0")
    assert gitops.file(BRANCH, overlay_path("dev")) == overlay("dev", "1.0.0")
    assert gitops.sha(f"{BRANCH}^") == gitops.sha("main")
    assert (f"prbot restores the images **staging** ran at `{good[:7]}` (deployment {previous}), before "
            f"deployment {current} (`{bad[:7]}`).") in pr.body
    assert "Requested with `/prbot rollback` by `alice`." in pr.body


def test_rollback_by_command_replies_with_the_pr(gitops: GitOps) -> None:
    previous = deployed(gitops, "staging", merge_into(gitops, "staging", "1.1.0"))
    deployed(gitops, "staging", merge_into(gitops, "staging", "1.2.0"))
    pr = gitops.open_pr("talk", {"NOTES.md": "where we talk\n"})
    comment = gitops.comment(pr.number, "carol", "/prbot rollback staging")
    outcome = flows.run_commands(gitops.repo, number=pr.number, comment_id=comment.id, user="carol",
                                 body=comment.body)
    assert outcome.ran == ["rollback"]
    [rollback] = [p for p in gitops.open_pulls() if p.head_ref == BRANCH]
    assert gitops.bot_comments(pr.number) == [
        f"⏪ opened #{rollback.number} rolling staging back to deployment {previous}"]
    assert gitops.file(BRANCH, overlay_path("staging")) == overlay("staging", "1.1.0")


def test_without_an_earlier_successful_deployment_there_is_nothing_to_roll_back_to(gitops: GitOps) -> None:
    deployed(gitops, "staging", merge_into(gitops, "staging", "1.1.0"))
    gitops.repo.workspace.fetch(gitops.repo.default_ref())
    conf = load_config(gitops.file("main", ".prbot.yml") or "")
    with pytest.raises(PrbotError, match="staging has no earlier successful deployment to roll back to"):
        flows.open_rollback(gitops.repo, conf, "staging", requested_by="carol")
    pr = gitops.open_pr("talk", {"NOTES.md": "where we talk\n"})
    comment = gitops.comment(pr.number, "carol", "/prbot rollback staging")
    flows.run_commands(gitops.repo, number=pr.number, comment_id=comment.id, user="carol", body=comment.body)
    assert gitops.bot_comments(pr.number) == [
        "- `/prbot rollback staging`: failed — staging has no earlier successful deployment to roll back to"]
    assert [p.head_ref for p in gitops.open_pulls()] == ["talk"]


def test_rolling_back_to_what_runs_already_opens_nothing(gitops: GitOps) -> None:
    main = gitops.sha("main")
    deployed(gitops, "staging", main)
    deployed(gitops, "staging", main)
    pr = gitops.open_pr("talk", {"NOTES.md": "where we talk\n"})
    comment = gitops.comment(pr.number, "carol", "/prbot rollback staging")
    flows.run_commands(gitops.repo, number=pr.number, comment_id=comment.id, user="carol", body=comment.body)
    assert [c.replace("\u200b", "") for c in gitops.bot_comments(pr.number)] == [   # ids are kept from linking
        f"- `/prbot rollback staging`: nothing to do — staging already runs what it ran at {main[:7]}"]
    assert [p.head_ref for p in gitops.open_pulls()] == ["talk"]


def test_rolling_back_prod_is_for_its_deployers(gitops: GitOps) -> None:
    main = gitops.sha("main")
    deployed(gitops, "prod", main)
    deployed(gitops, "prod", main)
    pr = gitops.open_pr("talk", {"NOTES.md": "where we talk\n"})
    comment = gitops.comment(pr.number, "carol", "/prbot rollback prod")
    outcome = flows.run_commands(gitops.repo, number=pr.number, comment_id=comment.id, user="carol",
                                 body=comment.body)
    assert outcome.refused == ["rollback"]
    assert gitops.bot_comments(pr.number) == [
        "- `/prbot rollback prod`: refused — only the deployers of this environment (`alice`) may run "
        "`/prbot rollback`"]

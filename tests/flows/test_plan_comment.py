"""A pull request → its plan (`prbot.flows.plan_comment`): ONE sticky comment, edited in place by
re-plans, and the `prbot/plan` check run on the head, failing when a target does not render."""

from __future__ import annotations

from flowkit import GitOps, Make, overlay, overlay_path

from prbot import flows

OLD_LINE = "-      - image: ghcr.io/acme/shop:1.0.0"


def check(gitops: GitOps, head_sha: str) -> tuple[str | None, str, str]:
    """(conclusion, title, summary) of the PR head's `prbot/plan` check run."""
    run = gitops.forge.find_check_run(head_sha, flows.CHECK_NAME)
    output = gitops.forge.check_output(head_sha, flows.CHECK_NAME)
    assert run is not None and output is not None
    assert run.status == "completed"
    return run.conclusion, output.title, output.summary


def test_a_pr_gets_one_sticky_comment_and_a_check_run_with_the_diff(gitops: GitOps) -> None:
    pr = gitops.open_pr("feature", {overlay_path("staging"): overlay("staging", "1.1.0")})
    outcome = flows.plan_pull_request(gitops.repo, pr.number)
    assert (outcome.status, outcome.conclusion) == ("posted", "success")
    [comment] = gitops.bot_comments(pr.number)
    assert comment.startswith("<!-- prbot:plan -->\n## prbot plan\n")
    assert "**1 environment changes** · staging ✅" in comment
    assert "| staging | shop | `+0 ~1 -0` | ✅ passed | — |" in comment
    assert f"{OLD_LINE}\n+      - image: ghcr.io/acme/shop:1.1.0\n" in comment
    conclusion, title, summary = check(gitops, pr.head_sha)
    assert conclusion == "success"
    assert title == "1 environment changes · staging ✅"
    assert summary == comment
    assert [c.id for c in gitops.forge.list_comments(pr.number)] == outcome.comment_ids


def test_a_replan_edits_the_same_comment(gitops: GitOps) -> None:
    pr = gitops.open_pr("feature", {overlay_path("staging"): overlay("staging", "1.1.0")})
    first = flows.plan_pull_request(gitops.repo, pr.number)
    gitops.push_branch("feature", {overlay_path("staging"): overlay("staging", "1.2.0")}, start="feature")
    head = gitops.forge.get_pull(pr.number).head_sha
    assert head != pr.head_sha
    second = flows.plan_pull_request(gitops.repo, pr.number, head_sha=head)
    assert second.status == "posted" and second.comment_ids == first.comment_ids
    [comment] = gitops.bot_comments(pr.number)
    assert "+      - image: ghcr.io/acme/shop:1.2.0" in comment and "shop:1.1.0" not in comment
    assert check(gitops, head)[0] == "success"
    assert check(gitops, pr.head_sha)[0] == "success"             # the old head keeps its own run
    assert len(gitops.forge.checks) == 2


def test_a_plan_of_an_old_head_is_dropped(gitops: GitOps) -> None:
    pr = gitops.open_pr("feature", {overlay_path("staging"): overlay("staging", "1.1.0")})
    gitops.push_branch("feature", {overlay_path("staging"): overlay("staging", "1.2.0")}, start="feature")
    outcome = flows.plan_pull_request(gitops.repo, pr.number, head_sha=pr.head_sha)
    assert outcome.status == "superseded"
    assert gitops.bot_comments(pr.number) == [] and gitops.forge.checks == {}


def test_a_target_that_does_not_render_fails_the_check(gitops: GitOps) -> None:
    pr = gitops.open_pr("broken", {overlay_path("dev"): "resources:\n  - ../../missing\n"})
    outcome = flows.plan_pull_request(gitops.repo, pr.number)
    assert (outcome.status, outcome.conclusion) == ("posted", "failure")
    [comment] = gitops.bot_comments(pr.number)
    assert "dev ❌ 1 target failed" in comment
    assert "| dev | shop | ❌ render failed | — | — |" in comment and "❌ **Rendering failed**" in comment
    conclusion, title, _ = check(gitops, pr.head_sha)
    assert conclusion == "failure" and title == "1 environment changes · dev ❌ 1 target failed"
    output = gitops.forge.check_output(pr.head_sha, flows.CHECK_NAME)
    assert output is not None
    [annotation] = output.annotations
    assert (annotation.path, annotation.level, annotation.title) == (overlay_path("dev"), "failure", "dev · shop")
    assert "missing" in annotation.message


def test_fixing_the_render_turns_the_same_comment_and_a_new_check_green(gitops: GitOps) -> None:
    pr = gitops.open_pr("broken", {overlay_path("dev"): "resources:\n  - ../../missing\n"})
    failed = flows.plan_pull_request(gitops.repo, pr.number)
    gitops.push_branch("broken", {overlay_path("dev"): overlay("dev", "1.1.0")}, start="broken")
    fixed = flows.plan_pull_request(gitops.repo, pr.number)
    assert (failed.conclusion, fixed.conclusion) == ("failure", "success")
    assert fixed.comment_ids == failed.comment_ids
    [comment] = gitops.bot_comments(pr.number)
    assert "Rendering failed" not in comment and "shop:1.1.0" in comment


def test_a_closed_pr_is_not_planned(gitops: GitOps) -> None:
    pr = gitops.open_pr("feature", {overlay_path("staging"): overlay("staging", "1.1.0")})
    gitops.forge.update_pull(pr.number, state="closed")
    assert flows.plan_pull_request(gitops.repo, pr.number).status == "closed"
    assert gitops.bot_comments(pr.number) == [] and gitops.forge.checks == {}


def test_a_repository_without_configuration_gets_no_plan(make: Make) -> None:
    gitops = make({"README.md": "nothing here\n"})
    pr = gitops.open_pr("feature", {"README.md": "still nothing\n"})
    assert flows.plan_pull_request(gitops.repo, pr.number).status == "no-config"
    assert gitops.bot_comments(pr.number) == [] and gitops.forge.checks == {}

"""Warm base renders (`prbot.flows.warm_base`): the newest push's job renders the default branch's
targets, an older push's job stops, and a PR's plan then renders only its head side (the plan says
how many renderer processes it ran: `Plan.renders`)."""

from __future__ import annotations

from pathlib import Path

from flowkit import DEPLOYMENT, make_gitops, overlay, overlay_path

from prbot import flows
from prbot.flows.warm_base import want, warm_base


def test_the_newest_push_warms_and_the_pr_plan_renders_only_its_head(tmp_path: Path) -> None:
    gitops = make_gitops(tmp_path / "gitops", render_cache=tmp_path / "cache")   # a cold cache of its own
    repo = gitops.repo
    older = want(repo.store, repo.name, gitops.sha("main"))
    sha = gitops.push_branch("main", {"apps/shop/base/deployment.yaml": DEPLOYMENT.replace("replicas: 1",
                                                                                          "replicas: 2")})
    newer = want(repo.store, repo.name, sha)
    stopped = warm_base(repo, older)                  # a newer push came: the older job renders nothing
    assert (stopped.status, stopped.rendered) == ("superseded", 0)
    warmed = warm_base(repo, newer)
    assert (warmed.status, warmed.targets, warmed.rendered, warmed.left) == ("warmed", 3, 3, 0)
    again = warm_base(repo, newer)                    # a redelivered job: everything is in the cache
    assert (again.status, again.targets, again.rendered) == ("warmed", 3, 0)

    pr = gitops.open_pr("feature", {overlay_path("staging"): overlay("staging", "1.1.0")})
    outcome = flows.plan_pull_request(repo, pr.number)
    assert (outcome.status, outcome.conclusion) == ("posted", "success")
    assert outcome.plan is not None and [t.env for t in outcome.plan.targets] == ["staging"]
    assert outcome.plan.renders == 1                  # the head side; the base came from the warm job


def test_a_cold_pr_plan_renders_both_sides(tmp_path: Path) -> None:
    gitops = make_gitops(tmp_path / "gitops", render_cache=tmp_path / "cache")
    pr = gitops.open_pr("feature", {overlay_path("staging"): overlay("staging", "1.1.0")})
    outcome = flows.plan_pull_request(gitops.repo, pr.number)
    assert outcome.plan is not None and outcome.plan.renders == 2
    assert outcome.plan.timings["render"] > 0 and set(outcome.plan.timings) >= {"closure", "diff", "validation"}


def test_warming_off_renders_nothing(tmp_path: Path) -> None:
    gitops = make_gitops(tmp_path / "gitops", render_cache=tmp_path / "cache")
    token = want(gitops.repo.store, gitops.repo.name, gitops.sha("main"))
    assert warm_base(gitops.repo, token, max_targets=0).status == "off"
    assert not list((tmp_path / "cache").glob("??/*.json"))

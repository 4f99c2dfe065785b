"""A healthy environment → the promotion PR into the next one (`prbot.flows.promote`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowkit import GitOps, follow, overlay, overlay_path, result_comment

from prbot import flows
from prbot.config import load_config
from prbot.workspace import Mirror

BRANCH = "prbot/promote/staging/shop"


def merge_into(gitops: GitOps, env: str, tag: str, branch: str = "feature") -> tuple[int, str]:
    """Merge a change of `env` to `tag`; the mirror fetches the merge, as the deploy job does before
    the environment can turn healthy."""
    pr = gitops.open_pr(branch, {overlay_path(env): overlay(env, tag)}, title=f"shop {tag} in {env}")
    sha = gitops.merge(pr.number)
    gitops.repo.workspace.fetch(gitops.repo.default_ref())
    return pr.number, sha


def test_a_healthy_dev_opens_the_promotion_pr_into_staging_with_dev_s_version(gitops: GitOps) -> None:
    number, sha = merge_into(gitops, "dev", "1.1.0")
    provenance = flows.Provenance(pr=number, author="carol", deployment=4242, sha=sha)
    said = flows.promote_healthy(gitops.repo, sha, "dev", ["shop"], provenance)
    [pr] = gitops.open_pulls()
    assert said == f"#{pr.number} (shop → staging)"
    assert (pr.head_ref, pr.base_ref) == (BRANCH, "main")
    assert pr.title == "Promote shop from dev to staging (1.1.0)"
    assert set(pr.labels) == {"prbot", "promote", "env:staging"}
    assert gitops.file(BRANCH, overlay_path("staging")) == overlay("staging", "1.1.0")
    assert gitops.file(BRANCH, overlay_path("prod")) == overlay("prod", "1.0.0")
    assert gitops.sha(f"{BRANCH}^") == gitops.sha("main")
    assert "| `shop/staging` | `apps/shop/envs/staging/kustomization.yaml` | `1.0.0` | `1.1.0` |" in pr.body
    assert f"- source: #{number} by `carol`" in pr.body
    assert (f"- proved healthy by [deployment 4242](https://github.example/acme/gitops/deployments/dev) of dev "
            f"at `{sha[:7]}`") in pr.body
    assert "```mermaid\nflowchart LR\n" in pr.body and "dev<br/>shop 1.1.0" in pr.body


def test_a_newer_healthy_dev_updates_the_same_promotion_pr(gitops: GitOps) -> None:
    _, first = merge_into(gitops, "dev", "1.1.0")
    flows.promote_healthy(gitops.repo, first, "dev", ["shop"], flows.Provenance())
    _, second = merge_into(gitops, "dev", "1.2.0", branch="feature-2")
    said = flows.promote_healthy(gitops.repo, second, "dev", ["shop"], flows.Provenance())
    [pr] = [p for p in gitops.open_pulls() if p.head_ref == BRANCH]
    assert said == f"#{pr.number} (shop → staging)"
    assert len([p for p in gitops.forge.pulls.values() if p.head_ref == BRANCH]) == 1
    assert pr.title == "Promote shop from dev to staging (1.2.0)"
    assert gitops.file(BRANCH, overlay_path("staging")) == overlay("staging", "1.2.0")


def test_no_pr_when_the_next_environment_already_runs_the_same_version(gitops: GitOps) -> None:
    gitops.repo.workspace.fetch(gitops.repo.default_ref())
    main = gitops.sha("main")
    assert flows.config_at(gitops.repo, main) is not None
    assert flows.promote_healthy(gitops.repo, main, "dev", ["shop"], flows.Provenance()) is None
    assert gitops.forge.pulls == {}
    assert gitops.file(BRANCH, overlay_path("staging")) is None


def test_the_last_environment_promotes_nowhere(gitops: GitOps) -> None:
    _, sha = merge_into(gitops, "prod", "1.1.0")
    assert flows.promote_healthy(gitops.repo, sha, "prod", ["shop"], flows.Provenance()) is None
    assert gitops.open_pulls() == []


def test_a_lower_version_is_never_promoted(gitops: GitOps) -> None:
    gitops.merge(gitops.open_pr("up", {overlay_path("staging"): overlay("staging", "2.0.0")}).number)
    _, sha = merge_into(gitops, "dev", "1.1.0")
    config = load_config(gitops.file(sha, ".prbot.yml") or "")
    outcome = flows.open_promotion(gitops.repo, config, "dev", "staging", "shop", flows.Provenance())
    assert outcome.status == "refused" and outcome.pull is None and "2.0.0" in outcome.reason
    assert flows.promote_healthy(gitops.repo, sha, "dev", ["shop"], flows.Provenance()) is None
    assert gitops.open_pulls() == []


def test_a_deployment_that_turns_healthy_promotes_and_says_so_in_its_comment(gitops: GitOps) -> None:
    number, sha = merge_into(gitops, "dev", "1.1.0")
    assert flows.deploy_merged(gitops.repo, gitops.clusters, number) is not None

    def promote(repo: flows.Repo, state: flows.DeployState, entry: Any) -> str | None:
        provenance = flows.Provenance(pr=state.pr, author=state.author, deployment=entry.deployment,
                                      sha=state.sha)
        return flows.promote_healthy(repo, state.sha, entry.env, ["shop"], provenance)

    follow(gitops, sha, promote=promote)
    [pr] = gitops.open_pulls()
    assert pr.head_ref == BRANCH
    [deployment] = gitops.forge.deployments.values()
    assert f"[deployment {deployment.id}]" in pr.body
    assert f"- ⏩ dev is healthy: promotion #{pr.number} (shop → staging)" in result_comment(gitops, number)
    assert "✅ healthy" in pr.body                    # the picture shows dev's last deployment


def test_a_worker_whose_mirror_lacks_the_merge_still_promotes(gitops: GitOps, tmp_path: Path) -> None:
    """The poll that sees dev healthy may run on another worker, whose mirror has not fetched the
    merge commit: the promotion still opens (it used to read no configuration and promote nothing)."""
    number, sha = merge_into(gitops, "dev", "1.1.0")
    assert flows.deploy_merged(gitops.repo, gitops.clusters, number) is not None
    gitops.repo.workspace = Mirror.for_forge(tmp_path / "other-worker", gitops.forge)
    for _ in range(40):                                   # the worker's own promoter (the default)
        delay = flows.poll_deploy(gitops.repo, gitops.clusters, sha)
        if delay is None:
            break
        gitops.clock.advance(delay)
    [pr] = gitops.open_pulls()
    assert pr.head_ref == BRANCH
    assert f"promotion #{pr.number} (shop → staging)" in result_comment(gitops, number)

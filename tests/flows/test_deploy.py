"""Merge → deploy (`prbot.flows.deploy`) over the stand-in clusters: one GitHub Deployment per
environment the merge changed, polled to success or failure, and one result comment on the PR."""

from __future__ import annotations

from typing import Any

from flowkit import (
    CHART,
    CONFIG,
    GITOPS_FILES,
    RELEASE,
    GitOps,
    Make,
    follow,
    overlay,
    overlay_path,
    result_comment,
)

from prbot import flows


def merged_change(gitops: GitOps, env: str = "staging", tag: str = "1.1.0") -> tuple[int, str]:
    pr = gitops.open_pr("feature", {overlay_path(env): overlay(env, tag)}, title=f"shop {tag} in {env}")
    return pr.number, gitops.merge(pr.number)


def test_a_merge_creates_a_deployment_that_goes_success_with_a_result_comment(gitops: GitOps) -> None:
    number, sha = merged_change(gitops)
    state = flows.deploy_merged(gitops.repo, gitops.clusters, number)
    assert state is not None and state.sha == sha and not state.done
    [deployment] = gitops.forge.deployments.values()
    assert (deployment.environment, deployment.sha, deployment.payload["pr"]) == ("staging", sha, number)
    assert gitops.forge.statuses[deployment.id] == [("in_progress", f"syncing {sha[:7]}")]
    running = result_comment(gitops, number)
    assert running.startswith(f"<!-- prbot:deploy -->\n## prbot deploy `{sha[:7]}`")
    assert "Deploying the merge: this comment follows the rollout." in running
    assert "| staging | shop | 🔄 syncing |" in running
    follow(gitops, sha)
    assert gitops.forge.statuses[deployment.id][-1] == ("success", f"healthy at {sha[:7]}")
    assert [s for s, _ in gitops.forge.statuses[deployment.id]] == ["in_progress", "success"]
    done = result_comment(gitops, number)                        # the same comment, edited
    assert "✅ **Deployed**: every environment is healthy." in done
    assert "| staging | shop | ✅ healthy | Synced and Healthy at" in done
    final = flows.load_state(gitops.repo, sha)
    assert final is not None and final.done and [(e.env, e.state) for e in final.envs] == [("staging", "healthy")]
    app = gitops.clusters.live["staging|argoproj.io/v1alpha1|Application|argocd|shop-staging"]
    assert app["status"]["sync"] == {"status": "Synced", "revision": sha}


def test_a_failing_target_fails_its_deployment_and_says_nothing_is_promoted(make: Make) -> None:
    gitops = make(fail=frozenset({"shop/dev"}))
    number, sha = merged_change(gitops, "dev")
    assert flows.deploy_merged(gitops.repo, gitops.clusters, number) is not None
    promoted: list[str] = []

    def promote(repo: flows.Repo, state: flows.DeployState, entry: Any) -> str | None:
        promoted.append(entry.env)
        return None

    follow(gitops, sha, promote=promote)
    [deployment] = gitops.forge.deployments.values()
    states = gitops.forge.statuses[deployment.id]
    assert [s for s, _ in states] == ["in_progress", "failure"]
    assert "Deployment shop: Degraded" in states[-1][1]
    body = result_comment(gitops, number)
    assert "❌ **Not every environment became healthy** (or some were held)." in body
    assert "| dev | shop | ❌ failed |" in body and "⛔ dev failed: nothing is promoted from it." in body
    assert promoted == []


def test_an_environment_not_healthy_by_its_deadline_fails(gitops: GitOps) -> None:
    number, sha = merged_change(gitops)
    flows.deploy_merged(gitops.repo, gitops.clusters, number, timeout=60.0)
    gitops.clock.advance(61.0)
    assert flows.poll_deploy(gitops.repo, gitops.clusters, sha) is None
    [deployment] = gitops.forge.deployments.values()
    state, description = gitops.forge.statuses[deployment.id][-1]
    assert state == "failure" and description.startswith("shop: not healthy after 1 min: ")
    assert "| staging | shop | ❌ failed | not healthy after 1 min: " in result_comment(gitops, number)


def test_a_locked_environment_is_held_without_a_deployment(gitops: GitOps) -> None:
    assert flows.set_lock(gitops.repo.store, gitops.repo.name, "staging", "carol", "freeze", 0.0)
    number, sha = merged_change(gitops)
    state = flows.deploy_merged(gitops.repo, gitops.clusters, number)
    assert state is not None and state.done and [e.state for e in state.envs] == ["held"]
    assert gitops.forge.deployments == {}
    assert flows.poll_deploy(gitops.repo, gitops.clusters, sha) is None
    body = result_comment(gitops, number)
    assert ("| staging | shop | 🔒 held | 🔒 staging is locked by `carol` (freeze): no sync until "
            "`/prbot unlock staging` and `/prbot sync staging` |") in body


def test_a_redelivered_merge_deploys_once(gitops: GitOps) -> None:
    number, sha = merged_change(gitops)
    first = flows.deploy_merged(gitops.repo, gitops.clusters, number)
    again = flows.deploy_merged(gitops.repo, gitops.clusters, number)
    assert first is not None and again is not None and again.sha == first.sha == sha
    assert len(gitops.forge.deployments) == 1
    assert len([b for b in gitops.bot_comments(number) if b.startswith("<!-- prbot:deploy -->")]) == 1


def test_an_open_pr_or_a_change_outside_the_targets_deploys_nothing(gitops: GitOps) -> None:
    pr = gitops.open_pr("feature", {overlay_path("dev"): overlay("dev", "1.1.0")})
    assert flows.deploy_merged(gitops.repo, gitops.clusters, pr.number) is None
    docs = gitops.open_pr("docs", {"README.md": "hello\n"})
    gitops.merge(docs.number)
    assert flows.deploy_merged(gitops.repo, gitops.clusters, docs.number) is None
    assert gitops.forge.deployments == {} and gitops.bot_comments(docs.number) == []


def test_a_deploy_replayed_after_its_deployment_was_created_adopts_it(gitops: GitOps) -> None:
    """The worker died right after GitHub created the Deployment, before the record said so: the
    replay finds the Deployment carrying the deploy's intent id instead of creating another."""
    number, sha = merged_change(gitops)
    state = flows.deploy_merged(gitops.repo, gitops.clusters, number)
    assert state is not None and state.intent
    [deployment] = gitops.forge.deployments.values()
    assert deployment.payload["intent"] == state.intent
    for entry in state.envs:                                    # the record as it was before the create
        entry.deployment, entry.announced, entry.state = None, False, "waiting"
        entry.targets = [flows.deploy.TargetDeploy(app=t.app) for t in entry.targets]
    flows.deploy.save_state(gitops.repo, state)
    assert flows.deploy_merged(gitops.repo, gitops.clusters, number) is not None    # the job replayed
    follow(gitops, sha)
    assert list(gitops.forge.deployments) == [deployment.id]
    assert [s for s, _ in gitops.forge.statuses[deployment.id]] == ["in_progress", "success"]   # not announced twice
    final = flows.load_state(gitops.repo, sha)
    assert final is not None and [(e.env, e.state, e.deployment) for e in final.envs] == [
        ("staging", "healthy", deployment.id)]


def test_an_apply_sync_applies_a_helmrelease_and_not_what_the_cluster_expands_from_it(
        make: Make, bundles: None) -> None:
    config = CONFIG.replace('      argocd: {application: "{app}-{env}", namespace: argocd}\n', "      apply: {}\n")
    gitops = make({**GITOPS_FILES, ".prbot.yml": config, **CHART})
    gitops.clusters.served = {**gitops.clusters.served, ("example.prbot.dev", "Bundle"): "example.prbot.dev/v1"}
    kustomization = overlay("staging", "1.1.0").replace("  - ../../base\n", "  - ../../base\n  - release.yaml\n")
    pr = gitops.open_pr("feature", {overlay_path("staging"): kustomization,
                                    overlay_path("staging").replace("kustomization", "release"): RELEASE})
    sha = gitops.merge(pr.number)
    state = flows.deploy_merged(gitops.repo, gitops.clusters, pr.number)
    assert state is not None
    follow(gitops, sha)
    # the Deployment shop, the HelmRelease, its GitRepository and the Bundle were applied; the
    # workloads the chart and the Bundle make are the cluster's to create (the stand-in keeps workloads)
    assert sorted(k for k in gitops.clusters.live if "|shop-staging|" in k) == [
        "staging|apps/v1|Deployment|shop-staging|shop"]
    assert "| staging | shop | ✅ healthy |" in result_comment(gitops, pr.number)

"""Preview environments (`prbot.flows.preview`): the PR's targets applied into namespace `pr-<N>`
of the preview environment's cluster, announced in one sticky comment, torn down on request."""

from __future__ import annotations

import pytest
from flowkit import CHART, CONFIG, GITOPS_FILES, RELEASE, GitOps, Make, overlay, overlay_path

from prbot import flows
from prbot.config import Config, load_config
from prbot.errors import PrbotError
from prbot.ports import PullRequest
from prbot.render import render_target
from prbot.standins import BUILTIN
from prbot.targets import discover_targets

PREVIEW = 'preview:\n  environment: dev\n  url: "https://pr-{number}.preview.example"\n'
MARKER = "<!-- prbot:preview -->"


@pytest.fixture
def gitops(make: Make) -> GitOps:
    """The repository with previews in dev."""
    return make({**GITOPS_FILES, ".prbot.yml": CONFIG + PREVIEW})


def config_of(gitops: GitOps) -> Config:
    return load_config(gitops.file("main", ".prbot.yml") or "")


def preview_comments(gitops: GitOps, number: int) -> list[str]:
    return [b for b in gitops.bot_comments(number) if b.startswith(MARKER)]


def live_in(gitops: GitOps, namespace: str) -> list[str]:
    """The objects the stand-in clusters keep in `namespace` ("cluster kind name")."""
    out = []
    for key in gitops.clusters.live:
        cluster, _, kind, ns, name = key.split("|")
        if ns == namespace:
            out.append(f"{cluster} {kind} {name}")
    return sorted(out)


def opened(gitops: GitOps) -> PullRequest:
    return gitops.open_pr("feature", {overlay_path("dev"): overlay("dev", "1.1.0")})


def test_preview_up_applies_the_pr_into_its_own_namespace_and_says_where(gitops: GitOps) -> None:
    pr = opened(gitops)
    outcome = flows.preview_up(gitops.repo, gitops.clusters, config_of(gitops), pr)
    assert (outcome.status, outcome.namespace, outcome.url) == ("deployed", "pr-1", "https://pr-1.preview.example")
    assert live_in(gitops, "pr-1") == ["dev Deployment shop"]
    assert live_in(gitops, "shop-dev") == []                       # the environment itself is left alone
    [comment] = preview_comments(gitops, pr.number)
    assert comment.startswith(f"{MARKER}\n## prbot preview\n\n🚀 This PR runs in namespace `pr-1` of **dev** at "
                              f"`{pr.head_sha[:7]}` (1 objects): <https://pr-1.preview.example>")
    assert "State: syncing: applied 2 objects" in comment


def test_a_new_push_updates_the_same_preview_comment(gitops: GitOps) -> None:
    pr = opened(gitops)
    flows.preview_up(gitops.repo, gitops.clusters, config_of(gitops), pr)
    gitops.push_branch("feature", {overlay_path("dev"): overlay("dev", "1.2.0")}, start="feature")
    moved = gitops.forge.get_pull(pr.number)
    assert flows.preview_up(gitops.repo, gitops.clusters, config_of(gitops), moved).status == "updated"
    [comment] = preview_comments(gitops, pr.number)
    assert f"at `{moved.head_sha[:7]}`" in comment and pr.head_sha[:7] not in comment


def test_preview_down_deletes_it_once(gitops: GitOps) -> None:
    pr = opened(gitops)
    flows.preview_up(gitops.repo, gitops.clusters, config_of(gitops), pr)
    down = flows.preview_down(gitops.repo, gitops.clusters, config_of(gitops), pr)
    assert (down.status, down.namespace) == ("stopped", "pr-1")
    assert preview_comments(gitops, pr.number) == [
        f"{MARKER}\n## prbot preview\n\n🧹 The preview in namespace `pr-1` of **dev** is deleted."]
    assert flows.preview_down(gitops.repo, gitops.clusters, config_of(gitops), pr).status == "off"
    assert len(preview_comments(gitops, pr.number)) == 1


def test_preview_by_command(gitops: GitOps) -> None:
    pr = opened(gitops)

    def say(body: str) -> list[str]:
        before = len(gitops.bot_comments(pr.number))
        comment = gitops.comment(pr.number, "carol", body)
        flows.run_commands(gitops.repo, number=pr.number, comment_id=comment.id, user="carol", body=body)
        return gitops.bot_comments(pr.number)[before:]

    [up] = say("/prbot preview")
    assert up.startswith(MARKER) and "namespace `pr-1` of **dev**" in up
    assert say("/prbot preview stop") == ["🧹 the preview is torn down"]
    assert preview_comments(gitops, pr.number)[0].endswith("is deleted.")
    assert say("/prbot preview stop") == ["there is no preview to stop"]


def test_a_preview_environment_without_a_cluster_is_refused(make: Make) -> None:
    gitops = make({**GITOPS_FILES, ".prbot.yml": CONFIG.replace("    cluster: dev\n", "") + PREVIEW})
    pr = opened(gitops)
    with pytest.raises(PrbotError, match="previews need a cluster: environment 'dev' has no `cluster`"):
        flows.preview_up(gitops.repo, gitops.clusters, config_of(gitops), pr)
    assert gitops.clusters.live == {} and preview_comments(gitops, pr.number) == []


EXTRA = """\
apiVersion: external-secrets.io/v1beta1
kind: ClusterSecretStore
metadata: {name: vault}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: public}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec: {replicas: 1}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: shop}
"""


def test_what_the_clusters_discovery_says_is_cluster_scoped_or_not_served_is_left_out(gitops: GitOps) -> None:
    gitops.clusters.kinds = {**BUILTIN, ("external-secrets.io/v1beta1", "ClusterSecretStore"): False}
    kustomization = overlay("dev", "1.1.0").replace("  - ../../base\n", "  - ../../base\n  - extra.yaml\n")
    pr = gitops.open_pr("feature", {overlay_path("dev"): kustomization,
                                    overlay_path("dev").replace("kustomization", "extra"): EXTRA})
    flows.preview_up(gitops.repo, gitops.clusters, config_of(gitops), pr)
    assert live_in(gitops, "pr-1") == ["dev Deployment shop", "dev StatefulSet db"]
    [comment] = preview_comments(gitops, pr.number)
    assert "(2 objects)" in comment and "State: syncing: applied 3 objects" in comment
    scoped = "cluster-scoped on cluster dev: a preview creates only namespaced objects"
    assert f"- `ClusterSecretStore vault`: {scoped}" in comment
    assert f"- `IngressClass public`: {scoped}" in comment
    assert "- `ServiceMonitor shop`: cluster dev does not serve ServiceMonitor (monitoring.coreos.com/v1)" in comment


# --------------------------------------------------------------------------------------------
# What the cluster expands itself is not applied by prbot
# --------------------------------------------------------------------------------------------

def test_a_preview_applies_a_helmrelease_and_not_what_the_cluster_expands_from_it(
        make: Make, bundles: None) -> None:
    gitops = make({**GITOPS_FILES, ".prbot.yml": CONFIG + PREVIEW, **CHART})
    gitops.clusters.served = {**gitops.clusters.served, ("example.prbot.dev", "Bundle"): "example.prbot.dev/v1"}
    kustomization = overlay("dev", "1.1.0").replace("  - ../../base\n", "  - ../../base\n  - release.yaml\n")
    pr = gitops.open_pr("feature", {overlay_path("dev"): kustomization,
                                    overlay_path("dev").replace("kustomization", "release"): RELEASE})
    outcome = flows.preview_up(gitops.repo, gitops.clusters, config_of(gitops), pr)
    assert outcome.status == "deployed"
    # what a plan of the same files shows: the Bundle's ConfigMap (and, with this repository known,
    # the chart's Deployment) come from expansions
    with gitops.repo.workspace.materialize(pr.head_sha) as root:
        target = next(t for t in discover_targets(config_of(gitops), root) if t.env == "dev")
        planned = render_target(root, target)
        assert "from-bundle" in [o["metadata"]["name"] for o in planned]
    # the HelmRelease, its source and the Bundle are applied (the stand-in keeps only workloads
    # live); the cluster's Flux and the Bundle's controller make the rest
    assert live_in(gitops, "pr-1") == ["dev Deployment shop"]
    [comment] = preview_comments(gitops, pr.number)
    assert "(4 objects)" in comment and "applied 5 objects" in comment, comment

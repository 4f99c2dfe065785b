"""Merge is the deployment gate, end to end (issue 10): the App with the fake GitHub and the fake
Kubernetes API (the official client talks to it over HTTP), a real queue worker polling health.

Merge → Deployment `in_progress` → the sync (Argo CD, Flux, direct apply) at the merge SHA →
healthy → Deployment `success`, the result comment, the promotion PR naming its source PR; a failed
sync promotes nothing; a locked environment holds the sync until unlock + `/prbot sync`;
`deployers` refuse writers outside them; rollback and preview PR flows; a worker restarted while
waiting for health picks the wait up again.  A deploy always ends: kinds are asked at the versions
the cluster serves (Flux 2.0–2.2), a kind not served fails the environment with the reason, and the
cluster away while starting or polling keeps trying under the one Deployment until the deadline
(from the merge) ends it as `error` — never `in_progress` forever.  One Deployment per environment
and merge whatever dies when: an answer lost after the Deployment was created, a redelivered merge,
a `prbot worker` process killed -9 mid-start, GitHub refusing the end for longer than the queue
retries a job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from appkit import Bot
from fakegithub import FakeGitHub
from fakekube import FLUX_2_2, FakeKube
from gitops import APP_IMAGE, overlay, repo_files

from prbot.branches import promote_branch
from prbot.flows.deploy import DEPLOY_MARKER
from prbot.flows.preview import PREVIEW_MARKER
from prbot.report.markdown import MARKER
from prbot.service.worker import Worker

REPO = "acme/gitops"
DEV = "apps/app/envs/dev/kustomization.yaml"
ENVS = ("dev", "staging", "prod")
ARGO = "argocd: {application: \"{app}-{env}\", namespace: argocd}"
FLUX = "flux: {kind: Kustomization, name: \"{app}-{env}\", namespace: flux-system}"
FLUX_HR = "flux: {kind: HelmRelease, name: \"{app}-{env}\", namespace: flux-system}"
APPLY = "apply: {prune: true}"


# --------------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------------

class World:
    """The fakes, the bot, and the moves of the people using them."""

    def __init__(self, tmp_path: Path, fake: FakeGitHub, kube: FakeKube, *, sync: str,
                 deploy_timeout: float = 120.0, **config: Any) -> None:
        self.fake, self.kube, self.tmp = fake, kube, tmp_path
        self.deploy_timeout = deploy_timeout
        fake.add_installation("acme")
        fake.create_repo(REPO, files=repo_files(sync=sync, clusters=True, **config))
        for user, role in (("alice", "write"), ("writer", "write"), ("reader", "read"), ("sre-bob", "write")):
            fake.set_permission(REPO, user, role)
        fake.add_team("acme", "sre", members=["sre-bob"])
        kubeconfig = kube.write_kubeconfig(tmp_path / "kube" / "config")
        clusters = tmp_path / "clusters.yaml"
        clusters.write_text(yaml.safe_dump({env: {"kubeconfig": str(kubeconfig)} for env in ENVS}))
        for env in ENVS:
            kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"app-{env}"}})
        self.clusters = clusters
        fake.drain_events()
        self.bot = self.start_bot()

    def start_bot(self) -> Bot:
        return Bot(self.tmp, self.fake, clusters_file=self.clusters, deploy_poll=0.0,
                   deploy_timeout=self.deploy_timeout)

    def change(self, branch: str, files: dict[str, str], *, user: str = "alice") -> int:
        """Push a branch and open a PR from it; the bot plans it."""
        self.fake.commit(REPO, branch, files, user=user, message=f"change on {branch}")
        number = self.fake.open_pull(REPO, head=branch, user=user, title=f"Change {branch}")
        self.bot.deliver_events()
        return number

    def merge(self, number: int) -> str:
        sha = self.fake.merge(REPO, number, user="alice")
        self.bot.deliver_events()
        return sha

    def say(self, number: int, text: str, *, user: str = "alice") -> list[str]:
        """Comment as `user`; the bot's new replies (not its plan, deploy or preview comments)."""
        before = {c.id for c in self.fake.comments(REPO, number)}
        self.fake.comment(REPO, number, text, user=user)
        self.bot.deliver_events()
        return [c.body for c in self.fake.comments(REPO, number) if c.id not in before and c.user.type == "Bot"
                and not c.body.startswith((MARKER, DEPLOY_MARKER, PREVIEW_MARKER))]

    def deploy_comment(self, number: int) -> str:
        found = [c.body for c in self.fake.comments(REPO, number) if c.body.startswith(DEPLOY_MARKER)]
        assert len(found) == 1, found
        return found[0]

    def statuses(self, env: str) -> list[list[str]]:
        """The status states of each GitHub Deployment of `env`, oldest deployment first."""
        return [[s.state for s in d.statuses] for d in self.fake.deployments(REPO) if d.environment == env]

    def seed_argo(self, *, source: str | None = None) -> None:
        for env in ENVS:
            self.kube.seed({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                            "metadata": {"name": f"app-{env}", "namespace": "argocd"},
                            "spec": {"project": "default", "destination": {"namespace": f"app-{env}"},
                                     "source": {"repoURL": source or f"{self.fake.web_url}/{REPO}.git",
                                                "path": f"apps/app/envs/{env}", "targetRevision": "main"}},
                            "status": {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}})


@pytest.fixture
def world(tmp_path: Path, fake_github: FakeGitHub, fake_kube: FakeKube) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(**kwargs: Any) -> World:
        w = World(tmp_path, fake_github, fake_kube, **kwargs)
        made.append(w)
        return w

    yield make
    for w in made:
        w.bot.stop()


@pytest.fixture
def world_on(tmp_path: Path, fake_github: FakeGitHub) -> Iterator[Callable[..., World]]:
    """A world whose cluster serves the Argo CD / Flux kinds at other versions (`FakeKube(versions=)`)."""
    made: list[World] = []
    kubes: list[FakeKube] = []

    def make(versions: dict[str, list[str]], **kwargs: Any) -> World:
        kube = FakeKube(versions=versions).start()
        kubes.append(kube)
        w = World(tmp_path, fake_github, kube, **kwargs)
        made.append(w)
        return w

    yield make
    for w in made:
        w.bot.stop()
    for kube in kubes:
        kube.stop()


def promotion_pulls(fake: FakeGitHub, env: str) -> list[Any]:
    return [p for p in fake.pulls(REPO, state="open") if p.head_ref == promote_branch(env, "app")]


# --------------------------------------------------------------------------------------------
# Argo CD
# --------------------------------------------------------------------------------------------

def test_merge_syncs_argocd_then_promotes(world: Callable[..., World]) -> None:
    w = world(sync=ARGO)
    w.seed_argo()
    number = w.change("bump-dev", {DEV: overlay("2222222")})
    sha = w.merge(number)
    w.bot.settle()

    app = w.kube.live("argoproj.io/v1alpha1", "Application", "argocd", "app-dev")
    assert app["status"]["operationState"]["syncResult"]["revision"] == sha
    assert app["status"]["health"]["status"] == "Healthy"
    patch = w.kube.patches("Application")[0]
    assert patch.body["operation"]["sync"]["revision"] == sha
    assert patch.body["operation"]["initiatedBy"] == {"username": "prbot"}
    assert patch.body["metadata"]["annotations"]["argocd.argoproj.io/refresh"] == "normal"
    assert w.statuses("dev") == [["in_progress", "success"]]
    assert w.statuses("staging") == []                              # only what the PR changed is deployed
    deployment = next(d for d in w.fake.deployments(REPO) if d.environment == "dev")
    assert deployment.sha == sha
    comment = w.deploy_comment(number)
    assert "✅ healthy" in comment and "| dev | app |" in comment and "✅ **Deployed**" in comment

    promotions = promotion_pulls(w.fake, "staging")
    assert len(promotions) == 1
    promo = promotions[0]
    assert f"#{number}" in (promo.body or "") and "`alice`" in (promo.body or "")
    assert f"deployment {deployment.id}" in (promo.body or "")
    assert "```mermaid" in (promo.body or "") and "flowchart LR" in (promo.body or "")
    staging = w.fake.read_file(REPO, promo.head_ref, "apps/app/envs/staging/kustomization.yaml")
    assert staging == overlay("2222222").encode()                   # the minimal edit, comments kept
    assert sorted(w.fake.labels(REPO, promo.number)) == ["env:staging", "prbot", "promote"]


def test_failed_argocd_sync_fails_the_deployment_and_promotes_nothing(world: Callable[..., World]) -> None:
    w = world(sync=ARGO)
    w.seed_argo()
    w.kube.script("Application", "app-dev", outcome="failed", message="one or more objects failed to apply")
    number = w.change("bad", {DEV: overlay("3333333")})
    w.merge(number)
    w.bot.settle()
    assert w.statuses("dev") == [["in_progress", "failure"]]
    deployment = next(d for d in w.fake.deployments(REPO) if d.environment == "dev")
    assert "failed to apply" in deployment.statuses[-1].description
    comment = w.deploy_comment(number)
    assert "❌ failed" in comment and "nothing is promoted" in comment
    assert promotion_pulls(w.fake, "staging") == []


def test_application_of_another_repository_is_not_synced(world: Callable[..., World]) -> None:
    w = world(sync=ARGO)
    w.seed_argo(source="https://github.com/someone/else.git")
    number = w.change("other", {DEV: overlay("4444444")})
    w.merge(number)
    w.bot.settle()
    assert w.kube.patches("Application") == []
    assert w.statuses("dev") == [["in_progress", "failure"]]
    assert "not this repository" in w.deploy_comment(number)


# --------------------------------------------------------------------------------------------
# Flux and direct apply
# --------------------------------------------------------------------------------------------

def test_merge_reconciles_flux_kustomization(world: Callable[..., World]) -> None:
    w = world(sync=FLUX)
    w.kube.seed({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
                 "metadata": {"name": "flux-system", "namespace": "flux-system"},
                 "spec": {"url": f"{w.fake.web_url}/{REPO}.git", "ref": {"branch": "main"}}})
    w.kube.seed({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                 "metadata": {"name": "app-dev", "namespace": "flux-system"},
                 "spec": {"path": "./apps/app/envs/dev", "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                          "interval": "10m", "prune": True}})
    number = w.change("flux", {DEV: overlay("5555555")})
    w.kube.set_source_revision("flux-system", "flux-system", "pending")
    sha = w.fake.merge(REPO, number, user="alice")
    w.kube.set_source_revision("flux-system", "flux-system", f"main@sha1:{sha}")
    w.bot.deliver_events()
    w.bot.settle()
    ks = w.kube.live("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "flux-system", "app-dev")
    token = ks["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
    assert ks["status"]["lastHandledReconcileAt"] == token
    assert ks["status"]["lastAppliedRevision"] == f"main@sha1:{sha}"
    source = w.kube.live("source.toolkit.fluxcd.io/v1", "GitRepository", "flux-system", "flux-system")
    assert source["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] == token
    assert w.statuses("dev") == [["in_progress", "success"]]
    assert len(promotion_pulls(w.fake, "staging")) == 1


def test_direct_apply_labels_and_prunes(world: Callable[..., World]) -> None:
    w = world(sync=APPLY)
    extra = "apps/app/envs/dev/extra.yaml"
    config_map = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  a: b\n"
    with_extra = overlay("6666666").replace("  - ../../base\n", "  - ../../base\n  - extra.yaml\n")
    number = w.change("apply-1", {DEV: with_extra, extra: config_map})
    w.merge(number)
    w.bot.settle()
    live = w.kube.live("apps/v1", "Deployment", "app-dev", "app")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == f"{APP_IMAGE}:6666666"
    assert live["metadata"]["labels"]["prbot.dev/target"]
    assert w.kube.live("v1", "ConfigMap", "app-dev", "extra") is not None
    assert w.statuses("dev") == [["in_progress", "success"]]

    number = w.change("apply-2", {DEV: overlay("7777777"), extra: None})   # type: ignore[dict-item]
    w.merge(number)
    w.bot.settle()
    assert w.kube.live("v1", "ConfigMap", "app-dev", "extra") is None        # pruned
    live = w.kube.live("apps/v1", "Deployment", "app-dev", "app")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == f"{APP_IMAGE}:7777777"
    assert w.statuses("dev")[-1] == ["in_progress", "success"]


# --------------------------------------------------------------------------------------------
# A deploy always ends
# --------------------------------------------------------------------------------------------

def test_flux_2_2_cluster_reconciles_the_helmrelease_and_its_chart(world_on: Callable[..., World]) -> None:
    """Flux 2.0–2.2 serves HelmChart only at v1beta2: asked at v1 the deploy crashed after creating
    the Deployment, which then stayed in_progress."""
    w = world_on(FLUX_2_2, sync=FLUX_HR)
    w.kube.seed({"apiVersion": "source.toolkit.fluxcd.io/v1beta2", "kind": "HelmRepository",
                 "metadata": {"name": "acme", "namespace": "flux-system"}, "spec": {"url": "https://charts.example"}})
    w.kube.seed({"apiVersion": "source.toolkit.fluxcd.io/v1beta2", "kind": "HelmChart",
                 "metadata": {"name": "flux-system-app-dev", "namespace": "flux-system"},
                 "spec": {"chart": "app", "sourceRef": {"kind": "HelmRepository", "name": "acme"}}})
    w.kube.seed({"apiVersion": "helm.toolkit.fluxcd.io/v2beta2", "kind": "HelmRelease",
                 "metadata": {"name": "app-dev", "namespace": "flux-system"},
                 "spec": {"chart": {"spec": {"chart": "app",
                                             "sourceRef": {"kind": "HelmRepository", "name": "acme"}}}}})
    number = w.change("flux-2-2", {DEV: overlay("1212121")})
    w.merge(number)
    w.bot.settle()
    release = w.kube.live("helm.toolkit.fluxcd.io/v2beta2", "HelmRelease", "flux-system", "app-dev")
    token = release["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"]
    chart = w.kube.live("source.toolkit.fluxcd.io/v1beta2", "HelmChart", "flux-system", "flux-system-app-dev")
    assert chart["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] == token
    assert release["status"]["lastHandledReconcileAt"] == token
    asked = [r.path for r in w.kube.patches() if "fluxcd.io" in r.path]
    assert asked == ["/apis/source.toolkit.fluxcd.io/v1beta2/namespaces/flux-system/helmrepositories/acme",
                     "/apis/source.toolkit.fluxcd.io/v1beta2/namespaces/flux-system/helmcharts/flux-system-app-dev",
                     "/apis/helm.toolkit.fluxcd.io/v2beta2/namespaces/flux-system/helmreleases/app-dev"]
    assert w.statuses("dev") == [["in_progress", "success"]]
    assert "✅ healthy" in w.deploy_comment(number)


def test_a_cluster_without_flux_kustomizations_ends_the_deployment(world_on: Callable[..., World]) -> None:
    w = world_on({"Kustomization": []}, sync=FLUX)
    number = w.change("no-flux", {DEV: overlay("1313131")})
    w.merge(number)
    w.bot.settle()
    assert w.statuses("dev") == [["in_progress", "failure"]]
    deployment = next(d for d in w.fake.deployments(REPO) if d.environment == "dev")
    assert "does not serve Kustomization" in deployment.statuses[-1].description
    comment = w.deploy_comment(number)
    assert "❌ failed" in comment
    assert "does not serve Kustomization (kustomize.toolkit.fluxcd.io)" in comment
    assert [r for r in w.kube.patches() if "fluxcd.io" in r.path] == []


def test_an_api_failing_while_starting_ends_the_deployment_as_error_at_its_deadline(
        world: Callable[..., World]) -> None:
    w = world(sync=ARGO, deploy_timeout=2.0)
    w.seed_argo()
    number = w.change("api-down", {DEV: overlay("1414141")})
    w.kube.fail("Application", times=100000, code=503)        # every answer 503, after retries too
    w.merge(number)
    w.bot.settle()
    assert w.statuses("dev") == [["in_progress", "error"]]      # one Deployment, ended
    deployment = next(d for d in w.fake.deployments(REPO) if d.environment == "dev")
    assert "still failing after retries" in deployment.statuses[-1].description
    assert deployment.statuses[-1].created_at - deployment.created_at < 2.0 + 10   # its deadline + one try
    comment = w.deploy_comment(number)
    assert "❌ failed" in comment and "not started after 2 s" in comment
    assert "still failing after retries" in comment and "the sync is not started yet (trying again)" in comment
    assert w.kube.patches("Application") == []


def test_a_cluster_back_before_the_deadline_gets_the_one_deployment_synced(world: Callable[..., World]) -> None:
    """Unreachable at the merge for longer than the client's retries: the polls start the sync again
    under the same Deployment once the cluster is back."""
    from service_support import wait_for

    w = world(sync=ARGO, deploy_timeout=120.0)
    w.seed_argo()
    number = w.change("api-back", {DEV: overlay("1616161")})
    w.kube.fail("Application", times=100000, code=503)
    w.fake.merge(REPO, number, user="alice")
    w.bot.deliver_events(settle=False)
    wait_for(lambda: any("not started yet (trying again)" in c.body for c in w.fake.comments(REPO, number)),
             what="the start failing")
    w.kube.fail("Application", times=0)                         # the cluster is back
    w.bot.settle()
    assert w.statuses("dev") == [["in_progress", "success"]]
    assert len(w.kube.patches("Application")) == 1
    assert "✅ healthy" in w.deploy_comment(number)


def test_a_deploy_whose_deployment_answer_was_lost_adopts_it(world: Callable[..., World]) -> None:
    """GitHub created the Deployment but its answer never came (the job raised, as after a kill -9
    at that moment): the replay adopts that Deployment; a redelivered merge adds none either."""
    w = world(sync=ARGO)
    w.seed_argo()
    number = w.change("lost", {DEV: overlay("1717171")})
    w.fake.drop_connections(method="POST", path=r"/deployments$", after=True)
    w.fake.merge(REPO, number, user="alice")
    merged = w.bot.deliver_events()
    w.bot.settle()
    assert w.statuses("dev") == [["in_progress", "success"]]   # one Deployment, ended
    for hook in merged:                                         # GitHub redelivers the merge
        w.bot.deliver(hook)
    w.bot.settle()
    assert w.statuses("dev") == [["in_progress", "success"]]
    assert len(w.kube.patches("Application")) == 1
    assert "✅ healthy" in w.deploy_comment(number)


def test_an_api_failing_while_polling_ends_the_deployment_at_its_deadline(world: Callable[..., World]) -> None:
    w = world(sync=ARGO, deploy_timeout=2.0)
    w.seed_argo()
    w.kube.script("Application", "app-dev", outcome="healthy", steps=40)
    number = w.change("api-flaky", {DEV: overlay("1515151")})
    w.fake.merge(REPO, number, user="alice")
    w.bot.deliver_events(settle=False)
    from service_support import wait_for

    wait_for(lambda: len(w.kube.patches("Application")) == 1, what="the sync asked")
    w.kube.fail("Application", times=100000, code=503)         # the API goes down under the polls
    w.bot.settle()
    assert w.statuses("dev") == [["in_progress", "error"]]
    deployment = next(d for d in w.fake.deployments(REPO) if d.environment == "dev")
    assert deployment.statuses[-1].created_at - deployment.created_at < 2.0 + 10   # its deadline + one try
    comment = w.deploy_comment(number)
    assert "❌ failed" in comment and "not healthy after 2 s" in comment
    assert "still failing after retries" in comment and "(trying again)" in comment


def test_github_failing_at_the_deadline_still_ends_the_deployment(world: Callable[..., World]) -> None:
    """The cluster away under every poll and GitHub answering 502 to the Deployment's end for longer
    than the queue retries a job: the poll job is polled again rather than dropped, and the
    Deployment ends once GitHub answers."""
    from service_support import wait_for

    w = world(sync=ARGO, deploy_timeout=2.0)
    w.seed_argo()
    w.kube.script("Application", "app-dev", outcome="healthy", steps=40)
    number = w.change("gh-down", {DEV: overlay("1818181")})
    w.fake.merge(REPO, number, user="alice")
    w.bot.deliver_events(settle=False)
    wait_for(lambda: w.statuses("dev") == [["in_progress"]], what="the deployment in progress")
    # the cluster goes away only once the sync was asked for (on a busy machine the Deployment's
    # in_progress can come before it): this test is about waiting for health, not about starting
    wait_for(lambda: bool(w.kube.patches("Application")), what="the sync requested")
    w.kube.fail("Application", times=100000, code=503)
    refusals = w.bot.settings.max_attempts + 2                  # more than the queue's retries of one job
    w.fake.fail(502, times=refusals, method="POST", path=r"/deployments/\d+/statuses$")
    w.bot.settle()
    assert w.statuses("dev") == [["in_progress", "error"]]
    posted = [r.status for r in w.fake.requests
              if r.method == "POST" and re.search(r"/deployments/\d+/statuses$", r.path)]
    assert posted == [201] + [502] * refusals + [201]           # in_progress; the end refused, then written
    assert "not healthy after 2 s" in w.deploy_comment(number)


# --------------------------------------------------------------------------------------------
# Locks, deployers, sync, rollback
# --------------------------------------------------------------------------------------------

def test_locked_environment_holds_the_merge_until_unlock_and_sync(world: Callable[..., World]) -> None:
    w = world(sync=ARGO)
    w.seed_argo()
    number = w.change("locked", {DEV: overlay("8888888")})
    assert any("locked" in r for r in w.say(number, "/prbot lock dev release freeze"))
    w.bot.deliver_events()
    head = w.fake.pull(REPO, number).head_sha
    w.say(number, "/prbot plan", user="writer")
    runs = [r for r in w.fake.check_runs(REPO, head) if r.name == "prbot/plan"]
    assert runs[-1].conclusion == "failure"
    plan = next(c.body for c in w.fake.comments(REPO, number) if c.body.startswith(MARKER))
    assert "dev is locked" in plan and "release freeze" in plan

    w.merge(number)
    w.bot.settle()
    assert w.kube.patches("Application") == []                      # no sync while locked
    assert w.fake.deployments(REPO) == []
    assert "🔒" in w.deploy_comment(number)

    assert any("unlocked" in r for r in w.say(number, "/prbot unlock dev"))
    assert any("syncing" in r for r in w.say(number, "/prbot sync"))
    w.bot.settle()
    assert len(w.kube.patches("Application")) == 1
    assert w.statuses("dev") == [["in_progress", "success"]]


def test_deployers_refuse_a_writer_outside_them(world: Callable[..., World]) -> None:
    w = world(sync=ARGO, prod_deployers='["@acme/sre", "carol"]')
    w.seed_argo()
    number = w.change("to-prod", {DEV: overlay("9999999")})
    w.merge(number)
    w.bot.settle()
    replies = w.say(number, "/prbot promote prod", user="writer")
    assert len(replies) == 1 and "only the deployers" in replies[0] and "`@acme/sre`" in replies[0]
    assert promotion_pulls(w.fake, "prod") == []
    replies = w.say(number, "/prbot promote prod", user="sre-bob")   # a member of @acme/sre
    assert promotion_pulls(w.fake, "prod"), replies


def test_rollback_pr_restores_the_previous_successful_deployment(world: Callable[..., World]) -> None:
    w = world(sync=ARGO)
    w.seed_argo()
    first = w.change("v1", {DEV: overlay("aaaaaaa")})
    w.merge(first)
    w.bot.settle()
    second = w.change("v2", {DEV: overlay("bbbbbbb")})
    w.merge(second)
    w.bot.settle()
    assert w.statuses("dev") == [["in_progress", "success", "inactive"], ["in_progress", "success"]]
    replies = w.say(second, "/prbot rollback dev")
    assert any("opened" in r for r in replies), replies
    rollback = [p for p in w.fake.pulls(REPO, state="open") if p.head_ref == "prbot/rollback/dev"]
    assert len(rollback) == 1
    assert w.fake.read_file(REPO, rollback[0].head_ref, DEV) == overlay("aaaaaaa").encode()


# --------------------------------------------------------------------------------------------
# Preview environments
# --------------------------------------------------------------------------------------------

def test_preview_created_updated_and_torn_down(world: Callable[..., World]) -> None:
    w = world(sync=ARGO, preview=True)
    number = w.change("preview-me", {DEV: overlay("ccccccc")})
    assert w.say(number, "/prbot preview") == []
    w.bot.settle()
    live = w.kube.live("apps/v1", "Deployment", f"pr-{number}", "app")
    assert live is not None and live["metadata"]["labels"]["prbot.dev/pr"] == str(number)
    comment = next(c.body for c in w.fake.comments(REPO, number) if c.body.startswith(PREVIEW_MARKER))
    assert f"https://pr-{number}.preview.example.com" in comment

    w.fake.commit(REPO, "preview-me", {DEV: overlay("ddddddd")}, user="alice")   # a new push updates it
    w.bot.deliver_events()
    live = w.kube.live("apps/v1", "Deployment", f"pr-{number}", "app")
    assert live["spec"]["template"]["spec"]["containers"][0]["image"] == f"{APP_IMAGE}:ddddddd"

    w.fake.close_pull(REPO, number, user="alice")
    w.bot.deliver_events()
    assert w.kube.live("apps/v1", "Deployment", f"pr-{number}", "app") is None
    assert w.kube.live("v1", "Namespace", None, f"pr-{number}") is None


# --------------------------------------------------------------------------------------------
# A worker restarted mid-wait
# --------------------------------------------------------------------------------------------

def test_worker_restarted_while_waiting_for_health_resumes(world: Callable[..., World]) -> None:
    w = world(sync=ARGO)
    w.seed_argo()
    w.kube.script("Application", "app-dev", outcome="healthy", steps=40)
    number = w.change("slow", {DEV: overlay("eeeeeee")})
    w.fake.merge(REPO, number, user="alice")
    w.bot.deliver_events(settle=False)
    from service_support import wait_for

    wait_for(lambda: w.statuses("dev") == [["in_progress"]], what="the deployment in progress")
    w.bot.worker.stop(graceful=False, timeout=5)          # the worker goes away mid-wait
    assert w.statuses("dev") == [["in_progress"]]
    w.bot.worker = Worker(w.bot.settings, threads=1)      # a new worker process takes over
    w.bot.worker.start()
    w.bot.settle()
    # the dead worker's lease must lapse before its job is recovered: wait for the outcome, generously
    wait_for(lambda: w.statuses("dev") == [["in_progress", "success"]] or w.bot.settle() or False, timeout=90,
             what="the resumed deployment to succeed")
    assert w.statuses("dev") == [["in_progress", "success"]]
    assert "✅ healthy" in w.deploy_comment(number)


# --------------------------------------------------------------------------------------------
# A worker process killed mid-deploy
# --------------------------------------------------------------------------------------------

WORKER_PROCESS = """
import sys
import prbot.service.handlers
from prbot.service.logs import setup_logging
from prbot.service.settings import Settings
from prbot.service.worker import Worker
setup_logging(sys.stderr)
Worker(Settings.from_env(lease_seconds=2.0, heartbeat_seconds=0.25, poll_max_delay=0.05,
                         retry_base=0.05, retry_max=0.5)).run()
"""


def test_a_worker_killed_while_the_deploy_starts_leaves_one_deployment(world: Callable[..., World]) -> None:
    """kill -9 of the `prbot worker` process while the deploy starts (its Deployment created, GitHub
    refusing its `in_progress`): the worker that takes the job over adds no Deployment and ends it."""
    import os
    import signal
    import subprocess
    import sys

    from service_support import WEBHOOK_SECRET, wait_for
    from support import PROJECT

    w = world(sync=ARGO)
    w.seed_argo()
    w.bot.worker.stop(graceful=True, timeout=10)               # only the process below works for now
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PRBOT_"))}
    env.update({"GITHUB_APP_ID": str(w.fake.app_id), "GITHUB_PRIVATE_KEY": w.fake.private_key,
                "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET, "GITHUB_API_URL": w.fake.api_url,
                "PRBOT_DATA_DIR": str(w.bot.settings.data_dir), "PRBOT_CLUSTERS": str(w.clusters),
                "PRBOT_DEPLOY_POLL": "0", "PRBOT_DEPLOY_TIMEOUT": "120"})
    log = w.tmp / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", WORKER_PROCESS], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=PROJECT)
    try:
        number = w.change("killed", {DEV: overlay("1919191")})  # planned by the process
        w.fake.fail(502, times=40, method="POST", path=r"/deployments/\d+/statuses$")
        w.fake.merge(REPO, number, user="alice")
        w.bot.deliver_events(settle=False)
        wait_for(lambda: sum(1 for r in w.fake.requests if r.status == 502) >= 3, timeout=60,
                 what="the deploy under way in the process")
        assert len(w.fake.deployments(REPO)) == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    w.bot.worker = Worker(w.bot.settings, threads=1)           # another worker takes the job over
    w.bot.worker.start()
    w.bot.settle()
    assert w.statuses("dev") == [["in_progress", "success"]], log.read_text()[-3000:]
    assert len(w.kube.patches("Application")) == 1
    assert "✅ healthy" in w.deploy_comment(number)

"""The demo's stand-ins (`prbot.standins`) hold to what they stand in for, and the demo's story
with a rollout that fails.  The story that succeeds is `prbot demo` itself (tests/test_cli.py).

- `MemoryForge` against GitHub's rules: required checks gate merges, auto-merge waits for them and
  is refused on a PR that could merge now, merges are real git merges (or squashes), one open PR
  per head and base, the head follows its branch.
- `StandinClusters` against what a real rollout looks like to prbot's own health code: Argo CD
  busy → the sync asked → syncing → workloads rolling out → healthy; Flux; direct apply; failures.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from support import commit_all, git, init_repo, write

from prbot import flows, gitrepo
from prbot.config import SyncSpec, load_config_file
from prbot.demo import EXAMPLE, Narrator, Story, generate_origin, make_world
from prbot.errors import ForgeError
from prbot.model import Target
from prbot.ports import CheckRunOutput
from prbot.render import render_target
from prbot.standins import SERVED, MemoryForge, MemoryStore, StandinClusters
from prbot.targets import discover_targets

# --------------------------------------------------------------------------------------------
# MemoryStore
# --------------------------------------------------------------------------------------------


def test_memory_store_keeps_values_and_sets_only_once_when_asked() -> None:
    store = MemoryStore()
    assert store.get("a") is None
    assert store.put_if_absent("lock:x", "1") and not store.put_if_absent("lock:x", "2")
    store.put("push:b", "B")
    store.put("push:a", "A")
    store.put("pushx", "no")
    assert list(store.items("push:")) == [("push:a", "A"), ("push:b", "B")]
    store.delete("lock:x")
    store.delete("never-there")
    assert store.get("lock:x") is None and store.put_if_absent("lock:x", "3")


# --------------------------------------------------------------------------------------------
# MemoryForge
# --------------------------------------------------------------------------------------------

@pytest.fixture
def work(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "work")
    write(repo, "a.txt", "one\n")
    commit_all(repo, "initial")
    return repo


def _forge(work: Path, tmp_path: Path, posts: list[str], **kw: object) -> MemoryForge:
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(origin))
    git(work, "remote", "add", "origin", str(origin))
    return MemoryForge("acme/repo", origin, listener=lambda what, body: posts.append(what), **kw)  # type: ignore[arg-type]


def _branch(work: Path, name: str, path: str, text: str, start: str = "main") -> str:
    git(work, "checkout", "-q", "-B", name, start)
    write(work, path, text)
    sha = commit_all(work, f"{name}: {path}")
    git(work, "push", "-q", "-f", "origin", f"{name}:{name}")
    git(work, "checkout", "-q", "main")
    return sha


def _pass(forge: MemoryForge, sha: str, name: str = "prbot/plan", conclusion: str = "success") -> None:
    forge.create_check_run(head_sha=sha, name=name, status="completed", conclusion=conclusion,
                           output=CheckRunOutput(title="t", summary="s"))


def test_required_checks_gate_the_merge_and_auto_merge_merges_once_they_pass(work: Path, tmp_path: Path) -> None:
    posts: list[str] = []
    forge = _forge(work, tmp_path, posts, required_checks=("prbot/plan",))
    head = _branch(work, "feature", "b.txt", "two\n")
    pr = forge.create_pull(title="Add b", body="why", head="feature", base="main")
    assert (pr.number, pr.head_sha, pr.state) == (1, head, "open")
    assert forge.enable_auto_merge(pr)
    assert forge.merge_pull(1, sha=head) is None and forge.run_auto_merge() == []      # no check yet
    _pass(forge, head, conclusion="failure")
    assert forge.run_auto_merge() == [] and forge.missing_checks(1) == ["prbot/plan"]
    _pass(forge, head)                                                             # a re-run passes
    assert forge.run_auto_merge() == [1]
    merged = forge.get_pull(1)
    assert merged.merged and merged.state == "closed" and merged.merge_commit_sha
    assert git(forge.origin, "rev-parse", "main") == merged.merge_commit_sha
    assert git(forge.origin, "show", "main:b.txt") == "two"
    assert len(git(forge.origin, "rev-list", "--parents", "-n1", "main").split()) == 2   # squash: one parent
    assert any(p.startswith("merged PR #1 into main") and "auto-merge" in p for p in posts)
    assert forge.run_auto_merge() == []


def test_auto_merge_is_refused_on_a_pr_that_can_merge_now(work: Path, tmp_path: Path) -> None:
    forge = _forge(work, tmp_path, [])
    _branch(work, "feature", "b.txt", "two\n")
    pr = forge.create_pull(title="Add b", body="", head="feature", base="main")
    assert not forge.enable_auto_merge(pr)          # GitHub: "pull request is in clean status"
    forge.allow_auto_merge = False
    forge.required_checks = ("prbot/plan",)
    assert not forge.enable_auto_merge(pr)


def test_a_merge_commit_keeps_what_the_base_gained_meanwhile_and_a_conflict_merges_nothing(
        work: Path, tmp_path: Path) -> None:
    forge = _forge(work, tmp_path, [])
    head = _branch(work, "feature", "b.txt", "two\n")
    clash = _branch(work, "clash", "a.txt", "mine\n")
    pr = forge.create_pull(title="Add b", body="", head="feature", base="main")
    other = forge.create_pull(title="Change a", body="", head="clash", base="main")
    _branch(work, "main", "a.txt", "theirs\n", start="main")                   # main moves on
    sha = forge.merge_pull(pr.number, sha=head, method="merge")
    assert sha is not None
    assert git(forge.origin, "show", "main:b.txt") == "two" and git(forge.origin, "show", "main:a.txt") == "theirs"
    assert len(git(forge.origin, "rev-list", "--parents", "-n1", "main").split()) == 3   # a merge commit
    assert forge.merge_pull(other.number, sha=clash) is None                      # conflicts
    assert forge.get_pull(other.number).state == "open"
    assert git(forge.origin, "rev-parse", "main") == sha


def test_the_head_follows_its_branch_and_a_moved_head_is_not_merged(work: Path, tmp_path: Path) -> None:
    forge = _forge(work, tmp_path, [])
    first = _branch(work, "feature", "b.txt", "two\n")
    pr = forge.create_pull(title="Add b", body="", head="feature", base="main")
    second = _branch(work, "feature", "b.txt", "three\n")
    assert forge.get_pull(pr.number).head_sha == second
    assert git(forge.origin, "rev-parse", f"refs/pull/{pr.number}/head") == second
    assert forge.merge_pull(pr.number, sha=first) is None
    assert forge.merge_pull(pr.number, sha=second) is not None


def test_one_open_pr_per_head_and_base_and_none_without_commits(work: Path, tmp_path: Path) -> None:
    forge = _forge(work, tmp_path, [])
    _branch(work, "feature", "b.txt", "two\n")
    forge.create_pull(title="Add b", body="", head="feature", base="main")
    with pytest.raises(ForgeError, match="already exists"):
        forge.create_pull(title="Again", body="", head="feature", base="main")
    git(work, "push", "-q", "origin", "main:same")
    with pytest.raises(ForgeError, match="No commits between main and same"):
        forge.create_pull(title="Nothing", body="", head="same", base="main")
    with pytest.raises(ForgeError, match="head invalid"):
        forge.create_pull(title="Nowhere", body="", head="gone", base="main")
    assert sorted(forge.pulls) == [1]


def test_deployments_are_listed_newest_first_with_their_latest_status(work: Path, tmp_path: Path) -> None:
    forge = _forge(work, tmp_path, [])
    main = git(forge.origin, "rev-parse", "main")
    first = forge.create_deployment(ref=main, environment="dev", description="one", payload={"pr": 1})
    forge.set_deployment_status(first.id, state="in_progress", description="syncing")
    forge.set_deployment_status(first.id, state="success", description="healthy")
    second = forge.create_deployment(ref=main, environment="dev", description="two", payload={})
    forge.create_deployment(ref=main, environment="prod", description="three", payload={})
    listed = forge.list_deployments(environment="dev")
    assert [(d.id, d.state, d.sha) for d in listed] == [(second.id, None, main), (first.id, "success", main)]
    assert forge.list_deployments(environment="dev", limit=1) == listed[:1]
    assert forge.list_deployments(environment="dev", sha=main) == listed
    assert forge.list_deployments(environment="dev", sha="0" * 40) == []
    with pytest.raises(ForgeError):
        forge.create_deployment(ref="no-such-ref", environment="dev", description="", payload={})


# --------------------------------------------------------------------------------------------
# StandinClusters, judged by prbot's own health code
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, Target]]:
    """The sample repository on a bare origin, with one more commit on main (the "merge")."""
    base = tmp_path_factory.mktemp("sample")
    origin = generate_origin(base / "work", base / "origin.git")
    work = base / "work"
    path = work / "apps/shop/envs/dev/kustomization.yaml"
    path.write_text(path.read_text().replace('newTag: "1.1.0"', 'newTag: "1.2.0"'))
    git(work, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "bump")
    git(work, "push", "-q", str(origin), "main")
    config = load_config_file(EXAMPLE / ".prbot.yml")
    targets = {t.key: t for t in discover_targets(config, work)}
    return origin, git(origin, "rev-parse", "main"), targets


ARGOCD = SyncSpec("argocd", {"application": "{app}-{env}", "namespace": "argocd"})
HELMRELEASE = SyncSpec("flux", {"kind": "HelmRelease", "name": "billing-{env}", "namespace": "flux-system"})


def _follow(clusters: StandinClusters, ticket: dict, limit: int = 20) -> list[tuple[str, str, int, int]]:
    seen: list[tuple[str, str, int, int]] = []
    for _ in range(limit):
        ticket, progress = clusters.poll(json.loads(json.dumps(ticket)))     # tickets live as JSON in the store
        seen.append((progress.state, progress.reason, progress.ready, progress.total))
        if progress.done:
            return seen
    raise AssertionError(f"not done after {limit} polls: {seen}")


def test_argocd_waits_for_the_running_sync_then_syncs_rolls_out_and_is_healthy(sample) -> None:
    origin, sha, targets = sample
    clusters = StandinClusters(source=origin)
    ticket, progress = clusters.start("dev", targets["shop/dev"], ARGOCD, sha, repo_urls=["file:///x"],
                                      info=[("PR", "#1")])
    assert progress.state == "waiting" and "waiting for the running operation" in progress.reason
    assert "by automated sync" in progress.reason
    seen = _follow(clusters, ticket)
    assert [s for s, *_ in seen] == ["syncing", "syncing", "progressing", "healthy"]
    assert seen[0][1] == f"sync to {sha[:7]} requested from Argo CD"
    assert seen[1][1].startswith(f"Argo CD is syncing {sha[:7]}")
    assert seen[2][1:] == ("Synced, Progressing: Deployment shop: Progressing (0 of 1 updated replicas available)",
                           0, 1)
    assert seen[3] == ("healthy", f"Synced and Healthy at {sha[:7]}; 1 of 1 workloads healthy", 1, 1)
    [app] = [o for o in clusters.live.values() if o["kind"] == "Application"]
    assert app["metadata"]["name"] == "shop-dev" and app["metadata"]["annotations"] == {
        "argocd.argoproj.io/refresh": "normal"}
    operation = app["status"]["operationState"]["operation"]
    assert operation["initiatedBy"] == {"username": "prbot"} and operation["sync"]["revision"] == sha
    assert operation["info"] == [{"name": "PR", "value": "#1"}]       # asked later, still with the PR
    assert "operation" not in app


def test_argocd_not_busy_takes_the_sync_at_once(sample) -> None:
    origin, sha, targets = sample
    clusters = StandinClusters(source=origin, busy=False)
    ticket, progress = clusters.start("dev", targets["shop/dev"], ARGOCD, sha, info=[("PR", "#1")])
    assert (progress.state, progress.reason) == ("syncing", f"sync to {sha[:7]} requested from Argo CD")
    [app] = [o for o in clusters.live.values() if o["kind"] == "Application"]
    assert app["operation"]["info"] == [{"name": "PR", "value": "#1"}]
    assert _follow(clusters, ticket)[-1][0] == "healthy"


def test_a_failing_rollout_is_degraded_with_the_reason(sample) -> None:
    origin, sha, targets = sample
    clusters = StandinClusters(source=origin, fail=frozenset({"shop/dev"}), busy=False)
    ticket, _ = clusters.start("dev", targets["shop/dev"], ARGOCD, sha)
    state, reason, ready, total = _follow(clusters, ticket)[-1]
    assert state == "failed" and (ready, total) == (0, 1)
    assert reason.startswith("Degraded: Deployment shop: Degraded") and "progress deadline" in reason


def test_flux_reconciles_the_helmrelease_and_its_source(sample) -> None:
    origin, sha, targets = sample
    clusters = StandinClusters(source=origin)
    ticket, progress = clusters.start("dev", targets["billing/dev"], HELMRELEASE, sha)
    assert (progress.state, progress.reason) == (
        "syncing", "reconcile requested from Flux for HelmRelease flux-system/billing-dev")
    token = ticket["token"]
    annotated = [o["kind"] for o in clusters.live.values()
                 if (o["metadata"].get("annotations") or {}).get("reconcile.fluxcd.io/requestedAt") == token]
    assert sorted(annotated) == ["GitRepository", "HelmChart", "HelmRelease"]
    seen = _follow(clusters, ticket)
    assert seen[0][0] == "syncing" and "Running 'upgrade' action" in seen[0][1]
    assert seen[-1] == ("healthy", f"Ready, released chart 0.3.0 from {sha[:7]}", 1, 1)


def test_standin_flux_2_2_is_asked_at_the_versions_it_serves(sample) -> None:
    origin, sha, targets = sample
    served = {**SERVED, ("helm.toolkit.fluxcd.io", "HelmRelease"): "helm.toolkit.fluxcd.io/v2beta2",
              ("source.toolkit.fluxcd.io", "HelmChart"): "source.toolkit.fluxcd.io/v1beta2"}
    clusters = StandinClusters(source=origin, served=served)
    ticket, _ = clusters.start("dev", targets["billing/dev"], HELMRELEASE, sha)
    assert ticket["subject"]["apiVersion"] == "helm.toolkit.fluxcd.io/v2beta2"
    chart = next(o for o in clusters.live.values() if o["kind"] == "HelmChart")
    assert chart["apiVersion"] == "source.toolkit.fluxcd.io/v1beta2"
    assert chart["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] == ticket["token"]
    assert _follow(clusters, ticket)[-1][0] == "healthy"


def test_standin_kinds_not_served_are_skipped_with_a_note_or_fail(sample) -> None:
    origin, sha, targets = sample
    no_chart = {k: v for k, v in SERVED.items() if k[1] != "HelmChart"}
    clusters = StandinClusters(source=origin, served=no_chart)
    ticket, progress = clusters.start("dev", targets["billing/dev"], HELMRELEASE, sha)
    note = ("(note: HelmChart flux-system/flux-system-billing-dev not asked to reconcile: the cluster serves no "
            "HelmChart in source.toolkit.fluxcd.io)")
    assert progress.state == "syncing" and progress.reason.endswith(note)
    state, reason, *_ = _follow(clusters, ticket)[-1]
    assert state == "healthy" and reason.endswith(note)
    no_argo = {k: v for k, v in SERVED.items() if k[1] != "Application"}
    _, progress = StandinClusters(source=origin, served=no_argo).start("dev", targets["shop/dev"], ARGOCD, sha)
    assert (progress.state, progress.reason) == (
        "failed", "cluster dev does not serve Application (argoproj.io): is the controller that defines it "
                  "installed? Nothing was synced")


def test_flux_failure_is_reported_from_the_ready_condition(sample) -> None:
    origin, sha, targets = sample
    clusters = StandinClusters(source=origin, fail=frozenset({"billing/dev"}))
    ticket, _ = clusters.start("dev", targets["billing/dev"], HELMRELEASE, sha)
    state, reason, *_ = _follow(clusters, ticket)[-1]
    assert state == "failed" and reason.startswith("UpgradeFailed: health check failed")


def test_apply_rolls_out_the_rendered_workloads(sample) -> None:
    origin, sha, targets = sample
    target = targets["worker/dev"]
    with gitrepo.materialize(origin, sha) as root:
        objects = render_target(root, target)
    clusters = StandinClusters(source=origin)
    ticket, progress = clusters.start("dev", target, SyncSpec("apply"), sha, objects=objects)
    assert (progress.state, progress.reason) == ("syncing", f"applied {len(objects)} objects")
    seen = _follow(clusters, ticket)
    assert seen[0][0] == "progressing" and "Deployment worker-dev/worker" in seen[0][1]
    assert seen[-1] == ("healthy", "1 of 1 workload ready", 1, 1)


# --------------------------------------------------------------------------------------------
# The story when the rollout fails
# --------------------------------------------------------------------------------------------

def test_a_failed_rollout_reports_failure_and_promotes_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    narrator = Narrator(out)
    world = make_world(tmp_path, narrator.post, fail={"shop/dev"})
    assert Story(world, narrator).tell() == 0
    text = out.getvalue()
    forge = world.forge
    [deployment] = forge.deployments.values()
    assert [s for s, _ in forge.statuses[deployment.id]] == ["in_progress", "failure"]
    assert "Deployment shop: Degraded" in forge.statuses[deployment.id][-1][1]
    [result] = [c.body for c in forge.list_comments(1) if c.body.startswith("<!-- prbot:deploy -->")]
    assert "❌ failed" in result and "⛔ dev failed: nothing is promoted from it." in result
    assert [p.head_ref for p in forge.pulls.values()] == ["prbot/bump/dev/registry-cn-hangzhou-aliyuncs-com-demo-shop"]
    assert "▶ 5. dev did not become healthy: nothing is promoted from it" in text
    assert flows.load_state(world.repo, deployment.sha) is not None

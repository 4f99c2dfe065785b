"""The GitHub App end to end, the cases around the main story (issue 7): fork PRs and the cluster
dry-run, check-run annotations, a plan split into parts and shrunk again, auto-merge (GraphQL, and
the REST merge when the repository does not allow it), routing pushes (the index, `?repo=`, a tag
the rule refuses, GHCR's signed events, a `.prbot.yml` change on the default branch)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from appkit import Bot
from fakegithub import FakeGitHub
from fakekube import FakeKube
from gitops import APP_IMAGE, acr_push, config, overlay, repo_files
from service_support import GITHUB_FIXTURES

from prbot.branches import bump_branch
from prbot.report.markdown import MARKER

REPO = "acme/gitops"
DEV = "apps/app/envs/dev/kustomization.yaml"


@pytest.fixture
def make_bot(tmp_path: Path, fake_github: FakeGitHub) -> Iterator[Callable[..., Bot]]:
    bots: list[Bot] = []

    def make(*, files: dict[str, str] | None = None, allow_auto_merge: bool = True, **overrides: Any) -> Bot:
        fake_github.add_installation("acme")
        fake_github.create_repo(REPO, files=files or repo_files(), allow_auto_merge=allow_auto_merge)
        fake_github.set_permission(REPO, "writer", "write")
        fake_github.drain_events()
        bot = Bot(tmp_path, fake_github, **overrides)
        bots.append(bot)
        return bot

    yield make
    for bot in bots:
        bot.stop()


def plan_comments(fake: FakeGitHub, number: int) -> list[str]:
    return [c.body for c in fake.comments(REPO, number) if c.body.startswith(MARKER)]


# --------------------------------------------------------------------------------------------
# Forks and the dry-run
# --------------------------------------------------------------------------------------------

def test_fork_pr_is_planned_without_the_cluster_until_a_writer_asks(make_bot: Callable[..., Bot],
                                                                     fake_github: FakeGitHub, fake_kube: FakeKube,
                                                                     tmp_path: Path) -> None:
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "kube" / "config")
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({env: {"kubeconfig": str(kubeconfig)} for env in ("dev", "staging", "prod")}))
    fake_kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app-dev"}})
    bot = make_bot(files=repo_files(clusters=True), clusters_file=clusters)
    fake_github.fork_repo(REPO, "mallory")
    fake_github.commit("mallory/gitops", "evil", {DEV: overlay("abcdef1")}, user="mallory")
    number = fake_github.open_pull(REPO, head="evil", head_repo="mallory/gitops", user="mallory")
    bot.deliver_events()
    comments = plan_comments(fake_github, number)
    assert len(comments) == 1 and "abcdef1" in comments[0]
    assert fake_kube.touching("app-dev") == []                  # nothing was sent to the cluster
    assert "| dev | app | `+0 ~1 -0` | ✅ passed | — |" in comments[0]

    fake_github.comment(REPO, number, "/prbot plan", user="writer")
    bot.deliver_events()
    assert fake_kube.touching("app-dev")                         # a writer asked: dry-run on the cluster
    comments = plan_comments(fake_github, number)
    assert len(comments) == 1 and "Server-side dry-run" in comments[0]


def test_a_pr_adding_a_directory_owns_nothing_on_the_cluster_until_merged(
        make_bot: Callable[..., Bot], fake_github: FakeGitHub, fake_kube: FakeKube, tmp_path: Path) -> None:
    """Issue 15: a PR adding apps/payments/envs/dev/ made payments-dev (another team's) owned, and the
    comment showed its live values.  The new target owns nothing until merged; nothing is sent."""
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "kube" / "config")
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({env: {"kubeconfig": str(kubeconfig)} for env in ("dev", "staging", "prod")}))
    fake_kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments-dev"}})
    fake_kube.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db", "namespace": "payments-dev"},
                    "data": {"password": "hunter2-payments"}})
    fake_kube.seed({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "payments-dev"},
                    "data": {"password": "czNjcmV0LXBheW1lbnRz"}})
    bot = make_bot(files=repo_files(clusters=True), clusters_file=clusters)
    fake_github.commit(REPO, "payments", {
        "apps/payments/envs/dev/db.yaml": ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: db}\n"
                                           "data: {password: guess}\n---\n"
                                           "apiVersion: v1\nkind: Secret\nmetadata: {name: db}\n"
                                           "stringData: {password: guess}\n")}, user="writer")
    number = fake_github.open_pull(REPO, head="payments", user="writer")
    bot.deliver_events()
    [comment] = plan_comments(fake_github, number)
    assert fake_kube.touching("payments-dev") == []               # no request named payments-dev
    assert "| dev | payments | `+2 ~0 -0` new target | ✅ passed | ⏭️ 2 not sent |" in comment
    assert "this target is new in this change, and a target owns nothing on the cluster until it is merged" \
        in comment
    assert "hunter2" not in comment and "czNjcmV0" not in comment and "s3cret" not in comment


def test_a_pr_into_another_branch_is_planned_without_the_cluster(
        make_bot: Callable[..., Bot], fake_github: FakeGitHub, fake_kube: FakeKube, tmp_path: Path) -> None:
    """The variant: a writer pushes (unreviewed) a branch holding apps/payments/envs/dev/, then opens
    a PR into that branch.  The target exists at the PR's base, but not on the default branch, where
    ownership comes from: nothing reaches the cluster, even when a writer asks with /prbot plan."""
    kubeconfig = fake_kube.write_kubeconfig(tmp_path / "kube" / "config")
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({env: {"kubeconfig": str(kubeconfig)} for env in ("dev", "staging", "prod")}))
    fake_kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments-dev"}})
    fake_kube.seed({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "db", "namespace": "payments-dev"},
                    "data": {"password": "hunter2-payments"}})
    bot = make_bot(files=repo_files(clusters=True), clusters_file=clusters)
    db = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: db}\ndata: {password: %s}\n"
    release = fake_github.commit(REPO, "release", {"apps/payments/envs/dev/db.yaml": db % "one"}, user="writer")
    fake_github.commit(REPO, "payments", {"apps/payments/envs/dev/db.yaml": db % "two"}, user="writer",
                       parent=release)
    number = fake_github.open_pull(REPO, head="payments", base="release", user="writer")
    bot.deliver_events()
    fake_github.comment(REPO, number, "/prbot plan", user="writer")
    bot.deliver_events()
    [comment] = plan_comments(fake_github, number)
    assert "| dev | payments | `+0 ~1 -0` | ✅ passed | — |" in comment     # planned, not dry-run
    assert fake_kube.touching("payments-dev") == [] and "hunter2" not in comment


# --------------------------------------------------------------------------------------------
# The check run and the comment's parts
# --------------------------------------------------------------------------------------------

def test_failed_render_fails_the_check_with_an_annotation_on_the_file(make_bot: Callable[..., Bot],
                                                                       fake_github: FakeGitHub) -> None:
    bot = make_bot()
    fake_github.commit(REPO, "broken", {DEV: "resources:\n  - ../../base\n  - missing.yaml\n"}, user="writer")
    number = fake_github.open_pull(REPO, head="broken", user="writer")
    bot.deliver_events()
    head = fake_github.pull(REPO, number).head_sha
    run = next(r for r in fake_github.check_runs(REPO, head) if r.name == "prbot/plan")
    assert (run.status, run.conclusion) == ("completed", "failure")
    assert run.annotations, run.output
    note = run.annotations[0]
    assert note["path"] == DEV and note["annotation_level"] == "failure"
    assert "missing.yaml" in note["message"]
    assert "❌" in plan_comments(fake_github, number)[0]


def test_long_plan_is_split_and_surplus_parts_deleted(make_bot: Callable[..., Bot], fake_github: FakeGitHub) -> None:
    bot = make_bot()
    big = "\n".join(f"  key{i}: \"{'x' * 90}{i}\"" for i in range(1600))
    files = {"apps/app/envs/dev/big.yaml": f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n{big}\n",
             DEV: overlay().replace("  - ../../base\n", "  - ../../base\n  - big.yaml\n")}
    fake_github.commit(REPO, "big", files, user="writer")
    number = fake_github.open_pull(REPO, head="big", user="writer")
    bot.deliver_events()
    parts = plan_comments(fake_github, number)
    assert len(parts) >= 3, [len(p) for p in parts]
    assert all(len(p) <= 65_000 for p in parts)
    first_ids = [c.id for c in fake_github.comments(REPO, number) if c.body.startswith(MARKER)]

    fake_github.commit(REPO, "big", {"apps/app/envs/dev/big.yaml": None,            # type: ignore[dict-item]
                                     DEV: overlay("2222222")}, user="writer")
    bot.deliver_events()
    parts = plan_comments(fake_github, number)
    assert len(parts) == 1 and "2222222" in parts[0]
    assert [c.id for c in fake_github.comments(REPO, number) if c.body.startswith(MARKER)] == first_ids[:1]


# --------------------------------------------------------------------------------------------
# Auto-merge
# --------------------------------------------------------------------------------------------

def test_auto_merge_through_graphql(make_bot: Callable[..., Bot], fake_github: FakeGitHub) -> None:
    bot = make_bot(files=repo_files(auto_merge=True))
    fake_github.protect_branch(REPO, "main", required_checks=["prbot/plan"])   # GitHub: auto-merge needs it
    assert bot.registry_push("acr", acr_push("3f9c2e1")).status_code == 202
    bot.settle()
    pr = fake_github.pulls(REPO, state="open")[0]
    assert pr.auto_merge is not None and pr.auto_merge.get("merge_method") in ("SQUASH", "squash")
    assert len(fake_github.api_writes()) <= 3
    bot.deliver_events()                                     # the plan check passes: GitHub merges
    assert fake_github.pull(REPO, pr.number).merged


def test_auto_merge_falls_back_to_a_rest_merge_once_the_plan_passes(make_bot: Callable[..., Bot],
                                                                    fake_github: FakeGitHub) -> None:
    bot = make_bot(files=repo_files(auto_merge=True), allow_auto_merge=False)
    bot.registry_push("acr", acr_push("3f9c2e1"))
    bot.settle()
    pr = fake_github.pulls(REPO, state="all")[0]
    assert pr.state == "open" and pr.auto_merge is None
    bot.deliver_events()                                     # opened → plan → success → merged
    pr = fake_github.pull(REPO, pr.number)
    assert pr.merged
    assert fake_github.read_file(REPO, "main", DEV) == overlay("3f9c2e1").encode()


# --------------------------------------------------------------------------------------------
# Routing pushes
# --------------------------------------------------------------------------------------------

def test_registry_answer_reports_each_repository_and_repo_narrows(make_bot: Callable[..., Bot],
                                                                  fake_github: FakeGitHub) -> None:
    bot = make_bot()
    fake_github.create_repo("acme/other", files=repo_files())
    fake_github.drain_events()
    bot.registry_push("acr", acr_push("3f9c2e1"), repo=REPO)
    bot.settle()
    assert [p.head_ref for p in fake_github.pulls(REPO)] == [bump_branch("dev", APP_IMAGE)]
    assert fake_github.pulls("acme/other") == []                 # ?repo= narrowed the push

    refused = bot.registry_push("acr", acr_push("not-a-sha"))      # the rule takes 7-40 hex digits
    assert refused.status_code == 200 and refused.get_json()["status"] == "unrouted", "refused: no job queued"
    routes = refused.get_json()["routes"]
    assert {r["repo"] for r in routes} == {REPO, "acme/other"}
    assert all(not r["accepted"] and "does not match" in r["reason"] for r in routes)
    bot.settle()
    assert fake_github.pulls("acme/other") == []


def test_ghcr_package_event_opens_the_bump_pr(make_bot: Callable[..., Bot], fake_github: FakeGitHub) -> None:
    files = repo_files()
    files[".prbot.yml"] = config().replace(f"  - repository: {APP_IMAGE}\n",
                                           f"  - repository: {APP_IMAGE}\n  - repository: ghcr.io/acme/app\n"
                                           f"    land_in: dev\n  - repository: ignored.example/x\n")
    files["apps/app/envs/dev/kustomization.yaml"] = overlay() + "  - name: ghcr.io/acme/app\n    newTag: \"1.0.0\"\n"
    files["apps/app/base/deployment.yaml"] = files["apps/app/base/deployment.yaml"].replace(
        "          ports:", "        - name: sidecar\n          image: ghcr.io/acme/app:0.0.1\n          ports:", 1)
    bot = make_bot(files=files)
    payload = json.loads((GITHUB_FIXTURES / "registry_package.published.docker.json").read_text())
    digest = "sha256:" + "ab" * 32

    def event(tag: str, digest: str) -> dict[str, Any]:
        body = copy.deepcopy(payload)
        version = body["registry_package"]["package_version"]
        version["package_url"] = f"ghcr.io/acme/app:{tag}"
        version["container_metadata"]["tag"] = {"name": tag, "digest": digest}
        return body

    # a multi-arch push: one event per manifest, the per-platform ones without a tag
    assert bot.post_github("registry_package", event("", "sha256:" + "01" * 32)).status_code == 202
    assert bot.post_github("registry_package", event("1.1.0", digest)).status_code == 202
    assert bot.post_github("registry_package", event("", "sha256:" + "02" * 32)).status_code == 202
    bot.settle()
    pulls = fake_github.pulls(REPO, state="open")
    assert [p.head_ref for p in pulls] == [bump_branch("dev", "ghcr.io/acme/app")]
    assert fake_github.read_file(REPO, pulls[0].head_ref, DEV).decode().count("1.1.0") == 1
    assert digest in (pulls[0].body or "")


def test_config_change_on_the_default_branch_refreshes_the_index(make_bot: Callable[..., Bot],
                                                                 fake_github: FakeGitHub) -> None:
    files = repo_files()
    files[".prbot.yml"] = config().replace(f"  - repository: {APP_IMAGE}\n    tags: '^[0-9a-f]{{7,40}}$'\n",
                                           "  - repository: example.com/nothing\n")
    bot = make_bot(files=files)
    bot.registry_push("acr", acr_push("3f9c2e1"))
    bot.settle()
    assert fake_github.pulls(REPO) == []                           # the image is not listed yet
    fake_github.commit(REPO, "main", {".prbot.yml": config()}, user="writer")
    bot.deliver_events()                                           # push to main touching .prbot.yml
    bot.registry_push("acr", acr_push("3f9c2e1"))
    bot.settle()
    assert [p.head_ref for p in fake_github.pulls(REPO)] == [bump_branch("dev", APP_IMAGE)]


def test_generic_push_from_ci_links_the_source_commit(make_bot: Callable[..., Bot], fake_github: FakeGitHub) -> None:
    bot = make_bot()
    sha = "0123456789abcdef0123456789abcdef01234567"
    resp = bot.registry_push("generic", {"image": f"{APP_IMAGE}:{sha}", "source": "https://github.com/acme/app"})
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["routes"] == []                     # nothing indexed yet: the worker indexes first
    bot.settle()
    [pr] = fake_github.pulls(REPO)
    assert f"[0123456](https://github.com/acme/app/commit/{sha})" in (pr.body or "")


def test_another_apps_comment_with_our_marker_is_left_alone(make_bot: Callable[..., Bot],
                                                             fake_github: FakeGitHub) -> None:
    bot = make_bot()
    fake_github.add_user("impostor[bot]", kind="Bot")
    fake_github.commit(REPO, "change", {DEV: overlay("abcdef2")}, user="writer")
    number = fake_github.open_pull(REPO, head="change", user="writer")
    forged = fake_github.comment(REPO, number, f"{MARKER}\nforged plan: all green", user="impostor[bot]")
    bot.deliver_events()
    mine = [c for c in fake_github.comments(REPO, number) if c.body.startswith(MARKER) and c.id != forged]
    assert len(mine) == 1 and mine[0].user.login == "prbot[bot]" and "abcdef2" in mine[0].body
    assert next(c for c in fake_github.comments(REPO, number) if c.id == forged).body.endswith("all green")

"""The GitHub App end to end (issue 7): registry push → bump PR → PR webhook → one sticky comment
and a check run → a second push → the same PR updated, still one comment → `/prbot plan` refused
for a reader (reactions only), re-run for a writer → a replayed delivery changes nothing.

Everything real but GitHub: the Flask app, the huey queue on SQLite with a worker, the bare mirror
fetched and pushed over smart HTTP, kubectl kustomize; GitHub is the stateful fake on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from appkit import Bot
from fakegithub import FakeGitHub
from gitops import APP_IMAGE, OLD_TAG, acr_push, overlay, repo_files

from prbot.branches import bump_branch
from prbot.report.markdown import MARKER

REPO = "acme/gitops"
BRANCH = bump_branch("dev", APP_IMAGE)
DEV = "apps/app/envs/dev/kustomization.yaml"


@pytest.fixture
def bot(tmp_path: Path, fake_github: FakeGitHub) -> Iterator[Bot]:
    fake_github.add_installation("acme")
    fake_github.create_repo(REPO, files=repo_files())
    fake_github.set_permission(REPO, "reader", "read")
    fake_github.set_permission(REPO, "writer", "write")
    b = Bot(tmp_path, fake_github)
    yield b
    b.stop()


def plan_comments(fake: FakeGitHub, number: int) -> list[str]:
    return [c.body for c in fake.comments(REPO, number) if c.body.startswith(MARKER)]


def changed_files(fake: FakeGitHub, base: str, head: str) -> dict[str, bytes | None]:
    """Paths whose content differs between two refs of the fake repository, with the head content."""
    from support import git

    path = fake.repo(REPO).path
    names = git(path, "diff", "--name-only", base, head).splitlines()
    return {n: fake.read_file(REPO, head, n) for n in names}


def test_push_to_plan_to_commands_end_to_end(bot: Bot, fake_github: FakeGitHub) -> None:
    fake = fake_github
    fake.drain_events()                               # the installation events: nothing for the bot yet

    # 1. a registry push opens the bump PR with a one-file change
    resp = bot.registry_push("acr", acr_push("3f9c2e1"))
    assert resp.status_code == 202, resp.get_json()
    bot.settle()
    pulls = fake.pulls(REPO, state="open")
    assert [p.head_ref for p in pulls] == [BRANCH]
    pr = pulls[0]
    assert pr.title == f"Bump {APP_IMAGE} to 3f9c2e1 in dev"
    assert sorted(fake.labels(REPO, pr.number)) == ["bump", "env:dev", "prbot"]
    assert changed_files(fake, "main", BRANCH) == {DEV: overlay("3f9c2e1").encode()}
    assert "sha256:457f4aa8" in (pr.body or "")          # the digest the registry reported
    writes_for_open = len(fake.api_writes())
    assert writes_for_open <= 3

    # 2. the PR webhook: one sticky comment and a successful check run on the head
    bot.deliver_events()
    comments = plan_comments(fake, pr.number)
    assert len(comments) == 1
    assert "registry.cn-hangzhou.aliyuncs.com/demo/app:3f9c2e1" in comments[0]
    assert f"-      - image: {APP_IMAGE}:{OLD_TAG}" in comments[0]
    head = fake.pull(REPO, pr.number).head_sha
    runs = [r for r in fake.check_runs(REPO, head) if r.name == "prbot/plan"]
    assert [(r.status, r.conclusion) for r in runs] == [("completed", "success")]

    # 3. a second push: the same PR, rewritten; still one comment, edited in place
    assert bot.registry_push("acr", acr_push("4a5b6c7")).status_code == 202
    bot.settle()
    bot.deliver_events()
    assert [p.number for p in fake.pulls(REPO, state="all")] == [pr.number]
    updated = fake.pull(REPO, pr.number)
    assert updated.title == f"Bump {APP_IMAGE} to 4a5b6c7 in dev"
    assert changed_files(fake, "main", BRANCH) == {DEV: overlay("4a5b6c7").encode()}
    comments = plan_comments(fake, pr.number)
    assert len(comments) == 1 and f"{APP_IMAGE}:4a5b6c7" in comments[0]
    assert [r.conclusion for r in fake.check_runs(REPO, updated.head_sha) if r.name == "prbot/plan"] == ["success"]

    # 4. `/prbot plan` from a reader is refused (reactions, no reply), from a writer it runs again
    reader = fake.comment(REPO, pr.number, "/prbot plan", user="reader")
    bot.deliver_events()
    replies = [c.body for c in fake.comments(REPO, pr.number) if c.user.type == "Bot" and not c.body.startswith(MARKER)]
    assert replies == []
    assert [r.content for r in _comment(fake, reader).reactions] == ["eyes", "confused"]
    runs_before = len(fake.check_runs(REPO, updated.head_sha))
    writer = fake.comment(REPO, pr.number, "/prbot plan", user="writer")
    bot.deliver_events()
    assert [r.content for r in _comment(fake, writer).reactions] == ["eyes", "rocket"]
    assert len(plan_comments(fake, pr.number)) == 1
    assert [r.conclusion for r in fake.check_runs(REPO, updated.head_sha)][-1] == "success"
    assert len(fake.check_runs(REPO, updated.head_sha)) == runs_before      # the same check run, re-run

    # 5. a replayed delivery is acknowledged and changes nothing
    writes = len(fake.api_writes())
    fake.comment(REPO, pr.number, "/prbot help", user="writer")
    hooks = fake.drain_events()
    assert bot.deliver(hooks[0]).status_code == 202
    bot.settle()
    after_first = len(fake.api_writes())
    assert after_first > writes                                       # the help reply and reactions
    replay = bot.deliver(hooks[0])
    assert replay.status_code == 200 and replay.get_json()["status"] == "duplicate"
    bot.settle()
    assert len(fake.api_writes()) == after_first


def _comment(fake: FakeGitHub, comment_id: int):  # type: ignore[no-untyped-def]
    return next(c for c in fake.comments(REPO, _number_of(fake, comment_id)) if c.id == comment_id)


def _number_of(fake: FakeGitHub, comment_id: int) -> int:
    for pr in fake.pulls(REPO, state="all"):
        if any(c.id == comment_id for c in fake.comments(REPO, pr.number)):
            return pr.number
    raise AssertionError(f"no comment {comment_id}")


def test_a_comment_post_whose_answer_is_lost_leaves_one_comment(bot: Bot, fake_github: FakeGitHub) -> None:
    """The POST that creates the plan comment takes effect but its response never arrives: the job
    is retried, finds the comment by its marker, and edits it instead of posting a second one."""
    fake = fake_github
    fake.drain_events()
    fake.commit(REPO, "change", {DEV: overlay("abcdef0")}, user="writer")
    number = fake.open_pull(REPO, head="change", user="writer")
    fake.drop_connections(method="POST", path=rf"/repos/{REPO}/issues/{number}/comments$", after=True)
    bot.deliver_events()
    comments = plan_comments(fake, number)
    assert len(comments) == 1 and "abcdef0" in comments[0]
    posts = [r for r in fake.requests if r.method == "POST" and r.path.endswith(f"/issues/{number}/comments")]
    assert len(posts) == 1                                        # the lost one; the retry edited it
    head = fake.pull(REPO, number).head_sha
    assert [r.conclusion for r in fake.check_runs(REPO, head) if r.name == "prbot/plan"] == ["success"]


REMOTE = "https://github.com/acme/infra//base?ref=v1.0.0"


def plan_check(fake: FakeGitHub, number: int):  # type: ignore[no-untyped-def]
    head = fake.pull(REPO, number).head_sha
    [run] = [r for r in fake.check_runs(REPO, head) if r.name == "prbot/plan"]
    return run


@pytest.mark.parametrize("allow_in_pr", [False, True])
def test_an_affected_target_prbot_cannot_render_fails_the_check_with_the_way_out(
        bot: Bot, fake_github: FakeGitHub, allow_in_pr: bool) -> None:
    """Attack: a PR makes dev read a remote base `render.remote` does not allow — the comment could
    show nothing of dev, so the check must not be green.  Variant: the PR also allows the prefix in
    its own `.prbot.yml`, which does not count (the default branch's does)."""
    fake = fake_github
    fake.drain_events()
    files = {DEV: overlay().replace("  - ../../base\n", f"  - ../../base\n  - {REMOTE}\n"),
             "apps/app/envs/staging/kustomization.yaml": overlay("2222222")}
    if allow_in_pr:
        files[".prbot.yml"] = repo_files()[".prbot.yml"] + 'render:\n  remote: ["https://github.com/acme/"]\n'
    fake.commit(REPO, "remote", files, user="writer")
    number = fake.open_pull(REPO, head="remote", user="writer")
    bot.deliver_events()
    run = plan_check(fake, number)
    assert (run.status, run.conclusion) == ("completed", "failure")
    assert "1 target not rendered" in run.output["title"]
    summary = run.output["summary"]
    assert summary.startswith("### ❌ Not rendered")
    assert "**dev/app** at `apps/app/envs/dev`" in summary and "github.com/acme/infra" in summary
    assert "`render.remote` of `.prbot.yml` on the default branch" in summary and "vendor the input" in summary
    gate = summary.split("<!-- prbot:plan -->")[0]                  # what precedes the comment itself
    assert "staging/app" not in gate and "prod/app" not in gate          # rendered: no blind spot
    assert [a["path"] for a in run.annotations] == [DEV], run.annotations
    [note] = [a for a in run.annotations if a["path"] == DEV]
    assert note["annotation_level"] == "failure" and "render.remote" in note["message"]
    [comment] = plan_comments(fake, number)
    assert "dev ❌ 1 target not rendered" in comment and "❌ not rendered (remote input)" in comment
    assert "vendor the input" in comment


def test_a_noisy_target_cannot_hide_the_others_behind_a_green_check(
        bot: Bot, fake_github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack: a 20,000-line diff in dev (just under the diff's own line bound) outgrows the comment;
    staging and prod still show in full, and the check fails naming what the comment could not show."""
    monkeypatch.setenv("PRBOT_COMMENT_PARTS", "1")
    fake = fake_github
    fake.drain_events()
    noise = "".join(f"  k{i:05d}: v{i}\n" for i in range(19_990))
    fake.commit(REPO, "noisy", {
        DEV: overlay().replace("  - ../../base\n", "  - ../../base\n  - noise.yaml\n"),
        "apps/app/envs/dev/noise.yaml": f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: noise\ndata:\n{noise}",
        "apps/app/envs/staging/kustomization.yaml": overlay("2222222"),
        "apps/app/envs/prod/kustomization.yaml": overlay("3333333")}, user="writer")
    number = fake.open_pull(REPO, head="noisy", user="writer")
    bot.deliver_events()
    [comment] = plan_comments(fake, number)
    assert f"+      - image: {APP_IMAGE}:2222222" in comment and f"+      - image: {APP_IMAGE}:3333333" in comment
    assert "k19989" not in comment and "too large to diff" not in comment
    run = plan_check(fake, number)
    assert (run.status, run.conclusion) == ("completed", "failure")
    assert "1 not shown in the comment" in run.output["title"]
    hidden = run.output["summary"].split("<!-- prbot:plan -->")[0]
    assert hidden.startswith("### ❌ Not shown in the comment") and "**dev/app** at `apps/app/envs/dev`" in hidden
    assert "staging/app" not in hidden and "prod/app" not in hidden


def test_vendoring_the_remote_input_is_a_way_out_that_turns_the_check_green(
        bot: Bot, fake_github: FakeGitHub) -> None:
    """The default branch already reads the remote base; the PR vendors it: the head renders, the
    base did not (every object shown as added, with a note), and nothing is hidden — green."""
    fake = fake_github
    fake.commit(REPO, "main", {DEV: overlay().replace("  - ../../base\n", f"  - ../../base\n  - {REMOTE}\n")})
    fake.drain_events()
    fake.commit(REPO, "vendor", {
        DEV: overlay().replace("  - ../../base\n", "  - ../../base\n  - infra\n"),
        "apps/app/envs/dev/infra/kustomization.yaml": "resources:\n  - cm.yaml\n",
        "apps/app/envs/dev/infra/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: infra\n"
                                           "data:\n  k: v\n"}, user="writer")
    number = fake.open_pull(REPO, head="vendor", user="writer")
    bot.deliver_events()
    [comment] = plan_comments(fake, number)
    assert "the base revision did not render" in comment and "`ConfigMap app-dev/infra`" in comment
    run = plan_check(fake, number)
    assert (run.status, run.conclusion) == ("completed", "success"), run.output["summary"][:2000]
    assert "<!-- prbot:plan -->" in run.output["summary"].split("\n", 1)[0]    # no gate section before it

"""Attacks on slash commands through the served App (issue 15 items 3-5, issue 14 item 7): a writer's
command covers only the head the writer saw, previews start and follow pushes only for people with
write permission, a replayed comment runs nothing again, and outsiders get no echo of their text.

Everything real but GitHub and Kubernetes: the Flask app, the queue and its worker, the mirror,
kubectl; GitHub is the fake on 127.0.0.1 (its webhooks signed and posted to the app), the clusters
the fake Kubernetes API.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from appkit import Bot
from fakegithub import FakeGitHub, Webhook
from fakekube import FakeKube
from gitops import APP_IMAGE, overlay, repo_files

from prbot.flows import get_lock
from prbot.flows.preview import PREVIEW_MARKER
from prbot.report.markdown import MARKER

REPO = "acme/gitops"
FORK = "mallory/gitops"
DEV = "apps/app/envs/dev/kustomization.yaml"
MOVED = "the head moved; comment again"
ENVS = ("dev", "staging", "prod")


class World:
    """The fakes, the bot, a fork PR by mallory, and the people around it."""

    def __init__(self, tmp_path: Path, fake: FakeGitHub, kube: FakeKube) -> None:
        self.fake, self.kube = fake, kube
        fake.add_installation("acme")
        fake.create_repo(REPO, files=repo_files(clusters=True, preview=True))
        for user, role in (("writer", "write"), ("trina", "triage")):
            fake.set_permission(REPO, user, role)
        kubeconfig = kube.write_kubeconfig(tmp_path / "kube" / "config")
        clusters = tmp_path / "clusters.yaml"
        clusters.write_text(yaml.safe_dump({env: {"kubeconfig": str(kubeconfig)} for env in ENVS}))
        for env in ENVS:
            kube.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"app-{env}"}})
        fake.drain_events()
        self.bot = Bot(tmp_path, fake, clusters_file=clusters, deploy_poll=0.0)

    def fork_pr(self, tag: str) -> int:
        self.fake.fork_repo(REPO, "mallory")
        self.fake.commit(FORK, "evil", {DEV: overlay(tag)}, user="mallory")
        number = self.fake.open_pull(REPO, head="evil", head_repo=FORK, user="mallory")
        self.bot.deliver_events()
        return number

    def push_fork(self, tag: str) -> str:
        return self.fake.commit(FORK, "evil", {DEV: overlay(tag)}, user="mallory")

    def replies(self, number: int) -> list[str]:
        """The bot's replies to commands (not its plan or preview comments)."""
        return [c.body for c in self.fake.comments(REPO, number) if c.user.type == "Bot"
                and not c.body.startswith((MARKER, PREVIEW_MARKER))]

    def reactions(self, number: int, comment_id: int) -> list[str]:
        return [r.content for c in self.fake.comments(REPO, number) if c.id == comment_id for r in c.reactions]

    def plan_comment(self, number: int) -> str:
        [body] = [c.body for c in self.fake.comments(REPO, number) if c.body.startswith(MARKER)]
        return body

    def preview_image(self, number: int) -> str | None:
        live = self.kube.live("apps/v1", "Deployment", f"pr-{number}", "app")
        return live["spec"]["template"]["spec"]["containers"][0]["image"] if live else None


@pytest.fixture
def world(tmp_path: Path, fake_github: FakeGitHub, fake_kube: FakeKube) -> Iterator[World]:
    w = World(tmp_path, fake_github, fake_kube)
    yield w
    w.bot.stop()


# --------------------------------------------------------------------------------------------
# A writer's command covers the head the writer saw
# --------------------------------------------------------------------------------------------

def test_a_push_after_a_writers_plan_is_not_dry_run(world: World) -> None:
    number = world.fork_pr("aaaaaaa")
    assert world.kube.touching("app-dev") == []                   # a fork: no dry-run by itself
    asked = world.fake.comment(REPO, number, "/prbot plan", user="writer")   # the writer read aaaaaaa
    world.fake.advance(2)
    world.push_fork("bbbbbbb")                                    # mallory pushes before the job runs
    world.bot.deliver_events()
    assert world.kube.touching("app-dev") == []                   # the unreviewed head never reached the cluster
    assert world.replies(number) == [f"- `/prbot plan`: {MOVED}"]
    assert world.reactions(number, asked) == ["eyes", "confused"]
    assert "Server-side dry-run" not in world.plan_comment(number)

    again = world.fake.comment(REPO, number, "/prbot plan", user="writer")   # the writer read bbbbbbb
    world.bot.deliver_events()
    assert world.kube.touching("app-dev")
    assert world.reactions(number, again) == ["eyes", "rocket"]
    body = world.plan_comment(number)
    assert "Server-side dry-run" in body and "bbbbbbb" in body


def test_a_push_delivered_before_the_comment_it_followed_is_not_dry_run(world: World) -> None:
    """Webhooks out of order: the push came two seconds after the writer's comment, but its
    `synchronize` reached prbot first.  GitHub's own timestamps say the push is newer: refused."""
    number = world.fork_pr("aaaaaaa")
    world.fake.comment(REPO, number, "/prbot plan", user="writer")
    world.fake.advance(2)
    world.push_fork("bbbbbbb")
    hooks = world.fake.drain_events()
    comment = [h for h in hooks if h.event == "issue_comment"]
    for hook in [h for h in hooks if h.event != "issue_comment"] + comment:    # the push first
        assert world.bot.deliver(hook).status_code in (200, 202)
    world.bot.settle()
    world.bot.deliver_events()
    assert world.kube.touching("app-dev") == []
    assert world.replies(number) == [f"- `/prbot plan`: {MOVED}"]


def test_a_comment_edited_after_a_push_runs_nothing(world: World) -> None:
    """The writer comments "LGTM" at aaaaaaa, mallory pushes, the writer edits the comment into
    `/prbot plan`: edits never run (they would run on a head the comment was not written for)."""
    number = world.fork_pr("aaaaaaa")
    said = world.fake.comment(REPO, number, "LGTM", user="writer")
    world.bot.deliver_events()
    world.push_fork("bbbbbbb")
    world.bot.deliver_events()
    world.fake.edit_comment(said, "/prbot plan")
    world.bot.deliver_events()
    assert world.kube.touching("app-dev") == []
    assert world.replies(number) == [] and world.reactions(number, said) == []


def test_a_pr_whose_webhooks_never_came_is_planned_at_the_second_comment(world: World) -> None:
    """No webhook ever named the head (lost deliveries, a PR older than the installation): the
    first `/prbot plan` cannot know what the writer saw and says so; commenting again works."""
    world.fake.fork_repo(REPO, "mallory")
    world.push_fork("ddddddd")
    number = world.fake.open_pull(REPO, head="evil", head_repo=FORK, user="mallory")
    world.fake.drain_events()                                     # never delivered
    first = world.fake.comment(REPO, number, "/prbot plan", user="writer")
    world.bot.deliver_events()
    assert world.replies(number) == [f"- `/prbot plan`: {MOVED}"] and world.kube.touching("app-dev") == []
    assert world.reactions(number, first) == ["eyes", "confused"]
    again = world.fake.comment(REPO, number, "/prbot plan", user="writer")
    world.bot.deliver_events()
    assert world.reactions(number, again) == ["eyes", "rocket"] and world.kube.touching("app-dev")
    assert "ddddddd" in world.plan_comment(number)


# --------------------------------------------------------------------------------------------
# Previews need someone with write permission, and stay on the head they saw
# --------------------------------------------------------------------------------------------

def test_a_triage_label_starts_no_preview_and_a_fork_push_is_not_applied(world: World) -> None:
    number = world.fork_pr("aaaaaaa")
    world.fake.label_pull(REPO, number, "preview", user="trina")    # triage may label, not deploy
    world.bot.deliver_events()
    assert world.kube.live("v1", "Namespace", None, f"pr-{number}") is None
    assert world.kube.touching(f"pr-{number}") == []

    assert world.fake.comment(REPO, number, "/prbot preview", user="writer")
    world.bot.deliver_events()
    assert world.preview_image(number) == f"{APP_IMAGE}:aaaaaaa"   # the head the writer saw

    world.push_fork("bbbbbbb")                                      # labelled, preview up: still not applied
    world.bot.deliver_events()
    assert world.preview_image(number) == f"{APP_IMAGE}:aaaaaaa"
    assert not [r for r in world.kube.requests if f"pr-{number}" in r.path and "bbbbbbb" in str(r.body)]


def test_a_writers_label_starts_the_preview_of_the_labelled_head(world: World) -> None:
    number = world.fork_pr("ccccccc")
    world.fake.label_pull(REPO, number, "preview", user="writer")
    world.bot.deliver_events()
    assert world.preview_image(number) == f"{APP_IMAGE}:ccccccc"


# --------------------------------------------------------------------------------------------
# Exactly once per comment
# --------------------------------------------------------------------------------------------

def test_a_replayed_comment_with_a_new_delivery_id_runs_nothing(world: World,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="prbot")
    number = world.fork_pr("aaaaaaa")
    store = world.bot.queue.store
    world.fake.comment(REPO, number, "/prbot lock prod freeze", user="writer")
    world.bot.deliver_events()
    unlock = world.fake.comment(REPO, number, "/prbot unlock prod", user="writer")
    [captured] = [h for h in world.fake.drain_events() if h.event == "issue_comment"]
    assert world.bot.deliver(captured).status_code == 202
    world.bot.settle()
    assert get_lock(store, REPO, "prod") is None
    world.fake.comment(REPO, number, "/prbot lock prod again", user="writer")
    world.bot.deliver_events()
    assert get_lock(store, REPO, "prod") is not None
    assert any(f"/prbot unlock prod on {REPO}#{number} asked by writer in comment {unlock}" in r.getMessage()
               for r in caplog.records)

    writes = len(world.fake.api_writes())
    replay = Webhook(captured.event, captured.payload)              # same signed body, a new delivery id
    assert replay.delivery != captured.delivery
    assert world.bot.deliver(replay).status_code == 202
    edited = Webhook(captured.event, {**captured.payload,           # same comment id, another body
                                      "comment": {**captured.payload["comment"], "body": "/prbot unlock prod\n"}})
    assert world.bot.deliver(edited).status_code == 202
    world.bot.settle()
    lock = get_lock(store, REPO, "prod")
    assert lock is not None and lock.reason == "again"               # still locked
    assert len(world.fake.api_writes()) == writes                   # no reply, no reaction


# --------------------------------------------------------------------------------------------
# Outsiders: help, and nothing else said
# --------------------------------------------------------------------------------------------

def test_an_outsider_gets_help_and_no_echo_of_a_typo(world: World) -> None:
    number = world.fork_pr("aaaaaaa")
    typo = world.fake.comment(REPO, number, "/prbot plna @everyone https://evil.example", user="mallory")
    world.bot.deliver_events()
    assert world.replies(number) == []
    assert world.reactions(number, typo) == ["eyes", "confused"]
    world.fake.comment(REPO, number, "/prbot help", user="mallory")
    world.bot.deliver_events()
    [reply] = world.replies(number)
    assert reply.startswith("**prbot commands**") and "evil" not in reply

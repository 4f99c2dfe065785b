"""GitHub events → the jobs they call for (`prbot.service.handlers.github_event`, routed by its
event and action tables): no GitHub call, only jobs queued."""

from __future__ import annotations

from typing import Any

import pytest

from prbot.flows import CHECK_NAME
from prbot.flows.preview import LABEL
from prbot.service.handlers import github_event
from prbot.service.jobs import Job, Runtime
from prbot.service.settings import Settings
from prbot.service.store import SqliteStore

REPO = {"full_name": "acme/gitops", "default_branch": "main", "html_url": "https://github.example/acme/gitops"}
INST = {"id": 7}


def route(event: str, body: dict[str, Any], tmp_path: Any) -> list[tuple[str, dict[str, Any]]]:
    """The jobs (kind, payload) one event queues."""
    queued: list[Job] = []

    def enqueue(job: Job, delay: float) -> str:
        queued.append(job)
        return str(len(queued))

    rt = Runtime(Settings(data_dir=tmp_path), SqliteStore(tmp_path / "store.db"), enqueue, lambda *a, **k: None)
    github_event(rt, Job("github_event", {"event": event, "delivery": "d1", "body": body}, delivery="d1"))
    return [(j.kind, j.payload) for j in queued]


def pr_event(action: str, *, labels: tuple[str, ...] = (), draft: bool = False, merged: bool = False,
             **extra: Any) -> dict[str, Any]:
    pr = {"number": 3, "draft": draft, "merged": merged, "labels": [{"name": n} for n in labels],
          "head": {"sha": "a1b2c3d"}}
    return {"action": action, "installation": INST, "repository": REPO, "pull_request": pr,
            "sender": {"login": "carol", "type": "User"}, **extra}


PLAN = ("plan", {"installation": 7, "number": 3, "with_cluster": None})
PREVIEW_UP = ("preview", {"installation": 7, "number": 3, "stop": False, "sender": "carol", "head": "a1b2c3d"})
PREVIEW_DOWN = ("preview", {"installation": 7, "number": 3, "stop": True})
PREVIEW_FOLLOW = ("preview", {"installation": 7, "number": 3, "if_active": True, "sender": "carol", "head": "a1b2c3d"})


@pytest.mark.parametrize(("body", "jobs"), [
    (pr_event("opened"), [PLAN]),
    (pr_event("opened", draft=True), []),
    (pr_event("ready_for_review"), [PLAN]),
    (pr_event("synchronize"), [PLAN, PREVIEW_FOLLOW]),
    (pr_event("synchronize", labels=(LABEL,)), [PLAN, PREVIEW_UP]),
    (pr_event("reopened"), [PLAN]),
    (pr_event("reopened", labels=(LABEL,)), [PLAN, PREVIEW_UP]),
    (pr_event("labeled", label={"name": LABEL}), [PREVIEW_UP]),
    (pr_event("labeled", label={"name": "bug"}), []),
    (pr_event("closed"), [PREVIEW_DOWN]),
    (pr_event("closed", merged=True), [PREVIEW_DOWN, ("deploy", {"installation": 7, "number": 3})]),
    (pr_event("edited"), []),
    ({**pr_event("opened"), "installation": None}, []),               # no installation: ignored
])
def test_pull_request_actions(body: dict[str, Any], jobs: list[Any], tmp_path: Any) -> None:
    assert route("pull_request", body, tmp_path) == jobs


def comment(action: str, text: str, *, on_pr: bool = True, bot: bool = False, ident: int = 11) -> dict[str, Any]:
    issue: dict[str, Any] = {"number": 3, **({"pull_request": {}} if on_pr else {})}
    return {"action": action, "installation": INST, "repository": REPO, "issue": issue,
            "sender": {"type": "Bot" if bot else "User"},
            "comment": {"id": ident, "body": text, "user": {"login": "carol"}, "created_at": "2026-12-07T07:00:00Z"}}


def test_comments_with_a_command_on_a_pr_queue_a_command_job(tmp_path: Any) -> None:
    [(kind, payload)] = route("issue_comment", comment("created", "/prbot plan"), tmp_path)
    assert kind == "command" and isinstance(payload.pop("received"), float)
    assert payload == {"installation": 7, "number": 3, "user": "carol", "comment_id": 11, "body": "/prbot plan",
                       "created_at": "2026-12-07T07:00:00Z", "issue": False}
    assert route("issue_comment", comment("edited", "/prbot plan"), tmp_path) == []
    [(kind, payload)] = route("issue_comment", comment("created", "/prbot status", on_pr=False, ident=12), tmp_path)
    assert kind == "command" and payload["issue"] is True        # an issue: only status and help run there
    assert route("issue_comment", comment("created", "/prbot plan", bot=True), tmp_path) == []
    assert route("issue_comment", comment("created", "looks good"), tmp_path) == []


def test_a_comment_runs_once_whatever_its_delivery(tmp_path: Any) -> None:
    """The signature covers the body, not the delivery id: the same comment delivered again (a new
    delivery id, or the same body edited in the replay) queues nothing, even years later."""
    queued: list[Job] = []
    rt = Runtime(Settings(data_dir=tmp_path), SqliteStore(tmp_path / "store.db"),
                 lambda job, delay: queued.append(job) or "1", lambda *a, **k: None)

    def deliver(body: dict[str, Any], delivery: str) -> list[str]:
        queued.clear()
        github_event(rt, Job("github_event", {"event": "issue_comment", "body": body}, delivery=delivery))
        return [j.kind for j in queued]

    assert deliver(comment("created", "/prbot unlock prod"), "d1") == ["command"]
    assert deliver(comment("created", "/prbot unlock prod"), "d2") == []
    assert deliver(comment("created", "/prbot lock prod"), "d3") == []          # same id, another body
    assert deliver(comment("created", "/prbot unlock prod", ident=12), "d4") == ["command"]


def test_push_check_run_installation_package_and_unknown_events(tmp_path: Any) -> None:
    push = {"installation": INST, "repository": REPO, "ref": "refs/heads/main",
            "commits": [{"added": [], "modified": [".prbot.yml"], "removed": []}]}
    assert route("push", push, tmp_path) == [("index_repo", {"installation": 7})]
    assert route("push", {**push, "ref": "refs/heads/feature"}, tmp_path) == []
    assert route("push", {**push, "commits": [{"modified": ["app.yaml"]}]}, tmp_path) == []
    rerun = {"action": "rerequested", "installation": INST, "repository": REPO,
             "check_run": {"name": CHECK_NAME, "pull_requests": [{"number": 3}, {"number": 4}]}}
    assert [p["number"] for _, p in route("check_run", rerun, tmp_path)] == [3, 4]
    assert route("check_run", {**rerun, "check_run": {"name": "ci", "pull_requests": [{"number": 3}]}},
                 tmp_path) == []
    installed = {"action": "created", "installation": INST, "repositories_added": [{"full_name": "acme/gitops"}]}
    assert route("installation_repositories", installed, tmp_path) == [
        ("index_installation", {"installation": 7, "event": "installation_repositories", "action": "created",
                                "body": {"added": ["acme/gitops"], "removed": []}})]
    assert route("star", {"action": "created", "installation": INST, "repository": REPO}, tmp_path) == []
    assert route("package", {"action": "published", "installation": INST, "package": {}}, tmp_path) == []

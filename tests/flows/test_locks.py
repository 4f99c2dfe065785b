"""Environment locks (`prbot.flows.locks`), kept in the store: the first lock stays, and a locked
environment shows in the plan of every PR touching it and fails its check until unlocked."""

from __future__ import annotations

from flowkit import GitOps, overlay, overlay_path

from prbot import flows
from prbot.standins import MemoryStore

REPO = "acme/gitops"


def test_the_first_lock_stays_until_cleared() -> None:
    store = MemoryStore()
    assert flows.get_lock(store, REPO, "prod") is None
    assert flows.set_lock(store, REPO, "prod", "alice", "release freeze", 100.0)
    assert not flows.set_lock(store, REPO, "prod", "bob", "mine now", 200.0)
    assert flows.get_lock(store, REPO, "prod") == flows.Lock("prod", "alice", "release freeze", 100.0)
    assert flows.get_lock(store, "acme/other", "prod") is None            # per repository
    assert flows.clear_lock(store, REPO, "prod")
    assert not flows.clear_lock(store, REPO, "prod")
    assert flows.get_lock(store, REPO, "prod") is None
    assert flows.set_lock(store, REPO, "prod", "bob", "", 300.0)


def test_locks_lists_the_locked_environments_in_the_order_asked() -> None:
    store = MemoryStore()
    flows.set_lock(store, REPO, "prod", "alice", "", 1.0)
    flows.set_lock(store, REPO, "dev", "carol", "demo", 2.0)
    assert [(lock.env, lock.by) for lock in flows.locks(store, REPO, ["dev", "staging", "prod"])] == [
        ("dev", "carol"), ("prod", "alice")]
    assert flows.locks(store, REPO, ["staging"]) == []


def test_a_damaged_lock_record_reads_as_no_lock() -> None:
    store = MemoryStore()
    store.put(f"lock:{REPO}:dev", "not json")
    assert flows.get_lock(store, REPO, "dev") is None


def test_a_locked_environment_fails_the_plan_of_a_pr_touching_it_until_unlocked(gitops: GitOps) -> None:
    store = gitops.repo.store
    flows.set_lock(store, gitops.repo.name, "staging", "alice", "release freeze", 0.0)
    flows.set_lock(store, gitops.repo.name, "prod", "alice", "", 0.0)          # not touched: not shown
    pr = gitops.open_pr("feature", {overlay_path("staging"): overlay("staging", "1.1.0")})
    locked = flows.plan_pull_request(gitops.repo, pr.number)
    assert locked.conclusion == "failure" and [lock.env for lock in locked.locked] == ["staging"]
    [comment] = gitops.bot_comments(pr.number)
    assert comment.startswith(
        "<!-- prbot:plan -->\n> 🔒 **staging is locked** by `alice` (release freeze). This PR touches it: the plan "
        "check fails until `/prbot unlock staging`.\n")
    assert "prod is locked" not in comment
    run = gitops.forge.find_check_run(pr.head_sha, flows.CHECK_NAME)
    assert run is not None and run.conclusion == "failure"
    flows.clear_lock(store, gitops.repo.name, "staging")
    unlocked = flows.plan_pull_request(gitops.repo, pr.number)
    assert unlocked.conclusion == "success" and unlocked.comment_ids == locked.comment_ids
    [comment] = gitops.bot_comments(pr.number)
    assert "is locked" not in comment
    run = gitops.forge.find_check_run(pr.head_sha, flows.CHECK_NAME)
    assert run is not None and run.conclusion == "success"

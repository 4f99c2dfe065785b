"""Which head of a PR a comment's author saw (`prbot.flows.heads`): from the receipt of the
`pull_request` webhooks and GitHub's timestamps, with every doubt an unknown (None: refused)."""

from __future__ import annotations

from prbot.flows.heads import Seen, head_at, record_head
from prbot.standins import MemoryStore

REPO = "acme/gitops"


def iso(second: int) -> str:
    return f"2026-12-07T07:00:{second:02d}Z"


def store_with(*heads: tuple[str, float, int]) -> MemoryStore:
    """(sha, received, GitHub second of the event) per pull_request webhook, in receipt order."""
    store = MemoryStore()
    for sha, received, second in heads:
        record_head(store, REPO, 3, sha, received=received, updated_at=iso(second))
    return store


def test_the_last_head_received_before_the_comment() -> None:
    store = store_with(("a" * 40, 100.0, 10), ("b" * 40, 200.0, 20))
    assert head_at(store, REPO, 3, Seen(150.0, iso(15))) == "a" * 40
    assert head_at(store, REPO, 3, Seen(250.0, iso(25))) == "b" * 40


def test_every_doubt_is_no_answer() -> None:
    store = store_with(("a" * 40, 100.0, 10))
    assert head_at(MemoryStore(), REPO, 3, Seen(150.0, iso(15))) is None      # no head known
    assert head_at(store, REPO, 3, Seen(50.0, iso(15))) is None               # comment before any head
    assert head_at(store, REPO, 3, Seen(150.0, iso(10))) is None              # the same second
    assert head_at(store, REPO, 3, Seen(150.0, None)) is None                 # no created_at
    assert head_at(store, REPO, 3, Seen(None, iso(15))) is None               # no receipt time
    early = store_with(("a" * 40, 100.0, 10), ("b" * 40, 140.0, 20))
    assert head_at(early, REPO, 3, Seen(150.0, iso(15))) is None              # pushed after, delivered before
    late = store_with(("a" * 40, 100.0, 10), ("b" * 40, 160.0, 12))
    assert head_at(late, REPO, 3, Seen(150.0, iso(15))) is None               # pushed before, delivered after


def test_a_push_after_the_comment_leaves_the_head_it_saw_and_old_events_do_not_come_back() -> None:
    store = store_with(("a" * 40, 100.0, 10), ("b" * 40, 160.0, 20))
    assert head_at(store, REPO, 3, Seen(150.0, iso(15))) == "a" * 40
    record_head(store, REPO, 3, "a" * 40, received=300.0, updated_at=iso(30))   # an old event redelivered
    assert head_at(store, REPO, 3, Seen(400.0, iso(40))) == "b" * 40

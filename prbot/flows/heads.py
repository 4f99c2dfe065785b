"""Which head of a pull request a person saw: what binds a command (a writer's `/prbot plan` with
its cluster dry-run, `/prbot preview`) to the head that was current when it was asked for.

prbot never trusts commit dates (a PR's author writes them).  It knows a head from the
`pull_request` webhooks carrying it: for each head sha of a PR it records, once, when the first
webhook naming it was *received* (prbot's clock) and GitHub's `pull_request.updated_at` in that
webhook (GitHub's clock, one-second resolution).  A comment brings its own receipt time and its
`created_at` (GitHub's clock).  The head the commenter saw (`head_at`) is the last head received
before the comment was, provided GitHub's clocks agree:

- that head's `updated_at` is strictly before the comment's `created_at` (a push in the same second
  as the comment, or after it, delivered early, is not proof of what the commenter saw), and
- no head received *after* the comment was pushed before it (a late delivery: the order of
  receipt is not the order of pushes then).

Anything else is unsure, and unsure is None: the command is refused with "the head moved; comment
again" instead of guessing.  So that commenting again settles it even when no webhook named the
head (a PR opened before prbot was installed, a lost delivery), a bound command also records the
head GitHub reports when it runs, received then, at the PR's `updated_at` (GitHub moves it with
every push, so it is never before the head was pushed).  A redelivered old `pull_request` event cannot move the answer
backwards: a head keeps the time it was first received.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

from prbot.ports import Store

MOVED = "the head moved; comment again"
"""The reply to a bound command whose head is no longer the PR's head (or cannot be told)."""


@dataclass(frozen=True)
class Seen:
    """When a comment (or a label) asked for something: enough to tell the head its author saw."""

    received: float | None              # when prbot received the webhook (prbot's clock)
    created_at: str | None              # the comment's `created_at` (GitHub's clock, ISO 8601)


def _prefix(repo: str, number: int) -> str:
    return f"head:{repo}#{number}:"


def record_head(store: Store, repo: str, number: int, sha: str, *, received: float, updated_at: object) -> None:
    """Remember that a webhook received at `received` named `sha` as the PR's head (the first such
    webhook wins: a redelivery of an old event does not make an old head new again)."""
    if not isinstance(sha, str) or not sha:
        return
    at = _seconds(updated_at)
    store.put_if_absent(_prefix(repo, number) + sha, json.dumps({"received": received, "at": at}))


@dataclass(frozen=True)
class _Known:
    sha: str
    received: float
    at: float | None


def _known(store: Store, repo: str, number: int) -> list[_Known]:
    prefix = _prefix(repo, number)
    out: list[_Known] = []
    for key, raw in store.items(prefix):
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        received = data.get("received") if isinstance(data, dict) else None
        at = data.get("at") if isinstance(data, dict) else None
        if isinstance(received, int | float) and not isinstance(received, bool):
            out.append(_Known(key[len(prefix):], float(received), float(at) if isinstance(at, int | float) else None))
    return sorted(out, key=lambda k: k.received)


def head_at(store: Store, repo: str, number: int, seen: Seen) -> str | None:
    """The head current when `seen` was asked, or None when prbot cannot be sure of it."""
    created = _seconds(seen.created_at)
    if seen.received is None or created is None:
        return None
    known = _known(store, repo, number)
    before = [k for k in known if k.received < seen.received]
    if not before:
        return None
    head = before[-1]
    if head.at is None or head.at >= created:
        return None                                   # pushed in the comment's second or after it
    for later in known[len(before):]:
        if later.at is None or later.at <= created:
            return None                               # a push before the comment, delivered after it
    return head.sha


def _seconds(value: object) -> float | None:
    """GitHub's ISO 8601 timestamp as epoch seconds (None when it is not one)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()

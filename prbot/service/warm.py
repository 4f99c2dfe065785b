"""Warm base renders in the service: a push to the default branch → a `warm_base` job (the queue's
lowest priority, `prbot.service.queue.BACKGROUND`) rendering the new head's targets into the shared
render cache (`<data dir>/render-cache`), so a PR's plan against it renders only its head side.

The job takes no repository lock (`Job.repo` unset): a plan of the same repository never waits for
it; the mirror's own lock keeps their fetches apart.  It is superseded by a newer push twice over:
the queue drops an older queued job (`supersede` key), and a running one stops between two batches
of renders once the store holds a newer push's token (`prbot.flows.warm_base`).
`PRBOT_WARM_TARGETS` bounds the targets per job; 0 turns warming off.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from prbot.flows.context import Repo
from prbot.flows.warm_base import want, warm_base
from prbot.service.jobs import Job, Runtime

log = logging.getLogger("prbot.service")

_SHA = re.compile(r"^[0-9a-f]{40}$")
_ZERO = "0" * 40


def supersede_key(repo: str) -> str:
    return f"warm_base:{repo}"


def on_default_push(rt: Runtime, installation: int, repo: str, after: object, delivery: str | None) -> None:
    """Queue the warm job of the default branch's new head `after` (nothing for a deleted branch, a
    malformed sha, or with warming off)."""
    if rt.settings.warm_targets <= 0 or not isinstance(after, str) or not _SHA.match(after) or after == _ZERO:
        return
    token = want(rt.store, repo, after)
    rt.enqueue(Job("warm_base", {"installation": installation, "repo": repo, "sha": after, "token": token},
                   supersede=supersede_key(repo), delivery=delivery))


def run(rt: Runtime, job: Job, repo_context: Callable[[Runtime, int, str], Repo]) -> None:
    """The `warm_base` job."""
    payload = job.payload
    installation, repo_name, token = payload.get("installation"), payload.get("repo"), payload.get("token")
    if not (isinstance(installation, int) and isinstance(repo_name, str) and isinstance(token, str)):
        log.warning("warm_base job with a malformed payload: ignored")
        return
    repo = repo_context(rt, installation, repo_name)
    warm_base(repo, token, max_targets=rt.settings.warm_targets)


__all__ = ["on_default_push", "run", "supersede_key"]

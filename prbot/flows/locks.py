"""Environment locks (`/prbot lock ENV`), persisted in the store: shown in plan comments, failing
the plan check of PRs that touch the environment, and holding the sync of merges into it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from prbot.envboard import lock_key
from prbot.ports import (
    Store,
)
from prbot.report.markdown import code, md

log = logging.getLogger("prbot.flows")


# --------------------------------------------------------------------------------------------
# Locks (persisted in the store; set and cleared by slash commands, read by plans and deploys)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lock:
    env: str
    by: str
    reason: str
    at: float

    def describe(self) -> tuple[str, str]:
        """(by, reason) as the templates want them: escaped, reason prefixed."""
        return code(self.by), (f" ({md(self.reason)})" if self.reason else "")


def _lock_key(repo: str, env: str) -> str:
    return lock_key(repo, env)                   # the board reads locks too (`prbot.envboard`)


def get_lock(store: Store, repo: str, env: str) -> Lock | None:
    raw = store.get(_lock_key(repo, env))
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Lock(env=env, by=str(data.get("by", "")), reason=str(data.get("reason", "")),
                    at=float(data.get("at", 0)))
    except (ValueError, TypeError):
        return None


def set_lock(store: Store, repo: str, env: str, by: str, reason: str, now: float) -> bool:
    """Lock `env`; False when it was locked already (the first lock stays)."""
    return store.put_if_absent(_lock_key(repo, env), json.dumps({"by": by, "reason": reason, "at": now}))


def clear_lock(store: Store, repo: str, env: str) -> bool:
    had = store.get(_lock_key(repo, env)) is not None
    store.delete(_lock_key(repo, env))
    return had


def locks(store: Store, repo: str, envs: Sequence[str]) -> list[Lock]:
    return [lock for env in envs if (lock := get_lock(store, repo, env)) is not None]

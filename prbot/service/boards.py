"""Where the environments page gets its boards (`prbot.flows.board`) and the service's health.

The web process makes no GitHub call and renders nothing: a board is built by the worker (the
``board`` job, `prbot.service.handlers`) and kept in the store (``board:<repo>``); the page reads
it, brings its deployments and locks up to date from the store at each request
(`flows.board.refresh_live`, cheap), and asks for a new build when the kept one is older than
`REFRESH` seconds or a deployment ended healthy since (at most one request per `REFRESH`).

`prbot.service.liveboards.LiveBoards` builds each board in process instead (the stand-ins of
`prbot demo --serve` and the tests).  This module imports no engine: the web process loads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from prbot.envboard import Board, ServiceHealth, refresh_live
from prbot.repoindex import RepoIndex
from prbot.service.health import live_workers
from prbot.service.jobs import Job
from prbot.service.queue import Queue
from prbot.service.store import KeyValueStore

REFRESH = 60.0                  # seconds a kept board is shown before a new one is asked for
SNAPSHOT = "board:"
ASKED = "boardasked:"


class BoardSource(Protocol):
    def repos(self) -> list[str]:
        """Every repository prbot serves (its `.prbot.yml` indexed), sorted."""
        ...

    def board(self, name: str) -> Board | None:
        """The repository's board; None while it is being built for the first time."""
        ...

    def health(self) -> ServiceHealth | None: ...


def snapshot_key(repo: str) -> str:
    return SNAPSHOT + repo


def service_health(store: KeyValueStore, queue: Queue) -> ServiceHealth:
    """Queue depth (due and scheduled), live workers, dead letters: what `/metrics` reports."""
    huey = queue.huey
    depth = int(huey.pending_count()) + int(huey.scheduled_count())
    return ServiceHealth(queue_depth=depth, workers=live_workers(store),
                         dead_letters=sum(1 for _ in store.items("dead:")))


class StoreBoards:
    """The served App's boards: kept in the store by the worker, refreshed on demand."""

    def __init__(self, store: KeyValueStore, queue: Queue, *, refresh: float = REFRESH,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.queue, self.refresh, self.clock = store, queue, refresh, clock

    def repos(self) -> list[str]:
        return sorted(e.repo for e in RepoIndex(self.store).entries())

    def board(self, name: str) -> Board | None:
        raw = self.store.get(snapshot_key(name))
        board: Board | None = None
        if raw:
            try:
                board = Board.from_json(raw)
            except (ValueError, KeyError, TypeError):
                board = None
        moved = refresh_live(board, self.store) if board is not None else True
        if board is None or moved or self.clock() - board.at > self.refresh:
            self._ask(name)
        return board

    def _ask(self, name: str) -> None:
        entry = RepoIndex(self.store).get(name)
        if entry is None:
            return
        if self.store.put_if_absent(ASKED + name, "1", ttl=max(5.0, self.refresh / 4)):
            self.queue.enqueue(Job("board", {"installation": entry.installation_id}, repo=name))

    def health(self) -> ServiceHealth | None:
        try:
            return service_health(self.store, self.queue)
        except Exception:  # noqa: BLE001 - the page shows the store is down rather than failing
            return None

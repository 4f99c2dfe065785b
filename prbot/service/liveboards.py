"""Boards built at each request from in-process repositories: the environments page of
`prbot demo --serve` and of the tests, over the stand-ins (`prbot.standins`).  The served App uses
`prbot.service.boards.StoreBoards` instead (its web process renders nothing)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from prbot.envboard import Board, ServiceHealth
from prbot.flows import Repo
from prbot.flows.board import build_board


class LiveBoards:
    """`prbot.service.boards.BoardSource` over `flows.Repo`s, building each board when asked."""

    def __init__(self, repos: Mapping[str, Repo], health: Callable[[], ServiceHealth | None] = lambda: None) -> None:
        self._repos = dict(repos)
        self._health = health
        self._lock = threading.Lock()

    def repos(self) -> list[str]:
        return sorted(self._repos)

    def board(self, name: str) -> Board | None:
        repo = self._repos.get(name)
        if repo is None:
            return None
        with self._lock:
            return build_board(repo)

    def health(self) -> ServiceHealth | None:
        return self._health()

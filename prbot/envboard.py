"""The board of a repository as data: where every version runs (`prbot.flows.board` builds it).

These are plain types, JSON both ways, and the reading of the two store records the board shows
live — the deploy flow's deployment records (`deploy:<repo>:<sha>`) and the environment locks
(`lock:<repo>:<env>`) — with no engine behind them: the web process (`prbot.service.status_page`)
imports this module and never the planner, the renderer or the edit engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from prbot.ports import Store

STATE_ICONS = {"waiting": "⏳", "syncing": "🔄", "progressing": "🔄", "healthy": "✅", "failed": "❌", "held": "🔒"}
RUNNING = frozenset({"waiting", "syncing", "progressing"})
MAX_DEPLOY_RECORDS = 500          # deploy records read per board, at most (newest kept by start time)


@dataclass(frozen=True)
class Version:
    """One image a target renders: its repository, tag and digest (a digest the tag was pushed with,
    when the bump flow recorded the push, stands in for one the manifest does not pin)."""

    image: str
    tag: str | None = None
    digest: str | None = None

    @property
    def text(self) -> str:
        return (self.tag or "") + (f"@{self.digest}" if self.digest else "") or "—"

    @property
    def short(self) -> str:
        """The tag, and the digest's first 12 hex digits."""
        digest = f"@{self.digest.split(':', 1)[-1][:12]}" if self.digest else ""
        return (self.tag or "") + digest or "—"


@dataclass(frozen=True)
class Deploy:
    """One environment's part of one deployment (a merge or a `/prbot sync`)."""

    sha: str
    state: str                    # waiting | syncing | progressing | healthy | failed | held
    pr: int
    author: str
    started: float
    finished: float | None
    reason: str = ""
    deployment: int | None = None

    @property
    def running(self) -> bool:
        return self.finished is None and self.state in RUNNING

    @property
    def at(self) -> float:
        return self.finished if self.finished is not None else self.started


@dataclass(frozen=True)
class Lock:
    by: str
    reason: str
    at: float


@dataclass(frozen=True)
class OpenPull:
    kind: str                     # bump | promote | rollback
    number: int
    title: str
    url: str
    env: str                      # the environment it changes
    subject: str                  # the image (bump) or app (promote); "" for rollbacks


@dataclass
class Cell:
    """One app in one environment."""

    path: str = ""                                        # the target's directory; "" when it has none
    rendered: list[Version] = field(default_factory=list)  # on the default branch
    healthy: list[Version] | None = None                  # at the last healthy deployment; None: none known
    error: str = ""                                       # why `rendered` is empty (a render failure)


@dataclass
class Env:
    name: str
    cluster: str | None
    lock: Lock | None = None
    last: Deploy | None = None            # the newest deployment touching the environment
    healthy: Deploy | None = None         # the newest one that ended healthy


@dataclass(frozen=True)
class ServiceHealth:
    """The service's own health, as the web page shows it (not part of a repository)."""

    queue_depth: int
    workers: int
    dead_letters: int
    oldest_seconds: float = 0.0
    by_kind: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Board:
    repo: str
    html_url: str
    default_branch: str
    sha: str = ""                                           # the default branch's commit
    envs: list[Env] = field(default_factory=list)           # promotion order
    apps: list[str] = field(default_factory=list)
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)   # app → env → cell
    pulls: list[OpenPull] = field(default_factory=list)
    error: str = ""                                         # why the board is empty (no / invalid config)
    at: float = 0.0                                         # when it was built

    @property
    def path(self) -> list[str]:
        """The promotion path: the environments in promotion order."""
        return [e.name for e in self.envs]

    @property
    def deploying(self) -> bool:
        return any(e.last is not None and e.last.running for e in self.envs)

    def cell(self, app: str, env: str) -> Cell:
        return self.cells.get(app, {}).get(env, Cell())

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> Board:
        data = json.loads(raw)

        def versions(items: Iterable[Mapping[str, Any]] | None) -> list[Version] | None:
            return None if items is None else [Version(**v) for v in items]

        envs = [Env(name=e["name"], cluster=e.get("cluster"),
                    lock=Lock(**e["lock"]) if e.get("lock") else None,
                    last=Deploy(**e["last"]) if e.get("last") else None,
                    healthy=Deploy(**e["healthy"]) if e.get("healthy") else None) for e in data.get("envs", [])]
        cells = {app: {env: Cell(path=c.get("path", ""), rendered=versions(c.get("rendered")) or [],
                                 healthy=versions(c.get("healthy")), error=c.get("error", ""))
                       for env, c in by_env.items()} for app, by_env in data.get("cells", {}).items()}
        return cls(repo=data["repo"], html_url=data.get("html_url", ""), default_branch=data.get("default_branch", ""),
                   sha=data.get("sha", ""), envs=envs, apps=list(data.get("apps", [])), cells=cells,
                   pulls=[OpenPull(**p) for p in data.get("pulls", [])], error=data.get("error", ""),
                   at=float(data.get("at", 0.0)))


# --------------------------------------------------------------------------------------------
# The store records the board reads (written by the deploy flow and the lock commands)
# --------------------------------------------------------------------------------------------

def deploy_key(repo: str, sha: str) -> str:
    """Where the deploy flow keeps the record of the deployment of `repo` at `sha`."""
    return f"deploy:{repo}:{sha}"


def lock_key(repo: str, env: str) -> str:
    """Where an environment's lock is kept."""
    return f"lock:{repo}:{env}"


def read_lock(store: Store, repo: str, env: str) -> Lock | None:
    raw = store.get(lock_key(repo, env))
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Lock(by=str(data.get("by", "")), reason=str(data.get("reason", "")), at=float(data.get("at", 0)))
    except (ValueError, TypeError, AttributeError):
        return None


def deploy_history(store: Store, repo: str, envs: Iterable[str]) -> tuple[dict[str, Deploy], dict[str, Deploy]]:
    """env → its newest deployment, and env → its newest deployment that ended healthy, from the
    deploy flow's records in the store (an unreadable record is skipped)."""
    wanted = set(envs)
    records: list[tuple[float, dict[str, Any]]] = []
    for _, raw in store.items(deploy_key(repo, "")):
        try:
            data = json.loads(raw)
            records.append((float(data["started"]), data))
        except (ValueError, KeyError, TypeError):
            continue
    records.sort(key=lambda r: r[0])
    last: dict[str, Deploy] = {}
    healthy: dict[str, Deploy] = {}
    for _, data in records[-MAX_DEPLOY_RECORDS:]:
        for entry in data.get("envs", []):
            try:
                env = str(entry["env"])
                finished = entry.get("finished")
                deploy = Deploy(sha=str(data["sha"]), state=str(entry.get("state", "")), pr=int(data["pr"]),
                                author=str(data.get("author", "")), started=float(entry.get("started", 0.0)),
                                finished=None if finished is None else float(finished),
                                reason=str(entry.get("reason", "")), deployment=entry.get("deployment"))
            except (KeyError, TypeError, ValueError):
                continue
            if env not in wanted:
                continue
            if env not in last or deploy.started >= last[env].started:
                last[env] = deploy
            if deploy.state == "healthy" and deploy.finished is not None and \
                    (env not in healthy or deploy.finished >= (healthy[env].finished or 0.0)):
                healthy[env] = deploy
    return last, healthy


def refresh_live(board: Board, store: Store) -> bool:
    """Bring a kept board's deployments and locks up to date from the store (cheap: no render, no
    forge call).  True when an environment's last healthy deployment moved since the board was
    built: its deployed versions are then stale, and the board should be built again."""
    last, healthy = deploy_history(store, board.repo, board.path)
    moved = False
    for env in board.envs:
        env.lock = read_lock(store, board.repo, env.name)
        env.last = last.get(env.name)
        new = healthy.get(env.name)
        moved = moved or (new.sha if new else None) != (env.healthy.sha if env.healthy else None)
        env.healthy = new
    return moved


def when(seconds: float | None, now: float) -> str:
    """`12s ago`, `3 min ago`, `5 h ago`, or the UTC date for older times."""
    if seconds is None:
        return ""
    ago = max(0, int(now - seconds))
    if ago < 90:
        return f"{ago}s ago"
    if ago < 90 * 60:
        return f"{round(ago / 60)} min ago"
    if ago < 36 * 3600:
        return f"{round(ago / 3600)} h ago"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))

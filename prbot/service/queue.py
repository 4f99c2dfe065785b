"""The durable job queue: huey on the queue's storage (SQLite file or Redis) and its store.

One huey task (``prbot.job``) carries every job as a *message* (a JSON-able dict: the `Job`'s
fields plus ``id``, ``seq``, ``attempt``, ``waits``, ``enqueued_at``).  The web process only
enqueues; a `prbot.service.worker.Worker` attached to a `Queue` executes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from huey import PriorityRedisHuey, SqliteHuey  # type: ignore[import-untyped]
from huey.api import Huey  # type: ignore[import-untyped]

from prbot.service.jobs import Job
from prbot.service.settings import Settings
from prbot.service.store import KeyValueStore, RedisStore, SqliteStore

TASK_NAME = "prbot.job"
HUEY_NAME = "prbot"
Message = dict[str, Any]

WORK, EVENTS, ROUTING, BACKGROUND = 20, 10, 0, -10
PRIORITIES = {"plan": WORK, "command": WORK, "deploy": WORK, "deploy_poll": WORK, "preview": WORK, "bump": WORK,
              "github_event": EVENTS, "warm_base": BACKGROUND}
"""Queue priority by job kind (higher runs first; equal ones in order): the work a person waits
for (plans, commands, deploys) before GitHub's events, and both before routing jobs (registry
pushes, index refreshes), which anyone holding a registry token can cause; last the work nobody
waits for (rendering the default branch ahead of the plans, `warm_base`)."""


log = logging.getLogger("prbot.queue")

def priority_of(kind: str) -> int:
    return PRIORITIES.get(kind, ROUTING)


def supersede_key(key: str) -> str:
    return f"supersede:{key}"


class Queue:
    """Enqueue jobs durably; run them when a worker is attached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.huey: Huey
        self.store: KeyValueStore
        if settings.queue_backend == "redis":
            url = settings.effective_queue_url
            # a blocking read waits up to 1 s for a task: the socket may take that long and more
            import redis

            pool = redis.ConnectionPool.from_url(url, socket_timeout=settings.store_timeout + 1,
                                                 socket_connect_timeout=settings.store_timeout)
            self.huey = PriorityRedisHuey(HUEY_NAME, connection_pool=pool, results=False, blocking=True, read_timeout=1,
                                  utc=True)
            self.store = RedisStore(url, namespace=HUEY_NAME, timeout=settings.store_timeout)
            _adopt_fifo(self.huey)
        else:
            path = settings.sqlite_path
            path.parent.mkdir(parents=True, exist_ok=True)
            self.huey = SqliteHuey(HUEY_NAME, filename=str(path), results=False, timeout=30, utc=True)
            self.store = SqliteStore(path)
        self._executor: Callable[[Message], None] | None = None
        self._task = self.huey.task(name=TASK_NAME)(self._run)

    def attach(self, executor: Callable[[Message], None]) -> None:
        """Messages this process's consumer dequeues go to `executor` (the worker)."""
        self._executor = executor

    def _run(self, message: Message) -> None:
        if self._executor is None:
            raise RuntimeError("no worker attached to this queue")
        self._executor(message)

    def enqueue(self, job: Job, delay: float = 0, job_id: str | None = None) -> str:
        """Queue `job` durably (to run after `delay` seconds); the job id (`job_id`, or a new one:
        the same id queued twice runs once)."""
        try:
            payload = json.loads(json.dumps(dict(job.payload)))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"job payload of kind {job.kind!r} is not JSON-serialisable: {exc}") from None
        message: Message = {
            "id": job_id or uuid.uuid4().hex, "kind": job.kind, "payload": payload, "repo": job.repo,
            "supersede": job.supersede, "delivery": job.delivery, "pr": job.pr, "seq": 0,
            "attempt": 1, "waits": 0, "enqueued_at": time.time(),
        }
        if job.supersede:
            message["seq"] = self.store.incr("seq")
            self._raise_to(supersede_key(job.supersede), message["seq"])
        self.send(message, delay)
        return str(message["id"])

    def _raise_to(self, key: str, seq: int) -> None:
        """Make `key` hold at least `seq` (atomic against concurrent enqueues)."""
        while True:
            cur = self.store.get(key)
            if cur is not None and int(cur) >= seq:
                return
            if self.store.compare_and_set(key, cur, str(seq), ttl=self.settings.journal_ttl):
                return

    def send(self, message: Message, delay: float = 0) -> None:
        """Put a message (new, retried or waiting) on the queue."""
        priority = priority_of(str(message.get("kind")))
        if delay > 0:
            self._task.schedule(args=(message,), delay=delay, priority=priority)
        else:
            self._task(message, priority=priority)

    def ping(self) -> None:
        """Raise when the queue's storage cannot be reached."""
        self.store.ping()
        self.huey.pending_count()

    def pending(self) -> int:
        return int(self.huey.pending_count()) + int(self.huey.scheduled_count())

    def close(self) -> None:
        self.store.close()
        try:
            self.huey.storage.close()
        except AttributeError:
            pass


def _adopt_fifo(huey: Huey) -> None:
    """Move the messages a FIFO (list) queue of an earlier prbot left in Redis into the priority
    queue (a sorted set under the same key), oldest first, so an upgrade loses none.  The list is
    renamed aside first (atomic: of several processes starting at once, one adopts it; one killed
    midway leaves the aside list, adopted at the next start)."""
    storage = huey.storage
    aside = storage.queue_key + ":adopting"
    try:
        if storage.conn.type(storage.queue_key) in (b"list", "list"):
            storage.conn.rename(storage.queue_key, aside)
        if storage.conn.type(aside) not in (b"list", "list"):
            return
    except Exception as exc:  # noqa: BLE001 - Redis unreachable, or another process renamed it first
        log.warning("an older queue was not checked for jobs to move over: %s", " ".join(str(exc).split())[:200])
        return
    while (data := storage.conn.rpop(aside)) is not None:     # LPUSH-ed: the oldest is at the right
        try:
            priority = huey.serializer.deserialize(data).priority
        except Exception:  # noqa: BLE001 - unreadable here: the consumer reports it when it comes up
            log.warning("a job of the older queue could not be read here; moved over as it is")
            priority = None
        storage.enqueue(data, priority)

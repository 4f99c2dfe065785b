"""The durable job queue: huey on the queue's storage (SQLite file or Redis) and its store.

One huey task (``prbot.job``) carries every job as a *message* (a JSON-able dict: the `Job`'s
fields plus ``id``, ``seq``, ``attempt``, ``waits``, ``enqueued_at``).  The web process only
enqueues; a `prbot.service.worker.Worker` attached to a `Queue` executes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from huey import RedisHuey, SqliteHuey  # type: ignore[import-untyped]
from huey.api import Huey  # type: ignore[import-untyped]

from prbot.service.jobs import Job
from prbot.service.settings import Settings
from prbot.service.store import KeyValueStore, RedisStore, SqliteStore

TASK_NAME = "prbot.job"
HUEY_NAME = "prbot"
Message = dict[str, Any]


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
            self.huey = RedisHuey(HUEY_NAME, connection_pool=pool, results=False, blocking=True, read_timeout=1,
                                  utc=True)
            self.store = RedisStore(url, namespace=HUEY_NAME, timeout=settings.store_timeout)
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
        if delay > 0:
            self._task.schedule(args=(message,), delay=delay)
        else:
            self._task(message)

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

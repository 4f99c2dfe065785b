"""What `/readyz` checks and the queue gauges `/metrics` reads at scrape time.

Ready means work can be accepted *and* done: the store and the queue answer, at least one worker
has heartbeated within its lease (``worker:<id>`` keys expire with the lease), and the data
directory has more free space than `Settings.disk_floor_mb`.  The gauges are read from the shared
store and queue, so every web process reports the same values:

- ``prbot_queue_depth{kind}``: jobs waiting in the queue (due now or scheduled), by kind;
- ``prbot_queue_oldest_seconds``: age of the oldest job due now (0 when none);
- ``prbot_workers_live``: workers whose heartbeat is within the lease;
- ``prbot_dead_letter_jobs``: jobs in the dead-letter set (``dead:`` keys);
- ``prbot_store_up``: 1 when the store answered this scrape.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from prbot.service.queue import Queue
from prbot.service.settings import Settings
from prbot.service.store import KeyValueStore

MAX_SCAN = 20_000                  # queued (and scheduled) messages read per scrape, at most


def live_workers(store: KeyValueStore) -> int:
    return sum(1 for _ in store.items("worker:"))


def free_bytes(path: Path) -> int:
    """Free space of the file system holding `path` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return int(shutil.disk_usage(candidate).free)
    return int(shutil.disk_usage("/").free)


def readiness(settings: Settings, store: KeyValueStore, queue: Queue) -> dict[str, str]:
    """What is not ready, by name, with a one-line reason; empty when ready."""
    failed: dict[str, str] = {}

    def check(name: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - readiness reports what is down, it never raises
            failed[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            return None

    check("store", store.ping)
    check("queue", queue.huey.pending_count)
    if "store" not in failed:
        workers = check("workers", lambda: live_workers(store))
        if workers == 0:
            failed["workers"] = f"no worker has sent a heartbeat in the last {settings.lease_seconds:g}s"
    free = check("disk", lambda: free_bytes(settings.data_dir))
    floor = int(settings.disk_floor_mb * 1024 * 1024)
    if free is not None and free < floor:
        failed["disk"] = (f"{free // (1024 * 1024)} MiB free in the data directory, "
                          f"below the floor of {settings.disk_floor_mb:g} MiB")
    return failed


class QueueCollector(Collector):
    """The queue and worker gauges, read from the store and the queue at each scrape."""

    def __init__(self, store: KeyValueStore, queue: Queue) -> None:
        self.store = store
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("prbot_store_up", "1 when the store answered this scrape")
        try:
            depth, oldest = self._queue()
            workers = live_workers(self.store)
            dead = sum(1 for _ in self.store.items("dead:"))
        except Exception:  # noqa: BLE001 - a scrape never fails: it says the store is down
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        family = GaugeMetricFamily("prbot_queue_depth", "Jobs waiting in the queue, by kind", labels=["kind"])
        for kind, count in sorted(depth.items()):
            family.add_metric([kind], count)
        yield family
        yield GaugeMetricFamily("prbot_queue_oldest_seconds", "Age of the oldest job due now", value=oldest)
        yield GaugeMetricFamily("prbot_workers_live", "Workers whose heartbeat is within the lease", value=workers)
        yield GaugeMetricFamily("prbot_dead_letter_jobs", "Jobs in the dead-letter set", value=dead)

    def _queue(self) -> tuple[Counter[str], float]:
        huey = self.queue.huey
        depth: Counter[str] = Counter()
        now = time.time()
        oldest = 0.0
        for task in huey.pending(limit=MAX_SCAN):
            message = task.args[0] if task.args and isinstance(task.args[0], dict) else {}
            depth[str(message.get("kind", "unknown"))] += 1
            enqueued = message.get("enqueued_at")
            if isinstance(enqueued, int | float):
                oldest = max(oldest, now - float(enqueued))
        for task in huey.scheduled(limit=MAX_SCAN):
            message = task.args[0] if task.args and isinstance(task.args[0], dict) else {}
            depth[str(message.get("kind", "unknown"))] += 1
        return depth, oldest


def exposition(store: KeyValueStore, queue: Queue) -> bytes:
    """The text exposition of the gauges above."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(store, queue))
    return generate_latest(registry)

"""The durable queue with real huey consumers on SQLite and on a real redis-server.

Handlers are registered through `Registry.register` (the public API); workers are real
`Worker`s (huey consumer threads) in this process, or real worker processes that are killed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY as PROM
from service_support import redis_server, wait_for
from support import PROJECT

from prbot.errors import PrbotError, TransientError
from prbot.service.jobs import Job, Registry, Runtime
from prbot.service.queue import Queue
from prbot.service.settings import Settings
from prbot.service.store import KeyValueStore, RedisStore, SqliteStore
from prbot.service.worker import Worker

FAST = {"retry_base": 0.05, "lease_seconds": 2.0, "heartbeat_seconds": 0.25,
        "poll_max_delay": 0.1, "max_attempts": 4}


def jobs_metric(kind: str, outcome: str) -> float:
    return PROM.get_sample_value("prbot_jobs_total", {"kind": kind, "outcome": outcome}) or 0.0


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    queue_url = ""
    if backend == "redis":
        queue_url = request.getfixturevalue("redis_url")
        import redis

        client = redis.Redis.from_url(queue_url)
        client.flushdb()
        client.close()
    return Settings(queue_url=queue_url, data_dir=tmp_path / "data", **FAST)  # type: ignore[arg-type]


@pytest.fixture
def start_worker(settings: Settings) -> Iterator[Callable[..., Worker]]:
    started: list[Worker] = []

    def start(registry: Registry, threads: int = 1, **overrides: Any) -> Worker:
        w = Worker(settings.with_overrides(**overrides) if overrides else settings, registry, threads=threads)
        w.start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop(graceful=True, timeout=10)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, Any]] = []

    def add(self, name: str, value: Any = None) -> None:
        with self.lock:
            self.events.append((name, value))

    def count(self, name: str) -> int:
        with self.lock:
            return sum(1 for n, _ in self.events if n == name)

    def values(self, name: str) -> list[Any]:
        with self.lock:
            return [v for n, v in self.events if n == name]


def kind_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


# -- the store ---------------------------------------------------------------------------------------

def open_store(settings: Settings) -> KeyValueStore:
    if settings.queue_backend == "redis":
        return RedisStore(settings.effective_queue_url)
    return SqliteStore(settings.sqlite_path)


def test_store_semantics(settings: Settings) -> None:
    store = open_store(settings)
    assert store.get("a") is None
    store.put("a", "1")
    assert store.get("a") == "1"
    assert store.put_if_absent("a", "2") is False and store.get("a") == "1"
    assert store.put_if_absent("b", "2") is True
    assert store.compare_and_set("a", "0", "x") is False and store.get("a") == "1"
    assert store.compare_and_set("a", "1", "x") is True and store.get("a") == "x"
    assert store.compare_and_set("a", "x", None) is True and store.get("a") is None
    assert store.compare_and_set("a", None, "new") is True and store.get("a") == "new"
    assert store.compare_and_set("a", None, "again") is False
    store.put("p:1", "one")
    store.put("p:2", "two")
    store.put("p*[x]", "glob")                        # glob characters in a key are literal
    store.put("q:1", "other")
    assert dict(store.items("p:")) == {"p:1": "one", "p:2": "two"}
    assert dict(store.items("p*")) == {"p*[x]": "glob"}
    store.delete("p:1")
    assert dict(store.items("p:")) == {"p:2": "two"}
    assert [store.incr("n") for _ in range(3)] == [1, 2, 3]
    store.ping()
    store.close()


def test_store_expiry(settings: Settings) -> None:
    store = open_store(settings)
    store.put("short", "v", ttl=0.3)
    assert store.put_if_absent("short", "w", ttl=0.3) is False
    store.put("long", "v", ttl=60)
    wait_for(lambda: store.get("short") is None, 10, "the entry to expire")
    assert dict(store.items("short")) == {}
    assert store.put_if_absent("short", "w") is True, "an expired key counts as absent"
    assert store.get("long") == "v"
    store.put("gone", "v", ttl=0.1)
    wait_for(lambda: store.get("gone") is None, 10, "expiry")
    store.purge_expired()
    assert store.get("long") == "v"
    if isinstance(store, SqliteStore):              # the row itself is gone: bounded growth
        import sqlite3

        rows = sqlite3.connect(store.path).execute("SELECT key FROM prbot_kv WHERE key = 'gone'").fetchall()
        assert rows == []
    store.close()


def test_put_if_absent_is_atomic_across_threads(settings: Settings) -> None:
    store = open_store(settings)
    winners: list[int] = []
    barrier = threading.Barrier(8, timeout=20)

    def race(i: int) -> None:
        barrier.wait()
        if store.put_if_absent("race", str(i)):
            winners.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(winners) == 1 and store.get("race") == str(winners[0])
    store.close()


# -- running jobs ------------------------------------------------------------------------------------

def test_job_runs_with_its_runtime_and_can_enqueue_more(settings: Settings,
                                                        start_worker: Callable[..., Worker]) -> None:
    rec = Recorder()
    registry = Registry()
    first, second = kind_name("first"), kind_name("second")

    @registry.register(first)
    def on_first(rt: Runtime, job: Job) -> None:
        rec.add("first", job)
        rt.store.put("seen", json.dumps(job.payload))
        rt.enqueue(Job(second, {"from": job.payload["n"]}, repo=job.repo))

    registry.register(second, lambda rt, job: rec.add("second", (job, rt.data_dir)))
    start_worker(registry)
    queue = Queue(settings)
    queue.enqueue(Job(first, {"n": 1}, repo="acme/gitops", delivery="d-1", pr=7))
    wait_for(lambda: rec.count("second") == 1, 30, "the chained job")
    job = rec.values("first")[0]
    assert (job.kind, job.payload, job.repo, job.delivery, job.pr) == (first, {"n": 1}, "acme/gitops", "d-1", 7)
    chained, data_dir = rec.values("second")[0]
    assert chained.payload == {"from": 1} and data_dir == settings.data_dir
    assert json.loads(queue.store.get("seen") or "") == {"n": 1}
    assert jobs_metric(first, "success") == 1


def test_payload_must_be_json(settings: Settings) -> None:
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        Queue(settings).enqueue(Job("x", {"when": object()}))


def test_transient_errors_are_retried_with_backoff_then_succeed(settings: Settings,
                                                                start_worker: Callable[..., Worker]) -> None:
    rec = Recorder()
    registry = Registry()
    kind = kind_name("flaky")

    def flaky(rt: Runtime, job: Job) -> None:
        rec.add("attempt", time.monotonic())
        n = rec.count("attempt")
        if n == 1:
            raise TransientError("secondary rate limit", retry_after=1.5)
        if n == 2:
            raise ConnectionError("connection reset by peer")
        rec.add("done")

    registry.register(kind, flaky)
    start_worker(registry)
    Queue(settings).enqueue(Job(kind, {}))
    wait_for(lambda: rec.count("done") == 1, 60, "the job to succeed on its third attempt")
    first, second, _ = rec.values("attempt")
    assert second - first >= 1.4, "Retry-After is honoured"
    assert jobs_metric(kind, "retried") == 2 and jobs_metric(kind, "success") == 1


def test_transient_errors_stop_after_max_attempts(settings: Settings, start_worker: Callable[..., Worker],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    registry = Registry()
    kind = kind_name("down")

    def down(rt: Runtime, job: Job) -> None:
        rec.add("attempt")
        raise TransientError("GitHub answered 502")

    registry.register(kind, down)
    start_worker(registry, max_attempts=3)
    caplog.set_level(logging.INFO, logger="prbot.worker")
    Queue(settings).enqueue(Job(kind, {}))
    wait_for(lambda: jobs_metric(kind, "failed") == 1, 60, "the job to be recorded as failed")
    assert rec.count("attempt") == 3
    assert any("failed after 3 attempts: GitHub answered 502" in r.getMessage() for r in caplog.records)


def test_permanent_and_unexpected_errors_are_not_retried(settings: Settings, start_worker: Callable[..., Worker],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder()
    registry = Registry()
    refused, buggy, after = kind_name("refused"), kind_name("buggy"), kind_name("after")

    def refuse(rt: Runtime, job: Job) -> None:
        rec.add("refused")
        raise PrbotError("environment 'qa' is not in .prbot.yml")

    def bug(rt: Runtime, job: Job) -> None:
        rec.add("buggy")
        raise KeyError("head_sha")

    registry.register(refused, refuse)
    registry.register(buggy, bug)
    registry.register(after, lambda rt, job: rec.add("after"))
    caplog.set_level(logging.INFO, logger="prbot.worker")
    start_worker(registry)
    queue = Queue(settings)
    queue.enqueue(Job(refused, {}))
    queue.enqueue(Job(buggy, {}))
    queue.enqueue(Job(after, {}))
    wait_for(lambda: rec.count("after") == 1 and jobs_metric(buggy, "error") == 1, 30, "all three jobs")
    assert rec.count("refused") == 1 and rec.count("buggy") == 1
    assert jobs_metric(refused, "failed") == 1
    bug_records = [r for r in caplog.records if r.getMessage() == "job raised an unexpected error"]
    assert bug_records and bug_records[0].exc_info is not None, "the traceback goes to the server log"
    assert any("environment 'qa' is not in .prbot.yml" in r.getMessage() for r in caplog.records)


def test_unknown_kind_is_logged_and_dropped(settings: Settings, start_worker: Callable[..., Worker]) -> None:
    kind = kind_name("nobody")
    start_worker(Registry())
    Queue(settings).enqueue(Job(kind, {}))
    wait_for(lambda: jobs_metric(kind, "unhandled") == 1, 30, "the unhandled job")


def test_superseded_jobs_are_dropped(settings: Settings, start_worker: Callable[..., Worker]) -> None:
    rec = Recorder()
    registry = Registry()
    kind = kind_name("plan")
    registry.register(kind, lambda rt, job: rec.add("ran", job.payload["sha"]))
    queue = Queue(settings)
    for sha in ("a1", "b2", "c3"):                      # enqueued before any worker runs
        queue.enqueue(Job(kind, {"sha": sha}, repo="acme/gitops", supersede="plan:acme/gitops#7"))
    queue.enqueue(Job(kind, {"sha": "other-pr"}, repo="acme/gitops", supersede="plan:acme/gitops#8"))
    start_worker(registry)
    wait_for(lambda: rec.count("ran") == 2 and jobs_metric(kind, "superseded") == 2, 30, "the newest plans")
    assert sorted(rec.values("ran")) == ["c3", "other-pr"]


def test_a_retry_is_dropped_when_a_newer_job_arrives(settings: Settings,
                                                     start_worker: Callable[..., Worker]) -> None:
    rec = Recorder()
    registry = Registry()
    kind = kind_name("plan")
    queue = Queue(settings)

    def plan(rt: Runtime, job: Job) -> None:
        rec.add("ran", job.payload["sha"])
        if job.payload["sha"] == "old":
            rt.enqueue(Job(kind, {"sha": "new"}, supersede="plan#1"), 0.5)   # a push arrives meanwhile
            raise TransientError("502", retry_after=1.5)

    registry.register(kind, plan)
    start_worker(registry)
    queue.enqueue(Job(kind, {"sha": "old"}, supersede="plan#1"))
    wait_for(lambda: jobs_metric(kind, "superseded") == 1, 30, "the old plan's retry to be dropped")
    assert rec.values("ran") == ["old", "new"]


def _run_blocking_pair(settings: Settings, start_worker: Callable[..., Worker], repos: tuple[str, str]) -> Recorder:
    """Two jobs; the first waits (up to 20 s) until the second has started or been sent back to wait."""
    rec = Recorder()
    registry = Registry()
    kind = kind_name("write")

    def write(rt: Runtime, job: Job) -> None:
        rec.add("start", job.payload["n"])
        if job.payload["n"] == 1:
            wait_for(lambda: rec.count("start") == 2 or jobs_metric(kind, "waiting") >= 1, 20,
                     "the second job to start or to wait")
        rec.add("end", job.payload["n"])

    registry.register(kind, write)
    start_worker(registry)
    start_worker(registry)                              # two workers (two consumers on one queue)
    queue = Queue(settings)
    queue.enqueue(Job(kind, {"n": 1}, repo=repos[0]))
    wait_for(lambda: rec.count("start") == 1, 30, "the first job to start")
    queue.enqueue(Job(kind, {"n": 2}, repo=repos[1]))
    wait_for(lambda: rec.count("end") == 2, 60, "both jobs")
    return rec


def test_jobs_for_one_repo_never_overlap(settings: Settings, start_worker: Callable[..., Worker]) -> None:
    rec = _run_blocking_pair(settings, start_worker, ("acme/gitops", "acme/gitops"))
    assert rec.events == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]


def test_jobs_for_two_repos_run_in_parallel(settings: Settings, start_worker: Callable[..., Worker]) -> None:
    rec = _run_blocking_pair(settings, start_worker, ("acme/gitops", "acme/other"))
    assert rec.events[:2] == [("start", 1), ("start", 2)], "the second repo's job ran while the first was running"


def test_many_jobs_on_one_repo_with_several_workers(settings: Settings,
                                                    start_worker: Callable[..., Worker]) -> None:
    running = {"now": 0, "max": 0}
    lock = threading.Lock()
    done: list[int] = []
    registry = Registry()
    kind = kind_name("serial")

    def serial(rt: Runtime, job: Job) -> None:
        with lock:
            running["now"] += 1
            running["max"] = max(running["max"], running["now"])
        try:
            rt.store.put(f"touch:{job.payload['n']}", "x")   # some real work on the shared store
        finally:
            with lock:
                running["now"] -= 1
                done.append(job.payload["n"])

    registry.register(kind, serial)
    start_worker(registry, threads=2)
    start_worker(registry, threads=2)
    queue = Queue(settings)
    for n in range(12):
        queue.enqueue(Job(kind, {"n": n}, repo="acme/one"))
    wait_for(lambda: len(done) == 12, 90, "all twelve jobs")
    assert sorted(done) == list(range(12)) and running["max"] == 1


def test_a_job_behind_a_busy_repo_is_handed_on_when_it_frees(settings: Settings,
                                                            start_worker: Callable[..., Worker]) -> None:
    """The second job of a busy repository is parked once and sent on by the first job's worker as
    it releases the lock: no re-checking while the first one runs (a burst of bump jobs for one
    repository would otherwise idle between re-checks)."""
    rec = Recorder()
    registry = Registry()
    kind = kind_name("handoff")
    work = threading.Event()                          # never set: the first job is 3 s of "work"

    def handler(rt: Runtime, job: Job) -> None:
        rec.add("start", job.payload["n"])
        if job.payload["n"] == 1:
            work.wait(3.0)
        rec.add("end", job.payload["n"])

    registry.register(kind, handler)
    start_worker(registry)
    start_worker(registry)
    queue = Queue(settings)
    queue.enqueue(Job(kind, {"n": 1}, repo="acme/gitops"))
    wait_for(lambda: rec.count("start") == 1, 30, "the first job to start")
    queue.enqueue(Job(kind, {"n": 2}, repo="acme/gitops"))
    wait_for(lambda: rec.count("end") == 2, 60, "both jobs")
    assert rec.events == [("start", 1), ("end", 1), ("start", 2), ("end", 2)]
    assert jobs_metric(kind, "waiting") == 1, "parked once, not re-checked while the repository was busy"
    assert not list(queue.store.items("parked:"))


def test_lock_of_a_dead_worker_is_taken_over(settings: Settings, start_worker: Callable[..., Worker]) -> None:
    rec = Recorder()
    registry = Registry()
    kind = kind_name("after_crash")
    registry.register(kind, lambda rt, job: rec.add("ran"))
    queue = Queue(settings)
    # a worker that died holding the lock: its heartbeat is gone, its lock remains
    queue.store.put("lock:acme/gitops", json.dumps({"worker": "gone:1:dead", "job": "x", "since": time.time()}))
    start_worker(registry)
    queue.enqueue(Job(kind, {}, repo="acme/gitops"))
    wait_for(lambda: rec.count("ran") == 1, 30, "the job to take over the stale lock")
    assert queue.store.get("lock:acme/gitops") is None


def test_a_job_enqueued_twice_runs_once(settings: Settings, start_worker: Callable[..., Worker]) -> None:
    rec = Recorder()
    registry = Registry()
    kind = kind_name("once")
    registry.register(kind, lambda rt, job: rec.add("ran"))
    queue = Queue(settings)
    message: dict[str, Any] = {"id": uuid.uuid4().hex, "kind": kind, "payload": {}, "repo": None, "supersede": None,
               "delivery": None, "pr": None, "seq": 0, "attempt": 1, "waits": 0, "enqueued_at": time.time()}
    queue.send(message)
    queue.send(dict(message))                          # e.g. recovered by two sweepers
    start_worker(registry)
    wait_for(lambda: jobs_metric(kind, "duplicate") == 1, 30, "the duplicate to be skipped")
    assert rec.count("ran") == 1


# -- a worker killed mid-job ---------------------------------------------------------------------------

WORKER_SCRIPT = PROJECT / "tests" / "service_worker_main.py"


def spawn_worker(settings: Settings, marks: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PRBOT_QUEUE_URL": settings.effective_queue_url, "PRBOT_DATA_DIR": str(settings.data_dir),
           "MARKS": str(marks), "PYTHONPATH": str(PROJECT)}
    return subprocess.Popen([sys.executable, str(WORKER_SCRIPT)], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(marks / f"worker-{time.monotonic_ns()}.log", "wb"))


def test_a_job_whose_worker_is_killed_runs_again_on_another_worker(settings: Settings, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    queue = Queue(settings)
    queue.enqueue(Job("slow", {"name": "job-1"}, repo="acme/gitops"))
    queue.enqueue(Job("slow", {"name": "job-2"}, repo="acme/gitops"))   # waits behind job-1 (same repo)
    first = spawn_worker(settings, marks)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: (marks / "job-1.started").exists(), 60, "job-1 to start on the first worker")
        started_by = (marks / "job-1.started").read_text()
        assert started_by == str(first.pid)
        first.send_signal(signal.SIGKILL)              # killed mid-job, holding the repo lock
        first.wait(10)
        (marks / "release").write_text("go")           # jobs finish from now on
        second = spawn_worker(settings, marks)
        wait_for(lambda: (marks / "job-1.done").exists() and (marks / "job-2.done").exists(), 60,
                 "both jobs to finish on the second worker")
        assert (marks / "job-1.done").read_text() == str(second.pid)
        assert (marks / "job-2.done").read_text() == str(second.pid)
        wait_for(lambda: not list(queue.store.items("run:")), 30, "the journal to empty")
        assert queue.store.get("lock:acme/gitops") is None
        assert (marks / "job-1.runs").read_text().count("\n") == 2, "job-1 ran twice: killed, then completed"
        assert (marks / "job-2.runs").read_text().count("\n") == 1, "job-2 ran once"
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    assert second.returncode == 0, "SIGTERM stops a worker gracefully"


def test_a_journaled_job_no_thread_runs_is_run_again(settings: Settings, start_worker: Callable[..., Worker]) -> None:
    """A job journaled by this very worker but not running (the store failed mid-job) is recovered."""
    rec = Recorder()
    registry = Registry()
    kind = kind_name("orphan")
    registry.register(kind, lambda rt, job: rec.add("ran", job.payload))
    worker = start_worker(registry)
    message = {"id": uuid.uuid4().hex, "kind": kind, "payload": {"n": 1}, "repo": "acme/gitops", "supersede": None,
               "delivery": None, "pr": None, "seq": 0, "attempt": 1, "waits": 0, "enqueued_at": time.time()}
    worker.store.put(f"run:{message['id']}", json.dumps({"worker": worker.id, "started": time.time(),
                                                         "message": message}))
    wait_for(lambda: rec.count("ran") == 1, 30, "the orphaned job to run")
    assert rec.values("ran") == [{"n": 1}]
    assert jobs_metric(kind, "recovered") == 1

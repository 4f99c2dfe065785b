"""Queue workers: run jobs with repository locks, supersession, retries and crash recovery.

Each `Worker` has an id and a heartbeat in the store (``worker:<id>``, a lease of
`Settings.lease_seconds` renewed every `Settings.heartbeat_seconds`).  Around each job it keeps:

- ``lock:<repo>``: who runs a job on that repository now.  Taken atomically; a lock whose
  worker's heartbeat has lapsed is taken over.  A job that finds its repository busy is parked
  (``parked:<repo>:<n>:<job id>``, no thread blocks on it) and the worker releasing the lock puts
  the longest-parked one back on the queue at once, so the jobs of a busy repository follow each
  other without idling; at every heartbeat, jobs parked behind a free or dead lock are sent too.
- ``run:<job id>``: the journal of jobs taken from the queue and not yet finished (or put back),
  with their worker.  At start and at every heartbeat each worker re-enqueues the journaled jobs of
  dead workers, and its own that no thread runs (huey deletes a task when it is dequeued, so this
  is what makes a job survive a killed worker or a store outage mid-job).
- ``done:<job id>``: jobs finished (kept `Settings.journal_ttl`), so a job re-enqueued twice runs once.
- ``supersede:<key>``: the newest sequence number enqueued under that key; older jobs (and their
  retries) are dropped.  Kept `Settings.journal_ttl` after the last enqueue under the key.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from typing import Any

from huey.consumer import Consumer  # type: ignore[import-untyped]

import prbot.service.metrics as metrics
from prbot.errors import PrbotError, TransientError
from prbot.service.jobs import REGISTRY, Job, Registry, Runtime
from prbot.service.logs import log_context
from prbot.service.queue import Message, Queue, supersede_key
from prbot.service.settings import Settings

log = logging.getLogger("prbot.worker")


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [TransientError, ConnectionError, TimeoutError]
    try:
        import requests

        types += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:  # pragma: no cover - requests comes with PyGithub
        pass
    return tuple(types)


TRANSIENT = _transient_types()


class _InProcessConsumer(Consumer):
    """huey's consumer without signal handlers (it runs inside a web server's process)."""

    def _set_signal_handlers(self) -> None:
        pass


class Worker:
    """Runs queued jobs with `threads` worker threads in this process."""

    def __init__(self, settings: Settings, registry: Registry | None = None, *, threads: int = 1,
                 queue: Queue | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else REGISTRY
        self.queue = queue or Queue(settings)
        self.store = self.queue.store
        self.threads = threads
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.runtime = Runtime(settings=settings, store=self.store, enqueue_fn=self.queue.enqueue,
                               record_github_response=metrics.record_github_response)
        self.queue.attach(self.execute)
        self._running: set[str] = set()
        self._running_lock = threading.Lock()
        self._stop = threading.Event()
        self._maintenance: threading.Thread | None = None
        self._consumer: Consumer | None = None

    # -- life cycle --------------------------------------------------------------------------------

    def _consumer_options(self) -> dict[str, Any]:
        return {"workers": self.threads, "worker_type": "thread", "periodic": False, "initial_delay": 0.05,
                "backoff": 1.5, "max_delay": self.settings.poll_max_delay, "scheduler_interval": 1,
                "check_worker_health": True, "health_check_interval": 10, "graceful_signal": "TERM"}

    def _begin(self) -> None:
        self.beat()
        self.recover()
        self._stop.clear()
        self._maintenance = threading.Thread(target=self._maintain, name="prbot-maintenance", daemon=True)
        self._maintenance.start()
        log.info("worker started", extra={"worker_id": self.id, "threads": self.threads,
                                          "queue": self.settings.queue_backend,
                                          "kinds": self.registry.kinds()})

    def start(self) -> None:
        """Start the consumer threads in the background (for `prbot serve` and tests)."""
        self._begin()
        self._consumer = _InProcessConsumer(self.queue.huey, **self._consumer_options())
        self._consumer.start()

    def stop(self, graceful: bool = True, timeout: float | None = 30.0) -> None:
        """Stop taking jobs; with `graceful`, let running jobs finish (up to `timeout` seconds)."""
        if self._consumer is not None:
            self._consumer.shutdown_timeout = timeout
            self._consumer.stop(graceful=graceful)
            self._consumer = None
        self._end()

    def run(self) -> None:
        """Run in the foreground until SIGTERM (graceful) or SIGINT (`prbot worker`)."""
        self._begin()
        consumer = self.queue.huey.create_consumer(**self._consumer_options(), shutdown_timeout=60)
        self._consumer = None
        try:
            consumer.run()
        finally:
            self._end()

    def _end(self) -> None:
        self._stop.set()
        if self._maintenance is not None:
            self._maintenance.join(timeout=10)
            self._maintenance = None
        try:
            self.store.delete(self._worker_key(self.id))
        except Exception:  # noqa: BLE001 - shutting down with the store gone: its lease lapses anyway
            log.warning("could not remove the worker heartbeat", exc_info=True)
        log.info("worker stopped", extra={"worker_id": self.id})

    def _maintain(self) -> None:
        beats = 0
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                self.beat()
                self.recover()
                beats += 1
                if beats % 30 == 1:
                    purged = self.store.purge_expired()
                    if purged:
                        log.info("purged expired store entries", extra={"purged": purged})
            except Exception:  # noqa: BLE001 - keep beating: the next round may reach the store
                log.exception("worker maintenance failed")

    # -- liveness and recovery ------------------------------------------------------------------

    @staticmethod
    def _worker_key(worker_id: str) -> str:
        return f"worker:{worker_id}"

    def beat(self) -> None:
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "beat": time.time()})
        self.store.put(self._worker_key(self.id), info, ttl=self.settings.lease_seconds)

    def alive(self, worker_id: str | None) -> bool:
        if not worker_id:
            return False
        return worker_id == self.id or self.store.get(self._worker_key(worker_id)) is not None

    def recover(self) -> int:
        """Re-enqueue the journaled jobs of dead workers (and hand on jobs parked behind a lock
        nobody holds); how many journaled jobs."""
        self._hand_on_free()
        count = 0
        for key, value in list(self.store.items("run:")):
            entry = _loads(value)
            worker_id = entry.get("worker") if entry else None
            if entry is not None and isinstance(worker_id, str):
                if worker_id == self.id:
                    with self._running_lock:
                        running = key.removeprefix("run:") in self._running
                    if running:
                        continue                         # ours, running now
                elif self.alive(worker_id):
                    continue
            if not self.store.compare_and_set(key, value, None):
                continue                                 # another worker recovered it
            message = entry.get("message") if entry else None
            if not isinstance(message, dict) or "id" not in message:
                log.error("dropping an unreadable journal entry", extra={"key": key})
                continue
            count += 1
            kind = str(message.get("kind"))
            metrics.JOBS.labels(kind=kind, outcome="recovered").inc()
            with _job_context(message, self.id):
                attempt = int(message.get("attempt", 1))
                if attempt >= self.settings.max_attempts:
                    log.error("job failed: its worker died on each of %d attempts", attempt,
                              extra={"dead_worker": worker_id})
                    self._finish(message, "failed")
                    continue
                log.warning("re-running a job whose worker died or lost it", extra={"dead_worker": worker_id})
                self.queue.send({**message, "attempt": attempt + 1, "waits": 0})
        return count

    # -- running one job ------------------------------------------------------------------------

    def execute(self, message: Message) -> None:
        """Run one dequeued message (huey calls this; it never raises)."""
        job_id = str(message.get("id"))
        with _job_context(message, self.id):
            with self._running_lock:
                self._running.add(job_id)
            journaled = False
            try:
                journaled = self._execute(message)
            except Exception:  # noqa: BLE001 - the store failed around the job: it must not be lost
                if journaled or self._journaled(job_id):
                    log.exception("job runner failed; the journal re-runs the job")
                else:
                    log.exception("job runner failed; the job goes back on the queue")
                    self._resend(message)
            finally:
                with self._running_lock:
                    self._running.discard(job_id)

    def _journaled(self, job_id: str) -> bool:
        try:
            return self.store.get(f"run:{job_id}") is not None
        except Exception:  # noqa: BLE001 - the store is down: treat as not journaled, re-send
            return False

    def _resend(self, message: Message) -> None:
        try:
            self.queue.send(message, self._backoff(int(message.get("attempt", 1)), None))
        except Exception:  # noqa: BLE001
            log.critical("job lost: neither the store nor the queue can be reached",
                         extra={"message": json.dumps(message, default=str)[:2000]})

    def _execute(self, message: Message) -> bool:
        """Run `message`; False when it ended before it was journaled (nothing left to clean up)."""
        kind = str(message["kind"])
        job_id = str(message["id"])
        if self.store.get(f"done:{job_id}") is not None:
            metrics.JOBS.labels(kind=kind, outcome="duplicate").inc()
            log.info("job already done, not run again")
            return False
        # Journal first: from here until the job is done or safely back on the queue, a crash of this
        # process leaves `run:<id>` behind, which `recover()` re-enqueues.
        run_key = f"run:{job_id}"
        self.store.put(run_key, json.dumps({"worker": self.id, "started": time.time(), "message": message}))
        if self._superseded(message):
            self._finish(message, "superseded")
            self.store.delete(run_key)
            return True
        repo = message.get("repo")
        lock = self._acquire(str(repo), message) if repo else None
        if repo and lock is None:
            self._park(str(repo), message)
            self.store.delete(run_key)
            return True
        finished = False
        try:
            if self._superseded(message):          # a newer job may have arrived while this one waited
                self._finish(message, "superseded")
            else:
                outcome, final = self._call(message)
                if final:
                    self._finish(message, outcome)
                else:
                    metrics.JOBS.labels(kind=kind, outcome=outcome).inc()
            finished = True
        finally:
            if lock is not None:
                self.store.compare_and_set(f"lock:{repo}", lock, None)
                self._hand_on(str(repo))
        if finished:
            self.store.delete(run_key)             # after the hand-on: the queue never looks idle in between
        return True

    def _call(self, message: Message) -> tuple[str, bool]:
        """Run the handler: (outcome, final)."""
        kind = str(message["kind"])
        handler = self.registry.get(kind)
        if handler is None:
            log.error("no handler is registered for job kind %r", kind)
            return "unhandled", True
        enqueued = message.get("enqueued_at")
        job = Job(kind=kind, payload=message["payload"], repo=message.get("repo"),
                  supersede=message.get("supersede"), delivery=message.get("delivery"), pr=message.get("pr"),
                  enqueued_at=float(enqueued) if isinstance(enqueued, int | float) else None)
        attempt = int(message.get("attempt", 1))
        start = time.monotonic()
        try:
            log.info("job started", extra={"attempt": attempt})
            handler(self.runtime, job)
        except TRANSIENT as exc:
            retry_after = exc.retry_after if isinstance(exc, TransientError) else None
            if attempt >= self.settings.max_attempts:
                log.error("job failed after %d attempts: %s", attempt, _one_line(exc))
                return "failed", True
            delay = self._backoff(attempt, retry_after)
            log.warning("transient error, retrying in %.1fs (attempt %d of %d): %s", delay, attempt,
                        self.settings.max_attempts, _one_line(exc))
            self.queue.send({**message, "attempt": attempt + 1, "waits": 0}, delay)
            return "retried", False
        except PrbotError as exc:
            log.warning("job failed: %s", exc)
            return "failed", True
        except Exception:  # noqa: BLE001 - a bug: the traceback goes to the log, never to users
            log.exception("job raised an unexpected error")
            return "error", True
        finally:
            metrics.JOB_DURATION.labels(kind=kind).observe(time.monotonic() - start)
        log.info("job done", extra={"duration": round(time.monotonic() - start, 3)})
        return "success", True

    def _finish(self, message: Message, outcome: str) -> None:
        kind = str(message["kind"])
        self.store.put(f"done:{message['id']}", outcome, ttl=self.settings.journal_ttl)
        if outcome == "superseded":
            log.info("job superseded by a newer one, dropped")
        metrics.JOBS.labels(kind=kind, outcome=outcome).inc()
        enqueued = message.get("enqueued_at")
        if isinstance(enqueued, int | float):
            metrics.JOB_LATENCY.labels(kind=kind).observe(max(0.0, time.time() - enqueued))

    def _superseded(self, message: Message) -> bool:
        key = message.get("supersede")
        if not key:
            return False
        latest = self.store.get(supersede_key(str(key)))
        return latest is not None and int(latest) > int(message.get("seq") or 0)

    def _acquire(self, repo: str, message: Message) -> str | None:
        key = f"lock:{repo}"
        mine = json.dumps({"worker": self.id, "job": message["id"], "since": time.time()})
        for _ in range(3):
            if self.store.put_if_absent(key, mine):
                return mine
            current = self.store.get(key)
            if current is None:
                continue
            holder = _loads(current) or {}
            holder_worker = holder.get("worker")
            if self.alive(holder_worker if isinstance(holder_worker, str) else None):
                return None
            if self.store.compare_and_set(key, current, mine):
                log.warning("took over the lock of a dead worker", extra={"dead_worker": holder_worker})
                return mine
        return None

    def _park(self, repo: str, message: Message) -> None:
        """The repository is busy: keep the job aside until the lock's holder hands it on."""
        waits = int(message.get("waits", 0)) + 1
        metrics.JOBS.labels(kind=str(message["kind"]), outcome="waiting").inc()
        key = f"parked:{repo}:{self.store.incr('parkseq'):012d}:{message['id']}"
        self.store.put(key, json.dumps({**message, "waits": waits}))
        log.debug("repository busy, job parked until it is free")
        if self.store.get(f"lock:{repo}") is None:     # released meanwhile: nobody else will hand it on
            self._hand_on(repo)

    def _hand_on(self, repo: str) -> None:
        """Put the longest-parked job of `repo` back on the queue now (each parked job is sent once:
        taken from the store atomically).  A failure is logged: the heartbeat sends it later."""
        try:
            for key, value in self.store.items(f"parked:{repo}:"):
                if not self.store.compare_and_set(key, value, None):
                    continue                              # another worker handed it on
                message = _loads(value)
                if message is None or "id" not in message:
                    log.error("dropping an unreadable parked job", extra={"key": key})
                    continue
                self.queue.send(message)
                return
        except Exception:  # noqa: BLE001 - the store or queue hiccuped: the maintenance sweep retries
            log.exception("could not hand the repository on to a parked job", extra={"parked_repo": repo})

    def _hand_on_free(self) -> None:
        """Hand on parked jobs whose repository no live worker holds (its holder died, or a release
        crossed a park)."""
        repos = {key.removeprefix("parked:").rsplit(":", 2)[0] for key, _ in self.store.items("parked:")}
        for repo in repos:
            raw = self.store.get(f"lock:{repo}")
            holder = (_loads(raw) if raw is not None else None) or {}
            worker_id = holder.get("worker")
            if not self.alive(worker_id if isinstance(worker_id, str) else None):
                self._hand_on(repo)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after > 0:
            return min(float(retry_after), self.settings.retry_max * 6)
        base = self.settings.retry_base * 2 ** (attempt - 1)
        return min(self.settings.retry_max, base) * random.uniform(0.8, 1.2)


def _job_context(message: Message, worker_id: str) -> Any:
    pr = message.get("pr")
    return log_context(job=str(message.get("id")), kind=str(message.get("kind")), repo=message.get("repo"),
                       delivery=message.get("delivery"), pr=pr if isinstance(pr, int) else None, worker=worker_id)


def _loads(value: str) -> dict[str, Any] | None:
    try:
        loaded = json.loads(value)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:500]

"""Queue workers: run jobs with repository locks, supersession, retries and crash recovery.

Each `Worker` has an id and a heartbeat in the store (``worker:<id>``, a lease of
`Settings.lease_seconds` renewed every `Settings.heartbeat_seconds`).  Around each job it keeps:

- ``lock:<repo>``: who runs a job on that repository now. Taken atomically; a lock whose worker's
  heartbeat has lapsed is taken over, and so is one of this worker's own whose job no thread runs (a
  release the store missed). The lock's value is its fencing token: the release compares and deletes
  exactly that value, so a worker that lost its lock never frees another's. A job that finds its
  repository busy is parked (``parked:<repo>:<n>:<job id>``, no thread blocks on it) and the worker
  releasing the lock puts the longest-parked one back on the queue at once, so the jobs of a busy
  repository follow each other without idling; at every heartbeat, jobs parked behind a free or dead
  lock are sent too.
- ``run:<job id>``: the journal of jobs taken from the queue and not yet finished (or put back),
  with their worker; a retry stays journaled (with when it is due) until it runs. At start and at
  every heartbeat each worker re-enqueues the journaled jobs of dead workers, and its own that no
  thread runs (huey deletes a task when it is dequeued, so this is what makes a job survive a killed
  worker or a store outage mid-job).
- ``done:<job id>``: jobs finished (kept `Settings.journal_ttl`), so a job re-enqueued twice runs once.
- ``supersede:<key>``: the newest sequence number enqueued under that key; older jobs (and their
  retries) are dropped.  Kept `Settings.journal_ttl` after the last enqueue under the key.
- ``dead:<job id>``: the dead-letter set: jobs whose transient failures outlasted
  `Settings.max_attempts` (kept `Settings.journal_ttl`).  Every `Settings.dead_letter_retry` one of
  them runs again as a probe (one worker probes at a time: ``deadprobe``); when a probe or any job of
  the same kind succeeds, the dependency is back and the dead letters are queued again.

Store outages are transient: a store error in a handler is retried like any transient error; one
around the job (journal, lock release, retry scheduling) leaves the job to the journal, the lock to
a retried release, a message that cannot be sent to an in-memory outbox flushed at each heartbeat.
A worker whose heartbeat failed beats again before it takes a job, and it judges another worker dead
only after a full lease of talking to the store: after an outage every live worker has beaten again
by then, so nobody's lease is taken over merely because the store was away.
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
import prbot.service.scratch as scratch
from prbot.errors import PrbotError, TransientError
from prbot.service.jobs import REGISTRY, Job, Registry, Runtime
from prbot.service.logs import log_context
from prbot.service.queue import ROUTING, Message, Queue, priority_of, supersede_key
from prbot.service.settings import Settings
from prbot.service.store import store_errors

log = logging.getLogger("prbot.worker")


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [TransientError, ConnectionError, TimeoutError, *store_errors()]
    try:
        import requests

        types += [requests.exceptions.ConnectionError, requests.exceptions.Timeout]
    except ImportError:  # pragma: no cover - requests comes with PyGithub
        pass
    return tuple(types)


TRANSIENT = _transient_types()
FAILED = ("failed", "error", "unhandled")      # final outcomes that a redelivery runs again


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
        self._store_ok_since: float | None = None   # monotonic: talking to the store since (None: not now)
        self._last_beat = 0.0                       # monotonic time of the last heartbeat written
        self._outbox: list[Message] = []            # messages the queue refused: sent again at each heartbeat
        self._releases: list[tuple[str, str]] = []  # (repo, lock value) whose release the store missed
        self._pending_lock = threading.Lock()
        self._succeeded: dict[str, float] = {}      # kind → wall time of its last success in this worker
        self._probe_ok = 0.0                        # wall time of the last dead letter that ran again fine
        self._maintenance: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._scratch: scratch.Scratch | None = None

    # -- life cycle --------------------------------------------------------------------------------

    def _consumer_options(self) -> dict[str, Any]:
        return {"workers": self.threads, "worker_type": "thread", "periodic": False, "initial_delay": 0.05,
                "backoff": 1.5, "max_delay": self.settings.poll_max_delay, "scheduler_interval": 1,
                "check_worker_health": True, "health_check_interval": 10, "graceful_signal": "TERM"}

    def _begin(self) -> None:
        self._claim_scratch()
        self._store_ok_since = None
        try:
            self.beat()
            self.recover()
        except store_errors() as exc:              # the heartbeat thread keeps trying: no crash loop
            log.warning("the store cannot be reached at start; waiting for it: %s", _one_line(exc))
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
            self._flush()
        except Exception as exc:  # noqa: BLE001 - what is left is logged below
            log.warning("could not reach the queue while stopping: %s", _one_line(exc))
        with self._pending_lock:
            lost, self._outbox = self._outbox, []
        for message in lost:
            log.critical("job lost: the queue could not be reached before the worker stopped",
                         extra={"job_message": json.dumps(message, default=str)[:2000]})
        try:
            self.store.delete(self._worker_key(self.id))
        except Exception:  # noqa: BLE001 - shutting down with the store gone: its lease lapses anyway
            log.warning("could not remove the worker heartbeat", exc_info=True)
        if self._scratch is not None:
            self._scratch.release()
            self._scratch = None
        log.info("worker stopped", extra={"worker_id": self.id})

    def _claim_scratch(self) -> None:
        """Sweep the temporary directories of dead workers and take this process's own."""
        if self._scratch is None:
            try:
                self._scratch = scratch.claim(self.settings.data_dir / "tmp")
            except OSError:
                log.exception("could not claim a temporary directory; the system default is used")

    def _maintain(self) -> None:
        beats = 0
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                self.beat()
                self._flush()
                self.recover()
                self._revive_dead()
                beats += 1
                if beats % 30 == 1:
                    purged = self.store.purge_expired()
                    if purged:
                        log.info("purged expired store entries", extra={"purged": purged})
            except store_errors() as exc:
                log.warning("worker maintenance could not reach the store: %s", _one_line(exc))
            except Exception:  # noqa: BLE001 - keep beating: the next round may reach the store
                log.exception("worker maintenance failed")

    # -- liveness and recovery ------------------------------------------------------------------

    @staticmethod
    def _worker_key(worker_id: str) -> str:
        return f"worker:{worker_id}"

    def beat(self) -> None:
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "beat": time.time()})
        try:
            self.store.put(self._worker_key(self.id), info, ttl=self.settings.lease_seconds)
        except Exception:
            if self._store_ok_since is not None:
                log.warning("the store cannot be reached: this worker takes no job until it is back")
            self._store_ok_since = None
            raise
        now = time.monotonic()
        if self._store_ok_since is None:
            if self._last_beat:
                log.info("the store is reachable again")
            self._store_ok_since = now
        self._last_beat = now

    def _judging(self) -> bool:
        """Whether this worker has talked to the store for a full lease: only then does a missing
        heartbeat mean a dead worker rather than one that could not reach the store either."""
        since = self._store_ok_since
        return since is not None and time.monotonic() - since >= self.settings.lease_seconds

    def alive(self, worker_id: str | None) -> bool:
        if not worker_id:
            return False
        if worker_id == self.id or self.store.get(self._worker_key(worker_id)) is not None:
            return True
        return not self._judging()

    def _holds(self, holder: dict[str, Any]) -> bool:
        """Whether the lock `holder` (a lock's decoded value) is held by a running job."""
        worker_id = holder.get("worker")
        if worker_id == self.id:
            with self._running_lock:
                return holder.get("job") in self._running
        return self.alive(worker_id if isinstance(worker_id, str) else None)

    def recover(self) -> int:
        """Re-enqueue the journaled jobs of dead workers (and hand on jobs parked behind a lock
        nobody holds); how many journaled jobs."""
        self._hand_on_free()
        count = 0
        for key, value in list(self.store.items("run:")):
            entry = _loads(value)
            worker_id = entry.get("worker") if entry else None
            due = entry.get("due") if entry else None
            if isinstance(due, int | float) and time.time() < due + self.settings.lease_seconds:
                continue                                 # a retry scheduled on the queue, not yet overdue
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
                if due is not None:
                    log.warning("re-sending a retry that never came off the queue's schedule")
                    self._resend(message)
                    continue
                attempt = int(message.get("attempt", 1))
                if attempt >= self.settings.max_attempts:
                    log.error("job failed: its worker died on each of %d attempts", attempt,
                              extra={"dead_worker": worker_id})
                    metrics.job_failed(kind, "worker_died")
                    self._finish(message, "failed")
                    continue
                log.warning("re-running a job whose worker died or lost it", extra={"dead_worker": worker_id})
                self._resend({**message, "attempt": attempt + 1, "waits": 0})
        return count

    # -- running one job ------------------------------------------------------------------------

    def execute(self, message: Message) -> None:
        """Run one dequeued message (huey calls this; it never raises)."""
        job_id = str(message.get("id"))
        with _job_context(message, self.id):
            with self._running_lock:
                self._running.add(job_id)
            state = {"journaled": False}
            try:
                self._execute(message, state)
            except Exception as exc:  # noqa: BLE001 - the store failed around the job: it must not be lost
                if state["journaled"]:
                    log.warning("the store failed around the job; the journal runs it again: %s", _one_line(exc))
                else:
                    log.warning("the store failed before the job was journaled; it goes back on the queue: %s",
                                _one_line(exc))
                    self._resend(message, self._backoff(int(message.get("attempt", 1)), None))
            finally:
                with self._running_lock:
                    self._running.discard(job_id)

    def _resend(self, message: Message, delay: float = 0) -> None:
        """Put `message` on the queue; when the queue cannot be reached, keep it in memory and send
        it at the next heartbeat that reaches the queue."""
        try:
            self.queue.send(message, delay)
        except Exception as exc:  # noqa: BLE001
            log.warning("the queue cannot be reached; the job waits in this worker until it is back: %s",
                        _one_line(exc))
            with self._pending_lock:
                self._outbox.append(message)

    def _flush(self) -> None:
        """Send the outbox and finish the lock releases the store missed."""
        with self._pending_lock:
            outbox, self._outbox = self._outbox, []
            releases, self._releases = self._releases, []
        for i, message in enumerate(outbox):
            try:
                self.queue.send(message)
            except Exception:
                with self._pending_lock:
                    self._outbox.extend(outbox[i:])
                    self._releases.extend(releases)
                raise
        for repo, lock in releases:
            self._release(repo, lock)

    def _release(self, repo: str, lock: str) -> None:
        """Free this worker's lock of `repo` (compare and delete: only that very lock value) and
        hand the repository on; when the store fails, the maintenance thread tries again."""
        try:
            if not self.store.compare_and_set(f"lock:{repo}", lock, None):
                log.warning("the repository's lock was taken over while this job ran",
                            extra={"locked_repo": repo})
        except Exception as exc:  # noqa: BLE001 - retried at the next heartbeat; meanwhile the lock is stale
            log.warning("could not release the repository's lock, trying again at the next heartbeat: %s",
                        _one_line(exc), extra={"locked_repo": repo})
            with self._pending_lock:
                self._releases.append((repo, lock))
            return
        self._hand_on(repo)

    def _execute(self, message: Message, state: dict[str, bool]) -> None:
        """Run `message`; `state["journaled"]` once the journal holds it."""
        kind = str(message["kind"])
        job_id = str(message["id"])
        if self._store_ok_since is None or time.monotonic() - self._last_beat > self.settings.lease_seconds / 2:
            self.beat()                            # our own lease first: no job on a lapsed or unknown one
        if self.store.get(f"done:{job_id}") is not None:
            metrics.JOBS.labels(kind=kind, outcome="duplicate").inc()
            log.info("job already done, not run again")
            return
        # Journal first: from here until the job is done or safely back on the queue, a crash of this
        # process leaves `run:<id>` behind, which `recover()` re-enqueues.
        run_key = f"run:{job_id}"
        self.store.put(run_key, json.dumps({"worker": self.id, "started": time.time(), "message": message}))
        state["journaled"] = True
        if self._superseded(message):
            self._finish(message, "superseded")
            self.store.delete(run_key)
            return
        repo = message.get("repo")
        lock = self._acquire(str(repo), message) if repo else None
        if repo and lock is None:
            self._park(str(repo), message)
            self.store.delete(run_key)
            return
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
                if outcome == "retried":
                    return                         # journaled until the retry runs
            finished = True
        finally:
            if lock is not None:
                self._release(str(repo), lock)
        if finished:
            self.store.delete(run_key)             # after the hand-on: the queue never looks idle in between

    def _call(self, message: Message) -> tuple[str, bool]:
        """Run the handler: (outcome, final)."""
        kind = str(message["kind"])
        handler = self.registry.get(kind)
        if handler is None:
            log.error("no handler is registered for job kind %r", kind)
            metrics.job_failed(kind, "unhandled")
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
            if attempt >= self.settings.max_attempts or message.get("probe"):
                self._dead_letter(message, attempt, _one_line(exc))
                return "dead_letter", False
            delay = self._backoff(attempt, retry_after)
            log.warning("transient error, retrying in %.1fs (attempt %d of %d): %s", delay, attempt,
                        self.settings.max_attempts, _one_line(exc))
            retry = {**message, "attempt": attempt + 1, "waits": 0}
            # the retry stays journaled until it runs (journaled first: the retry overwrites the entry
            # when it starts): a scheduled task lost in a store outage is sent again by `recover()`
            # once it is overdue
            self.store.put(f"run:{message['id']}", json.dumps({"worker": self.id, "due": time.time() + delay,
                                                               "message": retry}))
            self.queue.send(retry, delay)
            return "retried", False
        except PrbotError as exc:
            log.warning("job failed: %s", exc)
            metrics.job_failed(kind, "permanent")
            return "failed", True
        except Exception:  # noqa: BLE001 - a bug: the traceback goes to the log, never to users
            log.exception("job raised an unexpected error")
            metrics.job_failed(kind, "bug")
            return "error", True
        finally:
            metrics.JOB_DURATION.labels(kind=kind).observe(time.monotonic() - start)
        log.info("job done", extra={"duration": round(time.monotonic() - start, 3)})
        self._succeeded[kind] = time.time()
        if message.get("probe"):
            log.info("a dead-lettered job ran again fine: the dead-letter set is queued again")
            self._probe_ok = time.time()
        return "success", True

    def _finish(self, message: Message, outcome: str) -> None:
        kind = str(message["kind"])
        self.store.put(f"done:{message['id']}", outcome, ttl=self._done_ttl(kind))
        if outcome == "superseded":
            log.info("job superseded by a newer one, dropped")
        if outcome in FAILED:
            self._mark_delivery_failed(message)
        metrics.JOBS.labels(kind=kind, outcome=outcome).inc()
        enqueued = message.get("enqueued_at")
        if isinstance(enqueued, int | float):
            metrics.JOB_LATENCY.labels(kind=kind).observe(max(0.0, time.time() - enqueued))

    def _done_ttl(self, kind: str) -> float:
        """How long a finished job's id is kept: routing jobs (which anyone with a registry token can
        cause by the thousand) only long enough to stop a re-enqueued copy, work jobs for the journal's time."""
        return self.settings.journal_ttl if priority_of(kind) > ROUTING else min(self.settings.routing_ttl,
                                                                                  self.settings.journal_ttl)

    def _mark_delivery_failed(self, message: Message) -> None:
        """A redelivery of this job's GitHub delivery runs again (see `prbot.service.webhooks`)."""
        delivery = message.get("delivery")
        if not isinstance(delivery, str) or not delivery:
            return
        key = f"delivery:{delivery}"
        try:
            if self.store.get(key) is not None:
                self.store.put(key, json.dumps({"state": "failed", "job": message["id"], "at": time.time()}),
                               ttl=self.settings.delivery_ttl)
        except Exception as exc:  # noqa: BLE001 - a redelivery is then a duplicate; the job's log says why
            log.warning("could not mark the delivery failed: %s", _one_line(exc))

    # -- the dead-letter set ----------------------------------------------------------------------

    def _dead_letter(self, message: Message, attempt: int, reason: str) -> None:
        clean = {k: v for k, v in message.items() if k != "probe"}
        entry = {"message": clean, "reason": reason, "since": time.time(), "attempts": attempt}
        self.store.put(f"dead:{message['id']}", json.dumps(entry), ttl=self.settings.journal_ttl)
        if message.get("probe"):
            log.warning("a dead-lettered job failed again, back to the dead-letter set: %s", reason)
        else:
            log.error("job failed after %d attempts: %s; kept in the dead-letter set, it runs again "
                      "once the dependency is back", attempt, reason)
        self._mark_delivery_failed(message)

    def _revive_dead(self) -> None:
        """Queue the dead letters again whose dependency is back: when a probe or a job of their
        kind succeeded after they died; probe with the oldest one every `dead_letter_retry` (once it
        has been dead that long)."""
        letters = []
        for key, raw in self.store.items("dead:"):
            entry = _loads(raw)
            message = entry.get("message") if entry else None
            if entry is None or not isinstance(message, dict) or "id" not in message:
                log.error("dropping an unreadable dead letter", extra={"key": key})
                self.store.compare_and_set(key, raw, None)
                continue
            letters.append((float(entry.get("since") or 0), key, raw, message))
        metrics.DEAD_LETTERS.set(len(letters))
        letters.sort(key=lambda item: item[0])
        rest = []
        for since, key, raw, message in letters:
            if self._probe_ok > since or self._succeeded.get(str(message.get("kind")), 0) > since:
                self._revive(key, raw, message, probe=False)
            elif time.time() - since >= self.settings.dead_letter_retry:
                rest.append((key, raw, message))
        if rest and self.store.put_if_absent("deadprobe", self.id, ttl=self.settings.dead_letter_retry):
            self._revive(*rest[0], probe=True)

    def _revive(self, key: str, raw: str, message: Message, *, probe: bool) -> None:
        if not self.store.compare_and_set(key, raw, None):
            return                                  # another worker revived it
        with _job_context(message, self.id):
            log.info("a dead-lettered job runs again%s", " as a probe" if probe else "")
            metrics.JOBS.labels(kind=str(message.get("kind")), outcome="revived").inc()
            self._resend({**message, "attempt": 1, "waits": 0, "probe": probe})

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
            if self._holds(holder):
                return None
            if self.store.compare_and_set(key, current, mine):
                log.warning("took over the lock of a dead worker or a missed release",
                            extra={"dead_worker": holder.get("worker")})
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
                self._resend(message)
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
            if not self._holds(holder):
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

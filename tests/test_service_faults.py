"""Store outages against the real processes: worker processes (`tests/service_worker_main.py`) and
the web app on a real `redis-server` that the tests stop (SIGSTOP/SIGCONT) or kill and restart on
the same port, with leases and timeouts shortened through settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from service_support import WEBHOOK_SECRET, fixture_bytes, free_port, github_headers, wait_for
from support import PROJECT

from prbot.service.app import create_app
from prbot.service.jobs import Job
from prbot.service.queue import Queue
from prbot.service.settings import Secret, Settings

WORKER_SCRIPT = PROJECT / "tests" / "service_worker_main.py"
TIMINGS = {"PRBOT_LEASE_SECONDS": "2", "PRBOT_HEARTBEAT_SECONDS": "0.25", "PRBOT_STORE_TIMEOUT": "0.3",
           "PRBOT_RETRY_BASE": "0.1", "PRBOT_RETRY_MAX": "0.5"}


class RedisProcess:
    """A private redis-server that a test can pause, resume, or kill and start again on its port."""

    def __init__(self, tmp: Path, *, persistent: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server; .ci/run does it)")
        self.binary, self.dir, self.port = binary, tmp, free_port()
        self.persistent = persistent
        tmp.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      *aof, "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {proc.returncode}")
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_for(up, 20, "redis-server to start")
        client.close()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis", persistent=True)
    yield server
    server.stop()


@contextmanager
def workers(settings: Settings, marks: Path, count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, **TIMINGS, "PRBOT_QUEUE_URL": settings.effective_queue_url,
           "PRBOT_DATA_DIR": str(settings.data_dir), "MARKS": str(marks), "PYTHONPATH": str(PROJECT)}
    procs = [subprocess.Popen([sys.executable, str(WORKER_SCRIPT)], env=env, stdout=subprocess.DEVNULL,
                              stderr=open(marks / f"worker-{i}.log", "wb")) for i in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def spans(marks: Path, name: str) -> list[tuple[float, float]]:
    """The (start, end) of each run of the `touch` job `name`, from its marks."""
    out, starts = [], {}
    for line in (marks / f"{name}.spans").read_text().splitlines():
        what, pid, when = line.split()
        if what == "start":
            starts[pid] = float(when)
        else:
            out.append((starts.pop(pid), float(when)))
    assert not starts, f"a run of {name} never ended"
    return out


def overlapping(intervals: list[tuple[float, float]]) -> bool:
    ordered = sorted(intervals)
    return any(b[0] < a[1] for a, b in zip(ordered, ordered[1:], strict=False))


def leftovers(queue: Queue) -> list[str]:
    return [key for prefix in ("lock:", "parked:", "run:") for key, _ in queue.store.items(prefix)]


def test_redis_stopped_mid_job_deadlocks_nothing_and_every_job_finishes(redis_proc: RedisProcess,
                                                                       tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    settings = Settings(queue_url=redis_proc.url, data_dir=tmp_path / "data")
    queue = Queue(settings)
    names = [f"{repo}-{n}" for repo in ("a", "b") for n in range(3)]
    for name in names:
        queue.enqueue(Job("touch", {"name": name, "seconds": 0.6}, repo=f"acme/{name[0]}"))
    with workers(settings, marks, 2):
        wait_for(lambda: len(list(marks.glob("*.spans"))) >= 2, 60, "jobs of both repositories to start")
        redis_proc.pause()                             # store writes, lock releases and heartbeats time out
        time.sleep(3)
        redis_proc.resume()
        wait_for(lambda: all((marks / f"{n}.done").exists() for n in names), 60,
                 "every job to finish after the store came back, without restarting a worker")
        wait_for(lambda: not leftovers(queue), 30, "no lock, parked job or journal entry left behind")
    for repo in ("a", "b"):
        runs = [span for name in names if name[0] == repo for span in spans(marks, name)]
        assert not overlapping(runs), f"two jobs of acme/{repo} ran at the same time"


def test_redis_away_longer_than_the_lease_runs_no_job_twice(redis_proc: RedisProcess, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    settings = Settings(queue_url=redis_proc.url, data_dir=tmp_path / "data")
    queue = Queue(settings)
    queue.enqueue(Job("slow", {"name": "bump"}))      # no repository lock to stop a second run
    with workers(settings, marks, 3):
        wait_for(lambda: (marks / "bump.started").exists(), 60, "the job to start")
        redis_proc.kill()                              # its append-only file keeps the data
        time.sleep(4)                                  # twice the lease: every heartbeat lapses
        redis_proc.start()
        time.sleep(4)                                  # long enough for another worker to take it over
        assert (marks / "bump.runs").read_text().count("\n") == 1, "the running job was started again"
        (marks / "release").write_text("go")
        wait_for(lambda: (marks / "bump.done").exists(), 30, "the job to finish")
        wait_for(lambda: not leftovers(queue), 30, "the lock and the journal entry to go")
    assert (marks / "bump.runs").read_text().count("\n") == 1


def test_redis_killed_and_restarted_mid_job_the_workers_carry_on(redis_proc: RedisProcess, tmp_path: Path) -> None:
    """A variant: Redis dies (kill -9; its append-only file keeps the data) and comes back on the
    same port while a job runs and another waits behind it: connections are refused, not slow."""
    marks = tmp_path / "marks"
    marks.mkdir()
    settings = Settings(queue_url=redis_proc.url, data_dir=tmp_path / "data")
    queue = Queue(settings)
    queue.enqueue(Job("touch", {"name": "first", "seconds": 1.5}, repo="acme/gitops"))
    queue.enqueue(Job("touch", {"name": "second", "seconds": 0.2}, repo="acme/gitops"))
    with workers(settings, marks, 2) as procs:
        wait_for(lambda: (marks / "first.spans").exists(), 60, "the first job to start")
        redis_proc.kill()
        time.sleep(1.5)
        redis_proc.start()
        wait_for(lambda: (marks / "first.done").exists() and (marks / "second.done").exists(), 60,
                 "both jobs to finish once Redis is back")
        wait_for(lambda: not leftovers(queue), 30, "nothing left behind")
        assert all(proc.poll() is None for proc in procs), "the workers recovered by themselves"
    assert not overlapping(spans(marks, "first") + spans(marks, "second"))


def test_a_dedupe_write_whose_answer_is_lost_lets_the_redelivery_run(redis_proc: RedisProcess,
                                                                      tmp_path: Path) -> None:
    settings = Settings(queue_url=redis_proc.url, data_dir=tmp_path / "data", store_timeout=0.3,
                        delivery_claim=0.5, github_webhook_secret=Secret(WEBHOOK_SECRET))
    client = create_app(settings, configure_logging=False).test_client()
    queue = Queue(settings)
    body = fixture_bytes("pull_request.opened.json")
    headers = github_headers(body, "pull_request", "d-lost")
    ready = client.get("/readyz").get_json()            # the web's connection to Redis is open: the only
    assert all("worker" in problem for problem in ready.get("failed", [])), ready    # problem is no worker
    redis_proc.pause()                                 # the write waits in Redis; the answer never comes
    try:
        refused = client.post("/webhooks/github", data=body, headers=headers)
    finally:
        redis_proc.resume()
    assert refused.status_code == 503
    wait_for(lambda: queue.store.get("delivery:d-lost") is not None, 10, "the timed-out write to land")
    assert queue.pending() == 0, "nothing was queued for the refused delivery"
    time.sleep(0.6)                                    # GitHub redelivers later than the claim lasts
    again = client.post("/webhooks/github", data=body, headers=headers)
    assert again.status_code == 202 and again.get_json()["status"] == "queued"
    assert queue.pending() == 1
    third = client.post("/webhooks/github", data=body, headers=headers)
    assert third.status_code == 200 and third.get_json()["status"] == "duplicate"
    assert queue.pending() == 1
    state = json.loads(queue.store.get("delivery:d-lost") or "{}")
    assert state["state"] == "queued" and state["job"] == again.get_json()["job"]

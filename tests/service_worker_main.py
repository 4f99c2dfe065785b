"""A queue worker process for tests: `slow` and `touch` jobs that mark their progress in $MARKS.

A `slow` job appends its pid to MARKS/<name>.runs, writes MARKS/<name>.started, waits until
MARKS/release exists (a test kills the process meanwhile), then writes MARKS/<name>.done.
A `touch` job writes to the store every 50 ms for `seconds`, appending ``start|end <pid> <time>``
lines to MARKS/<name>.spans, then writes MARKS/<name>.done.  Timings come from the environment
(PRBOT_LEASE_SECONDS …), shortened by default.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from prbot.service.jobs import Job, Registry, Runtime
from prbot.service.logs import setup_logging
from prbot.service.settings import Settings
from prbot.service.worker import Worker

MARKS = Path(os.environ["MARKS"])
registry = Registry()


@registry.register("slow")
def slow(rt: Runtime, job: Job) -> None:
    name = job.payload["name"]
    with open(MARKS / f"{name}.runs", "a") as f:
        f.write(f"{os.getpid()}\n")
    (MARKS / f"{name}.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not (MARKS / "release").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("never released")
        time.sleep(0.05)
    (MARKS / f"{name}.done").write_text(str(os.getpid()))


@registry.register("touch")
def touch(rt: Runtime, job: Job) -> None:
    name = job.payload["name"]
    spans = MARKS / f"{name}.spans"
    with open(spans, "a") as f:
        f.write(f"start {os.getpid()} {time.time()}\n")
    try:
        deadline = time.monotonic() + float(job.payload["seconds"])
        while time.monotonic() < deadline:
            rt.store.put(f"touch:{name}", str(time.time()))       # fails while the store is away
            time.sleep(0.05)
    finally:
        with open(spans, "a") as f:
            f.write(f"end {os.getpid()} {time.time()}\n")
    (MARKS / f"{name}.done").write_text(str(os.getpid()))


if __name__ == "__main__":
    setup_logging(sys.stderr)
    fast = {"PRBOT_LEASE_SECONDS": ("lease_seconds", 2.0), "PRBOT_HEARTBEAT_SECONDS": ("heartbeat_seconds", 0.25)}
    overrides = {name: value for env, (name, value) in fast.items() if env not in os.environ}
    settings = Settings.from_env(poll_max_delay=0.1, **overrides)
    Worker(settings, registry).run()

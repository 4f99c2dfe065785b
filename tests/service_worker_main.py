"""A queue worker process for tests: `slow` jobs that mark their progress in $MARKS.

A `slow` job appends its pid to MARKS/<name>.runs, writes MARKS/<name>.started, waits until
MARKS/release exists (a test kills the process meanwhile), then writes MARKS/<name>.done.
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


if __name__ == "__main__":
    setup_logging(sys.stderr)
    settings = Settings.from_env(lease_seconds=2.0, heartbeat_seconds=0.25, poll_max_delay=0.1)
    Worker(settings, registry).run()

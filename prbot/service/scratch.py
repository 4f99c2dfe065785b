"""Temporary directories of a worker process, and the sweep of those a killed worker left behind.

A worker process claims one directory under ``<data_dir>/tmp/`` and holds an exclusive `flock` on
its ``.owner`` file for as long as it lives; the process's temporary files (Python's `tempfile`:
``prbot-partial-*``, ``prbot-render-*``, ``prbot-jail-*``, ``prbot-worktree-*`` … and the tools it
runs, through ``TMPDIR``) go there.  The kernel drops the lock when the process dies however it
dies, so at start a worker removes every directory whose lock it can take: those of dead
processes, never a live one's (pid reuse does not fool a lock).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

log = logging.getLogger("prbot.worker")

OWNER = ".owner"


_claims: list[Scratch] = []            # this process's live claims, oldest first (several in-process workers)
_original: tuple[str | None, str | None] = (None, None)    # tempfile's default and TMPDIR before the first claim
_claims_lock = threading.Lock()


class Scratch:
    """A claimed temporary directory; `release()` removes it and gives `tempfile` back the default of
    this process's newest remaining claim, or the one it had before any."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def release(self) -> None:
        with _claims_lock:
            if self in _claims:
                _claims.remove(self)
            tempdir, env = (str(_claims[-1].path),) * 2 if _claims else _original
            tempfile.tempdir = tempdir
            if env is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = env
        shutil.rmtree(self.path, ignore_errors=True)
        os.close(self._fd)


def sweep(root: Path) -> list[Path]:
    """Remove the directories under `root` whose owner process is gone; the ones removed."""
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.is_symlink():
            continue
        try:
            fd = os.open(path / OWNER, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:                     # killed between mkdir and the lock, or being made now
            if time.time() - path.stat().st_mtime < 60:
                continue
            fd = -1
        except OSError:
            continue
        try:
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue                          # a live process holds it
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            if fd >= 0:
                os.close(fd)
    if removed:
        log.info("removed the temporary directories of dead workers", extra={"removed": [p.name for p in removed]})
    return removed


def claim(root: Path) -> Scratch:
    """Sweep `root`, then claim a fresh directory in it for this process and make it the default
    temporary directory (`tempfile` and the ``TMPDIR`` of child processes)."""
    sweep(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"w-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path.mkdir(mode=0o700)
    fd = os.open(path / OWNER, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    scratch = Scratch(path, fd)
    global _original
    with _claims_lock:
        if not _claims:
            _original = (tempfile.tempdir, os.environ.get("TMPDIR"))
        _claims.append(scratch)
        tempfile.tempdir = str(path)
        os.environ["TMPDIR"] = str(path)
    return scratch

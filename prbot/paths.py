"""Where prbot keeps files on the machine it runs on: the cache home, the render cache and the
pinned renderer binaries.  Every module that needs one of these directories asks here, so the
environment variables that move them are read in one place."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "PRBOT_CACHE_DIR"
TOOLS_DIR_ENV = "PRBOT_TOOLS_DIR"
REMOTE_SUBDIR = "remote"          # the remote inputs' part of the render cache


def cache_home() -> Path:
    """``$XDG_CACHE_HOME``, else ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME")
    return Path(base) if base else Path(os.path.expanduser("~")) / ".cache"


def render_cache_dir() -> Path:
    """The render cache: ``$PRBOT_CACHE_DIR``, else ``$XDG_CACHE_HOME/prbot/render``
    (default ``~/.cache/prbot/render``)."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return Path(explicit)
    return cache_home() / "prbot" / "render"


def remote_cache_dir() -> Path:
    """Remote inputs prbot fetched (git bases, files, charts), inside the render cache and counted
    with it against `PRBOT_CACHE_SIZE` (`prbot.diskcache`)."""
    return render_cache_dir() / REMOTE_SUBDIR


def pinned_tools_dir(toolset: str) -> Path:
    """Where `prbot tools install` puts the pinned tools of `toolset` by default."""
    return cache_home() / "prbot" / "tools" / toolset / "bin"


SCRATCH_DIR_ENV = "PRBOT_SCRATCH_DIR"
MEMORY_SCRATCH = "/dev/shm"
MEMORY_SCRATCH_FREE = 1 << 30     # a memory file system is used for scratch copies only with this much room


def scratch_dir() -> str | None:
    """Where a render's scratch copy of its closure is made: ``$PRBOT_SCRATCH_DIR``, else a memory
    file system (``/dev/shm``) when it is writable and has 1 GiB free, else None (the system's
    temporary directory).  Making and removing a few small files there costs a millisecond instead of
    tens on a disk mounted with online discard, and a plan stages one copy per render."""
    explicit = os.environ.get(SCRATCH_DIR_ENV)
    if explicit:
        return explicit
    return _memory_scratch()


_memory_checked: list[str | None] = []


def _memory_scratch() -> str | None:
    if not _memory_checked:
        found: str | None = None
        try:
            st = os.statvfs(MEMORY_SCRATCH)
            if (os.path.isdir(MEMORY_SCRATCH) and os.access(MEMORY_SCRATCH, os.W_OK | os.X_OK)
                    and st.f_bavail * st.f_frsize >= MEMORY_SCRATCH_FREE):
                found = MEMORY_SCRATCH
        except OSError:
            pass
        _memory_checked.append(found)
    return _memory_checked[0]

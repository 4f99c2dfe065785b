"""How much disk the cache holds, and eviction of what was used least recently.

One cache directory (`prbot.paths.render_cache_dir()`) holds two kinds of entries, counted together
against `PRBOT_CACHE_SIZE`:
- rendered targets: `<shard>/<ident>.json`, one file each (`prbot.render.RenderPool`);
- fetched remote inputs: `remote/<digest>/`, one directory each (`prbot.remote.Remotes`), whose
  `IDENT` file says what it holds and `SIZE` how many bytes it holds.

An entry's age is the modification time of its file (a render entry) or of its `IDENT` (a remote
one); a cache hit refreshes it, so over the size the least recently used entries of either kind go.
A remote entry a plan of this process is still reading is held (`hold`) and never evicted.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from collections import Counter
from pathlib import Path

from prbot.paths import REMOTE_SUBDIR

log = logging.getLogger("prbot.diskcache")

IDENT_FILE = "IDENT"
SIZE_FILE = "SIZE"


def tree_stats(root: Path) -> tuple[int, int]:
    """(bytes, files and directories) under `root`, links not followed."""
    total = count = 0
    for dirpath, dirs, names in os.walk(root):
        count += len(dirs) + len(names)
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total, count


class DiskUsage:
    """Bytes held by one cache directory, shared by everything in this process that writes there."""

    _all: dict[str, DiskUsage] = {}
    _all_lock = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.lock = threading.Lock()
        self.size: int | None = None
        self._held: Counter[str] = Counter()

    @classmethod
    def of(cls, directory: Path) -> DiskUsage:
        key = os.path.abspath(directory)
        with cls._all_lock:
            got = cls._all.get(key)
            if got is None:
                got = cls._all[key] = cls(Path(directory))
            return got

    # ---------------------------------------------------------------- entries in use
    def hold(self, entry: Path) -> None:
        """Keep the remote entry `entry` from eviction until `release`."""
        with self.lock:
            self._held[os.path.abspath(entry)] += 1

    def release(self, entry: Path) -> None:
        with self.lock:
            key = os.path.abspath(entry)
            self._held[key] -= 1
            if self._held[key] <= 0:
                del self._held[key]

    # ---------------------------------------------------------------- what is there
    def _entries(self) -> list[tuple[float, int, str, bool]]:
        """(age, bytes, path, is a remote directory) of every finished entry."""
        found: list[tuple[float, int, str, bool]] = []
        try:
            shards = list(os.scandir(self.directory))
        except OSError:
            return found
        for shard in shards:
            if not shard.is_dir(follow_symlinks=False):
                continue
            if shard.name == REMOTE_SUBDIR:
                found.extend(self._remote_entries(Path(shard.path)))
                continue
            try:
                with os.scandir(shard.path) as it:
                    for entry in it:
                        if entry.name.endswith(".json") and not entry.name.startswith(".tmp-"):
                            try:
                                st = entry.stat(follow_symlinks=False)
                            except OSError:
                                continue
                            found.append((st.st_mtime, st.st_size, entry.path, False))
            except OSError:
                continue
        return found

    @staticmethod
    def _remote_entries(directory: Path) -> list[tuple[float, int, str, bool]]:
        found: list[tuple[float, int, str, bool]] = []
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return found
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            try:
                age = os.stat(path / IDENT_FILE).st_mtime
            except OSError:
                continue                                   # being written
            try:
                size = int((path / SIZE_FILE).read_text().strip())
            except (OSError, ValueError):
                size = tree_stats(path)[0]
            found.append((age, size, entry.path, True))
        return found

    # ---------------------------------------------------------------- accounting
    def added(self, nbytes: int, limit: int) -> None:
        """Account for a new entry; evict the oldest entries when over `limit` (down to 90%)."""
        with self.lock:
            if self.size is None:
                self.size = sum(size for _, size, _, _ in self._entries())
            else:
                self.size += nbytes
            if self.size <= limit:
                return
            entries = sorted(self._entries())
            self.size = sum(size for _, size, _, _ in entries)
            evicted = 0
            for _, size, path, remote in entries:
                if self.size <= limit * 9 // 10:
                    break
                if remote and os.path.abspath(path) in self._held:
                    continue
                if not self._evict(path, remote):
                    continue
                self.size -= size
                evicted += 1
            log.info("cache %s over %d bytes: %d least recently used entries evicted", self.directory, limit, evicted)

    @staticmethod
    def _evict(path: str, remote: bool) -> bool:
        try:
            if not remote:
                os.unlink(path)
                return True
            # out of sight at once (a reader finds no IDENT and fetches again), then removed
            gone = os.path.join(os.path.dirname(path), f".evicted-{uuid.uuid4().hex}")
            os.rename(path, gone)
        except OSError:
            return False
        shutil.rmtree(gone, ignore_errors=True)
        return True

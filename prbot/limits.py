"""Operator limits on what one render and one plan may cost (a PR's files are untrusted input).

Every limit is set by the operator through the environment, never by a pull request; the defaults
fit a 2-core, 4 GB worker:

| variable                | default | bounds                                                    |
| ----------------------- | ------- | --------------------------------------------------------- |
| `PRBOT_RENDER_MEMORY`   | 1Gi     | memory of one render's process tree (RLIMIT_DATA + RSS watch) |
| `PRBOT_RENDER_TIMEOUT`  | 60s     | wall-clock time of one render                             |
| `PRBOT_RENDER_OUTPUT`   | 50M     | bytes one render may print (plain targets: bytes read)    |
| `PRBOT_RENDER_MAX_OBJECTS` | 5000 | objects one target may render (refused before a full parse) |
| `PRBOT_PLAN_BUDGET`     | 10m     | wall-clock time of one plan: rendering, parsing, diffing, validating |
| `PRBOT_COMMENT_PARTS`   | 10      | comments one plan may post; the rest is summarised        |
| `PRBOT_CACHE_SIZE`      | 1Gi     | disk cache (renders and fetched remotes), least recently used entries evicted |
| `PRBOT_REMOTE_TIMEOUT`  | 60s     | wall-clock time of one remote fetch (inside the plan budget) |
| `PRBOT_REMOTE_SIZE`     | 50M     | bytes one remote input may download or unpack to          |
| `PRBOT_REMOTE_FILES`    | 10000   | files and directories one remote input may unpack to      |
| `PRBOT_DRYRUN_REQUESTS` | 1000    | API requests one plan's server-side dry-run may send      |
| `PRBOT_TREE_SIZE`       | 1Gi     | bytes of files one plan exports from one revision          |

Sizes take a plain number of bytes or a suffix (`512Mi`, `1G`, `1GiB`, `50MB`); durations seconds or
`s`/`m`/`h` (`90`, `90s`, `10m`).  A value that cannot be read is a `PrbotError` naming the variable.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from prbot.errors import PlanBudgetError, PrbotError

T = TypeVar("T")

KIB, MIB, GIB = 1024, 1024 ** 2, 1024 ** 3

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}


def parse_size(text: str) -> int:
    """Bytes of `512Mi`, `1G`, `1GiB`, `50MB` or `1048576`; ValueError when it is none of those."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 512Mi, 1G, 50MB)")
    base = 1024 if m.group(3) or m.group(2).upper() == "" else 1000
    return int(float(m.group(1)) * base ** _POWERS[m.group(2).upper()])


def parse_duration(text: str) -> float:
    """Seconds of `90`, `90s`, `10m`, `1h` or `500ms`; ValueError when it is none of those."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 60, 90s, 10m)")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[(m.group(2) or "s").lower()]
    return float(m.group(1)) * scale


def format_size(n: int) -> str:
    """`1 GiB`, `256 MiB`, `50 MB`: as the operator would have written it."""
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    for unit, size in (("GB", 1000 ** 3), ("MB", 1000 ** 2), ("kB", 1000)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    if n >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n} bytes"


def format_duration(seconds: float) -> str:
    """`60s`, `10m`, `1m30s`, `1.5s`."""
    if seconds >= 60 and seconds == int(seconds):
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class Limits:
    """What one render and one plan may use.  `from_env()` reads the operator's settings."""

    memory: int = GIB                 # bytes, one render's process tree
    timeout: float = 60.0             # seconds, one render
    output: int = 50 * 1000 ** 2      # bytes, one render's output
    max_objects: int = 5000           # objects one target may render
    plan_budget: float = 600.0        # seconds, one plan: rendering, parsing, diffing, validating
    comment_parts: int = 10           # comments per plan
    cache_size: int = GIB             # bytes of the disk cache (renders and fetched remotes)
    remote_timeout: float = 60.0      # seconds, one remote fetch in all
    remote_size: int = 50 * 1000 ** 2  # bytes one remote input downloads or unpacks to
    remote_files: int = 10_000        # files and directories one remote input unpacks to
    dryrun_requests: int = 1000       # API requests of one plan's dry-run (all targets, all clusters)
    tree_size: int = GIB              # bytes of files exported from one revision

    VARIABLES = {"memory": "PRBOT_RENDER_MEMORY", "timeout": "PRBOT_RENDER_TIMEOUT",
                 "output": "PRBOT_RENDER_OUTPUT", "max_objects": "PRBOT_RENDER_MAX_OBJECTS",
                 "plan_budget": "PRBOT_PLAN_BUDGET",
                 "comment_parts": "PRBOT_COMMENT_PARTS", "cache_size": "PRBOT_CACHE_SIZE",
                 "remote_timeout": "PRBOT_REMOTE_TIMEOUT", "remote_size": "PRBOT_REMOTE_SIZE",
                 "remote_files": "PRBOT_REMOTE_FILES",
                 "dryrun_requests": "PRBOT_DRYRUN_REQUESTS", "tree_size": "PRBOT_TREE_SIZE"}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ
        values: dict[str, int | float] = {}
        for field, variable in cls.VARIABLES.items():
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            try:
                if field in ("timeout", "plan_budget", "remote_timeout"):
                    value: int | float = parse_duration(raw)
                elif field in ("comment_parts", "remote_files", "dryrun_requests", "max_objects"):
                    value = int(raw)
                else:
                    value = parse_size(raw)
            except ValueError as exc:
                raise PrbotError(f"{variable}: {exc}") from None
            if value <= 0:
                raise PrbotError(f"{variable}: must be more than zero, got {raw!r}")
            values[field] = value
        return cls(**values)  # type: ignore[arg-type]

    def describe(self, field: str) -> str:
        """`the 1 GiB memory limit (PRBOT_RENDER_MEMORY)`: how a message names a limit."""
        variable = self.VARIABLES[field]
        value = getattr(self, field)
        shown = {"memory": lambda: f"{format_size(value)} memory",
                 "timeout": lambda: f"{format_duration(value)} time",
                 "output": lambda: f"{format_size(value)} output",
                 "plan_budget": lambda: f"{format_duration(value)} plan time budget",
                 "comment_parts": lambda: f"{value}-comment",
                 "max_objects": lambda: f"{value:,}-object",
                 "cache_size": lambda: f"{format_size(value)} cache size",
                 "remote_timeout": lambda: f"{format_duration(value)} remote fetch time",
                 "remote_size": lambda: f"{format_size(value)} remote size",
                 "remote_files": lambda: f"{value}-file remote",
                 "dryrun_requests": lambda: f"{value}-request dry-run",
                 "tree_size": lambda: f"{format_size(value)} tree size"}[field]()
        suffix = "" if field == "plan_budget" else " limit"
        return f"the {shown}{suffix} ({variable})"


def in_time(items: Iterable[T], deadline: float | None, stage: str, *, every: int = 50) -> Iterator[T]:
    """`items`, one by one, until `deadline` (time.monotonic()) passes: then PlanBudgetError naming
    `stage`.  The clock is read before the first item and after every `every` items."""
    if deadline is None:
        yield from items
        return
    for count, item in enumerate(items):
        if count % every == 0 and time.monotonic() >= deadline:
            raise PlanBudgetError(stage)
        yield item

"""Where a plan's time goes: a per-stage clock, always on and cheap (two `perf_counter` calls and a
lock per stage entered).

A plan (`prbot.plan.make_plan`) opens a `StageClock` with `measuring`; the code of each stage says
which one it is with `timed(stage)`: git exports, target discovery, closures, staging a closure's
copy, the renderer process, parsing its output, diffing, validating (the CLI adds the report).
Stages are counted **exclusively**, per thread: entering a stage pauses the one the thread was in,
so the stages of one thread never overlap and their seconds add up.  Threads a plan starts carry
the clock when their work is submitted through `carry` (the render pool's, the git helpers').
Seconds are thread-seconds: with two render workers, ten wall seconds of rendering count twenty.
Outside `measuring`, `timed` costs one context-variable read.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["OWN_STAGES", "STAGES", "StageClock", "carry", "clocked", "current", "measuring", "timed"]

STAGES = ("export", "discovery", "closure", "staging", "render", "parse", "diff", "validation", "report")
"""Every stage, in the order a plan meets them.  `render` is the renderer process (the jail's start
counted in it); everything else is prbot's own work."""
OWN_STAGES = tuple(s for s in STAGES if s != "render")

T = TypeVar("T")
_CLOCK: contextvars.ContextVar[StageClock | None] = contextvars.ContextVar("prbot_stage_clock", default=None)


class StageClock:
    """Thread-seconds and entries per stage, added from any thread."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self.counts: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._lock = threading.Lock()
        self._local = threading.local()         # per thread: [[stage, resumed at], …], innermost last

    def add(self, stage: str, seconds: float, count: int = 0) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
            self.counts[stage] = self.counts.get(stage, 0) + count

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the time inside as `name` (the enclosing stage of this thread paused meanwhile).
        Entering the stage the thread is already in counts one more entry and nothing else."""
        stack: list[list[Any]] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        if stack and stack[-1][0] == name:
            self.add(name, 0.0, 1)
            yield
            return
        now = time.perf_counter()
        if stack:
            outer = stack[-1]
            self.add(outer[0], now - outer[1])
        frame: list[Any] = [name, now]
        stack.append(frame)
        try:
            yield
        finally:
            now = time.perf_counter()
            stack.pop()
            self.add(name, now - float(frame[1]), 1)
            if stack:
                stack[-1][1] = now

    def own(self) -> float:
        """Seconds of prbot's own stages (all but the renderer processes)."""
        return sum(self.seconds.get(s, 0.0) for s in OWN_STAGES)

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return {s: round(v, 4) for s, v in self.seconds.items()}

    def table(self) -> str:
        """One line per stage: seconds and entries, then prbot's own share of the render time."""
        lines = [f"{s:<11}{self.seconds.get(s, 0.0):8.2f}s" + (f" {n:6d}x" if (n := self.counts.get(s, 0)) else "")
                 for s in STAGES]
        render = self.seconds.get("render", 0.0)
        share = f"{self.own() / render:.0%}" if render else "-"
        lines.append(f"{'own/render':<11}{share:>9}")
        return "\n".join(lines)


def current() -> StageClock | None:
    """The clock of the plan this code runs for, if one is measuring."""
    return _CLOCK.get()


@contextlib.contextmanager
def measuring(clock: StageClock) -> Iterator[StageClock]:
    """Make `clock` the current one for this thread (and for work it `carry`s to others)."""
    token = _CLOCK.set(clock)
    try:
        yield clock
    finally:
        _CLOCK.reset(token)


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Count the time inside against `stage` on the current clock (nothing when none measures)."""
    clock = _CLOCK.get()
    if clock is None:
        yield
        return
    with clock.stage(stage):
        yield


def clocked(stage: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """A function decorated with this counts as `stage` (see `timed`)."""
    def wrap(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> T:
            clock = _CLOCK.get()
            if clock is None:
                return fn(*args, **kwargs)
            with clock.stage(stage):
                return fn(*args, **kwargs)
        return run
    return wrap


def carry(fn: Callable[..., T]) -> Callable[..., T]:
    """`fn` bound to the current clock, for another thread (the clock is a context variable, which
    threads of a pool do not inherit)."""
    clock = _CLOCK.get()
    if clock is None:
        return fn

    def run(*args: Any, **kwargs: Any) -> T:
        with measuring(clock):
            return fn(*args, **kwargs)
    return run

"""Jobs, the handlers that run them, and what a handler receives.

A *job* is one unit of queued work (`Job`): its `kind` picks the handler, its `payload` is
JSON-serialisable data.  Handlers are registered by kind::

    from prbot.service.jobs import register

    @register("github_event")
    def on_github_event(rt: Runtime, job: Job) -> None:
        ...
        rt.enqueue(Job("plan", {...}, repo="acme/gitops", supersede="plan:acme/gitops#7", pr=7))

Semantics the worker guarantees (`prbot.service.worker`):
- jobs with the same `repo` run one at a time, across threads, processes and replicas;
- of the jobs sharing a `supersede` key only the newest enqueued runs; older ones are dropped
  when they come up (also a retry of an older one);
- a handler raising `prbot.errors.TransientError` (or a connection error) is run again later
  (exponential backoff, `retry_after` honoured) up to `Settings.max_attempts` runs; a
  `PrbotError` fails the job for good (logged); anything else is logged with its traceback;
- a job whose worker died mid-run is run again by another worker;
- handlers may run again after partial progress: write them to converge (find before create).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    from prbot.service.settings import Settings
    from prbot.service.store import KeyValueStore

T = TypeVar("T")


@dataclass(frozen=True)
class Job:
    kind: str                          # "github_event", "registry_push", later "plan", "bump", "command" …
    payload: Mapping[str, Any]         # JSON-serialisable
    repo: str | None = None            # "owner/name": jobs with the same repo run ONE AT A TIME
    supersede: str | None = None       # jobs sharing this key: only the newest enqueued one runs
    delivery: str | None = None        # for logs
    pr: int | None = None              # for logs
    enqueued_at: float | None = None   # set by the queue: when the job was first queued (wall clock)


@dataclass
class Runtime:
    """What a handler gets besides its job: settings, the store, `enqueue`, metrics, services.

    `service(name, factory)` builds a shared object once per worker process (thread-safe) and
    returns it afterwards, e.g. the GitHub client::

        gh = rt.service("github", lambda rt: GitHubApp(rt.settings, on_response=rt.record_github_response))
    """

    settings: Settings
    store: KeyValueStore
    enqueue_fn: Callable[[Job, float], str]
    record_github_response: Callable[..., None]
    services: dict[str, Any] = field(default_factory=dict)
    _services_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def enqueue(self, job: Job, delay: float = 0) -> str:
        """Queue `job` (after `delay` seconds); its id."""
        return self.enqueue_fn(job, delay)

    def service(self, name: str, factory: Callable[[Runtime], T]) -> T:
        with self._services_lock:
            if name not in self.services:
                self.services[name] = factory(self)
            return self.services[name]  # type: ignore[no-any-return]


Handler = Callable[[Runtime, Job], None]


class Registry:
    """Handlers by job kind."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = dict(handlers or {})
        self._lock = threading.Lock()

    @overload
    def register(self, kind: str) -> Callable[[Handler], Handler]: ...
    @overload
    def register(self, kind: str, fn: Handler) -> Handler: ...

    def register(self, kind: str, fn: Handler | None = None) -> Handler | Callable[[Handler], Handler]:
        """Run `fn` for jobs of `kind` (replacing any earlier handler); usable as a decorator."""
        if not kind or not isinstance(kind, str):
            raise ValueError("a job kind is a non-empty string")

        def add(f: Handler) -> Handler:
            with self._lock:
                self._handlers[kind] = f
            return f

        return add(fn) if fn is not None else add

    def unregister(self, kind: str) -> None:
        with self._lock:
            self._handlers.pop(kind, None)

    def get(self, kind: str) -> Handler | None:
        with self._lock:
            return self._handlers.get(kind)

    def kinds(self) -> list[str]:
        with self._lock:
            return sorted(self._handlers)

    def __iter__(self) -> Iterator[str]:
        return iter(self.kinds())


REGISTRY = Registry()
"""The process-wide registry `prbot serve` / `prbot worker` use (filled by `prbot.service.handlers`)."""


@overload
def register(kind: str) -> Callable[[Handler], Handler]: ...
@overload
def register(kind: str, fn: Handler) -> Handler: ...


def register(kind: str, fn: Handler | None = None) -> Handler | Callable[[Handler], Handler]:
    """Register `fn` for `kind` in the process-wide `REGISTRY` (decorator or call)."""
    return REGISTRY.register(kind, fn) if fn is not None else REGISTRY.register(kind)

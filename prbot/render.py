"""Rendering targets: `render_target` for one, and `RenderPool` for many — parallel, memoised, cached.

The renderers themselves live in `prbot.renderers` (one module each: kustomize, helm, plain), the
sandbox that runs their binaries in `prbot.sandbox`, the limits in `prbot.limits`.  Every render:
- is refused before it starts when the target reads a remote base, chart or file (`remote base …
  cannot be resolved offline`) or a path outside the repository (`..`, absolute, symbolic links,
  the target directory itself behind a link);
- runs on a copy of its input closure alone, kustomize with the load restrictor
  (`LoadRestrictionsRootOnly`) and without alpha/exec plugins, Helm only on local charts, with
  `--include-crds --skip-tests` (what Argo CD and Flux apply);
- is sandboxed (scrubbed environment, no network, no shell) and bounded: memory, time and output per
  render, and the plan's time budget (`prbot.limits`).  A render over its own limit fails with a
  message naming the limit, and the pool remembers that for the same inputs.

Error messages are one line: the renderer's own message, with the scratch directories removed so
users see repo-relative paths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from prbot.diskcache import DiskUsage
from prbot.errors import RemoteError, RenderError
from prbot.expand import EXPANDERS, ExpandContext, Rendered, expand_objects, normalise_repository_url
from prbot.expand.flux_kustomization import deployed
from prbot.limits import Limits
from prbot.model import Target
from prbot.paths import render_cache_dir
from prbot.remote import Remotes, Vendored, parse_ref, vendor
from prbot.renderers import get_renderer
from prbot.renderers.base import RenderJob
from prbot.renderers.closure import Closure, ClosureCache, input_closure
from prbot.timing import carry
from prbot.tools import which
from prbot.yamlio import YAML_LOADER

__all__ = ["CACHE_FORMAT", "RenderPool", "RenderResult", "Rendered", "render_target"]

DEFAULT_TIMEOUT = Limits.timeout
CACHE_FORMAT = "prbot-render-v3"
REMEMBERED_LIMITS = ("memory", "timeout", "output")     # a render over these fails again for the same inputs
log = logging.getLogger("prbot.render")


# --------------------------------------------------------------------------------------------
# One target
# --------------------------------------------------------------------------------------------

def refuse_unsafe(target: Target, closure: Closure, remotes: Mapping[str, Any] | None = None) -> None:
    """RenderError when the closure reads outside the repository or something remote that was not
    fetched for it (see `prbot.remote`)."""
    if closure.outside:
        raise RenderError(f"refused: {closure.outside[0]}")
    missing = [r for r in closure.remote if r not in (remotes or {})]
    if missing:
        what = "chart" if target.renderer == "helm" else "base"
        raise RenderError(f"remote {what} {missing[0]} cannot be resolved offline: "
                          "vendor it into the repository")


def render_target(root: Path, target: Target, *, timeout: float | None = None, kube_version: str | None = None,
                  closure: Closure | None = None, limits: Limits | None = None,
                  deadline: float | None = None, remotes: Mapping[str, Any] | None = None,
                  remote_problems: Mapping[str, str] | None = None,
                  repository_urls: Sequence[str] = (), expand: bool = True) -> Rendered:
    """Render one target of the repository checked out at `root` into a list of objects, expanded
    (`prbot.expand`: a HelmRelease's chart, …; `Rendered.origins` and `.not_expanded` say what came
    from where and what could not be).

    `kube_version` (e.g. "1.33") is passed to Helm as Capabilities.KubeVersion; `closure` (from
    `prbot.renderers.closure`) saves recomputing it; `limits` default to the operator's
    (`Limits.from_env()`), `timeout` overrides their render timeout; `deadline` (time.monotonic())
    is when the plan's budget runs out; `remotes` the fetched remote references the closure reads
    (`prbot.remote.Vendored`, by reference), the closure's optional ones included (those not
    fetched: `remote_problems` says why); `repository_urls` the normalised URLs meaning "this
    repository" (`prbot.expand.normalise_repository_url`); `expand=False` returns the target's own
    objects only — what prbot itself applies (a preview, a direct-apply sync), as the cluster's Flux
    or Argo CD expands them.  Raises RenderError with a one-line message.
    """
    root = Path(root)
    limits = limits or Limits.from_env()
    if timeout is not None:
        limits = dataclasses.replace(limits, timeout=timeout)
    if closure is None:
        closure = input_closure(root, target)
    refuse_unsafe(target, closure, remotes)
    renderer = get_renderer(target.renderer)
    objects = renderer.render(RenderJob(root=root, target=target, closure=closure, limits=limits,
                                        kube_version=kube_version, deadline=deadline,
                                        remotes={r: remotes[r] for r in closure.remote} if closure.remote and remotes
                                        else None))
    if target.flux is not None:         # sync.flux.root: as the Flux Kustomization deploying it applies it
        objects = deployed(objects, root, target, closure, limits, kube_version, deadline)
    if not expand or not any((api_group(o.get("apiVersion")), o.get("kind")) in EXPANDERS for o in objects):
        return Rendered(objects)
    optional = {r: remotes[r] for r in closure.optional_remote if remotes and r in remotes}
    problems = {r: (remote_problems or {}).get(r) or f"{r} is not allowed by render.remote in .prbot.yml"
                for r in closure.optional_remote if r not in optional}
    ctx = ExpandContext(root=root, target=target, closure=closure, limits=limits, kube_version=kube_version,
                        deadline=deadline, remotes=optional, remote_problems=problems,
                        repository_urls=tuple(repository_urls), cache=closure._cache)
    return expand_objects(objects, ctx, EXPANDERS)


def _this_repository(ref: str, repository_urls: Sequence[str]) -> bool:
    """Whether an optional remote reference is a git path of the repository planned (an expander
    declares every GitRepository's, not knowing which URL is this repository)."""
    parsed = parse_ref(ref)
    return parsed.kind == "git" and normalise_repository_url(parsed.repo) in repository_urls


def api_group(api_version: Any) -> str:
    return api_version.rsplit("/", 1)[0] if isinstance(api_version, str) and "/" in api_version else ""


# --------------------------------------------------------------------------------------------
# The pool: parallel, memoised, cached on disk
# --------------------------------------------------------------------------------------------

RenderResult = Rendered | RenderError


def _tool_fingerprint(renderer: str) -> str:
    """Which binaries render this kind of target, so a tool upgrade misses the disk cache."""
    parts = [renderer, YAML_LOADER]
    for name in get_renderer(renderer).fingerprint_tools():
        path = which(name)
        if path is None:
            continue
        try:
            st = os.stat(path)
            parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{path}:?")
    return "|".join(parts)


def cache_extra(target: Target) -> str:
    """Everything besides file contents that changes a target's rendering: with the digest of its
    input closure (`prbot.renderers.closure.ClosureCache.digest`) the cache key a `RenderPool` wants."""
    return json.dumps([target.renderer, target.path, target.namespace, target.chart, list(target.values),
                       f"{target.app}-{target.env}"]
                      + ([target.load_restrictor] if target.load_restrictor != "root_only" else [])
                      + ([list(target.flux)] if target.flux else []))


class RenderPool:
    """Renders many targets in parallel and never renders the same cache key twice.

    Results are memoised in memory (per pool) and on disk (`cache_dir`, one JSON file per key,
    written atomically, mode 0600 — rendered Secrets are in there), the disk cache bounded by
    `limits.cache_size` with the least recently used entries evicted.  The caller's cache key must
    cover every input (see `prbot.renderers.closure.closure_digest`); the pool adds the Kubernetes
    version it passes and a fingerprint of the renderer binaries.  Deterministic render errors are
    memoised; a render that went over its own memory, time or output limit is also remembered on
    disk (with the limit it had: a more generous limit renders again); transient errors (a missing
    binary, the plan's time budget running out) are not memoised.
    """

    def __init__(self, *, workers: int | None = None, timeout: float | None = None,
                 cache_dir: Path | str | None = None, disk_cache: bool = True,
                 kube_versions: Mapping[str, str] | None = None, memo_size: int = 4096,
                 limits: Limits | None = None) -> None:
        # one more render than cores: each spends part of its time starting (exec, the jail's
        # namespaces) without using a core (measured on 2 cores: 90 targets x 2 sides in 9.5 s, not 11.3 s)
        self.workers = max(1, workers or (os.cpu_count() or 1) + 1)
        self.limits = limits or Limits.from_env()
        if timeout is not None:
            self.limits = dataclasses.replace(self.limits, timeout=timeout)
        self.timeout = self.limits.timeout
        self.cache_dir = Path(cache_dir) if cache_dir is not None else render_cache_dir()
        self.disk_cache = disk_cache
        self.kube_versions = dict(kube_versions or {})
        self.memo_size = memo_size
        self.renders = 0            # renderer runs (misses of both caches)
        self.memo_hits = 0
        self.disk_hits = 0
        self._memo: OrderedDict[str, str | RenderError] = OrderedDict()
        self._inflight: dict[str, Future[str | RenderError]] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- public
    def render(self, root: Path, target: Target, cache_key: str) -> Rendered:
        """One target; raises RenderError."""
        got = self.render_many([(root, target, cache_key)])[cache_key]
        if isinstance(got, RenderError):
            raise got
        return got

    def render_many(self, requests: Sequence[tuple[Path, Target, str]], *, deadline: float | None = None,
                    remotes: Remotes | None = None,
                    ready: Callable[[str, RenderResult], None] | None = None,
                    repository_urls: Sequence[str] = ()) -> dict[str, RenderResult]:
        """Render every request, keyed by cache key: objects, or the RenderError of that target.

        Requests sharing a cache key are rendered once (the first request's root is used).  A
        render that has not started by `deadline` (time.monotonic(): when the plan's time budget
        runs out) fails naming the budget; one running then is stopped.  `remotes` fetches the
        remote references a plan allows (`prbot.remote`); what they hold is part of the cache
        identity, so a moved branch renders again.  `ready(cache key, result)` is called in the
        caller's thread as each result comes (cached ones first), while the others still render:
        a plan compares a target as soon as it can, inside its time budget.  The closure's optional
        remote references (what expansions read) are fetched when `remotes` allows them; the others
        are named in the expansions they stop.  `repository_urls`: the normalised URLs meaning "this
        repository" to expansions (part of the cache identity).
        """
        results: dict[str, RenderResult] = {}
        waits: dict[str, Future[str | RenderError]] = {}
        fingerprints: dict[str, str] = {}
        closures = ClosureCache()
        pending: dict[str, tuple[Path, Target]] = {}
        for root, target, key in requests:
            pending.setdefault(key, (Path(root), target))
        if not pending:
            return results
        with ThreadPoolExecutor(max_workers=min(self.workers, len(pending)),
                                thread_name_prefix="prbot-render") as executor:
            for key, (root, target) in pending.items():
                fp = fingerprints.get(target.renderer)
                if fp is None:
                    fp = fingerprints[target.renderer] = _tool_fingerprint(target.renderer)
                kube = self.kube_versions.get(target.env)
                fetched: dict[str, Vendored] | None = None
                closure = closures.closure(root, target)
                problems: dict[str, str] = {}
                if remotes is not None:
                    if closure.remote:
                        try:
                            fetched = {ref: vendor(remotes, ref, deadline=deadline) for ref in closure.remote}
                        except RemoteError as exc:
                            results[key] = RenderError(str(exc))
                            continue
                for ref in closure.optional_remote:       # an expansion's: never skips the target
                    if _this_repository(ref, repository_urls):
                        continue                # read from the tree planned, never fetched
                    if remotes is None or not remotes.allowed(ref):
                        problems[ref] = f"{ref} is not allowed by render.remote in .prbot.yml"
                        continue
                    try:
                        fetched = fetched or {}
                        fetched[ref] = vendor(remotes, ref, deadline=deadline)
                    except RemoteError as exc:
                        problems[ref] = str(exc)
                extra = ",".join(f"{r}={v.ident}" for r, v in sorted(fetched.items())) if fetched else ""
                if problems or repository_urls:     # what expansions could not fetch, what is "this repository"
                    extra += json.dumps([sorted(problems.items()), sorted(repository_urls)])
                ident = hashlib.sha256(f"{CACHE_FORMAT}\0{fp}\0{kube or ''}\0{key}\0{extra}".encode()).hexdigest()
                with self._lock:
                    hit = self._memo.get(ident)
                    if hit is not None:
                        self._memo.move_to_end(ident)
                        self.memo_hits += 1
                    else:
                        fut = self._inflight.get(ident)
                        if fut is None:
                            fut = executor.submit(carry(self._compute), root, target, key, ident, kube, closures,
                                                  deadline, fetched, problems, tuple(repository_urls))
                            self._inflight[ident] = fut
                        waits[key] = fut
                if hit is not None:
                    results[key] = _decode(hit)
            if ready is not None:
                for key, got in list(results.items()):
                    ready(key, got)
            keys_of: dict[Future[str | RenderError], list[str]] = {}
            for key, fut in waits.items():
                keys_of.setdefault(fut, []).append(key)
            for fut in as_completed(keys_of):
                value = fut.result()
                for key in keys_of[fut]:
                    results[key] = _decode(value)
                    if ready is not None:
                        ready(key, results[key])
        return {key: results[key] for key in pending}

    # ---------------------------------------------------------------- internals
    def _compute(self, root: Path, target: Target, key: str, ident: str, kube: str | None,
                 closures: ClosureCache, deadline: float | None,
                 fetched: Mapping[str, Vendored] | None = None, problems: Mapping[str, str] | None = None,
                 repository_urls: tuple[str, ...] = ()) -> str | RenderError:
        result: str | RenderError | None = None
        try:
            result = self._disk_read(ident, key)
            if result is not None:
                with self._lock:
                    self.disk_hits += 1
                return result
            if deadline is not None and time.monotonic() >= deadline:
                result = RenderError(f"{target.path or '.'}: not rendered: "
                                     f"{self.limits.describe('plan_budget')} was used up by other targets",
                                     transient=True, limit="plan_budget")
                return result
            with self._lock:
                self.renders += 1
            try:
                objects = render_target(root, target, kube_version=kube, limits=self.limits,
                                        closure=closures.closure(root, target), deadline=deadline,
                                        remotes=fetched, remote_problems=problems, repository_urls=repository_urls)
                result = objects.encode()
            except RenderError as exc:
                result = exc
            except RecursionError as exc:
                result = RenderError(f"{target.path or '.'}: the rendered objects are nested too deeply")
                log.warning("rendering %s: %s", target.path, exc)
            except Exception as exc:  # noqa: BLE001 - isolate one target's failure from the others
                log.exception("rendering %s failed", target.path)
                result = RenderError(f"{target.path}: {type(exc).__name__}: {exc}", transient=True)
            if isinstance(result, str):
                self._disk_write(ident, key, result)
            elif result.limit in REMEMBERED_LIMITS and not result.transient:
                self._disk_write_failure(ident, key, result)
            log.debug("rendered %s (%s) -> %s", target.path, key[:12],
                      result if isinstance(result, RenderError) else "ok")
            return result
        finally:
            with self._lock:
                self._inflight.pop(ident, None)
                if result is not None and not (isinstance(result, RenderError) and result.transient):
                    self._memo[ident] = result
                    self._memo.move_to_end(ident)
                    while len(self._memo) > self.memo_size:
                        self._memo.popitem(last=False)

    def _entry(self, ident: str) -> Path:
        return self.cache_dir / ident[:2] / f"{ident}.json"

    def _disk_read(self, ident: str, key: str) -> str | RenderError | None:
        if not self.disk_cache:
            return None
        path = self._entry(ident)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("key") != key:
            return None
        got: str | RenderError | None = None
        if isinstance(data.get("objects"), list):
            got = Rendered.decode(data).encode()
        elif isinstance(data.get("error"), str) and data.get("limit") in REMEMBERED_LIMITS:
            limit = data["limit"]
            had = data.get("limit_value")
            # remembered only while the limit is no more generous than when the render ran into it
            if isinstance(had, int | float) and getattr(self.limits, limit) <= had:
                got = RenderError(f"{data['error']} (remembered for these inputs)", limit=limit)
        if got is not None:
            try:
                os.utime(path)                  # least recently used eviction goes by this time
            except OSError:
                pass
        return got

    def _disk_write(self, ident: str, key: str, text: str) -> None:
        # `text` is `Rendered.encode()`: {"objects": …, "origins": …, "not_expanded": …}
        self._write(ident, f'{{"format":{json.dumps(CACHE_FORMAT)},"key":{json.dumps(key)},{text[1:]}')

    def _disk_write_failure(self, ident: str, key: str, error: RenderError) -> None:
        assert error.limit is not None
        self._write(ident, json.dumps({"format": CACHE_FORMAT, "key": key, "error": str(error),
                                       "limit": error.limit, "limit_value": getattr(self.limits, error.limit)}))

    def _write(self, ident: str, body: str) -> None:
        if not self.disk_cache:
            return
        size = len(body.encode("utf-8"))
        if size > self.limits.cache_size // 4:
            log.info("render cache: an entry of %d bytes is too large to keep", size)
            return
        path = self._entry(ident)
        tmp: str | None = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(body)
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            log.warning("render cache %s not written: %s", path, exc)
            return
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        DiskUsage.of(self.cache_dir).added(size, self.limits.cache_size)


def _decode(value: str | RenderError) -> RenderResult:
    return value if isinstance(value, RenderError) else Rendered.decode(json.loads(value))

"""Renderers: kustomize / helm / plain, as sandboxed subprocesses without a shell, and a parallel,
cached `RenderPool`.

Rendering input from a pull request is untrusted, so every run:
- is refused before it starts when the target reads a remote base, chart or file (`remote base …
  cannot be resolved offline`) or a path outside the repository (`..`, absolute, symbolic links);
- runs kustomize with the load restrictor (`LoadRestrictionsRootOnly`) and without alpha/exec
  plugins (kustomize then refuses `generators:`/`transformers:` that name external plugins), Helm
  only on local charts, with `--include-crds --skip-tests` (what Argo CD and Flux apply);
- gets a scrubbed environment: `HOME`, the XDG and Helm directories point into a fresh temporary
  directory (no user config, kubeconfig, registry or repository credentials), `KUBECONFIG` and
  proxies of the caller are not passed, HTTP(S) goes to a black-hole proxy, and — where the kernel
  allows unprivileged network namespaces (`unshare --net`) — the process has no network at all;
- is killed with its process group after `timeout` seconds.

Error messages are one line: the renderer's own message, with the directory of the checked-out tree
removed so users see repo-relative paths.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prbot.errors import PrbotError
from prbot.impact import (
    YAML_ERRORS,
    YAML_LOADER,
    Closure,
    ClosureCache,
    input_closure,
    load_yaml,
    load_yaml_all,
)
from prbot.targets import Target
from prbot.tools import clean_output, find_tool, which

DEFAULT_TIMEOUT = 120.0
CACHE_FORMAT = "prbot-render-v1"
MAX_MESSAGE = 2000
_BLACKHOLE_PROXY = "http://127.0.0.1:9"
log = logging.getLogger("prbot.render")


class RenderError(PrbotError):
    """A target could not be rendered; the message is the renderer's, cleaned to one line.

    ``transient`` marks failures that may go away on retry (timeout, missing binary); they are
    not memoised by `RenderPool`.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        text = " ".join(str(message).split())
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE - 1] + "…"
        super().__init__(text)
        self.transient = transient


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    """Objects as the JSON the API server would see: string keys, no bytes/sets."""
    if isinstance(value, dict):
        return {_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, set | frozenset):
        return {_key(k): None for k in value}
    return value


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


def _collect(doc: Any, source: str, index: int, out: list[dict[str, Any]]) -> None:
    if doc is None or doc == {}:
        return
    if not isinstance(doc, dict):
        raise RenderError(f"{source}: document {index} is not a Kubernetes object "
                          f"(a {type(doc).__name__}, not a mapping)")
    obj = _jsonable(doc)
    kind = obj.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list):
        for n, item in enumerate(obj["items"], 1):
            if not isinstance(item, dict) or "kind" not in item or "apiVersion" not in item:
                raise RenderError(f"{source}: document {index}: item {n} of the {kind} is not a "
                                  "Kubernetes object (it needs apiVersion and kind)")
            out.append(item)
        return
    if "kind" not in obj or "apiVersion" not in obj:
        raise RenderError(f"{source}: document {index} is not a Kubernetes object "
                          "(it needs apiVersion and kind)")
    out.append(obj)


def parse_documents(text: str, source: str = "output") -> list[dict[str, Any]]:
    """Kubernetes objects of a multi-document YAML text; `kind: *List` documents are expanded.

    Invalid YAML raises RenderError ``SOURCE:LINE: invalid YAML: problem``.
    """
    try:
        docs = load_yaml_all(text)
    except YAML_ERRORS as exc:
        raise RenderError(_yaml_problem(exc, source)) from exc
    out: list[dict[str, Any]] = []
    for index, doc in enumerate(docs, 1):
        _collect(doc, source, index, out)
    return out


def _yaml_problem(exc: Exception, source: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context and context not in str(problem) else str(problem)
    return f"{where}: invalid YAML: {detail}"


def _parse_file(root: Path, rel: str) -> list[dict[str, Any]]:
    try:
        text = (root / rel).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RenderError(f"{rel}: not UTF-8 text") from exc
    except OSError as exc:
        raise RenderError(f"{rel}: cannot be read ({exc.strerror or exc})") from exc
    if rel.endswith(".json"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RenderError(f"{rel}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
        out: list[dict[str, Any]] = []
        _collect(doc, rel, 1, out)
        return out
    return parse_documents(text, rel)


# --------------------------------------------------------------------------------------------
# Running a renderer
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _netns_prefix() -> tuple[str, ...]:
    """`unshare --net` when this kernel lets us create a network namespace; else nothing."""
    if os.environ.get("PRBOT_RENDER_NETNS", "1") == "0" or not sys.platform.startswith("linux"):
        return ()
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    argv = [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--net", "--map-root-user"]
    true = shutil.which("true") or "/bin/true"
    try:
        ok = subprocess.run([*argv, true], stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    log.debug("network namespace for renderers: %s", "yes" if ok else "not available")
    return tuple(argv) if ok else ()


def _scrubbed_env(home: str) -> dict[str, str]:
    """A minimal environment: no user config, credentials, kubeconfig or proxies of ours."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "XDG_CONFIG_HOME": f"{home}/.config",
        "XDG_CACHE_HOME": f"{home}/.cache",
        "XDG_DATA_HOME": f"{home}/.local/share",
        "HELM_CONFIG_HOME": f"{home}/.config/helm",
        "HELM_CACHE_HOME": f"{home}/.cache/helm",
        "HELM_DATA_HOME": f"{home}/.local/share/helm",
        "HELM_PLUGINS": f"{home}/.local/share/helm/plugins",
        "KUSTOMIZE_PLUGIN_HOME": f"{home}/.config/kustomize/plugin",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "NO_PROXY": "",
        "no_proxy": "",
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = _BLACKHOLE_PROXY
    return env


def _strip_roots(message: str, roots: Sequence[str]) -> str:
    for r in roots:
        message = message.replace(r + os.sep, "").replace(r, ".")
    return message


def _clean_message(label: str, raw: str, roots: Sequence[str]) -> str:
    lines = [ln.strip() for ln in clean_output(raw).splitlines() if ln.strip()]
    # helm/kubectl prefix each line with "Error: " / "error: "; keep the message itself
    lines = [ln.split(":", 1)[1].strip() if ln.lower().startswith("error:") else ln for ln in lines]
    message = _strip_roots(" ".join(lines) or "failed without a message", roots)
    return f"{label}: {message}"


def _run(argv: list[str], label: str, cwd: Path, timeout: float, home: str) -> str:
    root = os.fspath(cwd)
    roots = sorted({root, os.path.realpath(root)}, key=len, reverse=True)
    try:
        proc = subprocess.Popen([*_netns_prefix(), *argv], cwd=cwd, env=_scrubbed_env(home),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as exc:
        raise RenderError(f"{label}: cannot run {argv[0]}: {exc.strerror or exc}", transient=True) from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        raise RenderError(f"{label} timed out after {timeout:g}s", transient=True) from exc
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode != 0:
        raw = err.decode("utf-8", "replace") or out.decode("utf-8", "replace")
        raise RenderError(_clean_message(label, raw, roots))
    return out.decode("utf-8", "replace")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the renderer and everything it started (its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:   # a grandchild that left the group still holds the pipes
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()


# --------------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------------

def _refuse_unsafe(target: Target, closure: Closure) -> None:
    if closure.outside:
        raise RenderError(f"{closure.outside[0]}: refusing to read outside the repository")
    if closure.remote:
        what = "chart" if target.renderer == "helm" else "base"
        raise RenderError(f"remote {what} {closure.remote[0]} cannot be resolved offline: "
                          "vendor it into the repository")


def render_target(root: Path, target: Target, *, timeout: float = DEFAULT_TIMEOUT,
                  kube_version: str | None = None, closure: Closure | None = None) -> list[dict[str, Any]]:
    """Render one target of the repository checked out at `root` into a list of objects.

    `kube_version` (e.g. "1.33") is passed to Helm as Capabilities.KubeVersion; `closure` (from
    `prbot.impact`) saves recomputing it.  Raises RenderError with a one-line message.
    """
    root = Path(root)
    if closure is None:
        closure = input_closure(root, target)
    _refuse_unsafe(target, closure)
    if target.renderer == "plain":
        return _render_plain(root, target, closure)
    with tempfile.TemporaryDirectory(prefix="prbot-render-") as home:
        if target.renderer == "kustomize":
            return _render_kustomize(root, target, closure, timeout, kube_version, home)
        if target.renderer == "helm":
            return _render_helm(root, target, timeout, kube_version, home)
    raise RenderError(f"{target.path}: unknown renderer {target.renderer!r}")


def _render_kustomize(root: Path, target: Target, closure: Closure, timeout: float,
                      kube_version: str | None, home: str) -> list[dict[str, Any]]:
    kustomize = which("kustomize")
    if kustomize:
        argv, label = [kustomize, "build"], "kustomize build"
    else:
        argv, label = [find_tool("kubectl"), "kustomize"], "kubectl kustomize"
    argv += ["--load-restrictor", "LoadRestrictionsRootOnly"]
    if closure.helm_charts:
        argv += ["--enable-helm", "--helm-command", which("helm3") or find_tool("helm")]
        if kube_version:
            argv += ["--helm-kube-version", kube_version]
    argv.append(target.path or ".")
    try:
        text = _run(argv, label, root, timeout, home)
    except RenderError as exc:
        if closure.helm_charts and "helm version -c" in str(exc):
            raise RenderError(f"{label}: helmCharts need Helm 3 (this kustomize runs 'helm version -c', "
                              "which Helm 4 rejects): run `prbot tools install`, which adds one as helm3") from exc
        raise
    return parse_documents(text, f"{label} {target.path or '.'}")


def _helm_dependencies(chart_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """(chart name, dependencies) from Chart.yaml (and requirements.yaml of apiVersion v1 charts)."""
    deps: list[dict[str, Any]] = []
    name = chart_dir.name
    for fname in ("Chart.yaml", "requirements.yaml"):
        try:
            doc = load_yaml((chart_dir / fname).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, *YAML_ERRORS):
            continue                       # helm reports a broken Chart.yaml itself
        if not isinstance(doc, dict):
            continue
        if fname == "Chart.yaml" and isinstance(doc.get("name"), str):
            name = doc["name"]
        if isinstance(doc.get("dependencies"), list):
            deps.extend(d for d in doc["dependencies"] if isinstance(d, dict) and d.get("name"))
    return name, deps


def _vendored(charts: Path, name: str) -> bool:
    if (charts / name / "Chart.yaml").is_file():
        return True
    try:
        return any(p.name == f"{name}.tgz" or (p.name.startswith(f"{name}-") and p.name.endswith(".tgz"))
                   for p in charts.iterdir())
    except OSError:
        return False


def _render_helm(root: Path, target: Target, timeout: float, kube_version: str | None,
                 home: str) -> list[dict[str, Any]]:
    helm = find_tool("helm")
    chart_rel = target.chart or target.path
    chart_dir = root / chart_rel
    if chart_dir.is_dir():
        name, deps = _helm_dependencies(chart_dir)
        for dep in deps:
            if not _vendored(chart_dir / "charts", str(dep["name"])):
                origin = f" from {dep['repository']}" if dep.get("repository") else ""
                raise RenderError(f"chart {name} needs dependency {dep['name']}{origin}: "
                                  "vendor it with helm dependency build")
    argv = [helm, "template", f"{target.app}-{target.env}", f"./{chart_rel}" if chart_rel else ".",
            "--include-crds", "--skip-tests"]
    if target.namespace:
        argv += ["--namespace", target.namespace]
    if kube_version:
        argv += ["--kube-version", kube_version]
    for values in target.values:
        argv += ["--values", f"./{values}"]
    text = _run(argv, "helm template", root, timeout, home)
    return parse_documents(text, f"helm template {chart_rel}")


def _render_plain(root: Path, target: Target, closure: Closure) -> list[dict[str, Any]]:
    if not (root / target.path).is_dir():
        raise RenderError(f"{target.path or '.'}: directory does not exist")
    objects: list[dict[str, Any]] = []
    for rel in sorted(closure.files):
        objects.extend(_parse_file(root, rel))
    return objects


# --------------------------------------------------------------------------------------------
# The pool: parallel, memoised, cached on disk
# --------------------------------------------------------------------------------------------

RenderResult = list[dict[str, Any]] | RenderError


def default_cache_dir() -> Path:
    """`$PRBOT_CACHE_DIR`, else `$XDG_CACHE_HOME/prbot/render` (default ~/.cache/prbot/render)."""
    explicit = os.environ.get("PRBOT_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "prbot" / "render"


def _tool_fingerprint(renderer: str) -> str:
    """Which binaries render this kind of target, so a tool upgrade misses the disk cache."""
    names = {"kustomize": ("kustomize", "kubectl", "helm3", "helm"), "helm": ("helm",)}.get(renderer, ())
    parts = [renderer, YAML_LOADER]
    for name in names:
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
    input closure (`prbot.impact.ClosureCache.digest`) the cache key a `RenderPool` wants."""
    return json.dumps([target.renderer, target.path, target.namespace, target.chart, list(target.values),
                       f"{target.app}-{target.env}"])


class RenderPool:
    """Renders many targets in parallel and never renders the same cache key twice.

    Results are memoised in memory (per pool) and on disk (`cache_dir`, one JSON file per key,
    written atomically, mode 0600 — rendered Secrets are in there).  The caller's cache key must
    cover every input (see `prbot.impact.closure_digest`); the pool adds the Kubernetes version it
    passes and a fingerprint of the renderer binaries.  Deterministic render errors are memoised
    but never written to disk; transient ones (timeout, missing binary) are not memoised.
    """

    def __init__(self, *, workers: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 cache_dir: Path | str | None = None, disk_cache: bool = True,
                 kube_versions: Mapping[str, str] | None = None, memo_size: int = 4096) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.timeout = timeout
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
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
    def render(self, root: Path, target: Target, cache_key: str) -> list[dict[str, Any]]:
        """One target; raises RenderError."""
        got = self.render_many([(root, target, cache_key)])[cache_key]
        if isinstance(got, RenderError):
            raise got
        return got

    def render_many(self, requests: Sequence[tuple[Path, Target, str]]) -> dict[str, RenderResult]:
        """Render every request, keyed by cache key: objects, or the RenderError of that target.

        Requests sharing a cache key are rendered once (the first request's root is used).
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
                ident = hashlib.sha256(f"{CACHE_FORMAT}\0{fp}\0{kube or ''}\0{key}".encode()).hexdigest()
                with self._lock:
                    hit = self._memo.get(ident)
                    if hit is not None:
                        self._memo.move_to_end(ident)
                        self.memo_hits += 1
                    else:
                        fut = self._inflight.get(ident)
                        if fut is None:
                            fut = executor.submit(self._compute, root, target, key, ident, kube, closures)
                            self._inflight[ident] = fut
                        waits[key] = fut
                if hit is not None:
                    results[key] = _decode(hit)
            for key, fut in waits.items():
                results[key] = _decode(fut.result())
        return {key: results[key] for key in pending}

    # ---------------------------------------------------------------- internals
    def _compute(self, root: Path, target: Target, key: str, ident: str, kube: str | None,
                 closures: ClosureCache) -> str | RenderError:
        result: str | RenderError | None = None
        try:
            result = self._disk_read(ident, key)
            if result is not None:
                with self._lock:
                    self.disk_hits += 1
                return result
            with self._lock:
                self.renders += 1
            try:
                objects = render_target(root, target, timeout=self.timeout, kube_version=kube,
                                        closure=closures.closure(root, target))
                result = json.dumps(objects, separators=(",", ":"), ensure_ascii=False)
            except RenderError as exc:
                result = exc
            except Exception as exc:  # noqa: BLE001 - isolate one target's failure from the others
                log.exception("rendering %s failed", target.path)
                result = RenderError(f"{target.path}: {type(exc).__name__}: {exc}", transient=True)
            if isinstance(result, str):
                self._disk_write(ident, key, result)
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

    def _disk_read(self, ident: str, key: str) -> str | None:
        if not self.disk_cache:
            return None
        try:
            with open(self._entry(ident), encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("key") != key \
                or not isinstance(data.get("objects"), list):
            return None
        return json.dumps(data["objects"], separators=(",", ":"), ensure_ascii=False)

    def _disk_write(self, ident: str, key: str, text: str) -> None:
        if not self.disk_cache:
            return
        path = self._entry(ident)
        tmp: str | None = None
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(f'{{"format":{json.dumps(CACHE_FORMAT)},"key":{json.dumps(key)},"objects":{text}}}')
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            log.warning("render cache %s not written: %s", path, exc)
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass


def _decode(value: str | RenderError) -> RenderResult:
    return value if isinstance(value, RenderError) else json.loads(value)

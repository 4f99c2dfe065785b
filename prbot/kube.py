"""Clusters and the server-side dry-run: the one place (with sync code) that talks to Kubernetes.

`PRBOT_CLUSTERS` names a YAML file mapping cluster names to a kubeconfig and an optional context
(`load_clusters`).  A `ClusterClient` wraps the real `kubernetes` client for one of them: the
dynamic client resolves each object's resource (plural, namespaced or not) through discovery, and
transient failures (connection errors, 429, 5xx) are retried with exponential backoff by urllib3's
`Retry`, configured on the client's connection pool.

`dry_run_objects` does what `kubectl diff --server-side --force-conflicts` does, object by object:
a server-side apply with `dryRun=All`, field manager `prbot` and `force=true`, then a GET of the
live object (404: it would be created), and a diff of the live object against the dry-run result
with `LIVE_NOISE` dropped.  API refusals become `DryRunError`s carrying the API's own message;
the other objects are still dry-run.

Secret values never leave this module: diffs are masked by `prbot.diff`, error messages are
scrubbed of the values of the Secret they concern, and exception texts of the client (which hold
response bodies) are never logged or shown.
"""

from __future__ import annotations

import base64
import copy
import difflib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.discovery import LazyDiscoverer
from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError
from kubernetes.dynamic.resource import Resource
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from urllib3.util.retry import Retry

from prbot.config import Config
from prbot.diff import LIVE_NOISE, ObjectChange, describe_key, diff_objects, is_secret, object_key, sort_key
from prbot.errors import PrbotError
from prbot.plan import DryRun, DryRunError
from prbot.targets import Target

__all__ = ["ClusterClient", "ClusterError", "ClusterRef", "DryRunner", "FIELD_MANAGER", "clusters_from_env",
           "default_retry", "dry_run_objects", "load_clusters", "make_dry_runner"]

log = logging.getLogger("prbot.kube")

FIELD_MANAGER = "prbot"
APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
CLUSTERS_ENV = "PRBOT_CLUSTERS"
CLUSTER_KEYS = ("kubeconfig", "context")
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
DEFAULT_TIMEOUT = (10.0, 60.0)          # (connect, read) seconds per request
MAX_RETRY_AFTER = 30.0                  # never wait longer than this on a Retry-After header
_MESSAGE_LIMIT = 500


# --------------------------------------------------------------------------------------------
# PRBOT_CLUSTERS
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterRef:
    """One entry of the PRBOT_CLUSTERS file."""

    name: str
    kubeconfig: Path                    # absolute path
    context: str | None = None          # None: the kubeconfig's current-context


def _line(node: Any, key: Any, default: int) -> int:
    """1-based line of `key` in a ruamel mapping, else `default`."""
    try:
        return int(node.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return default


def _node_line(node: Any, default: int) -> int:
    try:
        return int(node.lc.line) + 1
    except (AttributeError, TypeError):
        return default


def _kubeconfig_contexts(path: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """{context name: context} and the current-context of a kubeconfig file.

    Parsed here rather than by the client so that no error message can quote the file, which holds
    credentials: only line numbers are reported.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or type(e).__name__}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{path} is not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a kubeconfig (expected a mapping)")
    contexts: dict[str, dict[str, Any]] = {}
    for item in doc.get("contexts") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            ctx = item.get("context")
            contexts[item["name"]] = ctx if isinstance(ctx, dict) else {}
    current = doc.get("current-context")
    return contexts, current if isinstance(current, str) and current else None


def load_clusters(path: Path) -> dict[str, ClusterRef]:
    """Read a PRBOT_CLUSTERS file: ``name: {kubeconfig: PATH, context: CTX}`` (context optional).

    Relative kubeconfig paths are relative to the file's directory; `~` is expanded.  Every
    kubeconfig must exist and hold the named context (or a current-context).  Problems raise
    `PrbotError` with a one-line ``FILE:LINE: message`` (the first problem, and how many more).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PrbotError(f"{path}: cannot read the cluster map: "
                         f"{getattr(e, 'strerror', None) or type(e).__name__}") from None
    try:
        doc = YAML(typ="rt", pure=True).load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(e.problem or e.context or "invalid YAML").split())
        raise PrbotError(f"{path}{line}: {problem}") from None
    except Exception as e:  # noqa: BLE001 - ruamel raises a few unrelated types on odd input
        raise PrbotError(f"{path}: not valid YAML ({type(e).__name__})") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise PrbotError(f"{path}:{_node_line(doc, 1)}: expected a mapping of cluster names to "
                         "{kubeconfig: PATH, context: NAME}")
    problems: list[str] = []
    out: dict[str, ClusterRef] = {}

    def problem(line: int, message: str) -> None:
        problems.append(f"{path}:{line}: {message}")

    for name, entry in doc.items():
        line = _line(doc, name, 1)
        if not isinstance(name, str) or not name.strip():
            problem(line, f"cluster name {name!r} must be a non-empty string")
            continue
        if not isinstance(entry, dict):
            problem(line, f"{name}: expected {{kubeconfig: PATH, context: NAME}}")
            continue
        unknown = [k for k in entry if k not in CLUSTER_KEYS]
        for key in unknown:
            close = difflib.get_close_matches(str(key), CLUSTER_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(CLUSTER_KEYS)})"
            problem(_line(entry, key, line), f"{name}: unknown key {key!r}{hint}")
        kubeconfig = entry.get("kubeconfig")
        kline = _line(entry, "kubeconfig", line)
        if "kubeconfig" not in entry:
            problem(line, f"{name}.kubeconfig is required")
            continue
        if not isinstance(kubeconfig, str) or not kubeconfig.strip():
            problem(kline, f"{name}.kubeconfig must be a path")
            continue
        context = entry.get("context")
        cline = _line(entry, "context", line)
        if context is not None and (not isinstance(context, str) or not context.strip()):
            problem(cline, f"{name}.context must be a context name")
            continue
        if unknown:
            continue
        file = Path(os.path.expanduser(kubeconfig))
        if not file.is_absolute():
            file = path.resolve().parent / file
        if not file.is_file():
            problem(kline, f"{name}.kubeconfig: {file} does not exist")
            continue
        try:
            contexts, current = _kubeconfig_contexts(file)
        except ValueError as e:
            problem(kline, f"{name}.kubeconfig: {e}")
            continue
        if context is not None and context not in contexts:
            known = ", ".join(sorted(contexts)) or "none"
            problem(cline, f"{name}.context: {context!r} is not a context of {file} (known: {known})")
            continue
        if context is None and current is None:
            problem(kline, f"{name}: {file} has no current-context; name one with `context:`")
            continue
        out[name] = ClusterRef(name=name, kubeconfig=file, context=None if context is None else str(context))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PrbotError(problems[0] + more)
    return out


def clusters_from_env(environ: Mapping[str, str] | None = None) -> dict[str, ClusterRef]:
    """The cluster map named by `$PRBOT_CLUSTERS`; empty when the variable is unset or empty."""
    value = (os.environ if environ is None else environ).get(CLUSTERS_ENV, "").strip()
    return load_clusters(Path(value)) if value else {}


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------

class _Retry(Retry):
    """urllib3 Retry that never waits longer than MAX_RETRY_AFTER on a Retry-After header."""

    def get_retry_after(self, response: Any) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, MAX_RETRY_AFTER)


def default_retry(attempts: int = 5, backoff_factor: float = 0.5, backoff_max: float = 10.0) -> Retry:
    """Retries for connection errors, read errors, 429 and 5xx: exponential backoff, Retry-After
    honoured (capped), GET and PATCH retried (a dry-run apply changes nothing, an apply is
    idempotent).  When retries run out the last response is returned, so its message is reported."""
    return _Retry(total=attempts, connect=attempts, read=min(attempts, 2), status=attempts, other=0,
                  backoff_factor=backoff_factor, backoff_max=backoff_max,
                  status_forcelist=TRANSIENT_STATUS, allowed_methods=frozenset({"GET", "PATCH"}),
                  respect_retry_after_header=True, raise_on_status=False, redirect=0)


class _MemoryDiscoverer(LazyDiscoverer):
    """Lazy discovery kept in memory: never a predictable cache file in the shared temp dir."""

    def _write_cache(self) -> None:
        return None


class ClusterError(Exception):
    """The cluster as a whole cannot be used (kubeconfig, connection, discovery)."""


class ClusterClient:
    """The kubernetes client for one cluster of the map, created on first use and then reused.

    `retry` configures urllib3 on the client's connection pool (default: `default_retry()`);
    `timeout` is (connect, read) seconds per request.
    """

    def __init__(self, ref: ClusterRef, *, retry: Retry | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self.ref = ref
        self.retry = retry if retry is not None else default_retry()
        self.timeout = timeout
        self._lock = threading.RLock()
        self._api: ApiClient | None = None
        self._dynamic: DynamicClient | None = None
        self._resources: dict[tuple[str, str], Resource] = {}
        self._namespace: str | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def name(self) -> str:
        return self.ref.name

    # -- set-up ----------------------------------------------------------------------------------

    def _connect(self) -> DynamicClient:
        with self._lock:
            if self._dynamic is not None:
                return self._dynamic
            if self._api is None:
                try:
                    contexts, current = _kubeconfig_contexts(self.ref.kubeconfig)
                except ValueError as e:
                    raise ClusterError(str(e)) from None
                ctx = contexts.get(self.ref.context or current or "", {})
                namespace = ctx.get("namespace")
                self._namespace = namespace if isinstance(namespace, str) and namespace else "default"
                configuration = Configuration()
                configuration.retries = self.retry
                try:
                    self._api = kube_config.new_client_from_config(
                        config_file=str(self.ref.kubeconfig), context=self.ref.context,
                        persist_config=False, client_configuration=configuration)
                except (ConfigException, OSError, ValueError, TypeError) as e:
                    raise ClusterError(_one_line(f"cannot load {self.ref.kubeconfig}", e)) from None
                except Exception as e:  # noqa: BLE001 - auth plugins raise anything; name the type only
                    raise ClusterError(f"cannot load {self.ref.kubeconfig}: {type(e).__name__}") from None
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="prbot-discovery-")
            cache = os.path.join(self._tmp.name, "discovery.json")     # never written
            try:
                self._dynamic = DynamicClient(self._api, cache_file=cache, discoverer=_MemoryDiscoverer)
            except ApiException as e:
                raise ClusterError(f"discovery failed: {_api_message(e)}") from None
            except urllib3.exceptions.HTTPError as e:
                raise ClusterError(self._unreachable(e)) from None
            except ValueError as e:
                raise ClusterError(_one_line("discovery failed", e)) from None
            return self._dynamic

    def _unreachable(self, e: BaseException) -> str:
        host = re.sub(r"//[^/@]*@", "//", str(self._api.configuration.host if self._api else ""))
        return f"cannot reach the API server {host}: {_transport_reason(e)}"

    @property
    def default_namespace(self) -> str:
        """The kubeconfig context's namespace, else "default" (what kubectl uses)."""
        self._connect()
        return self._namespace or "default"

    def resource(self, api_version: str, kind: str) -> Resource:
        """The API resource serving `kind` in `api_version`, from discovery (cached)."""
        dynamic = self._connect()
        with self._lock:
            found = self._resources.get((api_version, kind))
            if found is None:
                found = dynamic.resources.get(api_version=api_version, kind=kind)
                self._resources[(api_version, kind)] = found
            return found

    # -- requests ----------------------------------------------------------------------------------

    def apply_dry_run(self, resource: Resource, body: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        """Server-side apply of `body` with dryRun=All, field manager `prbot`, force: the result."""
        dynamic = self._connect()
        resp = dynamic.server_side_apply(resource, body=body, namespace=namespace, field_manager=FIELD_MANAGER,
                                         force_conflicts=True, dry_run="All", serialize=False,
                                         _request_timeout=self.timeout)
        return _json_object(resp)

    def get(self, resource: Resource, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        dynamic = self._connect()
        try:
            resp = dynamic.get(resource, name=name, namespace=namespace, serialize=False,
                               _request_timeout=self.timeout)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return _json_object(resp)

    def close(self) -> None:
        with self._lock:
            if self._api is not None:
                self._api.close()
            if self._tmp is not None:
                self._tmp.cleanup()
            self._api = self._dynamic = self._tmp = None
            self._resources.clear()

    def __enter__(self) -> ClusterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ClusterClient({self.ref.name!r})"


def _json_object(resp: Any) -> dict[str, Any]:
    data = resp.data if hasattr(resp, "data") else resp
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    obj = json.loads(data) if isinstance(data, str) else data
    if not isinstance(obj, dict):
        raise ValueError("the API server answered with something that is not an object")
    return obj


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------

def _one_line(prefix: str, value: object) -> str:
    text = " ".join(str(value).split())
    text = f"{prefix}: {text}" if text else prefix
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT - 1] + "…"


def _api_message(e: ApiException) -> str:
    """The `message` of the API's Status body, one line; else `HTTP <code> <reason>`.

    Never the exception's text: it holds headers and the whole response body.
    """
    body: Any = getattr(e, "body", None)
    message = None
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip():
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
            message = parsed["message"]
    status = getattr(e, "status", None) or 0
    if message and message.strip():
        text = " ".join(message.split())
    elif status:
        text = f"HTTP {status} {e.reason or ''}".strip()
    else:
        text = " ".join(str(e.reason or "request failed").split())
    if status in TRANSIENT_STATUS:
        text = f"{text} (HTTP {status}, still failing after retries)"
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT - 1] + "…"


def _transport_reason(e: BaseException) -> str:
    """`connection refused`, `read timed out`, …: the innermost reason of a urllib3 error."""
    reason: BaseException = e
    while isinstance(getattr(reason, "reason", None), BaseException):
        reason = reason.reason  # type: ignore[attr-defined]
    text = str(reason)
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", text)
    text = re.sub(r"^Failed to establish a new connection:\s*", "", text)
    text = re.sub(r"\[Errno -?\d+\]\s*", "", text)
    text = " ".join(text.split()) or type(reason).__name__
    return text[:1].lower() + text[1:]


def _secret_values(obj: Mapping[str, Any]) -> list[str]:
    """Every value of a Secret, plain and base64, longest first (to scrub messages)."""
    if not is_secret(obj):
        return []
    found: set[str] = set()
    for field in ("data", "stringData"):
        values = obj.get(field)
        if not isinstance(values, dict):
            continue
        for value in values.values():
            if not isinstance(value, str) or not value:
                continue
            found.add(value)
            if field == "stringData":
                found.add(base64.b64encode(value.encode()).decode())
            else:
                try:
                    found.add(base64.b64decode(value, validate=True).decode("utf-8"))
                except (ValueError, UnicodeDecodeError):
                    pass
    return sorted((v for v in found if v), key=len, reverse=True)


def _scrub(message: str, secrets: Sequence[str]) -> str:
    """`message` with every Secret value replaced by `***`: quoted values whatever their length,
    unquoted ones from 4 characters (shorter ones cannot be told from ordinary text)."""
    for value in secrets:
        for quoted in {json.dumps(value), f"'{value}'", f'"{value}"'}:
            message = message.replace(quoted, '"***"')
        if len(value) >= 4:
            message = message.replace(value, "***")
    return message


# --------------------------------------------------------------------------------------------
# The dry-run
# --------------------------------------------------------------------------------------------

def _error(key: tuple[str, str, str | None, str], message: str, secrets: Sequence[str] = ()) -> DryRunError:
    group, kind, namespace, name = key
    return DryRunError(group=group, kind=kind, namespace=namespace, name=name,
                       message=_scrub(" ".join(message.split()), secrets))


def dry_run_objects(client: ClusterClient, objects: Iterable[dict[str, Any]], *,
                    default_namespace: str | None, ignore: Sequence[str] = ()) -> DryRun:
    """Server-side dry-run of every object against the live cluster, diffed as `kubectl diff` does.

    Namespaced objects that name no namespace get `default_namespace` (else the kubeconfig
    context's namespace, else "default"); cluster-scoped ones (as discovery says) lose any
    namespace.  `ignore` holds `diff.ignore` paths; `LIVE_NOISE` is always ignored too.
    Status "failed" when any object was refused or could not be dry-run, else "ok".
    """
    ignore = tuple(dict.fromkeys((*ignore, *LIVE_NOISE)))
    changes: list[ObjectChange] = []
    errors: list[DryRunError] = []
    objects = [o for o in objects if isinstance(o, dict)]
    cluster_down: str | None = None
    try:
        fallback_namespace = default_namespace or client.default_namespace
    except ClusterError as e:
        cluster_down = str(e)
        fallback_namespace = default_namespace
    for obj in objects:
        key = object_key(obj, fallback_namespace)
        secrets = _secret_values(obj)
        if cluster_down is not None:
            errors.append(_error(key, cluster_down, secrets))
            continue
        try:
            change = _dry_run_one(client, obj, fallback_namespace, ignore)
        except _Refused as e:
            errors.append(_error(e.key or key, e.message, secrets))
            log.warning("dry-run refused on %s: %s", describe_key(e.key or key), errors[-1].message)
            continue
        except ClusterError as e:
            cluster_down = str(e)
            errors.append(_error(key, cluster_down, secrets))
            continue
        except urllib3.exceptions.HTTPError as e:
            cluster_down = client._unreachable(e)
            errors.append(_error(key, cluster_down, secrets))
            continue
        changes.extend(change)
    if cluster_down is not None:
        log.warning("dry-run on cluster %s failed: %s", client.name, cluster_down)
    changes.sort(key=lambda c: sort_key((c.group, c.kind, c.namespace, c.name)))
    errors.sort(key=lambda e: sort_key((e.group, e.kind, e.namespace, e.name)))
    log.info("dry-run on cluster %s: %d objects, %d changes, %d errors", client.name, len(objects),
             len(changes), len(errors))
    return DryRun(status="failed" if errors else "ok", changes=changes, errors=errors)


class _Refused(Exception):
    def __init__(self, message: str, key: tuple[str, str, str | None, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def _dry_run_one(client: ClusterClient, obj: dict[str, Any], default_namespace: str | None,
                 ignore: Sequence[str]) -> list[ObjectChange]:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name")
    if not isinstance(api_version, str) or not api_version or not isinstance(kind, str) or not kind:
        raise _Refused("the object has no apiVersion or kind")
    if not isinstance(name, str) or not name:
        raise _Refused("server-side apply needs metadata.name (generateName is not supported)")
    try:
        resource = client.resource(api_version, kind)
    except (ResourceNotFoundError, ResourceNotUniqueError):
        raise _Refused(f'no matches for kind "{kind}" in version "{api_version}": '
                       "the cluster does not serve it (is its CRD installed?)") from None
    except ApiException as e:
        raise _Refused(_api_message(e)) from None
    body = copy.deepcopy(obj)
    body_meta = body.setdefault("metadata", {})
    if resource.namespaced:
        namespace = body_meta.get("namespace") or default_namespace or client.default_namespace
        body_meta["namespace"] = namespace
    else:
        namespace = None
        body_meta.pop("namespace", None)
    key = (resource.group or "", kind, namespace, name)
    try:
        result = client.apply_dry_run(resource, body, namespace)
        live = client.get(resource, name, namespace)
    except ApiException as e:
        raise _Refused(_api_message(e), key) from None
    except ValueError as e:
        raise _Refused(_one_line("unexpected answer from the API server", type(e).__name__), key) from None
    return diff_objects([live] if live is not None else [], [result], default_namespace=namespace,
                        ignore=ignore)


# --------------------------------------------------------------------------------------------
# The plan's dry-runner
# --------------------------------------------------------------------------------------------

class DryRunner:
    """The callable `make_dry_runner` returns; `close()` releases its clients' connections."""

    def __init__(self, config: Config, clusters: Mapping[str, ClusterRef], retry: Retry | None) -> None:
        self._ignore = (*config.diff_ignore, *LIVE_NOISE)
        self._clusters = dict(clusters)
        self._envs = {e.name: e for e in config.environments}
        self._retry = retry
        self._clients: dict[str, ClusterClient] = {}
        self._lock = threading.Lock()

    def cluster_for(self, target: Target) -> ClusterRef | None:
        """The cluster `target` is dry-run on, or None."""
        env = self._envs.get(target.env)
        name = env.cluster if env is not None else None
        return self._clusters.get(name) if name else None

    def __call__(self, target: Target, objects: list[dict[str, Any]]) -> DryRun | None:
        ref = self.cluster_for(target)
        if ref is None:
            return None
        with self._lock:
            client = self._clients.get(ref.name)
            if client is None:
                client = self._clients[ref.name] = ClusterClient(ref, retry=self._retry)
        return dry_run_objects(client, objects, default_namespace=target.namespace, ignore=self._ignore)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def make_dry_runner(config: Config, clusters: Mapping[str, ClusterRef], *,
                    retry: Retry | None = None) -> DryRunner:
    """A `dry_runner` for `make_plan`: dry-runs a target's objects on its environment's cluster.

    Returns None (no dry-run) for targets whose environment names no cluster, or a cluster that is
    not in `clusters`.  One `ClusterClient` per cluster, created on first use and reused.  The
    `DryRunner` is a `Callable[[Target, list[dict]], DryRun | None]`; call its `close()` when done.
    """
    return DryRunner(config, clusters, retry)

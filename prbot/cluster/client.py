"""The one module that imports the kubernetes client: `ClusterClient`, one cluster of the map.

The dynamic client resolves each kind's resource (plural, namespaced or not) through discovery,
kept in memory.  Everything the client raises is translated here into three exception types, so
the rest of `prbot.cluster` never sees the client's types nor its exception texts (which hold
response bodies and headers):

- `ClusterError`: the cluster as a whole cannot be used (kubeconfig, connection, discovery) — one
  line, the same for every object, never retried per object;
- `ApiError`: the API server answered a request with an error Status (its `message`, one line);
- `NotServed`: the cluster serves no resource for an apiVersion/kind (no CRD installed);
- `InvalidName` (an `ApiError`): a name, namespace, apiVersion or kind breaks Kubernetes' rules for
  it; raised before any request.

Every request names exactly one object, or one collection: the client builds the path itself from
the checked parts (`prbot.cluster.names`), each percent-encoded on its own, and never calls a
subresource (no proxy, exec, attach or port-forward).

Timeouts and retries are urllib3's, configured on the client's connection pool: every request
(discovery included) has a (connect, read) timeout; 429 and 5xx answers of GET/PATCH/DELETE are
retried with exponential backoff, honouring Retry-After (capped).  Connection failures are not
retried: an unreachable cluster fails at once with one line (and urllib3 logs no retry warnings);
the job that asked retries later.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import urllib3
from kubernetes import config as kube_config
from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.discovery import LazyDiscoverer
from kubernetes.dynamic.exceptions import ResourceNotFoundError, ResourceNotUniqueError
from kubernetes.dynamic.resource import Resource, ResourceList, Subresource
from urllib3.util.retry import Retry

from prbot.cluster.clusters import ClusterRef, kubeconfig_contexts
from prbot.cluster.names import check_api_version, check_name, check_namespace, check_plural
from prbot.errors import TRANSIENT_STATUS, ApiError, ClusterError, InvalidName, NotServed

__all__ = ["ApiError", "ClusterClient", "ClusterError", "DEFAULT_TIMEOUT", "FIELD_MANAGER", "InvalidName", "NotServed",
           "PatchType", "ResourceInfo", "default_retry"]

FIELD_MANAGER = "prbot"
DEFAULT_TIMEOUT = (3.0, 30.0)           # (connect, read) seconds per request
MAX_RETRY_AFTER = 30.0                  # never wait longer than this on a Retry-After header
MESSAGE_LIMIT = 500

PatchType = Literal["merge", "json", "apply"]
_CONTENT_TYPES: dict[str, str] = {"merge": "application/merge-patch+json",
                                  "json": "application/json-patch+json",
                                  "apply": "application/apply-patch+yaml"}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResourceInfo:
    """What discovery says about a kind."""

    group: str                   # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


# --------------------------------------------------------------------------------------------
# Retries and timeouts
# --------------------------------------------------------------------------------------------

class _Retry(Retry):
    """urllib3 Retry that never waits longer than MAX_RETRY_AFTER on a Retry-After header."""

    def get_retry_after(self, response: Any) -> float | None:
        after = super().get_retry_after(response)
        return None if after is None else min(after, MAX_RETRY_AFTER)


def default_retry(attempts: int = 4, backoff_factor: float = 0.5, backoff_max: float = 8.0) -> Retry:
    """Retries of 429 and 5xx answers with exponential backoff (Retry-After honoured, capped) for
    GET, PATCH and DELETE (a dry-run changes nothing; an apply, a merge patch and a delete are
    idempotent).  Connection and read failures are not retried: they fail at once, with one line.
    When retries run out the last answer is returned, so its message is reported."""
    return _Retry(total=attempts, connect=0, read=0, status=attempts, other=0,
                  backoff_factor=backoff_factor, backoff_max=backoff_max,
                  status_forcelist=TRANSIENT_STATUS, allowed_methods=frozenset({"GET", "PATCH", "DELETE"}),
                  respect_retry_after_header=True, raise_on_status=False, redirect=0)


def _gated(retry: Retry, gate: Callable[[], None] | None) -> Retry:
    """`retry`, asking `gate` before each retry too (a retried request is sent again).  urllib3
    builds each next Retry with ``type(self)(...)``, so the class carries the gate along."""
    if gate is None:
        return retry
    ask: Callable[[], None] = gate
    base: type[Retry] = type(retry)

    class _GatedRetry(base):  # type: ignore[valid-type,misc]
        def increment(self, *args: Any, **kwargs: Any) -> Retry:
            ask()
            return super().increment(*args, **kwargs)

    gated = copy.copy(retry)
    gated.__class__ = _GatedRetry
    return gated


class _MemoryDiscoverer(LazyDiscoverer):
    """Lazy discovery kept in memory: never a predictable cache file in the shared temp dir."""

    def _write_cache(self) -> None:
        return None


class _Dynamic(DynamicClient):
    """The dynamic client with a timeout on every request, discovery's included (the client
    sends discovery requests with no timeout at all), and the `gate` asked before each one."""

    def __init__(self, client: ApiClient, timeout: tuple[float, float], gate: Callable[[], None] | None,
                 **kwargs: Any) -> None:
        self._prbot_timeout = timeout
        self._prbot_gate = gate
        super().__init__(client, **kwargs)

    def request(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        if self._prbot_gate is not None:
            self._prbot_gate()
        params.setdefault("_request_timeout", self._prbot_timeout)
        return super().request(method, path, body, **params)


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------

class ClusterClient:
    """The kubernetes client for one cluster of the map, created on first use and then reused.

    Thread-safe.  `retry` configures urllib3 on the client's connection pool (default:
    `default_retry()`); `timeout` is (connect, read) seconds per request.  `gate`, when given, is
    called before every request (discovery's included) and before each retry of one, and may raise
    to stop it being sent (the dry-run's request budget raises `RequestBudgetSpent`).
    """

    def __init__(self, ref: ClusterRef, *, retry: Retry | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, gate: Callable[[], None] | None = None) -> None:
        self.ref = ref
        self.gate = gate
        self.retry = retry if retry is not None else default_retry()
        self.timeout = timeout
        self._lock = threading.RLock()
        self._api: ApiClient | None = None
        self._dynamic: DynamicClient | None = None
        self._resources: dict[tuple[str, str], Resource | None] = {}
        self._namespace: str | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._down: ClusterError | None = None

    @property
    def name(self) -> str:
        return self.ref.name

    # -- set-up ----------------------------------------------------------------------------------

    def _connect(self) -> DynamicClient:
        with self._lock:
            if self._dynamic is not None:
                return self._dynamic
            if self._down is not None:
                raise self._down
            try:
                self._dynamic = self._open()
            except ClusterError as e:
                self._down = e          # one failure per client: never once per object
                raise
            return self._dynamic

    def _open(self) -> DynamicClient:
        if self._api is None:
            try:
                contexts, current = kubeconfig_contexts(self.ref.kubeconfig)
            except ValueError as e:
                raise ClusterError(str(e)) from None
            ctx = contexts.get(self.ref.context or current or "", {})
            namespace = ctx.get("namespace")
            self._namespace = namespace if isinstance(namespace, str) and namespace else "default"
            configuration = Configuration()
            configuration.retries = _gated(self.retry, self.gate)
            try:
                self._api = kube_config.new_client_from_config(
                    config_file=str(self.ref.kubeconfig), context=self.ref.context,
                    persist_config=False, client_configuration=configuration)
            except (ConfigException, OSError, ValueError, TypeError) as e:
                raise ClusterError(one_line(f"cannot load {self.ref.kubeconfig}", e)) from None
            except Exception as e:  # noqa: BLE001 - auth plugins raise anything; name the type only
                raise ClusterError(f"cannot load {self.ref.kubeconfig}: {type(e).__name__}") from None
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="prbot-discovery-")
        cache = os.path.join(self._tmp.name, "discovery.json")     # never written
        try:
            return _Dynamic(self._api, self.timeout, self.gate, cache_file=cache, discoverer=_MemoryDiscoverer)
        except ApiException as e:
            status = getattr(e, "status", 0) or 0
            raise ClusterError(f"discovery failed: {api_message(e)}",
                               transient=status in TRANSIENT_STATUS) from None
        except urllib3.exceptions.HTTPError as e:
            raise ClusterError(self._unreachable(e), transient=True) from None
        except ValueError as e:
            raise ClusterError(one_line("discovery failed", e)) from None

    def _unreachable(self, e: BaseException) -> str:
        host = re.sub(r"//[^/@]*@", "//", str(self._api.configuration.host if self._api else ""))
        return f"cannot reach the API server {host}: {transport_reason(e, self.timeout)}"

    @property
    def down(self) -> bool:
        """Whether connecting failed (the client does not try again; make a new one)."""
        return self._down is not None

    def check(self) -> None:
        """Connect (kubeconfig, discovery); raises `ClusterError` when the cluster cannot be used."""
        self._connect()

    @property
    def default_namespace(self) -> str:
        """The kubeconfig context's namespace, else "default" (what kubectl uses)."""
        self._connect()
        return self._namespace or "default"

    def resource(self, api_version: str, kind: str) -> ResourceInfo:
        """What discovery says about `kind` in `api_version` (cached, also when not served:
        `refresh_discovery()` forgets those answers).  Raises `NotServed`."""
        found = self._resource(api_version, kind)
        return ResourceInfo(group=found.group or "", version=found.api_version, kind=found.kind,
                            plural=found.name, namespaced=bool(found.namespaced))

    def _resource(self, api_version: str, kind: str) -> Resource:
        check_api_version(api_version, kind)            # before discovery: it names a path too
        dynamic = self._connect()
        with self._lock:
            if (api_version, kind) in self._resources:
                cached = self._resources[(api_version, kind)]
                if cached is None:
                    raise NotServed(api_version, kind)
                return cached
            try:
                found = dynamic.resources.get(api_version=api_version, kind=kind)
            except (ResourceNotFoundError, ResourceNotUniqueError):
                self._resources[(api_version, kind)] = None
                raise NotServed(api_version, kind) from None
            except ApiException as e:
                raise _api_error(e) from None
            except urllib3.exceptions.HTTPError as e:
                raise ClusterError(self._unreachable(e), transient=True) from None
            self._resources[(api_version, kind)] = found
            return found

    def preferred(self, group: str, kind: str) -> ResourceInfo:
        """The preferred version of `kind` in API `group` ("" for the core group).  Raises `NotServed`."""
        if not group:
            return self.resource("v1", kind)
        dynamic = self._connect()
        with self._lock:
            try:
                found = [r for r in dynamic.resources.search(group=group, kind=kind)
                         if isinstance(r, Resource) and not isinstance(r, ResourceList)
                         and r.group == group and "/" not in (r.name or "")]
            except (ResourceNotFoundError, ResourceNotUniqueError):
                found = []
            except ApiException as e:
                raise _api_error(e) from None
            except urllib3.exceptions.HTTPError as e:
                raise ClusterError(self._unreachable(e), transient=True) from None
        if not found:
            raise NotServed(group or "v1", kind)
        best = next((r for r in found if r.preferred), found[0])
        return self.resource(best.group_version, kind)

    def refresh_discovery(self) -> None:
        """Discover again (after CRDs were created): forget every answer, served or not."""
        dynamic = self._connect()
        with self._lock:
            self._resources.clear()
            try:
                dynamic.resources.invalidate_cache()
            except ApiException as e:
                raise _api_error(e) from None
            except urllib3.exceptions.HTTPError as e:
                raise ClusterError(self._unreachable(e), transient=True) from None

    # -- requests ----------------------------------------------------------------------------------

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one request; translate the client's errors.  Returns the raw response."""
        kwargs.setdefault("_request_timeout", self.timeout)
        try:
            return fn(*args, serialize=False, **kwargs)
        except ApiException as e:
            raise _api_error(e) from None
        except urllib3.exceptions.HTTPError as e:
            raise ClusterError(self._unreachable(e), transient=True) from None

    def _path(self, resource: Resource, namespace: str | None, name: str | None) -> str:
        """The request path of one object (`name`) or one collection (no `name`):
        ``/api/v1[/namespaces/<namespace>]/<plural>[/<name>]`` or ``/apis/<group>/<version>/…``.

        Every part is checked against Kubernetes' rules before it is used (`prbot.cluster.names`;
        raises `InvalidName`), then percent-encoded on its own: a name can never add a segment, a
        subresource or a query.  Never a subresource: prbot sends no proxy, exec, attach or
        port-forward request, nor any other subresource."""
        if isinstance(resource, (Subresource, ResourceList)) or resource.prefix not in ("api", "apis"):
            raise InvalidName(f"{resource.kind} is not a plain resource: not sent to the cluster")
        group_version = str(resource.group_version)
        check_api_version(group_version, str(resource.kind))
        check_plural(str(resource.name))
        parts = [str(resource.prefix), *group_version.split("/")]
        if resource.namespaced and namespace is not None:
            check_namespace(namespace)
            parts += ["namespaces", namespace]
        elif resource.namespaced and name is not None:
            raise InvalidName(f"{resource.kind} {name} is namespaced but no namespace was given: "
                              "not sent to the cluster")
        parts.append(str(resource.name))
        if name is not None:
            check_name(group_version, str(resource.kind), name)
            parts.append(name)
        return "/" + "/".join(quote(part, safe="") for part in parts)

    def apply(self, body: Mapping[str, Any], *, namespace: str | None, dry_run: bool = False,
              field_manager: str = FIELD_MANAGER, force: bool = True, namespaced_only: bool = False) -> dict[str, Any]:
        """Server-side apply of `body` (field manager `prbot`, force): the result.  With `dry_run`
        (``dryRun=All``) nothing is persisted.  A namespaced kind is applied in `namespace`, else in
        the body's; the body's namespace, when set, must be that namespace.  `namespaced_only`:
        a kind discovery says is cluster-scoped raises `InvalidName` (decided on the very resource
        the request is sent to)."""
        api_version, kind = str(body.get("apiVersion")), str(body.get("kind"))
        meta = body.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        name, body_namespace = meta.get("name"), meta.get("namespace")
        if not isinstance(name, str) or not name:
            raise InvalidName(f"the {kind} has no metadata.name: not sent to the cluster")
        resource = self._resource(api_version, kind)
        if namespaced_only and not resource.namespaced:
            raise InvalidName(f"{kind} {name} is cluster-scoped: not sent to the cluster")
        if resource.namespaced:
            if body_namespace is not None and namespace is not None and body_namespace != namespace:
                raise InvalidName(f"{kind} {name}: metadata.namespace {body_namespace!r} is not the namespace "
                                  f"it is sent to ({namespace}): not sent to the cluster")
            namespace = namespace or (body_namespace if isinstance(body_namespace, str) else None)
        path = self._path(resource, namespace, name)
        dynamic = self._connect()
        return _json_object(self._call(
            dynamic.request, "patch", path, body=dict(body), content_type=_CONTENT_TYPES["apply"],
            field_manager=field_manager, force_conflicts=force, dry_run="All" if dry_run else None))

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The live object, or None when it does not exist."""
        resource = self._resource(api_version, kind)
        path = self._path(resource, namespace if resource.namespaced else None, name)
        dynamic = self._connect()
        try:
            resp = self._call(dynamic.request, "get", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise
        return _json_object(resp)

    def list(self, api_version: str, kind: str, *, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        """The live objects of a kind (in `namespace`, or in every namespace when None)."""
        resource = self._resource(api_version, kind)
        path = self._path(resource, namespace if resource.namespaced else None, None)
        dynamic = self._connect()
        resp = self._call(dynamic.request, "get", path, label_selector=label_selector)
        items = _json_object(resp).get("items")
        out = []
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                item.setdefault("apiVersion", api_version)        # list items carry no type
                item.setdefault("kind", kind)
                out.append(item)
        return out

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: Any, *,
              patch_type: PatchType = "merge", dry_run: bool = False) -> dict[str, Any]:
        """A merge patch (RFC 7386) or JSON patch (RFC 6902) of one object: the result."""
        if patch_type == "apply":
            raise ValueError("use apply() for server-side apply")
        resource = self._resource(api_version, kind)
        path = self._path(resource, namespace if resource.namespaced else None, name)
        dynamic = self._connect()
        return _json_object(self._call(
            dynamic.request, "patch", path, body=body, content_type=_CONTENT_TYPES[patch_type],
            dry_run="All" if dry_run else None))

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None, *,
               dry_run: bool = False) -> bool:
        """Delete one object (background propagation); False when it was already gone."""
        resource = self._resource(api_version, kind)
        path = self._path(resource, namespace if resource.namespaced else None, name)
        dynamic = self._connect()
        try:
            self._call(dynamic.request, "delete", path, propagation_policy="Background",
                       dry_run="All" if dry_run else None)
        except ApiError as e:
            if e.status == 404:
                return False
            raise
        return True

    def close(self) -> None:
        with self._lock:
            if self._api is not None:
                self._api.close()
            if self._tmp is not None:
                self._tmp.cleanup()
            self._api = self._dynamic = self._tmp = None
            self._resources.clear()
            self._down = None

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
    try:
        obj = json.loads(data) if isinstance(data, str) else data
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise ApiError(0, "BadResponse", "unexpected answer from the API server: not a JSON object")
    return obj


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------

def one_line(prefix: str, value: object) -> str:
    text = " ".join(str(value).split())
    text = f"{prefix}: {text}" if text else prefix
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT - 1] + "…"


def _status_body(e: ApiException) -> dict[str, Any]:
    body: Any = getattr(e, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip():
        try:
            parsed = json.loads(body)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def api_message(e: ApiException) -> str:
    """The `message` of the API's Status body, one line; else `HTTP <code> <reason>`.

    Never the exception's text: it holds headers and the whole response body.
    """
    parsed = _status_body(e)
    message = parsed.get("message") if isinstance(parsed.get("message"), str) else None
    status = getattr(e, "status", None) or 0
    if message and message.strip():
        text = " ".join(message.split())
    elif status:
        text = f"HTTP {status} {e.reason or ''}".strip()
    else:
        text = " ".join(str(e.reason or "request failed").split())
    if status in TRANSIENT_STATUS:
        text = f"{text} (HTTP {status}, still failing after retries)"
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT - 1] + "…"


def _api_error(e: ApiException) -> ApiError:
    parsed = _status_body(e)
    details: dict[str, Any] = parsed["details"] if isinstance(parsed.get("details"), dict) else {}
    reason: str = parsed["reason"] if isinstance(parsed.get("reason"), str) else str(e.reason or "")
    kind, name = details.get("kind"), details.get("name")
    return ApiError(int(getattr(e, "status", 0) or 0), reason, api_message(e),
                    kind=kind if isinstance(kind, str) else None, name=name if isinstance(name, str) else None)


def transport_reason(e: BaseException, timeout: tuple[float, float] | None = None) -> str:
    """`connection refused`, `connection timed out after 3s`, …: what went wrong on the wire,
    from the innermost reason of a urllib3 error, in words (never an object's repr)."""
    reason: BaseException = e
    while isinstance(getattr(reason, "reason", None), BaseException):
        reason = reason.reason  # type: ignore[attr-defined]
    connect, read = timeout if timeout is not None else (None, None)
    if isinstance(reason, urllib3.exceptions.NameResolutionError):
        return "cannot resolve the host name"
    if isinstance(reason, urllib3.exceptions.NewConnectionError):    # a subclass of ConnectTimeoutError
        return _clean(str(reason)) or "cannot connect"
    if isinstance(reason, urllib3.exceptions.ConnectTimeoutError):
        return f"connection timed out after {connect:g}s" if connect else "connection timed out"
    if isinstance(reason, urllib3.exceptions.ReadTimeoutError):
        return f"no answer within {read:g}s (read timed out)" if read else "read timed out"
    if isinstance(reason, urllib3.exceptions.SSLError):
        return one_line("TLS error", _clean(str(reason)))
    if isinstance(reason, urllib3.exceptions.ProtocolError):
        return "the connection was dropped"
    return _clean(str(reason)) or type(reason).__name__


def _clean(text: str) -> str:
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>[:,]?\s*", "", text)
    text = re.sub(r"^\(?'?", "", text)
    text = re.sub(r"\b\w*Connection(Pool)?\([^)]*\):\s*", "", text)
    text = re.sub(r"Failed to establish a new connection:\s*", "", text)
    text = re.sub(r"\[Errno -?\d+\]\s*", "", text)
    text = " ".join(text.strip(" ()'\"").split())
    if len(text) > 1 and text[0].isupper() and not text[1].isupper():
        text = text[0].lower() + text[1:]         # "Connection refused" -> "connection refused", not "hTTPS…"
    return text[:MESSAGE_LIMIT]

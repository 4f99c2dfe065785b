"""A minimal Kubernetes API server on 127.0.0.1 for the real `kubernetes` client to talk to.

It serves discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`) for a few
built-in kinds, and GET / server-side-apply PATCH of single objects.  Apply is simplified: the
result is the live object deep-merged with the applied one (maps merged, lists replaced), a
Secret's `stringData` folded into base64 `data`, plus the fields the server sets (uid,
resourceVersion, generation, creationTimestamp, managedFields).  `dryRun=All` never persists.

Tests seed live objects (`seed`), make a kind refuse (`refuse`: a Status body with the given code)
or fail transiently (`fail`: N times 503), and read every request back (`requests`, `applies`).
Requests must carry the bearer token of the kubeconfig `write_kubeconfig` writes.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

TOKEN = "fake-kube-token"
CREATED = "2024-01-01T00:00:00Z"


@dataclass(frozen=True)
class ResourceType:
    group: str            # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def discovery(self) -> dict[str, Any]:
        return {"name": self.plural, "singularName": self.kind.lower(), "namespaced": self.namespaced,
                "kind": self.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}


DEFAULT_RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "ConfigMap", "configmaps"),
    ResourceType("", "v1", "Secret", "secrets"),
    ResourceType("", "v1", "Service", "services"),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts"),
    ResourceType("", "v1", "Namespace", "namespaces", namespaced=False),
    ResourceType("apps", "v1", "Deployment", "deployments"),
    ResourceType("apps", "v1", "StatefulSet", "statefulsets"),
    ResourceType("batch", "v1", "Job", "jobs"),
    ResourceType("batch", "v1", "CronJob", "cronjobs"),
    ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses"),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
)


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    body: Any = None


@dataclass
class _Refusal:
    code: int
    reason: str
    message: str
    name: str | None


@dataclass
class _State:
    objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = field(default_factory=dict)
    refusals: dict[str, list[_Refusal]] = field(default_factory=dict)
    failures: dict[str, list[int]] = field(default_factory=dict)      # kind -> [remaining, code]
    requests: list[Recorded] = field(default_factory=list)
    version: int = 100


def deep_merge(base: Any, patch: Any) -> Any:
    """Maps merged key by key (a None value deletes), anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = deep_merge(out.get(key), value)
        return out
    return copy.deepcopy(patch)


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeKube:
    """The fake API server.  `start()` / `stop()`, or use it as a context manager."""

    def __init__(self, resources: Iterable[ResourceType] = DEFAULT_RESOURCES) -> None:
        self.resources = list(resources)
        self._state = _State()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeKube:
        fake = self

        class Handler(_Handler):
            kube = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fakekube", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeKube:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def write_kubeconfig(self, path: Path, *, context: str = "fake", namespace: str | None = None,
                         server: str | None = None) -> Path:
        """A kubeconfig whose `context` (the current one) points at this server with its token."""
        ctx: dict[str, Any] = {"cluster": "fake", "user": "fake"}
        if namespace:
            ctx["namespace"] = namespace
        doc = {"apiVersion": "v1", "kind": "Config", "preferences": {},
               "clusters": [{"name": "fake", "cluster": {"server": server or self.url}}],
               "users": [{"name": "fake", "user": {"token": TOKEN}}],
               "contexts": [{"name": context, "context": ctx}],
               "current-context": context}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc))
        return path

    # -- what tests control --------------------------------------------------------------------

    def resource_type(self, api_version: str, kind: str) -> ResourceType | None:
        return next((r for r in self.resources if r.group_version == api_version and r.kind == kind), None)

    def seed(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store `obj` as a live object (server fields added); returns what is stored."""
        rt = self.resource_type(obj["apiVersion"], obj["kind"])
        assert rt is not None, f"unknown kind {obj['apiVersion']} {obj['kind']}"
        meta = obj.get("metadata", {})
        namespace = (meta.get("namespace") or "default") if rt.namespaced else None
        with self._lock:
            stored = self._finish(rt, None, copy.deepcopy(obj), namespace, "kubectl", "Update", persist=True)
        return copy.deepcopy(stored)

    def live(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        rt = self.resource_type(api_version, kind)
        assert rt is not None
        with self._lock:
            found = self._state.objects.get((rt.group_version, rt.plural, namespace, name))
        return copy.deepcopy(found)

    def refuse(self, kind: str, message: str, *, code: int = 422, reason: str = "Invalid",
               name: str | None = None) -> None:
        """Answer every apply of `kind` (only `name`, if given) with `code` and a Status body."""
        with self._lock:
            self._state.refusals.setdefault(kind, []).append(_Refusal(code, reason, message, name))

    def fail(self, kind: str, times: int, *, code: int = 503) -> None:
        """Answer the next `times` object requests (GET or PATCH) for `kind` with `code`."""
        with self._lock:
            self._state.failures[kind] = [times, code]

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._state.requests)

    def applies(self, kind: str | None = None) -> list[Recorded]:
        """The PATCH requests (of `kind`, if given), in order."""
        return [r for r in self.requests if r.method == "PATCH"
                and (kind is None or (isinstance(r.body, dict) and r.body.get("kind") == kind))]

    # -- serving (called by the handler, under the lock) ----------------------------------------

    def _find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return next((r for r in self.resources
                     if (r.group, r.version, r.plural) == (group, version, plural)), None)

    def _finish(self, rt: ResourceType, live: dict[str, Any] | None, obj: dict[str, Any], namespace: str | None,
                manager: str, operation: str, *, persist: bool) -> dict[str, Any]:
        """Server-set fields on `obj`; stored when `persist`."""
        if rt.kind == "Secret" and isinstance(obj.get("stringData"), dict):
            data = obj.setdefault("data", {})
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        meta = obj.setdefault("metadata", {})
        if namespace is None:
            meta.pop("namespace", None)
        else:
            meta["namespace"] = namespace
        live_meta = (live or {}).get("metadata", {})
        if persist:
            self._state.version += 1
        meta["uid"] = live_meta.get("uid") or str(uuid.uuid4())
        meta["resourceVersion"] = str(self._state.version)
        meta["creationTimestamp"] = live_meta.get("creationTimestamp") or CREATED
        meta["generation"] = int(live_meta.get("generation", 0)) + 1
        others = [m for m in live_meta.get("managedFields", []) if m.get("manager") != manager]
        meta["managedFields"] = [*others, {"manager": manager, "operation": operation,
                                           "apiVersion": rt.group_version, "time": CREATED,
                                           "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]
        if persist:
            self._state.objects[(rt.group_version, rt.plural, namespace, meta["name"])] = obj
        return obj


class _Handler(BaseHTTPRequestHandler):
    kube: FakeKube
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True      # headers and body are separate writes: no delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
        return None

    # -- plumbing --------------------------------------------------------------------------------

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send(code, status_body(code, reason, message))

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:
                body = yaml.safe_load(raw.decode())
            except (yaml.YAMLError, UnicodeDecodeError):
                body = raw
        with self.kube._lock:
            self.kube._state.requests.append(
                Recorded(method, parts.path, query, self.headers.get("Content-Type"), copy.deepcopy(body)))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._status(401, "Unauthorized", "Unauthorized")
            return
        segments = [s for s in parts.path.split("/") if s]
        if method == "GET" and self._discovery(segments):
            return
        self._object(method, segments, query, body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._handle("GET")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    # -- discovery -------------------------------------------------------------------------------

    def _discovery(self, segments: list[str]) -> bool:
        resources = self.kube.resources
        if segments == ["version"]:
            self._send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})
        elif segments == ["api"]:
            self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        elif segments == ["apis"]:
            groups: dict[str, list[str]] = {}
            for r in resources:
                if r.group and r.version not in groups.setdefault(r.group, []):
                    groups[r.group].append(r.version)
            self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in versions],
                 "preferredVersion": {"groupVersion": f"{g}/{versions[0]}", "version": versions[0]}}
                for g, versions in groups.items()]})
        elif segments in (["api", "v1"],) or (len(segments) == 3 and segments[0] == "apis"):
            group, version = ("", "v1") if segments[0] == "api" else (segments[1], segments[2])
            listed = [r for r in resources if (r.group, r.version) == (group, version)]
            if not listed:
                self._status(404, "NotFound", "the server could not find the requested resource")
            else:
                gv = listed[0].group_version
                self._send(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                                 "resources": [r.discovery() for r in listed]})
        else:
            return False
        return True

    # -- objects ---------------------------------------------------------------------------------

    def _object(self, method: str, segments: list[str], query: dict[str, str], body: Any) -> None:
        if segments[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segments[2:]
        elif len(segments) >= 3 and segments[0] == "apis":
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            self._status(404, "NotFound", "the server could not find the requested resource")
            return
        namespace: str | None = None
        if len(rest) == 4 and rest[0] == "namespaces":
            namespace, plural, name = rest[1], rest[2], rest[3]
        elif len(rest) == 2:
            plural, name = rest
        else:
            self._status(405, "MethodNotAllowed", "only single objects are served")
            return
        kube = self.kube
        rt = kube._find(group, version, plural)
        if rt is None or rt.namespaced != (namespace is not None):
            self._status(404, "NotFound", "the server could not find the requested resource")
            return
        with kube._lock:
            failing = kube._state.failures.get(rt.kind)
            if failing and failing[0] > 0:
                failing[0] -= 1
                code = failing[1]
                answer: tuple[int, dict[str, Any]] | None = (code, status_body(
                    code, "ServiceUnavailable", "the server is currently unable to handle the request"))
            else:
                answer = None
        if answer is not None:
            self._send(*answer)
            return
        key = (rt.group_version, rt.plural, namespace, name)
        resource_text = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        if method == "GET":
            with kube._lock:
                found = copy.deepcopy(kube._state.objects.get(key))
            if found is None:
                self._status(404, "NotFound", f'{resource_text} "{name}" not found')
            else:
                self._send(200, found)
            return
        if method != "PATCH":
            self._status(405, "MethodNotAllowed", f"{method} is not served by the fake")
            return
        self._apply(rt, key, namespace, name, query, body, resource_text)

    def _apply(self, rt: ResourceType, key: tuple[str, str, str | None, str], namespace: str | None, name: str,
               query: dict[str, str], body: Any, resource_text: str) -> None:
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/apply-patch+yaml":
            self._status(415, "UnsupportedMediaType", "the fake only serves server-side apply patches")
            return
        manager = query.get("fieldManager")
        if not manager:
            self._status(400, "BadRequest", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required "
                         "value: is required for apply requests")
            return
        if query.get("dryRun") not in (None, "All"):
            self._status(400, "BadRequest", f"invalid dry run option: {query['dryRun']}")
            return
        if not isinstance(body, dict):
            self._status(400, "BadRequest", "the body of the request was in an unknown format")
            return
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if body.get("apiVersion") != rt.group_version or body.get("kind") != rt.kind:
            self._status(400, "BadRequest", f"apiVersion/kind {body.get('apiVersion')}/{body.get('kind')} "
                         f"do not match the request {rt.group_version}/{rt.kind}")
            return
        if meta.get("name") != name:
            self._status(400, "BadRequest", "the name of the object does not match the name on the URL")
            return
        if meta.get("namespace") not in (None, namespace):
            self._status(400, "BadRequest",
                         "the namespace of the provided object does not match the namespace sent on the request")
            return
        kube = self.kube
        with kube._lock:
            refusal = next((r for r in kube._state.refusals.get(rt.kind, []) if r.name in (None, name)), None)
        if refusal is not None:
            self._status(refusal.code, refusal.reason, refusal.message)
            return
        persist = query.get("dryRun") != "All"
        with kube._lock:
            live = copy.deepcopy(kube._state.objects.get(key))
            merged = deep_merge(live or {}, body)
            result = kube._finish(rt, live, merged, namespace, manager, "Apply", persist=persist)
            result = copy.deepcopy(result)
        self._send(200 if live is not None else 201, result)

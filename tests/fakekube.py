"""A Kubernetes API stand-in on 127.0.0.1 for the real `kubernetes` client (and prbot) to talk to.

What it serves
- Discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`) for built-in kinds
  (`BUILTIN`) and for every CustomResourceDefinition stored — the Argo CD and Flux CRDs are
  installed at start (`operators=True`): Application, Kustomization, HelmRelease, GitRepository,
  HelmRepository, HelmChart, OCIRepository.  `versions={kind: [versions]}` serves an operator kind
  at other versions (the first preferred; `[]`: not installed at all), e.g. `FLUX_2_2` (Flux
  2.0–2.2: HelmRelease v2beta2/v2beta1, HelmChart and HelmRepository v1beta2/v1beta1 only).  A CRD
  created through the API is served at once (`establish_crds=False` holds new ones back until
  `establish()`).  A seeded `crd(..., namespaced=False)` serves a cluster-scoped custom kind
  (`CLUSTER_SCOPED_CRDS`: ClusterSecretStore of external-secrets.io, GatewayClass of
  gateway.networking.k8s.io).
- Objects: GET and LIST (all namespaces or one; `labelSelector` with =, ==, !=, in, notin, exists,
  !exists), POST (create), PUT (replace), PATCH — server-side apply (`application/apply-patch+yaml`,
  field manager required, simplified field ownership: fields a manager stops applying are removed
  unless another applier still sets them), merge patch (`application/merge-patch+json`, and
  strategic merge treated alike) and JSON patch (`application/json-patch+json`) — and DELETE
  (a Namespace takes its objects with it).  `dryRun=All` never persists.  `metadata.resourceVersion`
  in a patch or replace is a precondition (409 Conflict), as on a real API server.
- Names, as the real API server checks them: the path is percent-decoded, then split on "/" (as
  Go's URL.Path is); a namespace that is not an RFC 1123 label or a name that is not a path segment
  (".", "..", "%") is refused with 400; a write whose name breaks its kind's rule (RFC 1123
  subdomain; label for a Namespace; RFC 1035 label for a Service; path segment for RBAC kinds) with
  422; a body whose name or namespace disagrees with the path with 400.  `GET …/<name>/status`
  serves the object.
- Subresources that reach past the API server: `proxy` answers for the service, pod or node behind
  it (a real request, with the caller's credentials); `exec`, `attach` and `portforward` answer 400
  (upgrade required).  Each is recorded in `subresource_calls`, and leaving the server (`with`)
  fails when there is any: prbot must never make one.
- Namespaces: writing an object into a namespace that does not exist is refused like the real API
  (404, `namespaces "x" not found`, details kind `namespaces`).  `default`, `kube-system` and
  `kube-public` exist; `seed()` creates the namespace of what it stores.
- Server fields: uid, resourceVersion, creationTimestamp, managedFields; `generation` moves when
  anything but metadata and status changes.  Writes through the API never change `status`: the
  controllers below do.  A Secret's `stringData` is folded into base64 `data`.

Controllers (scriptable; only persisted writes through the API trigger them, never `seed()`)
- Argo CD Application: a new `operation` starts a sync: Running → Succeeded (or Failed) with
  `syncResult.revision`, `sync.status`/`sync.revision`, `health.status`, `status.resources`; the
  `operation` field is removed when it finishes.
- Flux Kustomization / HelmRelease: a new `reconcile.fluxcd.io/requestedAt` annotation starts a
  reconcile: Ready=Unknown (Progressing) → `lastHandledReconcileAt` = the token, `Ready=True`,
  `lastAppliedRevision` = the source's artifact revision (Kustomization; a HelmRelease gets
  `history[0].chartVersion`) — or `Ready=False` with a reason and message.
- Flux sources (GitRepository, HelmRepository, HelmChart, OCIRepository): the annotation makes them
  fetch at once: `status.artifact.revision` becomes what `set_source_revision()` said.
- Deployment / StatefulSet / DaemonSet: a created object or a new generation starts a rollout:
  observedGeneration, then updated / ready / available replicas step by step to all of them — or
  a Deployment past its progress deadline.

Each run has `steps` states; the last is the outcome.  It advances one state per GET of the object
(`advance_on_read`, default on: one poll = one step) or on demand (`advance()`, `settle()`).
`script(kind, name=None, namespace=None, outcome=..., steps=..., message=...)` sets how runs of
matching objects go: outcome `healthy` (default), `failed`, `degraded` (Argo CD: synced, then
Degraded) or `stuck` (never leaves its first state).  Defaults: healthy in 2 steps.

What tests read and control
- `seed(obj)` (stored as given, status included), `live(api_version, kind, namespace, name)`,
  `objects(kind, namespace=, label=)`, `update_status(...)` (a controller of the test's own);
- `refuse(kind, message, code=422, name=None)`: answer writes of `kind` with that Status;
  `fail(kind, times, code=503)`: the next `times` requests for `kind` fail;
- `requests` (every request: method, path, query, content type, body, decoded segments),
  `applies(kind)`, `patches(kind, content_type)`, `deletes(kind)`, `touching(namespace)`,
  `strays()` (requests that are neither discovery nor one object or collection), `subresource_calls`;
- `write_kubeconfig(path)`: a kubeconfig for this server and its bearer token (`TOKEN`; other
  tokens get 401).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

TOKEN = "fake-kube-token"
CREATED = "2024-01-01T00:00:00Z"
FINISHED = "2024-01-01T00:01:00Z"
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
SOURCE_KINDS = ("GitRepository", "HelmRepository", "HelmChart", "OCIRepository", "Bucket")


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

    @property
    def text(self) -> str:
        """How the API names the resource in messages: `deployments.apps`, `configmaps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> dict[str, Any]:
        return {"name": self.plural, "singularName": self.kind.lower(), "namespaced": self.namespaced,
                "kind": self.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}


BUILTIN: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "ConfigMap", "configmaps"),
    ResourceType("", "v1", "Secret", "secrets"),
    ResourceType("", "v1", "Service", "services"),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts"),
    ResourceType("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ResourceType("", "v1", "Namespace", "namespaces", namespaced=False),
    ResourceType("apps", "v1", "Deployment", "deployments"),
    ResourceType("apps", "v1", "StatefulSet", "statefulsets"),
    ResourceType("apps", "v1", "DaemonSet", "daemonsets"),
    ResourceType("batch", "v1", "Job", "jobs"),
    ResourceType("batch", "v1", "CronJob", "cronjobs"),
    ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses"),
    ResourceType("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    ResourceType("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    ResourceType("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    ResourceType("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    ResourceType("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
                 namespaced=False),
    ResourceType("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False),
    ResourceType("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", namespaced=False),
    ResourceType("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False),
)
DEFAULT_RESOURCES = BUILTIN           # the name older tests used


def crd(group: str, kind: str, plural: str, versions: Iterable[str], *, namespaced: bool = True) -> dict[str, Any]:
    """A CustomResourceDefinition object (what `kubectl get crd -o yaml` shows, trimmed)."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced" if namespaced else "Cluster",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                     "versions": [{"name": v, "served": True, "storage": i == 0,
                                   "schema": {"openAPIV3Schema": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}
                                  for i, v in enumerate(versions)]}}


OPERATORS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (      # group, kind, plural, versions
    ("argoproj.io", "Application", "applications", ("v1alpha1",)),
    ("kustomize.toolkit.fluxcd.io", "Kustomization", "kustomizations", ("v1",)),
    ("helm.toolkit.fluxcd.io", "HelmRelease", "helmreleases", ("v2",)),
    ("source.toolkit.fluxcd.io", "GitRepository", "gitrepositories", ("v1",)),
    ("source.toolkit.fluxcd.io", "HelmRepository", "helmrepositories", ("v1",)),
    ("source.toolkit.fluxcd.io", "HelmChart", "helmcharts", ("v1",)),
    ("source.toolkit.fluxcd.io", "OCIRepository", "ocirepositories", ("v1beta2",)),
)
OPERATOR_CRDS: tuple[dict[str, Any], ...] = tuple(crd(g, k, p, v) for g, k, p, v in OPERATORS)
FLUX_2_2: dict[str, list[str]] = {          # Flux 2.0–2.2: no v1 HelmChart / HelmRepository, no v2 HelmRelease
    "HelmRelease": ["v2beta2", "v2beta1"], "HelmChart": ["v1beta2", "v1beta1"],
    "HelmRepository": ["v1beta2", "v1beta1"]}


CLUSTER_SCOPED_CRDS: tuple[dict[str, Any], ...] = (       # CRDs of cluster-scoped kinds, as operators install them
    crd("external-secrets.io", "ClusterSecretStore", "clustersecretstores", ("v1beta1",), namespaced=False),
    crd("gateway.networking.k8s.io", "GatewayClass", "gatewayclasses", ("v1",), namespaced=False),
)


def operator_crds(versions: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
    """The Argo CD and Flux CRDs, with `versions` (kind -> versions served; [] for none) changed."""
    out = []
    for group, kind, plural, default in OPERATORS:
        served = list((versions or {}).get(kind, default))
        if served:
            out.append(crd(group, kind, plural, served))
    return out


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str                       # as sent (percent-encoded)
    query: dict[str, str]
    content_type: str | None
    body: Any = None
    segments: tuple[str, ...] = ()  # the path decoded, then split on "/" (what the API server routes on)
    raw_query: str = ""


@dataclass
class _Refusal:
    code: int
    reason: str
    message: str
    name: str | None


@dataclass
class Script:
    """How runs of matching objects go (see the module docstring)."""

    outcome: str = "healthy"          # healthy | failed | degraded | stuck
    steps: int = 2
    message: str | None = None
    workloads: tuple[str, ...] = ()   # Argo CD / Flux: Deployments ("name" or "namespace/name") it holds

    def __post_init__(self) -> None:
        if self.outcome not in ("healthy", "failed", "degraded", "stuck"):
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if self.steps < 1:
            raise ValueError("a run has at least one step")


@dataclass
class _Run:
    key: tuple[str, str, str | None, str]
    kind: str
    states: list[Callable[[dict[str, Any]], None]]
    position: int = 0
    stuck: bool = False

    @property
    def finished(self) -> bool:
        return self.position >= len(self.states)


class _Reject(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


@dataclass
class _State:
    objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = field(default_factory=dict)
    applied: dict[tuple[tuple[str, str, str | None, str], str], dict[str, Any]] = field(default_factory=dict)
    refusals: dict[str, list[_Refusal]] = field(default_factory=dict)
    failures: dict[str, list[int]] = field(default_factory=dict)      # kind -> [remaining, code]
    requests: list[Recorded] = field(default_factory=list)
    runs: dict[tuple[str, str, str | None, str], _Run] = field(default_factory=dict)
    scripts: dict[tuple[str, str | None, str | None], Script] = field(default_factory=dict)
    sources: dict[tuple[str | None, str], str] = field(default_factory=dict)
    pending_crds: set[str] = field(default_factory=set)
    subresource_calls: list[Recorded] = field(default_factory=list)     # proxy, exec, attach, portforward
    version: int = 100


# --------------------------------------------------------------------------------------------
# Merging, patching, selecting
# --------------------------------------------------------------------------------------------

def deep_merge(base: Any, patch: Any) -> Any:
    """RFC 7386 merge: maps merged key by key (a None value deletes), anything else replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = deep_merge(out.get(key), value)
        return out
    return copy.deepcopy(patch)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every leaf path of nested maps (a list is a leaf)."""
    if not isinstance(node, dict) or not node:
        return {prefix} if prefix else set()
    out: set[tuple[str, ...]] = set()
    for key, value in node.items():
        out |= _paths(value, (*prefix, str(key)))
    return out


def _drop(node: Any, path: tuple[str, ...]) -> None:
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        node = node[key]
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _Reject(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict) and part in doc:
            doc = doc[part]
        else:
            raise _Reject(422, "Invalid", f"the path {'/'.join(parts)!r} does not exist")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy, test."""
    if not isinstance(ops, list):
        raise _Reject(400, "BadRequest", "a JSON patch is a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _Reject(400, "BadRequest", "each JSON patch operation needs op and path")
        parts = _pointer(op["path"])
        name = op["op"]
        if name == "test":
            if _walk(doc, parts) != op.get("value"):
                raise _Reject(422, "Invalid", f"test operation failed at {op['path']}")
            continue
        if name in ("move", "copy"):
            value = copy.deepcopy(_walk(doc, _pointer(op["from"])))
            if name == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            doc = json_patch(doc, [{"op": "add", "path": op["path"], "value": value}])
            continue
        if not parts:
            if name in ("add", "replace"):
                doc = copy.deepcopy(op.get("value"))
                continue
            raise _Reject(422, "Invalid", "cannot remove the whole document")
        parent = _walk(doc, parts[:-1])
        last = parts[-1]
        if name == "add":
            if isinstance(parent, list):
                parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op.get("value")))
            else:
                parent[last] = copy.deepcopy(op.get("value"))
        elif name in ("remove", "replace"):
            if isinstance(parent, list):
                index = int(last)
                if index >= len(parent):
                    raise _Reject(422, "Invalid", f"the path {op['path']!r} does not exist")
                if name == "remove":
                    parent.pop(index)
                else:
                    parent[index] = copy.deepcopy(op.get("value"))
            else:
                if last not in parent:
                    raise _Reject(422, "Invalid", f"the path {op['path']!r} does not exist")
                if name == "remove":
                    del parent[last]
                else:
                    parent[last] = copy.deepcopy(op.get("value"))
        else:
            raise _Reject(400, "BadRequest", f"unknown JSON patch operation {name!r}")
    return doc


_SET_TERM = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """A label selector as the API server reads it."""
    if not selector or not selector.strip():
        return lambda labels: True
    terms: list[Callable[[dict[str, str]], bool]] = []
    for raw in re.split(r",(?![^()]*\))", selector):
        term = raw.strip()
        m = _SET_TERM.match(term)
        if m:
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",") if v.strip()}
            if op == "in":
                terms.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                terms.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in term:
            key, value = (t.strip() for t in term.split("!=", 1))
            terms.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (t.strip() for t in term.replace("==", "=").split("=", 1))
            terms.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            terms.append(lambda labels, k=absent: k not in labels)
        else:
            terms.append(lambda labels, k=term: k in labels)
    return lambda labels: all(t(labels) for t in terms)


_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
NAME_RULES: dict[str, tuple[re.Pattern[str], int, str]] = {
    "label": (re.compile(rf"{_LABEL}\Z"), 63,
              "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
              "start and end with an alphanumeric character"),
    "subdomain": (re.compile(rf"{_LABEL}(\.{_LABEL})*\Z"), 253,
                  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                  "'.', and must start and end with an alphanumeric character"),
    "dns1035": (re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z"), 63,
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                "alphabetic character, and end with an alphanumeric character"),
    "segment": (re.compile(r"[^/%]+\Z"), 10_000, "may not contain '/' or '%', and may not be '.' or '..'"),
}
_RBAC = "rbac.authorization.k8s.io"
KIND_RULES = {("", "Namespace"): "label", ("", "Service"): "dns1035", (_RBAC, "Role"): "segment",
              (_RBAC, "ClusterRole"): "segment", (_RBAC, "RoleBinding"): "segment",
              (_RBAC, "ClusterRoleBinding"): "segment"}
SUBRESOURCES = {"proxy": ("services", "pods", "nodes"), "exec": ("pods",), "attach": ("pods",),
                "portforward": ("pods",)}


def name_error(rule: str, value: str) -> str | None:
    """What the API server says of `value` under `rule` (apimachinery's validation), or None."""
    pattern, limit, words = NAME_RULES[rule]
    if len(value) > limit:
        return f"must be no more than {limit} characters"
    if value in (".", "..") or not pattern.match(value):
        return words
    return None


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def _conditions(**conds: tuple[str, str, str]) -> list[dict[str, Any]]:
    return [{"type": kind, "status": status, "reason": reason, "message": message,
             "lastTransitionTime": FINISHED} for kind, (status, reason, message) in conds.items()]


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

class FakeKube:
    """The fake API server.  `start()` / `stop()`, or use it as a context manager."""

    def __init__(self, resources: Iterable[ResourceType] = BUILTIN, *, operators: bool = True,
                 namespaces: Iterable[str] = ("default", "kube-system", "kube-public"),
                 advance_on_read: bool = True, establish_crds: bool = True, nodes: int = 3,
                 versions: Mapping[str, Sequence[str]] | None = None) -> None:
        self.builtin = list(resources)
        self.advance_on_read = advance_on_read
        self.establish_crds = establish_crds
        self.nodes = nodes
        self._state = _State()
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for name in namespaces:
            self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        if operators:
            for definition in operator_crds(versions):
                self.seed(definition)

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
        calls = self.subresource_calls
        if calls and exc[0] is None:
            raise AssertionError("the Kubernetes API got subresource requests prbot must never make: "
                                 + ", ".join(f"{r.method} {r.path}" for r in calls))

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

    # -- kinds served --------------------------------------------------------------------------

    @property
    def resources(self) -> list[ResourceType]:
        """Every kind served: the built-in ones and those of established CRDs."""
        with self._lock:
            out = list(self.builtin)
            for key, obj in self._state.objects.items():
                if key[1] != "customresourcedefinitions" or obj["metadata"]["name"] in self._state.pending_crds:
                    continue
                spec = obj.get("spec") or {}
                names = spec.get("names") or {}
                for version in spec.get("versions") or []:
                    if version.get("served", True):
                        out.append(ResourceType(spec.get("group", ""), version["name"], names.get("kind", ""),
                                                names.get("plural", ""), spec.get("scope") != "Cluster"))
            return out

    def resource_type(self, api_version: str, kind: str) -> ResourceType | None:
        return next((r for r in self.resources if r.group_version == api_version and r.kind == kind), None)

    def _find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return next((r for r in self.resources if (r.group, r.version, r.plural) == (group, version, plural)), None)

    def establish(self) -> None:
        """Serve the CRDs held back (`establish_crds=False`)."""
        with self._lock:
            self._state.pending_crds.clear()

    # -- what tests control --------------------------------------------------------------------

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str | None, str]:
        return (rt.group, rt.plural, namespace if rt.namespaced else None, name)

    def seed(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store `obj` as a live object as it is (status included; server fields added), creating its
        namespace if needed.  Starts no controller run.  Returns what is stored."""
        rt = self.resource_type(obj["apiVersion"], obj["kind"])
        assert rt is not None, f"unknown kind {obj['apiVersion']} {obj['kind']}"
        meta = obj.get("metadata", {})
        namespace = (meta.get("namespace") or "default") if rt.namespaced else None
        with self._lock:
            if namespace is not None and self._get_namespace(namespace) is None:
                self.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            key = self._key(rt, namespace, meta["name"])
            live = self._state.objects.get(key)
            stored = self._finish(rt, live, copy.deepcopy(obj), namespace, "kubectl", "Update", persist=True,
                                  keep_status=False)
        return copy.deepcopy(stored)

    def live(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        rt = self.resource_type(api_version, kind)
        assert rt is not None, f"unknown kind {api_version} {kind}"
        with self._lock:
            found = self._state.objects.get(self._key(rt, namespace, name))
        return copy.deepcopy(found)

    def objects(self, kind: str | None = None, *, namespace: str | None = None,
                label: tuple[str, str] | None = None) -> list[dict[str, Any]]:
        """Live objects (of `kind`, in `namespace`, carrying `label`), for assertions."""
        with self._lock:
            found = [copy.deepcopy(o) for o in self._state.objects.values()
                     if (kind is None or o.get("kind") == kind)
                     and (namespace is None or o["metadata"].get("namespace") == namespace)
                     and (label is None or (o["metadata"].get("labels") or {}).get(label[0]) == label[1])]
        return found

    def update_status(self, api_version: str, kind: str, namespace: str | None, name: str,
                      status: dict[str, Any]) -> None:
        """Merge `status` into a live object's status (a controller of the test's own)."""
        rt = self.resource_type(api_version, kind)
        assert rt is not None
        with self._lock:
            obj = self._state.objects[self._key(rt, namespace, name)]
            obj["status"] = deep_merge(obj.get("status") or {}, status)

    def refuse(self, kind: str, message: str, *, code: int = 422, reason: str = "Invalid",
               name: str | None = None) -> None:
        """Answer every write of `kind` (only `name`, if given) with `code` and a Status body."""
        with self._lock:
            self._state.refusals.setdefault(kind, []).append(_Refusal(code, reason, message, name))

    def fail(self, kind: str, times: int, *, code: int = 503) -> None:
        """Answer the next `times` object requests (any verb) for `kind` with `code`."""
        with self._lock:
            self._state.failures[kind] = [times, code]

    def script(self, kind: str, name: str | None = None, namespace: str | None = None, *,
               outcome: str = "healthy", steps: int = 2, message: str | None = None,
               workloads: Iterable[str] = ()) -> None:
        """How the controller runs objects of `kind` (only `name` / `namespace`, if given)."""
        with self._lock:
            self._state.scripts[(kind, namespace, name)] = Script(outcome, steps, message, tuple(workloads))

    def set_source_revision(self, namespace: str | None, name: str, revision: str) -> None:
        """What Flux source `name` fetches when asked to reconcile (e.g. `main@sha1:<sha>`);
        namespace None: any namespace."""
        with self._lock:
            self._state.sources[(namespace, name)] = revision

    def advance(self, kind: str | None = None, name: str | None = None, *, steps: int = 1) -> int:
        """Move runs (of `kind` / `name`) `steps` states on; the number of runs moved."""
        moved = 0
        with self._lock:
            for run in list(self._state.runs.values()):
                if (kind is None or run.kind == kind) and (name is None or run.key[3] == name):
                    for _ in range(steps):
                        moved += self._step(run)
        return moved

    def settle(self) -> None:
        """Run every run to its end (stuck runs stay stuck)."""
        with self._lock:
            for run in list(self._state.runs.values()):
                while self._step(run):
                    pass

    def running(self, kind: str | None = None) -> list[str]:
        """`Kind namespace/name` of the runs not finished."""
        with self._lock:
            return [f"{r.kind} {r.key[2]}/{r.key[3]}" for r in self._state.runs.values()
                    if (not r.finished or r.stuck) and (kind is None or r.kind == kind)]

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._state.requests)

    def applies(self, kind: str | None = None) -> list[Recorded]:
        """The server-side apply requests (of `kind`, if given), in order."""
        return [r for r in self.patches(kind) if (r.content_type or "").startswith("application/apply-patch")]

    def patches(self, kind: str | None = None, content_type: str | None = None) -> list[Recorded]:
        """The PATCH requests (of `kind`: its plural is on the path or it is the body's kind)."""
        plural = self._plural(kind)
        return [r for r in self.requests if r.method == "PATCH"
                and (kind is None or (isinstance(r.body, dict) and r.body.get("kind") == kind)
                     or (plural is not None and f"/{plural}/" in r.path))
                and (content_type is None or (r.content_type or "").startswith(content_type))]

    def deletes(self, kind: str | None = None) -> list[Recorded]:
        plural = self._plural(kind)
        return [r for r in self.requests if r.method == "DELETE"
                and (plural is None or f"/{plural}/" in r.path)]

    def touching(self, namespace: str) -> list[Recorded]:
        """Every request whose path names `namespace` (as a namespace, or the Namespace object)."""
        return [r for r in self.requests if f"/namespaces/{namespace}/" in r.path.rstrip("/") + "/"]

    @property
    def subresource_calls(self) -> list[Recorded]:
        """Requests for the proxy, exec, attach or portforward subresources (prbot must never make one)."""
        with self._lock:
            return list(self._state.subresource_calls)

    def forget_subresource_calls(self) -> None:
        """For a test that calls a subresource itself on purpose (leaving the server would fail otherwise)."""
        with self._lock:
            self._state.subresource_calls.clear()

    def strays(self) -> list[Recorded]:
        """Requests that are neither discovery nor exactly one object or collection
        (``/api(s)/<group/version>[/namespaces/<ns>]/<plural>[/<name>]``, each part one valid segment)."""
        return [r for r in self.requests if not _plain(r.segments)]

    def _plural(self, kind: str | None) -> str | None:
        if kind is None:
            return None
        return next((r.plural for r in self.resources if r.kind == kind), None)

    # -- storage (under the lock) ---------------------------------------------------------------

    def _get_namespace(self, name: str) -> dict[str, Any] | None:
        return self._state.objects.get(("", "namespaces", None, name))

    def _finish(self, rt: ResourceType, live: dict[str, Any] | None, obj: dict[str, Any], namespace: str | None,
                manager: str, operation: str, *, persist: bool, keep_status: bool = True) -> dict[str, Any]:
        """Server-set fields on `obj`; stored when `persist` (then controllers may start)."""
        obj["apiVersion"], obj["kind"] = rt.group_version, rt.kind
        if rt.kind == "Secret" and isinstance(obj.get("stringData"), dict):
            data = obj.setdefault("data", {}) or {}
            obj["data"] = data
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(str(value).encode()).decode()
        if keep_status:
            if live is not None and "status" in live:
                obj["status"] = copy.deepcopy(live["status"])
            else:
                obj.pop("status", None)
        meta = obj.setdefault("metadata", {})
        if namespace is None:
            meta.pop("namespace", None)
        else:
            meta["namespace"] = namespace
        live_meta = (live or {}).get("metadata", {})
        if persist:
            self._state.version += 1
        meta["uid"] = live_meta.get("uid") or str(uuid.uuid4())
        meta["resourceVersion"] = str(self._state.version if persist else live_meta.get("resourceVersion")
                                      or self._state.version)
        meta["creationTimestamp"] = live_meta.get("creationTimestamp") or CREATED
        spec_of = lambda o: {k: v for k, v in (o or {}).items() if k not in ("metadata", "status")}  # noqa: E731
        generation = int(live_meta.get("generation", 0) or 0)
        meta["generation"] = generation + 1 if live is None or spec_of(live) != spec_of(obj) else generation
        others = [m for m in live_meta.get("managedFields", []) if m.get("manager") != manager]
        meta["managedFields"] = [*others, {"manager": manager, "operation": operation,
                                           "apiVersion": rt.group_version, "time": CREATED,
                                           "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]
        if persist:
            self._state.objects[self._key(rt, namespace, meta["name"])] = obj
        return obj

    def _write(self, rt: ResourceType, key: tuple[str, str, str | None, str], live: dict[str, Any] | None,
               new: dict[str, Any], namespace: str | None, manager: str, operation: str,
               persist: bool) -> dict[str, Any]:
        """Store a write made through the API and start the controllers it triggers."""
        before = copy.deepcopy(live)
        result = self._finish(rt, live, new, namespace, manager, operation, persist=persist)
        if persist:
            if rt.kind == "CustomResourceDefinition" and live is None and not self.establish_crds:
                self._state.pending_crds.add(result["metadata"]["name"])
            self._react(rt, key, before, result)
        return copy.deepcopy(result)

    def _delete(self, key: tuple[str, str, str | None, str]) -> dict[str, Any] | None:
        obj = self._state.objects.pop(key, None)
        self._state.runs.pop(key, None)
        for applied in [k for k in self._state.applied if k[0] == key]:
            del self._state.applied[applied]
        if obj is not None and key[:2] == ("", "namespaces"):
            for other in [k for k in self._state.objects if k[2] == key[3]]:
                self._delete(other)
        return obj

    # -- controllers (under the lock) --------------------------------------------------------------

    def _script_for(self, kind: str, namespace: str | None, name: str) -> Script:
        scripts = self._state.scripts
        return (scripts.get((kind, namespace, name)) or scripts.get((kind, None, name))
                or scripts.get((kind, namespace, None)) or scripts.get((kind, None, None)) or Script())

    def _react(self, rt: ResourceType, key: tuple[str, str, str | None, str], before: dict[str, Any] | None,
               after: dict[str, Any]) -> None:
        kind = rt.kind
        meta = after["metadata"]
        if kind == "Application" and rt.group == "argoproj.io":
            operation = after.get("operation")
            if isinstance(operation, dict) and operation != (before or {}).get("operation"):
                self._start(key, kind, self._argocd_states(key, operation))
        elif kind in ("Kustomization", "HelmRelease"):
            token = (meta.get("annotations") or {}).get(REQUESTED_AT)
            if token and token != ((before or {}).get("metadata", {}).get("annotations") or {}).get(REQUESTED_AT):
                self._start(key, kind, self._flux_states(key, kind, token))
        elif kind in SOURCE_KINDS and rt.group == "source.toolkit.fluxcd.io":
            token = (meta.get("annotations") or {}).get(REQUESTED_AT)
            if token and token != ((before or {}).get("metadata", {}).get("annotations") or {}).get(REQUESTED_AT):
                self._fetch_source(after, token)
        elif kind in WORKLOADS:
            if before is None or before["metadata"].get("generation") != meta.get("generation"):
                self._start(key, kind, self._rollout_states(key, kind))

    def _start(self, key: tuple[str, str, str | None, str], kind: str,
               states: list[Callable[[dict[str, Any]], None]]) -> None:
        script = self._script_for(kind, key[2], key[3])
        self._state.runs[key] = _Run(key, kind, states, stuck=script.outcome == "stuck")

    def _step(self, run: _Run) -> int:
        """Apply the run's next state to its object; 1 if it moved."""
        obj = self._state.objects.get(run.key)
        if obj is None or run.finished or (run.stuck and run.position >= 1):
            return 0
        run.states[run.position](obj)
        run.position += 1
        return 1

    def _on_read(self, key: tuple[str, str, str | None, str]) -> None:
        run = self._state.runs.get(key)
        if run is not None and self.advance_on_read:
            self._step(run)

    # Argo CD ------------------------------------------------------------------------------------

    def _argocd_states(self, key: tuple[str, str, str | None, str],
                       operation: dict[str, Any]) -> list[Callable[[dict[str, Any]], None]]:
        script = self._script_for("Application", key[2], key[3])
        sync = operation.get("sync") or {}
        revision = sync.get("revision") or next(iter(sync.get("revisions") or []), "")
        app = self._state.objects.get(key) or {}
        destination = ((app.get("spec") or {}).get("destination") or {}).get("namespace") or key[2]
        workloads = [w.rpartition("/")[::-2] for w in script.workloads or (key[3],)]     # (name, namespace)
        op = copy.deepcopy(operation)

        def resources(healthy: int, status: str = "Healthy", message: str = "") -> list[dict[str, Any]]:
            return [{"group": "apps", "version": "v1", "kind": "Deployment", "namespace": ns or destination,
                     "name": name, "status": "Synced",
                     "health": {"status": "Healthy" if i < healthy else status,
                                **({"message": message} if message and i >= healthy else {})}}
                    for i, (name, ns) in enumerate(workloads)]

        def running(obj: dict[str, Any]) -> None:
            status = obj.setdefault("status", {})
            status["operationState"] = {"operation": op, "phase": "Running", "startedAt": CREATED,
                                        "message": "one or more tasks are running"}
            status.setdefault("sync", {})["status"] = "OutOfSync"
            status["health"] = {"status": "Progressing"}
            status["resources"] = resources(0, "Progressing")

        def finished(phase: str, message: str) -> Callable[[dict[str, Any]], None]:
            def state(obj: dict[str, Any]) -> None:
                obj.pop("operation", None)
                status = obj.setdefault("status", {})
                status["operationState"] = {"operation": op, "phase": phase, "message": message,
                                            "startedAt": CREATED, "finishedAt": FINISHED,
                                            "syncResult": {"revision": revision}}
                if phase == "Succeeded":
                    status["sync"] = {"status": "Synced", "revision": revision}
            return state

        def health(value: str, healthy: int, message: str = "") -> Callable[[dict[str, Any]], None]:
            def state(obj: dict[str, Any]) -> None:
                status = obj.setdefault("status", {})
                status["health"] = {"status": value, **({"message": message} if message else {})}
                status["resources"] = resources(healthy, "Progressing" if value == "Progressing" else value, message)
            return state

        def combine(*parts: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
            def state(obj: dict[str, Any]) -> None:
                for part in parts:
                    part(obj)
            return state

        synced = finished("Succeeded", "successfully synced (all tasks run)")
        if script.outcome == "failed":
            final = finished("Failed", script.message or
                             'one or more objects failed to apply, reason: Deployment.apps "web" is invalid')
        elif script.outcome == "degraded":
            final = combine(synced, health("Degraded", 0, script.message
                                           or 'Deployment "web" exceeded its progress deadline'))
        else:
            final = combine(synced, health("Healthy", len(workloads)))
        if script.outcome == "stuck":
            return [running]
        states = [*([running] * (script.steps - 1)), final]
        if script.steps >= 3 and script.outcome != "failed":        # synced, workloads still rolling out
            states[-2] = combine(synced, health("Progressing", len(workloads) // 2))
        return states

    # Flux ---------------------------------------------------------------------------------------------

    def _source_of(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        spec = obj.get("spec") or {}
        ref = spec.get("sourceRef") or spec.get("chartRef") or ((spec.get("chart") or {}).get("spec") or {}).get(
            "sourceRef") or {}
        namespace = ref.get("namespace") or obj["metadata"].get("namespace")
        for key, found in self._state.objects.items():
            if found.get("kind") == ref.get("kind") and key[2] == namespace and key[3] == ref.get("name"):
                return found
        return None

    def _fetch_source(self, source: dict[str, Any], token: str) -> None:
        meta = source["metadata"]
        revision = (self._state.sources.get((meta.get("namespace"), meta["name"]))
                    or self._state.sources.get((None, meta["name"])))
        status = source.setdefault("status", {})
        if revision:
            status["artifact"] = {"revision": revision, "path": f"{source['kind'].lower()}/{meta['name']}.tar.gz"}
        status["lastHandledReconcileAt"] = token
        status["observedGeneration"] = meta.get("generation", 1)
        rev = (status.get("artifact") or {}).get("revision", "")
        status["conditions"] = _conditions(Ready=("True", "Succeeded", f"stored artifact for revision '{rev}'"))

    def _flux_states(self, key: tuple[str, str, str | None, str], kind: str,
                     token: str) -> list[Callable[[dict[str, Any]], None]]:
        script = self._script_for(kind, key[2], key[3])

        def reconciling(obj: dict[str, Any]) -> None:
            status = obj.setdefault("status", {})
            status["conditions"] = _conditions(
                Reconciling=("True", "Progressing", "Reconciliation in progress"),
                Ready=("Unknown", "Progressing", "Reconciliation in progress"))

        def final(obj: dict[str, Any]) -> None:
            status = obj.setdefault("status", {})
            status["lastHandledReconcileAt"] = token
            status["observedGeneration"] = obj["metadata"].get("generation", 1)
            source = self._source_of(obj)
            revision = ((source or {}).get("status", {}).get("artifact") or {}).get("revision", "")
            if kind == "Kustomization":
                status["lastAttemptedRevision"] = revision
            if script.outcome in ("failed", "degraded"):
                reason = "HealthCheckFailed" if kind == "Kustomization" else "UpgradeFailed"
                status["conditions"] = _conditions(Ready=("False", reason, script.message or (
                    "health check failed after 30s: timeout waiting for: [Deployment/web status: 'InProgress']"
                    if kind == "Kustomization" else "Helm upgrade failed: context deadline exceeded")))
                return
            if kind == "Kustomization":
                status["lastAppliedRevision"] = revision
                target_ns = (obj.get("spec") or {}).get("targetNamespace") or obj["metadata"].get("namespace")
                entries = [w.rpartition("/")[::-2] for w in script.workloads]         # (name, namespace)
                status["inventory"] = {"entries": [{"id": f"{ns or target_ns}_{name}_apps_Deployment", "v": "v1"}
                                                   for name, ns in entries]}
                message = f"Applied revision: {revision}"
            else:
                chart = obj.get("spec", {}).get("chart", {}).get("spec", {}).get("version") or "1.0.0"
                status["history"] = [{"chartVersion": chart, "status": "deployed", "version": 1}]
                status["lastAttemptedRevision"] = chart
                message = f"Helm upgrade succeeded for release {key[3]} with chart {chart}"
            status["conditions"] = _conditions(Ready=("True", "ReconciliationSucceeded", message))

        if script.outcome == "stuck":
            return [reconciling]
        return [*([reconciling] * (script.steps - 1)), final]

    # workloads -----------------------------------------------------------------------------------------

    def _rollout_states(self, key: tuple[str, str, str | None, str],
                        kind: str) -> list[Callable[[dict[str, Any]], None]]:
        script = self._script_for(kind, key[2], key[3])
        n = script.steps

        def state(k: int) -> Callable[[dict[str, Any]], None]:
            def apply(obj: dict[str, Any]) -> None:
                spec = obj.get("spec") or {}
                generation = obj["metadata"].get("generation", 1)
                status = obj.setdefault("status", {})
                status["observedGeneration"] = generation
                if kind == "DaemonSet":
                    desired = self.nodes
                    done = desired if k == n else math.floor(desired * k / n)
                    status.update({"desiredNumberScheduled": desired, "currentNumberScheduled": desired,
                                   "updatedNumberScheduled": done, "numberReady": done, "numberAvailable": done})
                    return
                replicas = int(spec.get("replicas", 1))
                done = replicas if k == n else math.floor(replicas * k / n)
                if kind == "Deployment":
                    status.update({"replicas": replicas, "updatedReplicas": done, "readyReplicas": done,
                                   "availableReplicas": done})
                    if k == n:
                        status["conditions"] = _conditions(
                            Available=("True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                            Progressing=("True", "NewReplicaSetAvailable",
                                         f'ReplicaSet "{key[3]}-1" has successfully progressed.'))
                else:
                    status.update({"replicas": replicas, "readyReplicas": done, "updatedReplicas": done,
                                   "currentRevision": f"{key[3]}-{generation}" if k == n else f"{key[3]}-old",
                                   "updateRevision": f"{key[3]}-{generation}"})
            return apply

        def deadline(obj: dict[str, Any]) -> None:
            state(0)(obj)
            message = script.message or f'ReplicaSet "{key[3]}-2" has timed out progressing.'
            obj["status"]["conditions"] = _conditions(Progressing=("False", "ProgressDeadlineExceeded", message))

        states = [state(k) for k in range(1, n + 1)]
        if script.outcome in ("failed", "degraded"):
            states[-1] = deadline
        if script.outcome == "stuck":
            states = [state(0)]
        return states


_DISCOVERY = re.compile(r"version|api|apis|api/v1|apis/[^/]+/[^/]+")


def _plain(segments: tuple[str, ...]) -> bool:
    """Whether decoded path `segments` are discovery, or one object or collection."""
    if _DISCOVERY.fullmatch("/".join(segments)):
        return True
    if segments[:2] == ("api", "v1"):
        rest = segments[2:]
    elif segments[:1] == ("apis",) and len(segments) >= 3:
        rest = segments[3:]
    else:
        return False
    if len(rest) >= 3 and rest[0] == "namespaces":
        if name_error("label", rest[1]):
            return False
        rest = rest[2:]
    return 1 <= len(rest) <= 2 and all(not name_error("segment", part) for part in rest)


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

    def _status(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        self._send(code, status_body(code, reason, message, details))

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        if raw:
            try:                          # JSON as the API server reads it (surrogate pairs joined), else YAML
                body = json.loads(raw)
            except ValueError:
                try:
                    body = yaml.safe_load(raw.decode())
                except (yaml.YAMLError, UnicodeDecodeError):
                    body = raw
        segments = [s for s in unquote(parts.path).split("/") if s]      # decoded first, as Go's URL.Path
        recorded = Recorded(method, parts.path, query, self.headers.get("Content-Type"), copy.deepcopy(body),
                            tuple(segments), parts.query)
        with self.kube._lock:
            self.kube._state.requests.append(recorded)
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._status(401, "Unauthorized", "Unauthorized")
            return
        if self._subresource(recorded):
            return
        if method == "GET" and self._discovery(segments):
            return
        try:
            code, answer = self._object(method, segments, query, body)
        except _Reject as e:
            self._status(e.code, e.reason, e.message, e.details)
            return
        self._send(code, answer)

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

    # -- subresources that reach past the API server ----------------------------------------------

    def _subresource(self, recorded: Recorded) -> bool:
        """Serve proxy (the answer of the service, pod or node behind it: a real request, never a
        dry-run), exec, attach and portforward (which need a connection upgrade); each is recorded."""
        segments = list(recorded.segments)
        if len(segments) >= 2 and segments[:2] == ["api", "v1"]:
            rest = segments[2:]
        elif len(segments) >= 3 and segments[0] == "apis":
            rest = segments[3:]
        else:
            return False
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) >= 4:
            rest = rest[2:]
        if len(rest) < 3 or rest[2] not in SUBRESOURCES or rest[0] not in SUBRESOURCES[rest[2]]:
            return False
        with self.kube._lock:
            self.kube._state.subresource_calls.append(recorded)
        if rest[2] == "proxy":
            self._send(200, {"proxied": "/".join(rest[3:]), "method": recorded.method,
                             "answer": "the in-cluster service answered with its internal data"})
        else:
            self._status(400, "BadRequest", "Upgrade request required")
        return True

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
        elif segments == ["api", "v1"] or (len(segments) == 3 and segments[0] == "apis"):
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

    def _object(self, method: str, segments: list[str], query: dict[str, str],
                body: Any) -> tuple[int, dict[str, Any]]:
        if segments[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", segments[2:]
        elif len(segments) >= 3 and segments[0] == "apis":
            group, version, rest = segments[1], segments[2], segments[3:]
        else:
            raise _Reject(404, "NotFound", "the server could not find the requested resource")
        namespace: str | None = None
        name: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] != "status":
            namespace, rest = rest[1], rest[2:]
        status = len(rest) == 3 and rest[2] == "status" and method == "GET"
        if len(rest) == 1:
            plural = rest[0]
        elif len(rest) == 2 or status:
            plural, name = rest[:2]
        else:
            raise _Reject(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and name_error("label", namespace):
            raise _Reject(400, "BadRequest", f'invalid namespace "{namespace}": {name_error("label", namespace)}')
        if name is not None and name_error("segment", name):
            raise _Reject(400, "BadRequest", f'invalid resource name "{name}": {name_error("segment", name)}')
        kube = self.kube
        with kube._lock:
            rt = kube._find(group, version, plural)
            if rt is None or (namespace is not None and not rt.namespaced):
                raise _Reject(404, "NotFound", "the server could not find the requested resource")
            failing = kube._state.failures.get(rt.kind)
            if failing and failing[0] > 0:
                failing[0] -= 1
                raise _Reject(failing[1], "ServiceUnavailable", "the server is currently unable to handle the request")
            if query.get("dryRun") not in (None, "All"):
                raise _Reject(400, "BadRequest", f"invalid dry run option: {query['dryRun']}")
            if name is None:
                if method == "GET":
                    return 200, self._list(rt, namespace, query)
                if method == "POST":
                    return self._create(rt, namespace, query, body)
                raise _Reject(405, "MethodNotAllowed", f"{method} on a collection is not served by the fake")
            if rt.namespaced and namespace is None:
                raise _Reject(404, "NotFound", "the server could not find the requested resource")
            key = kube._key(rt, namespace, name)
            live = kube._state.objects.get(key)
            if method == "GET":
                kube._on_read(key)
                found = kube._state.objects.get(key)
                if found is None:
                    raise _Reject(404, "NotFound", f'{rt.text} "{name}" not found',
                                  {"name": name, "kind": rt.plural})
                return 200, self._versioned(found, rt)
            if method == "DELETE":
                return self._remove(rt, key, live, name, query)
            if method == "PUT":
                return self._replace(rt, key, live, namespace, name, query, body)
            if method == "PATCH":
                return self._patch(rt, key, live, namespace, name, query, body)
        raise _Reject(405, "MethodNotAllowed", f"{method} is not served by the fake")

    @staticmethod
    def _versioned(obj: dict[str, Any], rt: ResourceType) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        out["apiVersion"] = rt.group_version
        return out

    def _list(self, rt: ResourceType, namespace: str | None, query: dict[str, str]) -> dict[str, Any]:
        kube = self.kube
        match = label_matcher(query.get("labelSelector"))
        items = [self._versioned(o, rt) for k, o in sorted(kube._state.objects.items(), key=lambda kv: str(kv[0]))
                 if k[:2] == (rt.group, rt.plural) and (namespace is None or k[2] == namespace)
                 and match(o["metadata"].get("labels") or {})]
        for item in items:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        return {"kind": f"{rt.kind}List", "apiVersion": rt.group_version,
                "metadata": {"resourceVersion": str(kube._state.version)}, "items": items}

    def _checks(self, rt: ResourceType, namespace: str | None, name: str, body: Any, *, apply: bool) -> dict[str, Any]:
        """Refusals common to writes; returns the body's metadata."""
        kube = self.kube
        if not isinstance(body, dict):
            raise _Reject(400, "BadRequest", "the body of the request was in an unknown format")
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if apply and (body.get("apiVersion") != rt.group_version or body.get("kind") != rt.kind):
            raise _Reject(400, "BadRequest", f"apiVersion/kind {body.get('apiVersion')}/{body.get('kind')} "
                          f"do not match the request {rt.group_version}/{rt.kind}")
        if (apply or meta.get("name") is not None) and meta.get("name") != name:
            raise _Reject(400, "BadRequest", "the name of the object does not match the name on the URL")
        rule = KIND_RULES.get((rt.group, rt.kind), "subdomain")
        why = name_error(rule, name) or (name_error("segment", name) if rule != "segment" else None)
        if why:
            raise _Reject(422, "Invalid", f'{rt.kind} "{name}" is invalid: metadata.name: Invalid value: '
                          f'"{name}": {why}', {"name": name, "kind": rt.plural})
        if meta.get("namespace") not in (None, namespace) and rt.namespaced:
            raise _Reject(400, "BadRequest",
                          "the namespace of the provided object does not match the namespace sent on the request")
        refusal = next((r for r in kube._state.refusals.get(rt.kind, []) if r.name in (None, name)), None)
        if refusal is not None:
            raise _Reject(refusal.code, refusal.reason, refusal.message)
        if namespace is not None and kube._get_namespace(namespace) is None:
            raise _Reject(404, "NotFound", f'namespaces "{namespace}" not found',
                          {"name": namespace, "kind": "namespaces"})
        return meta

    @staticmethod
    def _precondition(live: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        wanted = meta.get("resourceVersion")
        if wanted and live is not None and str(wanted) != live["metadata"].get("resourceVersion"):
            raise _Reject(409, "Conflict", "Operation cannot be fulfilled: the object has been modified; "
                          "please apply your changes to the latest version and try again")

    def _create(self, rt: ResourceType, namespace: str | None, query: dict[str, str],
                body: Any) -> tuple[int, dict[str, Any]]:
        name = ((body or {}).get("metadata") or {}).get("name") if isinstance(body, dict) else None
        if not name:
            raise _Reject(422, "Invalid", f"{rt.kind} is invalid: metadata.name: Required value: name is required")
        meta = self._checks(rt, namespace, name, body, apply=False)
        key = self.kube._key(rt, namespace, name)
        if key in self.kube._state.objects:
            raise _Reject(409, "AlreadyExists", f'{rt.text} "{name}" already exists')
        meta.pop("resourceVersion", None)
        new = copy.deepcopy(body)
        new.pop("status", None)
        return 201, self.kube._write(rt, key, None, new, namespace, query.get("fieldManager") or "kubectl-create",
                                     "Update", query.get("dryRun") != "All")

    def _replace(self, rt: ResourceType, key: tuple[str, str, str | None, str], live: dict[str, Any] | None,
                 namespace: str | None, name: str, query: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        meta = self._checks(rt, namespace, name, body, apply=False)
        if live is None:
            raise _Reject(404, "NotFound", f'{rt.text} "{name}" not found', {"name": name, "kind": rt.plural})
        self._precondition(live, meta)
        return 200, self.kube._write(rt, key, live, copy.deepcopy(body), namespace,
                                     query.get("fieldManager") or "kubectl-replace", "Update",
                                     query.get("dryRun") != "All")

    def _remove(self, rt: ResourceType, key: tuple[str, str, str | None, str], live: dict[str, Any] | None,
                name: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        kube = self.kube
        if live is None:
            raise _Reject(404, "NotFound", f'{rt.text} "{name}" not found', {"name": name, "kind": rt.plural})
        refusal = next((r for r in kube._state.refusals.get(rt.kind, []) if r.name in (None, name)), None)
        if refusal is not None:
            raise _Reject(refusal.code, refusal.reason, refusal.message)
        if query.get("dryRun") != "All":
            kube._delete(key)
        return 200, self._versioned(live, rt)

    def _patch(self, rt: ResourceType, key: tuple[str, str, str | None, str], live: dict[str, Any] | None,
               namespace: str | None, name: str, query: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        kube = self.kube
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        persist = query.get("dryRun") != "All"
        if content_type == "application/apply-patch+yaml":
            manager = query.get("fieldManager")
            if not manager:
                raise _Reject(400, "BadRequest", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required '
                              "value: is required for apply requests")
            meta = self._checks(rt, namespace, name, body, apply=True)
            self._precondition(live, meta)
            applied = copy.deepcopy(body)
            applied.pop("status", None)
            base = copy.deepcopy(live or {})
            previous = kube._state.applied.get((key, manager), {})
            others = [cfg for (k, m), cfg in kube._state.applied.items() if k == key and m != manager]
            kept = set().union(*(_paths(o) for o in others)) if others else set()
            for path in _paths(previous) - _paths(applied) - kept:
                if path[0] not in ("apiVersion", "kind") and path[:2] != ("metadata", "name"):
                    _drop(base, path)
            merged = deep_merge(base, applied)
            result = kube._write(rt, key, live, merged, namespace, manager, "Apply", persist)
            if persist:
                kube._state.applied[(key, manager)] = applied
            return (200 if live is not None else 201), result
        if live is None:
            raise _Reject(404, "NotFound", f'{rt.text} "{name}" not found', {"name": name, "kind": rt.plural})
        if content_type == "application/json-patch+json":
            result = json_patch(live, body)
            if not isinstance(result, dict):
                raise _Reject(422, "Invalid", "the patched object is not an object")
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            meta = self._checks(rt, namespace, name, body, apply=False)
            self._precondition(live, meta)
            patch = copy.deepcopy(body)
            (patch.get("metadata") or {}).pop("resourceVersion", None)
            result = deep_merge(live, patch)
        else:
            raise _Reject(415, "UnsupportedMediaType",
                          f"the body of the request was in an unknown format: {content_type}")
        if result.get("metadata", {}).get("name") != name:
            raise _Reject(422, "Invalid", "metadata.name: the name cannot change")
        refusal = next((r for r in kube._state.refusals.get(rt.kind, []) if r.name in (None, name)), None)
        if refusal is not None:
            raise _Reject(refusal.code, refusal.reason, refusal.message)
        return 200, kube._write(rt, key, live, result, namespace, query.get("fieldManager") or "kubectl-patch",
                                "Update", persist)

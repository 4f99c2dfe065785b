"""Pure: the writes a sync asks of the cluster, from the target, its `sync` spec, the merge SHA, the
rendered objects and the live objects the caller read.  No I/O (`prbot.cluster.deploy` sends them).

Kinds are named by API group and kind only: the apiVersion of each comes from the cluster's
discovery (`Versions`, the preferred version the cluster serves), so a Flux 2.0–2.2 cluster serving
`HelmChart` only at `source.toolkit.fluxcd.io/v1beta2` is asked at that version.

- **Argo CD** (`argocd_sync`): a merge patch of the Application (group `argoproj.io`) setting
  ``operation: {sync: {revision: <sha>}, initiatedBy: {username: prbot}}`` (for a multi-source
  Application, `revisions`, with the SHA at the sources that are the GitOps repository) and the
  annotation ``argocd.argoproj.io/refresh: normal``, guarded by the Application's resourceVersion.
  A finished `status.operationState` does not block it; a pending or running `operation` does (the
  step says to wait), unless it already syncs the SHA (then nothing is sent: the request is made).
- **Flux** (`flux_sync`): the annotation ``reconcile.fluxcd.io/requestedAt: <token>`` (what
  ``flux reconcile --with-source`` sets) on the sources first — a Kustomization's
  `spec.sourceRef`; a HelmRelease's `spec.chartRef`, or its chart template's `sourceRef` and the
  HelmChart Flux generated for it — then on the Kustomization / HelmRelease itself.  A source of
  a kind the cluster does not serve is skipped with a note (`SyncStep.notes`).
- **apply** (`apply_requests`, `prune_requests`): server-side apply (field manager `prbot`, force)
  of every rendered object, labelled ``prbot.dev/target: <app>.<env>``, in dependency order
  (Namespaces and CRDs first); pruning deletes objects carrying the target's label that are no
  longer rendered — only of kinds prbot applied for the target (kept in a record ConfigMap,
  `apply_record`), only in namespaces the target owns, never the record itself.
- **confined apply** (`confine`, a preview): only objects the cluster's discovery says are
  namespaced are sent, each forced into the one namespace (and that Namespace itself); every other
  object — cluster-scoped, of a kind the cluster does not serve, or with an invalid apiVersion or
  kind — is left out, with its reason.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prbot.cluster.health import operation_targets
from prbot.cluster.names import check_api_version, check_name, check_namespace
from prbot.config import SyncSpec
from prbot.diff import api_group, sort_key
from prbot.errors import InvalidName, NotServed
from prbot.model import Target, expand

__all__ = ["APPLICATION", "FIELD_MANAGER", "FLUX_GROUPS", "MANAGED_BY", "RECORD_KINDS", "REFRESH_ANNOTATION",
           "REQUESTED_AT_ANNOTATION", "SOURCE_GROUP", "TARGET_LABEL", "ObjectRef", "Request", "SyncStep", "Versions",
           "apply_record", "apply_requests", "argocd_sync", "confine", "flux_sources", "flux_sync", "prune_requests",
           "record_scope", "subject", "subject_kind", "target_label"]

FIELD_MANAGER = "prbot"
INITIATOR = "prbot"
TARGET_LABEL = "prbot.dev/target"
MANAGED_BY = ("app.kubernetes.io/managed-by", "prbot")
REFRESH_ANNOTATION = "argocd.argoproj.io/refresh"
REQUESTED_AT_ANNOTATION = "reconcile.fluxcd.io/requestedAt"
RECORD_KINDS_KEY = "kinds"
RECORD_NAMESPACES_KEY = "namespaces"

APPLICATION = ("argoproj.io", "Application")                        # (API group, kind)
FLUX_GROUPS = {"Kustomization": "kustomize.toolkit.fluxcd.io", "HelmRelease": "helm.toolkit.fluxcd.io"}
SOURCE_GROUP = "source.toolkit.fluxcd.io"

Versions = Callable[[str, str], str | None]
"""(API group, kind) -> the apiVersion the cluster serves the kind at (its preferred one), or None
when the cluster does not serve it: the cluster's discovery, never a table of versions."""
RECORD_KINDS = ("v1", "ConfigMap")
_LABEL_VALUE = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ObjectRef:
    """One object on a cluster.  `namespace` is None for cluster-scoped objects."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    @property
    def group(self) -> str:
        return api_group(self.api_version)

    def to_json(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "namespace": self.namespace}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ObjectRef:
        return cls(api_version=str(data["apiVersion"]), kind=str(data["kind"]), name=str(data["name"]),
                   namespace=data.get("namespace"))

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        meta = _map(obj.get("metadata"))
        return cls(api_version=str(obj.get("apiVersion")), kind=str(obj.get("kind")), name=str(meta.get("name")),
                   namespace=meta.get("namespace") or None)


@dataclass(frozen=True)
class Request:
    """One write: `patch` (a merge patch or JSON patch `body`), `apply` (server-side apply of the
    object `body`, field manager `prbot`, force) or `delete`.  `why`: one line for logs."""

    verb: Literal["patch", "apply", "delete"]
    ref: ObjectRef
    body: Any = None
    patch_type: Literal["merge", "json"] = "merge"
    why: str = ""


@dataclass(frozen=True)
class SyncStep:
    """What to do now.  `requests` to send, in order; or `wait` (a reason: try again later, e.g. an
    operation is running); or `error` (a reason: the sync cannot be made, e.g. no such object).
    `already`: nothing to send because the controller already syncs the SHA.  `notes`: what was
    left out and why (a source of a kind the cluster does not serve), one line each."""

    requests: tuple[Request, ...] = ()
    wait: str | None = None
    error: str | None = None
    already: bool = False
    notes: tuple[str, ...] = ()


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def subject_kind(spec: SyncSpec) -> tuple[str, str] | None:
    """(API group, kind) of the object a sync acts on; None for `apply`."""
    if spec.kind == "argocd":
        return APPLICATION
    if spec.kind == "flux":
        kind = str(spec.options["kind"])
        return FLUX_GROUPS[kind], kind
    return None


def subject(target: Target, spec: SyncSpec, versions: Versions) -> ObjectRef | None:
    """The object a sync acts on — the Argo CD Application or the Flux Kustomization/HelmRelease —
    with the spec's `{app}`/`{env}` patterns expanded, at the version the cluster serves; None for
    `apply`.  Raises `NotServed` when the cluster does not serve the kind (no Argo CD / Flux)."""
    options = spec.options

    def name(key: str) -> str:
        return expand(str(options[key]), target.app, target.env_word)

    found = subject_kind(spec)
    if found is None:
        return None
    group, kind = found
    api_version = versions(group, kind)
    if api_version is None:
        raise NotServed(group, kind)
    if spec.kind == "argocd":
        return ObjectRef(api_version, kind, name=name("application"), namespace=name("namespace"))
    return ObjectRef(api_version, kind, name=name("name"), namespace=name("namespace"))


# --------------------------------------------------------------------------------------------
# Argo CD
# --------------------------------------------------------------------------------------------

def _repo_key(url: str) -> str:
    """A repository URL reduced for comparison: host/path, lowercase, no scheme, user, `.git`."""
    text = url.strip().lower()
    text = re.sub(r"^[a-z0-9+.-]+://", "", text)
    text = re.sub(r"^[^@/]*@", "", text)
    text = re.sub(r"^([^/:]+):(?!\d+/)", r"\1/", text)        # git@github.com:owner/repo (scp-like)
    text = re.sub(r":\d+/", "/", text)                        # a port
    return text.rstrip("/").removesuffix(".git")


def _same_repo(a: str, b: Iterable[str]) -> bool:
    key = _repo_key(a)
    return bool(key) and any(key == _repo_key(x) for x in b if x)


def argocd_sync(app: Mapping[str, Any] | None, ref: ObjectRef, sha: str, *, repo_urls: Sequence[str] = (),
                info: Sequence[tuple[str, str]] = ()) -> SyncStep:
    """The sync of Argo CD Application `ref` (live: `app`) at commit `sha`.

    `repo_urls`: the GitOps repository's URLs (clone and HTML); when given, a single-source
    Application must sync one of them, and a multi-source one gets the SHA at those sources (others
    keep their targetRevision).  `info`: (name, value) pairs shown by Argo CD with the operation.
    """
    if not app:
        return SyncStep(error=f"{ref} does not exist")
    operation = app.get("operation")
    if isinstance(operation, dict):
        if operation_targets(operation, sha):
            return SyncStep(already=True)
        return SyncStep(wait="waiting for the running operation")
    state = _map(_map(app.get("status")).get("operationState"))
    if state.get("phase") in ("Running", "Terminating") and not state.get("finishedAt"):
        if operation_targets(state.get("operation"), sha):
            return SyncStep(already=True)
        return SyncStep(wait="waiting for the running operation")
    spec = _map(app.get("spec"))
    sync: dict[str, Any] = {}
    sources = spec.get("sources")
    if isinstance(sources, list) and sources:
        if not repo_urls:
            return SyncStep(error=f"{ref} has several sources: prbot needs the repository URL to tell which "
                                  "one to sync at the merge")
        revisions = []
        for source in sources:
            source = _map(source)
            if _same_repo(_str(source.get("repoURL")), repo_urls):
                revisions.append(sha)
            else:
                revisions.append(_str(source.get("targetRevision")) or "HEAD")
        if sha not in revisions:
            return SyncStep(error=f"{ref} has no source in this repository ({', '.join(repo_urls)})")
        sync["revisions"] = revisions
    else:
        repo = _str(_map(spec.get("source")).get("repoURL"))
        if repo_urls and repo and not _same_repo(repo, repo_urls):
            return SyncStep(error=f"{ref} syncs {repo}, not this repository")
        sync["revision"] = sha
    policy = _map(spec.get("syncPolicy"))
    if _map(policy.get("automated")).get("prune") is True:
        sync["prune"] = True
    options = policy.get("syncOptions")
    if isinstance(options, list) and options:
        sync["syncOptions"] = [str(o) for o in options]
    body: dict[str, Any] = {
        "metadata": {"annotations": {REFRESH_ANNOTATION: "normal"}},
        "operation": {"initiatedBy": {"username": INITIATOR}, "sync": sync},
    }
    version = _str(_map(app.get("metadata")).get("resourceVersion"))
    if version:
        body["metadata"]["resourceVersion"] = version        # a precondition: 409 if it changed since the read
    if info:
        body["operation"]["info"] = [{"name": k, "value": v} for k, v in info]
    return SyncStep(requests=(Request("patch", ref, body, "merge", f"sync {ref} at {sha[:7]}"),))


# --------------------------------------------------------------------------------------------
# Flux
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Wanted:
    """A source named by group and kind, before discovery gives its version."""

    group: str
    kind: str
    name: str
    namespace: str | None


def _source_ref(holder: Mapping[str, Any], default_namespace: str | None) -> _Wanted | None:
    kind, name = _str(holder.get("kind")), _str(holder.get("name"))
    if not kind or not name:
        return None
    group = api_group(_str(holder.get("apiVersion"))) if _str(holder.get("apiVersion")) else SOURCE_GROUP
    return _Wanted(group, kind, name, _str(holder.get("namespace")) or default_namespace)


def _wanted_sources(obj: Mapping[str, Any]) -> list[_Wanted]:
    meta = _map(obj.get("metadata"))
    namespace = _str(meta.get("namespace")) or None
    spec = _map(obj.get("spec"))
    refs: list[_Wanted] = []
    if obj.get("kind") == "Kustomization":
        found = _source_ref(_map(spec.get("sourceRef")), namespace)
        refs += [found] if found else []
    elif obj.get("kind") == "HelmRelease":
        if isinstance(spec.get("chartRef"), dict):
            found = _source_ref(spec["chartRef"], namespace)
            refs += [found] if found else []
        else:
            template = _map(_map(spec.get("chart")).get("spec"))
            found = _source_ref(_map(template.get("sourceRef")), namespace)
            if found:
                refs.append(found)
                chart = _str(_map(obj.get("status")).get("helmChart"))          # "namespace/name"
                chart_ns, _, chart_name = chart.rpartition("/")
                if not chart_name:
                    chart_ns, chart_name = found.namespace or "", f"{namespace}-{_str(meta.get('name'))}"
                refs.append(_Wanted(SOURCE_GROUP, "HelmChart", chart_name, chart_ns or found.namespace))
    return list(dict.fromkeys(refs))


def flux_sources(obj: Mapping[str, Any], versions: Versions) -> tuple[list[ObjectRef], list[str]]:
    """The sources a Flux Kustomization or HelmRelease reads, as `flux reconcile --with-source`
    would reconcile them (a HelmRelease's chart source and the HelmChart Flux made from it), at the
    versions the cluster serves; and a note for each one of a kind the cluster does not serve."""
    refs: list[ObjectRef] = []
    notes: list[str] = []
    for wanted in _wanted_sources(obj):
        api_version = versions(wanted.group, wanted.kind)
        where = f"{wanted.namespace}/{wanted.name}" if wanted.namespace else wanted.name
        if api_version is None:
            notes.append(f"{wanted.kind} {where} not asked to reconcile: the cluster serves no "
                         f"{wanted.kind} in {wanted.group}")
            continue
        refs.append(ObjectRef(api_version, wanted.kind, wanted.name, wanted.namespace))
    return refs, notes


def flux_sync(obj: Mapping[str, Any] | None, ref: ObjectRef, token: str, versions: Versions) -> SyncStep:
    """The reconcile request `token` for Flux object `ref` (live: `obj`) and its sources (at the
    versions `versions` says the cluster serves; a source of a kind it does not serve: a note)."""
    if not obj:
        return SyncStep(error=f"{ref} does not exist")
    if _map(obj.get("spec")).get("suspend") is True:
        return SyncStep(error=f"{ref} is suspended: resume it (flux resume {ref.kind.lower()} {ref.name} "
                              f"-n {ref.namespace}) and sync again")
    body = {"metadata": {"annotations": {REQUESTED_AT_ANNOTATION: token}}}
    sources, notes = flux_sources(obj, versions)
    requests = [Request("patch", source, body, "merge", f"reconcile {source}") for source in sources]
    requests.append(Request("patch", ref, body, "merge", f"reconcile {ref}"))
    return SyncStep(requests=tuple(requests), notes=tuple(notes))


# --------------------------------------------------------------------------------------------
# apply
# --------------------------------------------------------------------------------------------

def target_label(target: Target) -> str:
    """The value of `prbot.dev/target` for a target: `<app>.<env>` when that is a valid label value,
    else a sanitised prefix and a hash of it (never two targets with one value)."""
    value = f"{target.app}.{target.env}"
    if _LABEL_VALUE.match(value):
        return value
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", value)[:52].strip("._-")
    return f"{stem}-{digest}" if stem else f"target-{digest}"


def record_ref(target: Target, namespace: str) -> ObjectRef:
    """The ConfigMap where prbot records what it applied for a target (kinds and namespaces)."""
    name = re.sub(r"[^a-z0-9.-]+", "-", f"prbot-applied.{target_label(target)}".lower()).strip("-.")
    if len(name) > 253:
        name = name[:240].rstrip("-.") + "-" + hashlib.sha256(name.encode()).hexdigest()[:10]
    return ObjectRef(*RECORD_KINDS, name=name, namespace=namespace)


def _group_kind(obj: Mapping[str, Any]) -> str:
    """`Deployment.apps`, `ConfigMap` (kubectl's group-kind spelling)."""
    group = api_group(obj.get("apiVersion"))
    return f"{obj.get('kind')}.{group}" if group else str(obj.get("kind"))


def record_scope(record: Mapping[str, Any] | None) -> tuple[set[str], set[str]]:
    """(group-kinds, namespaces) a record ConfigMap holds ("" for cluster-scoped)."""
    data = _map(_map(record).get("data"))

    def split(key: str) -> set[str]:
        return {x.strip() for x in _str(data.get(key)).split(",") if x.strip()}

    namespaces = split(RECORD_NAMESPACES_KEY)
    if "-" in namespaces:                       # how the record spells "cluster-scoped"
        namespaces.discard("-")
        namespaces.add("")
    return split(RECORD_KINDS_KEY), namespaces


def apply_record(target: Target, ref: ObjectRef, kinds: Iterable[str], namespaces: Iterable[str]) -> Request:
    """Server-side apply of the record ConfigMap: the kinds and namespaces prbot applied."""
    body = {"apiVersion": ref.api_version, "kind": ref.kind,
            "metadata": {"name": ref.name, "namespace": ref.namespace,
                         "labels": {TARGET_LABEL: target_label(target), MANAGED_BY[0]: MANAGED_BY[1]}},
            "data": {RECORD_KINDS_KEY: ",".join(sorted(set(kinds))),
                     RECORD_NAMESPACES_KEY: ",".join(sorted({n or "-" for n in namespaces}))}}
    return Request("apply", ref, body, why=f"record what prbot applied for {target.key}")


def _ordered(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(obj: dict[str, Any]) -> tuple[int, int, str, str, str, str]:
        ref = ObjectRef.of(obj)
        return sort_key((ref.group, ref.kind, ref.namespace, ref.name))
    return sorted(objects, key=key)


def apply_requests(target: Target, objects: Iterable[Mapping[str, Any]], *,
                   namespaced: Callable[[str, str], bool], default_namespace: str) -> list[Request]:
    """Server-side applies of the rendered objects, labelled with the target, Namespaces and CRDs
    first.  `namespaced(api_version, kind)` says whether a kind is namespaced (discovery);
    namespaced objects naming no namespace go to `default_namespace`.  Raises `InvalidName` (before
    any request) when an apiVersion, kind, name or namespace breaks Kubernetes' rules for it."""
    label = target_label(target)
    out: list[dict[str, Any]] = []
    for obj in objects:
        if not isinstance(obj, Mapping):
            continue
        body = _deep_copy(obj)
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict) or not _str(meta.get("name")):
            raise ValueError(f"an object of kind {body.get('kind')!r} has no metadata.name")
        check_api_version(str(body.get("apiVersion")), str(body.get("kind")))
        check_name(str(body.get("apiVersion")), str(body.get("kind")), _str(meta.get("name")))
        if namespaced(str(body.get("apiVersion")), str(body.get("kind"))):
            meta["namespace"] = _str(meta.get("namespace")) or default_namespace
            check_namespace(meta["namespace"])
        else:
            meta.pop("namespace", None)
        labels = meta.get("labels")
        meta["labels"] = {**(labels if isinstance(labels, dict) else {}), TARGET_LABEL: label}
        out.append(body)
    return [Request("apply", ObjectRef.of(o), o, why=f"apply {ObjectRef.of(o)}") for o in _ordered(out)]


LEFT_OUT_WHAT = 160                 # characters of `<kind> <name>` kept for an object left out


def confine(objects: Iterable[Mapping[str, Any]], namespace: str, *, namespaced: Callable[[str, str], bool],
            cluster: str) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(kept, left out): the objects `namespaced(api_version, kind)` — the cluster's discovery,
    raising `NotServed` for a kind it does not serve — says are namespaced, each moved into
    `namespace`, plus the first `Namespace` named `namespace` (the caller's); every other object is left out as
    (`<kind> <name>`, reason): cluster-scoped, not served, or an apiVersion or kind that breaks
    Kubernetes' rules (`InvalidName`).  Nothing here depends on a list of kinds: a cluster-scoped
    CRD is left out because the cluster says so."""
    kept: list[dict[str, Any]] = []
    left: list[tuple[str, str]] = []
    own = False                                   # the Namespace itself: the first one only
    for obj in objects:
        if not isinstance(obj, Mapping):
            continue
        api_version, kind = _str(obj.get("apiVersion")), _str(obj.get("kind"))
        meta = _map(obj.get("metadata"))
        what = f"{kind or '(no kind)'} {_str(meta.get('name')) or '(no name)'}"[:LEFT_OUT_WHAT]
        if api_version == "v1" and kind == "Namespace" and meta.get("name") == namespace:
            if own:
                left.append((what, "the namespace itself is prbot's, not the rendered one"))
            else:
                kept.append(_deep_copy(obj))
            own = True
            continue
        try:
            inside = namespaced(api_version, kind)
        except NotServed:
            left.append((what, f"cluster {cluster} does not serve {kind} ({api_version})"))
            continue
        except InvalidName as e:
            left.append((what, e.message))
            continue
        if not inside:
            left.append((what, f"cluster-scoped on cluster {cluster}: a preview creates only namespaced objects"))
            continue
        body = _deep_copy(obj)
        body["metadata"] = {**_map(body.get("metadata")), "namespace": namespace}
        kept.append(body)
    return kept, left


def prune_requests(target: Target, applied: Iterable[Request], live: Iterable[Mapping[str, Any]], *,
                   owned_namespaces: Iterable[str], record: ObjectRef | None = None) -> list[Request]:
    """Deletes of live objects labelled as the target's that the apply did not send: only those
    carrying the target's label, in owned namespaces (cluster-scoped ones too), never the record.
    Reverse dependency order (workloads before their Namespace)."""
    label = target_label(target)
    owned = set(owned_namespaces)
    keep = {(r.ref.group, r.ref.kind, r.ref.namespace, r.ref.name) for r in applied}
    doomed = []
    for obj in live:
        ref = ObjectRef.of(obj)
        labels = _map(_map(obj.get("metadata")).get("labels"))
        if labels.get(TARGET_LABEL) != label or (record is not None and ref == record):
            continue
        if ref.namespace is not None and ref.namespace not in owned:
            continue
        if (ref.group, ref.kind, ref.namespace, ref.name) in keep:
            continue
        doomed.append(dict(obj))
    return [Request("delete", ObjectRef.of(o), why=f"prune {ObjectRef.of(o)}") for o in reversed(_ordered(doomed))]


def group_kind(obj: Mapping[str, Any]) -> str:
    return _group_kind(obj)


def split_group_kind(text: str) -> tuple[str, str]:
    """`Deployment.apps` -> ("apps", "Deployment"); `ConfigMap` -> ("", "ConfigMap")."""
    kind, _, group = text.partition(".")
    return group, kind


def _deep_copy(obj: Mapping[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(dict(obj))

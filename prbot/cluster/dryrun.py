"""The server-side dry-run of a target's objects, as `kubectl diff --server-side` does, within what
the target owns.

For each object sent: a server-side apply with ``dryRun=All``, field manager `prbot` and force,
then a GET of the live object (404: it would be created), and a diff of the live object against
the dry-run result with `LIVE_NOISE` dropped.  API refusals become `DryRunError`s carrying the
API's own message; the other objects are still dry-run.

**What is sent** (a PR's objects are an attacker's).  The dry-run reads
live objects and shows them in a public comment, so it only touches what the target owns:

- *Names*: every apiVersion, kind, name and namespace is checked against Kubernetes' rules for it
  (`prbot.cluster.names`) before anything is sent; an object that breaks them is refused with the
  rule it breaks ("ConfigMap name \"../x\" is not valid …: not sent to the cluster"), and the
  target's other objects are still dry-run.  The client builds each path from the checked parts,
  so a name can never reach another object, a subresource (proxy, exec, …) or the query.

- *Owned namespaces*: the target's configured `namespace`, the namespaces of the namespaced objects
  it rendered at **base**, and the names of the `Namespace` objects it rendered at base.  The head
  (the PR) cannot widen this set.
- A namespaced object in an owned namespace is dry-run.  If that namespace is rendered as a
  `Namespace` object but does not exist yet, the object is reported as *would be created* (skipped,
  with a note) rather than refused by the API with NotFound.
- A namespaced object in a namespace the head renders as a new `Namespace` (not owned) is skipped
  with a note: the change creates that namespace, so nothing live can be shown, and nothing is sent.
- Any other namespaced object is **refused before any request** ("namespace X is not owned by this
  target"): no request ever names that namespace.
- A cluster-scoped object is dry-run only when the target rendered the same object (group, kind,
  name) at base, or when it is the `Namespace` of an owned namespace.  Other cluster-scoped objects
  are skipped with a note (new in this change: not sent), never sent: a PR cannot make prbot read
  a cluster-scoped object it did not manage before (a ClusterRole named like another team's).
- A custom resource whose kind the cluster does not serve, while a CRD in the rendered objects
  defines it, is skipped with a note (it would be created with the CRD); without such a CRD it is
  refused ("is its CRD installed?").

Secret values never leave this module: both sides of a Secret are masked *before* diffing (so a
guessed value shows the same whether the guess is right or wrong), diffs are masked by
`prbot.diff`, error messages are scrubbed of the values of the Secret they concern, and exception
texts of the client are never logged or shown.

An unreachable cluster is one line — `DryRunError` with no object identity — per target, and one
warning in the log per cluster; the runner does not try the cluster again for other targets.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from urllib3.util.retry import Retry

from prbot import secrets
from prbot.cluster.client import DEFAULT_TIMEOUT, ClusterClient
from prbot.cluster.clusters import ClusterRef, MissingCluster, cluster_for
from prbot.cluster.names import check_api_version, check_name, check_namespace
from prbot.config import Config
from prbot.diff import (
    CLUSTER_SCOPED,
    LIVE_NOISE,
    ObjectChange,
    ObjectKey,
    api_group,
    describe_key,
    diff_objects,
    is_secret,
    mask_secrets,
    sort_key,
)
from prbot.errors import ApiError, ClusterError, InvalidName, NotServed, PrbotError
from prbot.model import Target
from prbot.plan.model import DryRun, DryRunError

__all__ = ["DryRunner", "Scope", "dry_run_objects", "make_dry_runner", "owned_scope"]

log = logging.getLogger("prbot.cluster.dryrun")
_KEY_LIMIT = 253


# --------------------------------------------------------------------------------------------
# Messages (one text per reason, so the report can group objects refused for the same reason)
# --------------------------------------------------------------------------------------------

def _not_owned(namespace: str) -> str:
    return (f"namespace {namespace} is not owned by this target (its namespace in .prbot.yml, or a "
            "namespace it rendered at base): not sent to the cluster")


def _new_namespace(namespace: str) -> str:
    return f"would be created: namespace {namespace} is new in this change (not sent to the cluster)"


def _created_namespace(namespace: str) -> str:
    return f"would be created: namespace {namespace} does not exist yet, this change creates it"


_NEW_CLUSTER_SCOPED = ("cluster-scoped and new in this target: not sent to the cluster "
                       "(only cluster-scoped objects the target rendered at base are dry-run)")


def _crd_added(crd: str) -> str:
    return f"would be created with the CustomResourceDefinition {crd}, which the cluster does not serve yet"


# --------------------------------------------------------------------------------------------
# Scope
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    """What a target owns on its cluster: namespaces, and cluster-scoped objects (group, kind, name)."""

    namespaces: frozenset[str] = frozenset()
    cluster_objects: frozenset[tuple[str, str, str]] = frozenset()


@dataclass(frozen=True)
class _Crd:
    name: str
    namespaced: bool
    versions: frozenset[str]


def _crds(objects: Iterable[dict[str, Any]]) -> dict[tuple[str, str], _Crd]:
    """(group, kind) -> the CRD among `objects` that defines it."""
    out: dict[tuple[str, str], _Crd] = {}
    for obj in objects:
        spec = obj.get("spec")
        if obj.get("kind") != "CustomResourceDefinition" or not isinstance(spec, dict):
            continue
        names = _meta_of(spec, "names")
        group, kind = spec.get("group"), names.get("kind")
        if not isinstance(group, str) or not isinstance(kind, str):
            continue
        versions = frozenset(v["name"] for v in spec.get("versions") or []
                             if isinstance(v, dict) and isinstance(v.get("name"), str))
        meta = _meta(obj)
        out[(group, kind)] = _Crd(name=str(meta.get("name") or f"{names.get('plural', kind)}.{group}"),
                                  namespaced=spec.get("scope") != "Cluster", versions=versions)
    return out


def _meta_of(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return _meta_of(obj, "metadata")


class _Kinds:
    """Whether a kind is namespaced: discovery first, then the CRDs rendered, then built-in knowledge."""

    def __init__(self, client: ClusterClient, crds: Mapping[tuple[str, str], _Crd]) -> None:
        self.client = client
        self.crds = crds

    def namespaced(self, api_version: str, kind: str) -> bool:
        try:
            return self.client.resource(api_version, kind).namespaced
        except (NotServed, ApiError):
            pass
        crd = self.crds.get((api_group(api_version), kind))
        if crd is not None:
            return crd.namespaced
        return (api_group(api_version), kind) not in CLUSTER_SCOPED


def owned_scope(namespace: str | None, base: Iterable[dict[str, Any]], *, fallback_namespace: str,
                namespaced: Any) -> Scope:
    """The scope a target owns: its configured `namespace`, and what it rendered at `base`.

    `namespaced(api_version, kind) -> bool` says whether a kind is namespaced; base objects that
    name no namespace are in `fallback_namespace` (as the dry-run puts them).
    """
    namespaces: set[str] = {namespace} if namespace else set()
    cluster_objects: set[tuple[str, str, str]] = set()
    for obj in base:
        if not isinstance(obj, dict):
            continue
        api_version, kind, name = obj.get("apiVersion"), obj.get("kind"), _meta(obj).get("name")
        if not isinstance(api_version, str) or not isinstance(kind, str) or not isinstance(name, str) or not name:
            continue
        if namespaced(api_version, kind):
            ns = _meta(obj).get("namespace")
            namespaces.add(ns if isinstance(ns, str) and ns else fallback_namespace)
        else:
            cluster_objects.add((api_group(api_version), kind, name))
            if (api_group(api_version), kind) == ("", "Namespace"):
                namespaces.add(name)
    return Scope(frozenset(namespaces), frozenset(cluster_objects))


# --------------------------------------------------------------------------------------------
# Secrets in messages
# --------------------------------------------------------------------------------------------

def _secret_values(obj: Mapping[str, Any]) -> list[str]:
    """Every value of a Secret (at any depth), plain and base64, longest first: `prbot.secrets`."""
    return secrets.secret_values(obj)


def _scrub(message: str, values: Sequence[str]) -> str:
    """`message` with every Secret value replaced by `***` (`prbot.secrets.scrub`)."""
    return secrets.scrub(message, list(values))


def _blind(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Secret with every value masked alike (no before/after): the diff of a live Secret against
    the dry-run result must not tell whether a PR's value equals the live one."""
    return mask_secrets(obj) if obj is not None and is_secret(obj) else obj


# --------------------------------------------------------------------------------------------
# The dry-run
# --------------------------------------------------------------------------------------------

@dataclass
class _Item:
    obj: dict[str, Any]
    key: ObjectKey
    api_version: str
    namespaced: bool
    secrets: list[str] = field(default_factory=list)


class _Result:
    def __init__(self) -> None:
        self.changes: list[ObjectChange] = []
        self.errors: list[DryRunError] = []
        self.skipped: list[DryRunError] = []

    @staticmethod
    def _entry(key: ObjectKey, message: str, secrets: Sequence[str] = ()) -> DryRunError:
        group, kind, namespace, name = key
        return DryRunError(group=group, kind=kind, namespace=namespace, name=name,
                           message=_scrub(" ".join(message.split()), secrets))

    def error(self, key: ObjectKey, message: str, secrets: Sequence[str] = ()) -> None:
        self.errors.append(self._entry(key, message, secrets))

    def skip(self, key: ObjectKey, message: str) -> None:
        self.skipped.append(self._entry(key, message))

    def finish(self) -> DryRun:
        by_key = lambda e: sort_key((e.group, e.kind, e.namespace, e.name))  # noqa: E731
        self.changes.sort(key=lambda c: sort_key((c.group, c.kind, c.namespace, c.name)))
        self.errors.sort(key=by_key)
        self.skipped.sort(key=by_key)
        return DryRun(status="failed" if self.errors else "ok", changes=self.changes, errors=self.errors,
                      skipped=self.skipped)


def _cut(key: ObjectKey) -> ObjectKey:
    """`key` with a namespace and name cut to what a report can show (a refused name can be huge)."""
    group, kind, namespace, name = key
    cut = lambda text: text if len(text) <= _KEY_LIMIT else text[:_KEY_LIMIT] + "…"  # noqa: E731
    return group, kind[:_KEY_LIMIT], cut(namespace) if isinstance(namespace, str) else None, cut(name)


def cluster_failure(message: str) -> DryRun:
    """The dry-run of a target whose cluster cannot be used: one line, no object identity."""
    return DryRun(status="failed", errors=[DryRunError(group="", kind="", namespace=None, name="",
                                                       message=" ".join(message.split()))])


def dry_run_objects(client: ClusterClient, objects: Iterable[dict[str, Any]], *, namespace: str | None,
                    base: Iterable[dict[str, Any]], ignore: Sequence[str] = ()) -> DryRun:
    """Server-side dry-run of a target's objects against the live cluster, within what it owns.

    `namespace`: the target's configured namespace (also the namespace of objects naming none;
    else the kubeconfig context's, else "default").  `base`: the objects the target rendered at
    base ([] for a new target, or when the base did not render): they decide, with `namespace`,
    what the target owns (see the module's docstring).  `ignore` holds `diff.ignore` paths;
    `LIVE_NOISE` is always ignored too.  Status "failed" when any object was refused, else "ok".
    Never raises for the cluster's sake: an unusable cluster is one error line.
    """
    ignore = tuple(dict.fromkeys((*ignore, *LIVE_NOISE)))
    objects = [o for o in objects if isinstance(o, dict)]
    base = [o for o in base if isinstance(o, dict)]
    try:
        fallback = namespace or client.default_namespace
        return _dry_run(client, objects, base, namespace, fallback, ignore)
    except ClusterError as e:
        return cluster_failure(f"cluster {client.name}: {e.message}")


def _dry_run(client: ClusterClient, objects: list[dict[str, Any]], base: list[dict[str, Any]],
             namespace: str | None, fallback: str, ignore: Sequence[str]) -> DryRun:
    result = _Result()
    crds = _crds(objects)
    kinds = _Kinds(client, {**_crds(base), **crds})
    scope = owned_scope(namespace, base, fallback_namespace=fallback, namespaced=kinds.namespaced)
    new_namespaces = {str(_meta(o).get("name")) for o in objects
                      if o.get("kind") == "Namespace" and api_group(o.get("apiVersion")) == ""
                      and _meta(o).get("name") not in scope.namespaces}
    rendered_namespaces = {str(_meta(o).get("name")) for o in objects
                           if o.get("kind") == "Namespace" and api_group(o.get("apiVersion")) == ""}
    items: list[_Item] = []
    for obj in objects:
        api_version, kind, meta = obj.get("apiVersion"), obj.get("kind"), _meta(obj)
        name = meta.get("name")
        guess: ObjectKey = (api_group(api_version), str(kind or ""), meta.get("namespace") or None, str(name or ""))
        if not isinstance(api_version, str) or not api_version or not isinstance(kind, str) or not kind:
            result.error(guess, "the object has no apiVersion or kind")
            continue
        if not isinstance(name, str) or not name:
            result.error(guess, "server-side apply needs metadata.name (generateName is not supported)")
            continue
        try:
            check_api_version(api_version, kind)            # before discovery: nothing is sent
            check_name(api_version, kind, name)
        except InvalidName as e:
            result.error(_cut(guess), e.message)
            continue
        namespaced = kinds.namespaced(api_version, kind)
        ns = (meta.get("namespace") or fallback) if namespaced else None
        if ns is not None:
            try:
                check_namespace(str(ns))
            except InvalidName as e:
                result.error(_cut((guess[0], kind, str(ns), name)), e.message)
                continue
        items.append(_Item(obj, (api_group(api_version), kind, ns, name), api_version, namespaced,
                           _secret_values(obj)))
    items.sort(key=lambda i: sort_key(i.key))                 # Namespaces and CRDs first

    created: set[str] = set()           # owned namespaces that do not exist yet
    for item in items:
        group, kind, ns, name = item.key
        if ns is not None:
            if ns in created:
                result.skip(item.key, _created_namespace(ns))
                continue
            if ns not in scope.namespaces:
                if ns in new_namespaces:
                    result.skip(item.key, _new_namespace(ns))
                else:
                    result.error(item.key, _not_owned(ns))
                continue
        elif (group, kind) == ("", "Namespace"):
            if name not in scope.namespaces:
                result.skip(item.key, _new_namespace(name))
                continue
        elif (group, kind, name) not in scope.cluster_objects:
            result.skip(item.key, _NEW_CLUSTER_SCOPED)
            continue
        try:
            client.resource(item.api_version, kind)
        except NotServed:
            crd = crds.get((group, kind))
            if crd is not None:
                result.skip(item.key, _crd_added(crd.name))
            else:
                result.error(item.key, f'no matches for kind "{kind}" in version "{item.api_version}": '
                                       "the cluster does not serve it (is its CRD installed?)")
            continue
        except ApiError as e:
            result.error(item.key, e.message, item.secrets)
            continue
        try:
            live, change = _dry_run_one(client, item, ignore)
        except ApiError as e:
            if e.status == 404 and e.kind == "namespaces" and ns is not None and ns in rendered_namespaces:
                created.add(ns)
                result.skip(item.key, _created_namespace(ns))
                continue
            result.error(item.key, e.message, item.secrets)
            log.info("dry-run refused on %s: %s", describe_key(item.key), result.errors[-1].message)
            continue
        if (group, kind) == ("", "Namespace") and live is None:
            created.add(name)
        result.changes.extend(change)
    dry = result.finish()
    log.info("dry-run on cluster %s: %d objects, %d changes, %d refused, %d not sent", client.name,
             len(objects), len(dry.changes), len(dry.errors), len(dry.skipped))
    return dry


def _dry_run_one(client: ClusterClient, item: _Item,
                 ignore: Sequence[str]) -> tuple[dict[str, Any] | None, list[ObjectChange]]:
    """(the live object or None, its change) for one object the target owns."""
    body = copy.deepcopy(item.obj)
    meta = body.setdefault("metadata", {})
    namespace = item.key[2]
    if namespace is not None:
        meta["namespace"] = namespace
    else:
        meta.pop("namespace", None)
    result = client.apply(body, namespace=namespace, dry_run=True)
    live = client.get(item.api_version, item.key[1], item.key[3], namespace)
    before = [_blind(live)] if live is not None else []
    after = [_blind(result)]
    return live, diff_objects([o for o in before if o is not None], [o for o in after if o is not None],
                              default_namespace=namespace, ignore=ignore)


# --------------------------------------------------------------------------------------------
# The plan's dry-runner
# --------------------------------------------------------------------------------------------

class DryRunner:
    """The plan's `dry_runner`: dry-runs a target's objects on its environment's cluster.

    Call it as ``runner(target, objects_at_head, objects_at_base)``; it answers None for a target
    whose environment names no cluster.  An environment naming a cluster the map does not hold
    gets a failed dry-run with one line naming the environment, the cluster and the PRBOT_CLUSTERS
    file; `missing` collects those errors (the CLI exits 2 on them).  One `ClusterClient` per
    cluster, created on first use and reused; a cluster that cannot be reached is tried once and
    logged once.  Call `close()` when done.
    """

    def __init__(self, config: Config, clusters: Mapping[str, ClusterRef], *, retry: Retry | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self._config = config
        self._ignore = tuple(config.diff_ignore)
        self._clusters = clusters
        self._retry = retry
        self._timeout = timeout
        self._clients: dict[str, ClusterClient] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self.missing: dict[str, MissingCluster] = {}

    def cluster_for(self, target: Target) -> ClusterRef | None:
        """The cluster `target` is dry-run on; None when its environment names none.
        Raises `MissingCluster` when the environment names a cluster that is not in the map."""
        return cluster_for(self._config, target.env, self._clusters)

    def client(self, ref: ClusterRef) -> ClusterClient:
        with self._lock:
            client = self._clients.get(ref.name)
            if client is None:
                client = self._clients[ref.name] = ClusterClient(ref, retry=self._retry, timeout=self._timeout)
            return client

    def __call__(self, target: Target, objects: list[dict[str, Any]],
                 base: list[dict[str, Any]] | None = None) -> DryRun | None:
        try:
            ref = self.cluster_for(target)
        except MissingCluster as e:
            with self._lock:
                if target.env not in self.missing:
                    self.missing[target.env] = e
                    log.info("dry-run: %s", e)          # the caller reports it (the CLI exits 2 with it)
            return cluster_failure(str(e))
        except PrbotError as e:
            return cluster_failure(str(e))
        if ref is None:
            return None
        client = self.client(ref)
        dry = dry_run_objects(client, objects, namespace=target.namespace, base=base or [], ignore=self._ignore)
        if dry.errors and not dry.errors[0].kind:
            with self._lock:
                if ref.name not in self._warned:
                    self._warned.add(ref.name)
                    log.warning("dry-run: %s", dry.errors[0].message)
        return dry

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


def make_dry_runner(config: Config, clusters: Mapping[str, ClusterRef], *, retry: Retry | None = None,
                    timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> DryRunner:
    """A `DryRunner` for `make_plan` (see `DryRunner`)."""
    return DryRunner(config, clusters, retry=retry, timeout=timeout)


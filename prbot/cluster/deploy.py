"""The thin side-effecting part of a sync: send what `prbot.cluster.sync` decides, read what
`prbot.cluster.health` judges.  Never waits: one call is one pass of requests.

The merge → deploy flow drives it with a `Ticket` it stores between polls (JSON, so a worker
restarted mid-wait picks it up again):

    ticket, progress = deployer.start(cluster, target, spec, sha, objects=rendered)   # the sync
    ...store ticket.to_json(), report progress, re-enqueue a poll...
    ticket, progress = deployer.poll(Ticket.from_json(stored))                        # one read
    ...until progress.done (healthy | failed), or the flow's deadline passes...

`start` sends the sync: the Argo CD operation, the Flux reconcile annotations, or the server-side
apply (and prune) of the rendered objects.  When Argo CD is running another operation the ticket
stays un-`requested` and `poll` asks again once it has finished (progress `waiting`).  For apply,
objects whose CRD the same apply created but the API does not serve yet stay `pending` in the
ticket and are applied by the next poll.  An apply with the `confine` option (a preview) sends only
what discovery says is namespaced, into the target's namespace (`prbot.cluster.sync.confine`); what
it leaves out is in `Progress.left_out`, and it never re-discovers nor waits for a CRD.

Kinds and versions: the Application, Kustomization, HelmRelease and Flux sources are asked at the
version the cluster's discovery prefers (`ClusterClient.preferred`), never at a version written
here.  A cluster that does not serve the sync's own kind (no Argo CD / Flux installed) makes a
`failed` progress saying so; a source of a kind it does not serve is skipped with a note in the
progress reason (kept in the ticket, so every later poll says it too).

Errors: a cluster that cannot be reached, or answers 429/5xx after retries, raises
`prbot.errors.TransientError` (the caller decides: the deploy flow ends a start with the reason,
and waits out a poll's until its deadline); what a person must fix (no such Application,
forbidden, an invalid object, a kind not served, a broken kubeconfig) is a `failed` progress with
the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from urllib3.util.retry import Retry

from prbot.cluster.client import DEFAULT_TIMEOUT, ClusterClient
from prbot.cluster.clusters import ClusterRef, MissingCluster
from prbot.cluster.health import (
    WORKLOAD_KINDS,
    argocd_progress,
    flux_progress,
    rollout_progress,
    workload_state,
)
from prbot.cluster.sync import (
    TARGET_LABEL,
    ObjectRef,
    Request,
    Versions,
    apply_record,
    apply_requests,
    argocd_sync,
    confine,
    flux_sync,
    group_kind,
    prune_requests,
    record_ref,
    record_scope,
    split_group_kind,
    subject,
    target_label,
)
from prbot.config import SyncSpec
from prbot.errors import ApiError, ClusterError, NotServed, TransientError
from prbot.model import Target
from prbot.progress import Progress

__all__ = ["Deployer", "Ticket"]

log = logging.getLogger("prbot.cluster.deploy")

MAX_COUNTED_WORKLOADS = 20          # Flux: workloads of the inventory read per poll to count them


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Ticket:
    """A sync in flight: what `poll` needs, nothing secret.  `to_json` / `from_json` round-trip."""

    kind: Literal["argocd", "flux", "apply"]
    cluster: str
    app: str
    env: str
    sha: str
    started_at: str                                   # RFC 3339, UTC
    subject: ObjectRef | None = None                  # the Application / Kustomization / HelmRelease
    token: str | None = None                          # Flux: the requestedAt value
    requested: bool = False                           # the sync request was sent (apply: applied)
    sources: list[ObjectRef] = field(default_factory=list)
    workloads: list[ObjectRef] = field(default_factory=list)      # apply: the rollout to wait for
    pending: list[dict[str, Any]] = field(default_factory=list)   # apply: objects left to apply
    prune: bool = False
    namespace: str | None = None                      # apply: the target's namespace (for pending)
    repo_urls: list[str] = field(default_factory=list)
    info: list[tuple[str, str]] = field(default_factory=list)     # Argo CD: shown with the operation
    notes: list[str] = field(default_factory=list)    # what the sync left out (a kind not served)
    polls: int = 0

    @property
    def target(self) -> Target:
        return Target(app=self.app, env=self.env, path="", renderer="", namespace=self.namespace)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "cluster": self.cluster, "app": self.app, "env": self.env, "sha": self.sha,
                "started_at": self.started_at, "subject": self.subject.to_json() if self.subject else None,
                "token": self.token, "requested": self.requested,
                "sources": [s.to_json() for s in self.sources], "workloads": [w.to_json() for w in self.workloads],
                "pending": self.pending, "prune": self.prune, "namespace": self.namespace,
                "repo_urls": list(self.repo_urls), "info": [list(i) for i in self.info],
                "notes": list(self.notes), "polls": self.polls}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ticket:
        return cls(kind=data["kind"], cluster=data["cluster"], app=data["app"], env=data["env"], sha=data["sha"],
                   started_at=data["started_at"],
                   subject=ObjectRef.from_json(data["subject"]) if data.get("subject") else None,
                   token=data.get("token"), requested=bool(data.get("requested")),
                   sources=[ObjectRef.from_json(s) for s in data.get("sources") or []],
                   workloads=[ObjectRef.from_json(w) for w in data.get("workloads") or []],
                   pending=list(data.get("pending") or []), prune=bool(data.get("prune")),
                   namespace=data.get("namespace"), repo_urls=list(data.get("repo_urls") or []),
                   info=[(str(k), str(v)) for k, v in data.get("info") or []],
                   notes=[str(n) for n in data.get("notes") or []], polls=int(data.get("polls") or 0))


class Deployer:
    """Syncs and polls on the clusters of a PRBOT_CLUSTERS map (one client per cluster, reused)."""

    def __init__(self, clusters: Mapping[str, ClusterRef], *, retry: Retry | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT, clock: Callable[[], datetime] = _now) -> None:
        self._clusters = clusters
        self._retry = retry
        self._timeout = timeout
        self._clock = clock
        self._clients: dict[str, ClusterClient] = {}
        self._lock = threading.Lock()

    def _client(self, cluster: str, env: str) -> ClusterClient:
        with self._lock:
            client = self._clients.get(cluster)
            if client is None or client.down:                    # a cluster down earlier: try again
                if client is not None:
                    client.close()
                ref = self._clusters.get(cluster)
                if ref is None:
                    raise MissingCluster(env, cluster, self._clusters)
                client = self._clients[cluster] = ClusterClient(ref, retry=self._retry, timeout=self._timeout)
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    # -- the two entry points ------------------------------------------------------------------

    def start(self, cluster: str, target: Target, spec: SyncSpec, sha: str, *,
              objects: Sequence[Mapping[str, Any]] = (), repo_urls: Sequence[str] = (),
              info: Sequence[tuple[str, str]] = ()) -> tuple[Ticket, Progress]:
        """Send the sync of `target` at commit `sha` on `cluster` (a key of the cluster map).

        `objects`: the target rendered at `sha` (apply only).  `repo_urls`: the GitOps repository's
        URLs (Argo CD: checked against the Application's source).  `info`: (name, value) pairs Argo
        CD shows with the operation (e.g. the PR).  Raises `MissingCluster` (a `PrbotError`) when
        `cluster` is not in the map, `TransientError` when the cluster cannot be reached.
        """
        ticket = Ticket(kind=spec.kind, cluster=cluster, app=target.app, env=target.env, sha=sha,
                        started_at=_stamp(self._clock()), prune=bool(spec.options.get("prune")),
                        namespace=target.namespace, repo_urls=list(repo_urls), info=list(info))
        client = self._client(cluster, target.env)

        def step() -> Progress:
            ticket.subject = subject(target, spec, _versions(client))          # raises NotServed
            return self._start(client, ticket, target, objects, info, confined=bool(spec.options.get("confine")))

        return self._guard(ticket, step)

    def poll(self, ticket: Ticket) -> tuple[Ticket, Progress]:
        """One pass: send what `start` could not yet (a sync Argo CD was busy for, pending
        objects), else read the live objects and judge the progress."""
        ticket.polls += 1
        client = self._client(ticket.cluster, ticket.env)
        return self._guard(ticket, lambda: self._poll(client, ticket))

    # -- plumbing ----------------------------------------------------------------------------------

    def _guard(self, ticket: Ticket, step: Callable[[], Progress]) -> tuple[Ticket, Progress]:
        where = f"cluster {ticket.cluster}"
        try:
            progress = step()
        except ClusterError as e:
            if e.transient:
                raise TransientError(f"{where}: {e.message}") from None
            progress = Progress("failed", f"{where}: {e.message}")
        except ApiError as e:
            if e.transient:
                raise TransientError(f"{where}: {e.message}") from None
            progress = Progress("failed", e.message)
        except NotServed as e:
            progress = Progress("failed", f"{where} does not serve {e.kind} ({e.api_version}): is the "
                                          "controller that defines it installed? Nothing was synced")
        if ticket.notes:
            progress = replace(progress, reason=f"{progress.reason} (note: {'; '.join(ticket.notes)})")
        log.info("sync %s/%s on %s at %s: %s", ticket.app, ticket.env, ticket.cluster, ticket.sha[:7], progress)
        return ticket, progress

    def _start(self, client: ClusterClient, ticket: Ticket, target: Target, objects: Sequence[Mapping[str, Any]],
               info: Sequence[tuple[str, str]], *, confined: bool = False) -> Progress:
        if ticket.kind == "argocd":
            return self._argocd_request(client, ticket, info)
        if ticket.kind == "flux":
            assert ticket.subject is not None
            live = _get(client, ticket.subject)
            ticket.token = _stamp(self._clock())
            step = flux_sync(live, ticket.subject, ticket.token, _versions(client))
            if step.error:
                return Progress("failed", step.error)
            ticket.notes += [n for n in step.notes if n not in ticket.notes]
            for request in step.requests:
                if request.ref == ticket.subject:
                    _send(client, [request])
                    continue
                try:
                    _send(client, [request])
                except ApiError as e:
                    if e.status != 404:
                        raise
                    log.info("%s: not found, not annotated", request.ref)     # e.g. a HelmChart not made yet
                    continue
                ticket.sources.append(request.ref)
            ticket.requested = True
            return Progress("syncing", f"reconcile requested from Flux for {ticket.subject}")
        if confined:
            return self._confined(client, ticket, target, objects)
        return self._apply(client, ticket, target, [dict(o) for o in objects])

    def _poll(self, client: ClusterClient, ticket: Ticket) -> Progress:
        if ticket.kind == "argocd":
            assert ticket.subject is not None
            if not ticket.requested:
                return self._argocd_request(client, ticket, ticket.info)
            return argocd_progress(_get(client, ticket.subject), ticket.sha)
        if ticket.kind == "flux":
            assert ticket.subject is not None and ticket.token is not None
            live = _get(client, ticket.subject)
            sources = [_get(client, s) for s in ticket.sources]
            counted = self._flux_workloads(client, live)
            return flux_progress(live, ticket.token, ticket.sha, sources=sources, workloads=counted)
        if ticket.pending:
            return self._apply(client, ticket, ticket.target, ticket.pending, pending=True)
        return rollout_progress((str(ref), _get(client, ref)) for ref in ticket.workloads)

    # -- Argo CD -----------------------------------------------------------------------------------

    def _argocd_request(self, client: ClusterClient, ticket: Ticket, info: Sequence[tuple[str, str]]) -> Progress:
        assert ticket.subject is not None
        live = _get(client, ticket.subject)
        step = argocd_sync(live, ticket.subject, ticket.sha, repo_urls=ticket.repo_urls, info=info)
        if step.error:
            return Progress("failed", step.error)
        if step.wait:
            return argocd_progress(live, ticket.sha) if live else Progress("waiting", step.wait)
        if step.already:
            ticket.requested = True
            return argocd_progress(live, ticket.sha)
        try:
            _send(client, step.requests)
        except ApiError as e:
            if e.status == 409:          # the Application changed since it was read: ask again next poll
                return Progress("waiting", "the Application changed while prbot asked for the sync; asking again")
            raise
        ticket.requested = True
        return Progress("syncing", f"sync to {ticket.sha[:7]} requested from Argo CD")

    # -- Flux --------------------------------------------------------------------------------------

    def _flux_workloads(self, client: ClusterClient, live: Mapping[str, Any] | None) -> tuple[int, int]:
        """(ready, total) over the workloads of a Kustomization's inventory (up to a bound)."""
        entries = ((live or {}).get("status") or {}).get("inventory") or {}
        refs = []
        for entry in entries.get("entries") or [] if isinstance(entries, dict) else []:
            parts = str((entry or {}).get("id", "")).split("_") if isinstance(entry, dict) else []
            if len(parts) == 4 and parts[2] == "apps" and parts[3] in WORKLOAD_KINDS:
                version = str(entry.get("v") or "v1")
                refs.append(ObjectRef(f"apps/{version}", parts[3], parts[1], parts[0] or None))
        refs = refs[:MAX_COUNTED_WORKLOADS]
        ready = sum(workload_state(_get(client, ref))[0] == "ready" for ref in refs)
        return ready, len(refs)

    # -- apply ---------------------------------------------------------------------------------------

    def _confined(self, client: ClusterClient, ticket: Ticket, target: Target,
                  objects: Sequence[Mapping[str, Any]]) -> Progress:
        """A preview's apply (`confine` option): only what the cluster's discovery says is
        namespaced, forced into the target's namespace; the rest is left out (`Progress.left_out`)."""
        if not target.namespace:
            return Progress("failed", "a confined apply needs the target's namespace")
        kept, left_out = confine(objects, target.namespace, cluster=ticket.cluster,
                                 namespaced=lambda api_version, kind: client.resource(api_version, kind).namespaced)
        progress = self._apply(client, ticket, target, kept, confined=True)
        return replace(progress, left_out=tuple(left_out))

    def _apply(self, client: ClusterClient, ticket: Ticket, target: Target, objects: list[dict[str, Any]], *,
               pending: bool = False, confined: bool = False) -> Progress:
        default_namespace = target.namespace or client.default_namespace
        crds = {(str((o.get("spec") or {}).get("group")), str(((o.get("spec") or {}).get("names") or {}).get("kind"))):
                (o.get("spec") or {}).get("scope") != "Cluster"
                for o in objects if o.get("kind") == "CustomResourceDefinition" and isinstance(o.get("spec"), dict)}

        def namespaced(api_version: str, kind: str) -> bool:
            try:
                return client.resource(api_version, kind).namespaced
            except NotServed:
                group = api_version.rpartition("/")[0] if "/" in api_version else ""
                return crds.get((group, kind), True)

        requests = apply_requests(target, objects, namespaced=namespaced, default_namespace=default_namespace)
        record = record_ref(target, default_namespace)
        previous_kinds, previous_namespaces = record_scope(_get(client, record)) if not pending else (set(), set())
        kinds = {group_kind(r.body) for r in requests}
        namespaces = {r.ref.namespace or "" for r in requests}

        failures: list[str] = []
        waiting: list[dict[str, Any]] = []
        refreshed = False
        applied: list[Request] = []
        for request in requests:
            own = (request.ref.group, request.ref.kind, request.ref.name) == ("", "Namespace", target.namespace)
            only = confined and not own               # a preview: its own Namespace, else namespaced kinds only
            try:
                result = client.apply(request.body, namespace=request.ref.namespace, namespaced_only=only)
            except NotServed:
                if confined:                              # never re-discovered: its scope was checked
                    failures.append(f"{request.ref}: the cluster stopped serving {request.ref.kind}")
                    continue
                if not refreshed:
                    client.refresh_discovery()            # CRDs applied just before: discover them
                    refreshed = True
                try:
                    result = client.apply(request.body, namespace=request.ref.namespace)
                except NotServed:
                    if pending or (request.ref.group, request.ref.kind) in crds:
                        waiting.append(request.body)      # its CRD (applied with it) is being established
                    else:
                        failures.append(f'{request.ref}: no matches for kind "{request.ref.kind}" in version '
                                        f'"{request.ref.api_version}" (is its CRD installed?)')
                    continue
            except ApiError as e:
                if e.transient:
                    raise
                failures.append(f"{request.ref}: {e.message}")
                continue
            applied.append(request)
            ref = ObjectRef.of(result) if result.get("metadata") else request.ref
            if ref.kind in WORKLOAD_KINDS and ref not in ticket.workloads:
                ticket.workloads.append(ref)
        ticket.pending = waiting
        if failures:
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            return Progress("failed", f"apply refused: {failures[0]}{more}")
        if pending:
            if waiting:
                return Progress("syncing", f"waiting for the cluster to serve {_kinds(waiting)}")
            ticket.requested = True
            return Progress("syncing", f"applied {len(applied)} more objects")
        client.apply(apply_record(target, record, kinds | previous_kinds, namespaces | previous_namespaces).body,
                     namespace=record.namespace)
        pruned = 0
        if ticket.prune and not waiting:
            owned = {default_namespace} | {n for n in namespaces | previous_namespaces if n}
            live = self._labelled(client, target, kinds | previous_kinds, owned)
            doomed = prune_requests(target, requests, live, owned_namespaces=owned, record=record)
            pruned = _send(client, doomed)
            client.apply(apply_record(target, record, kinds, namespaces).body, namespace=record.namespace)
        ticket.requested = not waiting
        done = f"applied {len(applied)} objects" + (f", pruned {pruned}" if ticket.prune else "")
        if waiting:
            return Progress("syncing", f"{done}; waiting for the cluster to serve {_kinds(waiting)}")
        return Progress("syncing", done)

    def _labelled(self, client: ClusterClient, target: Target, kinds: Iterable[str],
                  namespaces: Iterable[str]) -> list[dict[str, Any]]:
        """Live objects carrying the target's label, of `kinds`, in `namespaces` (and cluster-scoped)."""
        selector = f"{TARGET_LABEL}={target_label(target)}"
        found: list[dict[str, Any]] = []
        for text in sorted(set(kinds)):
            group, kind = split_group_kind(text)
            try:
                info = client.preferred(group, kind)
            except NotServed:
                continue                                  # its CRD is gone, and its objects with it
            if info.namespaced:
                for namespace in sorted(set(namespaces)):
                    found += client.list(info.api_version, kind, namespace=namespace, label_selector=selector)
            else:
                found += client.list(info.api_version, kind, label_selector=selector)
        return found


def _versions(client: ClusterClient) -> Versions:
    """The cluster's discovery as `prbot.cluster.sync` asks it: (group, kind) -> the preferred
    apiVersion served, None when the kind is not served."""
    def version(group: str, kind: str) -> str | None:
        try:
            return client.preferred(group, kind).api_version
        except NotServed:
            return None
    return version


def _kinds(objects: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(sorted({str(o.get("kind")) for o in objects}))


def _get(client: ClusterClient, ref: ObjectRef) -> dict[str, Any] | None:
    try:
        return client.get(ref.api_version, ref.kind, ref.name, ref.namespace)
    except NotServed:
        return None


def _send(client: ClusterClient, requests: Iterable[Request]) -> int:
    """Send requests in order; the number sent (a delete of an object already gone counts too)."""
    sent = 0
    for request in requests:
        ref = request.ref
        if request.verb == "patch":
            client.patch(ref.api_version, ref.kind, ref.name, ref.namespace, request.body,
                         patch_type=request.patch_type)
        elif request.verb == "apply":
            client.apply(request.body, namespace=ref.namespace)
        else:
            client.delete(ref.api_version, ref.kind, ref.name, ref.namespace)
        log.info("%s", request.why or f"{request.verb} {ref}")
        sent += 1
    return sent

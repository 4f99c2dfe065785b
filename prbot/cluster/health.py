"""Pure: how far a sync has come, from live objects read by the caller.  No I/O.

One read of the live objects gives one `Progress`: a state, a one-line reason and, where it can be
counted, how many workloads are ready.  Callers poll (re-enqueue) until `Progress.done`; nothing
here waits.

- Argo CD (`argocd_progress`): healthy when the last operation `Succeeded` at the merge SHA
  (`status.operationState.syncResult.revision`, else `status.sync.revision`), `status.sync.status`
  is `Synced` and `status.health.status` is `Healthy`.  A `Failed`/`Error` operation at the SHA,
  or `Degraded` health after it, is `failed` with Argo CD's message.  A pending or running
  operation is `syncing` when it is for the SHA, else `waiting` for it to finish.
- Flux (`flux_progress`): healthy when `status.lastHandledReconcileAt` equals the requested token,
  the `Ready` condition is `True` and the applied revision is the SHA (`main@sha1:<sha>`,
  `main/<sha>` or the bare SHA).  `Stalled=True`, or `Ready=False` with a terminal reason, is
  `failed` with its message.  For a HelmRelease, whose status names a chart version rather than a
  commit, the revision is that of its Git source (`status.artifact.revision`), or a chart version
  built from it (`1.2.3+<sha12>`); a chart from a Helm or OCI repository carries no commit, so
  `Ready=True` after the request is enough.
- Workloads (`rollout_progress`, for direct apply): Deployments, StatefulSets and DaemonSets rolled
  out as `kubectl rollout status` judges them: the controller observed the latest generation, every
  replica is updated, ready and available; a Deployment past its progress deadline is `failed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prbot.progress import Progress

__all__ = ["WORKLOAD_KINDS", "argocd_progress", "at_revision", "condition",
           "flux_progress", "rollout_progress", "workload_state"]

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet"})
ARGO_WORKLOAD_KINDS = WORKLOAD_KINDS | {"Rollout"}

# Ready=False reasons under which Flux is still working (everything else is a failure).
FLUX_NOT_TERMINAL = frozenset({"Progressing", "ProgressingWithRetry", "DependencyNotReady", "Reconciling"})


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def short(sha: str) -> str:
    return sha[:7]


def at_revision(revision: Any, sha: str) -> bool:
    """Whether a revision as Argo CD or Flux writes it names commit `sha`: the bare SHA,
    `<ref>@sha1:<sha>` (Flux v2), `<ref>/<sha>` (older Flux), or `sha1:<sha>`."""
    text = _str(revision).strip().lower()
    sha = sha.strip().lower()
    if not text or not sha:
        return False
    for sep in ("@sha1:", "sha1:", "/"):
        if sep in text:
            text = text.rsplit(sep, 1)[1]
            break
    return text == sha or (len(text) >= 7 and len(sha) >= 7 and (sha.startswith(text) or text.startswith(sha)))


def condition(obj: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """The status condition of type `kind`, if any."""
    for cond in _list(_map(_map(obj).get("status")).get("conditions")):
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def _name(obj: Mapping[str, Any]) -> str:
    meta = _map(obj.get("metadata"))
    ns, name = _str(meta.get("namespace")), _str(meta.get("name"))
    return f"{ns}/{name}" if ns else name


# --------------------------------------------------------------------------------------------
# Argo CD
# --------------------------------------------------------------------------------------------

def _revisions(holder: Mapping[str, Any]) -> list[str]:
    """`revision` and `revisions` of a sync operation or result."""
    out = [_str(holder.get("revision"))] if holder.get("revision") else []
    out += [_str(r) for r in _list(holder.get("revisions")) if r]
    return out


def operation_targets(operation: Mapping[str, Any] | None, sha: str) -> bool:
    """Whether an Argo CD operation syncs to `sha`."""
    return any(at_revision(r, sha) for r in _revisions(_map(_map(operation).get("sync"))))


def _argo_workloads(status: Mapping[str, Any]) -> tuple[int, int, str]:
    """(healthy, total, first message of an unhealthy one) over the Application's workloads."""
    ready = total = 0
    message = ""
    for res in _list(status.get("resources")):
        if not isinstance(res, dict) or res.get("kind") not in ARGO_WORKLOAD_KINDS:
            continue
        total += 1
        health = _map(res.get("health"))
        if health.get("status") == "Healthy":
            ready += 1
        elif not message:
            what = f"{res.get('kind')} {res.get('name')}"
            message = f"{what}: {health.get('status') or 'unknown'}" + (
                f" ({health['message']})" if _str(health.get("message")) else "")
    return ready, total, message


def argocd_progress(app: Mapping[str, Any] | None, sha: str) -> Progress:
    """Progress of an Argo CD Application towards commit `sha` (see the module's docstring)."""
    if not app:
        return Progress("failed", "the Argo CD Application does not exist")
    status = _map(app.get("status"))
    state = _map(status.get("operationState"))
    phase = _str(state.get("phase"))
    message = _str(state.get("message"))
    ready, total, unhealthy = _argo_workloads(status)
    operation = app.get("operation")
    # the revision the last sync applied: its result's, else what Argo CD says it is synced to
    result_revisions = _revisions(_map(state.get("syncResult"))) or _revisions(_map(status.get("sync")))
    if isinstance(operation, dict):
        if phase in ("Running", "Terminating") and operation_targets(state.get("operation"), sha):
            return Progress("syncing", f"Argo CD is syncing {short(sha)}" + (f": {message}" if message else ""),
                            ready, total)
        if operation_targets(operation, sha):
            return Progress("syncing", f"sync to {short(sha)} requested; waiting for Argo CD to start it",
                            ready, total)
        return Progress("waiting", "waiting for the running operation" + _describe_operation(operation))
    if not state:
        return Progress("waiting", "Argo CD has not run a sync yet", ready, total)
    ours = any(at_revision(r, sha) for r in result_revisions) or operation_targets(state.get("operation"), sha)
    if not ours:
        last = result_revisions[0] if result_revisions else ""
        return Progress("waiting", f"Argo CD has not synced {short(sha)} yet"
                        + (f" (last sync: {short(last)}, {phase or 'unknown'})" if last else ""), ready, total,
                        revision=last or None)
    revision = next((r for r in result_revisions if at_revision(r, sha)), sha)
    if phase in ("Running", "Terminating"):
        return Progress("syncing", f"Argo CD is syncing {short(sha)}" + (f": {message}" if message else ""),
                        ready, total, revision)
    if phase in ("Failed", "Error"):
        return Progress("failed", f"sync {phase.lower()}" + (f": {message}" if message else ""), ready, total,
                        revision)
    if phase != "Succeeded":
        return Progress("syncing", f"operation {phase or 'pending'}", ready, total, revision)
    sync = _map(status.get("sync"))
    health = _map(status.get("health"))
    health_status = _str(health.get("status")) or "Unknown"
    health_message = _str(health.get("message")) or unhealthy
    if health_status == "Degraded":
        return Progress("failed", "Degraded" + (f": {health_message}" if health_message else ""), ready, total,
                        revision)
    live_revisions = _revisions(sync)
    if live_revisions and not any(at_revision(r, sha) for r in live_revisions):
        return Progress("progressing", f"synced {short(sha)}, but Argo CD now compares against "
                        f"{short(live_revisions[0])}", ready, total, revision)
    if sync.get("status") == "Synced" and health_status == "Healthy":
        counted = f"; {ready} of {total} workloads healthy" if total else ""
        return Progress("healthy", f"Synced and Healthy at {short(sha)}{counted}", ready, total, revision)
    what = f"{sync.get('status') or 'Unknown'}, {health_status}"
    return Progress("progressing", what + (f": {health_message}" if health_message else ""), ready, total, revision)


def _describe_operation(operation: Mapping[str, Any]) -> str:
    revisions = _revisions(_map(operation.get("sync")))
    who = _map(operation.get("initiatedBy"))
    by = _str(who.get("username")) or ("automated sync" if who.get("automated") else "")
    parts = [f"sync to {short(revisions[0])}" if revisions else "", f"by {by}" if by else ""]
    text = " ".join(p for p in parts if p)
    return f" ({text})" if text else ""


# --------------------------------------------------------------------------------------------
# Flux
# --------------------------------------------------------------------------------------------

def _source_revision(source: Mapping[str, Any] | None) -> str:
    return _str(_map(_map(_map(source).get("status")).get("artifact")).get("revision"))


def _chart_revision(version: str, sha: str) -> bool:
    """A chart version built from a Git revision: `1.2.3+<first 12 of the sha>`."""
    meta = version.rpartition("+")[2] if "+" in version else ""
    return bool(meta) and len(meta) >= 7 and sha.lower().startswith(meta.lower())


def flux_progress(obj: Mapping[str, Any] | None, token: str, sha: str, *,
                  sources: Sequence[Mapping[str, Any] | None] = (), workloads: tuple[int, int] = (0, 0)) -> Progress:
    """Progress of a Flux Kustomization or HelmRelease towards commit `sha` after the reconcile
    request `token`.  `sources`: the live sources it reads (for a HelmRelease's Git revision, and to
    say what a Kustomization waits for); `workloads`: (ready, total) when counted by the caller."""
    ready, total = workloads
    if not obj:
        return Progress("failed", "the Flux object does not exist")
    kind = _str(obj.get("kind")) or "object"
    status = _map(obj.get("status"))
    if _map(obj.get("spec")).get("suspend") is True:
        return Progress("failed", f"the {kind} is suspended (flux resume {kind.lower()} {_name(obj)})")
    if _str(status.get("lastHandledReconcileAt")) != token:
        return Progress("syncing", "reconcile requested; waiting for Flux to handle it", ready, total)
    stalled = condition(obj, "Stalled")
    if stalled is not None and stalled.get("status") == "True":
        return Progress("failed", _flux_message("Stalled", stalled), ready, total)
    cond = condition(obj, "Ready")
    cond_status = _str(_map(cond).get("status")) or "Unknown"
    reason = _str(_map(cond).get("reason"))
    if cond_status == "False" and reason == "DependencyNotReady":
        return Progress("waiting", _flux_message("dependency not ready", cond or {}), ready, total)
    if cond_status == "False" and reason not in FLUX_NOT_TERMINAL:
        return Progress("failed", _flux_message(reason or "not ready", cond or {}), ready, total)
    if cond_status != "True":
        return Progress("syncing" if not status.get("lastAppliedRevision") else "progressing",
                        _flux_message("reconciling", cond or {}), ready, total)
    if kind == "HelmRelease":
        return _helmrelease(obj, sha, sources, ready, total)
    applied = _str(status.get("lastAppliedRevision"))
    if at_revision(applied, sha):
        return Progress("healthy", f"Ready, applied {short(sha)}", ready, total, applied)
    source = next((s for s in sources if s), None)
    fetched = _source_revision(source)
    if source is not None and not at_revision(fetched, sha):
        return Progress("syncing", f"waiting for the source to fetch {short(sha)}"
                        + (f" (it has {_short_revision(fetched)})" if fetched else ""), ready, total, applied or None)
    return Progress("syncing", f"waiting for Flux to apply {short(sha)}"
                    + (f" (applied: {_short_revision(applied)})" if applied else ""), ready, total, applied or None)


def _helmrelease(obj: Mapping[str, Any], sha: str, sources: Sequence[Mapping[str, Any] | None],
                 ready: int, total: int) -> Progress:
    status = _map(obj.get("status"))
    history = [h for h in _list(status.get("history")) if isinstance(h, dict)]
    chart_version = _str(history[0].get("chartVersion")) if history else _str(status.get("lastAttemptedRevision"))
    chart = f"chart {chart_version}" if chart_version else "the chart"
    git_sources = [s for s in sources if s and s.get("kind") == "GitRepository"]
    if _chart_revision(chart_version, sha):
        return Progress("healthy", f"Ready, released {chart}", ready, total, chart_version)
    if git_sources:
        fetched = _source_revision(git_sources[0])
        if not at_revision(fetched, sha):
            return Progress("syncing", f"waiting for the source to fetch {short(sha)}"
                            + (f" (it has {_short_revision(fetched)})" if fetched else ""), ready, total)
        return Progress("healthy", f"Ready, released {chart} from {short(sha)}", ready, total, fetched)
    return Progress("healthy", f"Ready, released {chart}", ready, total, chart_version or None)


def _short_revision(revision: str) -> str:
    """`main@sha1:0123456789…` -> `main@0123456`."""
    if "@sha1:" in revision:
        ref, _, sha = revision.partition("@sha1:")
        return f"{ref}@{sha[:7]}"
    return revision[:20]


def _flux_message(what: str, cond: Mapping[str, Any]) -> str:
    message = _str(cond.get("message"))
    return f"{what}: {message}" if message else what


# --------------------------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------------------------

def workload_state(obj: Mapping[str, Any] | None) -> tuple[str, str]:
    """("ready" | "progressing" | "failed", detail) of a Deployment, StatefulSet or DaemonSet, as
    `kubectl rollout status` judges it."""
    if not obj:
        return "progressing", "not found"
    kind = _str(obj.get("kind"))
    meta, spec, status = _map(obj.get("metadata")), _map(obj.get("spec")), _map(obj.get("status"))
    generation = _int(meta.get("generation"))
    if _int(status.get("observedGeneration"), -1) < generation:
        return "progressing", "waiting for the controller to observe the new generation"
    if kind == "Deployment":
        progressing = condition(obj, "Progressing")
        if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
            return "failed", f"exceeded its progress deadline ({_str(progressing.get('message'))})".replace(" ()", "")
        replicas = _int(spec.get("replicas"), 1)
        updated = _int(status.get("updatedReplicas"))
        if updated < replicas:
            return "progressing", f"{updated} of {replicas} replicas updated"
        if _int(status.get("replicas")) > updated:
            return "progressing", f"{_int(status.get('replicas')) - updated} old replicas pending termination"
        available = _int(status.get("availableReplicas"))
        if available < updated:
            return "progressing", f"{available} of {updated} updated replicas available"
        return "ready", f"{available} of {replicas} replicas available"
    if kind == "StatefulSet":
        replicas = _int(spec.get("replicas"), 1)
        ready = _int(status.get("readyReplicas"))
        if ready < replicas:
            return "progressing", f"{ready} of {replicas} replicas ready"
        strategy = _map(spec.get("updateStrategy"))
        if strategy.get("type") == "OnDelete":
            return "ready", f"{ready} of {replicas} replicas ready (OnDelete)"
        partition = _int(_map(strategy.get("rollingUpdate")).get("partition"))
        if partition:
            updated = _int(status.get("updatedReplicas"))
            if updated < replicas - partition:
                return "progressing", f"{updated} of {replicas - partition} replicas updated (partition {partition})"
            return "ready", f"{ready} of {replicas} replicas ready"
        if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
            return "progressing", f"{_int(status.get('updatedReplicas'))} of {replicas} replicas updated"
        return "ready", f"{ready} of {replicas} replicas ready"
    if kind == "DaemonSet":
        desired = _int(status.get("desiredNumberScheduled"))
        updated = _int(status.get("updatedNumberScheduled"))
        if updated < desired:
            return "progressing", f"{updated} of {desired} pods updated"
        available = _int(status.get("numberAvailable"))
        if available < desired:
            return "progressing", f"{available} of {desired} updated pods available"
        return "ready", f"{available} of {desired} pods available"
    return "ready", "not a workload"


def rollout_progress(workloads: Iterable[tuple[str, Mapping[str, Any] | None]]) -> Progress:
    """Progress of the rollout of workloads: (description, live object or None) pairs."""
    items = list(workloads)
    total = len(items)
    if not total:
        return Progress("healthy", "applied; no workloads to wait for")
    ready = 0
    first: str | None = None
    for what, obj in items:
        state, detail = workload_state(obj)
        if state == "failed":
            return Progress("failed", f"{what} {detail}", sum(workload_state(o)[0] == "ready" for _, o in items),
                            total)
        if state == "ready":
            ready += 1
        elif first is None:
            first = f"{what}: {detail}"
    noun = "workload" if total == 1 else "workloads"
    if ready == total:
        return Progress("healthy", f"{ready} of {total} {noun} ready", ready, total)
    return Progress("progressing", f"{ready} of {total} {noun} ready; {first}", ready, total)

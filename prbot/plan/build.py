"""Building the plan for base...head: which targets are affected, their renderings at both sides
compared, validated and (with a cluster) dry-run.  The sides come from full exports of both
revisions (`prbot.plan.sides.full_sides`) or from partial ones (`prbot.plan.sparse`); `_sides`
picks the way, `_finish` renders and compares.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import posixpath
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prbot import gitrepo, remote, sandbox
from prbot.config import CONFIG_FILE, Config
from prbot.diff import diff_objects, duplicate_identities, object_key
from prbot.errors import PlanBudgetError, PrbotError
from prbot.expand import normalise_repository_url
from prbot.model import Target
from prbot.plan.model import DryRunner, Key, Plan, TargetPlan
from prbot.plan.probe import TreeProbe
from prbot.plan.sides import PlanSide, discover, full_sides, order
from prbot.plan.sparse import sparse_head_sides, sparse_sides
from prbot.render import Rendered, RenderPool
from prbot.renderers.closure import ClosureCache
from prbot.targets import unmatched_paths
from prbot.timing import StageClock, carry, measuring, timed
from prbot.tools import used_versions
from prbot.validate import validate_objects

log = logging.getLogger("prbot.plan")


def make_plan(repo: Path, config: Config, base: str, head: str | None = None, *,
              envs: Sequence[str] | None = None, pool: RenderPool | None = None,
              dry_runner: DryRunner | None = None, untracked: bool = False,
              repository_urls: Sequence[str] | None = None) -> Plan:
    """Plan base...head (head None: the working tree's tracked files, and with `untracked` the
    untracked files git does not ignore) for every affected target.

    A target is affected when the digest of its input closure differs between base and head, when it
    appears or disappears, or when `.prbot.yml` changed.  Only affected targets are rendered.

    The work follows the change, not the repository: the head closures (or, for kustomize targets, a
    cheaper scan of what they can read) pick the candidate targets a change can reach, and only the
    files those candidates need are exported at base (`prbot.plan.sparse`).  Both revisions are used in
    full (`full_sides`) when `.prbot.yml` changed, when git may convert file contents (attributes,
    ``core.autocrlf``), or when target discovery passes a symbolic link; both ways give the same plan.
    The pool made here (when `pool` is None) renders with each environment's Kubernetes version.
    `repository_urls`: the URLs of this repository (default: its `origin`), which with
    `render.repository` decide which GitRepository / Application reads this tree (`prbot.expand`).
    """
    return _plan(repo, config, base, head, envs=envs, pool=pool, dry_runner=dry_runner, sparse=True,
                 untracked=untracked, repository_urls=repository_urls)


def repository_identity(config: Config, given: Sequence[str]) -> tuple[str, ...]:
    """The normalised URLs meaning "this repository" to expansions: `given` (its origin, or the clone
    URL the service fetches from) and `render.repository`.  Part of every render's cache key, so
    whatever renders for a plan's cache (the service's warm base) must pass the same."""
    return tuple(sorted({u for u in (normalise_repository_url(x) for x in (*given, *config.render_repository)) if u}))


def _plan(repo: Path, config: Config, base: str, head: str | None, *, envs: Sequence[str] | None,
          pool: RenderPool | None, dry_runner: DryRunner | None, sparse: bool, untracked: bool = False,
          repository_urls: Sequence[str] | None = None) -> Plan:
    """`make_plan`; `sparse` False: always the full way (the reference the sparse way must equal)."""
    repo = Path(repo)
    if repository_urls is None:
        origin = gitrepo.origin_url(repo)
        repository_urls = (origin,) if origin else ()
    urls = repository_identity(config, repository_urls)
    for env in envs or ():
        config.env(env)                       # unknown environment -> PrbotError
    base_sha = gitrepo.resolve(repo, base)
    if head:
        head_rev = head_sha = gitrepo.resolve(repo, head)
    else:                                     # the working tree, read as a commit of what git tracks
        head_rev, dirty = gitrepo.snapshot_worktree(repo, untracked=untracked)
        head_sha = gitrepo.resolve(repo, "HEAD") + ("-dirty" if dirty else "")
    pool = pool or RenderPool(kube_versions={e.name: e.kubernetes_version for e in config.environments
                                             if e.kubernetes_version})
    deadline = time.monotonic() + pool.limits.plan_budget      # the plan's time budget (PRBOT_PLAN_BUDGET)
    with measuring(StageClock()) as clock, contextlib.ExitStack() as stack:
        sides = _sides(stack, repo, config, base_sha, head_rev, envs, sparse)
        plan = _finish(config, base_sha, head_sha, *sides, pool=pool, dry_runner=dry_runner,
                       deadline=deadline, repository_urls=urls)
    plan.timings, plan.renders = clock.as_dict(), clock.counts["render"]
    return plan


def _sides(stack: contextlib.ExitStack, repo: Path, config: Config, base_sha: str, head_rev: str,
           envs: Sequence[str] | None, sparse: bool) -> tuple[PlanSide, PlanSide, list[Key]]:
    """(base side, head side, affected keys); the trees stay until `stack` closes."""
    git_jobs = stack.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix="prbot-git"))
    # git works on its own while this thread looks at the head tree
    changed_job = git_jobs.submit(carry(gitrepo.changed_paths), repo, base_sha, head_rev)
    if sparse:
        got = sparse_head_sides(stack, repo, config, base_sha, head_rev, envs, changed_job)
        if got is not None:
            return got
    btree = stack.enter_context(gitrepo.partial_tree(repo, base_sha))
    hroot = stack.enter_context(gitrepo.materialize(repo, head_rev))
    _refuse_unmatched(stack, repo, config, hroot, base_sha)
    closures = ClosureCache()
    probe = TreeProbe(hroot)
    try:
        h_all: dict[Key, Target] | None = discover(hroot, config, envs)
    except PrbotError:
        h_all = None                          # raised again by full_sides, after any error at base
    if sparse and h_all is not None:
        for target in h_all.values():
            if target.renderer == "kustomize":
                probe.prefetch(target.path)
    changed = changed_job.result()
    if (sparse and h_all is not None and CONFIG_FILE not in changed
            and not any(posixpath.basename(p) == ".gitattributes" for p in changed)
            and not probe.discovery_meets_links(spec.path for spec in config.apps)):
        sides = sparse_sides(btree, config, envs, hroot, h_all, changed, changed, closures, probe)
        if sides is not None:
            return sides
    log.debug("full plan: both revisions exported in full")
    broot = stack.enter_context(gitrepo.materialize(repo, base_sha))
    b, h = full_sides(broot, hroot, config, envs, closures)
    affected = [k for k in order(b, h)
                if CONFIG_FILE in changed or b.keys.get(k) != h.keys.get(k) or k in h.closure_errors]
    return b, h, affected


def _refuse_unmatched(stack: contextlib.ExitStack, repo: Path, config: Config, hroot: Path, base_sha: str) -> None:
    """A path pattern that matches no directory at head nor at base is a typo in `.prbot.yml`
    (an `apps[].path` must match): refuse to plan rather than report an empty, green plan.  (Matching at base only is
    a PR removing the app's last directory: its targets are planned as removed.)"""
    missing = unmatched_paths(config, hroot)
    if not missing:
        return
    broot = stack.enter_context(gitrepo.materialize(repo, base_sha))
    at_base = {index for index, _ in unmatched_paths(config, broot)}
    for index, message in missing:
        if index in at_base:
            raise PrbotError(f"{config.source}:{config.apps[index].line or 1}: {message}")


def _finish(config: Config, base_sha: str, head_sha: str, b: PlanSide, h: PlanSide, affected: list[Key],
            *, pool: RenderPool, dry_runner: DryRunner | None, deadline: float | None = None,
            repository_urls: tuple[str, ...] = ()) -> Plan:
    """Render the affected targets at both sides (within the plan's deadline) and compare them."""
    for side in (b, h):                 # remote inputs: rendered when `render.remote` allows them
        for k, refs in side.remote.items():
            blocked = [r for r in refs if not remote.allowed(r, config.render_remote)]
            if blocked:
                side.skipped[k] = (f"not rendered: it reads {blocked[0]}, a remote input that render.remote "
                                   "in .prbot.yml does not allow")
    requests = [(side.root, side.targets[k], side.keys[k]) for k in affected for side in (b, h)
                if k in side.targets and k not in side.closure_errors and k not in side.skipped]
    # each target is compared as soon as its renders are in, while the others still render, so a
    # slow render running out the budget does not take the targets done before it with it
    budget = pool.limits.describe("plan_budget")
    rendered: dict[str, Any] = {}
    planned: dict[Key, TargetPlan] = {}
    needs: dict[Key, set[str]] = {k: set() for k in affected}
    waiting: dict[str, list[Key]] = {}
    for k in affected:
        for side in (b, h):
            if k in side.targets and k not in side.closure_errors and k not in side.skipped:
                needs[k].add(side.keys[k])
                waiting.setdefault(side.keys[k], []).append(k)

    def ready(cache_key: str, result: Any) -> None:
        rendered[cache_key] = result
        for k in waiting.get(cache_key, ()):
            if k not in planned and needs[k] <= rendered.keys():
                planned[k] = _target_plan(config, k, b, h, rendered, dry_runner, deadline=deadline, budget=budget)

    with remote.Remotes(config.render_remote, limits=pool.limits) as remotes:
        pool.render_many(requests, deadline=deadline, remotes=remotes if config.render_remote else None,
                         ready=ready, repository_urls=repository_urls)
    targets = [planned[k] if k in planned else
               _target_plan(config, k, b, h, rendered, dry_runner, deadline=deadline, budget=budget)
               for k in affected]
    env_order = config.env_names
    targets.sort(key=lambda t: (env_order.index(t.env) if t.env in env_order else len(env_order), t.app))
    kinds = {target.renderer for _, target, _ in requests}
    if any(k in side.helm_charts for k in affected for side in (b, h)):
        kinds.add("helmCharts")
    return Plan(base=base_sha, head=head_sha, targets=targets, tools=used_versions(kinds),
                isolation=sandbox.isolation())


def _target_plan(config: Config, key: tuple[str, str], b: PlanSide, h: PlanSide,
                 rendered: dict[str, Any], dry_runner: DryRunner | None, *, deadline: float | None = None,
                 budget: str = "the plan time budget (PRBOT_PLAN_BUDGET)") -> TargetPlan:
    """One target's part of the plan; whatever goes wrong with it stays in it.  Comparing and
    validating count against the plan's budget (`deadline`, `budget` naming it): a target whose
    turn comes after it ran out fails saying so, the targets before it keep their results."""
    target = h.targets.get(key) or b.targets[key]
    try:
        return _compare(config, key, target, b, h, rendered, dry_runner, deadline)
    except PlanBudgetError as exc:
        log.warning("planning %s: %s", target.key, exc)
        return TargetPlan(app=target.app, env=target.env, path=target.path, renderer=target.renderer,
                          status="error", error=f"not planned: {budget} ran out while {exc.stage} its objects")
    except RecursionError:
        log.warning("planning %s: objects nested too deeply", target.key)
        return TargetPlan(app=target.app, env=target.env, path=target.path, renderer=target.renderer,
                          status="error", error="the rendered objects are nested too deeply to compare")


def _compare(config: Config, key: tuple[str, str], target: Target, b: PlanSide, h: PlanSide,
             rendered: dict[str, Any], dry_runner: DryRunner | None, deadline: float | None = None) -> TargetPlan:
    tp = TargetPlan(app=target.app, env=target.env, path=target.path, renderer=target.renderer,
                    status="changed")
    if key in h.closure_errors:
        tp.status, tp.error = "error", h.closure_errors[key]
        return tp
    if key in h.skipped:
        tp.status, tp.error = "skipped", h.skipped[key]
        return tp
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    if key in b.targets:
        got = rendered.get(b.keys[key]) if key not in b.closure_errors and key not in b.skipped else None
        if isinstance(got, Exception) or got is None:
            reason = got if got is not None else b.closure_errors.get(key) or b.skipped[key]
            tp.error = f"the base revision did not render ({reason}); every object is shown as added"
        else:
            before = got
    if key in h.targets:
        got = rendered[h.keys[key]]
        if isinstance(got, Exception):
            tp.status, tp.error = "error", str(got)
            return tp
        after = got
        before = _without_unknown(before, after)
    if deadline is not None and time.monotonic() >= deadline:
        raise PlanBudgetError("comparing")
    if key in h.targets:
        duplicates = duplicate_identities(after, target.namespace)
        if duplicates:
            tp.status = "error"
            tp.error = "two objects with one identity (the cluster would keep only one): " + "; ".join(duplicates)
            return tp
    with timed("diff"):
        tp.changes = diff_objects(before, after, default_namespace=target.namespace, ignore=config.diff_ignore,
                                  deadline=deadline)
    _mark_origins(tp, before, after, target.namespace)
    if key not in b.targets:
        tp.status = "added"
    elif key not in h.targets:
        tp.status = "removed"
    elif not tp.changes:
        tp.status = "unchanged"
    if key in h.targets:
        with timed("validation"):
            tp.validation = validate_objects(after, config.env(target.env).kubernetes_version, deadline=deadline)
        if dry_runner is not None:
            # what the target owns comes from the base only: None when the PR adds the target
            tp.dry_run = dry_runner(target, after, before if key in b.targets else None, deadline=deadline)
    log.info("planned %s: %s", target.key, tp.status)
    return tp


def _without_unknown(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The base's objects, less those expanded from an object the head could not expand: what the
    cluster would do with them is unknown (named as not expanded), not a removal."""
    if not isinstance(after, Rendered) or not after.not_expanded or not isinstance(before, Rendered):
        return before
    unknown = {note.split(": ", 1)[0] for note in after.not_expanded}
    keep = [i for i in range(len(before))
            if not (before.origin_of(i) and set(str(before.origin_of(i)).split(" › ")) & unknown)]
    return Rendered([before[i] for i in keep], {new: o for new, i in enumerate(keep)
                                                if (o := before.origin_of(i)) is not None})


def _mark_origins(tp: TargetPlan, before: list[dict[str, Any]], after: list[dict[str, Any]],
                  namespace: str | None) -> None:
    """Name, on each change of an expanded object, the object it came from ("HelmRelease apps/podinfo"),
    and carry the head's expansions that could not be done."""
    origins: dict[Any, str] = {}
    for side in (before, after):                  # the head's origin wins
        if isinstance(side, Rendered):
            for index, origin in side.origins.items():
                if index < len(side) and isinstance(side[index], dict):
                    origins[object_key(side[index], namespace)] = origin
    if origins:
        tp.changes = [dataclasses.replace(c, origin=origins.get((c.group, c.kind, c.namespace, c.name)))
                      for c in tp.changes]
    if isinstance(after, Rendered):
        tp.not_expanded = list(after.not_expanded)

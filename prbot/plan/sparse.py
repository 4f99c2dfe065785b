"""The sparse way to build a plan's sides: the work follows the change, not the repository.

The head closures (or, for kustomize targets, a cheaper scan of what they can read, `TreeProbe`)
pick the candidate targets a change can reach: a head target is one unless its inputs provably avoid
every path where base and head may differ (`_head_may_differ`).  Only the files those candidates
read are exported at base, growing the export until their closures ask for nothing new (then they
equal the closures on the full tree).  A committed head is exported as sparsely (`sparse_head_sides`).
Both ways, sparse and full (`prbot.plan.sides.full_sides`), give the same plan.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import posixpath
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from pathlib import Path

from prbot import gitrepo
from prbot.config import CONFIG_FILE, Config
from prbot.errors import PrbotError
from prbot.model import KUSTOMIZATION_FILES, Target
from prbot.plan.model import Key
from prbot.plan.probe import ChangedPaths, TreeProbe
from prbot.plan.sides import PlanSide, discover, order, plan_side
from prbot.renderers.closure import Closure, ClosureCache, is_remote_reference
from prbot.targets import unmatched_indexes

log = logging.getLogger("prbot.plan")

MAX_ROUNDS = 8          # sparse base export: rounds of "closures ask for more files" before exporting all


def sparse_head_sides(stack: contextlib.ExitStack, repo: Path, config: Config, base_sha: str, head_rev: str,
                      envs: Sequence[str] | None, changed_job: Future[set[str]],
                      ) -> tuple[PlanSide, PlanSide, list[Key]] | None:
    """The sparse way for a committed head (a bare mirror's PR head), exporting the head as
    sparsely as the base: discovery and the cheap kustomization scan read git's tree directly
    (`gitrepo.TreeView`), and only what candidate targets read is written out at head.  None when
    the tree view cannot vouch for what a full export would show (submodules, attributes, links
    on discovery's way …): then the head is exported in full as before."""
    view = stack.enter_context(gitrepo.tree_view(repo, head_rev))
    if not view.vouches:
        log.debug("head exported in full: %s", view.reason)
        return None
    htree = stack.enter_context(gitrepo.partial_tree(repo, head_rev))
    probe = TreeProbe(htree.root, view)
    if probe.discovery_meets_links(spec.path for spec in config.apps):
        return None
    try:
        h_all = discover(htree.root, config, envs, tree=view)
        if unmatched_indexes(config, view):
            return None                       # the way below refuses a pattern that matches nothing
    except (gitrepo.TreeViewUnsure, PrbotError):
        return None                           # the way below reports an error as before
    probe.prefetch_all(t.path for t in h_all.values() if t.renderer == "kustomize")
    changed = changed_job.result()
    if CONFIG_FILE in changed or any(posixpath.basename(p) == ".gitattributes" for p in changed):
        return None
    btree = stack.enter_context(gitrepo.partial_tree(repo, base_sha))
    return sparse_sides(btree, config, envs, htree.root, h_all, changed, changed, ClosureCache(), probe,
                        htree=htree)


def _grow(tree: gitrepo.PartialTree, targets: Sequence[Target], changed: Iterable[str]) -> ClosureCache:
    """Export at the head what the closures of `targets` read, growing to a fixed point as the
    base side does (then they equal the closures on the full tree); the cache holding them,
    computed in the order given."""
    wanted = set(changed)
    for target in targets:
        wanted.add(target.path)
        if target.chart:
            wanted.add(target.chart)
        wanted.update(target.values)
    tree.add(wanted)
    for round_ in itertools.count():
        cache = ClosureCache()
        wanted = set()
        for target in targets:
            wanted.update(_needs(cache.closure(tree.root, target)))
        if round_ >= MAX_ROUNDS:
            wanted = {""}
        if not tree.add(wanted):
            return cache
    raise AssertionError("unreachable")       # pragma: no cover - itertools.count never ends


def sparse_sides(btree: gitrepo.PartialTree, config: Config, envs: Sequence[str] | None, hroot: Path,
                 h_all: dict[Key, Target], changed: set[str], sensitive: set[str], closures: ClosureCache,
                 probe: TreeProbe, htree: gitrepo.PartialTree | None = None,
                 ) -> tuple[PlanSide, PlanSide, list[Key]] | None:
    """(base side, head side, affected keys) computed from the candidate targets only; None when the
    base revision must be used in full (a discovery error, which the full way reports as before).

    `sensitive`: every path where the base and head trees may differ (changed paths, plus what git
    cannot vouch for in a working tree).  A head target is a candidate unless its inputs provably
    avoid those paths (`_head_may_differ`); a base target is one when its directory is involved.
    Base closures are computed on a partial export holding what candidates read, extended until
    they ask for nothing new, which makes them equal to closures on the full tree.

    `htree`: the head is a partial export too (`hroot` is its root); the closures computed on it
    (targets the scan cannot vet, then any other candidate) are grown the same way (`_grow`).
    """
    involved = ChangedPaths(sensitive)
    vetted: set[Key] = set()
    if htree is not None:
        vetted = {key for key, t in h_all.items() if _vetted(t, probe, involved)}
        closures = _grow(htree, [t for key, t in h_all.items() if key not in vetted], changed)
    candidates = {key: None for key, t in h_all.items() if _head_may_differ(t, hroot, closures, probe, involved)}
    wanted = set(changed)
    for key in candidates:
        target = h_all[key]
        wanted.add(target.path)
        wanted.update(closures.closure(hroot, target).files)
    btree.add(wanted)
    for round_ in itertools.count():
        bcache = ClosureCache()             # the tree grew: nothing computed on it before holds
        try:
            b_all = discover(btree.root, config, envs, strict=False)
        except PrbotError:
            return None
        for key, target in b_all.items():
            if key not in candidates and involved.touches(target.path):
                candidates[key] = None
        wanted = {h_all[key].path for key in candidates if key in h_all}
        for key, target in b_all.items():     # in discovery order, as the full way (see _head_may_differ)
            if key in candidates:
                wanted.add(target.path)
                wanted.update(_needs(bcache.closure(btree.root, target)))
        if round_ >= MAX_ROUNDS:            # unusually deep: export everything, then one more round
            wanted = {""}
        if not btree.add(wanted):
            break                           # nothing new: the closures are those of the full tree
    if htree is not None and any(key in vetted for key in candidates):
        # a base target made a candidate of a head target the scan had vetted: its closure too
        closures = _grow(htree, [t for key, t in h_all.items() if key not in vetted]
                         + [h_all[key] for key in candidates if key in vetted], changed)
    log.debug("sparse plan: %d candidate(s) of %d head target(s); %d base file(s) exported in %d round(s)%s",
              len(candidates), len(h_all), len(btree.written), round_ + 1,
              f"; {len(htree.written)} head file(s) exported" if htree is not None else "")
    b = plan_side(btree.root, {k: b_all[k] for k in candidates if k in b_all}, bcache)
    h = plan_side(hroot, {k: h_all[k] for k in candidates if k in h_all}, closures)
    affected = [k for k in order(b, h) if b.keys.get(k) != h.keys.get(k) or k in h.closure_errors]
    return b, h, affected


def _needs(closure: Closure) -> set[str]:
    """What a closure computed on a partial tree must find exported to be the full tree's closure:
    the files it read, the paths it found missing, the directories it listed and, for a host-like
    reference taken as remote, the local path it would be."""
    need = set(closure.files) | set(closure.missing)
    need.update(g.rpartition("/")[0] for g in closure.globs)
    remote = [r for r in closure.remote if is_remote_reference(r)]
    if remote:
        kdirs = {f.rpartition("/")[0] for f in closure.files if posixpath.basename(f) in KUSTOMIZATION_FILES}
        for ref in remote:
            for kdir in kdirs | {""}:
                need.add(posixpath.normpath(posixpath.join(kdir, ref.strip())))
    return need


def _vetted(target: Target, probe: TreeProbe, involved: ChangedPaths) -> bool:
    """The cheap scan proves a kustomize target's inputs avoid every involved path (it knows nothing of
    a sync.flux.root, whose files are inputs too)."""
    return (target.renderer == "kustomize" and target.flux is None and probe.kind(target.path) == "dir"
            and probe.kustomization_clean(target.path, involved))


def _head_may_differ(target: Target, hroot: Path, closures: ClosureCache, probe: TreeProbe,
                     involved: ChangedPaths) -> bool:
    """False only when `target` provably has the same digest at base as at head: neither its
    directory nor anything its rendering reads is at, above or below a path where the trees may
    differ, no symbolic link is on the way, and it reads nothing remote or outside the repository.
    (Then the target also exists at base, in the same directory, with the same renderer.)"""
    if _vetted(target, probe, involved):
        return False
    # Computed for every target not vetted by the scan, in discovery order as the full way does: a
    # kustomization cycle makes the closures met on it depend on the order they are computed in.
    closure = closures.closure(hroot, target)
    if involved.touches(target.path) or probe.kind(target.path) != "dir":
        return True
    if closure.remote or closure.outside or closure.errors:
        return True
    for path in closure.files:
        if involved.touches(path) or not probe.readable(path):
            return True
    for path in closure.missing:
        if involved.touches(path) or probe.kind(path) != "missing":
            return True
    for glob in closure.globs:
        directory = glob.rpartition("/")[0]
        if involved.touches(directory) or probe.kind(directory) != "dir":
            return True
        if glob.endswith("**") and probe.tree_suspicious(directory):
            return True
        if not glob.endswith("**") and probe.listing_has_links(directory):
            return True
    return target.renderer != "kustomize" and not probe.holds_file(target.path)

"""The plan for base...head: the data behind the JSON output and the PR comment."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import posixpath
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prbot import gitrepo, remote
from prbot.config import CONFIG_FILE, Config
from prbot.diff import ObjectChange, diff_objects, duplicate_identities
from prbot.errors import PrbotError
from prbot.render import RenderPool, cache_extra
from prbot.renderers.closure import Closure, ClosureCache, is_remote_reference
from prbot.targets import KUSTOMIZATION_FILES, Target, discover_targets, unmatched_indexes, unmatched_paths
from prbot.tools import used_versions
from prbot.validate import ValidationIssue, validate_objects

try:                    # libyaml, as prbot.impact parses kustomizations: the cheap scan composes with it
    import yaml as _yaml
    _CSafeLoader: Any = getattr(_yaml, "CSafeLoader", None)
except ImportError:     # pragma: no cover - depends on the installation
    _yaml = None  # type: ignore[assignment]
    _CSafeLoader = None


@dataclass(frozen=True)
class DryRunError:
    group: str
    kind: str
    namespace: str | None
    name: str
    message: str


@dataclass
class DryRun:
    status: str                                       # "ok" | "failed"
    changes: list[ObjectChange] = field(default_factory=list)   # live -> dry-run result
    errors: list[DryRunError] = field(default_factory=list)
    skipped: list[DryRunError] = field(default_factory=list)   # not sent to the cluster, and why (no failure)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status,
                               "changes": [c.to_json() for c in self.changes],
                               "errors": [e.__dict__.copy() for e in self.errors]}
        if self.skipped:
            out["skipped"] = [e.__dict__.copy() for e in self.skipped]
        return out


@dataclass
class TargetPlan:
    app: str
    env: str
    path: str
    renderer: str
    status: str                         # changed | unchanged | added | removed | error | skipped
    error: str | None = None
    changes: list[ObjectChange] = field(default_factory=list)
    validation: list[ValidationIssue] = field(default_factory=list)
    dry_run: DryRun | None = None

    @property
    def failed(self) -> bool:
        return (self.status == "error"
                or any(v.level == "error" for v in self.validation)
                or (self.dry_run is not None and self.dry_run.status == "failed"))

    def counts(self) -> tuple[int, int, int]:
        """(added, changed, removed) object counts."""
        acts = [c.action for c in self.changes]
        return acts.count("added"), acts.count("changed"), acts.count("removed")

    def to_json(self) -> dict[str, Any]:
        return {"app": self.app, "env": self.env, "path": self.path, "renderer": self.renderer,
                "status": self.status, "error": self.error,
                "changes": [c.to_json() for c in self.changes],
                "validation": [v.to_json() for v in self.validation],
                "dry_run": self.dry_run.to_json() if self.dry_run else None}


@dataclass
class Plan:
    base: str
    head: str
    targets: list[TargetPlan] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)   # renderer versions used, e.g. {"helm": "v4.1.4"}

    @property
    def failed(self) -> bool:
        return any(t.failed for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "head": self.head, "targets": [t.to_json() for t in self.targets],
                "tools": dict(self.tools)}


# --------------------------------------------------------------------------------------------
# Building the plan
# --------------------------------------------------------------------------------------------

# dry_runner(target, objects rendered at head, objects rendered at base ([] when none)): the base
# objects say what the target owns (SPEC §4); None: no cluster for the target
DryRunner = Callable[["Target", list[dict[str, Any]], list[dict[str, Any]]], "DryRun | None"]
Key = tuple[str, str]
log = logging.getLogger("prbot.plan")

MAX_ROUNDS = 8          # sparse base export: rounds of "closures ask for more files" before exporting all


@dataclass
class _Side:
    root: Path
    targets: dict[Key, Target]
    keys: dict[Key, str] = field(default_factory=dict)
    closure_errors: dict[Key, str] = field(default_factory=dict)
    helm_charts: set[Key] = field(default_factory=set)      # kustomize targets inflating helmCharts
    remote: dict[Key, tuple[str, ...]] = field(default_factory=dict)   # remote inputs each target reads
    skipped: dict[Key, str] = field(default_factory=dict)              # not rendered: why (a remote input)


def _discover(root: Path, config: Config, envs: Sequence[str] | None,
              tree: gitrepo.TreeView | None = None) -> dict[Key, Target]:
    return {(t.app, t.env): t for t in discover_targets(config, root, tree=tree) if envs is None or t.env in envs}


def _side(root: Path, targets: dict[Key, Target], cache: ClosureCache) -> _Side:
    side = _Side(root, targets)
    for key, target in targets.items():
        closure = cache.closure(root, target)
        if closure.remote:
            side.remote[key] = closure.remote
        side.keys[key] = cache.digest(root, closure, cache_extra(target))
        if closure.helm_charts:
            side.helm_charts.add(key)
    return side


def make_plan(repo: Path, config: Config, base: str, head: str | None = None, *,
              envs: Sequence[str] | None = None, pool: RenderPool | None = None,
              dry_runner: DryRunner | None = None) -> Plan:
    """Plan base...head (head None: the working tree) for every affected target.

    A target is affected when the digest of its input closure differs between base and head, when it
    appears or disappears, or when `.prbot.yml` changed.  Only affected targets are rendered.

    The work follows the change, not the repository: the head closures (or, for kustomize targets, a
    cheaper scan of what they can read) pick the candidate targets a change can reach, and only the
    files those candidates need are exported at base (`_sparse_sides`).  Both revisions are used in
    full (`_full_sides`) when `.prbot.yml` changed, when git may convert file contents (attributes,
    ``core.autocrlf``), or when target discovery passes a symbolic link; both ways give the same plan.
    The pool made here (when `pool` is None) renders with each environment's Kubernetes version.
    """
    return _plan(repo, config, base, head, envs=envs, pool=pool, dry_runner=dry_runner, sparse=True)


def _plan(repo: Path, config: Config, base: str, head: str | None, *, envs: Sequence[str] | None,
          pool: RenderPool | None, dry_runner: DryRunner | None, sparse: bool) -> Plan:
    """`make_plan`; `sparse` False: always the full way (the reference the sparse way must equal)."""
    repo = Path(repo)
    for env in envs or ():
        config.env(env)                       # unknown environment -> PrbotError
    base_sha = gitrepo.resolve(repo, base)
    head_rev = gitrepo.resolve(repo, head) if head else None
    head_sha = head_rev or gitrepo.resolve(repo, "HEAD")
    pool = pool or RenderPool(kube_versions={e.name: e.kubernetes_version for e in config.environments
                                             if e.kubernetes_version})
    deadline = time.monotonic() + pool.limits.plan_budget      # the plan's time budget (PRBOT_PLAN_BUDGET)
    with contextlib.ExitStack() as stack:
        dirty, sides = _sides(stack, repo, config, base_sha, head_rev, envs, sparse)
        return _finish(config, base_sha, head_sha + dirty, *sides, pool=pool, dry_runner=dry_runner,
                       deadline=deadline)


def _sides(stack: contextlib.ExitStack, repo: Path, config: Config, base_sha: str, head_rev: str | None,
           envs: Sequence[str] | None, sparse: bool) -> tuple[str, tuple[_Side, _Side, list[Key]]]:
    """("-dirty" or "", (base side, head side, affected keys)); the trees stay until `stack` closes."""
    git_jobs = stack.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix="prbot-git"))
    # git works on its own while this thread looks at the head tree
    if head_rev is None:
        worktree_job = git_jobs.submit(gitrepo.worktree_changes, repo, base_sha)
    else:
        changed_job = git_jobs.submit(gitrepo.changed_paths, repo, base_sha, head_rev)
        if sparse:
            got = _sparse_head_sides(stack, repo, config, base_sha, head_rev, envs, changed_job)
            if got is not None:
                return "", got
    btree = stack.enter_context(gitrepo.partial_tree(repo, base_sha))
    hroot = stack.enter_context(gitrepo.materialize(repo, head_rev))
    _refuse_unmatched(stack, repo, config, hroot, base_sha)
    closures = ClosureCache()
    probe = _Probe(hroot)
    try:
        h_all: dict[Key, Target] | None = _discover(hroot, config, envs)
    except PrbotError:
        h_all = None                          # raised again by _full_sides, after any error at base
    if sparse and h_all is not None:
        for target in h_all.values():
            if target.renderer == "kustomize":
                probe.prefetch(target.path)
    dirty = ""
    uncertain: set[str] | None = set()
    if head_rev is None:
        worktree = worktree_job.result()
        changed, uncertain = worktree.changed, worktree.uncertain
        dirty = "-dirty" if worktree.dirty else ""
    else:
        changed = changed_job.result()
    if (sparse and h_all is not None and CONFIG_FILE not in changed and uncertain is not None
            and not any(posixpath.basename(p) == ".gitattributes" for p in changed)
            and not probe.discovery_meets_links(spec.path for spec in config.apps)):
        sides = _sparse_sides(btree, config, envs, hroot, h_all, changed, changed | uncertain, closures, probe)
        if sides is not None:
            return dirty, sides
    log.debug("full plan: both revisions exported in full")
    broot = stack.enter_context(gitrepo.materialize(repo, base_sha))
    b, h = _full_sides(broot, hroot, config, envs, closures)
    affected = [k for k in _order(b, h)
                if CONFIG_FILE in changed or b.keys.get(k) != h.keys.get(k) or k in h.closure_errors]
    return dirty, (b, h, affected)


def _refuse_unmatched(stack: contextlib.ExitStack, repo: Path, config: Config, hroot: Path, base_sha: str) -> None:
    """A path pattern that matches no directory at head nor at base is a typo in `.prbot.yml`
    (SPEC §2): refuse to plan rather than report an empty, green plan.  (Matching at base only is
    a PR removing the app's last directory: its targets are planned as removed.)"""
    missing = unmatched_paths(config, hroot)
    if not missing:
        return
    broot = stack.enter_context(gitrepo.materialize(repo, base_sha))
    at_base = {index for index, _ in unmatched_paths(config, broot)}
    for index, message in missing:
        if index in at_base:
            raise PrbotError(f"{CONFIG_FILE}:{config.apps[index].line or 1}: {message}")


def _sparse_head_sides(stack: contextlib.ExitStack, repo: Path, config: Config, base_sha: str, head_rev: str,
                       envs: Sequence[str] | None, changed_job: Future[set[str]],
                       ) -> tuple[_Side, _Side, list[Key]] | None:
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
    probe = _Probe(htree.root, view)
    if probe.discovery_meets_links(spec.path for spec in config.apps):
        return None
    try:
        h_all = _discover(htree.root, config, envs, tree=view)
        if unmatched_indexes(config, view):
            return None                       # the way below refuses a pattern that matches nothing
    except (gitrepo.TreeViewUnsure, PrbotError):
        return None                           # the way below reports an error as before
    probe.prefetch_all(t.path for t in h_all.values() if t.renderer == "kustomize")
    changed = changed_job.result()
    if CONFIG_FILE in changed or any(posixpath.basename(p) == ".gitattributes" for p in changed):
        return None
    btree = stack.enter_context(gitrepo.partial_tree(repo, base_sha))
    return _sparse_sides(btree, config, envs, htree.root, h_all, changed, changed, ClosureCache(), probe,
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


def _order(b: _Side, h: _Side) -> list[Key]:
    return list(h.targets) + [k for k in b.targets if k not in h.targets]


def _full_sides(broot: Path, hroot: Path, config: Config, envs: Sequence[str] | None,
                closures: ClosureCache) -> tuple[_Side, _Side]:
    """Every target of both revisions, each tree complete."""
    b_targets = _discover(broot, config, envs)
    h_targets = _discover(hroot, config, envs)
    return _side(broot, b_targets, closures), _side(hroot, h_targets, closures)


def _finish(config: Config, base_sha: str, head_sha: str, b: _Side, h: _Side, affected: list[Key], *,
            pool: RenderPool, dry_runner: DryRunner | None, deadline: float | None = None) -> Plan:
    for side in (b, h):                 # remote inputs: rendered when `render.remote` allows them (SPEC §4)
        for k, refs in side.remote.items():
            blocked = [r for r in refs if not remote.allowed(r, config.render_remote)]
            if blocked:
                side.skipped[k] = (f"not rendered: it reads {blocked[0]}, a remote input that render.remote "
                                   "in .prbot.yml does not allow")
    requests = [(side.root, side.targets[k], side.keys[k]) for k in affected for side in (b, h)
                if k in side.targets and k not in side.closure_errors and k not in side.skipped]
    with remote.Remotes(config.render_remote, limits=pool.limits) as remotes:
        rendered = pool.render_many(requests, deadline=deadline,
                                    remotes=remotes if config.render_remote else None)
    targets = [_target_plan(config, k, b, h, rendered, dry_runner) for k in affected]
    env_order = config.env_names
    targets.sort(key=lambda t: (env_order.index(t.env) if t.env in env_order else len(env_order), t.app))
    kinds = {target.renderer for _, target, _ in requests}
    if any(k in side.helm_charts for k in affected for side in (b, h)):
        kinds.add("helmCharts")
    return Plan(base=base_sha, head=head_sha, targets=targets, tools=used_versions(kinds))


def _sparse_sides(btree: gitrepo.PartialTree, config: Config, envs: Sequence[str] | None, hroot: Path,
                  h_all: dict[Key, Target], changed: set[str], sensitive: set[str], closures: ClosureCache,
                  probe: _Probe, htree: gitrepo.PartialTree | None = None) -> tuple[_Side, _Side, list[Key]] | None:
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
    involved = _Involved(sensitive)
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
            b_all = _discover(btree.root, config, envs)
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
    b = _side(btree.root, {k: b_all[k] for k in candidates if k in b_all}, bcache)
    h = _side(hroot, {k: h_all[k] for k in candidates if k in h_all}, closures)
    affected = [k for k in _order(b, h) if b.keys.get(k) != h.keys.get(k) or k in h.closure_errors]
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


def _vetted(target: Target, probe: _Probe, involved: _Involved) -> bool:
    """The cheap scan proves a kustomize target's inputs avoid every involved path."""
    return (target.renderer == "kustomize" and probe.kind(target.path) == "dir"
            and probe.kustomization_clean(target.path, involved))


def _head_may_differ(target: Target, hroot: Path, closures: ClosureCache, probe: _Probe,
                     involved: _Involved) -> bool:
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


class _Involved:
    """Paths where the base and head trees may differ; `touches(p)`: p is one of them, lies below
    one, or holds one."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = {_norm(p) for p in paths}
        self.above: set[str] = set()
        for p in self.paths:
            while p:
                p = p.rpartition("/")[0]
                if p in self.above:
                    break
                self.above.add(p)

    def touches(self, path: str) -> bool:
        path = _norm(path)
        if path in self.paths or path in self.above:
            return True
        while path:
            path = path.rpartition("/")[0]
            if path in self.paths:
                return True
        return False


def _norm(path: str) -> str:
    p = posixpath.normpath(path.strip("/")) if path.strip("/") else ""
    return "" if p == "." else p


# Top-level kustomization fields that never name a file; every other field is scanned for
# references (so a field prbot.impact learns to follow later is covered without a change here).
_INERT_FIELDS = frozenset({"apiVersion", "kind", "metadata", "namespace", "namePrefix", "nameSuffix",
                           "commonLabels", "labels", "commonAnnotations", "images", "replicas",
                           "buildMetadata", "sortOptions", "vars"})
# Fields inside the scanned ones whose values are never paths: generator literals and options,
# patch selectors and inline patches.
_INERT_SUBFIELDS = frozenset({"literals", "options", "target", "patch"})
_PLACEHOLDER = re.compile(r"\{(app|env)\}")           # as in apps[].path patterns (prbot.targets)
# Fields whose inputs a scan of scalars cannot see (files named inside plugin configurations, charts):
# a kustomization holding one is left to its closure.
_SCAN_REFUSED = frozenset({"helmCharts", "helmGlobals", "helmChartInflationGenerator", "generators",
                           "transformers", "validators"})

if _CSafeLoader is not None:
    class _Composer(_CSafeLoader):  # type: ignore[misc,valid-type]
        """libyaml composing nodes without resolving implicit tags (the scan wants strings only)."""

        def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
            return ""


class _Probe:
    """Cheap questions about the head tree, memoised: the kind of a path ("file", "dir", "missing",
    "link" when a symbolic link is on the way, "other"), and what a kustomization can read without
    building its closure (`scan_kustomization`).  With a `view` (`gitrepo.TreeView`) the answers come
    from git, as a full export at `root` would give them; otherwise from the directory `root`."""

    def __init__(self, root: Path, view: gitrepo.TreeView | None = None) -> None:
        self.root = os.fspath(root)
        self.view = view
        self._preloaded: dict[str, bytes] = {}
        self.can_scan = _yaml is not None and _CSafeLoader is not None
        self._kinds: dict[str, str] = {"": "dir"}
        self._dirs: dict[str, dict[str, str] | None] = {}
        self._readable: dict[str, bool] = {}
        self._refs: dict[str, bool] = {}
        self._scans: dict[str, tuple[frozenset[str], frozenset[str]] | None] = {}
        self._clean: dict[str, bool] = {}
        self._trees: dict[str, bool] = {}
        self._listings: dict[str, bool] = {}
        self._holds: dict[str, bool] = {}

    def kind(self, rel: str) -> str:
        got = self._kinds.get(rel)
        if got is None:
            parent, _, name = rel.rpartition("/")
            above = self.kind(parent)
            if above == "dir":
                listing = self._listing(parent)
                got = listing.get(name, "missing") if listing is not None else "other"
            else:
                got = "missing" if above in ("file", "missing") else above
            self._kinds[rel] = got
        return got

    def _listing(self, rel: str) -> dict[str, str] | None:
        """name -> kind of every entry of a directory (from the directory entries, no stat)."""
        if rel in self._dirs:
            return self._dirs[rel]
        if self.view is not None:
            self._dirs[rel] = self.view.listing(rel)
            return self._dirs[rel]
        got: dict[str, str] | None = {}
        try:
            with os.scandir(os.path.join(self.root, rel)) as it:
                for entry in it:
                    got[entry.name] = _entry_kind(entry)  # type: ignore[index]
        except OSError:
            got = None
        self._dirs[rel] = got
        return got

    def readable(self, rel: str) -> bool:
        """A regular file this process can read (the digest reads it)."""
        got = self._readable.get(rel)
        if got is None:
            got = self._readable[rel] = self.kind(rel) == "file" and (
                self.view is not None or os.access(os.path.join(self.root, rel), os.R_OK))
        return got

    def scan_kustomization(self, kdir: str) -> tuple[frozenset[str], frozenset[str]] | None:
        """(paths its fields can name, the directories among them) for the kustomization in
        `kdir`; None when a cheap scan cannot vouch for it (no kustomization, invalid YAML, a
        symbolic link, a remote or outside reference, helm charts …).  A superset: every scalar of
        every field that may hold a path counts, as itself and after a ``key=``."""
        if kdir in self._scans:
            return self._scans[kdir]
        result = self._scan(kdir)
        self._scans[kdir] = result
        return result

    def _scan(self, kdir: str) -> tuple[frozenset[str], frozenset[str]] | None:
        listing = self._listing(kdir) if self.can_scan and self.kind(kdir) == "dir" else None
        if listing is None:
            return None
        names = []
        for name in KUSTOMIZATION_FILES:
            kind = listing.get(name)
            if kind == "file":
                names.append(name)
            elif kind is not None:
                return None
        if not names:
            return None
        try:
            text = self._read(f"{kdir}/{names[0]}" if kdir else names[0]).decode("utf-8")
            loader = _Composer(text)
            try:
                root = loader.get_single_node()
            finally:
                loader.dispose()
        except Exception:  # noqa: BLE001 - any failure (invalid YAML, several documents): the closure decides
            return None
        if not isinstance(root, _yaml.MappingNode):
            return None
        paths: set[str] = {kdir}
        dirs: set[str] = set()
        for key, value in root.value:
            if not isinstance(key, _yaml.ScalarNode) or key.value == "<<":      # a merge key
                return None
            if key.value in _SCAN_REFUSED:
                return None
            if key.value in _INERT_FIELDS:
                continue
            for scalar in _scalars(value):
                refs = (scalar.strip(), scalar.split("=", 1)[1].strip()) if "=" in scalar else (scalar.strip(),)
                for ref in refs:
                    if not ref:
                        continue
                    if self._unsafe_ref(ref):
                        return None
                    if ref[0] == "." or "/." in ref or "//" in ref or ref[-1] == "/":
                        rel = posixpath.normpath(f"{kdir}/{ref}" if kdir else ref)
                        if rel == ".":
                            rel = ""
                        elif rel == ".." or rel.startswith("../"):
                            return None
                    else:
                        rel = f"{kdir}/{ref}" if kdir else ref
                    kind = self.kind(rel)
                    if kind == "dir":
                        dirs.add(rel)
                    elif kind != "missing" and not self.readable(rel):
                        return None
                    paths.add(rel)
        return frozenset(paths), frozenset(dirs)

    def _read(self, rel: str) -> bytes:
        if self.view is not None:
            got = self._preloaded.pop(rel, None)
            return got if got is not None else self.view.read(rel)
        with open(os.path.join(self.root, rel), "rb") as fh:
            return fh.read()

    def _unsafe_ref(self, ref: str) -> bool:
        """A reference kustomize would fetch remotely, an absolute path, or no path at all."""
        got = self._refs.get(ref)
        if got is None:
            got = self._refs[ref] = (is_remote_reference(ref) or posixpath.isabs(ref) or os.path.isabs(ref)
                                     or "\0" in ref)
        return got

    def prefetch(self, kdir: str) -> None:
        """Scan a kustomization and every one it reaches (no changed paths needed yet)."""
        pending = [kdir]
        while pending:
            scan = self.scan_kustomization(pending.pop())
            if scan is not None:
                pending.extend(d for d in scan[1] if d not in self._scans)

    def prefetch_all(self, kdirs: Iterable[str]) -> None:
        """`prefetch` of many kustomizations, level by level; with a view, each level's files are
        read from git at once (one process, not one round trip per file)."""
        pending = [k for k in dict.fromkeys(kdirs) if k not in self._scans]
        while pending:
            if self.view is not None:
                files = []
                for kdir in pending:
                    listing = self._listing(kdir) if self.kind(kdir) == "dir" else None
                    name = next((n for n in KUSTOMIZATION_FILES if listing and listing.get(n) == "file"), None)
                    if name is not None:
                        files.append(f"{kdir}/{name}" if kdir else name)
                self._preloaded.update(self.view.read_many(files))
            found: dict[str, None] = {}
            for kdir in pending:
                scan = self.scan_kustomization(kdir)
                if scan is not None:
                    found.update((d, None) for d in sorted(scan[1]) if d not in self._scans)
            pending = list(found)

    def kustomization_clean(self, kdir: str, involved: _Involved, stack: tuple[str, ...] = ()) -> bool:
        """Whether the kustomization in `kdir`, and every one it can reach, avoid `involved`."""
        got = self._clean.get(kdir)
        if got is not None:
            return got
        if kdir in stack:
            return False                      # a cycle: let the closure report it
        scan = self.scan_kustomization(kdir)
        ok = scan is not None and not any(involved.touches(p) for p in scan[0]) and all(
            self.kustomization_clean(d, involved, (*stack, kdir)) for d in sorted(scan[1]))
        self._clean[kdir] = ok
        return ok

    def discovery_meets_links(self, patterns: Iterable[str]) -> bool:
        """Whether discovering targets with these `apps[].path` patterns may pass a symbolic link
        (a literal segment naming one: discovery follows those, and what lies behind a link is
        not below it as far as changed paths go).  Placeholder segments match directories only."""
        for pattern in patterns:
            segments = [seg for seg in pattern.strip("/").split("/") if seg]
            prefixes = [""]
            for i, segment in enumerate(segments):
                if segment in (".", ".."):
                    return True
                found: list[str] = []
                for rel in prefixes:
                    if _PLACEHOLDER.search(segment):
                        if i == len(segments) - 1:
                            continue              # the targets themselves: never links
                        listing = self._listing(rel) or {}
                        found.extend(_join(rel, name) for name, kind in listing.items() if kind == "dir")
                    else:
                        kind = self.kind(_join(rel, segment))
                        if kind not in ("dir", "missing", "file"):
                            return True
                        if kind == "dir":
                            found.append(_join(rel, segment))
                prefixes = found
        return False

    def tree_suspicious(self, rel: str) -> bool:
        """A directory read whole (a chart) holding a symbolic link, something neither file nor
        directory, something unreadable, or no file at all."""
        got = self._trees.get(rel)
        if got is None:
            if self.view is not None:
                kinds = [kind for _path, kind in self.view.walk(rel)]
                got = any(k in ("link", "other") for k in kinds) or "file" not in kinds
            else:
                got = _tree_suspicious(os.path.join(self.root, rel))
            self._trees[rel] = got
        return got

    def listing_has_links(self, rel: str) -> bool:
        got = self._listings.get(rel)
        if got is None and self.view is not None:
            listing = self.view.listing(rel)
            got = self._listings[rel] = listing is None or "link" in listing.values()
        if got is None:
            try:
                with os.scandir(os.path.join(self.root, rel)) as it:
                    got = any(e.is_symlink() for e in it)
            except OSError:
                got = True
            self._listings[rel] = got
        return got

    def holds_file(self, rel: str) -> bool:
        """Whether a directory holds a file somewhere below it (so it exists in a git tree)."""
        got = self._holds.get(rel)
        if got is None and self.view is not None:
            got = self._holds[rel] = any(kind in ("file", "link") for _path, kind in self.view.walk(rel))
        if got is None:
            got = False
            pending = [os.path.join(self.root, rel)]
            while pending and not got:
                try:
                    with os.scandir(pending.pop()) as it:
                        for entry in it:
                            if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                                got = True
                                break
                            if entry.is_dir(follow_symlinks=False):
                                pending.append(entry.path)
                except OSError:
                    continue
            self._holds[rel] = got
        return got


def _tree_suspicious(top: str) -> bool:
    files = 0
    pending = [top]
    try:
        while pending:
            with os.scandir(pending.pop()) as it:
                for entry in it:
                    if entry.name == ".git":           # skipped by closures as well
                        continue
                    kind = _entry_kind(entry)
                    if kind == "dir":
                        pending.append(entry.path)
                    elif kind == "file":
                        files += 1
                    else:
                        return True
    except OSError:
        return True
    return files == 0


def _entry_kind(entry: os.DirEntry[str]) -> str:
    try:
        if entry.is_symlink():
            return "link"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        return "file" if entry.is_file(follow_symlinks=False) else "other"
    except OSError:
        return "other"


def _scalars(node: Any) -> Iterator[str]:
    """Every scalar value below a composed YAML node, keys included, inert sub-fields left out."""
    seen: set[int] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _yaml.ScalarNode):
            yield str(current.value)
        elif isinstance(current, _yaml.SequenceNode):
            pending.extend(current.value)
        elif isinstance(current, _yaml.MappingNode):
            for key, value in current.value:
                if isinstance(key, _yaml.ScalarNode) and key.value in _INERT_SUBFIELDS:
                    continue
                pending.append(key)
                pending.append(value)


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a else b


def _target_plan(config: Config, key: tuple[str, str], b: _Side, h: _Side,
                 rendered: dict[str, Any], dry_runner: DryRunner | None) -> TargetPlan:
    """One target's part of the plan; whatever goes wrong with it stays in it."""
    target = h.targets.get(key) or b.targets[key]
    try:
        return _compare(config, key, target, b, h, rendered, dry_runner)
    except RecursionError:
        log.warning("planning %s: objects nested too deeply", target.key)
        return TargetPlan(app=target.app, env=target.env, path=target.path, renderer=target.renderer,
                          status="error", error="the rendered objects are nested too deeply to compare")


def _compare(config: Config, key: tuple[str, str], target: Target, b: _Side, h: _Side,
             rendered: dict[str, Any], dry_runner: DryRunner | None) -> TargetPlan:
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
        duplicates = duplicate_identities(after, target.namespace)
        if duplicates:
            tp.status = "error"
            tp.error = "two objects with one identity (the cluster would keep only one): " + "; ".join(duplicates)
            return tp
    tp.changes = diff_objects(before, after, default_namespace=target.namespace, ignore=config.diff_ignore)
    if key not in b.targets:
        tp.status = "added"
    elif key not in h.targets:
        tp.status = "removed"
    elif not tp.changes:
        tp.status = "unchanged"
    if key in h.targets:
        tp.validation = validate_objects(after, config.env(target.env).kubernetes_version)
        if dry_runner is not None:
            tp.dry_run = dry_runner(target, after, before)
    log.info("planned %s: %s", target.key, tp.status)
    return tp

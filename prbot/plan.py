"""The plan for base...head: the data behind the JSON output and the PR comment."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prbot import gitrepo
from prbot.config import CONFIG_FILE, Config
from prbot.diff import ObjectChange, diff_objects
from prbot.impact import ClosureCache
from prbot.render import RenderPool
from prbot.targets import Target, discover_targets
from prbot.validate import ValidationIssue, validate_objects


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

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status,
                "changes": [c.to_json() for c in self.changes],
                "errors": [e.__dict__.copy() for e in self.errors]}


@dataclass
class TargetPlan:
    app: str
    env: str
    path: str
    renderer: str
    status: str                         # changed | unchanged | added | removed | error
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

    @property
    def failed(self) -> bool:
        return any(t.failed for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "head": self.head, "targets": [t.to_json() for t in self.targets]}


# --------------------------------------------------------------------------------------------
# Building the plan
# --------------------------------------------------------------------------------------------

DryRunner = Callable[["Target", list[dict[str, Any]]], DryRun]
log = logging.getLogger("prbot.plan")


def _cache_extra(target: Target) -> str:
    """Everything besides file contents that changes a target's rendering."""
    return json.dumps([target.renderer, target.path, target.namespace, target.chart, list(target.values),
                       f"{target.app}-{target.env}"])


@dataclass
class _Side:
    root: Path
    targets: dict[tuple[str, str], Target]
    keys: dict[tuple[str, str], str] = field(default_factory=dict)
    closure_errors: dict[tuple[str, str], str] = field(default_factory=dict)


def _side(root: Path, config: Config, envs: Sequence[str] | None, cache: ClosureCache) -> _Side:
    targets = {(t.app, t.env): t for t in discover_targets(config, root) if envs is None or t.env in envs}
    side = _Side(root, targets)
    for key, target in targets.items():
        closure = cache.closure(root, target)
        if closure.remote:
            side.closure_errors[key] = (f"remote base {closure.remote[0]} cannot be resolved offline: "
                                        "vendor it into the repository")
        side.keys[key] = cache.digest(root, closure, _cache_extra(target))
    return side


def make_plan(repo: Path, config: Config, base: str, head: str | None = None, *,
              envs: Sequence[str] | None = None, pool: RenderPool | None = None,
              dry_runner: DryRunner | None = None) -> Plan:
    """Plan base...head (head None: the working tree) for every affected target.

    A target is affected when the digest of its input closure differs between base and head, when it
    appears or disappears, or when `.prbot.yml` changed.  Only affected targets are rendered.
    """
    repo = Path(repo)
    for env in envs or ():
        config.env(env)                       # unknown environment -> PrbotError
    base_sha = gitrepo.resolve(repo, base)
    head_sha = gitrepo.resolve(repo, head) if head else gitrepo.resolve(repo, "HEAD")
    if head is None and gitrepo.is_dirty(repo):
        head_sha += "-dirty"
    pool = pool or RenderPool()
    changed_paths = gitrepo.changed_paths(repo, base_sha, head and gitrepo.resolve(repo, head))
    config_changed = CONFIG_FILE in changed_paths
    closures = ClosureCache()
    with gitrepo.materialize(repo, base_sha) as broot, \
            gitrepo.materialize(repo, gitrepo.resolve(repo, head) if head else None) as hroot:
        b = _side(broot, config, envs, closures)
        h = _side(hroot, config, envs, closures)
        order = list(h.targets) + [k for k in b.targets if k not in h.targets]
        affected = [k for k in order
                    if config_changed or b.keys.get(k) != h.keys.get(k) or k in h.closure_errors]
        requests = [(side.root, side.targets[k], side.keys[k]) for k in affected for side in (b, h)
                    if k in side.targets and k not in side.closure_errors]
        rendered = pool.render_many(requests)
        targets = [_target_plan(config, k, b, h, rendered, dry_runner) for k in affected]
    env_order = config.env_names
    targets.sort(key=lambda t: (env_order.index(t.env) if t.env in env_order else len(env_order), t.app))
    return Plan(base=base_sha, head=head_sha, targets=targets)


def _target_plan(config: Config, key: tuple[str, str], b: _Side, h: _Side,
                 rendered: dict[str, Any], dry_runner: DryRunner | None) -> TargetPlan:
    target = h.targets.get(key) or b.targets[key]
    tp = TargetPlan(app=target.app, env=target.env, path=target.path, renderer=target.renderer,
                    status="changed")
    if key in h.closure_errors:
        tp.status, tp.error = "error", h.closure_errors[key]
        return tp
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    if key in b.targets:
        got = rendered.get(b.keys[key]) if key not in b.closure_errors else None
        if isinstance(got, Exception) or got is None:
            reason = got if got is not None else b.closure_errors[key]
            tp.error = f"the base revision did not render ({reason}); every object is shown as added"
        else:
            before = got
    if key in h.targets:
        got = rendered[h.keys[key]]
        if isinstance(got, Exception):
            tp.status, tp.error = "error", str(got)
            return tp
        after = got
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
            tp.dry_run = dry_runner(target, after)
    log.info("planned %s: %s", target.key, tp.status)
    return tp

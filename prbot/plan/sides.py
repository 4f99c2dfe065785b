"""One revision's side of a plan: its targets and the digest of each one's input closure.

A target is affected when its digest differs between the base side and the head side; both ways of
building the sides (every target of full exports, `full_sides`, or the candidates of partial ones,
`prbot.plan.sparse`) end here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prbot import gitrepo
from prbot.config import Config
from prbot.model import Target
from prbot.plan.model import Key
from prbot.render import cache_extra
from prbot.renderers.closure import ClosureCache
from prbot.targets import discover_targets, find_targets
from prbot.timing import timed


@dataclass
class PlanSide:
    """The targets of one revision (base or head) in the tree at `root`, with what the plan needs
    of each: the digest of its input closure (`keys`, the render cache key), whether it inflates
    helm charts, the remote inputs it reads and, once the plan decided, why it is not rendered."""

    root: Path
    targets: dict[Key, Target]
    keys: dict[Key, str] = field(default_factory=dict)
    closure_errors: dict[Key, str] = field(default_factory=dict)
    helm_charts: set[Key] = field(default_factory=set)      # kustomize targets inflating helmCharts
    remote: dict[Key, tuple[str, ...]] = field(default_factory=dict)   # remote inputs each target reads
    skipped: dict[Key, str] = field(default_factory=dict)              # not rendered: why (a remote input)


def discover(root: Path, config: Config, envs: Sequence[str] | None,
             tree: gitrepo.TreeView | None = None, *, strict: bool = True) -> dict[Key, Target]:
    """The targets in the tree at `root` (read through `tree` when given), of `envs` (None: all).
    Not `strict` (the base): a discovery problem there (a directory no renderer takes, one matched
    twice) does not fail the PR that fixes it; the head's are `ConfigError`s."""
    with timed("discovery"):
        found = discover_targets(config, root, tree=tree) if strict else find_targets(config, root, tree=tree)[0]
    return {(t.app, t.env): t for t in found if envs is None or t.env in envs}


def plan_side(root: Path, targets: dict[Key, Target], cache: ClosureCache) -> PlanSide:
    """The side of these targets, their closures computed (and memoised) in `cache`."""
    side = PlanSide(root, targets)
    for key, target in targets.items():
        closure = cache.closure(root, target)
        if closure.remote:
            side.remote[key] = closure.remote
        side.keys[key] = cache.digest(root, closure, cache_extra(target))
        if closure.helm_charts:
            side.helm_charts.add(key)
    return side


def order(b: PlanSide, h: PlanSide) -> list[Key]:
    """Every target of either side once: the head's in discovery order, then those gone at head."""
    return list(h.targets) + [k for k in b.targets if k not in h.targets]


def full_sides(broot: Path, hroot: Path, config: Config, envs: Sequence[str] | None,
               closures: ClosureCache) -> tuple[PlanSide, PlanSide]:
    """Every target of both revisions, each tree complete."""
    b_targets = discover(broot, config, envs, strict=False)
    h_targets = discover(hroot, config, envs)
    return plan_side(broot, b_targets, closures), plan_side(hroot, h_targets, closures)


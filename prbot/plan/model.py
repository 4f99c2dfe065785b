"""The plan's data types: what `make_plan` returns (`Plan`, one `TargetPlan` per affected target,
a `DryRun` each when a cluster answered) and the dry runner it calls.  The JSON output, the PR
comment and the cluster dry run read these; nothing here imports the engine that builds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prbot.diff import ObjectChange
    from prbot.model import Target
    from prbot.validate import ValidationIssue

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
    not_expanded: list[str] = field(default_factory=list)   # "HelmRelease apps/podinfo: why" (a blind spot)

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
                "dry_run": self.dry_run.to_json() if self.dry_run else None,
                **({"not_expanded": list(self.not_expanded)} if self.not_expanded else {})}


@dataclass
class Plan:
    base: str
    head: str
    targets: list[TargetPlan] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)   # renderer versions used, e.g. {"helm": "v4.1.4"}
    isolation: str = "jail"        # "off": rendered unisolated (PRBOT_RENDER_ISOLATION=off), said everywhere
    # where the plan's time went: thread-seconds per stage (`prbot.timing.STAGES`), and how many
    # renderer processes it ran (renders the caches answered are not counted)
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    renders: int = field(default=0, compare=False)

    @property
    def failed(self) -> bool:
        return any(t.failed for t in self.targets)

    def to_json(self) -> dict[str, Any]:
        out = {"base": self.base, "head": self.head, "targets": [t.to_json() for t in self.targets],
               "tools": dict(self.tools)}
        if self.isolation != "jail":
            out["isolation"] = self.isolation
        return out


class DryRunner(Protocol):
    """``dry_runner(target, objects at head, objects at base, deadline=…)``: the target's server-side
    dry-run, or None when its environment has no cluster.

    `base` says what the target owns, and it comes from the base revision only (the default branch,
    reviewed): the objects the target rendered there ([] when it rendered nothing or did not render),
    or **None when the target does not exist at base** — a target the PR adds owns nothing until it is
    merged, so none of its objects is sent.  `deadline` (`time.monotonic()`): the plan's time budget;
    objects not dry-run by then are listed as not sent.
    """

    def __call__(self, target: Target, objects: list[dict[str, Any]], base: list[dict[str, Any]] | None, *,
                 deadline: float | None = None) -> DryRun | None: ...


# a target's identity in a plan: (app, env)
Key = tuple[str, str]

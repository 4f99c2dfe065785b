"""The plan for base...head: the data behind the JSON output and the PR comment."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prbot.diff import ObjectChange
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

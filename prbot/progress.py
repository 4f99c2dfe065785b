"""One read of a deployment's progress (`Progress`): what `prbot.cluster` reads from a cluster and
what the flows (through the `prbot.ports.Deployer` port) report, store between polls and act on.

It lives below both, so the ports never import an adapter package to name it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["REASON_LIMIT", "STATES", "Progress", "State"]

State = Literal["waiting", "syncing", "progressing", "healthy", "failed"]
STATES: tuple[str, ...] = ("waiting", "syncing", "progressing", "healthy", "failed")
REASON_LIMIT = 300


@dataclass(frozen=True)
class Progress:
    """One read of a deployment's progress.

    state: `waiting` (not started: another operation runs, or the controller has not picked the
    request up), `syncing` (the controller applies the revision), `progressing` (applied; workloads
    rolling out), `healthy`, `failed`.  `reason`: one line for people.  `ready`/`total`: workloads
    ready out of those counted (0/0 when they cannot be counted).  `revision`: what the cluster
    reports as applied, when it says.  `left_out`: (object, reason) pairs a confined apply (a
    preview) did not send — cluster-scoped or not served by the cluster.
    """

    state: State
    reason: str
    ready: int = 0
    total: int = 0
    revision: str | None = None
    left_out: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown state {self.state!r}")
        text = " ".join(str(self.reason).split())
        object.__setattr__(self, "reason", text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT - 1] + "…")

    @property
    def done(self) -> bool:
        """Nothing more will change by polling: healthy or failed."""
        return self.state in ("healthy", "failed")

    @property
    def ok(self) -> bool:
        return self.state == "healthy"

    def workloads(self) -> str:
        """"2 of 3 workloads ready", or "" when none were counted."""
        if not self.total:
            return ""
        noun = "workload" if self.total == 1 else "workloads"
        return f"{self.ready} of {self.total} {noun} ready"

    def __str__(self) -> str:
        counted = self.workloads()
        return f"{self.state}: {self.reason}" + (f" ({counted})" if counted and counted not in self.reason else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "reason": self.reason, "ready": self.ready,
                               "total": self.total, "revision": self.revision}
        if self.left_out:
            out["left_out"] = [list(pair) for pair in self.left_out]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Progress:
        return cls(state=data["state"], reason=str(data.get("reason", "")), ready=int(data.get("ready") or 0),
                   total=int(data.get("total") or 0), revision=data.get("revision"),
                   left_out=tuple((str(p[0]), str(p[1])) for p in data.get("left_out") or []
                                  if isinstance(p, (list, tuple)) and len(p) == 2))

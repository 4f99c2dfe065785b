"""Offline schema validation of rendered objects (kubernetes-validate)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ValidationIssue:
    kind: str
    name: str
    level: str            # "error" fails the target | "warning" does not | "skipped": no schema known
    path: str             # dotted path in the object, "" for the whole object
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

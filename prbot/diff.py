"""Semantic diff of rendered objects: identity keys, noise, Secret masking, per-object diffs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ObjectChange:
    group: str            # "" for the core group
    kind: str
    namespace: str | None
    name: str
    action: str           # "added" | "removed" | "changed"
    diff: str             # unified diff of the normalised YAML ("--- a\n+++ b\n@@ ...")
    renamed_from: str | None = None   # previous name when a kustomize hash-suffix rename was detected

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data.get("renamed_from") is None:
            data.pop("renamed_from")
        return data

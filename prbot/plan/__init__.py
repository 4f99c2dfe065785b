"""The plan for base...head: the data behind the JSON output and the PR comment.

- `model`: the plan's data types (`Plan`, `TargetPlan`, `DryRun`, `DryRunError`, `DryRunner`);
- `build`: `make_plan`, the orchestration: which targets are affected, their renderings compared;
- `sides`: one revision's targets and the digests of their input closures;
- `sparse`: the sparse way to build the sides (only what a change can reach is exported);
- `probe`: cheap questions about a tree (`TreeProbe`) and where base and head differ (`ChangedPaths`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prbot.plan.model import DryRun, DryRunError, DryRunner, Key, Plan, TargetPlan

if TYPE_CHECKING:
    from prbot.plan.build import make_plan

__all__ = ["DryRun", "DryRunError", "DryRunner", "Key", "Plan", "TargetPlan", "make_plan"]


def __getattr__(name: str) -> Any:
    """`make_plan` is imported on first use: a module wanting only the data types
    (`prbot.plan.model`) does not load the engine (renderers, git, validation) with them."""
    if name == "make_plan":
        from prbot.plan.build import make_plan
        return make_plan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

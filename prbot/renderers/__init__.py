"""Renderers: one module per way of turning a target directory into Kubernetes objects.

Each is a `Renderer` (see `prbot.renderers.base`): `detect` a directory, give the `closure` of a
target (every input its rendering reads), and `render` it from a copy of that closure alone, through
`prbot.sandbox`.  `RENDERERS` lists them in detection order; a new renderer is one module plus one
line here, and `tests/test_renderers.py` fails until its closure is proven complete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prbot.config import AppSpec
from prbot.errors import RenderError
from prbot.renderers.base import Renderer
from prbot.renderers.closure import CLOSURE_RULES
from prbot.renderers.helm import HelmRenderer
from prbot.renderers.kustomize import KustomizeRenderer
from prbot.renderers.plain import PlainRenderer

if TYPE_CHECKING:
    from prbot.model import TreeReader

RENDERERS: dict[str, Renderer] = {r.name: r for r in (KustomizeRenderer(), HelmRenderer(), PlainRenderer())}
"""Every renderer, in detection order (the first whose `detect` says yes renders a directory)."""
CLOSURE_RULES.update({name: r.closure for name, r in RENDERERS.items()})


def get_renderer(name: str) -> Renderer:
    """The renderer called `name`; RenderError for an unknown one."""
    try:
        return RENDERERS[name]
    except KeyError:
        raise RenderError(f"unknown renderer {name!r}") from None


def detect_renderer(tree: TreeReader, rel: str, spec: AppSpec) -> str:
    """Name of the renderer for the target directory `rel` of `tree`."""
    return next(name for name, r in RENDERERS.items() if r.detect(tree, rel, spec))


__all__ = ["RENDERERS", "Renderer", "detect_renderer", "get_renderer"]

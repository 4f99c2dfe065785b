"""Expansions (see `prbot.expand.base`): one module per expander, one line each in `EXPANDERS`."""

from __future__ import annotations

from prbot.expand.application import ApplicationExpander
from prbot.expand.base import (
    MAX_DEPTH,
    ExpandContext,
    Expander,
    Inputs,
    InputsContext,
    Rendered,
    closure_extension,
    expand_objects,
    normalise_repository_url,
)
from prbot.renderers.closure import CLOSURE_EXTENSIONS

_ALL: tuple[Expander, ...] = (
    ApplicationExpander(),
)

EXPANDERS: dict[tuple[str, str], Expander] = {kind: e for e in _ALL for kind in e.kinds}
"""(API group, kind) -> its expander."""

CLOSURE_EXTENSIONS.append(closure_extension(EXPANDERS))

__all__ = ["EXPANDERS", "MAX_DEPTH", "ExpandContext", "Expander", "Inputs", "InputsContext", "Rendered",
           "expand_objects", "normalise_repository_url"]

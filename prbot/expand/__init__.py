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
from prbot.expand.flux_kustomization import FluxKustomization, deployed_closure
from prbot.expand.helmrelease import HelmReleaseExpander
from prbot.renderers.closure import CLOSURE_EXTENSIONS

_ALL: tuple[Expander, ...] = (
    HelmReleaseExpander(),
    FluxKustomization(),
    ApplicationExpander(),
)

EXPANDERS: dict[tuple[str, str], Expander] = {kind: e for e in _ALL for kind in e.kinds}
"""(API group, kind) -> its expander."""

def markers() -> tuple[bytes, ...]:
    """Bytes a file holding an object with an expander holds (its API group): a cheap test before parsing."""
    return tuple(sorted({group.encode() for group, _ in EXPANDERS}))

CLOSURE_EXTENSIONS.append(closure_extension(EXPANDERS))
CLOSURE_EXTENSIONS.append(deployed_closure)      # after the expanders': a Flux root is read, not expanded

__all__ = ["EXPANDERS", "MAX_DEPTH", "ExpandContext", "Expander", "Inputs", "InputsContext", "Rendered",
           "expand_objects", "markers", "normalise_repository_url"]

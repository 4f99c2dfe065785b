"""Impact: which targets a change affects — the input closure of a target and its digest.

The closure rules live with their renderers (`prbot.renderers`), the shared machinery in
`prbot.renderers.closure`, the YAML loader in `prbot.yamlio`; this module keeps the names the rest
of prbot (and its users) import from here.
"""

from __future__ import annotations

from prbot.renderers.closure import (
    DIGEST_VERSION,
    EMPTY,
    Closure,
    ClosureCache,
    closure_digest,
    input_closure,
    is_remote_reference,
)
from prbot.yamlio import YAML_ERRORS, YAML_LOADER, load_yaml, load_yaml_all

__all__ = ["DIGEST_VERSION", "EMPTY", "YAML_ERRORS", "YAML_LOADER", "Closure", "ClosureCache",
           "closure_digest", "input_closure", "is_remote_reference", "load_yaml", "load_yaml_all"]

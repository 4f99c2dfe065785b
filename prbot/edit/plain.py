"""The plain editor: moves an image in the manifests of a plain target's directory.

Every place `prbot.edit.objects` finds (containers, HelmRelease values, Application images) in
every document of the target's own ``.yaml`` / ``.yml`` / ``.json`` files.
"""

from __future__ import annotations

from prbot.edit.base import EditContext, Outcome
from prbot.edit.objects import edit_objects
from prbot.edit.transaction import TargetEdits
from prbot.images import ImageRef
from prbot.model import PLAIN_SUFFIXES, Target


def edit_plain(ctx: EditContext, tx: TargetEdits, target: Target, want: ImageRef) -> Outcome:
    directory = ctx.root / target.path
    out = Outcome()
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix in PLAIN_SUFFIXES)
    for name in names:
        got = edit_objects(ctx, tx, target, f"{target.path}/{name}", want)
        out.used |= got.used
        out.changed |= got.changed
    return out

"""Every renderer's image editor, keyed like `prbot.renderers.RENDERERS`.

A new renderer that prbot should move images in is one module (an `Editor`: see
`prbot.edit.base`) plus one line in `EDITORS`.
"""

from __future__ import annotations

from prbot.edit.base import Editor
from prbot.edit.helm import edit_helm
from prbot.edit.kustomize import edit_kustomize
from prbot.edit.plain import edit_plain
from prbot.errors import PrbotError
from prbot.model import Target

EDITORS: dict[str, Editor] = {
    "kustomize": edit_kustomize,
    "helm": edit_helm,
    "plain": edit_plain,
}
"""renderer name → the editor that moves images in that renderer's targets."""


def editor_for(target: Target) -> Editor:
    """The editor of the target's renderer; PrbotError when that renderer has none."""
    try:
        return EDITORS[target.renderer]
    except KeyError:
        raise PrbotError(f"prbot cannot move images in {target.renderer} targets "
                         f"(no image editor for the {target.renderer!r} renderer)") from None

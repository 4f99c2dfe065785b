"""The helm editor: moves an image in a Helm target's own values files.

``repository`` + ``tag`` maps at any depth (``registry`` + ``repository`` split maps too, a
``digest`` field when the chart has one), ``image: repo:tag`` strings, and ``tag``-only overrides
whose repository comes from the chart's defaults or an earlier values file.  When the image is set
only where other targets read it too (the shared chart's values.yaml, a common values file), the
override goes into the target's own values file, as a human would write it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import PurePosixPath

from prbot.edit.base import EditContext, Outcome, version_text
from prbot.edit.transaction import TargetEdits
from prbot.edit.values import (
    Defaults,
    ValuesImage,
    defaults_at,
    insert_path,
    place_edits,
    values_file_images,
    version_fields,
)
from prbot.errors import YamlEditError
from prbot.images import ImageRef, parse_image, same_repository
from prbot.model import Target
from prbot.yamledit import YamlFile, scalar_value


def edit_helm(ctx: EditContext, tx: TargetEdits, target: Target, want: ImageRef) -> Outcome:
    chart = target.chart or target.path
    chart_values = f"{chart}/values.yaml"
    own_chart = PurePosixPath(chart).is_relative_to(PurePosixPath(target.path))
    files = [PurePosixPath(os.path.normpath(v)).as_posix() for v in target.values
             if v not in target.optional_values or (ctx.root / v).is_file()]   # an optional one it lacks: not read
    if not files and own_chart and (ctx.root / chart_values).is_file():
        files = [chart_values]
    chart_defaults: list[YamlFile] = []
    if chart_values not in files and (ctx.root / chart_values).is_file():
        with contextlib.suppress(YamlEditError):
            chart_defaults = [YamlFile(ctx.files.read(chart_values), chart_values)]

    def defaults_of(rel: str | None) -> list[YamlFile]:
        """What a values file overrides: the other values files (last first), then the chart's."""
        return [tx.parse(other) for other in reversed(files) if other != rel] + chart_defaults

    def places_of(rel: str) -> list[ValuesImage]:
        return [p for p in values_file_images(tx.parse(rel), defaults_of(rel))
                if same_repository(p.repository, want.repository)]

    out = Outcome()
    shared: list[str] = []            # values files that set the image but other targets read too
    for i, rel in enumerate(files):
        defaults = defaults_of(rel)
        # a place a later values file sets again does not decide: Helm takes the last one
        later = {p.path for other in files[i + 1:] for p in places_of(other)}
        places = [p for p in places_of(rel) if p.path not in later]
        if not places:
            continue
        if ctx.value_readers(rel, target):
            shared.append(rel)
            continue
        out.used = True
        for n in range(len(places)):
            f = tx.parse(rel)
            place = [p for p in values_file_images(f, defaults)
                     if same_repository(p.repository, want.repository) and p.path not in later][n]
            edits, old, new = place_edits(f, place, want, defaults)
            if edits:
                tx.apply(rel, edits)
                tx.record(rel, target, old, new)
                out.changed = True
    if out.used:
        return out
    # The image is set only in files other targets read too (a shared values file, the chart's
    # defaults): set it in the target's own values file, the way a human overrides a default.
    default: ValuesImage | None = None
    deciding: str | None = None                         # the shared values file the image comes from
    for rel in reversed(shared):                        # the last values file wins in Helm
        default = _default_place(tx.parse(rel), want, chart_defaults)
        if default is not None:
            deciding = rel
            break
    if default is None and chart_defaults:
        default = _default_place(chart_defaults[0], want, [])
    if default is None:
        return out
    rendered = ctx.rendered(target).get(want.repository, [])
    stale = [r for r in rendered if (r.tag, r.digest) != (want.tag, want.digest)]
    if not stale:
        return Outcome(used=bool(rendered))
    own = [rel for rel in files if not ctx.value_readers(rel, target)]
    if not own:
        for rel in shared:
            found = _default_place(tx.parse(rel), want, chart_defaults)
            ctx.check_own(rel, target, found.node if found else None, readers=ctx.value_readers(rel, target))
        raise YamlEditError(f"{target.key} has no values file of its own to set {want.repository} in "
                            f"({chart_values} holds the chart's shared defaults)")
    rel = own[-1]
    if deciding is not None and files.index(deciding) > files.index(rel):
        # every own values file comes before the shared one that sets the image: no override of
        # the target's own would win, so the shared file is the only place, and it is not ours
        ctx.check_own(deciding, target, default.node, readers=ctx.value_readers(deciding, target))
    if default.kind == "string":
        value = str(parse_image(scalar_value(default.node) or "").with_version(want.tag, want.digest))
        tx.apply(rel, [insert_path(tx.parse(rel), default.path, value)])
    else:
        if want.tag is None:
            raise YamlEditError(f"{target.key}: a digest-only reference needs an image tag in {rel}")
        for key, value in version_fields(want, [default.node, *defaults_at(chart_defaults, default.path)]).items():
            tx.apply(rel, [insert_path(tx.parse(rel), (*default.path, key), value)])
    tx.record(rel, target, str(stale[0]), stale[0].name + version_text(want.tag, want.digest))
    return Outcome(used=True, changed=True)


def _default_place(f: YamlFile, want: ImageRef, defaults: Defaults) -> ValuesImage | None:
    for p in values_file_images(f, defaults):
        if same_repository(p.repository, want.repository):
            return p
    return None

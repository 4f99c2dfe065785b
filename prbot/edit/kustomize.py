"""The kustomize editor: moves an image in a kustomize target's own kustomization.

The entry of ``images:`` whose effective repository (``newName`` when set, else ``name``) is the
image's; when there is none but the target renders the image (from a base or component), an entry
is appended the way ``kustomize edit set image`` writes it.  When GitOps objects of the overlay set
the image (a Flux HelmRelease's values, an Argo CD Application's images), the target's own file
that sets it is edited, or its own patch of a shared HelmRelease.  Bases and components are never
edited.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import PurePosixPath

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from prbot.edit.base import EditContext, Outcome, version_text
from prbot.edit.objects import edit_objects, object_places, release_name, release_values
from prbot.edit.rendered import gitops_images
from prbot.edit.transaction import TargetEdits
from prbot.edit.values import (
    ValuesImage,
    defaults_at,
    insert_path,
    map_version,
    root_mapping,
    values_images,
    version_fields,
)
from prbot.errors import PrbotError, YamlEditError
from prbot.images import ImageRef, parse_image, same_repository
from prbot.model import KUSTOMIZATION_FILES, Target, kustomization_file
from prbot.yamledit import TextEdit, YamlFile, get_entry, get_value, items, scalar_value


def edit_kustomize(ctx: EditContext, tx: TargetEdits, target: Target, want: ImageRef) -> Outcome:
    kfile = kustomization_file(ctx.root / target.path)
    if kfile is None:
        raise YamlEditError(f"{target.path}: no kustomization file")
    rel = f"{target.path}/{kfile.name}"
    doc = root_mapping(tx.parse(rel))
    images = get_value(doc, "images")
    matches = [i for i, entry in enumerate(items(images))
               if (name := _entry_name(entry)) and same_repository(name, want.repository)]
    if matches:
        out = Outcome(used=True)
        for index in matches:
            out.changed |= _set_kustomize_entry(ctx, tx, rel, target, index, want)
        return out
    refs = ctx.rendered(target).get(want.repository)
    if not refs:
        return _kustomize_objects(ctx, tx, target, want)
    stale = [r for r in refs if (r.tag, r.digest) != (want.tag, want.digest)]
    if not stale:
        return Outcome(used=True)
    patched = _own_manifests(ctx, tx, target, want, stale)
    if patched is not None:
        return patched
    images_entry = get_entry(doc, "images")
    ctx.check_own(rel, target, images_entry[0] if images_entry else doc)
    for name in dict.fromkeys(r.name for r in stale):
        entry: dict[str, str] = {"name": name}
        if want.tag:
            entry["newTag"] = want.tag
        if want.digest:
            entry["digest"] = want.digest
        f = tx.parse(rel)
        doc = root_mapping(f)
        found = get_entry(doc, "images")
        if found is None:
            edit = f.insert_key(doc, "images", [entry])
        elif isinstance(found[1], ScalarNode) and scalar_value(found[1]) is None:
            edit = f.set_empty_value(doc, "images", [entry])
        elif isinstance(found[1], SequenceNode):
            edit = f.append_item(found[1], entry)
        else:
            raise YamlEditError(f"{rel}:{found[0].start_mark.line + 1}: images is not a list")
        tx.apply(rel, [edit])
        old = next(r for r in stale if r.name == name)
        tx.record(rel, target, str(old), name + version_text(want.tag, want.digest))
    return Outcome(used=True, changed=True)


def _own_manifests(ctx: EditContext, tx: TargetEdits, target: Target, want: ImageRef,
                   stale: list[ImageRef]) -> Outcome | None:
    """When the target's own files set the image at the version it renders (a ``version.yaml``
    patch of the overlay, a resource of its own), edit them, as a human would, instead of adding an
    ``images:`` override that leaves them showing the old version; None when they do not account
    for every container the image renders in (it comes from a base: the override is the way)."""
    versions = {(r.tag, r.digest) for r in stale}
    found: list[str] = []
    count = 0
    for rel in sorted(ctx.closures.closure(ctx.root, target).files):
        if not rel.endswith((".yaml", ".yml")) or PurePosixPath(rel).name in KUSTOMIZATION_FILES:
            continue
        if ctx.readers(rel, target):
            continue                    # a base's or another target's file: never edited
        try:
            f = tx.parse(rel)
        except YamlEditError:
            continue                    # not every input is a manifest the edit would touch
        matching = 0
        for place in object_places(f):
            if not same_repository(place.repository, want.repository):
                continue
            _, old, _ = place.edits(f, want)
            try:
                ref = parse_image(old)
            except PrbotError:
                return None
            if (ref.tag, ref.digest) not in versions:
                return None             # a version the render does not show: something else decides
            matching += 1
        if matching:
            found.append(rel)
            count += matching
    if not found or count < len(stale):
        return None
    out = Outcome(used=True)
    for rel in found:
        out.changed |= edit_objects(ctx, tx, target, rel, want).changed
    return out


def _kustomize_objects(ctx: EditContext, tx: TargetEdits, target: Target, want: ImageRef) -> Outcome:
    """A kustomize target whose GitOps objects set the image (a Flux HelmRelease's values, an Argo
    CD Application's images): the kustomization's `images:` does not reach those fields, so the
    edit goes into the target's own file that sets it — a patch or a resource of the overlay.  When
    only a shared base sets it, the override goes into the target's own patch of that HelmRelease
    (as flux2-kustomize-helm-example's overlays patch `spec.values`)."""
    if not any(same_repository(ref.name, want.repository)
               for obj in ctx.objects(target) for ref in gitops_images(obj)):
        return Outcome()
    own: list[str] = []
    shared: list[str] = []
    parsed: dict[str, YamlFile] = {}
    for rel in sorted(ctx.closures.closure(ctx.root, target).files):
        if not rel.endswith((".yaml", ".yml")) or PurePosixPath(rel).name in KUSTOMIZATION_FILES:
            continue
        try:
            parsed[rel] = tx.parse(rel)
        except YamlEditError:
            continue                    # not every input is a manifest the edit would touch
        (shared if ctx.readers(rel, target) else own).append(rel)
    defaults: dict[str, list[Node]] = {}           # shared HelmReleases' values, by release name
    for rel in shared:
        for doc in parsed[rel].documents:
            name = release_name(doc)
            values = release_values(doc)
            if name is not None and values is not None:
                defaults.setdefault(name, []).append(values)
    out = Outcome()
    for rel in own:
        if any(same_repository(p.repository, want.repository) for p in object_places(parsed[rel], defaults)):
            got = edit_objects(ctx, tx, target, rel, want, defaults)
            out.used |= got.used
            out.changed |= got.changed
    if out.used:
        return out
    for rel in shared:
        f = parsed[rel]
        for doc in f.documents:
            name = release_name(doc)
            values = release_values(doc)
            place = next((p for p in values_images(values) if same_repository(p.repository, want.repository)),
                         None) if name is not None else None
            if place is None or name is None:
                continue
            patch = next(((prel, pdoc) for prel in own for pdoc in tx.parse(prel).documents
                          if release_name(pdoc) == name), None)
            if patch is None:
                ctx.check_own(rel, target, place.node)
                continue
            return _override_release(tx, target, patch[0], name, place, values, want)
    return out


def _override_release(tx: TargetEdits, target: Target, rel: str, name: str, place: ValuesImage,
                      values: Node | None, want: ImageRef) -> Outcome:
    """Set the image in the target's own patch of HelmRelease `name`, under `spec.values`."""
    if want.tag is None:
        raise YamlEditError(f"{rel}: a digest-only reference needs an image tag to set in the patch")
    f = tx.parse(rel)
    doc = next(d for d in f.documents if release_name(d) == name)
    base_values = [values] if values is not None else []
    if place.kind == "string":
        old = scalar_value(place.node) or ""
        new = str(parse_image(old).with_version(want.tag, want.digest))
        fields = [((*place.path,), new)]
    else:
        old = place.repository + version_text(*map_version(place.node))
        tag_fields = version_fields(want, [place.node, *defaults_at(base_values, place.path)])
        fields = [((*place.path, key), value) for key, value in tag_fields.items()]
        new = place.repository + version_text(want.tag, want.digest)
    for path, value in fields:
        f = tx.parse(rel)
        doc = next(d for d in f.documents if release_name(d) == name)
        tx.apply(rel, [insert_path(f, ("spec", "values", *path), value, root=doc)])
    tx.record(rel, target, old, new)
    return Outcome(used=True, changed=True)


def _entry_name(entry: Node) -> str | None:
    """The repository a kustomize images entry produces: `newName` when set, else `name`."""
    return scalar_value(get_value(entry, "newName")) or scalar_value(get_value(entry, "name"))


def _set_kustomize_entry(ctx: EditContext, tx: TargetEdits, rel: str, target: Target, index: int,
                         want: ImageRef) -> bool:
    """Set newTag / digest of the images[index] entry; True when the file changed."""
    def entry_of(f: YamlFile) -> MappingNode:
        node = items(get_value(root_mapping(f), "images"))[index]
        assert isinstance(node, MappingNode)
        return node

    f = tx.parse(rel)
    entry = entry_of(f)
    name = _entry_name(entry) or ""
    old_tag = scalar_value(get_value(entry, "newTag"))
    old_digest = scalar_value(get_value(entry, "digest"))
    if (old_tag, old_digest) == (want.tag, want.digest):
        return False
    ctx.check_own(rel, target, entry)
    old_version = version_text(old_tag, old_digest)
    if not old_version:                   # the entry only renames: the version comes from a base
        with contextlib.suppress(PrbotError):
            old_version = version_text(*next(((r.tag, r.digest) for r in ctx.rendered(target).get(
                want.repository, [])), (None, None)))
    steps: list[Callable[..., TextEdit | None]] = []
    for key, value, after in (("newTag", want.tag, ("newName", "name")),
                              ("digest", want.digest, ("newTag", "newName", "name"))):
        def step(f: YamlFile, e: MappingNode, key: str = key, value: str | None = value,
                 after: tuple[str, ...] = after) -> TextEdit | None:
            found = get_entry(e, key)
            if value is None:
                return f.delete_key(e, key) if found else None
            if found is None:
                return f.insert_key(e, key, value, after=after)
            if scalar_value(found[1]) == value and isinstance(found[1], ScalarNode):
                return None
            return f.set_scalar(found[1], value)
        steps.append(step)
    for run_step in steps:
        f = tx.parse(rel)
        edit = run_step(f, entry_of(f))
        if edit is not None:
            tx.apply(rel, [edit])
    tx.record(rel, target, name + old_version, name + version_text(want.tag, want.digest))
    return True

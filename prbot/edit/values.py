"""Image places in Helm values (a values file, a HelmRelease's ``spec.values``, an Application's
``valuesObject``) and the edits that move them.

A place is a ``repository`` (+ ``registry``) + ``tag`` / ``digest`` map, a ``tag``-only map whose
repository comes from the values it overrides (`Defaults`), or an ``image: repo:tag`` string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode

from prbot.edit.base import version_text
from prbot.errors import ImageError, YamlEditError
from prbot.images import ImageRef, parse_image
from prbot.yamledit import TextEdit, YamlFile, entries, get_entry, get_value, scalar_value

Defaults = Sequence["YamlFile | Node"]       # values files, or values mappings (a HelmRelease's)


@dataclass
class ValuesImage:
    """One place in Helm values that sets an image."""

    kind: str                          # "map" | "string"
    path: tuple[str, ...]              # keys from the document root to the map / the string's key
    node: Node                         # the map, or the string scalar
    repository: str                    # as written (registry/repository for split maps)


def values_file_images(f: YamlFile, defaults: Defaults) -> list[ValuesImage]:
    """Every place of a values file that sets an image; `defaults` tell tag-only maps' repository."""
    found: list[ValuesImage] = []
    for doc in f.documents:
        if isinstance(doc, MappingNode):
            scan_values(doc, (), defaults, found)
    return found


def _map_repository(node: Node) -> str | None:
    repo = scalar_value(get_value(node, "repository"))
    if not repo:
        return None
    registry = scalar_value(get_value(node, "registry"))
    return f"{registry.rstrip('/')}/{repo}" if registry else repo


def scan_values(node: MappingNode, path: tuple[str, ...], defaults: Defaults,
                found: list[ValuesImage]) -> None:
    """Append to `found` every image place at or below `node` (which sits at `path`)."""
    repo = _map_repository(node)
    if repo is not None and valid_repository(repo):
        found.append(ValuesImage("map", path, node, repo))
    elif get_entry(node, "tag") is not None and path:
        default_repo = next((r for d in defaults_at(defaults, path) if (r := _map_repository(d))), None)
        if default_repo and valid_repository(default_repo):
            found.append(ValuesImage("map", path, node, default_repo))
    for k, v in entries(node):
        key = scalar_value(k)
        if key is None:
            continue
        if isinstance(v, MappingNode):
            scan_values(v, (*path, key), defaults, found)
        elif key == "image" and isinstance(v, ScalarNode) and (text := scalar_value(v)):
            try:
                ref = parse_image(text)
            except ImageError:
                continue
            found.append(ValuesImage("string", (*path, key), v, ref.name))


def valid_repository(repo: str) -> bool:
    """Whether `repo` is an image repository alone (no tag, no digest)."""
    try:
        ref = parse_image(repo)
    except ImageError:
        return False
    return ref.tag is None and ref.digest is None


def defaults_at(defaults: Defaults, path: tuple[str, ...]) -> list[MappingNode]:
    """The mappings at `path` in the default values (files or mappings), in precedence order."""
    found: list[MappingNode] = []
    for f in defaults:
        for doc in (f.documents if isinstance(f, YamlFile) else [f]):
            node: Node | None = doc
            for key in path:
                node = get_value(node, key)
            if isinstance(node, MappingNode):
                found.append(node)
    return found


def values_images(values: Node | None) -> list[ValuesImage]:
    """Every image place in a values mapping (no defaults: tag-only maps are not places)."""
    found: list[ValuesImage] = []
    if isinstance(values, MappingNode):
        scan_values(values, (), (), found)
    return found


def version_fields(want: ImageRef, defaults: Sequence[Node]) -> dict[str, str]:
    """The fields an override writes for `want`: ``tag`` and ``digest`` when the chart has a digest
    field, else ``tag`` alone (with ``@digest`` appended when there is one)."""
    assert want.tag is not None
    if want.digest and any(get_entry(d, "digest") is not None for d in defaults):
        return {"tag": want.tag, "digest": want.digest}
    return {"tag": want.tag + (f"@{want.digest}" if want.digest else "")}


def insert_path(f: YamlFile, path: tuple[str, ...], value: str, root: Node | None = None) -> TextEdit:
    """Insert `value` at the dotted `path` (below `root`, by default the document), creating the
    missing mappings on the way."""
    node: Node = root_mapping(f) if root is None else root
    for depth, key in enumerate(path[:-1]):
        found = get_entry(node, key)
        if found is None:
            nested: Any = value
            for k in reversed(path[depth + 1:]):
                nested = {k: nested}
            return f.insert_key(node, key, nested)
        if not isinstance(found[1], MappingNode):
            raise YamlEditError(f"{f.source}:{found[0].start_mark.line + 1}: {'.'.join(path[:depth + 1])} "
                                "is not a mapping")
        node = found[1]
    if get_entry(node, path[-1]) is not None:
        raise YamlEditError(f"{f.source}: {'.'.join(path)} already exists")
    return f.insert_key(node, path[-1], value)


def place_edits(f: YamlFile, place: ValuesImage, want: ImageRef,
                defaults: Defaults) -> tuple[list[TextEdit], str, str]:
    """The edits moving `place` to `want`'s version, with the old and new references they write."""
    if place.kind == "string":
        old = scalar_value(place.node) or ""
        new = str(parse_image(old).with_version(want.tag, want.digest))
        return ([f.set_scalar(place.node, new)] if new != old else []), old, new
    node = place.node
    tag_entry = get_entry(node, "tag")
    digest_entry = get_entry(node, "digest")
    old_tag = scalar_value(tag_entry[1]) if tag_entry else None
    old_digest = scalar_value(digest_entry[1]) if digest_entry else None
    has_digest_field = digest_entry is not None or any(
        get_entry(d, "digest") is not None for d in defaults_at(defaults, place.path))
    new_tag, new_digest = want.tag, want.digest
    if new_digest and not has_digest_field:
        if new_tag is None:
            raise YamlEditError(f"{f.source}: {'.'.join(place.path) or 'the image'} has no digest field "
                                "and a digest-only reference has no tag to write")
        new_tag, new_digest = f"{new_tag}@{new_digest}", None
    edits: list[TextEdit] = []
    if new_tag is not None and new_tag != old_tag:
        if tag_entry is None:
            edits.append(f.insert_key(node, "tag", new_tag, after=("repository", "registry")))
        else:
            edits.append(f.set_scalar(tag_entry[1], new_tag))
    if has_digest_field and (new_digest or "") != (old_digest or ""):
        if digest_entry is None:
            edits.append(f.insert_key(node, "digest", new_digest or "", after=("tag", "repository")))
        else:
            edits.append(f.set_scalar(digest_entry[1], new_digest or ""))
    shown_tag = old_tag if new_tag is None else new_tag
    old = place.repository + version_text(old_tag, old_digest)
    new = place.repository + version_text(shown_tag, new_digest)
    return edits, old, new


def root_mapping(f: YamlFile) -> MappingNode:
    """The file's one document, a mapping (YamlEditError otherwise)."""
    docs = [d for d in f.documents if isinstance(d, MappingNode)]
    if len(docs) != 1:
        raise YamlEditError(f"{f.source}: expected one YAML mapping")
    return docs[0]


def map_version(node: Node) -> tuple[str | None, str | None]:
    """(tag, digest) of an image map."""
    return scalar_value(get_value(node, "tag")), scalar_value(get_value(node, "digest"))

"""Image places inside manifests, and editing them in one of the target's own files.

A place is a node that sets an image: ``image:`` of every container list (any workload kind), a
Flux HelmRelease's ``spec.values``, an Argo CD Application's (or ApplicationSet template's)
``kustomize.images``, ``helm.parameters`` and ``helm.valuesObject``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from prbot.edit.base import EditContext, Outcome
from prbot.edit.rendered import ARGOCD, CONTAINER_LISTS, FLUX_HELM
from prbot.edit.transaction import TargetEdits
from prbot.edit.values import Defaults, ValuesImage, place_edits, scan_values, valid_repository
from prbot.errors import ImageError, YamlEditError
from prbot.images import ImageRef, parse_image, same_repository
from prbot.model import Target
from prbot.yamledit import TextEdit, YamlFile, get_value, items, scalar_value, walk


@dataclass
class ImagePlace:
    """One place of a manifest that sets an image: `edits` moves it to a version."""

    node: Node                         # where it is written (its line names the place)
    repository: str                    # the repository as written there
    edits: Callable[[YamlFile, ImageRef], tuple[list[TextEdit], str, str]]   # -> (edits, old, new)


def _kind_of(doc: Node, group: str, kinds: tuple[str, ...]) -> bool:
    api = scalar_value(get_value(doc, "apiVersion")) or ""
    return api.startswith(group) and scalar_value(get_value(doc, "kind")) in kinds


def _app_sources(doc: Node) -> list[Node]:
    """The `source` and `sources[]` of an Argo CD Application (or an ApplicationSet's template)."""
    spec = get_value(doc, "spec")
    if _kind_of(doc, ARGOCD, ("ApplicationSet",)):
        spec = get_value(get_value(spec, "template"), "spec")
    elif not _kind_of(doc, ARGOCD, ("Application",)):
        return []
    found = [get_value(spec, "source"), *items(get_value(spec, "sources"))]
    return [n for n in found if isinstance(n, MappingNode)]


def _ref_edits(node: ScalarNode, ref: ImageRef, prefix: str = "") -> Callable[
        [YamlFile, ImageRef], tuple[list[TextEdit], str, str]]:
    """Edits for a scalar holding ``prefix`` + an image reference."""
    def edits(f: YamlFile, want: ImageRef) -> tuple[list[TextEdit], str, str]:
        new = ref.with_version(want.tag, want.digest)
        text = prefix + str(new)
        return ([f.set_scalar(node, text)] if text != scalar_value(node) else []), str(ref), str(new)
    return edits


def _container_places(doc: Node) -> Iterator[ImagePlace]:
    for node in walk(doc):
        if not isinstance(node, MappingNode):
            continue
        for key in CONTAINER_LISTS:
            for container in items(get_value(node, key)):
                image = get_value(container, "image")
                if isinstance(image, ScalarNode) and (text := scalar_value(image)):
                    try:
                        ref = parse_image(text)
                    except ImageError:
                        continue
                    yield ImagePlace(image, ref.name, _ref_edits(image, ref))


def _values_places(values: Node | None, defaults: Defaults = ()) -> Iterator[ImagePlace]:
    """Images in a values mapping (a HelmRelease's `spec.values`, an Application's `valuesObject`);
    `defaults`: the values it overrides, which tell a tag-only map's repository."""
    if not isinstance(values, MappingNode):
        return
    found: list[ValuesImage] = []
    scan_values(values, (), defaults, found)
    for place in found:
        def edits(f: YamlFile, want: ImageRef, place: ValuesImage = place) -> tuple[list[TextEdit], str, str]:
            return place_edits(f, place, want, defaults)
        yield ImagePlace(place.node, place.repository, edits)


def _kustomize_image_places(images: Node | None) -> Iterator[ImagePlace]:
    """An Application's `kustomize.images`: ``[name=]newName[:tag][@digest]`` strings."""
    for item in items(images):
        text = scalar_value(item) if isinstance(item, ScalarNode) else None
        if not text:
            continue
        prefix, _, image = text.rpartition("=")
        try:
            ref = parse_image(image)
        except ImageError:
            continue
        assert isinstance(item, ScalarNode)
        yield ImagePlace(item, ref.name, _ref_edits(item, ref, prefix + ("=" if prefix else "")))


def _parameter_places(parameters: Node | None) -> Iterator[ImagePlace]:
    """An Application's `helm.parameters`: a ``P.repository`` (with ``P.registry``) and ``P.tag``
    pair, or one parameter named ``…image`` holding ``repo:tag``."""
    params: dict[str, Node] = {}
    for item in items(parameters):
        name = scalar_value(get_value(item, "name"))
        value = get_value(item, "value")
        if name and isinstance(value, ScalarNode):
            params[name] = value
    for name, value in params.items():
        text = scalar_value(value) or ""
        if name.endswith(".repository"):
            prefix = name[: -len(".repository")]
            registry = scalar_value(params.get(f"{prefix}.registry"))
            repo = f"{registry.rstrip('/')}/{text}" if registry else text
            if not valid_repository(repo):
                continue
            tag_node = params.get(f"{prefix}.tag")

            def edits(f: YamlFile, want: ImageRef, repo: str = repo, prefix: str = prefix,
                      tag_node: Node | None = tag_node) -> tuple[list[TextEdit], str, str]:
                if want.tag is None:
                    raise YamlEditError(f"{f.source}: {prefix}.tag: a digest-only reference has no tag to write")
                new_tag = want.tag + (f"@{want.digest}" if want.digest else "")
                old_tag = scalar_value(tag_node)
                old = repo + (f":{old_tag}" if old_tag else "")
                if tag_node is None:
                    assert isinstance(parameters, SequenceNode)
                    return [f.append_item(parameters, {"name": f"{prefix}.tag", "value": new_tag})], old, \
                        f"{repo}:{new_tag}"
                if old_tag == new_tag:
                    return [], old, old
                return [f.set_scalar(tag_node, new_tag)], old, f"{repo}:{new_tag}"
            yield ImagePlace(value, repo, edits)
        elif name.rsplit(".", 1)[-1].lower().endswith("image") and text:
            try:
                ref = parse_image(text)
            except ImageError:
                continue
            if ref.tag or ref.digest:
                assert isinstance(value, ScalarNode)
                yield ImagePlace(value, ref.name, _ref_edits(value, ref))


def release_name(doc: Node) -> str | None:
    """The name of a Flux HelmRelease document, else None."""
    if not _kind_of(doc, FLUX_HELM, ("HelmRelease",)):
        return None
    return scalar_value(get_value(get_value(doc, "metadata"), "name")) or ""


def release_values(doc: Node) -> Node | None:
    """A HelmRelease document's `spec.values`, if any."""
    return get_value(get_value(doc, "spec"), "values")


def object_places(f: YamlFile, release_defaults: dict[str, list[Node]] | None = None) -> list[ImagePlace]:
    """Every place of a manifest file that sets an image: containers of any workload kind, a Flux
    HelmRelease's `spec.values`, an Argo CD Application's `kustomize.images`, `helm.parameters`
    and `helm.valuesObject` (one place per node, in document order).  `release_defaults`: values
    of same-named HelmReleases that a patch overrides (by release name)."""
    places: dict[int, ImagePlace] = {}
    for doc in f.documents:
        found = list(_container_places(doc))
        release = release_name(doc)
        if release is not None:
            found += _values_places(release_values(doc), (release_defaults or {}).get(release, ()))
        for source in _app_sources(doc):
            found += _kustomize_image_places(get_value(get_value(source, "kustomize"), "images"))
            helm = get_value(source, "helm")
            found += _parameter_places(get_value(helm, "parameters"))
            found += _values_places(get_value(helm, "valuesObject"))
        for place in found:
            places.setdefault(id(place.node), place)
    return sorted(places.values(), key=lambda p: p.node.start_mark.index)


def edit_objects(ctx: EditContext, tx: TargetEdits, target: Target, rel: str, want: ImageRef,
                 release_defaults: dict[str, list[Node]] | None = None) -> Outcome:
    """Move every place of `rel` that sets the image's repository; the file must be the target's own."""
    out = Outcome()
    f = tx.parse(rel)
    edits: list[TextEdit] = []
    first: Node | None = None
    for place in object_places(f, release_defaults):
        if not same_repository(place.repository, want.repository):
            continue
        out.used = True
        got, old, new = place.edits(f, want)
        if got:
            first = first or place.node
            edits += got
            tx.record(rel, target, old, new)
    if edits:
        ctx.check_own(rel, target, first)
        tx.apply(rel, edits)
        out.changed = True
    return out

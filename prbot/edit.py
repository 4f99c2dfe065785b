"""`bump` and `promote`: move image references to a version where a human would (SPEC §3).

Where an edit goes, per renderer:

* kustomize — the target's own kustomization ``images:`` entry whose effective repository
  (``newName`` when set, else ``name``) is the image's; when the target has none but renders the
  image (it comes from a base or component), an entry is appended the way ``kustomize edit set
  image`` would write it, named as the image appears in the rendered manifests.  Bases and
  components are never edited: whether the image is used is decided by *rendering* the target
  (the only way to see through bases, components, remote-free generators and other overlays'
  transformers), not by guessing from files.
* helm — the target's values files: ``repository`` + ``tag`` maps at any depth (``registry`` +
  ``repository`` split maps too, a ``digest`` field when the chart has one), ``image: repo:tag``
  strings, and ``tag``-only overrides whose repository comes from the chart's defaults or an
  earlier values file.  When the image is set only where other targets read it too (the shared
  chart's values.yaml, a common values file), the override goes into the target's own values
  file, as a human would write it; the shared file is never edited.
* plain — ``image:`` of every ``containers`` / ``initContainers`` / ``ephemeralContainers`` list
  in the target's own files, every document, whatever the workload kind.

No file that another target also reads is ever edited.  Edits are byte-preserving
(:mod:`prbot.yamledit`); every file of one command is written together, or none is.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from prbot.config import Config
from prbot.errors import PrbotError
from prbot.images import ImageError, ImageRef, parse_image, same_repository
from prbot.pushes import rule_for, tag_refusal, version_refusal
from prbot.render import RenderPool, cache_extra, render_target
from prbot.renderers.closure import ClosureCache
from prbot.targets import KUSTOMIZATION_FILES, PLAIN_SUFFIXES, Target, discover_targets, kustomization_file
from prbot.yamledit import (
    TextEdit,
    YamlEditError,
    YamlFile,
    apply_edits,
    entries,
    get_entry,
    get_value,
    items,
    scalar_value,
    walk,
)

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


@dataclass
class FileEdit:
    """One change to one file: an image moved from version `old` to version `new`.

    Versions are written as :attr:`ImageRef.version` gives them: ``1.2.3``, ``1.2.3@sha256:…`` or
    ``@sha256:…``; `image` is the image's name (repository) as the edited place spells it.
    """

    path: str          # repo-relative POSIX path
    target: str        # target key "app/env"
    old: str
    new: str
    image: str = ""


class PolicyError(PrbotError):
    """The image's `images[]` rule refuses the move (``--force`` overrides)."""


@dataclass
class EditResult:
    """What a command did, or would have done.

    Files are written only when there is neither an error nor a refusal (all or nothing): then
    `edits` lists what was written; otherwise nothing was written and `edits` lists what would
    have been.
    """

    edits: list[FileEdit] = field(default_factory=list)
    current: list[str] = field(default_factory=list)   # target keys already at the version
    errors: list[str] = field(default_factory=list)    # one line per failed target, FILE:LINE first
    matched: bool = False                               # some target of the environment uses the image
    refused: list[str] = field(default_factory=list)   # moves the image policy forbids (see --force)

    @property
    def written(self) -> bool:
        """Whether the edits were written (no error, no refusal)."""
        return not self.errors and not self.refused


# -- images a target renders ------------------------------------------------------------------------------

def _pod_images(obj: Any) -> Iterator[tuple[str, str]]:
    """(list name, image) for every container of every pod spec found anywhere below `obj`."""
    if isinstance(obj, dict):
        for key in CONTAINER_LISTS:
            containers = obj.get(key)
            if isinstance(containers, list):
                for c in containers:
                    if isinstance(c, dict) and isinstance(c.get("image"), str):
                        yield key, c["image"]
        for key, value in obj.items():
            if key not in CONTAINER_LISTS:
                yield from _pod_images(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _pod_images(value)


def container_images(objects: Iterable[dict[str, Any]]) -> dict[str, list[ImageRef]]:
    """Every valid container image of the objects (any workload kind), grouped by repository.

    References of the ``containers`` lists come first, then init and ephemeral containers.
    """
    found: dict[str, list[tuple[int, ImageRef]]] = {}
    for n, (kind, image) in enumerate(i for obj in objects for i in _pod_images(obj)):
        try:
            ref = parse_image(image)
        except ImageError:
            continue
        rank = 0 if kind == "containers" else 1
        found.setdefault(ref.repository, []).append((rank * 1_000_000 + n, ref))
    return {repo: [r for _, r in sorted(refs, key=lambda x: x[0])] for repo, refs in found.items()}


def rendered_images(root: Path, target: Target, *, kube_version: str | None = None) -> dict[str, ImageRef]:
    """repository → the image reference the target renders (its main containers' first, if several).

    Raises RenderError when the target does not render.
    """
    objects = render_target(Path(root), target, kube_version=kube_version)
    return {repo: refs[0] for repo, refs in container_images(objects).items()}


# -- pending file texts, written all together ---------------------------------------------------------------

class _Files:
    """File texts read once from disk and edited in memory; `commit` writes them all or none."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.original: dict[str, bytes] = {}
        self.text: dict[str, str] = {}

    def path(self, rel: str) -> Path:
        path = self.root / rel
        real = path.resolve()
        if not real.is_relative_to(self.root.resolve()):
            raise YamlEditError(f"{rel}: resolves outside the repository; not edited")
        return real

    def read(self, rel: str) -> str:
        if rel not in self.text:
            try:
                data = self.path(rel).read_bytes()
            except FileNotFoundError as exc:
                raise YamlEditError(f"{rel}: no such file") from exc
            except OSError as exc:
                raise YamlEditError(f"{rel}: {exc.strerror or exc}") from exc
            try:
                text = data.decode("utf-8")       # no newline translation: CRLF stays CRLF
            except UnicodeDecodeError as exc:
                raise YamlEditError(f"{rel}: not UTF-8 text") from exc
            self.original[rel] = data
            self.text[rel] = text
        return self.text[rel]

    def commit(self) -> None:
        changed = [(rel, self.text[rel].encode("utf-8")) for rel in sorted(self.text)
                   if self.text[rel].encode("utf-8") != self.original[rel]]
        staged: list[tuple[str, Path]] = []
        try:
            for rel, data in changed:
                path = self.path(rel)
                staged.append((_write_temp(path, data), path))
        except OSError as exc:
            for tmp, _ in staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise PrbotError(f"could not write the edited files: {exc}") from exc
        done: list[tuple[str, Path]] = []
        try:
            for (rel, _), (tmp, path) in zip(changed, staged, strict=True):
                os.replace(tmp, path)
                done.append((rel, path))
        except OSError as exc:
            for rel, path in done:                          # put back what was already replaced
                with contextlib.suppress(OSError):
                    os.replace(_write_temp(path, self.original[rel]), path)
            for tmp, _ in staged:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise PrbotError(f"could not write the edited files: {exc}") from exc


def _write_temp(path: Path, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".prbot-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


class _Tx:
    """One target's edits, layered over the command's files; merged only when the target succeeds."""

    def __init__(self, files: _Files) -> None:
        self.files = files
        self.text: dict[str, str] = {}
        self.edits: list[FileEdit] = []

    def read(self, rel: str) -> str:
        return self.text[rel] if rel in self.text else self.files.read(rel)

    def parse(self, rel: str) -> YamlFile:
        return YamlFile(self.read(rel), rel)

    def apply(self, rel: str, edits: list[TextEdit]) -> None:
        if edits:
            self.text[rel] = apply_edits(self.read(rel), edits)

    def record(self, rel: str, target: Target, old_ref: str, new_ref: str) -> None:
        """Note that `rel` moved an image from one full reference to another."""
        name, old = _split_ref(old_ref)
        _, new = _split_ref(new_ref)
        edit = FileEdit(rel, target.key, old, new, name)
        if old_ref != new_ref and edit not in self.edits:
            self.edits.append(edit)

    def merge(self) -> None:
        self.files.text.update(self.text)


# -- the command context -----------------------------------------------------------------------------------

class _Ctx:
    def __init__(self, root: Path, config: Config, pool: RenderPool | None = None) -> None:
        self.root = Path(root)
        self.config = config
        self.pool = pool
        self.targets = discover_targets(config, self.root)
        self.files = _Files(self.root)
        self.closures = ClosureCache()
        self._objects: dict[str, list[dict[str, Any]]] = {}

    def objects(self, target: Target) -> list[dict[str, Any]]:
        """The target's rendered objects (from the files on disk, rendered once; through `pool`'s
        cache when there is one, keyed as the plan keys them)."""
        if target.key not in self._objects:
            closure = self.closures.closure(self.root, target)
            if self.pool is not None:
                key = self.closures.digest(self.root, closure, cache_extra(target))
                self._objects[target.key] = self.pool.render(self.root, target, key)
            else:
                kube = self.config.env(target.env).kubernetes_version
                self._objects[target.key] = render_target(self.root, target, kube_version=kube, closure=closure)
        return self._objects[target.key]

    def rendered(self, target: Target) -> dict[str, list[ImageRef]]:
        """The target's container images by repository."""
        return container_images(self.objects(target))

    def declared(self, target: Target) -> dict[str, list[ImageRef]]:
        """The images the target sets, in containers and in GitOps objects, by repository."""
        return declared_images(self.objects(target))

    def readers(self, rel: str, besides: Target) -> list[str]:
        """Keys of the other targets whose rendering reads the file (their input closures)."""
        rel = PurePosixPath(os.path.normpath(rel)).as_posix()
        return [t.key for t in self.targets
                if t.key != besides.key and rel in self.closures.closure(self.root, t).files]

    def value_readers(self, rel: str, besides: Target) -> list[str]:
        """Keys of the other targets that read the file as a values file or as an input of their
        own: a file inside another target's chart directory counts only when that target names it
        in its values (or it is the chart's values.yaml), so ``values-{env}.yaml`` files kept
        beside a shared chart belong to their own environment."""
        rel = PurePosixPath(os.path.normpath(rel)).as_posix()
        readers: list[str] = []
        for t in self.targets:
            if t.key == besides.key or rel not in self.closures.closure(self.root, t).files:
                continue
            if t.renderer == "helm" and rel not in t.values:
                chart = PurePosixPath(t.chart or t.path)
                if PurePosixPath(rel).is_relative_to(chart) and rel != (chart / "values.yaml").as_posix():
                    continue                    # a file of the chart package, not values for t
            readers.append(t.key)
        return readers

    def check_own(self, rel: str, target: Target, node: Node | None = None, *,
                  readers: list[str] | None = None) -> None:
        """Refuse editing a file that another target reads (`node`: the place, for its line)."""
        others = self.readers(rel, target) if readers is None else readers
        if others:
            where = f"{rel}:{node.start_mark.line + 1}" if node is not None else rel
            raise YamlEditError(f"{where}: also read by {', '.join(others)}; "
                                "prbot does not edit shared files")


def _split_ref(ref: str) -> tuple[str, str]:
    try:
        parsed = parse_image(ref)
    except ImageError:
        return ref, ref
    return parsed.name, parsed.version


def _version(tag: str | None, digest: str | None) -> str:
    return (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


@dataclass
class _Outcome:
    used: bool = False
    changed: bool = False


# -- kustomize -------------------------------------------------------------------------------------------

def _kustomize(ctx: _Ctx, tx: _Tx, target: Target, want: ImageRef) -> _Outcome:
    kfile = kustomization_file(ctx.root / target.path)
    if kfile is None:
        raise YamlEditError(f"{target.path}: no kustomization file")
    rel = f"{target.path}/{kfile.name}"
    doc = _root_mapping(tx.parse(rel))
    images = get_value(doc, "images")
    matches = [i for i, entry in enumerate(items(images))
               if (name := _entry_name(entry)) and same_repository(name, want.repository)]
    if matches:
        out = _Outcome(used=True)
        for index in matches:
            out.changed |= _set_kustomize_entry(ctx, tx, rel, target, index, want)
        return out
    refs = ctx.rendered(target).get(want.repository)
    if not refs:
        return _kustomize_objects(ctx, tx, target, want)
    stale = [r for r in refs if (r.tag, r.digest) != (want.tag, want.digest)]
    if not stale:
        return _Outcome(used=True)
    images_entry = get_entry(doc, "images")
    ctx.check_own(rel, target, images_entry[0] if images_entry else doc)
    for name in dict.fromkeys(r.name for r in stale):
        entry: dict[str, str] = {"name": name}
        if want.tag:
            entry["newTag"] = want.tag
        if want.digest:
            entry["digest"] = want.digest
        f = tx.parse(rel)
        doc = _root_mapping(f)
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
        tx.record(rel, target, str(old), name + _version(want.tag, want.digest))
    return _Outcome(used=True, changed=True)


def _kustomize_objects(ctx: _Ctx, tx: _Tx, target: Target, want: ImageRef) -> _Outcome:
    """A kustomize target whose GitOps objects set the image (a Flux HelmRelease's values, an Argo
    CD Application's images): the kustomization's `images:` does not reach those fields, so the
    edit goes into the target's own file that sets it — a patch or a resource of the overlay.  When
    only a shared base sets it, the override goes into the target's own patch of that HelmRelease
    (as flux2-kustomize-helm-example's overlays patch `spec.values`)."""
    if not any(same_repository(ref.name, want.repository)
               for obj in ctx.objects(target) for ref in gitops_images(obj)):
        return _Outcome()
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
            name = _release_name(doc)
            values = _release_values(doc)
            if name is not None and values is not None:
                defaults.setdefault(name, []).append(values)
    out = _Outcome()
    for rel in own:
        if any(same_repository(p.repository, want.repository) for p in _object_places(parsed[rel], defaults)):
            got = _edit_objects(ctx, tx, target, rel, want, defaults)
            out.used |= got.used
            out.changed |= got.changed
    if out.used:
        return out
    for rel in shared:
        f = parsed[rel]
        for doc in f.documents:
            name = _release_name(doc)
            values = _release_values(doc)
            place = next((p for p in _helm_images_in(values) if same_repository(p.repository, want.repository)),
                         None) if name is not None else None
            if place is None or name is None:
                continue
            patch = next(((prel, pdoc) for prel in own for pdoc in tx.parse(prel).documents
                          if _release_name(pdoc) == name), None)
            if patch is None:
                ctx.check_own(rel, target, place.node)
                continue
            return _override_release(tx, target, patch[0], name, place, values, want)
    return out


def _helm_images_in(values: Node | None) -> list[_HelmImage]:
    found: list[_HelmImage] = []
    if isinstance(values, MappingNode):
        _scan_values(values, (), (), found)
    return found


def _override_release(tx: _Tx, target: Target, rel: str, name: str, place: _HelmImage,
                      values: Node | None, want: ImageRef) -> _Outcome:
    """Set the image in the target's own patch of HelmRelease `name`, under `spec.values`."""
    if want.tag is None:
        raise YamlEditError(f"{rel}: a digest-only reference needs an image tag to set in the patch")
    f = tx.parse(rel)
    doc = next(d for d in f.documents if _release_name(d) == name)
    base_values = [values] if values is not None else []
    if place.kind == "string":
        old = scalar_value(place.node) or ""
        new = str(parse_image(old).with_version(want.tag, want.digest))
        fields = [((*place.path,), new)]
    else:
        old = place.repository + _version(*_map_version(place.node))
        tag_fields = _helm_tag_fields(want, [place.node, *_defaults_at(base_values, place.path)])
        fields = [((*place.path, key), value) for key, value in tag_fields.items()]
        new = place.repository + _version(want.tag, want.digest)
    for path, value in fields:
        f = tx.parse(rel)
        doc = next(d for d in f.documents if _release_name(d) == name)
        tx.apply(rel, [_insert_path(f, ("spec", "values", *path), value, root=doc)])
    tx.record(rel, target, old, new)
    return _Outcome(used=True, changed=True)


def _map_version(node: Node) -> tuple[str | None, str | None]:
    return scalar_value(get_value(node, "tag")), scalar_value(get_value(node, "digest"))


def _entry_name(entry: Node) -> str | None:
    """The repository a kustomize images entry produces: `newName` when set, else `name`."""
    return scalar_value(get_value(entry, "newName")) or scalar_value(get_value(entry, "name"))


def _root_mapping(f: YamlFile) -> MappingNode:
    docs = [d for d in f.documents if isinstance(d, MappingNode)]
    if len(docs) != 1:
        raise YamlEditError(f"{f.source}: expected one YAML mapping")
    return docs[0]


def _set_kustomize_entry(ctx: _Ctx, tx: _Tx, rel: str, target: Target, index: int, want: ImageRef) -> bool:
    """Set newTag / digest of the images[index] entry; True when the file changed."""
    def entry_of(f: YamlFile) -> MappingNode:
        node = items(get_value(_root_mapping(f), "images"))[index]
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
    old_version = _version(old_tag, old_digest)
    if not old_version:                   # the entry only renames: the version comes from a base
        with contextlib.suppress(PrbotError):
            old_version = _version(*next(((r.tag, r.digest) for r in ctx.rendered(target).get(
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
    tx.record(rel, target, name + old_version, name + _version(want.tag, want.digest))
    return True


# -- helm ------------------------------------------------------------------------------------------------

@dataclass
class _HelmImage:
    """One place in a values file that sets an image."""

    kind: str                          # "map" | "string"
    path: tuple[str, ...]              # keys from the document root to the map / the string's key
    node: Node                         # the map, or the string scalar
    repository: str                    # as written (registry/repository for split maps)


def _helm_images(f: YamlFile, defaults: Defaults) -> list[_HelmImage]:
    """Every place of a values file that sets an image; `defaults` tell tag-only maps' repository."""
    found: list[_HelmImage] = []
    for doc in f.documents:
        if isinstance(doc, MappingNode):
            _scan_values(doc, (), defaults, found)
    return found


def _map_repository(node: Node) -> str | None:
    repo = scalar_value(get_value(node, "repository"))
    if not repo:
        return None
    registry = scalar_value(get_value(node, "registry"))
    return f"{registry.rstrip('/')}/{repo}" if registry else repo


def _scan_values(node: MappingNode, path: tuple[str, ...], defaults: Defaults,
                 found: list[_HelmImage]) -> None:
    repo = _map_repository(node)
    if repo is not None and _valid_repository(repo):
        found.append(_HelmImage("map", path, node, repo))
    elif get_entry(node, "tag") is not None and path:
        default_repo = next((r for d in _defaults_at(defaults, path) if (r := _map_repository(d))), None)
        if default_repo and _valid_repository(default_repo):
            found.append(_HelmImage("map", path, node, default_repo))
    for k, v in entries(node):
        key = scalar_value(k)
        if key is None:
            continue
        if isinstance(v, MappingNode):
            _scan_values(v, (*path, key), defaults, found)
        elif key == "image" and isinstance(v, ScalarNode) and (text := scalar_value(v)):
            try:
                ref = parse_image(text)
            except ImageError:
                continue
            found.append(_HelmImage("string", (*path, key), v, ref.name))


def _valid_repository(repo: str) -> bool:
    try:
        ref = parse_image(repo)
    except ImageError:
        return False
    return ref.tag is None and ref.digest is None


Defaults = Sequence["YamlFile | Node"]       # values files, or values mappings (a HelmRelease's)


def _defaults_at(defaults: Defaults, path: tuple[str, ...]) -> list[MappingNode]:
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


def _helm(ctx: _Ctx, tx: _Tx, target: Target, want: ImageRef) -> _Outcome:
    chart = target.chart or target.path
    chart_values = f"{chart}/values.yaml"
    own_chart = PurePosixPath(chart).is_relative_to(PurePosixPath(target.path))
    files = [PurePosixPath(os.path.normpath(v)).as_posix() for v in target.values]
    if not files and own_chart and (ctx.root / chart_values).is_file():
        files = [chart_values]
    chart_defaults: list[YamlFile] = []
    if chart_values not in files and (ctx.root / chart_values).is_file():
        with contextlib.suppress(YamlEditError):
            chart_defaults = [YamlFile(ctx.files.read(chart_values), chart_values)]

    def defaults_of(rel: str | None) -> list[YamlFile]:
        """What a values file overrides: the other values files (last first), then the chart's."""
        return [tx.parse(other) for other in reversed(files) if other != rel] + chart_defaults

    out = _Outcome()
    shared: list[str] = []            # values files that set the image but other targets read too
    for rel in files:
        defaults = defaults_of(rel)
        places = [p for p in _helm_images(tx.parse(rel), defaults)
                  if same_repository(p.repository, want.repository)]
        if not places:
            continue
        if ctx.value_readers(rel, target):
            shared.append(rel)
            continue
        out.used = True
        for n in range(len(places)):
            f = tx.parse(rel)
            place = [p for p in _helm_images(f, defaults)
                     if same_repository(p.repository, want.repository)][n]
            edits, old, new = _helm_place_edits(f, place, want, defaults)
            if edits:
                tx.apply(rel, edits)
                tx.record(rel, target, old, new)
                out.changed = True
    if out.used:
        return out
    # The image is set only in files other targets read too (a shared values file, the chart's
    # defaults): set it in the target's own values file, the way a human overrides a default.
    default: _HelmImage | None = None
    for rel in reversed(shared):                        # the last values file wins in Helm
        default = _default_place(tx.parse(rel), want, chart_defaults)
        if default is not None:
            break
    if default is None and chart_defaults:
        default = _default_place(chart_defaults[0], want, [])
    if default is None:
        return out
    rendered = ctx.rendered(target).get(want.repository, [])
    stale = [r for r in rendered if (r.tag, r.digest) != (want.tag, want.digest)]
    if not stale:
        return _Outcome(used=bool(rendered))
    own = [rel for rel in files if not ctx.value_readers(rel, target)]
    if not own:
        for rel in shared:
            found = _default_place(tx.parse(rel), want, chart_defaults)
            ctx.check_own(rel, target, found.node if found else None, readers=ctx.value_readers(rel, target))
        raise YamlEditError(f"{target.key} has no values file of its own to set {want.repository} in "
                            f"({chart_values} holds the chart's shared defaults)")
    rel = own[-1]
    if default.kind == "string":
        value = str(parse_image(scalar_value(default.node) or "").with_version(want.tag, want.digest))
        tx.apply(rel, [_insert_path(tx.parse(rel), default.path, value)])
    else:
        if want.tag is None:
            raise YamlEditError(f"{target.key}: a digest-only reference needs an image tag in {rel}")
        for key, value in _helm_tag_fields(want, [default.node, *_defaults_at(chart_defaults, default.path)]).items():
            tx.apply(rel, [_insert_path(tx.parse(rel), (*default.path, key), value)])
    tx.record(rel, target, str(stale[0]), stale[0].name + _version(want.tag, want.digest))
    return _Outcome(used=True, changed=True)


def _default_place(f: YamlFile, want: ImageRef, defaults: Defaults) -> _HelmImage | None:
    for p in _helm_images(f, defaults):
        if same_repository(p.repository, want.repository):
            return p
    return None


def _helm_tag_fields(want: ImageRef, defaults: Sequence[Node]) -> dict[str, str]:
    assert want.tag is not None
    if want.digest and any(get_entry(d, "digest") is not None for d in defaults):
        return {"tag": want.tag, "digest": want.digest}
    return {"tag": want.tag + (f"@{want.digest}" if want.digest else "")}


def _insert_path(f: YamlFile, path: tuple[str, ...], value: str, root: Node | None = None) -> TextEdit:
    """Insert `value` at the dotted `path` (below `root`, by default the document), creating the
    missing mappings on the way."""
    node: Node = _root_mapping(f) if root is None else root
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


def _helm_place_edits(f: YamlFile, place: _HelmImage, want: ImageRef,
                      defaults: Defaults) -> tuple[list[TextEdit], str, str]:
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
        get_entry(d, "digest") is not None for d in _defaults_at(defaults, place.path))
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
    old = place.repository + _version(old_tag, old_digest)
    new = place.repository + _version(shown_tag, new_digest)
    return edits, old, new


# -- plain: containers and GitOps objects ------------------------------------------------------------------

FLUX_HELM = "helm.toolkit.fluxcd.io/"
ARGOCD = "argoproj.io/"


@dataclass
class _Place:
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


def _container_places(doc: Node) -> Iterator[_Place]:
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
                    yield _Place(image, ref.name, _ref_edits(image, ref))


def _values_places(values: Node | None, defaults: Defaults = ()) -> Iterator[_Place]:
    """Images in a values mapping (a HelmRelease's `spec.values`, an Application's `valuesObject`);
    `defaults`: the values it overrides, which tell a tag-only map's repository."""
    if not isinstance(values, MappingNode):
        return
    found: list[_HelmImage] = []
    _scan_values(values, (), defaults, found)
    for place in found:
        def edits(f: YamlFile, want: ImageRef, place: _HelmImage = place) -> tuple[list[TextEdit], str, str]:
            return _helm_place_edits(f, place, want, defaults)
        yield _Place(place.node, place.repository, edits)


def _kustomize_image_places(images: Node | None) -> Iterator[_Place]:
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
        yield _Place(item, ref.name, _ref_edits(item, ref, prefix + ("=" if prefix else "")))


def _parameter_places(parameters: Node | None) -> Iterator[_Place]:
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
            if not _valid_repository(repo):
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
            yield _Place(value, repo, edits)
        elif name.rsplit(".", 1)[-1].lower().endswith("image") and text:
            try:
                ref = parse_image(text)
            except ImageError:
                continue
            if ref.tag or ref.digest:
                assert isinstance(value, ScalarNode)
                yield _Place(value, ref.name, _ref_edits(value, ref))


def _release_name(doc: Node) -> str | None:
    """The name of a Flux HelmRelease document, else None."""
    if not _kind_of(doc, FLUX_HELM, ("HelmRelease",)):
        return None
    return scalar_value(get_value(get_value(doc, "metadata"), "name")) or ""


def _release_values(doc: Node) -> Node | None:
    return get_value(get_value(doc, "spec"), "values")


def _object_places(f: YamlFile, release_defaults: dict[str, list[Node]] | None = None) -> list[_Place]:
    """Every place of a manifest file that sets an image: containers of any workload kind, a Flux
    HelmRelease's `spec.values`, an Argo CD Application's `kustomize.images`, `helm.parameters`
    and `helm.valuesObject` (one place per node, in document order).  `release_defaults`: values
    of same-named HelmReleases that a patch overrides (by release name)."""
    places: dict[int, _Place] = {}
    for doc in f.documents:
        found = list(_container_places(doc))
        release = _release_name(doc)
        if release is not None:
            found += _values_places(_release_values(doc), (release_defaults or {}).get(release, ()))
        for source in _app_sources(doc):
            found += _kustomize_image_places(get_value(get_value(source, "kustomize"), "images"))
            helm = get_value(source, "helm")
            found += _parameter_places(get_value(helm, "parameters"))
            found += _values_places(get_value(helm, "valuesObject"))
        for place in found:
            places.setdefault(id(place.node), place)
    return sorted(places.values(), key=lambda p: p.node.start_mark.index)


def _edit_objects(ctx: _Ctx, tx: _Tx, target: Target, rel: str, want: ImageRef,
                  release_defaults: dict[str, list[Node]] | None = None) -> _Outcome:
    """Move every place of `rel` that sets the image's repository; the file must be the target's own."""
    out = _Outcome()
    f = tx.parse(rel)
    edits: list[TextEdit] = []
    first: Node | None = None
    for place in _object_places(f, release_defaults):
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


def _plain(ctx: _Ctx, tx: _Tx, target: Target, want: ImageRef) -> _Outcome:
    directory = ctx.root / target.path
    out = _Outcome()
    names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix in PLAIN_SUFFIXES)
    for name in names:
        got = _edit_objects(ctx, tx, target, f"{target.path}/{name}", want)
        out.used |= got.used
        out.changed |= got.changed
    return out


# -- images a target declares (containers and GitOps objects), from its rendered objects ---------------------

def _values_refs(values: Any) -> Iterator[ImageRef]:
    """Images set in a values mapping: ``repository`` (+ ``registry``) + ``tag``/``digest`` maps,
    ``image: repo:tag`` strings, at any depth."""
    if isinstance(values, dict):
        repo = values.get("repository")
        if isinstance(repo, str) and repo:
            registry = values.get("registry")
            name = f"{registry.rstrip('/')}/{repo}" if isinstance(registry, str) and registry else repo
            tag, digest = values.get("tag"), values.get("digest")
            with contextlib.suppress(ImageError):
                tag_text = str(tag) if isinstance(tag, (str, int, float)) and str(tag) else None
                if tag_text and "@" in tag_text:
                    tag_text, _, digest = tag_text.partition("@")
                ref = ImageRef(name, tag_text, digest if isinstance(digest, str) and digest else None)
                if ref.tag or ref.digest:
                    yield ref
        for key, value in values.items():
            if key == "image" and isinstance(value, str):
                with contextlib.suppress(ImageError):
                    ref = parse_image(value)
                    if ref.tag or ref.digest:
                        yield ref
            else:
                yield from _values_refs(value)
    elif isinstance(values, list):
        for value in values:
            yield from _values_refs(value)


def gitops_images(obj: dict[str, Any]) -> list[ImageRef]:
    """Images a Flux HelmRelease (`spec.values`) or an Argo CD Application / ApplicationSet
    (`kustomize.images`, `helm.parameters`, `helm.valuesObject`) sets; [] for other objects."""
    api, kind = str(obj.get("apiVersion") or ""), obj.get("kind")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if api.startswith(FLUX_HELM) and kind == "HelmRelease":
        return list(_values_refs(spec.get("values")))
    if not api.startswith(ARGOCD) or kind not in ("Application", "ApplicationSet"):
        return []
    if kind == "ApplicationSet":
        template = spec.get("template") if isinstance(spec.get("template"), dict) else {}
        spec = template.get("spec") if isinstance(template, dict) and isinstance(template.get("spec"), dict) else {}
        assert isinstance(spec, dict)
    listed = spec.get("sources")
    sources = [spec.get("source"), *(listed if isinstance(listed, list) else [])]
    refs: list[ImageRef] = []
    for source in (s for s in sources if isinstance(s, dict)):
        kustomize = source.get("kustomize") if isinstance(source.get("kustomize"), dict) else {}
        for text in kustomize.get("images") or () if isinstance(kustomize, dict) else ():
            if isinstance(text, str):
                with contextlib.suppress(ImageError):
                    refs.append(parse_image(text.rpartition("=")[2]))
        helm = source.get("helm") if isinstance(source.get("helm"), dict) else {}
        assert isinstance(helm, dict)
        params = {str(p.get("name")): p.get("value") for p in helm.get("parameters") or ()
                  if isinstance(p, dict) and p.get("name") is not None}
        for name, value in params.items():
            if name.endswith(".repository") and isinstance(value, str):
                prefix = name[: -len(".repository")]
                registry, tag = params.get(f"{prefix}.registry"), params.get(f"{prefix}.tag")
                full = f"{registry.rstrip('/')}/{value}" if isinstance(registry, str) and registry else value
                with contextlib.suppress(ImageError):
                    if tag is not None and str(tag):
                        t, _, d = str(tag).partition("@")
                        refs.append(ImageRef(full, t, d or None))
            elif name.rsplit(".", 1)[-1].lower().endswith("image") and isinstance(value, str):
                with contextlib.suppress(ImageError):
                    ref = parse_image(value)
                    if ref.tag or ref.digest:
                        refs.append(ref)
        refs += _values_refs(helm.get("valuesObject"))
    return refs


def declared_images(objects: Iterable[dict[str, Any]]) -> dict[str, list[ImageRef]]:
    """`container_images` plus the images GitOps objects set (`gitops_images`), by repository."""
    objects = list(objects)
    found = {repo: list(refs) for repo, refs in container_images(objects).items()}
    for obj in objects:
        for ref in gitops_images(obj):
            found.setdefault(ref.repository, []).append(ref)
    return found


_EDITORS = {"kustomize": _kustomize, "helm": _helm, "plain": _plain}


# -- commands --------------------------------------------------------------------------------------------

def _select(ctx: _Ctx, env: str, app: str | None) -> list[Target]:
    ctx.config.env(env)
    if app is not None and app not in {t.app for t in ctx.targets}:
        known = sorted({t.app for t in ctx.targets})
        raise PrbotError(f"unknown app {app!r} (known: {', '.join(known) or 'none'})")
    chosen = [t for t in ctx.targets if t.env == env and (app is None or t.app == app)]
    if app is not None and not chosen:
        raise PrbotError(f"app {app!r} has no target in environment {env!r}")
    return chosen


Check = Callable[[FileEdit], "str | None"]      # why an edit is refused, or None


def _tag(version: str) -> str | None:
    """The tag of a version as FileEdit writes it (``1.2.3``, ``1.2.3@sha256:…``, ``@sha256:…``)."""
    return version.partition("@")[0] or None


def _run_target(ctx: _Ctx, result: EditResult, target: Target, wants: list[ImageRef],
                check: Check | None = None) -> None:
    """Edit one target for every wanted image; a failure or a refusal drops its edits and is
    reported (errors as ``FILE:LINE: message (app/env)`` when a file is to blame)."""
    tx = _Tx(ctx.files)
    used = changed = False
    try:
        for want in wants:
            outcome = _EDITORS[target.renderer](ctx, tx, target, want)
            used |= outcome.used
            changed |= outcome.changed
    except PrbotError as exc:
        result.errors.append(_located(str(exc), target))
        return
    except OSError as exc:
        result.errors.append(f"{target.key}: {exc.strerror or exc}")
        return
    refusals = [f"{target.key}: {e.path}: {e.image} {e.old or '(no tag)'} → {e.new}: {why}"
                for e in tx.edits if check is not None and (why := check(e))]
    result.matched |= used
    if refusals:
        result.refused += refusals
        return
    tx.merge()
    result.edits.extend(tx.edits)
    if used and not changed:
        result.current.append(target.key)


def _located(message: str, target: Target) -> str:
    """A target's error, led by the file (and line) to blame when the message names one."""
    head = message.split(": ", 1)[0]
    if "/" in head or head.endswith((".yaml", ".yml", ".json")) or ":" in head:
        return f"{message} ({target.key})"
    return f"{target.key}: {message}"


def _finish(ctx: _Ctx, result: EditResult) -> EditResult:
    """Write every edited file, or none: any error or refusal leaves the working tree as it was."""
    if result.written:
        ctx.files.commit()
    return result


def bump(root: Path, config: Config, image: str, env: str, app: str | None = None, *,
         force: bool = False, pool: RenderPool | None = None) -> EditResult:
    """Move every target of `env` (or only `app`'s) that uses the image's repository to its version.

    Raises ImageError for a bad reference and PrbotError for an unknown environment or app, or a
    tag the image's `images[].tags` refuses (unless `force`), before anything is read or written.
    Per-target problems are returned in ``errors``; a move ``policy: semver`` forbids (a lower or
    not semantic version) in ``refused`` (unless `force`).  Files are written only when there
    are neither (all or nothing).  `pool` renders the targets that must be rendered to find the
    image through its cache (a service bumping one base again and again renders each target once).
    """
    want = parse_image(image)
    if want.tag is None and want.digest is None:
        raise ImageError(f"image reference {image!r} names no tag or digest to move to")
    config.env(env)
    rule = rule_for(config, want.name)
    if not force and (why := tag_refusal(rule, want.tag)):
        raise PolicyError(f"refused {want}: {why}; --force bumps anyway")
    check: Check | None = None
    if not force and rule is not None and rule.policy == "semver":
        def check(e: FileEdit) -> str | None:
            return version_refusal(_tag(e.old), _tag(e.new), semver_policy=True)
    ctx = _Ctx(Path(root), config, pool)
    result = EditResult()
    for target in _select(ctx, env, app):
        _run_target(ctx, result, target, [want], check)
    return _finish(ctx, result)


def promote(root: Path, config: Config, from_env: str, to_env: str, app: str | None = None, *,
            force: bool = False) -> EditResult:
    """Carry the image versions each app sets in `from_env` (rendered: containers, HelmRelease
    values, Application images) into its `to_env` target.

    Only repositories the destination target already uses are carried; apps present in one of the
    two environments only are skipped (with `app` given, that is an error).  A move to a lower
    semantic version is refused (``refused``) unless `force`.  All or nothing, as `bump`.
    """
    if config.env(from_env).name == config.env(to_env).name:
        raise PrbotError(f"cannot promote {from_env!r} into itself")
    ctx = _Ctx(Path(root), config)
    sources = {t.app: t for t in _select(ctx, from_env, app)}
    dests = {t.app: t for t in _select(ctx, to_env, app)}
    result = EditResult()

    def check(e: FileEdit) -> str | None:
        return None if force else version_refusal(_tag(e.old), _tag(e.new), semver_policy=False)

    for name in sorted(set(sources) & set(dests)):
        try:
            images = {repo: refs[0] for repo, refs in ctx.declared(sources[name]).items()}
        except PrbotError as exc:
            result.errors.append(_located(str(exc), sources[name]))
            continue
        wants = [ref for _, ref in sorted(images.items()) if ref.tag or ref.digest]
        if wants:
            _run_target(ctx, result, dests[name], wants, check)
    return _finish(ctx, result)

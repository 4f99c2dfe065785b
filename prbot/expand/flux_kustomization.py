"""The Flux `Kustomization` expander (kustomize.toolkit.fluxcd.io v1 and v1beta2): what
kustomize-controller applies for one, rendered from this repository.

As kustomize-controller does it:
- the source is the `GitRepository` named by `spec.sourceRef`, which must be among the target's
  objects and name this repository (its origin, or one listed in `render.repository`); any other
  source (another repository, an `OCIRepository`, a `Bucket`) is not read: "not expanded", named;
- `spec.path` (relative to the repository root; `./` by default) is built by kustomize.  A directory
  holding a kustomization file has that file amended, one without gets the kustomization Flux
  generates: every `*.yaml`/`*.yml` manifest below it, and each subdirectory holding a kustomization
  file as one resource (not descended).  The amendments are Flux's: `namespace` ←
  `spec.targetNamespace`, `namePrefix`/`nameSuffix`, `spec.patches` (and v1beta2's
  `patchesStrategicMerge`/`patchesJson6902`) appended, `spec.components` appended (a missing one
  skipped under `ignoreMissingComponents`), `spec.images` merged by name;
- kustomize runs in the render jail on a copy of the files the target's closure holds (a path that
  leaves the repository — `..`, absolute, a symbolic link out — is refused);
- `spec.postBuild` substitutions follow (`prbot.expand.substitute`), with `substituteFrom`
  ConfigMaps and Secrets found among the objects the target rendered (in the Kustomization's
  namespace, or without one);
- each object gets `spec.commonMetadata` labels and annotations and Flux's owner labels
  (`kustomize.toolkit.fluxcd.io/name`, `…/namespace`).

A target listed directly (`apps/{env}`) can name the Flux Kustomization that deploys it:
`sync.flux.root` (a directory, `{env}`/`{app}` expanded) holds its definition; the target's render
then gets that Kustomization's `targetNamespace` (by kustomize, in the jail) and `postBuild`
(`deployed_render`).  The files below the root are part of the target's closure (`deployed_closure`).
"""

from __future__ import annotations

import dataclasses
import os
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prbot.errors import ExpandError, RenderError, SubstitutionError
from prbot.expand.base import ExpandContext, Expander, Inputs, InputsContext, describe, meta, within_target
from prbot.expand.substitute import Variables, substitute, variables
from prbot.limits import Limits
from prbot.model import KUSTOMIZATION_FILES, Target
from prbot.renderers.base import parse_documents
from prbot.renderers.closure import Closure, ClosureBuilder, ClosureCache, stage
from prbot.tools import find_tool, which
from prbot.yamlio import YAML_ERRORS, load_yaml, load_yaml_all

GROUP = "kustomize.toolkit.fluxcd.io"
SOURCE_GROUP = "source.toolkit.fluxcd.io"
OWNER_NAME = "kustomize.toolkit.fluxcd.io/name"
OWNER_NAMESPACE = "kustomize.toolkit.fluxcd.io/namespace"
MANIFEST_SUFFIXES = (".yaml", ".yml")
MAX_WALK = 20_000
"""Entries looked at when listing a directory without a kustomization file (closure and generator)."""
_REMOTE_PREFIXES = ("git::", "gh:", "ssh://", "https://", "http://", "git@", "github.com:", "github.com/")
INPUT_APP = "expand-input"      # the framework's name for a path an expansion reads


class FluxKustomization(Expander):
    kinds = ((GROUP, "Kustomization"),)

    looks_at = (SOURCE_GROUP,)

    def inputs(self, doc: dict[str, Any], ctx: InputsContext) -> Inputs:
        spec = doc.get("spec")
        if not isinstance(spec, dict):
            return Inputs()
        # the documents of this Kustomization's name the closure holds: the definition and the patches
        # an overlay applies to it (a base without `spec.path`, each environment patching one in)
        name = meta(doc).get("name")
        specs = [spec] + [s for s in _same_name_specs(name, ctx) if s is not spec]
        if not _may_read_this_repository(specs, ctx):
            return Inputs()
        paths = [spec.get("path")] if "path" in spec else []
        paths += [s["path"] for s in _inline_patch_specs(name, ctx) if "path" in s]
        if not paths and not any("path" in s for s in specs):
            paths = ["./"]                  # Flux's default, when nothing the closure holds gives a path
        local: list[tuple[str, str | None]] = []
        for path in paths:
            rel = _static_path(path)
            if rel is None:
                continue
            local.extend(directory_inputs(ctx.root, rel))
            components = spec.get("components")
            for component in components if isinstance(components, list) else []:
                sub = _static_path(posixpath.join(rel, component) if isinstance(component, str) else None)
                if sub is not None:
                    local.append((sub, "kustomize"))
        return Inputs(local=local)

    def expand(self, obj: dict[str, Any], ctx: ExpandContext) -> list[dict[str, Any]]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            raise ExpandError("it has no spec")
        namespace = meta(obj).get("namespace") or ctx.target.namespace
        check_source(spec.get("sourceRef"), namespace, ctx)
        rel = ctx.local_path(spec.get("path") or "./", "spec.path")
        objects = build(rel, spec, ctx)
        if spec.get("postBuild") is not None:
            objects = post_build(objects, spec.get("postBuild"), namespace, ctx)
        if any(_identity(o) == _identity(obj) for o in objects):
            # Flux's bootstrap layout: the path holds this Kustomization's own definition, so what the
            # target rendered itself is the same objects again, not new ones (and not expanded again)
            present = {_identity(o) for o in ctx.objects}
            objects = [o for o in objects if _identity(o) not in present]
        return label(objects, spec.get("commonMetadata"), str(meta(obj).get("name") or ""), namespace)


def _is_flux_kustomization(doc: Mapping[str, Any]) -> bool:
    api = doc.get("apiVersion")
    return doc.get("kind") == "Kustomization" and isinstance(api, str) and api.startswith(f"{GROUP}/")


def _same_name_specs(name: Any, ctx: InputsContext) -> list[dict[str, Any]]:
    """The specs of every Flux Kustomization named `name` among the closure's documents (whatever
    their namespace) and in the inline patches of its kustomization files."""
    if not isinstance(name, str):
        return []
    found = [d.get("spec") for _, d in ctx.docs if _is_flux_kustomization(d) and meta(d).get("name") == name]
    return [s for s in found if isinstance(s, dict)] + _inline_patch_specs(name, ctx)


def _inline_patch_specs(name: Any, ctx: InputsContext) -> list[dict[str, Any]]:
    """The specs an inline patch of a kustomization file (`patches[].patch`, `patchesStrategicMerge`)
    gives the Flux Kustomization `name`."""
    if not isinstance(name, str):
        return []
    out: list[dict[str, Any]] = []
    for _, doc in ctx.docs:
        if doc.get("kind") not in (None, "Kustomization", "Component") or _is_flux_kustomization(doc):
            continue                    # a kustomization file (kind and apiVersion are optional there)
        texts: list[Any] = []
        for key in ("patches", "patchesStrategicMerge"):
            listed = doc.get(key)
            for item in listed if isinstance(listed, list) else []:
                texts.append(item.get("patch") if isinstance(item, dict) else item)
        for text in texts:
            if not isinstance(text, str) or GROUP not in text or len(text) > 1 << 20:
                continue
            try:
                patches = load_yaml_all(text)
            except Exception:  # noqa: BLE001 - a patch kustomize cannot read patches nothing
                continue
            for patch in patches if isinstance(patches, list) else []:
                if isinstance(patch, dict) and _is_flux_kustomization(patch) and meta(patch).get("name") == name \
                        and isinstance(patch.get("spec"), dict):
                    out.append(patch["spec"])
    return out


def _may_read_this_repository(specs: Sequence[Mapping[str, Any]], ctx: InputsContext) -> bool:
    """Whether a Kustomization with these specs (its definition and patches) may build a path of
    this repository: its source is a GitRepository (Flux requires `sourceRef.kind`; without one it
    builds nothing) that is not plainly another repository.  Which URLs are this repository is not
    known here, so a GitRepository found is taken as possibly this one (a superset)."""
    refs = [s.get("sourceRef") for s in specs]
    kinds = {r.get("kind") for r in refs if isinstance(r, dict) and r.get("kind")}
    return "GitRepository" in kinds


def _identity(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    api = obj.get("apiVersion")
    group = api.rsplit("/", 1)[0] if isinstance(api, str) and "/" in api else ""
    m = meta(obj)
    return group, str(obj.get("kind")), str(m.get("namespace") or ""), str(m.get("name") or "")


# --------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------

def check_source(ref: Any, namespace: str | None, ctx: ExpandContext) -> None:
    """ExpandError unless `ref` (a `spec.sourceRef`) is a GitRepository naming this repository."""
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str):
        raise ExpandError("spec.sourceRef names no source")
    kind = ref.get("kind")
    ns = ref.get("namespace") or namespace
    where = f"{ns}/{ref['name']}" if ns else ref["name"]
    if not kind:
        raise ExpandError(f"spec.sourceRef {where} has no kind (Flux requires one)")
    if kind != "GitRepository":
        raise ExpandError(f"its source {kind} {where} is not read (prbot renders this repository's "
                          "GitRepository sources only)")
    source = ctx.find("GitRepository", ns, ref["name"], SOURCE_GROUP)
    if source is None:
        raise ExpandError(f"its source GitRepository {where} is not among the target's objects, so prbot "
                          "cannot tell which repository it names")
    source_spec = source.get("spec")
    url = source_spec.get("url") if isinstance(source_spec, dict) else None
    if not ctx.this_repository(url):
        from prbot.expand.base import normalise_repository_url
        shown = normalise_repository_url(url) or "a URL prbot does not read"     # never credentials
        raise ExpandError(f"its source GitRepository {where} is another repository ({shown}), which prbot "
                          "does not read (list this repository's other URLs in render.repository)")


# --------------------------------------------------------------------------------------------
# What a path reads (static) and how it is built
# --------------------------------------------------------------------------------------------

def _static_path(path: Any) -> str | None:
    """A Kustomization's `spec.path` as a repository path, or None when it cannot be one (absolute,
    leaving the repository, holding a substitution)."""
    if path is None:
        path = "./"
    if not isinstance(path, str) or "${" in path or "\0" in path or posixpath.isabs(path.strip()):
        return None
    rel = posixpath.normpath(path.strip() or ".")
    if rel == ".." or rel.startswith("../"):
        return None
    return "" if rel == "." else rel


def _kustomization_in(directory: str) -> str | None:
    for name in KUSTOMIZATION_FILES:
        if os.path.isfile(os.path.join(directory, name)):
            return name
    return None


def directory_inputs(root: str, rel: str) -> list[tuple[str, str | None]]:
    """What building `rel` the Flux way reads: the kustomization there, or (generated) every file
    below and each kustomization directory found on the way."""
    full = os.path.join(root, rel)
    if _kustomization_in(full) is not None:
        return [(rel, "kustomize")]
    out: list[tuple[str, str | None]] = [(rel, None)]
    seen = 0
    for current, dirs, _files in os.walk(full):
        dirs.sort()
        seen += len(dirs) + len(_files)
        if seen > MAX_WALK:
            break
        keep = []
        for d in dirs:
            sub = os.path.join(current, d)
            if _kustomization_in(sub) is not None:
                out.append((posixpath.normpath(os.path.relpath(sub, root).replace(os.sep, "/")), "kustomize"))
            else:
                keep.append(d)
        dirs[:] = keep
    return out


def _closure(rel: str, spec: Mapping[str, Any], ctx: ExpandContext) -> tuple[Closure, list[str]]:
    """The files building `rel` reads, checked against the target's closure, and the components kept."""
    cache = ctx.cache or ClosureCache()
    root = os.fspath(ctx.root)
    kind = cache.kind(root, rel)
    if kind == "outside":
        raise ExpandError(f"refused: spec.path {rel} resolves (through a symbolic link) outside the repository")
    if kind != "dir":
        raise ExpandError(f"spec.path {rel or './'} is not a directory of the repository")
    parts: list[Closure] = []
    for path, renderer in directory_inputs(root, rel):
        if renderer is None:
            parts.append(cache.tree(root, path))
        else:
            parts.append(cache.closure(root, Target(INPUT_APP, ctx.target.env, path, renderer)))
    components: list[str] = []
    listed = spec.get("components")
    for component in listed if isinstance(listed, list) else []:
        if not isinstance(component, str) or posixpath.isabs(component) or \
                component.lower().startswith(_REMOTE_PREFIXES) or component.lower().startswith("file://"):
            raise ExpandError(f"component path {str(component)[:200]!r} must be local and relative")
        sub = ctx.local_path(component, "spec.components", base=rel)
        if cache.kind(root, sub) != "dir":
            if spec.get("ignoreMissingComponents") is True:
                continue
            raise ExpandError(f"component {component[:200]} is not a directory of the repository")
        parts.append(cache.closure(root, Target(INPUT_APP, ctx.target.env, sub, "kustomize")))
        components.append(component)
    closure = Closure(frozenset())
    for part in parts:
        closure = closure | part
    return dataclasses.replace(within_target(closure, ctx, rel), _cache=None), components


def build(rel: str, spec: Mapping[str, Any], ctx: ExpandContext) -> list[dict[str, Any]]:
    """`kustomize build` of `rel` with the kustomization amended (or generated) as Flux does."""
    closure, components = _closure(rel, spec, ctx)
    with ctx.scratch() as (home, tree):
        stage(ctx.root, closure, tree)
        directory = tree / rel if rel else tree
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = _kustomization_in(os.fspath(directory))
        if name is not None:
            kustomization = _read_kustomization(directory / name, rel)
            if not kustomization.get("resources"):
                kustomization["buildMetadata"] = ["originAnnotations"]     # as Flux does
        else:
            name = "kustomization.yaml"
            kustomization = generate(directory, rel)
        amend(kustomization, spec, components)
        (directory / name).write_text(_json(kustomization), encoding="utf-8")
        kustomize = which("kustomize")
        argv = [kustomize, "build"] if kustomize else [find_tool("kubectl"), "kustomize"]
        argv += ["--load-restrictor", "LoadRestrictionsNone", rel or "."]
        text = ctx.run(argv, label="kustomize build", cwd=tree, home=home)
    return parse_documents(text, f"kustomize build {rel or '.'}", max_bytes=ctx.limits.output,
                           limits=ctx.limits, deadline=ctx.deadline)


def _json(data: Any) -> str:
    import json
    return json.dumps(data, ensure_ascii=False, indent=1)


def _read_kustomization(path: Path, rel: str) -> dict[str, Any]:
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"))
    except (*YAML_ERRORS, UnicodeDecodeError, OSError):  # type: ignore[misc]
        raise ExpandError(f"{posixpath.join(rel, path.name)} is not valid YAML") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ExpandError(f"{posixpath.join(rel, path.name)} is not a mapping")
    return doc


def generate(directory: Path, rel: str) -> dict[str, Any]:
    """Flux's generated kustomization of a directory without one: its manifests (every `*.yaml` and
    `*.yml` below, in lexical walk order, each holding Kubernetes objects only) and the
    subdirectories holding a kustomization file (not descended)."""
    resources: list[str] = []
    seen = 0
    for current, dirs, files in os.walk(directory):
        dirs.sort()
        seen += len(dirs) + len(files)
        if seen > MAX_WALK:
            raise ExpandError(f"{rel or '.'} holds more than {MAX_WALK:,} files and directories")
        here = Path(current)
        # filepath.Walk visits a directory's entries in lexical order, files and directories mixed
        entries = sorted([(d, True) for d in dirs] + [(f, False) for f in files])
        keep: list[str] = []
        for entry, is_dir in entries:
            child = here / entry
            inner = child.relative_to(directory).as_posix()
            if is_dir:
                if _kustomization_in(os.fspath(child)) is not None:
                    resources.append(f"./{inner}")
                else:
                    keep.append(entry)
                continue
            if not entry.endswith(MANIFEST_SUFFIXES):
                continue
            _check_manifest(child, posixpath.join(rel, inner))
            resources.append(f"./{inner}")
        dirs[:] = sorted(keep)
    # os.walk lists a directory's files before descending; Flux's walk interleaves them by name
    resources.sort(key=lambda r: r.split("/"))
    if not resources:
        return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "namespace": "_placeholder"}
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": resources}


def _check_manifest(path: Path, shown: str) -> None:
    try:
        docs = load_yaml_all(path.read_text(encoding="utf-8"))
    except (*YAML_ERRORS, UnicodeDecodeError, OSError):  # type: ignore[misc]
        raise ExpandError(f"failed to decode Kubernetes YAML from {shown}") from None
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            raise ExpandError(f"failed to decode Kubernetes YAML from {shown}: a document is not a "
                              "Kubernetes object")


def amend(kustomization: dict[str, Any], spec: Mapping[str, Any], components: Sequence[str]) -> None:
    """Flux's changes to the kustomization of `spec.path` (see the module doc)."""
    for field_name, key in (("targetNamespace", "namespace"), ("namePrefix", "namePrefix"),
                            ("nameSuffix", "nameSuffix")):
        value = spec.get(field_name)
        if isinstance(value, str):
            kustomization[key] = value
    for key in ("patches", "patchesStrategicMerge", "patchesJson6902"):
        extra = spec.get(key)
        if not isinstance(extra, list) or not extra:
            continue
        if key == "patches":        # Flux's Patch has these two fields only: a `path` is never read
            extra = [{k: p[k] for k in ("patch", "target") if p.get(k) is not None} if isinstance(p, dict) else p
                     for p in extra]
        elif key == "patchesJson6902":
            import json
            extra = [{"target": p.get("target"), "patch": json.dumps(p.get("patch"))} if isinstance(p, dict) else p
                     for p in extra]
        elif key == "patchesStrategicMerge":
            import json
            extra = [json.dumps(p) if not isinstance(p, str) else p for p in extra]
        current = kustomization.get(key)
        kustomization[key] = (list(current) if isinstance(current, list) else []) + list(extra)
    if components:
        current = kustomization.get("components")
        kustomization["components"] = (list(current) if isinstance(current, list) else []) + list(components)
    images = spec.get("images")
    if isinstance(images, list) and images:
        current = [dict(i) for i in kustomization.get("images") or [] if isinstance(i, dict)]
        for image in images:
            if not isinstance(image, dict):
                continue
            found = next((i for i in current if i.get("name") == image.get("name")), None)
            if found is None:
                current.append({k: image[k] for k in ("name", "newName", "newTag", "digest") if image.get(k)})
                continue
            if image.get("newName"):
                found["newName"] = image["newName"]
            if image.get("newTag") or image.get("digest"):
                found.pop("newTag", None)
                found.pop("digest", None)
                found.update({k: image[k] for k in ("newTag", "digest") if image.get(k)})
        kustomization["images"] = current
    build_metadata = spec.get("buildMetadata")
    if isinstance(build_metadata, list) and build_metadata:
        kustomization["buildMetadata"] = build_metadata


# --------------------------------------------------------------------------------------------
# After the build
# --------------------------------------------------------------------------------------------

def post_build(objects: list[dict[str, Any]], spec: Any, namespace: str | None,
               ctx: ExpandContext) -> list[dict[str, Any]]:
    """`objects` with `spec` (a `postBuild`) applied; its sources are found among `ctx.objects`."""
    try:
        found: Variables = variables(spec, ctx.objects, namespace)
        return substitute(objects, found, max_bytes=ctx.limits.output)
    except SubstitutionError as exc:
        raise ExpandError(f"postBuild: {exc}") from None


def label(objects: list[dict[str, Any]], common: Any, name: str, namespace: str | None) -> list[dict[str, Any]]:
    """Flux's metadata on every object applied: `spec.commonMetadata` and its owner labels."""
    labels = dict(common.get("labels") or {}) if isinstance(common, dict) and isinstance(common.get("labels"), dict) \
        else {}
    annotations = dict(common.get("annotations") or {}) \
        if isinstance(common, dict) and isinstance(common.get("annotations"), dict) else {}
    labels[OWNER_NAME] = name
    labels[OWNER_NAMESPACE] = namespace or ""
    out = []
    for obj in objects:
        obj = dict(obj)
        metadata = dict(meta(obj))
        for key, extra in (("labels", labels), ("annotations", annotations)):
            if not extra:
                continue
            current = metadata.get(key)
            metadata[key] = {**(current if isinstance(current, dict) else {}),
                             **{str(k): str(v) for k, v in extra.items()}}
        obj["metadata"] = metadata
        out.append(obj)
    return out


# --------------------------------------------------------------------------------------------
# A target deployed by a Flux Kustomization defined elsewhere (sync.flux.root)
# --------------------------------------------------------------------------------------------

def deployed_closure(cache: ClosureCache, root: str, target: Target, closure: Closure) -> Closure:
    """The target's closure plus every file below its `sync.flux.root` (where the Kustomization
    deploying it and its substitution sources are defined)."""
    if target.flux is None:
        return closure
    rel = target.flux[0]
    kind = cache.kind(root, rel)
    acc = ClosureBuilder()
    if kind == "dir":
        part = cache.tree(root, rel)
        return closure | dataclasses.replace(part, _cache=None)
    if kind == "outside":
        acc.outside.append(f"{rel}: sync.flux.root resolves (through a symbolic link) outside the repository")
    else:
        acc.missing.add(rel)
        acc.errors.append(f"{rel}: sync.flux.root is not a directory of the repository")
    return closure | acc.freeze()


def root_documents(root: Path, closure: Closure, rel: str) -> list[dict[str, Any]]:
    """Every mapping document of the YAML files below `rel` (as written: no kustomization is built)."""
    prefix = f"{rel}/" if rel else ""
    out: list[dict[str, Any]] = []
    for path in sorted(f for f in closure.files if f.startswith(prefix) and f.endswith(MANIFEST_SUFFIXES)):
        try:
            docs = load_yaml_all((root / path).read_text(encoding="utf-8"), max_bytes=8 << 20)
        except (*YAML_ERRORS, UnicodeDecodeError, OSError):  # type: ignore[misc]
            continue                    # not a manifest (a values file …): Flux would say so when it builds
        out.extend(d for d in docs if isinstance(d, dict))
    return out


def deploying(root: Path, closure: Closure, target: Target) -> dict[str, Any]:
    """The Flux Kustomization `target.flux` names, from the files below its root; ExpandError when
    absent."""
    assert target.flux is not None
    rel, namespace, name = target.flux
    for doc in root_documents(root, closure, rel):
        api = doc.get("apiVersion")
        if doc.get("kind") == "Kustomization" and isinstance(api, str) and api.startswith(f"{GROUP}/") \
                and meta(doc).get("name") == name and meta(doc).get("namespace", namespace) == namespace:
            return doc
    prefix = f"{rel}/" if rel else ""
    if not any(f.startswith(prefix) for f in closure.files):
        raise ExpandError(f"sync.flux.root {rel or '.'} is not a directory of the repository holding files")
    raise ExpandError(f"sync.flux.root {rel or '.'} defines no Flux Kustomization {namespace}/{name}")


def deployed_render(objects: list[dict[str, Any]], ctx: ExpandContext) -> list[dict[str, Any]]:
    """A target's own objects as the Flux Kustomization deploying it applies them: its
    `targetNamespace` (kustomize, in the jail) and its `postBuild` (sources found below the root)."""
    target = ctx.target
    if target.flux is None:
        return objects
    kustomization = deploying(ctx.root, ctx.closure, target)
    spec = kustomization.get("spec") if isinstance(kustomization.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    namespace = meta(kustomization).get("namespace") or target.flux[1]
    if isinstance(spec.get("targetNamespace"), str) and objects:
        objects = _in_namespace(objects, spec["targetNamespace"], ctx)
    if spec.get("postBuild") is not None:
        sources = root_documents(ctx.root, ctx.closure, target.flux[0]) + list(objects)
        try:
            found = variables(spec["postBuild"], sources, namespace)
            objects = substitute(objects, found, max_bytes=ctx.limits.output)
        except SubstitutionError as exc:
            raise ExpandError(f"postBuild of {describe(kustomization, namespace)}: {exc}") from None
    return objects


def deployed(objects: list[dict[str, Any]], root: Path, target: Target, closure: Closure, limits: Limits,
             kube_version: str | None, deadline: float | None) -> list[dict[str, Any]]:
    """`deployed_render` for `prbot.render`: RenderError (the target fails) when it cannot be done."""
    ctx = ExpandContext(root=root, target=target, closure=closure, limits=limits, kube_version=kube_version,
                        deadline=deadline, cache=closure._cache)
    try:
        return deployed_render(objects, ctx)
    except ExpandError as exc:
        raise RenderError(str(exc)) from None


def _in_namespace(objects: list[dict[str, Any]], namespace: str, ctx: ExpandContext) -> list[dict[str, Any]]:
    with ctx.scratch() as (home, tree):
        (tree / "objects.json").write_text(_json({"apiVersion": "v1", "kind": "List", "items": objects}),
                                           encoding="utf-8")
        (tree / "kustomization.yaml").write_text(_json({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["objects.json"], "namespace": namespace}), encoding="utf-8")
        kustomize = which("kustomize")
        argv = [kustomize, "build"] if kustomize else [find_tool("kubectl"), "kustomize"]
        text = ctx.run(argv + ["."], label="kustomize build (targetNamespace)", cwd=tree, home=home)
    return parse_documents(text, "targetNamespace", max_bytes=ctx.limits.output, limits=ctx.limits,
                           deadline=ctx.deadline)

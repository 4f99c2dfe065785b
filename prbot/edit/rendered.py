"""The images rendered objects use (containers) or set (GitOps objects), read from plain data.

These read what a target renders (`container_images`, `rendered_images`) and what it declares,
GitOps objects included (`gitops_images`, `declared_images`); the editors use them to decide
whether a target uses an image, and the flows to show versions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prbot.errors import ImageError
from prbot.images import ImageRef, parse_image
from prbot.model import Target
from prbot.render import render_target

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


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


FLUX_HELM = "helm.toolkit.fluxcd.io/"


ARGOCD = "argoproj.io/"


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

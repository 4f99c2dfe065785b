"""Plain manifests: every `*.yaml`, `*.yml` and `*.json` file in the target directory (not below it),
sorted by path, multi-document files and `kind: *List` allowed.

Closure rule: those files (a symbolic link counts with the file it points to, and must stay inside
the repository) and the directory listing (a new manifest is an input change).  Parsed by
`prbot.yamlio` — the one loader with the size, alias-expansion and nesting guards — under the limits
of a render: the output limit applies to the bytes read, the object limit to the objects, and a file
over `prbot.renderers.base.PARSE_IN_PROCESS` is parsed in a process bounded by the render's memory
and time (and the plan's budget).
"""

from __future__ import annotations

import os
from typing import Any

from prbot.config import AppSpec
from prbot.errors import RenderError
from prbot.model import PLAIN_SUFFIXES, Target, TreeReader
from prbot.renderers.base import Renderer, RenderJob, parse_file
from prbot.renderers.closure import Closure, ClosureBuilder, ClosureCache, join, norm


class PlainRenderer(Renderer):
    name = "plain"

    def detect(self, tree: TreeReader, rel: str, spec: AppSpec) -> bool:
        return True

    def closure(self, cache: ClosureCache, root: str, target: Target) -> Closure:
        rel = norm(target.path)
        acc = ClosureBuilder()
        acc.globs.update(join(rel, f"*{suffix}") for suffix in PLAIN_SUFFIXES)
        if cache.kind(root, rel) != "dir":
            acc.missing.add(rel)
            acc.errors.append(f"{rel or '.'}: directory does not exist")
            return acc.freeze()
        try:
            entries = list(os.scandir(os.path.join(root, rel)))
        except OSError:
            acc.missing.add(rel)
            acc.errors.append(f"{rel or '.'}: directory does not exist")
            return acc.freeze()
        for entry in entries:
            if not entry.name.endswith(PLAIN_SUFFIXES) or not entry.is_file():
                continue
            child = join(rel, entry.name)
            if entry.is_symlink() and not cache.inside(root, child):
                acc.outside.append(f"{child}: symbolic link to a path outside the repository")
                continue
            acc.files.update(cache.with_real(root, child))
        return acc.freeze()

    def render(self, job: RenderJob) -> list[dict[str, Any]]:
        rel = norm(job.target.path)
        directory = job.root / rel
        try:                        # what is there, not what the closure says (so a closure that
            names = sorted(e.name for e in os.scandir(directory)        # missed a file is caught)
                           if e.name.endswith(PLAIN_SUFFIXES) and e.is_file())
        except OSError as exc:
            raise RenderError(f"{rel or '.'}: directory does not exist") from exc
        budget = job.limits.output
        objects: list[dict[str, Any]] = []
        for name in names:
            path = join(rel, name)
            try:
                size = os.path.getsize(job.root / path)
            except OSError as exc:
                raise RenderError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
            if size > budget:
                raise RenderError(f"{rel or '.'}: the manifests are larger than {job.limits.describe('output')}",
                                  limit="output")
            budget -= size
            objects.extend(parse_file(job.root, path, max_bytes=size, limits=job.limits, deadline=job.deadline))
            if len(objects) > job.limits.max_objects:
                raise RenderError(f"{rel or '.'}: refused: more than {job.limits.max_objects:,} objects "
                                  f"({job.limits.describe('max_objects')})", limit="max_objects")
        return objects

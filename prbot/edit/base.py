"""What every editor works with: the command's context and what an editor is.

`EditContext` holds one command's view of the repository: its targets, each target's rendered
objects (rendered once), which other targets read a file (so files other environments read are
never edited; one only the targets this command moves in one environment read is edited once) and
the pending file texts.  An `Editor` moves one image in one target; its `Outcome` says whether the
target uses the image and whether anything changed.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from ruamel.yaml.nodes import Node

from prbot.config import Config
from prbot.edit.rendered import container_images, declared_images
from prbot.edit.transaction import PendingFiles, TargetEdits
from prbot.errors import NotChecked, RenderError, YamlEditError
from prbot.images import ImageRef
from prbot.model import Target
from prbot.remote import Remotes, allowed, vendor
from prbot.render import RenderPool, cache_extra, render_target
from prbot.renderers.closure import ClosureCache
from prbot.targets import discover_targets


@dataclass
class Outcome:
    """What an editor found in one target for one image."""

    used: bool = False          # the target uses (renders or sets) the image
    changed: bool = False       # some file of the target moved to the new version


def version_text(tag: str | None, digest: str | None) -> str:
    """The version part of an image reference: ``:tag``, ``@digest``, both, or nothing."""
    return (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


class EditContext:
    """One command's view of the repository (see the module docstring); shared by every target."""

    def __init__(self, root: Path, config: Config, pool: RenderPool | None = None) -> None:
        self.root = Path(root)
        self.config = config
        self.pool = pool
        self.targets = discover_targets(config, self.root)
        self.files = PendingFiles(self.root)
        self.closures = ClosureCache()
        self._objects: dict[str, list[dict[str, Any]]] = {}
        self._remotes: Remotes | None = None
        # keys of the targets this command edits: a file only they read (one environment's) is
        # edited once, by the first of them; the others find it at the version already
        self.editing: set[str] = set()

    def close(self) -> None:
        """Remove what fetching remote inputs left behind (a command's scratch copies)."""
        if self._remotes is not None:
            self._remotes.close()
            self._remotes = None

    def objects(self, target: Target) -> list[dict[str, Any]]:
        """The target's rendered objects (from the files on disk, rendered once; through `pool`'s
        cache when there is one, keyed as the plan keys them).

        Remote inputs are fetched as a plan fetches them, when `render.remote` allows them; a
        target reading one it does not allow raises NotChecked: whether it uses an image cannot be
        known.
        """
        if target.key not in self._objects:
            closure = self.closures.closure(self.root, target)
            blocked = [r for r in closure.remote if not allowed(r, self.config.render_remote)]
            if blocked:
                raise NotChecked(f"it reads {shown_url(blocked[0])}, a remote input that render.remote "
                                 "in .prbot.yml does not allow")
            remotes = self.remotes() if closure.remote else None
            if self.pool is not None:
                key = self.closures.digest(self.root, closure, cache_extra(target))
                got = self.pool.render_many([(self.root, target, key)], remotes=remotes)[key]
                if isinstance(got, RenderError):
                    raise got
                self._objects[target.key] = got
            else:
                kube = self.config.env(target.env).kubernetes_version
                fetched = {r: vendor(remotes, r) for r in closure.remote} if remotes is not None else None
                self._objects[target.key] = render_target(self.root, target, kube_version=kube, closure=closure,
                                                          remotes=fetched)
        return self._objects[target.key]

    def remotes(self) -> Remotes:
        """The command's fetcher of the remote inputs `render.remote` allows (made when first needed)."""
        if self._remotes is None:
            self._remotes = (Remotes(self.config.render_remote, limits=self.pool.limits) if self.pool is not None
                             else Remotes(self.config.render_remote))
        return self._remotes

    def rendered(self, target: Target) -> dict[str, list[ImageRef]]:
        """The target's container images by repository."""
        return container_images(self.objects(target))

    def declared(self, target: Target) -> dict[str, list[ImageRef]]:
        """The images the target sets, in containers and in GitOps objects, by repository."""
        return declared_images(self.objects(target))

    def _others(self, besides: Target) -> list[Target]:
        """The targets an edit for `besides` must not move unasked: every target but it and the
        others this command edits in its environment."""
        return [t for t in self.targets if t.key != besides.key
                and not (t.key in self.editing and t.env == besides.env)]

    def readers(self, rel: str, besides: Target) -> list[str]:
        """Keys of the other targets whose rendering reads the file (their input closures), but for
        the targets of `besides`'s environment this command edits too."""
        rel = PurePosixPath(os.path.normpath(rel)).as_posix()
        return [t.key for t in self._others(besides) if rel in self.closures.closure(self.root, t).files]

    def value_readers(self, rel: str, besides: Target) -> list[str]:
        """Keys of the other targets that read the file as a values file or as an input of their
        own: a file inside another target's chart directory counts only when that target names it
        in its values (or it is the chart's values.yaml), so ``values-{env}.yaml`` files kept
        beside a shared chart belong to their own environment."""
        rel = PurePosixPath(os.path.normpath(rel)).as_posix()
        readers: list[str] = []
        for t in self._others(besides):
            if rel not in self.closures.closure(self.root, t).files:
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


def shown_url(ref: str) -> str:
    """A remote reference as messages show it: without any user name or password it carries."""
    try:
        parts = urllib.parse.urlsplit(ref)
    except ValueError:
        return ref.rpartition("@")[2]
    if parts.username is None and parts.password is None:
        return ref
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


class Editor(Protocol):
    """Moves one image to `want`'s version in one target's own files, the way a human would.

    Reads and edits through `tx` (nothing reaches the disk until the whole command succeeds);
    raises PrbotError (YamlEditError) with ``FILE:LINE:`` first when a file is to blame.  The
    outcome tells whether the target uses the image at all and whether anything changed.
    """

    def __call__(self, ctx: EditContext, tx: TargetEdits, target: Target, want: ImageRef, /) -> Outcome: ...

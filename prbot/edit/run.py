"""The two commands: `bump` one image in an environment, `promote` one environment's versions into
another.  Each target is edited by its renderer's editor; any error or refusal and no file is
written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prbot.config import Config
from prbot.edit.base import EditContext
from prbot.edit.editors import editor_for
from prbot.edit.transaction import FileEdit, TargetEdits
from prbot.errors import ImageError, NotChecked, PolicyError, PrbotError
from prbot.image_rules import rule_for, tag_refusal, version_refusal
from prbot.images import ImageRef, parse_image, same_repository
from prbot.model import Target
from prbot.render import RenderPool


@dataclass
class EditResult:
    """What a command did, or would have done.

    Files are written only when there is neither an error nor a refusal (all or nothing): then
    `edits` lists what was written; otherwise nothing was written and `edits` lists what would
    have been.  A target that cannot be checked (`unchecked`) blocks nothing: it is named, and
    left as it is.
    """

    edits: list[FileEdit] = field(default_factory=list)
    current: list[str] = field(default_factory=list)   # target keys already at the version
    errors: list[str] = field(default_factory=list)    # one line per failed target, FILE:LINE first
    matched: bool = False                               # some target of the environment uses the image
    refused: list[str] = field(default_factory=list)   # moves the image policy forbids (see --force)
    unchecked: list[tuple[str, str]] = field(default_factory=list)   # (target key, why): could not be
    # checked for the image (a remote input render.remote does not allow); the others are edited

    @property
    def written(self) -> bool:
        """Whether the edits were written (no error, no refusal)."""
        return not self.errors and not self.refused


def _select(ctx: EditContext, env: str, app: str | None) -> list[Target]:
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


def _run_target(ctx: EditContext, result: EditResult, target: Target, wants: list[ImageRef],
                check: Check | None = None) -> None:
    """Edit one target for every wanted image; a failure or a refusal drops its edits and is
    reported (errors as ``FILE:LINE: message (app/env)`` when a file is to blame)."""
    tx = TargetEdits(ctx.files)
    used = changed = False
    try:
        edit = editor_for(target)
        for want in wants:
            outcome = edit(ctx, tx, target, want)
            used |= outcome.used
            changed |= outcome.changed
    except NotChecked as exc:
        result.unchecked.append((target.key, str(exc)))
        return
    except PrbotError as exc:
        result.errors.append(_located(str(exc), target))
        return
    except OSError as exc:
        result.errors.append(f"{target.key}: {exc.strerror or exc}")
        return
    for e in tx.edits:                  # a file of the environment another target already moved
        first = next((p for p in result.edits if p.path == e.path and p.target != target.key
                      and same_repository(p.image, e.image)), None)
        if first is not None:
            result.errors.append(f"{e.path}: {first.target} and {target.key} read it and would set {e.image} "
                                 f"to {first.new} and {e.new}; one file holds one version (--app moves one app)")
            return
    refusals = [f"{target.key}: {e.path}: {e.image} {e.old or '(no tag)'} → {e.new}: {why}"
                for e in tx.edits if check is not None and (why := check(e))]
    result.matched |= used
    if refusals:
        result.refused += refusals
        return
    tx.merge()
    result.edits.extend(tx.edits)
    moved_here = any(e.path in ctx.closures.closure(ctx.root, target).files for e in result.edits)
    if used and not changed and not moved_here:      # not "already current" when this command moved it
        result.current.append(target.key)


def _located(message: str, target: Target) -> str:
    """A target's error, led by the file (and line) to blame when the message names one."""
    head = message.split(": ", 1)[0]
    if "/" in head or head.endswith((".yaml", ".yml", ".json")) or ":" in head:
        return f"{message} ({target.key})"
    return f"{target.key}: {message}"


def _finish(ctx: EditContext, result: EditResult) -> EditResult:
    """Write every edited file, or none: any error or refusal leaves the working tree as it was."""
    if result.written:
        ctx.files.commit()
    return result


def bump(root: Path, config: Config, image: str, env: str, app: str | None = None, *,
         force: bool = False, lower: bool = False, pool: RenderPool | None = None) -> EditResult:
    """Move every target of `env` (or only `app`'s) that uses the image's repository to its version.

    Raises ImageError for a bad reference and PrbotError for an unknown environment or app, or a
    tag the image's `images[].tags` refuses (unless `force`), before anything is read or written.
    Per-target problems are returned in ``errors``; a move to a lower version (as `promote`:
    versions read as Flux reads them, see `prbot.images.parse_semver`) or, under ``policy:
    semver``, to a tag that is no version, in ``refused`` (unless `force`; `lower` allows a lower
    version only: the registry flow under ``policy: pushed``, where the latest push wins).  Files
    are written only when there are neither (all or nothing); a target that cannot be checked for
    the image (`unchecked`: a remote input `render.remote` does not allow) is named and skipped.
    `pool` renders the targets that must be rendered to find the image through its cache (a
    service bumping one base again and again renders each target once).
    """
    want = parse_image(image)
    if want.tag is None and want.digest is None:
        raise ImageError(f"image reference {image!r} names no tag or digest to move to")
    config.env(env)
    rule = rule_for(config, want.name)
    if not force and (why := tag_refusal(rule, want.tag)):
        raise PolicyError(f"refused {want}: {why}; --force bumps anyway")
    semver = rule is not None and rule.policy == "semver"
    check: Check | None = None
    if not force and (semver or not lower):
        def check(e: FileEdit) -> str | None:
            return version_refusal(_tag(e.old), _tag(e.new), semver_policy=semver)
    ctx = EditContext(Path(root), config, pool)
    try:
        result = EditResult()
        chosen = _select(ctx, env, app)
        ctx.editing = {t.key for t in chosen}
        for target in chosen:
            _run_target(ctx, result, target, [want], check)
        return _finish(ctx, result)
    finally:
        ctx.close()


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
    ctx = EditContext(Path(root), config)
    try:
        sources = {t.app: t for t in _select(ctx, from_env, app)}
        dests = {t.app: t for t in _select(ctx, to_env, app)}
        result = EditResult()
        ctx.editing = {dests[name].key for name in set(sources) & set(dests)}

        def check(e: FileEdit) -> str | None:
            return None if force else version_refusal(_tag(e.old), _tag(e.new), semver_policy=False)

        for name in sorted(set(sources) & set(dests)):
            try:
                images = {repo: refs[0] for repo, refs in ctx.declared(sources[name]).items()}
            except NotChecked as exc:
                result.unchecked.append((sources[name].key, str(exc)))
                continue
            except PrbotError as exc:
                result.errors.append(_located(str(exc), sources[name]))
                continue
            wants = [ref for _, ref in sorted(images.items()) if ref.tag or ref.digest]
            if wants:
                _run_target(ctx, result, dests[name], wants, check)
        return _finish(ctx, result)
    finally:
        ctx.close()

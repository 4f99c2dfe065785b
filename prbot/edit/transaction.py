"""File texts edited in memory and written all together, or not at all.

`PendingFiles` holds one command's file texts (read once); `TargetEdits` layers one target's edits
over them and is merged only when that target succeeds; `PendingFiles.commit` writes every changed
file through a temporary file and puts back what it replaced if a write fails.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prbot.errors import ImageError, PrbotError, YamlEditError
from prbot.images import parse_image
from prbot.model import Target
from prbot.yamledit import TextEdit, YamlFile, apply_edits


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


class PendingFiles:
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


class TargetEdits:
    """One target's edits, layered over the command's files; merged only when the target succeeds."""

    def __init__(self, files: PendingFiles) -> None:
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


def _split_ref(ref: str) -> tuple[str, str]:
    try:
        parsed = parse_image(ref)
    except ImageError:
        return ref, ref
    return parsed.name, parsed.version

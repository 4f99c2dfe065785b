"""Cheap questions about a tree, for the sparse plan (`prbot.plan.sparse`): what kind a path is, what
a directory lists, whether a symbolic link is on the way, and which paths a kustomization (and every
one it reaches) can read, without building closures.  `ChangedPaths` says where base and head may
differ.  Which kustomization field holds what is the renderer's knowledge
(`prbot.renderers.kustomize.scan_references`); this module only looks the references up in the tree.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path

from prbot import gitrepo
from prbot.expand import markers
from prbot.model import KUSTOMIZATION_FILES
from prbot.renderers.closure import is_remote_reference
from prbot.renderers.kustomize import CAN_SCAN, scan_references

_PLACEHOLDER = re.compile(r"\{(app|env)\}")           # as in apps[].path patterns (prbot.targets)


class ChangedPaths:
    """Paths where the base and head trees may differ; `touches(p)`: p is one of them, lies below
    one, or holds one."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = {_norm(p) for p in paths}
        self.above: set[str] = set()
        for p in self.paths:
            while p:
                p = p.rpartition("/")[0]
                if p in self.above:
                    break
                self.above.add(p)

    def touches(self, path: str) -> bool:
        path = _norm(path)
        if path in self.paths or path in self.above:
            return True
        while path:
            path = path.rpartition("/")[0]
            if path in self.paths:
                return True
        return False


def _norm(path: str) -> str:
    p = posixpath.normpath(path.strip("/")) if path.strip("/") else ""
    return "" if p == "." else p


class TreeProbe:
    """Cheap questions about the head tree, memoised: the kind of a path ("file", "dir", "missing",
    "link" when a symbolic link is on the way, "other"), and what a kustomization can read without
    building its closure (`scan_kustomization`).  With a `view` (`gitrepo.TreeView`) the answers come
    from git, as a full export at `root` would give them; otherwise from the directory `root`."""

    def __init__(self, root: Path, view: gitrepo.TreeView | None = None) -> None:
        self.root = os.fspath(root)
        self.view = view
        self._preloaded: dict[str, bytes] = {}
        self.can_scan = CAN_SCAN
        self._kinds: dict[str, str] = {"": "dir"}
        self._dirs: dict[str, dict[str, str] | None] = {}
        self._readable: dict[str, bool] = {}
        self._refs: dict[str, bool] = {}
        self._scans: dict[str, tuple[frozenset[str], frozenset[str]] | None] = {}
        self._clean: dict[str, bool] = {}
        self._trees: dict[str, bool] = {}
        self._listings: dict[str, bool] = {}
        self._holds: dict[str, bool] = {}
        self._expands: dict[str, bool] = {}

    def kind(self, rel: str) -> str:
        got = self._kinds.get(rel)
        if got is None:
            parent, _, name = rel.rpartition("/")
            above = self.kind(parent)
            if above == "dir":
                listing = self._listing(parent)
                got = listing.get(name, "missing") if listing is not None else "other"
            else:
                got = "missing" if above in ("file", "missing") else above
            self._kinds[rel] = got
        return got

    def _listing(self, rel: str) -> dict[str, str] | None:
        """name -> kind of every entry of a directory (from the directory entries, no stat)."""
        if rel in self._dirs:
            return self._dirs[rel]
        if self.view is not None:
            self._dirs[rel] = self.view.listing(rel)
            return self._dirs[rel]
        got: dict[str, str] | None = {}
        try:
            with os.scandir(os.path.join(self.root, rel)) as it:
                for entry in it:
                    got[entry.name] = _entry_kind(entry)  # type: ignore[index]
        except OSError:
            got = None
        self._dirs[rel] = got
        return got

    def readable(self, rel: str) -> bool:
        """A regular file this process can read (the digest reads it)."""
        got = self._readable.get(rel)
        if got is None:
            got = self._readable[rel] = self.kind(rel) == "file" and (
                self.view is not None or os.access(os.path.join(self.root, rel), os.R_OK))
        return got

    def scan_kustomization(self, kdir: str) -> tuple[frozenset[str], frozenset[str]] | None:
        """(paths its fields can name, the directories among them) for the kustomization in
        `kdir`; None when a cheap scan cannot vouch for it (no kustomization, invalid YAML, a
        symbolic link, a remote or outside reference, helm charts …).  A superset: every scalar of
        every field that may hold a path counts, as itself and after a ``key=``
        (`prbot.renderers.kustomize.scan_references`)."""
        if kdir in self._scans:
            return self._scans[kdir]
        result = self._scan(kdir)
        self._scans[kdir] = result
        return result

    def _scan(self, kdir: str) -> tuple[frozenset[str], frozenset[str]] | None:
        listing = self._listing(kdir) if self.can_scan and self.kind(kdir) == "dir" else None
        if listing is None:
            return None
        names = []
        for name in KUSTOMIZATION_FILES:
            kind = listing.get(name)
            if kind == "file":
                names.append(name)
            elif kind is not None:
                return None
        if not names:
            return None
        try:
            text = self._read(f"{kdir}/{names[0]}" if kdir else names[0])
        except Exception:  # noqa: BLE001 - any failure to read: the closure decides
            return None
        refs = scan_references(text)
        if refs is None:
            return None
        paths: set[str] = {kdir}
        dirs: set[str] = set()
        for ref in refs:
            if self._unsafe_ref(ref):
                return None
            if ref[0] == "." or "/." in ref or "//" in ref or ref[-1] == "/":
                rel = posixpath.normpath(f"{kdir}/{ref}" if kdir else ref)
                if rel == ".":
                    rel = ""
                elif rel == ".." or rel.startswith("../"):
                    return None
            else:
                rel = f"{kdir}/{ref}" if kdir else ref
            kind = self.kind(rel)
            if kind == "dir":
                dirs.add(rel)
            elif kind != "missing" and not self.readable(rel):
                return None
            paths.add(rel)
        return frozenset(paths), frozenset(dirs)

    def _read(self, rel: str) -> bytes:
        if self.view is not None:
            got = self._preloaded.pop(rel, None)
            return got if got is not None else self.view.read(rel)
        with open(os.path.join(self.root, rel), "rb") as fh:
            return fh.read()

    def _unsafe_ref(self, ref: str) -> bool:
        """A reference kustomize would fetch remotely, an absolute path, or no path at all."""
        got = self._refs.get(ref)
        if got is None:
            got = self._refs[ref] = (is_remote_reference(ref) or posixpath.isabs(ref) or os.path.isabs(ref)
                                     or "\0" in ref)
        return got

    def prefetch(self, kdir: str) -> None:
        """Scan a kustomization and every one it reaches (no changed paths needed yet)."""
        pending = [kdir]
        while pending:
            scan = self.scan_kustomization(pending.pop())
            if scan is not None:
                pending.extend(d for d in scan[1] if d not in self._scans)

    def prefetch_all(self, kdirs: Iterable[str]) -> None:
        """`prefetch` of many kustomizations, level by level; with a view, each level's files are
        read from git at once (one process, not one round trip per file)."""
        pending = [k for k in dict.fromkeys(kdirs) if k not in self._scans]
        while pending:
            if self.view is not None:
                files = []
                for kdir in pending:
                    listing = self._listing(kdir) if self.kind(kdir) == "dir" else None
                    name = next((n for n in KUSTOMIZATION_FILES if listing and listing.get(n) == "file"), None)
                    if name is not None:
                        files.append(f"{kdir}/{name}" if kdir else name)
                self._preloaded.update(self.view.read_many(files))
            found: dict[str, None] = {}
            resources: dict[str, None] = {}
            for kdir in pending:
                scan = self.scan_kustomization(kdir)
                if scan is not None:
                    found.update((d, None) for d in sorted(scan[1]) if d not in self._scans)
                    resources.update((p, None) for p in scan[0] - scan[1] if p not in self._expands)
            if self.view is not None:
                # what `_may_expand` will ask of these files, answered from one batch read
                files = [p for p in resources if self.kind(p) == "file"]
                pattern = _marker_pattern(markers())
                for rel, data in self.view.read_many(files).items():
                    self._expands[rel] = pattern.search(data) is not None
            pending = list(found)

    def kustomization_clean(self, kdir: str, involved: ChangedPaths, stack: tuple[str, ...] = ()) -> bool:
        """Whether the kustomization in `kdir`, and every one it can reach, avoid `involved`."""
        got = self._clean.get(kdir)
        if got is not None:
            return got
        if kdir in stack:
            return False                      # a cycle: let the closure report it
        scan = self.scan_kustomization(kdir)
        ok = scan is not None and not any(involved.touches(p) for p in scan[0]) and all(
            self.kustomization_clean(d, involved, (*stack, kdir)) for d in sorted(scan[1])) and \
            not any(self._may_expand(p) for p in sorted(scan[0] - scan[1]))
        self._clean[kdir] = ok
        return ok

    def _may_expand(self, rel: str) -> bool:
        """A file holding an object the cluster would expand (a HelmRelease …): what it reads is
        beyond the scan, so only the closure can vouch for the target (`prbot.expand`)."""
        got = self._expands.get(rel)
        if got is None:
            got = False
            if self.kind(rel) == "file":
                try:
                    got = _marker_pattern(markers()).search(self._read(rel)) is not None
                except Exception:  # noqa: BLE001 - unreadable: the closure decides
                    got = True
            self._expands[rel] = got
        return got

    def discovery_meets_links(self, patterns: Iterable[str]) -> bool:
        """Whether discovering targets with these `apps[].path` patterns may pass a symbolic link
        (a literal segment naming one: discovery follows those, and what lies behind a link is
        not below it as far as changed paths go).  Placeholder segments match directories only."""
        for pattern in patterns:
            segments = [seg for seg in pattern.strip("/").split("/") if seg]
            prefixes = [""]
            for i, segment in enumerate(segments):
                if segment in (".", ".."):
                    return True
                found: list[str] = []
                for rel in prefixes:
                    if _PLACEHOLDER.search(segment):
                        if i == len(segments) - 1:
                            continue              # the targets themselves: never links
                        listing = self._listing(rel) or {}
                        found.extend(_join(rel, name) for name, kind in listing.items() if kind == "dir")
                    else:
                        kind = self.kind(_join(rel, segment))
                        if kind not in ("dir", "missing", "file"):
                            return True
                        if kind == "dir":
                            found.append(_join(rel, segment))
                prefixes = found
        return False

    def tree_suspicious(self, rel: str) -> bool:
        """A directory read whole (a chart) holding a symbolic link, something neither file nor
        directory, something unreadable, or no file at all."""
        got = self._trees.get(rel)
        if got is None:
            if self.view is not None:
                kinds = [kind for _path, kind in self.view.walk(rel)]
                got = any(k in ("link", "other") for k in kinds) or "file" not in kinds
            else:
                got = _tree_suspicious(os.path.join(self.root, rel))
            self._trees[rel] = got
        return got

    def listing_has_links(self, rel: str) -> bool:
        got = self._listings.get(rel)
        if got is None and self.view is not None:
            listing = self.view.listing(rel)
            got = self._listings[rel] = listing is None or "link" in listing.values()
        if got is None:
            try:
                with os.scandir(os.path.join(self.root, rel)) as it:
                    got = any(e.is_symlink() for e in it)
            except OSError:
                got = True
            self._listings[rel] = got
        return got

    def holds_file(self, rel: str) -> bool:
        """Whether a directory holds a file somewhere below it (so it exists in a git tree)."""
        got = self._holds.get(rel)
        if got is None and self.view is not None:
            got = self._holds[rel] = any(kind in ("file", "link") for _path, kind in self.view.walk(rel))
        if got is None:
            got = False
            pending = [os.path.join(self.root, rel)]
            while pending and not got:
                try:
                    with os.scandir(pending.pop()) as it:
                        for entry in it:
                            if entry.is_file(follow_symlinks=False) or entry.is_symlink():
                                got = True
                                break
                            if entry.is_dir(follow_symlinks=False):
                                pending.append(entry.path)
                except OSError:
                    continue
            self._holds[rel] = got
        return got


@functools.lru_cache(maxsize=4)
def _marker_pattern(found: tuple[bytes, ...]) -> re.Pattern[bytes]:
    """One search for any of the expanders' markers (`prbot.expand.markers`)."""
    return re.compile(b"|".join(re.escape(m) for m in found)) if found else re.compile(b"(?!)")


def _tree_suspicious(top: str) -> bool:
    files = 0
    pending = [top]
    try:
        while pending:
            with os.scandir(pending.pop()) as it:
                for entry in it:
                    if entry.name == ".git":           # skipped by closures as well
                        continue
                    kind = _entry_kind(entry)
                    if kind == "dir":
                        pending.append(entry.path)
                    elif kind == "file":
                        files += 1
                    else:
                        return True
    except OSError:
        return True
    return files == 0


def _entry_kind(entry: os.DirEntry[str]) -> str:
    try:
        if entry.is_symlink():
            return "link"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        return "file" if entry.is_file(follow_symlinks=False) else "other"
    except OSError:
        return "other"


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a else b


"""Git revisions for the plan engine: resolve, diff, read and export trees without touching the user's
working tree, index or HEAD.

Every call runs ``git`` with an argv list (never a shell) in the directory given as ``repo``.  That
directory may be the top of a work tree or a sub-directory of one (a GitOps repo inside a monorepo):
paths are always relative to ``repo``, and exported trees hold only what lies below it.

Exporting a revision (`materialize`) reads the commit's tree into a throw-away index file and checks
it out with ``git checkout-index`` into a temporary directory: nothing is written to ``.git`` (unlike
``git worktree add``), and files are written by git itself (several times faster than extracting
``git archive`` in Python, which also drops ``export-ignore`` files).

A revision can also be exported in part (`materialize(..., paths=...)`, `PartialTree`):
only the files a caller names — or that lie below the directories it names — are
written, so the cost follows what is needed rather than the size of the repository.  Symbolic links
met on the way are followed (their targets are written too) so that paths resolve as they would in
a full export.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tempfile
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prbot.errors import GitError
from prbot.limits import Limits, format_size
from prbot.timing import clocked, timed

GIT_TIMEOUT = 300           # seconds; local operations only
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
# Variables a calling git (e.g. a hook) may have set that would redirect our commands elsewhere.
_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR",
                  "GIT_NAMESPACE")


def resolve(repo: Path, rev: str) -> str:
    """The full commit sha `rev` names in `repo`; GitError "unknown revision 'x'" when none."""
    return _locate(repo, rev)[1]


def tree_of(repo: Path, rev: str) -> str:
    """The sha of the tree of commit `rev` (equal trees: equal contents)."""
    sha = resolve(repo, rev)
    return _git(repo, "rev-parse", "--verify", "--quiet", f"{sha}^{{tree}}").stdout.decode().strip()


def origin_url(repo: Path) -> str | None:
    """The URL of the `origin` remote of `repo` (None when it has none)."""
    try:
        got = _git(repo, "config", "--get", "remote.origin.url", ok=(0, 1)).stdout.decode().strip()
    except (GitError, UnicodeDecodeError):
        return None
    return got or None


def head_sha(repo: Path) -> str:
    """The commit checked out in `repo`."""
    return resolve(repo, "HEAD")


def merge_base(repo: Path, a: str, b: str) -> str:
    """The best common ancestor of `a` and `b` (what a pull request's diff starts from)."""
    sa, sb = resolve(repo, a), resolve(repo, b)
    out = _git(repo, "merge-base", sa, sb, ok=(0, 1))
    sha = out.stdout.decode().strip()
    if out.returncode != 0 or not sha:
        raise GitError(f"{_show(a)} and {_show(b)} have no common history in {repo}")
    return sha


def is_dirty(repo: Path) -> bool:
    """True when `repo` has uncommitted changes or untracked files that are not ignored."""
    out = _git(repo, "status", "--porcelain", "-z", "--untracked-files=normal", "--", ".")
    return bool(out.stdout.strip(b"\0"))


def changed_paths(repo: Path, base: str, head: str | None) -> set[str]:
    """Paths (relative to `repo`, POSIX) whose content differs between `base` and `head`.

    `head` None means the working tree as it is: committed, staged and unstaged changes plus
    untracked files that are not ignored (what ``git diff BASE`` and ``git status`` show).  A rename
    counts as a deletion of the old path and an addition of the new one: both are listed.
    """
    base_sha = resolve(repo, base)
    diff = ("diff", "--name-only", "-z", "--no-renames", "--relative", "--no-color", "--no-ext-diff",
            "--no-textconv", base_sha)
    if head is not None:
        return _split_z(_git(repo, *diff, resolve(repo, head)).stdout)
    # `git diff` refreshes stat data in the index it reads and writes it back, taking index.lock:
    # give it a private copy so the user's index is never locked or rewritten.
    index = _git(repo, "rev-parse", "--git-path", "index").stdout.decode(errors="surrogateescape")
    with _private_index(Path(repo) / index.rstrip("\n")) as env:
        options = ("-c", "core.splitIndex=false")
        paths = _split_z(_git(repo, *diff, env=env, options=options).stdout)
        untracked = _git(repo, "ls-files", "-z", "--others", "--exclude-standard", env=env,
                         options=options).stdout
    return paths | {p.rstrip("/") for p in _split_z(untracked)}


def read_file(repo: Path, rev: str, path: str) -> bytes | None:
    """The bytes of `path` (relative to `repo`) at `rev`; None when no such file exists there."""
    rel = _clean_path(path)
    prefix, sha = _locate(repo, rev)
    if rel is None:
        return None
    out = _git(repo, "cat-file", "--batch", input=os.fsencode(f"{sha}:{prefix}{rel}\n"))
    header, _, rest = out.stdout.partition(b"\n")
    fields = header.split()
    if len(fields) == 3 and fields[1] == b"blob":
        return rest[:int(fields[2])]
    return None                           # missing, or a directory / submodule there


@contextmanager
def materialize(repo: Path, rev: str | None, paths: Iterable[str] | None = None, *,
                untracked: bool = False) -> Iterator[Path]:
    """A directory holding `repo` at `rev`; `rev` None: the working tree's tracked files as they are
    on disk (and, with `untracked`, the untracked files git does not ignore) — never anything under
    ``.git``, never an ignored file (`worktree_export`).

    A revision is exported into a fresh temporary directory, removed on exit whatever happens.  The
    user's working tree, index, HEAD and ``.git`` are left untouched.  With `paths` (repo-relative),
    only those files and the files below those directories are written (see `PartialTree.add`, which
    adds more later).  `paths` is ignored for the working tree.
    """
    if rev is None:
        with worktree_export(repo, untracked=untracked) as out:
            yield out
        return
    if paths is not None:
        with partial_tree(repo, rev) as part:
            part.add(paths)
            yield part.root
        return
    prefix, sha = _locate(repo, rev)
    scratch = Path(tempfile.mkdtemp(prefix=f"prbot-{sha[:12]}-"))
    try:
        out = scratch / "tree"
        out.mkdir()
        env = {"GIT_INDEX_FILE": str(scratch / "index")}
        source = f"{sha}:{prefix}" if prefix else f"{sha}^{{tree}}"
        if not prefix or _git(repo, "cat-file", "-t", source, ok=(0, 128)).stdout.strip() == b"tree":
            listing = _git(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", source).stdout
            _refuse_large(sha, sum(int(fields[3]) for entry in listing.split(b"\0") if entry
                                   for fields in [entry.split(b"\t", 1)[0].split()]
                                   if len(fields) == 4 and fields[1] == b"blob"), 0)
            _git(repo, "read-tree", source, env=env)
            _git(repo, "checkout-index", "--all", "--force", env=env,
                 options=("--work-tree", str(out), "-c", "core.fsmonitor=false"))
        # else: repo's directory does not exist at that revision, so its tree is empty
        yield out
    finally:
        _remove_tree(scratch)


def _refuse_large(what: str, size: int, before: int) -> None:
    """GitError when exporting `size` more bytes (after `before`) of `what` (a commit sha, or "the
    working tree") would go over the operator's tree size limit (`PRBOT_TREE_SIZE`): a revision's
    files are a pull request's input."""
    limits = Limits.from_env()
    if before + size > limits.tree_size:
        what = what[:12] if _SHA.fullmatch(what) else what
        raise GitError(f"refused: the files of {what} the plan needs hold {format_size(before + size)}, "
                       f"more than {limits.describe('tree_size')}")


def snapshot_worktree(repo: Path, *, untracked: bool = False) -> tuple[str, bool]:
    """(a commit holding the working tree as a plan may read it, whether it differs from HEAD).

    The tracked files with their content on disk (deleted ones left out) and, with `untracked`, the
    untracked files ``.gitignore`` does not exclude, are added to a private copy of the index and
    written as a commit object (as ``git stash create`` does): no ref, index, HEAD or working-tree
    file of the user changes, and the commit is unreachable (git's gc drops it).  Nothing of
    ``.git`` and no ignored file is in it; a symbolic link is a link, and a tracked path reached
    through a linked directory is gone (git does not follow links).  A plan then reads the working
    tree exactly as it reads a commit: sparsely, from git's tree."""
    top = _git(repo, "rev-parse", "--show-toplevel").stdout.decode(errors="surrogateescape").strip()
    index_path = _git(repo, "rev-parse", "--git-path", "index").stdout.decode(errors="surrogateescape").strip()
    head = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}", ok=(0, 1)).stdout.decode().strip()
    with _private_index(Path(repo) / index_path) as env:
        _git(Path(top), "add", "--all" if untracked else "--update", "--ignore-errors", "--", ":/",
             env=env, ok=(0, 1), options=("-c", "core.splitIndex=false"))
        tree = _git(Path(top), "write-tree", env=env).stdout.decode().strip()
    ident = {"GIT_AUTHOR_NAME": "prbot", "GIT_AUTHOR_EMAIL": "prbot@localhost", "GIT_COMMITTER_NAME": "prbot",
             "GIT_COMMITTER_EMAIL": "prbot@localhost", "GIT_AUTHOR_DATE": "1970-01-01T00:00:00Z",
             "GIT_COMMITTER_DATE": "1970-01-01T00:00:00Z"}
    parent = ("-p", head) if head else ()
    commit = _git(Path(top), "commit-tree", tree, *parent, "-m", "prbot: the working tree", env=ident).stdout
    dirty = not head or _git(repo, "rev-parse", f"{head}^{{tree}}").stdout.decode().strip() != tree
    return commit.decode().strip(), dirty


@contextmanager
def worktree_export(repo: Path, *, untracked: bool = False) -> Iterator[Path]:
    """The working tree as a plan may read it, in a temporary directory: the files git tracks, with
    their content on disk (uncommitted changes included, deleted files left out), symbolic links as
    links; with `untracked`, also the untracked files ``.gitignore`` does not exclude.  Nothing of
    ``.git`` (where a CI checkout keeps its token) and no ignored file (``.env``) is there, so no link
    in a PR can lead a render to them; a path on disk that leaves the checkout through a linked
    directory is left out too.  Files are hard-linked where the filesystem allows, else copied."""
    _git(repo, "rev-parse", "--git-dir")              # a clear error when repo is no repository
    top = os.path.realpath(repo)
    git_dir = os.path.realpath(os.path.join(repo, _git(repo, "rev-parse", "--git-dir").stdout.decode().strip()))
    listing = _git(repo, "ls-files", "-z", "--cached", "-s").stdout
    names: list[str] = []
    for record in listing.split(b"\0"):
        if record:
            info, _, raw = record.partition(b"\t")
            if not info.startswith(_GITLINK.encode()):        # a submodule is not exported
                names.append(os.fsdecode(raw))
    if untracked:
        names += [os.fsdecode(n) for n in _git(repo, "ls-files", "-z", "--others", "--exclude-standard")
                  .stdout.split(b"\0") if n]
    scratch = Path(tempfile.mkdtemp(prefix="prbot-worktree-"))
    out = scratch / "tree"
    out.mkdir()
    try:
        link = True
        exported = 0
        for name in dict.fromkeys(names):
            src = os.path.join(repo, name)
            parent = os.path.realpath(os.path.dirname(src))
            if not (parent == top or parent.startswith(top + os.sep)) or \
                    parent == git_dir or parent.startswith(git_dir + os.sep):
                continue                              # reached through a linked directory: not ours
            dest = out / name
            try:
                st = os.lstat(src)
            except OSError:
                continue                              # deleted in the working tree
            dest.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dest)
            elif stat.S_ISREG(st.st_mode):
                _refuse_large("the working tree", st.st_size, exported)
                exported += st.st_size
                if link:
                    try:
                        os.link(src, dest)
                        continue
                    except OSError:
                        link = False                  # another filesystem: copy from now on
                shutil.copy2(src, dest)
        yield out
    finally:
        _remove_tree(scratch)


_SYMLINK, _GITLINK, _TREE = "120000", "160000", "040000"
_MISSING: Any = object()
_MAX_PATHSPECS = 64 * 1024      # bytes of paths on one ls-tree command line; more: list everything


class PartialTree:
    """`repo` at `rev`, written into the directory `root` only where asked (`add`).

    Only the parts of the revision's tree that requests name are listed (``git ls-tree`` with those
    paths); files are written by ``git checkout-index`` from a private index file in `scratch`
    (which must exist and is the caller's to remove), so content filters and line-ending attributes
    apply exactly as in a full export.  Nothing of the user's repository changes.  Not thread-safe.
    """

    def __init__(self, repo: Path, rev: str, root: Path, scratch: Path) -> None:
        self.repo = Path(repo)
        prefix, self.sha = _locate(self.repo, rev)
        self._source = f"{self.sha}:{prefix}" if prefix else f"{self.sha}^{{tree}}"
        self._empty: bool | None = None if prefix else False   # repo's directory missing at rev
        self.root = Path(root)
        self._index = str(Path(scratch) / "partial-index")
        # what is known of the tree: path -> (mode, object id), None when there is no such path
        self._known: dict[str, tuple[str, str] | None] = {"": ("040000", "")}
        self._files: list[str] = []         # known non-directory paths, sorted
        self._listed: set[str] = set()      # directories listed with everything below them
        self._requested: set[str] = set()
        self._written: set[str] = set()
        self._indexed: set[str] = set()
        self._targets: dict[str, str] = {}
        self._bytes = 0                     # bytes of the files written (counted against PRBOT_TREE_SIZE)

    @property
    def written(self) -> frozenset[str]:
        """Every path written so far."""
        return frozenset(self._written)

    @clocked("export")
    def add(self, paths: Iterable[str], *, keep_existing: bool = False) -> list[str]:
        """Write these repo-relative files and every file below these directories ("" or "." is
        everything); paths that do not exist at the revision are skipped silently, as are paths
        leaving the repository.  A symbolic link written, or met as a parent directory of a path,
        is followed: what it points to (inside the repository) is written too.  With `keep_existing`,
        paths already present in `root` are not written again.  Returns the paths written by this
        call, sorted."""
        queue = [rel for rel in map(_request_path, paths) if rel is not None]
        selected: list[str] = []
        while queue:
            batch = [rel for rel in dict.fromkeys(queue) if rel not in self._requested]
            queue = []
            self._requested.update(batch)
            self._list(batch)
            for rel in batch:
                parent = self._non_dir_parent(rel)
                if parent is not None:
                    # below a file or submodule: nothing is there (as in a full export); below a
                    # symbolic link: the link, and the path it leads to
                    if self._known[parent][0] == _SYMLINK:       # type: ignore[index]
                        target, links = self._resolve_link(parent)
                        selected.extend(links)
                        rest = rel[len(parent) + 1:]
                        if target is not None:
                            queue.append(f"{target}/{rest}" if target else rest)
                    continue
                entry = self._known.get(rel)
                if entry is None:
                    continue
                if entry[0] == _TREE:
                    start = 0 if rel == "" else bisect_left(self._files, rel + "/")
                    end = len(self._files) if rel == "" else bisect_left(self._files, rel + "0")
                    names = self._files[start:end]
                else:
                    names = [rel]
                for name in names:
                    if name not in self._written:
                        selected.append(name)
                        if self._known[name][0] == _SYMLINK:     # type: ignore[index]
                            target, links = self._resolve_link(name)
                            selected.extend(links)
                            if target is not None:
                                queue.append(target)
        new = sorted({n for n in selected if n not in self._written})
        if keep_existing:
            self._written.update(n for n in new if os.path.lexists(os.path.join(self.root, n)))
            new = [n for n in new if n not in self._written]
        if new:
            self._checkout(new)
        return new

    # ---------------------------------------------------------------- listing
    def _list(self, rels: list[str]) -> None:
        """Learn what `rels` are at the revision, everything below those that are directories, the
        directories on the way, and the .gitattributes files that apply to them."""
        if self._empty is None:
            kind = _git(self.repo, "cat-file", "-t", self._source, ok=(0, 128)).stdout.strip()
            self._empty = kind != b"tree"
        if self._empty:
            self._known.update((rel, None) for rel in rels if rel)
            self._listed.add("")
            return
        specs: set[str] = set()
        for rel in rels:
            if not self._covered(rel):
                specs.add(rel)
            parts = rel.split("/") if rel else []
            for i in range(len(parts)):
                attrs = "/".join((*parts[:i], ".gitattributes"))
                if attrs not in self._known:
                    specs.add(attrs)
        if "" in specs or sum(len(p) + 1 for p in specs) > _MAX_PATHSPECS:
            self._record(self._ls_tree(True, ()))       # everything (also: too long a command line)
            specs.add("")
        elif specs:
            self._record(self._ls_tree(True, sorted(specs)))
        for rel in specs:
            entry = self._known.get(rel)
            if entry is not None and entry[0] == _TREE:
                self._listed.add(rel)
        # a path not found: is a directory on its way missing, or a file / link / submodule?
        unsure: set[str] = set()
        for rel in rels:
            parts = rel.split("/") if rel else []
            for i in range(1, len(parts)):
                step = "/".join(parts[:i])
                entry = self._known.get(step, _MISSING)
                if entry is _MISSING:
                    unsure.add(step)
                if entry is _MISSING or entry is None or entry[0] != _TREE:
                    break
        if unsure and "" not in self._listed:
            if sum(len(p) + 1 for p in unsure) <= _MAX_PATHSPECS:
                self._record(self._ls_tree(False, sorted(unsure)))
            else:
                self._record(self._ls_tree(True, ()))
                self._listed.add("")
        for rel in (*sorted(unsure), *rels, *specs):
            if rel not in self._known and self._settled(rel):
                self._known[rel] = None
        self._files = sorted(p for p, e in self._known.items() if e is not None and e[0] != _TREE)

    def _covered(self, rel: str) -> bool:
        """Nothing more to learn about `rel`: it lies in a directory listed whole, or it (or a
        directory on its way) is known to be missing or not a directory."""
        path = rel
        while True:
            if path in self._listed:
                return True
            entry = self._known.get(path, _MISSING)
            if entry is not _MISSING and (entry is None or entry[0] != _TREE):
                return True
            if not path:
                return False
            path = path.rpartition("/")[0]

    def _settled(self, rel: str) -> bool:
        """Every directory on the way to `rel` is known (so `rel` would have been listed)."""
        if "" in self._listed:
            return True
        parent = rel
        while parent:
            parent = parent.rpartition("/")[0]
            entry = self._known.get(parent, _MISSING)
            if entry is _MISSING or entry is None or entry[0] != _TREE:
                return entry is not _MISSING
        return True

    def _ls_tree(self, recursive: bool, paths: Sequence[str]) -> bytes:
        flags = ("-r", "-t") if recursive else ()
        return _git(self.repo, "ls-tree", "-z", "--full-tree", *flags, self._source,
                    *(("--", *paths) if paths else ()), options=("--literal-pathspecs",)).stdout

    def _record(self, listing: bytes) -> None:
        for record in listing.split(b"\0"):
            if record:
                info, _, name = record.partition(b"\t")
                mode, _kind, oid = info.decode().split(" ")
                self._known[os.fsdecode(name)] = (mode, oid)

    def _non_dir_parent(self, rel: str) -> str | None:
        """The proper parent of `rel` that is a file, symbolic link or submodule, if any."""
        parts = rel.split("/")
        for i in range(1, len(parts)):
            entry = self._known.get("/".join(parts[:i]))
            if entry is None:
                return None
            if entry[0] != _TREE:
                return "/".join(parts[:i])
        return None

    def _resolve_link(self, link: str) -> tuple[str | None, list[str]]:
        """(the repo-relative path the symbolic link `link` leads to, every link met on the way,
        `link` included), resolved component by component as the operating system does (a ``..``
        after a link goes up from the link's target); the path is None when the way leaves the
        repository or loops."""
        met = [link]
        parts = [*link.split("/")[:-1], *self._link_text(link).split("/")]
        resolved: list[str] = []
        budget = 40                               # as SYMLOOP_MAX
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                here = self._known.get("/".join(resolved)) if resolved else None
                if here is None or here[0] != _TREE:
                    return None, met              # leaves the repository, or no directory to go up from
                # the system walks through the directory to go up from it: it must exist (git
                # writes no empty directories, so make it)
                os.makedirs(os.path.join(self.root, *resolved), exist_ok=True)
                resolved.pop()
                continue
            step = "/".join((*resolved, part))
            if step not in self._known:
                self._record(self._ls_tree(False, [step]))
                self._known.setdefault(step, None)
            entry = self._known[step]
            if entry is None or entry[0] != _SYMLINK:
                resolved.append(part)
                continue
            budget -= 1
            text = self._link_text(step)
            if budget < 0 or text.startswith("/"):
                return None, met
            met.append(step)
            parts[:0] = text.split("/")               # relative to the directory holding the link
        return "/".join(resolved), met

    def _link_text(self, link: str) -> str:
        """What a symbolic link entry holds ("/" when it cannot name a path in the repository)."""
        if link not in self._targets:
            text = os.fsdecode(_git(self.repo, "cat-file", "blob", self._known[link][1]).stdout)  # type: ignore[index]
            self._targets[link] = text if text and "\0" not in text else "/"
        return self._targets[link]

    # ---------------------------------------------------------------- writing
    def _checkout(self, names: list[str]) -> None:
        oids = [self._known[n][1] for n in names if self._known[n][0] not in (_TREE, _GITLINK)]  # type: ignore[index]
        sizes = _git(self.repo, "cat-file", "--batch-check=%(objectsize)",
                     input="".join(f"{oid}\n" for oid in oids).encode()).stdout.split() if oids else []
        size = sum(int(s) for s in sizes if s.isdigit())
        _refuse_large(self.sha, size, self._bytes)
        self._bytes += size
        env = {"GIT_INDEX_FILE": self._index}
        # the index also holds the .gitattributes files that apply, so checkout converts exactly as
        # a full export does (git reads attributes from the index first when checking out)
        attrs = [p for p, e in self._known.items() if e is not None and posixpath.basename(p) == ".gitattributes"]
        info = b"".join(os.fsencode(f"{self._known[n][0]} {self._known[n][1]}\t{n}") + b"\0"  # type: ignore[index]
                        for n in dict.fromkeys((*attrs, *names)) if n not in self._indexed)
        if info:
            _git(self.repo, "update-index", "-z", "--index-info", env=env, input=info)
            self._indexed.update(attrs)
            self._indexed.update(names)
        self.root.mkdir(parents=True, exist_ok=True)
        _git(self.repo, "checkout-index", "-z", "--stdin", "--force", env=env,
             input=b"".join(os.fsencode(n) + b"\0" for n in names),
             options=("--work-tree", str(self.root), "-c", "core.fsmonitor=false"))
        self._written.update(names)


@contextmanager
def partial_tree(repo: Path, rev: str) -> Iterator[PartialTree]:
    """A `PartialTree` of `repo` at `rev` in a fresh temporary directory (empty until `add`),
    removed on exit whatever happens."""
    scratch = Path(tempfile.mkdtemp(prefix="prbot-partial-"))
    try:
        tree = scratch / "tree"
        tree.mkdir()
        yield PartialTree(repo, rev, tree, scratch)
    finally:
        _remove_tree(scratch)


class TreeViewUnsure(Exception):
    """A question about a `TreeView` whose answer on disk would depend on more than the tree (a
    symbolic link to follow): ask the exported tree instead."""


_KINDS = {_TREE: "dir", "100644": "file", "100755": "file", _SYMLINK: "link", _GITLINK: "other"}


class TreeView:
    """`repo` at `rev` as git holds it: listings, kinds and file contents, read without writing
    anything (one ``ls-tree`` of the whole tree, blobs through one ``cat-file --batch``).

    Its answers are those a full export (`materialize`) would give on disk, as long as `vouches`:
    no submodule, no attribute file and no configuration that converts contents (then bytes on
    disk may differ from the blobs).  Symbolic links are reported as links, never followed;
    `is_dir` / `is_file` raise `TreeViewUnsure` when a link is on the way.  Not thread-safe;
    `close` (or the `tree_view` context manager) ends the reader process."""

    def __init__(self, repo: Path, rev: str) -> None:
        self.repo = Path(repo)
        prefix, self.sha = _locate(self.repo, rev)
        source = f"{self.sha}:{prefix}" if prefix else f"{self.sha}^{{tree}}"
        self._entries: dict[str, tuple[str, str]] = {}
        self._children: dict[str, dict[str, str]] = {"": {}}
        kind = _git(self.repo, "cat-file", "-t", source, ok=(0, 128)).stdout.strip() if prefix else b"tree"
        if kind == b"tree":
            listing = _git(self.repo, "ls-tree", "-r", "-t", "-z", "--full-tree", source).stdout
            for record in listing.split(b"\0"):
                if not record:
                    continue
                info, _, raw = record.partition(b"\t")
                mode, _kind, oid = info.decode().split(" ")
                name = os.fsdecode(raw)
                self._entries[name] = (mode, oid)
                parent, _, base = name.rpartition("/")
                self._children.setdefault(parent, {})[base] = mode
                if mode == _TREE:
                    self._children.setdefault(name, {})
        self.reason = self._unsafe()
        self._reader: subprocess.Popen[bytes] | None = None

    @property
    def vouches(self) -> bool:
        return self.reason is None

    def _unsafe(self) -> str | None:
        for name, (mode, _oid) in self._entries.items():
            if mode == _GITLINK:
                return f"a submodule ({name})"
            if posixpath.basename(name) == ".gitattributes":
                return f"an attribute file ({name})"
        attributes = _git(self.repo, "rev-parse", "--git-path", "info/attributes").stdout.decode().strip()
        if (self.repo / attributes).exists() or _converts(self.repo):
            return "git may convert file contents (attributes, core.autocrlf)"
        symlinks = _git(self.repo, "config", "--bool", "core.symlinks", ok=(0, 1)).stdout.strip()
        if symlinks == b"false":
            return "core.symlinks is false"
        return None

    # ---------------------------------------------------------------- questions
    def mode(self, rel: str) -> str | None:
        """The git mode of `rel` ("040000" for a directory), None when nothing is there."""
        return _TREE if rel == "" else (self._entries[rel][0] if rel in self._entries else None)

    def listing(self, rel: str) -> dict[str, str] | None:
        """name -> "dir" | "file" | "link" | "other" of a directory's entries; None when `rel` is
        no directory."""
        children = self._children.get(rel)
        if children is None:
            return None
        return {name: _KINDS.get(mode, "other") for name, mode in children.items()}

    def walk(self, rel: str) -> Iterator[tuple[str, str]]:
        """(path, kind) of everything below the directory `rel`."""
        prefix = f"{rel}/" if rel else ""
        for name, (mode, _oid) in self._entries.items():
            if name.startswith(prefix):
                yield name, _KINDS.get(mode, "other")

    def read(self, rel: str) -> bytes:
        """The contents of the file `rel` (OSError when it is no file)."""
        entry = self._entries.get(rel)
        if entry is None or _KINDS.get(entry[0]) != "file":
            raise FileNotFoundError(rel)
        if self._reader is None:
            env = {k: v for k, v in os.environ.items() if k not in _LOCATION_VARS}
            self._reader = subprocess.Popen(["git", "-C", str(self.repo), "cat-file", "--batch"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, env=env)
        assert self._reader.stdin is not None and self._reader.stdout is not None
        self._reader.stdin.write(entry[1].encode() + b"\n")
        self._reader.stdin.flush()
        header = self._reader.stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            raise OSError(f"cannot read {rel} from git")
        data = self._reader.stdout.read(int(header[2]) + 1)
        return data[:-1]

    def read_many(self, rels: Iterable[str]) -> dict[str, bytes]:
        """The contents of these files (those that are files), read by one ``cat-file --batch``."""
        wanted: dict[str, str] = {}
        for rel in rels:
            entry = self._entries.get(rel)
            if entry is not None and _KINDS.get(entry[0]) == "file":
                wanted[rel] = entry[1]
        if not wanted:
            return {}
        out = _git(self.repo, "cat-file", "--batch", input="".join(f"{oid}\n" for oid in wanted.values()).encode())
        data, pos, got = out.stdout, 0, {}
        for rel in wanted:
            end = data.index(b"\n", pos)
            header = data[pos:end].split()
            pos = end + 1
            if len(header) == 3 and header[1] == b"blob":
                size = int(header[2])
                got[rel] = data[pos:pos + size]
                pos += size + 1
        return got

    def _through(self, rel: str) -> str | None:
        """The mode of `rel` (None: missing); TreeViewUnsure when a link is on the way."""
        parts = rel.split("/") if rel else []
        for i in range(1, len(parts)):
            mode = self.mode("/".join(parts[:i]))
            if mode is None or mode in ("100644", "100755", _GITLINK):
                return None
            if mode == _SYMLINK:
                raise TreeViewUnsure(rel)
        mode = self.mode(rel)
        if mode == _SYMLINK:
            raise TreeViewUnsure(rel)
        return mode

    # the questions target discovery asks (prbot.targets.TreeReader)
    def list_dirs(self, rel: str) -> list[str]:
        if self._through(rel) != _TREE:
            return []
        return sorted(n for n, m in self._children.get(rel, {}).items() if m == _TREE and not n.startswith("."))

    def is_dir(self, rel: str) -> bool:
        return self._through(rel) == _TREE

    def is_file(self, rel: str) -> bool:
        return self._through(rel) in ("100644", "100755")

    def leaves(self, rel: str) -> bool:
        self._through(rel)                     # a symbolic link on the way: TreeViewUnsure, the disk decides
        return False

    def list_files(self, rel: str) -> list[str]:
        if self._through(rel) != _TREE:
            return []
        return sorted(n for n, m in self._children.get(rel, {}).items() if m in ("100644", "100755", _SYMLINK))

    def has_manifest(self, rel: str) -> bool:
        if self._through(rel) != _TREE:
            return False
        found = False
        for name, mode in self._children.get(rel, {}).items():
            if name.endswith((".yaml", ".yml", ".json")):
                if mode == _SYMLINK:
                    raise TreeViewUnsure(f"{rel}/{name}" if rel else name)   # the disk decides
                found = found or mode in ("100644", "100755")
        return found

    def close(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(OSError):
                assert self._reader.stdin is not None
                self._reader.stdin.close()
            try:
                self._reader.wait(timeout=GIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._reader.kill()
                self._reader.wait()
            self._reader = None


@contextmanager
def tree_view(repo: Path, rev: str) -> Iterator[TreeView]:
    """A `TreeView` of `repo` at `rev`, closed on exit."""
    view = TreeView(repo, rev)
    try:
        yield view
    finally:
        view.close()


@dataclass(frozen=True)
class WorktreeChanges:
    """The working tree against a base revision (see `worktree_changes`)."""

    changed: set[str]             # = changed_paths(repo, base, None)
    dirty: bool                   # = is_dirty(repo)
    # paths whose content git does not vouch for: ignored files and directories (on disk, never
    # listed as changed), entries marked assume-unchanged or skip-worktree, unmerged entries,
    # submodules.  None when git may convert contents (``core.autocrlf``, attribute files), so the
    # bytes on disk can differ from an export of the same content.
    uncertain: set[str] | None


def worktree_changes(repo: Path, base: str) -> WorktreeChanges:
    """`changed_paths(repo, base, None)` and `is_dirty(repo)` at once, plus the paths where the
    working tree may differ from `base` although git reports no change.  One ``git status`` does
    most of it (and all of it when `base` is HEAD), not four passes over the working tree.  Like
    those, it never writes the user's index."""
    prefix, base_sha = _locate(repo, base)
    out = _git(repo, "rev-parse", "--git-path", "index", "--git-path", "info/attributes", "--verify", "--quiet",
               "HEAD^{commit}", ok=(0, 1)).stdout.decode(errors="surrogateescape").split("\n")
    index_path, attributes, head = Path(repo) / out[0], Path(repo) / out[1], out[2]
    converts = attributes.exists() or _converts(repo)
    diff = ("diff", "--name-only", "-z", "--no-renames", "--relative", "--no-color", "--no-ext-diff",
            "--no-textconv", base_sha)
    options = ("-c", "core.splitIndex=false")
    with _private_index(index_path) as env:
        changed = _split_z(_git(repo, *diff, env=env, options=options).stdout) if head != base_sha else set()
        status = _git(repo, "status", "--porcelain=v2", "-z", "--no-renames", "--untracked-files=all",
                      "--ignored=matching", "--", ".", env=env, options=options).stdout
        listing = _git(repo, "ls-files", "-z", "-s", "-v", env=env, options=options).stdout
        dirty = False
        unsure: list[str] = []          # base is HEAD: staged and unstaged changes that may cancel out
        uncertain: set[str] = set()
        for record in status.split(b"\0"):
            if not record:
                continue
            kind = record[:1]
            fields = record.split(b" ", {b"1": 8, b"2": 9, b"u": 10}.get(kind, 1))
            path = os.fsdecode(fields[-1]).rstrip("/")
            if prefix:                  # porcelain paths are relative to the top of the work tree
                if not path.startswith(prefix):
                    continue
                path = path[len(prefix):]
            if kind == b"!":
                uncertain.add(path)
                continue
            dirty = True
            if kind == b"?":
                changed.add(path)
            elif head == base_sha:
                xy, submodule = fields[1], fields[2]
                if kind == b"1" and not submodule.startswith(b"S") and (xy[:1] == b".") != (xy[1:] == b"."):
                    changed.add(path)   # only the index, or only the working tree, differs from HEAD
                else:
                    unsure.append(path)
        if unsure:
            changed |= _split_z(_git(repo, *diff, "--", *unsure, env=env,
                                     options=(*options, "--literal-pathspecs")).stdout)
    for record in listing.split(b"\0"):
        if not record:
            continue
        info, _, name = record.partition(b"\t")
        fields = info.split(b" ")
        path = os.fsdecode(name)
        if posixpath.basename(path) == ".gitattributes":
            converts = True
        if fields[0] != b"H" or fields[1] == _GITLINK.encode() or fields[-1] != b"0":
            uncertain.add(path)
    return WorktreeChanges(changed=changed, dirty=dirty, uncertain=None if converts else uncertain)


def _converts(repo: Path) -> bool:
    """Whether the configuration may make git convert file contents between disk and objects."""
    config = _git(repo, "config", "-z", "--get-regexp", r"^core\.(autocrlf|attributesfile)$", ok=(0, 1)).stdout
    for record in config.split(b"\0"):
        key, _, value = record.partition(b"\n")
        if key == b"core.autocrlf" and value.strip().lower() not in (b"false", b"0", b"no", b"off", b""):
            return True
        if key == b"core.attributesfile" and value.strip():
            return True
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.exists(os.path.join(xdg, "git", "attributes"))


@contextmanager
def _private_index(index_path: Path) -> Iterator[dict[str, str]]:
    """Environment for git commands on a copy of the index at `index_path`.

    `git diff` and `git status` refresh stat data in the index they read and may write it back,
    taking index.lock: a private copy keeps the user's index from being locked or rewritten.  The
    copy keeps the file's modification time, which git compares with its entries' to spot files
    changed in the same second as the index was written ("racy" entries).
    """
    with tempfile.TemporaryDirectory(prefix="prbot-index-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        if index_path.is_file():
            shutil.copy2(index_path, env["GIT_INDEX_FILE"])
        yield env


# -- internals ---------------------------------------------------------------------------------------

class _Result:
    __slots__ = ("returncode", "stdout", "stderr")

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _git(repo: Path, command: str, *args: str, ok: Sequence[int] = (0,), env: dict[str, str] | None = None,
         input: bytes | None = None, options: Sequence[str] = ()) -> _Result:
    """Run ``git -C repo OPTIONS COMMAND ARGS``; GitError (one line, credentials masked) unless its
    exit status is in `ok`."""
    repo = Path(repo)
    if not repo.is_dir():
        raise GitError(f"{repo} is not a directory")
    full_env = {k: v for k, v in os.environ.items() if k not in _LOCATION_VARS}
    full_env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"})
    full_env.update(env or {})
    argv = ["git", "-C", str(repo), *options, command, *args]
    try:
        with timed("export"):
            proc = subprocess.run(argv, input=input, capture_output=True, env=full_env, timeout=GIT_TIMEOUT,
                                  stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise GitError("git is not installed (not found on PATH)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {command} timed out after {GIT_TIMEOUT}s in {repo}") from None
    if proc.returncode not in ok:
        raise GitError(_failure(repo, command, proc.stderr))
    return _Result(proc.returncode, proc.stdout, proc.stderr)


def _failure(repo: Path, command: str, stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    fatal = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), lines[-1] if lines else "")
    reason = _CREDENTIALS.sub(r"\1***@", fatal.split(":", 1)[1].strip() if ":" in fatal else fatal)
    if "not a git repository" in reason:
        return f"{repo} is not a git repository"
    return f"git {command} failed in {repo}: {reason or 'no message'}"[:500]


def _locate(repo: Path, rev: str) -> tuple[str, str]:
    """(path of `repo` below the top of its work tree, "" or ending in "/"; commit sha of `rev`)."""
    _check_rev(rev)
    out = _git(repo, "rev-parse", "--show-prefix", "--verify", "--quiet", "--end-of-options",
               f"{rev}^{{commit}}", ok=(0, 1))
    lines = out.stdout.decode(errors="surrogateescape").split("\n")
    if out.returncode != 0 or len(lines) < 2 or not _SHA.fullmatch(lines[1]):
        raise GitError(f"unknown revision {_show(rev)} in {repo}")
    return lines[0], lines[1]


def _check_rev(rev: str) -> None:
    if not isinstance(rev, str) or not rev.strip():
        raise GitError("empty revision")
    if rev.startswith("-") or any(c in rev for c in "\0\n\r"):
        raise GitError(f"unknown revision {_show(rev)}")


def _show(rev: str) -> str:
    clipped = rev if len(rev) <= 80 else rev[:80] + "…"
    return "'" + _CREDENTIALS.sub(r"\1***@", clipped).replace("\n", " ") + "'"


def _split_z(data: bytes) -> set[str]:
    return {os.fsdecode(p) for p in data.split(b"\0") if p}


def _clean_path(path: str) -> str | None:
    """`path` as a clean repo-relative POSIX path, or None when it cannot name a file below repo."""
    if not isinstance(path, str) or not path or "\n" in path or "\0" in path or path.startswith("/"):
        return None
    norm = posixpath.normpath(path)
    if norm in (".", "") or norm == ".." or norm.startswith("../"):
        return None
    return norm


def _request_path(path: str) -> str | None:
    """A path given to `PartialTree.add` as a clean repo-relative path ("" for everything)."""
    if isinstance(path, str) and path.strip("/") in ("", "."):
        return ""
    return _clean_path(path.strip("/")) if isinstance(path, str) else None


def _remove_tree(path: Path) -> None:
    """Remove a scratch directory, even one a renderer left read-only."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        for root, dirs, _files in os.walk(path):
            for d in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(root, d), stat.S_IRWXU, follow_symlinks=False)
        with contextlib.suppress(OSError):
            os.chmod(path, stat.S_IRWXU)
        shutil.rmtree(path, ignore_errors=True)

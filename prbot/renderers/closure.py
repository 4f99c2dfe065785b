"""Input closures: every local file a target's rendering reads, and their digest.

A target is affected by a change when the digest of its closure differs between base and head.
The digest hashes repo-relative paths and file contents only, so two checkouts of the same tree in
different directories get the same digest; together with the renderer settings it is the render
cache key.  Renderers then render from a copy of the closure alone (`stage`), so whatever a
closure misses fails the render loudly instead of changing it unseen.

This module holds what every renderer's closure rule shares (`ClosureCache`: file kinds with
symbolic links resolved, listings, hashes, parsed YAML, references resolved inside the repository
or recorded as remote/outside); each renderer module (`prbot.renderers.kustomize`, `.helm`,
`.plain`) holds its own rule.  References to remote bases, charts or files are collected in
`Closure.remote`, references that leave the repository (``../`` past the root, absolute paths,
symbolic links pointing outside, the target directory itself behind such a link) in
`Closure.outside`.

Two ways to decide whether a target is affected:
- digests: `closure_digest` at base and at head differ (needs both trees);
- changed paths: `Closure.touched_by(paths changed between base and head)` on the head closure
  (missing references and the directory listings a renderer reads are part of the closure).

A `ClosureCache` memoises parses, sub-closures and file hashes, so 300 overlays sharing a base
cost one parse of it; 100 apps x 3 environments take about 60 ms per tree.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prbot.errors import RenderError
from prbot.model import PLAIN_SUFFIXES, Target
from prbot.timing import clocked
from prbot.yamlio import YAML_ERRORS, load_yaml, load_yaml_all

DIGEST_VERSION = "prbot-closure-v2"

# scheme://…, git::…, git@host:…, s3::… — always remote
_STRONG_REMOTE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|git::|hg::|s3::|gcs::|git@|ssh:)")
# host.tld/… or anything carrying ?ref= / ?version= — remote unless the path exists locally
_HOSTLIKE = re.compile(r"^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::\d+)?/")


def is_remote_reference(ref: str) -> bool:
    """True when `ref` looks like something kustomize/helm fetch over the network.

    Closures treat a host-like reference (``github.com/org/repo``) as local when that path exists.
    """
    ref = ref.strip()
    return bool(_STRONG_REMOTE.match(ref) or _HOSTLIKE.match(ref) or "?ref=" in ref or "?version=" in ref)


def is_url(ref: str) -> bool:
    """A reference that is remote whatever exists locally (a scheme, `git::`, `git@host:` …)."""
    return bool(_STRONG_REMOTE.match(ref.strip()))


@dataclass(frozen=True)
class Closure:
    """Every input of one target's rendering."""

    files: frozenset[str]                      # repo-relative POSIX paths of local files read
    remote: tuple[str, ...] = ()               # remote references (URLs, git repos, chart repos)
    errors: tuple[str, ...] = ()               # e.g. a referenced file that does not exist
    outside: tuple[str, ...] = ()              # references leaving the repository (refused)
    helm_charts: bool = False                  # kustomize: the build inflates `helmCharts`
    # what else a change could touch: referenced paths that do not exist (a change creating one, or
    # anything below one, is an input change), and globs of directory listings the renderer reads
    # ("DIR/*.yaml" one level, "DIR/**" everything below).  See `touched_by`.
    missing: frozenset[str] = frozenset()
    globs: frozenset[str] = frozenset()
    # where a fetched copy of a remote input is read from (a chart pulled into chartHome): (remote, path)
    vendor_at: tuple[tuple[str, str], ...] = ()
    # remote references an expansion reads (a HelmRelease's chart from a chart repository): fetched
    # when `render.remote` allows them, else that expansion is "not expanded" — never the target skipped
    optional_remote: tuple[str, ...] = ()
    # the cache that computed this closure, so `closure_digest` reuses its file hashes
    _cache: ClosureCache | None = field(default=None, compare=False, hash=False, repr=False)

    def __or__(self, other: Closure) -> Closure:
        return Closure(files=self.files | other.files,
                       remote=_merge(self.remote, other.remote),
                       errors=_merge(self.errors, other.errors),
                       outside=_merge(self.outside, other.outside),
                       helm_charts=self.helm_charts or other.helm_charts,
                       missing=self.missing | other.missing, globs=self.globs | other.globs,
                       vendor_at=tuple(dict.fromkeys((*self.vendor_at, *other.vendor_at))),
                       optional_remote=_merge(self.optional_remote, other.optional_remote))

    def touched_by(self, changed: Iterable[str]) -> bool:
        """Whether a change of these repo-relative paths (added, modified or deleted) can change
        the rendering: a file read, a missing reference appearing, a file entering a listing read.

        Exact for the tree the closure was computed on; with `changed` = every path differing
        between base and head, the head closure alone decides whether a target is affected.
        """
        for path in changed:
            path = norm(path)
            if path in self.files or path in self.missing:
                return True
            parent, _, name = path.rpartition("/")
            if self.globs and any(join(parent, f"*{suffix}") in self.globs
                                  for suffix in PLAIN_SUFFIXES if name.endswith(suffix)):
                return True
            ancestor = parent
            while ancestor:
                if ancestor in self.missing or f"{ancestor}/**" in self.globs:
                    return True
                ancestor = ancestor.rpartition("/")[0]
            if "**" in self.globs:
                return True
        return False


EMPTY = Closure(frozenset())


def _merge(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    if not b:
        return a
    if not a:
        return b
    return tuple(dict.fromkeys((*a, *b)))


@dataclass
class ClosureBuilder:
    """A closure being built."""

    files: set[str] = field(default_factory=set)
    remote: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    helm_charts: bool = False
    missing: set[str] = field(default_factory=set)
    globs: set[str] = field(default_factory=set)
    parts: list[Closure] = field(default_factory=list)
    vendor_at: list[tuple[str, str]] = field(default_factory=list)
    optional_remote: list[str] = field(default_factory=list)

    def freeze(self) -> Closure:
        out = Closure(frozenset(self.files), tuple(dict.fromkeys(self.remote)),
                      tuple(dict.fromkeys(self.errors)), tuple(dict.fromkeys(self.outside)),
                      self.helm_charts, missing=frozenset(self.missing), globs=frozenset(self.globs),
                      vendor_at=tuple(dict.fromkeys(self.vendor_at)),
                      optional_remote=tuple(dict.fromkeys(self.optional_remote)))
        for part in self.parts:
            out = out | part
        return out


class Invalid:
    """A file that could not be parsed: `message` says why."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


_MISSING: Any = object()


ClosureRule = Callable[["ClosureCache", str, Target], Closure]
CLOSURE_RULES: dict[str, ClosureRule] = {}
"""Each renderer's closure rule by renderer name, filled by `prbot.renderers` from its registry
(importing this module imports that package first, so the rules are always there)."""

ClosureExtension = Callable[["ClosureCache", str, Target, Closure], Closure]
CLOSURE_EXTENSIONS: list[ClosureExtension] = []
"""Rules adding to every target's closure what reading its files reveals beyond its renderer: the
inputs of the objects the cluster would expand (`prbot.expand` registers one when imported, and
`prbot.render` imports it, so every plan and render has it)."""


class ClosureCache:
    """Memoises parsed files, sub-closures and file hashes for one set of calls.

    Build one per plan (or per batch of calls on trees that do not change meanwhile): 300 overlays
    sharing a base parse and hash it once, and identical kustomization files in the base and head
    trees are parsed once.  Safe to share between threads (a race only repeats work).
    """

    def __init__(self) -> None:
        self._hashes: dict[tuple[str, str], str | None] = {}
        self._parsed: dict[tuple[str, bool], Any] = {}     # (content sha256, all docs) -> parsed / Invalid
        self._memo: dict[tuple[str, str, str], Closure] = {}
        self._real: dict[str, str] = {}
        self._kinds: dict[tuple[str, str], str] = {}
        self._reals: dict[tuple[str, str], str] = {}    # paths through symbolic links -> real paths
        self._listings: dict[tuple[str, str], frozenset[str]] = {}

    # ---------------------------------------------------------------- public
    @clocked("closure")
    def closure(self, root: Path | str, target: Target) -> Closure:
        """The input closure of `target` in the tree at `root` (see `input_closure`)."""
        root_s = os.fspath(root)
        path = norm(target.path)
        if self.kind(root_s, path) == "outside":
            got = Closure(frozenset(), outside=(f"{path}: the target directory is a symbolic link to a "
                                                "directory outside the repository",))
        else:
            rule = CLOSURE_RULES.get(target.renderer)
            if rule is None:
                raise RenderError(f"unknown renderer {target.renderer!r}")
            try:
                got = rule(self, root_s, target)
                for extend in CLOSURE_EXTENSIONS:
                    got = extend(self, root_s, target, got)
            except OSError as exc:          # a link loop or chain met where a path is followed: refused
                problem = path_problem(exc, root_s)
                got = Closure(frozenset(), errors=(problem,), outside=(problem,), missing=frozenset({path}))
        return replace(got, _cache=self)

    def file_hash(self, root: Path | str, rel: str) -> str | None:
        """sha256 hex of a repo-relative file, None when it cannot be read."""
        key = (os.fspath(root), rel)
        got = self._hashes.get(key, _MISSING)
        if got is not _MISSING:
            return got  # type: ignore[no-any-return]
        return self._read(key[0], rel)[0]

    @clocked("closure")
    def digest(self, root: Path | str, closure: Closure, extra: str = "") -> str:
        """See `closure_digest`."""
        h = hashlib.sha256(DIGEST_VERSION.encode())
        for rel in sorted(closure.files):
            h.update(b"\0f")
            h.update(rel.encode())
            h.update(b"\0")
            h.update((self.file_hash(root, rel) or "-").encode())
        for label, items in (("r", closure.remote), ("e", closure.errors), ("o", closure.outside),
                             ("p", closure.optional_remote)):
            for item in items:
                h.update(f"\0{label}{item}".encode())
        h.update(b"\0h1" if closure.helm_charts else b"\0h0")
        h.update(b"\0x")
        h.update(extra.encode())
        return h.hexdigest()

    def memo(self, kind: str, root: str, rel: str, compute: Callable[[], Closure]) -> Closure:
        """A renderer's sub-closure (`kind`: what it is, e.g. "kustomization"), computed once."""
        key = (kind, root, rel)
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = compute()
        return got

    def peek(self, kind: str, root: str, rel: str) -> Closure | None:
        return self._memo.get((kind, root, rel))

    # ---------------------------------------------------------------- the file system
    def _read(self, root: str, rel: str) -> tuple[str | None, bytes | None]:
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                data: bytes | None = fh.read()
        except OSError:
            data = None
        value = hashlib.sha256(data).hexdigest() if data is not None else None
        self._hashes[(root, rel)] = value
        return value, data

    def _realroot(self, root: str) -> str:
        real = self._real.get(root)
        if real is None:
            real = self._real[root] = os.path.realpath(root)
        return real

    def kind(self, root: str, rel: str) -> str:
        """"file", "dir", "missing", "other" or "outside" (a symbolic link leaving the repository,
        or a path below one).  Each path component is lstat-ed once per cache; only symbolic links
        are resolved."""
        key = (root, rel)
        got = self._kinds.get(key)
        if got is not None:
            return got
        if not rel:
            kind = "dir"
        else:
            parent_rel, _, name = rel.rpartition("/")
            parent = self.kind(root, parent_rel)
            if parent != "dir":
                kind = "outside" if parent == "outside" else "missing"
            else:
                kind = self._lstat_kind(root, rel)
                parent_real = self._reals.get((root, parent_rel))
                if parent_real is not None and key not in self._reals:
                    self._reals[key] = join(parent_real, name)
        self._kinds[key] = kind
        return kind

    def with_real(self, root: str, rel: str) -> tuple[str, ...]:
        """`rel`, plus the path it resolves to when a symbolic link is on the way (inputs both)."""
        self.kind(root, rel)
        real = self._reals.get((root, rel))
        return (rel,) if real is None or real == rel else (rel, real)

    def _lstat_kind(self, root: str, rel: str) -> str:
        full = os.path.join(root, rel)
        try:
            st = os.lstat(full)
        except OSError:
            return "missing"
        if stat.S_ISLNK(st.st_mode):
            real = os.path.realpath(full)
            rroot = self._realroot(root)
            if real != rroot and not real.startswith(rroot + os.sep):
                return "outside"
            real_rel = os.path.relpath(real, rroot).replace(os.sep, "/")
            self._reals[(root, rel)] = "" if real_rel == "." else real_rel
            try:
                st = os.stat(full)
            except OSError:
                return "missing"
        if stat.S_ISDIR(st.st_mode):
            return "dir"
        return "file" if stat.S_ISREG(st.st_mode) else "other"

    def inside(self, root: str, rel: str) -> bool:
        """The path, symbolic links resolved, stays inside the repository."""
        return self.kind(root, rel) != "outside"

    def listing(self, root: str, rel: str) -> frozenset[str]:
        """Names in a directory inside the repository (empty when it is none)."""
        key = (root, rel)
        got = self._listings.get(key)
        if got is None:
            got = frozenset()
            if self.kind(root, rel) == "dir":
                try:
                    got = frozenset(os.listdir(os.path.join(root, rel)))
                except OSError:
                    pass
            self._listings[key] = got
        return got

    def load(self, root: str, rel: str, *, all_documents: bool = False) -> Any:
        """Parsed document of a YAML file (every document with `all_documents`), or an `Invalid`."""
        digest, data = self._read(root, rel)
        if digest is None or data is None:
            return Invalid("cannot be read")
        got = self._parsed.get((digest, all_documents), _MISSING)
        if got is not _MISSING:
            return got
        value = parse_text(data, all_documents=all_documents)
        self._parsed[(digest, all_documents)] = value
        return value

    # ---------------------------------------------------------------- references
    def resolve(self, root: str, base_dir: str, ref: str, where: str, acc: ClosureBuilder) -> str | None:
        """Repo-relative path of a local reference, or None (recorded as outside)."""
        if "\0" in ref:
            acc.errors.append(f"{where}: {ref!r} is not a path")
            return None
        if posixpath.isabs(ref) or os.path.isabs(ref):
            acc.outside.append(f"{where}: {ref} is an absolute path outside the repository")
            return None
        rel = posixpath.normpath(posixpath.join(base_dir, ref)) if base_dir else posixpath.normpath(ref)
        if rel == ".." or rel.startswith("../"):
            acc.outside.append(f"{where}: {ref} leaves the repository")
            return None
        if rel == ".":
            rel = ""
        if not self.inside(root, rel):
            acc.outside.append(f"{where}: {ref} resolves (through a symbolic link) outside the repository")
            return None
        return rel

    def local_or_remote(self, root: str, base_dir: str, ref: Any, where: str, acc: ClosureBuilder) -> str | None:
        """Resolve a reference that may be remote (a path or URL field)."""
        if not isinstance(ref, str) or not ref.strip():
            if ref is not None and ref != "":
                acc.errors.append(f"{where}: expected a path, got {ref!r}")
            return None
        ref = ref.strip()
        if _STRONG_REMOTE.match(ref):
            acc.remote.append(ref)
            return None
        if is_remote_reference(ref):
            candidate = posixpath.normpath(posixpath.join(base_dir, ref)) if base_dir else ref
            if candidate.startswith("../") or self.kind(root, candidate) == "missing":
                acc.remote.append(ref)
                return None
        return self.resolve(root, base_dir, ref, where, acc)

    def add_file(self, root: str, base_dir: str, ref: Any, where: str, acc: ClosureBuilder) -> str | None:
        """A reference to a file (or URL); returns its repo-relative path when it is a local file."""
        rel = self.local_or_remote(root, base_dir, ref, where, acc)
        if rel is None:
            return None
        if self.kind(root, rel) == "file":
            acc.files.update(self.with_real(root, rel))
            return rel
        acc.missing.add(rel)
        acc.errors.append(f"{where}: {rel or '.'} does not exist")
        return None

    def add_existing(self, root: str, base_dir: str, ref: str, acc: ClosureBuilder) -> None:
        """Count `ref` as an input when it names a file inside the repository (a scalar that may be
        a path: more inputs only make the digest more sensitive, never wrong)."""
        ref = ref.strip()
        if not ref or "\n" in ref or "\0" in ref or len(ref) > 1024 or is_url(ref):
            return
        if posixpath.isabs(ref):
            return
        rel = posixpath.normpath(posixpath.join(base_dir, ref)) if base_dir else posixpath.normpath(ref)
        if rel in (".", "..") or rel.startswith("../"):
            return
        if self.kind(root, rel) == "file":
            acc.files.update(self.with_real(root, rel))

    def tree(self, root: str, rel: str) -> Closure:
        """Every file below a directory (a chart); symbolic links must stay inside the repository."""
        return self.memo("tree", root, rel, lambda: self._tree(root, rel))

    def _tree(self, root: str, rel: str) -> Closure:
        acc = ClosureBuilder()
        acc.globs.add(join(rel, "**"))
        seen: set[str] = set()
        pending = [rel]
        while pending:
            current = pending.pop()
            real = os.path.realpath(os.path.join(root, current))
            if real in seen:
                continue
            seen.add(real)
            try:
                entries = list(os.scandir(os.path.join(root, current)))
            except OSError as exc:
                acc.errors.append(f"{current}: {exc.strerror or exc}")
                continue
            for entry in entries:
                if entry.name == ".git":
                    continue
                child = join(current, entry.name)
                if entry.is_symlink() and not self.inside(root, child):
                    acc.outside.append(f"{child}: symbolic link to a path outside the repository")
                    continue
                if entry.is_dir():
                    pending.append(child)
                elif entry.is_file():
                    acc.files.update(self.with_real(root, child))
                    if entry.name == SCHEMA_FILE:
                        acc.outside.extend(f"{child}: {problem}" for problem in schema_escapes(self.load(root, child)))
        return acc.freeze()


def path_problem(exc: OSError, root: str) -> str:
    """`PATH: what is wrong`, PATH relative to `root`: the one-line message of a path that cannot be
    followed (a symbolic link loop, or a chain of links longer than the system follows)."""
    where = os.fspath(exc.filename) if exc.filename is not None else ""
    real_root = os.path.realpath(root)
    for prefix in (os.path.join(root, ""), os.path.join(real_root, "")):
        if where.startswith(prefix):
            where = where[len(prefix):]
            break
    where = where.replace(os.sep, "/").removeprefix("./") or "."
    if exc.errno == errno.ELOOP:
        return f"{where}: a symbolic link loop, or a chain of symbolic links too long to follow"
    return f"{where}: {exc.strerror or exc}"


SCHEMA_FILE = "values.schema.json"
_SCHEMA_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef", "$id", "$anchor", "$schema")
_META_SCHEMAS = re.compile(r"^https?://json-schema\.org/(?:draft-0[3-7]|draft/20(?:19-09|20-12))/schema#?$")


def schema_escapes(doc: Any) -> list[str]:
    """The references of a chart's values schema that lead outside the schema itself: Helm resolves
    `$ref` to files (``file:///…``) and URLs while validating values, so a PR's chart could read the
    host or reach the network through it.  Only fragments (``#/definitions/x``) and the standard
    meta-schema URIs in ``$schema`` are inert."""
    found: list[str] = []
    stack = [doc]
    while stack and len(found) < 5:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _SCHEMA_REF_KEYS and isinstance(value, str):
                    inert = value.startswith("#") if key != "$schema" else bool(_META_SCHEMAS.match(value))
                    if key in ("$id", "$anchor") and ":" not in value and not value.startswith("/"):
                        inert = True                # a plain name or relative id: resolves to nothing
                    if not inert:
                        found.append(f"schema {key} {value[:200]!r} refers outside the schema "
                                     "(only '#…' references are rendered)")
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(v for v in node if isinstance(v, dict | list))
    return found


def parse_text(data: bytes, *, all_documents: bool = False) -> Any:
    """A YAML file's document (or list of documents), or an `Invalid` saying what is wrong."""
    try:
        text = data.decode("utf-8")
        return load_yaml_all(text) if all_documents else load_yaml(text)
    except (*YAML_ERRORS, UnicodeDecodeError) as exc:  # type: ignore[misc]   # a tuple of classes
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return Invalid(f"invalid YAML{where}: {' '.join(str(problem).split())}")


def norm(path: str) -> str:
    p = posixpath.normpath(path.strip("/")) if path.strip("/") else ""
    return "" if p == "." else p


def join(a: str, b: str) -> str:
    return f"{a}/{b}" if a else b


def items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def strings(value: Any) -> list[str]:
    return [v for v in items(value) if isinstance(v, str)]


def scalars(node: Any, skip: frozenset[str] = frozenset()) -> Iterable[str]:
    """Every string scalar below a parsed document (keys under `skip` left out), without recursion."""
    pending = [node]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if isinstance(current, str):
            yield current
        elif isinstance(current, dict | list):
            if id(current) in seen:
                continue
            seen.add(id(current))
            if isinstance(current, dict):
                pending.extend(v for k, v in current.items() if k not in skip)
            else:
                pending.extend(current)


# -------------------------------------------------------------------- staging

@clocked("staging")
def stage(root: Path | str, closure: Closure, dest: Path) -> None:
    """Copy the closure's files (regular files only; symbolic links were resolved by the closure)
    to the same relative paths below `dest`: the tree a renderer runs in."""
    root_s = os.fspath(root)
    made: set[str] = set()
    for rel in sorted(closure.files):
        parent = rel.rpartition("/")[0]
        if parent and parent not in made:
            os.makedirs(dest / parent, mode=0o700, exist_ok=True)
            made.add(parent)
        src = os.path.join(root_s, rel)
        with open(src, "rb") as fin, open(dest / rel, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)


# -------------------------------------------------------------------- module-level API

def input_closure(root: Path, target: Target, cache: ClosureCache | None = None) -> Closure:
    """Every local file `target`'s rendering reads, as repo-relative POSIX paths.

    kustomize: the kustomization files of every visited directory and everything they reference
    (resources, bases, components, patches, generator and transformer configurations and the files
    they name, crds, configurations, openapi, replacements, local helmCharts); helm: every file below
    the chart directory plus the values files; plain: every *.yaml / *.yml / *.json file in the
    directory.
    """
    return (cache or ClosureCache()).closure(Path(root), target)


def closure_digest(root: Path, closure: Closure, extra: str = "", cache: ClosureCache | None = None) -> str:
    """sha256 over the sorted (path, sha256(content)) pairs of `closure` plus `extra`.

    Paths are repo-relative, so equal trees in different directories get equal digests.  `extra`
    carries everything else that changes the output (renderer, release name, namespace, values
    order, tool versions …).  File hashes are memoised by the `ClosureCache` that computed the
    closure (or `cache`), so each file is hashed once per cache.
    """
    return (cache or closure._cache or ClosureCache()).digest(Path(root), closure, extra)

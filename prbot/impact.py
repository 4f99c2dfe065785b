"""Impact: the input closure of a target (every local file its rendering reads) and its digest.

A target is affected by a change when the digest of its closure differs between base and head.
The digest hashes repo-relative paths and file contents only, so two checkouts of the same tree in
different directories get the same digest; together with the renderer settings it is the render
cache key.

Nothing here runs a renderer.  Kustomizations are parsed safely (libyaml through PyYAML when
installed, else ruamel.yaml) and followed the way kustomize follows them; Helm charts and plain
directories are expanded to the files they hold.  References to remote bases, charts or files are
collected in `Closure.remote` (they cannot be rendered offline), references that leave the
repository (``../`` past the root, absolute paths, symbolic links pointing outside) in
`Closure.outside`.

Two ways to decide whether a target is affected:
- digests: `closure_digest` at base and at head differ (needs both trees);
- changed paths: `Closure.touched_by(paths changed between base and head)` on the head closure
  (missing references and the directory listings a renderer reads are part of the closure).

A `ClosureCache` memoises parses, sub-closures and file hashes, so 300 overlays sharing a base
cost one parse of it; 100 apps x 3 environments take about 60 ms per tree.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import YAMLError

from prbot.targets import KUSTOMIZATION_FILES, PLAIN_SUFFIXES, Target

try:                                    # libyaml through PyYAML (a dependency of `kubernetes`): ~15x faster
    import yaml as _pyyaml
    _CLoader: Any = getattr(_pyyaml, "CSafeLoader", None)
except ImportError:                     # pragma: no cover - depends on the installation
    _pyyaml = None
    _CLoader = None

DIGEST_VERSION = "prbot-closure-v1"

# scheme://…, git::…, git@host:…, s3::… — always remote
_STRONG_REMOTE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|git::|hg::|s3::|gcs::|git@|ssh:)")
# host.tld/… or anything carrying ?ref= / ?version= — remote unless the path exists locally
_HOSTLIKE = re.compile(r"^[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::\d+)?/")


# --------------------------------------------------------------------------------------------
# Safe YAML loading shared with prbot.render: timestamps stay strings, as Kubernetes sees them
# (sigs.k8s.io/yaml keeps timestamp-looking scalars as strings).
# --------------------------------------------------------------------------------------------

class _RuamelConstructor(SafeConstructor):
    pass


_RuamelConstructor.add_constructor("tag:yaml.org,2002:timestamp", SafeConstructor.construct_yaml_str)

if _CLoader is not None:
    class _FastLoader(_CLoader):  # type: ignore[misc,valid-type]
        pass

    _FastLoader.add_constructor("tag:yaml.org,2002:timestamp", _pyyaml.SafeLoader.construct_yaml_str)
    _FastLoader.add_constructor("tag:yaml.org,2002:value", _pyyaml.SafeLoader.construct_yaml_str)
    YAML_ERRORS: tuple[type[Exception], ...] = (YAMLError, _pyyaml.YAMLError)
    YAML_LOADER = f"libyaml-{_pyyaml.__version__}"
else:
    YAML_ERRORS = (YAMLError,)
    YAML_LOADER = "ruamel.yaml"


def load_yaml_all(text: str) -> list[Any]:
    """Every document of a YAML text, loaded safely (libyaml when available, else ruamel.yaml).

    Raises one of `YAML_ERRORS`; those carry ``problem`` and ``problem_mark.line`` (0-based).
    """
    if _CLoader is not None:
        return list(_pyyaml.load_all(text, Loader=_FastLoader))
    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = _RuamelConstructor
    return list(yaml.load_all(text))


def load_yaml(text: str) -> Any:
    """The single document of a YAML text (None when empty); see `load_yaml_all`."""
    docs = load_yaml_all(text)
    if len(docs) > 1:
        raise YAMLError(f"expected one YAML document, found {len(docs)}")
    return docs[0] if docs else None


# --------------------------------------------------------------------------------------------
# Closures
# --------------------------------------------------------------------------------------------

def is_remote_reference(ref: str) -> bool:
    """True when `ref` looks like something kustomize/helm fetch over the network.

    Closures treat a host-like reference (``github.com/org/repo``) as local when that path exists.
    """
    ref = ref.strip()
    return bool(_STRONG_REMOTE.match(ref) or _HOSTLIKE.match(ref) or "?ref=" in ref or "?version=" in ref)


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
    # the cache that computed this closure, so `closure_digest` reuses its file hashes
    _cache: ClosureCache | None = field(default=None, compare=False, hash=False, repr=False)

    def __or__(self, other: Closure) -> Closure:
        return Closure(files=self.files | other.files,
                       remote=_merge(self.remote, other.remote),
                       errors=_merge(self.errors, other.errors),
                       outside=_merge(self.outside, other.outside),
                       helm_charts=self.helm_charts or other.helm_charts,
                       missing=self.missing | other.missing, globs=self.globs | other.globs)

    def touched_by(self, changed: Iterable[str]) -> bool:
        """Whether a change of these repo-relative paths (added, modified or deleted) can change
        the rendering: a file read, a missing reference appearing, a file entering a listing read.

        Exact for the tree the closure was computed on; with `changed` = every path differing
        between base and head, the head closure alone decides whether a target is affected.
        """
        for path in changed:
            path = _norm(path)
            if path in self.files or path in self.missing:
                return True
            parent, _, name = path.rpartition("/")
            if self.globs and any(_join(parent, f"*{suffix}") in self.globs
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
class _Acc:
    files: set[str] = field(default_factory=set)
    remote: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    helm_charts: bool = False
    missing: set[str] = field(default_factory=set)
    globs: set[str] = field(default_factory=set)
    parts: list[Closure] = field(default_factory=list)

    def freeze(self) -> Closure:
        out = Closure(frozenset(self.files), tuple(dict.fromkeys(self.remote)),
                      tuple(dict.fromkeys(self.errors)), tuple(dict.fromkeys(self.outside)),
                      self.helm_charts, missing=frozenset(self.missing), globs=frozenset(self.globs))
        for part in self.parts:
            out = out | part
        return out


class ClosureCache:
    """Memoises parsed kustomizations, sub-closures and file hashes for one set of calls.

    Build one per plan (or per batch of calls on trees that do not change meanwhile): 300 overlays
    sharing a base parse and hash it once, and identical kustomization files in the base and head
    trees are parsed once.  Safe to share between threads (a race only repeats work).
    """

    def __init__(self) -> None:
        self._hashes: dict[tuple[str, str], str | None] = {}
        self._parsed: dict[str, Any] = {}               # content sha256 -> parsed document / error
        self._kdirs: dict[tuple[str, str], Closure] = {}
        self._trees: dict[tuple[str, str], Closure] = {}
        self._real: dict[str, str] = {}
        self._kinds: dict[tuple[str, str], str] = {}
        self._reals: dict[tuple[str, str], str] = {}    # paths through symbolic links -> real paths
        self._listings: dict[tuple[str, str], frozenset[str]] = {}

    # ---------------------------------------------------------------- public
    def closure(self, root: Path, target: Target) -> Closure:
        """The input closure of `target` in the tree at `root` (see `input_closure`)."""
        root_s = os.fspath(root)
        if target.renderer == "kustomize":
            got = self._kustomize_dir(root_s, _norm(target.path), ())
        elif target.renderer == "helm":
            got = self._helm(root_s, target)
        else:
            got = self._plain(root_s, _norm(target.path))
        return replace(got, _cache=self)

    def file_hash(self, root: Path | str, rel: str) -> str | None:
        """sha256 hex of a repo-relative file, None when it cannot be read."""
        key = (os.fspath(root), rel)
        got = self._hashes.get(key, _MISSING)
        if got is not _MISSING:
            return got  # type: ignore[no-any-return]
        return self._read(key[0], rel)[0]

    def _read(self, root: str, rel: str) -> tuple[str | None, bytes | None]:
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                data: bytes | None = fh.read()
        except OSError:
            data = None
        value = hashlib.sha256(data).hexdigest() if data is not None else None
        self._hashes[(root, rel)] = value
        return value, data

    def digest(self, root: Path, closure: Closure, extra: str = "") -> str:
        """See `closure_digest`."""
        h = hashlib.sha256(DIGEST_VERSION.encode())
        for rel in sorted(closure.files):
            h.update(b"\0f")
            h.update(rel.encode())
            h.update(b"\0")
            h.update((self.file_hash(root, rel) or "-").encode())
        for label, items in (("r", closure.remote), ("e", closure.errors), ("o", closure.outside)):
            for item in items:
                h.update(f"\0{label}{item}".encode())
        h.update(b"\0h1" if closure.helm_charts else b"\0h0")
        h.update(b"\0x")
        h.update(extra.encode())
        return h.hexdigest()

    # ---------------------------------------------------------------- helpers
    def _realroot(self, root: str) -> str:
        real = self._real.get(root)
        if real is None:
            real = self._real[root] = os.path.realpath(root)
        return real

    def _kind(self, root: str, rel: str) -> str:
        """"file", "dir", "missing", "other" or "outside" (a symbolic link leaving the repository).

        Each path component is lstat-ed once per cache; only symbolic links are resolved.
        """
        key = (root, rel)
        got = self._kinds.get(key)
        if got is not None:
            return got
        if not rel:
            kind = "dir"
        else:
            parent_rel, _, name = rel.rpartition("/")
            parent = self._kind(root, parent_rel)
            if parent != "dir":
                kind = "outside" if parent == "outside" else "missing"
            else:
                kind = self._lstat_kind(root, rel)
                parent_real = self._reals.get((root, parent_rel))
                if parent_real is not None and key not in self._reals:
                    self._reals[key] = _join(parent_real, name)
        self._kinds[key] = kind
        return kind

    def _with_real(self, root: str, rel: str) -> tuple[str, ...]:
        """`rel`, plus the path it resolves to when a symbolic link is on the way (inputs both)."""
        self._kind(root, rel)
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

    def _inside_repo(self, root: str, rel: str) -> bool:
        """The path, symbolic links resolved, stays inside the repository."""
        return self._kind(root, rel) != "outside"

    def _listing(self, root: str, rel: str) -> frozenset[str]:
        key = (root, rel)
        got = self._listings.get(key)
        if got is None:
            try:
                got = frozenset(os.listdir(os.path.join(root, rel)))
            except OSError:
                got = frozenset()
            self._listings[key] = got
        return got

    def _load_yaml(self, root: str, rel: str) -> Any:
        """Parsed document of a YAML file, or an `_Invalid` holding the problem."""
        digest, data = self._read(root, rel)
        if digest is None or data is None:
            return _Invalid("cannot be read")
        got = self._parsed.get(digest, _MISSING)
        if got is not _MISSING:
            return got
        try:
            value = load_yaml(data.decode("utf-8"))
        except (*YAML_ERRORS, UnicodeDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            value = _Invalid(f"invalid YAML{where}: {' '.join(str(problem).split())}")
        self._parsed[digest] = value
        return value

    def _resolve(self, root: str, base_dir: str, ref: str, where: str, acc: _Acc) -> str | None:
        """Repo-relative path of a local reference, or None (recorded as outside/remote)."""
        if posixpath.isabs(ref) or os.path.isabs(ref):
            acc.outside.append(f"{where}: {ref} is an absolute path outside the repository")
            return None
        rel = posixpath.normpath(posixpath.join(base_dir, ref)) if base_dir else posixpath.normpath(ref)
        if rel == ".." or rel.startswith("../"):
            acc.outside.append(f"{where}: {ref} leaves the repository")
            return None
        if rel == ".":
            rel = ""
        if not self._inside_repo(root, rel):
            acc.outside.append(f"{where}: {ref} resolves (through a symbolic link) outside the repository")
            return None
        return rel

    def _local_or_remote(self, root: str, base_dir: str, ref: Any, where: str, acc: _Acc) -> str | None:
        """Resolve a reference that may be remote (resources, bases, components, files)."""
        if not isinstance(ref, str) or not ref.strip():
            if ref is not None:
                acc.errors.append(f"{where}: expected a path, got {ref!r}")
            return None
        ref = ref.strip()
        if _STRONG_REMOTE.match(ref):
            acc.remote.append(ref)
            return None
        if is_remote_reference(ref):
            candidate = posixpath.normpath(posixpath.join(base_dir, ref)) if base_dir else ref
            if candidate.startswith("../") or self._kind(root, candidate) == "missing":
                acc.remote.append(ref)
                return None
        return self._resolve(root, base_dir, ref, where, acc)

    def _add_file(self, root: str, base_dir: str, ref: Any, where: str, acc: _Acc) -> None:
        rel = self._local_or_remote(root, base_dir, ref, where, acc)
        if rel is None:
            return
        if self._kind(root, rel) == "file":
            acc.files.update(self._with_real(root, rel))
        else:
            acc.missing.add(rel)
            acc.errors.append(f"{where}: {rel or '.'} does not exist")

    def _add_file_or_dir(self, root: str, base_dir: str, ref: Any, where: str, acc: _Acc,
                         stack: tuple[str, ...]) -> None:
        """resources / bases / components / generators: a file, or a directory holding a kustomization."""
        rel = self._local_or_remote(root, base_dir, ref, where, acc)
        if rel is None:
            return
        kind = self._kind(root, rel)
        if kind == "dir":
            acc.parts.append(self._kustomize_dir(root, rel, stack))
        elif kind == "file":
            acc.files.update(self._with_real(root, rel))
        else:
            acc.missing.add(rel)
            acc.errors.append(f"{where}: {rel or '.'} does not exist")

    # ---------------------------------------------------------------- kustomize
    def _kustomize_dir(self, root: str, kdir: str, stack: tuple[str, ...]) -> Closure:
        key = (root, kdir)
        got = self._kdirs.get(key)
        if got is not None:
            return got
        if kdir in stack:
            cycle = " -> ".join((*stack, kdir))
            return Closure(frozenset(), errors=(f"{kdir}: kustomization cycle ({cycle})",))
        acc = _Acc()
        listing = self._listing(root, kdir)   # exact names, also on case-insensitive file systems
        names = [n for n in KUSTOMIZATION_FILES
                 if n in listing and self._kind(root, _join(kdir, n)) == "file"]
        acc.missing.update(_join(kdir, n) for n in KUSTOMIZATION_FILES if n not in names)
        if not names:
            acc.errors.append(f"{kdir or '.'}: no kustomization.yaml, kustomization.yml or Kustomization")
            result = acc.freeze()
        else:
            for n in names:
                acc.files.update(self._with_real(root, _join(kdir, n)))
            kfile = _join(kdir, names[0])
            doc = self._load_yaml(root, kfile)
            if isinstance(doc, _Invalid):
                acc.errors.append(f"{kfile}: {doc.message}")
            elif doc is not None and not isinstance(doc, dict):
                acc.errors.append(f"{kfile}: not a kustomization (expected a mapping)")
            elif doc:
                self._follow(root, kdir, kfile, doc, acc, (*stack, kdir))
            result = acc.freeze()
        self._kdirs[key] = result
        return result

    def _follow(self, root: str, kdir: str, kfile: str, doc: dict[str, Any], acc: _Acc,
                stack: tuple[str, ...]) -> None:
        for section in ("resources", "bases", "components"):
            for ref in _strings(doc.get(section)):
                self._add_file_or_dir(root, kdir, ref, f"{kfile}: {section}", acc, stack)
        for section in ("generators", "transformers", "validators"):
            for ref in _strings(doc.get(section)):
                if "\n" in ref:          # an inline plugin configuration
                    continue
                self._add_file_or_dir(root, kdir, ref, f"{kfile}: {section}", acc, stack)
        for item in _items(doc.get("patches")):
            if isinstance(item, dict) and item.get("path") is not None:
                self._add_file(root, kdir, item["path"], f"{kfile}: patches", acc)
        for item in _items(doc.get("patchesStrategicMerge")):
            if isinstance(item, str) and "\n" not in item.strip():
                self._add_file(root, kdir, item, f"{kfile}: patchesStrategicMerge", acc)
        for item in _items(doc.get("patchesJson6902")):
            if isinstance(item, dict) and item.get("path") is not None:
                self._add_file(root, kdir, item["path"], f"{kfile}: patchesJson6902", acc)
        for section in ("configMapGenerator", "secretGenerator"):
            for gen in _items(doc.get(section)):
                if not isinstance(gen, dict):
                    continue
                for entry in _strings(gen.get("files")):
                    path = entry.split("=", 1)[1] if "=" in entry else entry
                    self._add_file(root, kdir, path, f"{kfile}: {section} files", acc)
                for entry in _strings(gen.get("envs")):
                    self._add_file(root, kdir, entry, f"{kfile}: {section} envs", acc)
                if isinstance(gen.get("env"), str):
                    self._add_file(root, kdir, gen["env"], f"{kfile}: {section} env", acc)
        for section in ("crds", "configurations"):
            for ref in _strings(doc.get(section)):
                self._add_file(root, kdir, ref, f"{kfile}: {section}", acc)
        openapi = doc.get("openapi")
        if isinstance(openapi, dict) and openapi.get("path") is not None:
            self._add_file(root, kdir, openapi["path"], f"{kfile}: openapi", acc)
        for item in _items(doc.get("replacements")):
            if isinstance(item, dict) and item.get("path") is not None:
                self._add_file(root, kdir, item["path"], f"{kfile}: replacements", acc)
        charts = [c for c in _items(doc.get("helmCharts")) if isinstance(c, dict)]
        if charts:
            self._helm_charts(root, kdir, kfile, doc, charts, acc)

    def _helm_charts(self, root: str, kdir: str, kfile: str, doc: dict[str, Any],
                     charts: list[dict[str, Any]], acc: _Acc) -> None:
        acc.helm_charts = True
        globals_ = doc.get("helmGlobals") if isinstance(doc.get("helmGlobals"), dict) else {}
        home_ref = globals_.get("chartHome") or "charts"
        home = self._resolve(root, kdir, str(home_ref), f"{kfile}: helmGlobals.chartHome", acc)
        for chart in charts:
            where = f"{kfile}: helmCharts"
            name = str(chart.get("name") or "")
            repo = str(chart.get("repo") or "")
            version = str(chart.get("version") or "")
            if not name:
                acc.errors.append(f"{where}: a chart without a name")
                continue
            if home is not None:
                # kustomize: <chartHome>/<name>, or <chartHome>/<name>-<version>/<name> when pulled
                sub = f"{name}-{version}/{name}" if version and repo else name
                chart_dir = _join(home, sub)
                if self._kind(root, chart_dir) == "dir":
                    acc.parts.append(self._tree(root, chart_dir))
                elif repo:
                    acc.missing.add(chart_dir)
                    suffix = f" (version {version})" if version else ""
                    acc.remote.append(f"{repo.rstrip('/')}/{name}{suffix}")
                else:
                    acc.missing.add(chart_dir)
                    acc.errors.append(f"{where}: chart {name} not found at {chart_dir} and no repo given")
            for ref in (chart.get("valuesFile"), *_strings(chart.get("additionalValuesFiles"))):
                if ref:
                    self._add_file(root, kdir, ref, f"{where} values", acc)

    # ---------------------------------------------------------------- helm / plain
    def _helm(self, root: str, target: Target) -> Closure:
        acc = _Acc()
        chart_ref = target.chart or target.path
        where = f"{target.path}: chart"
        rel = self._local_or_remote(root, "", chart_ref, where, acc)
        if rel is not None:
            kind = self._kind(root, rel)
            if kind == "dir":
                acc.parts.append(self._tree(root, rel))
                if self._kind(root, _join(rel, "Chart.yaml")) != "file":
                    acc.errors.append(f"{where}: {rel or '.'} holds no Chart.yaml")
            elif kind == "file":            # a packaged chart (.tgz) in the repository
                acc.files.update(self._with_real(root, rel))
            else:
                acc.missing.add(rel)
                acc.errors.append(f"{where}: chart directory {rel or '.'} does not exist")
        for values in target.values:
            self._add_file(root, "", values, f"{target.path}: values", acc)
        return acc.freeze()

    def _tree(self, root: str, rel: str) -> Closure:
        """Every file below a directory (a chart); symbolic links must stay inside the repository."""
        key = (root, rel)
        got = self._trees.get(key)
        if got is not None:
            return got
        acc = _Acc()
        acc.globs.add(_join(rel, "**"))
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
                child = _join(current, entry.name)
                if entry.is_symlink() and not self._inside_repo(root, child):
                    acc.outside.append(f"{child}: symbolic link to a path outside the repository")
                    continue
                if entry.is_dir():
                    pending.append(child)
                elif entry.is_file():
                    acc.files.update(self._with_real(root, child))
        result = self._trees[key] = acc.freeze()
        return result

    def _plain(self, root: str, rel: str) -> Closure:
        acc = _Acc()
        acc.globs.update(_join(rel, f"*{suffix}") for suffix in PLAIN_SUFFIXES)
        try:
            entries = list(os.scandir(os.path.join(root, rel)))
        except OSError:
            acc.missing.add(rel)
            acc.errors.append(f"{rel or '.'}: directory does not exist")
            return acc.freeze()
        for entry in entries:
            if not entry.name.endswith(PLAIN_SUFFIXES) or not entry.is_file():
                continue
            child = _join(rel, entry.name)
            if entry.is_symlink() and not self._inside_repo(root, child):
                acc.outside.append(f"{child}: symbolic link to a path outside the repository")
                continue
            acc.files.update(self._with_real(root, child))
        return acc.freeze()


class _Invalid:
    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


_MISSING: Any = object()


def _norm(path: str) -> str:
    p = posixpath.normpath(path.strip("/")) if path.strip("/") else ""
    return "" if p == "." else p


def _join(a: str, b: str) -> str:
    return f"{a}/{b}" if a else b


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _strings(value: Any) -> Iterable[str]:
    return [v for v in _items(value) if isinstance(v, str)]


# -------------------------------------------------------------------- module-level API

def input_closure(root: Path, target: Target, cache: ClosureCache | None = None) -> Closure:
    """Every local file `target`'s rendering reads, as repo-relative POSIX paths.

    kustomize: the kustomization files of every visited directory and everything they reference
    (resources, bases, components, patches, generator files, crds, configurations, openapi,
    replacements, local helmCharts); helm: every file below the chart directory plus the values
    files; plain: every *.yaml / *.yml / *.json file in the directory.
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

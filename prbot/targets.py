"""Targets: expanding `apps[].path` patterns into (app, env, directory, renderer).

Discovery only lists the directories a pattern can match, segment by segment, so a repository of
thousands of directories costs what its patterns touch, not its size.  Nothing is rendered here.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from prbot.config import AppSpec, Config
from prbot.errors import PrbotError

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
PLAIN_SUFFIXES = (".yaml", ".yml", ".json")
_PLACEHOLDER = re.compile(r"\{(app|env)\}")


@dataclass(frozen=True)
class Target:
    """One (app, environment) directory that renders to a list of Kubernetes objects."""

    app: str
    env: str
    path: str                      # repo-relative POSIX directory
    renderer: str                  # "kustomize" | "helm" | "plain"
    app_index: int = 0             # index of the AppSpec in Config.apps
    namespace: str | None = None   # expanded default namespace, if configured
    chart: str | None = None       # helm: repo-relative chart directory
    values: tuple[str, ...] = ()   # helm: repo-relative values files

    @property
    def key(self) -> str:
        return f"{self.app}/{self.env}"


def expand(pattern: str, app: str, env: str) -> str:
    """Fill `{app}` and `{env}` in a config pattern."""
    return pattern.replace("{app}", app).replace("{env}", env)


def kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        p = directory / name
        if p.is_file():
            return p
    return None


def detect_renderer(directory: Path, spec: AppSpec) -> str:
    """The renderer of a target directory on disk: each renderer module decides (`prbot.renderers`)."""
    return _renderer(_Disk(Path(directory)), "", spec)


class _Real:
    """Real paths of directories below a root, symbolic links resolved, memoised per directory (one
    lstat for each new directory): does a path lead out of the repository?"""

    def __init__(self, root: Path) -> None:
        self.root = os.path.realpath(root)
        self._memo: dict[str, str] = {"": self.root}

    def of(self, rel: str) -> str:
        got = self._memo.get(rel)
        if got is None:
            parent, _, name = rel.rpartition("/")
            full = os.path.join(self.of(parent), name)
            got = os.path.realpath(full) if name in (".", "..") or os.path.islink(full) else full
            self._memo[rel] = got
        return got

    def leaves(self, rel: str) -> bool:
        real = self.of(rel)
        return real != self.root and not real.startswith(self.root + os.sep)


class TreeReader(Protocol):
    """What discovery asks of a tree (repo-relative POSIX paths, "" for the top): by default the
    directory on disk; `prbot.gitrepo.TreeView` answers from git without exporting anything."""

    def list_dirs(self, rel: str) -> list[str]:
        """Names of the sub-directories of `rel` (not symbolic links, not hidden), sorted."""
        ...

    def is_dir(self, rel: str) -> bool: ...          # following symbolic links, as Path.is_dir
    def is_file(self, rel: str) -> bool: ...         # following symbolic links, as Path.is_file
    def has_manifest(self, rel: str) -> bool:
        """Whether `rel` directly holds a *.yaml / *.yml / *.json file (what a plain target renders)."""
        ...

    def leaves(self, rel: str) -> bool:
        """Whether `rel`, symbolic links resolved, is outside the repository."""
        ...


class _Disk:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._real = _Real(root)

    def leaves(self, rel: str) -> bool:
        return self._real.leaves(rel)

    def list_dirs(self, rel: str) -> list[str]:
        return _list_dirs(self.root / rel if rel else self.root)

    def is_dir(self, rel: str) -> bool:
        return (self.root / rel).is_dir()

    def is_file(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def has_manifest(self, rel: str) -> bool:
        try:
            with os.scandir(self.root / rel if rel else self.root) as it:
                return any(e.name.endswith(PLAIN_SUFFIXES) and e.is_file() for e in it)
        except OSError:
            return False


def _list_dirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _match_segment(segment: str, name: str) -> dict[str, str] | None:
    """Match one pattern segment ("{app}", "svc-{env}", "literal") against a directory name."""
    parts = _PLACEHOLDER.split(segment)
    regex = ""
    for i, part in enumerate(parts):
        regex += f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part)
    m = re.fullmatch(regex, name)
    return m.groupdict() if m else None


def _expand_pattern(tree: TreeReader, pattern: str) -> list[tuple[str, dict[str, str]]]:
    results: list[tuple[str, dict[str, str]]] = [("", {})]
    segments = PurePosixPath(pattern).parts
    for i, segment in enumerate(segments):
        nxt: list[tuple[str, dict[str, str]]] = []
        for rel, bound in results:
            if not _PLACEHOLDER.search(segment):
                child = f"{rel}/{segment}" if rel else segment
                # a link leading out of the repository is never entered: as the target itself it is
                # kept (and refused by its closure), above a target nothing behind it is listed
                if tree.is_dir(child) and (i == len(segments) - 1 or not tree.leaves(child)):
                    nxt.append((child, bound))
                continue
            for name in tree.list_dirs(rel):
                got = _match_segment(segment, name)
                if got is None or any(bound.get(k, v) != v for k, v in got.items()):
                    continue
                nxt.append((f"{rel}/{name}" if rel else name, {**bound, **got}))
        results = nxt
    return results


def _matches(tree: TreeReader, spec: AppSpec, envs: list[str]) -> list[tuple[str, str, str]]:
    """(directory, app, env) for every directory the spec's pattern matches, per environment: a
    pattern without {env} names a directory that is a target in every environment (of the spec's
    `environments`, when given)."""
    out: list[tuple[str, str, str]] = []
    for rel, bound in _expand_pattern(tree, spec.path.strip("/")):
        app = bound.get("app") or spec.name
        if not app:
            continue
        env = bound.get("env")
        for name in ([env] if env is not None else envs):
            if name in envs and spec.in_env(name):
                out.append((rel, app, name))
    return out


def _renders_something(tree: TreeReader, rel: str, renderer: str) -> bool:
    """A plain directory with no manifest (only subdirectories, a .gitkeep …) is no target: it
    would show as an empty new target in every plan."""
    return renderer != "plain" or tree.has_manifest(rel)


def _renderer(tree: TreeReader, rel: str, spec: AppSpec) -> str:
    """The renderer of a target directory: each renderer module decides (`prbot.renderers`)."""
    from prbot.renderers import detect_renderer as detect

    return detect(tree, rel, spec)


def discover_targets(config: Config, root: Path, *, tree: TreeReader | None = None) -> list[Target]:
    """Every target of the repository checked out at `root` (or of `tree`, which then answers
    instead of the disk), in promotion order then by app."""
    root = Path(root)
    reader = tree if tree is not None else _Disk(root)
    envs = config.env_names
    found: dict[tuple[str, str], Target] = {}
    for index, spec in enumerate(config.apps):
        for rel, app, env in _matches(reader, spec, envs):
            outside = reader.leaves(rel)
            if outside:                 # a linked directory leading out: nothing there is read, the
                renderer = "helm" if spec.helm and spec.helm.chart else "plain"    # closure refuses it
            else:
                renderer = _renderer(reader, rel, spec)
                if not _renders_something(reader, rel, renderer):
                    continue
            chart: str | None = None
            values: tuple[str, ...] = ()
            if renderer == "helm":
                chart = spec.helm.chart.strip("/") if spec.helm and spec.helm.chart else rel
                names = spec.helm.values if spec.helm and spec.helm.values else ()
                if not names and chart != rel and not outside and \
                        reader.is_file(f"{rel}/values.yaml" if rel else "values.yaml"):
                    names = ("values.yaml",)
                values = tuple(str(PurePosixPath(rel) / expand(v, app, env)) for v in names)
            ns = expand(spec.namespace, app, env) if spec.namespace else None
            key = (app, env)
            if key in found:
                other = found[key]
                raise PrbotError(f"app {app!r} in environment {env!r} is matched twice: "
                                 f"{other.path} and {rel}")
            found[key] = Target(app=app, env=env, path=rel, renderer=renderer, app_index=index,
                                namespace=ns, chart=chart, values=values)
    return sorted(found.values(), key=lambda t: (envs.index(t.env), t.app))


def unmatched_indexes(config: Config, tree: TreeReader) -> list[int]:
    """Indexes in `config.apps` of the path patterns that match no directory in `tree`."""
    envs = config.env_names
    return [index for index, spec in enumerate(config.apps) if not _matches(tree, spec, envs)]


def unmatched_paths(config: Config, root: Path) -> list[tuple[int, str]]:
    """(index in `config.apps`, message) for each `apps[].path` that matches no directory in any
    of its environments — a typo, which would otherwise plan nothing without a word."""
    root = Path(root)
    envs = config.env_names
    out: list[tuple[int, str]] = []
    for index, spec in enumerate(config.apps):
        if _matches(_Disk(root), spec, envs):
            continue
        where = f"apps[{index}].path"
        scope = f" (environments: {', '.join(spec.environments)})" if spec.environments else ""
        out.append((index, f"{where}: {json.dumps(spec.path)} matches no directory in any environment"
                           f"{scope}{_closest(root, spec.path.strip('/'), envs)}"))
    return out


def _closest(root: Path, pattern: str, envs: list[str]) -> str:
    """Where a pattern stops matching, with a did-you-mean for a literal segment."""
    matched: list[str] = [""]
    for segment in PurePosixPath(pattern).parts:
        below: list[str] = []
        for rel in matched:
            base = root / rel if rel else root
            for name in _list_dirs(base):
                got = _match_segment(segment, name)
                if got is not None and ("env" not in got or got["env"] in envs):
                    below.append(f"{rel}/{name}" if rel else name)
        if not below:
            where = ", ".join(f"{m}/" for m in matched[:3] if m) or "the repository root"
            if len(matched) > 3:
                where += f" and {len(matched) - 3} more"
            names = sorted({n for rel in matched for n in _list_dirs(root / rel if rel else root)})
            hint = ""
            if not _PLACEHOLDER.search(segment):
                close = difflib.get_close_matches(segment, names, n=1, cutoff=0.6)
                hint = f"; did you mean {json.dumps(close[0])}?" if close else ""
            elif "{env}" in segment:
                hint = f"; {{env}} matches only {', '.join(envs)}"
            return f": nothing matches {json.dumps(segment)} in {where}{hint}"
        matched = below
    return ""


def targets_for_env(targets: list[Target], env: str, app: str | None = None) -> list[Target]:
    return [t for t in targets if t.env == env and (app is None or t.app == app)]

"""The words every part of prbot shares: a `Target`, the trees targets are found in (`TreeReader`,
`DiskTree`), and the file names that make a directory a target.

This is the bottom of the data model: it imports nothing from prbot, so any module may import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
PLAIN_SUFFIXES = (".yaml", ".yml", ".json")


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
    optional_values: tuple[str, ...] = ()   # helm: those of `values` used only where they exist
    load_restrictor: str = "root_only"      # kustomize: "root_only" | "none"
    env_label: str | None = None   # what {env} stands for in this app's patterns, when not `env`
    flux: tuple[str, str, str] | None = None   # sync.flux.root: (root directory, namespace, name) of
                                               # the Flux Kustomization deploying it (its postBuild applies)

    @property
    def key(self) -> str:
        return f"{self.app}/{self.env}"

    @property
    def env_word(self) -> str:
        """The word `{env}` expands to in this target's app (its `env_names`), by default `env`."""
        return self.env_label or self.env


def expand(pattern: str, app: str, env: str) -> str:
    """Fill `{app}` and `{env}` in a config pattern."""
    return pattern.replace("{app}", app).replace("{env}", env)


def kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        p = directory / name
        if p.is_file():
            return p
    return None


class RealPaths:
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

    def list_files(self, rel: str) -> list[str]:
        """Names of the files (and symbolic links to files) directly in `rel`, sorted."""
        ...


class DiskTree:
    """A `TreeReader` answering from the directory on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._real = RealPaths(root)

    def leaves(self, rel: str) -> bool:
        return self._real.leaves(rel)

    def list_dirs(self, rel: str) -> list[str]:
        return list_dirs(self.root / rel if rel else self.root)

    def is_dir(self, rel: str) -> bool:
        return (self.root / rel).is_dir()

    def is_file(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def list_files(self, rel: str) -> list[str]:
        try:
            with os.scandir(self.root / rel if rel else self.root) as it:
                return sorted(e.name for e in it if _followed_file(e))
        except OSError:
            return []

    def has_manifest(self, rel: str) -> bool:
        try:
            with os.scandir(self.root / rel if rel else self.root) as it:
                return any(e.name.endswith(PLAIN_SUFFIXES) and _followed_file(e) for e in it)
        except OSError:
            return False


def _followed_file(entry: os.DirEntry[str]) -> bool:
    """Whether a directory entry is a file, symbolic links followed; a link that cannot be followed
    (a loop, a chain too long) counts as one, so its target is found and fails naming the link
    rather than vanishing from the plan."""
    try:
        return entry.is_file()
    except OSError:
        return True


def list_dirs(path: Path) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []

"""Targets: expanding `apps[].path` patterns into (app, env, directory, renderer).

Discovery only lists the directories a pattern can match, segment by segment, so a repository of
thousands of directories costs what its patterns touch, not its size.  Nothing is rendered here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

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
    """The renderer of a target directory: each renderer module decides (`prbot.renderers`)."""
    from prbot.renderers import detect_renderer as detect

    return detect(directory, spec)


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


def _expand_pattern(root: Path, pattern: str, real: _Real | None = None) -> list[tuple[str, dict[str, str]]]:
    real = real or _Real(root)
    results: list[tuple[str, dict[str, str]]] = [("", {})]
    segments = PurePosixPath(pattern).parts
    for i, segment in enumerate(segments):
        nxt: list[tuple[str, dict[str, str]]] = []
        for rel, bound in results:
            base = root / rel if rel else root
            if not _PLACEHOLDER.search(segment):
                child = f"{rel}/{segment}" if rel else segment
                # a link leading out of the repository is never entered: as the target itself it is
                # kept (and refused by its closure), above a target nothing behind it is listed
                if (base / segment).is_dir() and (i == len(segments) - 1 or not real.leaves(child)):
                    nxt.append((child, bound))
                continue
            for name in _list_dirs(base):
                got = _match_segment(segment, name)
                if got is None or any(bound.get(k, v) != v for k, v in got.items()):
                    continue
                nxt.append((f"{rel}/{name}" if rel else name, {**bound, **got}))
        results = nxt
    return results


def discover_targets(config: Config, root: Path) -> list[Target]:
    """Every target of the repository checked out at `root`, in promotion order then by app."""
    root = Path(root)
    envs = config.env_names
    found: dict[tuple[str, str], Target] = {}
    real = _Real(root)
    for index, spec in enumerate(config.apps):
        for rel, bound in _expand_pattern(root, spec.path.strip("/"), real):
            env = bound.get("env")
            if env not in envs:
                continue
            app = bound.get("app") or spec.name
            if not app:
                continue
            directory = root / rel
            outside = real.leaves(rel)
            if outside:                 # a linked directory leading out: nothing there is read, the
                renderer = "helm" if spec.helm and spec.helm.chart else "plain"    # closure refuses it
            else:
                renderer = detect_renderer(directory, spec)
            chart: str | None = None
            values: tuple[str, ...] = ()
            if renderer == "helm":
                chart = spec.helm.chart.strip("/") if spec.helm and spec.helm.chart else rel
                names = spec.helm.values if spec.helm and spec.helm.values else ()
                if not names and chart != rel and not outside and (directory / "values.yaml").is_file():
                    names = ("values.yaml",)
                values = tuple(str(PurePosixPath(rel) / v) for v in names)
            ns = expand(spec.namespace, app, env) if spec.namespace else None
            key = (app, env)
            if key in found:
                other = found[key]
                raise PrbotError(f"app {app!r} in environment {env!r} is matched twice: "
                                 f"{other.path} and {rel}")
            found[key] = Target(app=app, env=env, path=rel, renderer=renderer, app_index=index,
                                namespace=ns, chart=chart, values=values)
    return sorted(found.values(), key=lambda t: (envs.index(t.env), t.app))


def targets_for_env(targets: list[Target], env: str, app: str | None = None) -> list[Target]:
    return [t for t in targets if t.env == env and (app is None or t.app == app)]

"""Targets: expanding `apps[].path` patterns into (app, env, directory, renderer).

Discovery only lists the directories a pattern can match, segment by segment, so a repository of
thousands of directories costs what its patterns touch, not its size.  Nothing is rendered here.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path, PurePosixPath

from prbot import renderers
from prbot.config import AppSpec, Config, check_file
from prbot.errors import PrbotError
from prbot.model import DiskTree, Target, TreeReader, expand, list_dirs

_PLACEHOLDER = re.compile(r"\{(app|env)\}")


def detect_renderer(directory: Path, spec: AppSpec) -> str:
    """The renderer of a target directory on disk: each renderer module decides (`prbot.renderers`)."""
    return _renderer(DiskTree(Path(directory)), "", spec)


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
    return renderers.detect_renderer(tree, rel, spec)


def discover_targets(config: Config, root: Path, *, tree: TreeReader | None = None) -> list[Target]:
    """Every target of the repository checked out at `root` (or of `tree`, which then answers
    instead of the disk), in promotion order then by app."""
    root = Path(root)
    reader = tree if tree is not None else DiskTree(root)
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
                                namespace=ns, chart=chart, values=values, flux=_flux_root(spec, app, env))
    return sorted(found.values(), key=lambda t: (envs.index(t.env), t.app))


def _flux_root(spec: AppSpec, app: str, env: str) -> tuple[str, str, str] | None:
    """`sync.flux.root`: where the Flux Kustomization deploying the target is defined (expanded)."""
    options = spec.sync.options if spec.sync is not None and spec.sync.kind == "flux" else {}
    if not options.get("root"):
        return None
    root = str(PurePosixPath(expand(options["root"], app, env))).strip("/")
    return ("" if root == "." else root, expand(options["namespace"], app, env), expand(options["name"], app, env))


def check_config(repo: Path, config_file: Path | None = None) -> list[str]:
    """Every problem of ``<repo>/.prbot.yml`` (or `config_file`) as ``FILE:LINE: message`` lines;
    ``[]`` when valid.

    Besides the file itself this checks what only the repository can tell: that a configured
    Helm chart directory exists and holds a ``Chart.yaml``, and that every `apps[].path` pattern
    matches a directory in some environment (a typo would otherwise plan nothing, silently).
    """
    repo = Path(repo)
    checked = check_file(repo, config_file)
    config, lines = checked.config, checked.lines
    if config is None:
        return checked.errors
    problems: list[tuple[int, str]] = []
    for i, app in enumerate(config.apps):
        if app.helm is None or not app.helm.chart:
            continue
        chart = app.helm.chart.strip("/")
        where = f"apps[{i}].helm.chart"
        if not (repo / chart).is_dir():
            problems.append((lines.get(where, 1), f"{where}: {chart}: no such directory in the repository"))
        elif not (repo / chart / "Chart.yaml").is_file():
            problems.append((lines.get(where, 1), f"{where}: {chart}: no Chart.yaml in that directory"))
    for index, message in unmatched_paths(config, repo):
        problems.append((config.apps[index].line or 1, message))
    return [f"{checked.filename}:{line}: {msg}" for line, msg in sorted(problems, key=lambda p: p[0])]


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
        if _matches(DiskTree(root), spec, envs):
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
            for name in list_dirs(base):
                got = _match_segment(segment, name)
                if got is not None and ("env" not in got or got["env"] in envs):
                    below.append(f"{rel}/{name}" if rel else name)
        if not below:
            where = ", ".join(f"{m}/" for m in matched[:3] if m) or "the repository root"
            if len(matched) > 3:
                where += f" and {len(matched) - 3} more"
            names = sorted({n for rel in matched for n in list_dirs(root / rel if rel else root)})
            hint = ""
            if not _PLACEHOLDER.search(segment):
                close = difflib.get_close_matches(segment, names, n=1, cutoff=0.6)
                hint = f"; did you mean {json.dumps(close[0])}?" if close else ""
            elif "{env}" in segment:
                hint = f"; {{env}} matches only {', '.join(envs)}"
            return f": nothing matches {json.dumps(segment)} in {where}{hint}"
        matched = below
    return ""



"""Targets: expanding `apps[].path` patterns into (app, env, directory, renderer).

Discovery only lists the directories a pattern can match, segment by segment, so a repository of
thousands of directories costs what its patterns touch, not its size.  Nothing is rendered here.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
from pathlib import Path, PurePosixPath

from prbot import renderers
from prbot.config import AppSpec, Config, check_file
from prbot.errors import ConfigError
from prbot.model import DiskTree, Target, TreeReader, expand

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


def _excluded(spec: AppSpec, rel: str) -> bool:
    """Whether an `exclude` glob of the app matches the directory `rel` or one above it."""
    return any(_glob_matches(glob.strip("/"), rel) for glob in spec.exclude)


def _glob_matches(glob: str, rel: str) -> bool:
    """A glob over repository-relative directories, segment by segment (`*`, `?`, `[…]` within one
    segment, `**` across any number); matching a directory excludes everything below it too."""
    def match(gs: tuple[str, ...], ps: tuple[str, ...]) -> bool:
        if not gs:
            return True                          # the glob named a directory above: all below it
        if gs[0] == "**":
            return any(match(gs[1:], ps[i:]) for i in range(len(ps) + 1))
        return bool(ps) and fnmatch.fnmatchcase(ps[0], gs[0]) and match(gs[1:], ps[1:])
    return bool(glob) and match(PurePosixPath(glob).parts, PurePosixPath(rel).parts)


def _matches(tree: TreeReader, spec: AppSpec, envs: list[str]) -> list[tuple[str, str, str]]:
    """(directory, app, env) for every directory the spec's pattern matches, per environment: a
    pattern without {env} names a directory that is a target in every environment (of the spec's
    `environments`, when given).  `{env}` matches the word the app's `env_names` gives an
    environment; directories matching an `exclude` glob are left out."""
    out: list[tuple[str, str, str]] = []
    for rel, bound in _expand_pattern(tree, spec.path.strip("/")):
        app = bound.get("app") or spec.name
        if not app or _excluded(spec, rel):
            continue
        word = bound.get("env")
        env = spec.env_of(word, envs) if word is not None else None
        if word is not None and env is None:
            continue
        for name in ([env] if env is not None else envs):
            if spec.in_env(name):
                out.append((rel, app, name))
    return out


# Files that are no input of any renderer: a directory holding only these (and subdirectories)
# is no target, silently.
_INERT_FILE = re.compile(r"(?i)(\..*|.*\.(md|txt|rst|adoc)|license.*|owners.*|codeowners|notice.*)")


def _renders_something(tree: TreeReader, rel: str, renderer: str) -> bool:
    """A plain directory with no manifest (only subdirectories, a .gitkeep …) is no target: it
    would show as an empty new target in every plan."""
    return renderer != "plain" or tree.has_manifest(rel)


def _unrendered_files(tree: TreeReader, rel: str) -> list[str]:
    """The files of a directory no renderer takes that look like inputs of another tool (jsonnet,
    a config management plugin's files): configured, yet nothing would render them."""
    return [name for name in tree.list_files(rel) if not _INERT_FILE.fullmatch(name)]


def _renderer(tree: TreeReader, rel: str, spec: AppSpec) -> str:
    """The renderer of a target directory: each renderer module decides (`prbot.renderers`)."""
    return renderers.detect_renderer(tree, rel, spec)


def discover_targets(config: Config, root: Path, *, tree: TreeReader | None = None) -> list[Target]:
    """Every target of the repository checked out at `root` (or of `tree`, which then answers
    instead of the disk), in promotion order then by app.  A problem only the tree shows (a
    directory two apps match in one environment, a configured directory no renderer takes) is a
    `ConfigError` naming the configuration file and line."""
    targets, problems = find_targets(config, root, tree=tree)
    if problems:
        raise ConfigError([f"{config.source}:{line}: {message}" for line, message in problems])
    return targets


def find_targets(config: Config, root: Path, *, tree: TreeReader | None = None,
                 ) -> tuple[list[Target], list[tuple[int, str]]]:
    """`discover_targets`'s targets and problems, as (line, message), without raising."""
    root = Path(root)
    reader = tree if tree is not None else DiskTree(root)
    envs = config.env_names
    found: dict[tuple[str, str], Target] = {}
    problems: list[tuple[int, str]] = []
    unrendered: set[str] = set()
    for index, spec in enumerate(config.apps):
        where = f"apps[{index}].path"
        for rel, app, env in _matches(reader, spec, envs):
            outside = reader.leaves(rel)
            if outside:                 # a linked directory leading out: nothing there is read, the
                renderer = "helm" if spec.helm and spec.helm.chart else "plain"    # closure refuses it
            else:
                renderer = _renderer(reader, rel, spec)
                if not _renders_something(reader, rel, renderer):
                    files = _unrendered_files(reader, rel)
                    if files and rel not in unrendered:
                        unrendered.add(rel)
                        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
                        problems.append((spec.line or 1, f"{where}: {rel}: no renderer takes this directory "
                                         f"(it holds {shown}; prbot renders kustomize, Helm and plain "
                                         "manifests): exclude it or render it to manifests"))
                    continue
            word = spec.env_word(env)
            chart: str | None = None
            values: tuple[str, ...] = ()
            optional: tuple[str, ...] = ()
            if renderer == "helm":
                chart = (spec.helm.reference or spec.helm.chart.strip("/")) if spec.helm and spec.helm.chart \
                    else rel                    # a remote chart: its reference text (prbot.remote)
                names = spec.helm.values if spec.helm and spec.helm.values else ()
                if not names and chart != rel and not outside and \
                        reader.is_file(f"{rel}/values.yaml" if rel else "values.yaml"):
                    names = ("values.yaml",)
                values = tuple(str(PurePosixPath(rel) / expand(v, app, word)) for v in names)
                optional = tuple(str(PurePosixPath(rel) / expand(v, app, word)) for v in names
                                 if spec.helm is not None and spec.helm.is_optional(v))
            ns = expand(spec.namespace, app, word) if spec.namespace else None
            key = (app, env)
            if key in found:
                other = found[key]
                mine = f"apps[{index}]" if other.app_index != index else "it"
                problems.append((spec.line or 1, f"{where}: app {app!r} in environment {env!r} is matched twice: "
                                 f"{other.path} (apps[{other.app_index}], line {config.apps[other.app_index].line}) "
                                 f"and {rel} ({mine}); give one an `exclude` or a fixed `name`"))
                continue
            found[key] = Target(app=app, env=env, path=rel, renderer=renderer, app_index=index,
                                namespace=ns, chart=chart, values=values, optional_values=optional,
                                load_restrictor=spec.kustomize.load_restrictor if spec.kustomize else "root_only",
                                env_label=word if word != env else None,
                                flux=_flux_root(spec, app, word))
    targets = sorted(found.values(), key=lambda t: (envs.index(t.env), t.app))
    return targets, problems


def tree_problems(config: Config, root: Path, *, tree: TreeReader | None = None) -> list[tuple[int, str]]:
    """Every problem of `config` only the tree at `root` shows, as (line, message): path patterns
    that match nothing, directories matched twice, configured directories no renderer takes.  What
    `check-config`, `targets` and `plan` all refuse."""
    reader = tree if tree is not None else DiskTree(Path(root))
    problems = [(config.apps[i].line or 1, message) for i, message in unmatched_paths(config, Path(root), tree=reader)]
    problems += find_targets(config, root, tree=reader)[1]
    return sorted(problems, key=lambda p: p[0])


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
        if app.helm is None or not app.helm.chart or app.helm.reference:     # remote: fetched by a plan
            continue
        chart = app.helm.chart.strip("/")
        where = f"apps[{i}].helm.chart"
        if not (repo / chart).is_dir():
            problems.append((lines.get(where, 1), f"{where}: {chart}: no such directory in the repository"))
        elif not (repo / chart / "Chart.yaml").is_file():
            problems.append((lines.get(where, 1), f"{where}: {chart}: no Chart.yaml in that directory"))
    problems += tree_problems(config, repo)
    return [f"{checked.filename}:{line}: {msg}" for line, msg in sorted(problems, key=lambda p: p[0])]


def unmatched_indexes(config: Config, tree: TreeReader) -> list[int]:
    """Indexes in `config.apps` of the path patterns that match no directory in `tree`."""
    envs = config.env_names
    return [index for index, spec in enumerate(config.apps) if not _matches(tree, spec, envs)]


def unmatched_paths(config: Config, root: Path, *, tree: TreeReader | None = None) -> list[tuple[int, str]]:
    """(index in `config.apps`, message) for each `apps[].path` that matches no directory in any
    of its environments — a typo, which would otherwise plan nothing without a word."""
    reader = tree if tree is not None else DiskTree(Path(root))
    envs = config.env_names
    out: list[tuple[int, str]] = []
    for index, spec in enumerate(config.apps):
        if _matches(reader, spec, envs):
            continue
        where = f"apps[{index}].path"
        scope = f" (environments: {', '.join(spec.environments)})" if spec.environments else ""
        excluded = " (the exclude globs leave none)" if spec.exclude and _matches(
            reader, AppSpec(path=spec.path, name=spec.name, environments=spec.environments,
                            env_names=spec.env_names), envs) else ""
        out.append((index, f"{where}: {json.dumps(spec.path)} matches no directory in any environment"
                           f"{scope}{excluded}{_closest(reader, spec, envs)}"))
    return out


def _closest(tree: TreeReader, spec: AppSpec, envs: list[str]) -> str:
    """Where a pattern stops matching, with a did-you-mean for a literal segment."""
    words = [spec.env_word(e) for e in envs]
    matched: list[str] = [""]
    for segment in PurePosixPath(spec.path.strip("/")).parts:
        below: list[str] = []
        for rel in matched:
            for name in tree.list_dirs(rel):
                got = _match_segment(segment, name)
                if got is not None and ("env" not in got or got["env"] in words):
                    below.append(f"{rel}/{name}" if rel else name)
        if not below:
            where = ", ".join(f"{m}/" for m in matched[:3] if m) or "the repository root"
            if len(matched) > 3:
                where += f" and {len(matched) - 3} more"
            names = sorted({n for rel in matched for n in tree.list_dirs(rel)})
            hint = ""
            if not _PLACEHOLDER.search(segment):
                close = difflib.get_close_matches(segment, names, n=1, cutoff=0.6)
                hint = f"; did you mean {json.dumps(close[0])}?" if close else ""
            elif "{env}" in segment:
                hint = f"; {{env}} matches only {', '.join(words)}"
            return f": nothing matches {json.dumps(segment)} in {where}{hint}"
        matched = below
    return ""



"""kustomize: `kustomize build` (or `kubectl kustomize`) with the load restrictor and no plugins.

Closure rule: the kustomization file(s) of the target directory and of every directory it reaches,
and every file or URL any of their fields names — `resources`, `bases`, `components`, `patches`,
`patchesStrategicMerge`, `patchesJson6902`, `configMapGenerator`/`secretGenerator` (`files`,
`envs`, `env`), `crds`, `configurations`, `openapi.path`, `replacements[].path`, `helmCharts`
(+ `helmGlobals`), `helmChartInflationGenerator` — and the builtin plugin configurations listed in
`generators`, `transformers` and `validators`, whether inline (a YAML document in the list, block or
flow style), in a file, or built by a kustomization directory: their `files`/`envs`/`env`
(ConfigMapGenerator, SecretGenerator), `path` (PatchTransformer, PatchJson6902Transformer), `paths`
(PatchStrategicMergeTransformer), `replacements[].path` (ReplacementTransformer), `chartHome`,
`valuesFile`, `additionalValuesFiles`, `repo` (HelmChartInflationGenerator).  kustomize resolves a
configuration's paths against the kustomization that lists it, so do we.  Every other string in a
configuration that names a file there counts too (a kustomization directory can patch its
configurations, and more inputs only make the digest more sensitive).  Which top-level field holds
what is said once, in `INPUT_FIELDS` and `INERT_FIELDS` below: the closure rule follows the first,
the plan's cheap scan of a kustomization (`scan_references`) reads every field but the inert ones.

The render then runs on a copy of the closure alone: a file the rule above missed fails the render
(a clear error) instead of changing it unseen.  `helmGlobals.configHome` is refused: prbot gives Helm
its own empty configuration.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from prbot.config import LOAD_RESTRICTORS, AppSpec
from prbot.errors import RenderError
from prbot.model import KUSTOMIZATION_FILES, Target, TreeReader
from prbot.renderers.base import Renderer, RenderJob, parse_documents, run
from prbot.renderers.closure import (
    Closure,
    ClosureBuilder,
    ClosureCache,
    Invalid,
    items,
    join,
    norm,
    parse_text,
    scalars,
    strings,
)
from prbot.tools import find_tool, which

# libyaml (None when PyYAML is built without it): the plan's cheap scan (`scan_references`) composes with it
_CSafeLoader: Any = getattr(yaml, "CSafeLoader", None)

# --------------------------------------------------------------------------------------------
# Which kustomization field holds what: the one place that says it.  The closure rule follows the
# fields in INPUT_FIELDS (`_follow`); the plan's cheap scan (`scan_references`) reads every field
# but the inert ones and leaves a kustomization holding a field in SCAN_REFUSED to its closure.
# --------------------------------------------------------------------------------------------

FILE_OR_DIR = "a file, or a directory holding a kustomization"
PLUGIN_CONFIGS = "builtin plugin configurations: inline, in a file, or built by a kustomization directory"
PATH_ITEMS = "items naming a file in `path`"
PATCH_FILES = "patch files (inline patches name none)"
GENERATOR_SOURCES = "generators naming files in `files` ([key=]path), `envs` and `env`"
FILES = "files"
PATH_MAPPING = "a mapping naming a file in `path`"
HELM = "helm charts, their values files and `chartHome` (followed together, after every other field)"

# The top-level fields naming inputs, in the order the closure rule follows them.
INPUT_FIELDS: dict[str, str] = {
    "resources": FILE_OR_DIR, "bases": FILE_OR_DIR, "components": FILE_OR_DIR,
    "generators": PLUGIN_CONFIGS, "transformers": PLUGIN_CONFIGS, "validators": PLUGIN_CONFIGS,
    "patches": PATH_ITEMS, "patchesStrategicMerge": PATCH_FILES, "patchesJson6902": PATH_ITEMS,
    "configMapGenerator": GENERATOR_SOURCES, "secretGenerator": GENERATOR_SOURCES,
    "crds": FILES, "configurations": FILES,
    "openapi": PATH_MAPPING,
    "replacements": PATH_ITEMS,
    "helmCharts": HELM, "helmGlobals": HELM, "helmChartInflationGenerator": HELM,
}
# Top-level fields that never name a file.  The scan reads every other field, known or not (so a
# field the closure rule learns to follow later is covered without a change there).
INERT_FIELDS = frozenset({"apiVersion", "kind", "metadata", "namespace", "namePrefix", "nameSuffix",
                          "commonLabels", "labels", "commonAnnotations", "images", "replicas",
                          "buildMetadata", "sortOptions", "vars"})
# Fields inside the scanned ones whose values are never paths: generator literals and options,
# patch selectors and inline patches.
INERT_SUBFIELDS = frozenset({"literals", "options", "target", "patch"})
# Fields whose inputs a scan of scalars cannot see (files named inside plugin configurations,
# charts): a kustomization holding one is left to its closure.
SCAN_REFUSED = frozenset(name for name, holds in INPUT_FIELDS.items() if holds in (PLUGIN_CONFIGS, HELM))
# Fields of a plugin configuration whose values are never paths (left out of the closure's broad
# scan of a configuration, `plugin_config`).
_INERT_CONFIG_FIELDS = frozenset({"literals", "metadata", "apiVersion", "kind", "options", "target",
                                  "patch", "patches", "jsonOp", "fieldSpecs", "valuesInline"})


class KustomizeRenderer(Renderer):
    name = "kustomize"

    def detect(self, tree: TreeReader, rel: str, spec: AppSpec) -> bool:
        return any(tree.is_file(join(rel, name)) for name in KUSTOMIZATION_FILES)

    def closure(self, cache: ClosureCache, root: str, target: Target) -> Closure:
        return kustomization_closure(cache, root, norm(target.path), ())

    def fingerprint_tools(self) -> tuple[str, ...]:
        return ("kustomize", "kubectl", "helm3", "helm")

    def render(self, job: RenderJob) -> list[dict[str, Any]]:
        kustomize = which("kustomize")
        if kustomize:
            argv, label = [kustomize, "build"], "kustomize build"
        else:
            argv, label = [find_tool("kubectl"), "kustomize"], "kubectl kustomize"
        # the app's `kustomize.load_restrictor`: "none" lets a kustomization read files above its
        # root, which is safe because the render sees only its closure (inside the repository)
        argv += ["--load-restrictor", LOAD_RESTRICTORS.get(job.target.load_restrictor, "LoadRestrictionsRootOnly")]
        if job.closure.helm_charts:
            argv += ["--enable-helm", "--helm-command", which("helm3") or find_tool("helm")]
            if job.kube_version:
                argv += ["--helm-kube-version", job.kube_version]
        argv.append(job.target.path or ".")
        with job.staged() as (home, tree):
            if job.remotes:
                place_remotes(tree, job.remotes, job.closure.vendor_at)
            try:
                text = run(job, argv, label=label, cwd=tree, home=home)
            except RenderError as exc:
                if job.closure.helm_charts and "helm version -c" in str(exc):
                    raise RenderError(f"{label}: helmCharts need Helm 3 (this kustomize runs 'helm version -c', "
                                      "which Helm 4 rejects): run `prbot tools install`, which adds one as "
                                      "helm3") from exc
                raise
        return parse_documents(text, f"{label} {job.target.path or '.'}", max_bytes=job.limits.output,
                               limits=job.limits, deadline=job.deadline)


# --------------------------------------------------------------------------------------------
# Remote bases fetched by prbot (prbot.remote), placed next to the staged tree
# --------------------------------------------------------------------------------------------

REMOTE_DIR = ".prbot-remote"


def place_remotes(tree: Path, remotes: Mapping[str, Any],
                  vendor_at: tuple[tuple[str, str], ...] = ()) -> None:
    """Copy fetched remotes (`prbot.remote.Vendored`, by the reference text kustomize reads) into the
    staged tree and point the kustomizations reading them at the copies: a git base becomes the
    directory `.prbot-remote/<id>/<path>`, a file a sibling of the kustomization naming it (the load
    restrictor wants files below their kustomization), a chart the directory kustomize would have
    pulled it into (`vendor_at`).  kustomize never sees a URL."""
    for ref, where in vendor_at:
        vendored = remotes.get(ref)
        if vendored is not None and vendored.fetched.ref.kind == "chart":
            for rel in vendored.files:
                (tree / where / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(vendored.fetched.root / rel, tree / where / rel)
    remotes = {r: v for r, v in remotes.items() if v.fetched.ref.kind != "chart"}
    placed: dict[str, Any] = {}

    def place(vendored: Any) -> None:
        if vendored.slug in placed:
            return
        placed[vendored.slug] = vendored
        if vendored.fetched.ref.kind == "git":
            dest = tree / REMOTE_DIR / vendored.slug
            for rel in vendored.files:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(vendored.fetched.root / rel, dest / rel)
        for inner in vendored.nested.values():
            place(inner)

    for vendored in remotes.values():
        place(vendored)
    _point(tree, [p for p in tree.rglob("*") if p.name in KUSTOMIZATION_FILES
                  and REMOTE_DIR not in p.relative_to(tree).parts], remotes, tree)
    for vendored in placed.values():
        if vendored.fetched.ref.kind == "git" and vendored.nested:
            root = tree / REMOTE_DIR / vendored.slug
            _point(root, [p for p in root.rglob("*") if p.name in KUSTOMIZATION_FILES], vendored.nested, tree)


def _point(root: Path, kfiles: list[Path], remotes: Mapping[str, Any], tree: Path) -> None:
    for kfile in kfiles:
        text = original = kfile.read_text(encoding="utf-8")
        for ref, vendored in remotes.items():
            if ref not in text:
                continue
            if vendored.fetched.ref.kind == "git":
                target = tree / REMOTE_DIR / vendored.slug / vendored.fetched.ref.path
                local = os.path.relpath(target, kfile.parent)
            else:
                local = f"{REMOTE_DIR}-{vendored.slug}-{vendored.fetched.file}"
                shutil.copyfile(vendored.fetched.root / vendored.fetched.file, kfile.parent / local)
            pattern = re.compile(rf"(?<![^\s\"'\[,]){re.escape(ref)}(?=[\s\"',\]]|$)", re.MULTILINE)
            text = pattern.sub(local.replace("\\", "\\\\"), text)
        if text != original:
            kfile.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The closure rule
# --------------------------------------------------------------------------------------------

def kustomization_closure(cache: ClosureCache, root: str, kdir: str, stack: tuple[str, ...]) -> Closure:
    """The closure of the kustomization in `kdir` (memoised per cache; a cycle is an error)."""
    got = cache.peek("kustomization", root, kdir)
    if got is not None:
        return got
    if kdir in stack:
        cycle = " -> ".join((*stack, kdir))
        return Closure(frozenset(), errors=(f"{kdir}: kustomization cycle ({cycle})",))
    return cache.memo("kustomization", root, kdir, lambda: _kustomization(cache, root, kdir, stack))


def _kustomization(cache: ClosureCache, root: str, kdir: str, stack: tuple[str, ...]) -> Closure:
    acc = ClosureBuilder()
    listing = cache.listing(root, kdir)     # exact names, also on case-insensitive file systems
    names = [n for n in KUSTOMIZATION_FILES if n in listing and cache.kind(root, join(kdir, n)) == "file"]
    acc.missing.update(join(kdir, n) for n in KUSTOMIZATION_FILES if n not in names)
    if not names:
        acc.errors.append(f"{kdir or '.'}: no kustomization.yaml, kustomization.yml or Kustomization")
        return acc.freeze()
    for n in names:
        acc.files.update(cache.with_real(root, join(kdir, n)))
    kfile = join(kdir, names[0])
    doc = cache.load(root, kfile)
    if isinstance(doc, Invalid):
        acc.errors.append(f"{kfile}: {doc.message}")
    elif doc is not None and not isinstance(doc, dict):
        acc.errors.append(f"{kfile}: not a kustomization (expected a mapping)")
    elif doc:
        _follow(cache, root, kdir, kfile, doc, acc, (*stack, kdir))
    return acc.freeze()


_REPO_SPEC = re.compile(r"^(?:git::|(?:ssh|https?|file)://|[A-Za-z][A-Za-z0-9-]*@|github\.com[/:])", re.IGNORECASE)


def kustomize_clones(ref: str) -> bool:
    """Whether kustomize reads `ref` (a resource that is not a local file) as a git repository to
    clone — whatever exists locally: a scheme (`https://`, `ssh://`, `file://`), `git::`, an
    scp-style `user@host:path`, or `github.com/…` (kustomize's `NewRepoSpecFromURL`)."""
    return bool(_REPO_SPEC.match(ref.strip()))


def _file_or_dir(cache: ClosureCache, root: str, kdir: str, ref: Any, where: str, acc: ClosureBuilder,
                 stack: tuple[str, ...]) -> tuple[str, str] | None:
    """resources / bases / components / generators …: a file, or a directory holding a kustomization.
    Returns (kind, repo-relative path) of what was found locally.  As kustomize does: a local file
    first, then a repository to clone, then a local directory."""
    if isinstance(ref, str) and kustomize_clones(ref):
        local = cache.local_or_remote(root, kdir, ref, where, ClosureBuilder()) if "://" not in ref else None
        if local is None or cache.kind(root, local) != "file":
            acc.remote.append(ref.strip())
            return None
    rel = cache.local_or_remote(root, kdir, ref, where, acc)
    if rel is None:
        return None
    kind = cache.kind(root, rel)
    if kind == "dir":
        acc.parts.append(kustomization_closure(cache, root, rel, stack))
        return "dir", rel
    if kind == "file":
        acc.files.update(cache.with_real(root, rel))
        return "file", rel
    acc.missing.add(rel)
    acc.errors.append(f"{where}: {rel or '.'} does not exist")
    return None


def inline_documents(entry: str) -> list[dict[str, Any]] | None:
    """The documents of a list entry that is an inline YAML configuration or patch (what kustomize
    tries first), or None when the entry is a path."""
    stripped = entry.strip()
    if not stripped or not any(ch in stripped for ch in ":\n{"):
        return None
    docs = parse_text(stripped.encode("utf-8"), all_documents=True)
    if isinstance(docs, Invalid) or not isinstance(docs, list):
        return None
    maps = [d for d in docs if isinstance(d, dict)]
    return maps if maps and len(maps) == len([d for d in docs if d is not None]) else None


def _follow(cache: ClosureCache, root: str, kdir: str, kfile: str, doc: dict[str, Any], acc: ClosureBuilder,
            stack: tuple[str, ...]) -> None:
    """Every input the fields of a kustomization (`doc`, read from `kfile`) name (`INPUT_FIELDS`)."""
    for section, holds in INPUT_FIELDS.items():
        where = f"{kfile}: {section}"
        value = doc.get(section)
        if holds == FILE_OR_DIR:
            for ref in strings(value):
                _file_or_dir(cache, root, kdir, ref, where, acc, stack)
        elif holds == PLUGIN_CONFIGS:
            for ref in strings(value):
                _plugins(cache, root, kdir, ref, where, acc, stack)
        elif holds == PATH_ITEMS:
            for item in items(value):
                if isinstance(item, dict) and item.get("path") is not None:
                    cache.add_file(root, kdir, item["path"], where, acc)
        elif holds == PATCH_FILES:
            for item in strings(value):
                if inline_documents(item) is None:
                    cache.add_file(root, kdir, item, where, acc)
        elif holds == GENERATOR_SOURCES:
            for gen in items(value):
                if isinstance(gen, dict):
                    _sources(cache, root, kdir, gen, where, acc)
        elif holds == FILES:
            for ref in strings(value):
                cache.add_file(root, kdir, ref, where, acc)
        elif holds == PATH_MAPPING:
            if isinstance(value, dict) and value.get("path") is not None:
                cache.add_file(root, kdir, value["path"], where, acc)
    # HELM: the chart fields together (the deprecated generator is turned into the other two)
    raw_globals = doc.get("helmGlobals")
    helm_globals: dict[str, Any] = raw_globals if isinstance(raw_globals, dict) else {}
    charts = [c for c in items(doc.get("helmCharts")) if isinstance(c, dict)]
    legacy = [c for c in items(doc.get("helmChartInflationGenerator")) if isinstance(c, dict)]
    if legacy:                     # kustomize turns the deprecated form into helmCharts + helmGlobals
        helm_globals = dict(helm_globals)
        for old in legacy:
            if old.get("chartHome"):
                helm_globals["chartHome"] = old["chartHome"]
            if old.get("helmHome"):
                helm_globals["configHome"] = old["helmHome"]
        charts += [{"name": c.get("chartName"), "version": c.get("chartVersion"), "repo": c.get("chartRepoUrl"),
                    "valuesFile": c.get("values")} for c in legacy]
    if charts:
        _helm_charts(cache, root, kdir, f"{kfile}: helmCharts", helm_globals, charts, acc)


def _sources(cache: ClosureCache, root: str, kdir: str, gen: dict[str, Any], where: str, acc: ClosureBuilder) -> None:
    """`files` (`[key=]path`), `envs` and `env` of a ConfigMap/Secret generator."""
    for entry in strings(gen.get("files")):
        path = entry.split("=", 1)[1] if "=" in entry else entry
        cache.add_file(root, kdir, path, f"{where} files", acc)
    for entry in strings(gen.get("envs")):
        cache.add_file(root, kdir, entry, f"{where} envs", acc)
    if isinstance(gen.get("env"), str) and gen["env"]:
        cache.add_file(root, kdir, gen["env"], f"{where} env", acc)


def _plugins(cache: ClosureCache, root: str, kdir: str, ref: str, where: str, acc: ClosureBuilder,
             stack: tuple[str, ...]) -> None:
    """One entry of `generators` / `transformers` / `validators`: inline configurations, a file of
    configurations, or a kustomization directory building them."""
    inline = inline_documents(ref)
    if inline is not None:
        for config in inline:
            plugin_config(cache, root, kdir, config, f"{where} (inline)", acc)
        return
    found = _file_or_dir(cache, root, kdir, ref, where, acc, stack)
    if found is None:
        return
    kind, rel = found
    if kind == "file":
        files = [rel]
    else:                          # every file the directory's build reads may carry configurations
        built = kustomization_closure(cache, root, rel, stack)
        files = sorted(built.files)
    for path in files:
        docs = cache.load(root, path, all_documents=True)
        if isinstance(docs, Invalid):
            if path == rel:
                acc.errors.append(f"{where}: {path}: {docs.message}")
            continue
        for config in docs:
            if isinstance(config, dict):
                plugin_config(cache, root, kdir, config, f"{where}: {path}", acc)


def plugin_config(cache: ClosureCache, root: str, kdir: str, config: dict[str, Any], where: str,
                  acc: ClosureBuilder) -> None:
    """The inputs a builtin plugin configuration names; its paths are relative to `kdir`, the
    kustomization listing it."""
    kind = config.get("kind")
    if kind in ("ConfigMapGenerator", "SecretGenerator"):
        _sources(cache, root, kdir, config, f"{where} {kind}", acc)
    elif kind in ("PatchTransformer", "PatchJson6902Transformer"):
        if config.get("path") is not None:
            cache.add_file(root, kdir, config["path"], f"{where} {kind} path", acc)
    elif kind == "PatchStrategicMergeTransformer":
        for entry in strings(config.get("paths")):
            if inline_documents(entry) is None:
                cache.add_file(root, kdir, entry, f"{where} {kind} paths", acc)
    elif kind == "ReplacementTransformer":
        for item in items(config.get("replacements")):
            if isinstance(item, dict) and item.get("path") is not None:
                cache.add_file(root, kdir, item["path"], f"{where} {kind} replacements", acc)
    elif kind == "HelmChartInflationGenerator":
        _helm_charts(cache, root, kdir, f"{where} {kind}", config, [config], acc)
    for value in scalars(config, _INERT_CONFIG_FIELDS):
        cache.add_existing(root, kdir, value, acc)
        if "=" in value:
            cache.add_existing(root, kdir, value.split("=", 1)[1], acc)


def _helm_charts(cache: ClosureCache, root: str, kdir: str, where: str, helm_globals: dict[str, Any],
                 charts: list[dict[str, Any]], acc: ClosureBuilder) -> None:
    """Charts kustomize inflates: `<chartHome>/<name>` (or `<chartHome>/<name>-<version>/<name>` when
    pulled from `repo`), values files, and the chart's own values.yaml."""
    acc.helm_charts = True
    if helm_globals.get("configHome"):
        acc.outside.append(f"{where}: configHome {helm_globals['configHome']}: Helm's configuration "
                           "directory is prbot's to set")
    home_ref = helm_globals.get("chartHome") or "charts"
    home = cache.resolve(root, kdir, str(home_ref), f"{where}: chartHome", acc)
    for chart in charts:
        name = str(chart.get("name") or "")
        repo = str(chart.get("repo") or "")
        version = str(chart.get("version") or "")
        if not name:
            acc.errors.append(f"{where}: a chart without a name")
            continue
        if home is not None:
            sub = f"{name}-{version}/{name}" if version and repo else name
            chart_dir = cache.resolve(root, home, sub, f"{where}: chart {name}", acc)
            if chart_dir is not None:
                if cache.kind(root, chart_dir) == "dir":
                    acc.parts.append(cache.tree(root, chart_dir))
                elif repo:
                    acc.missing.add(chart_dir)
                    suffix = f" (version {version})" if version else " (chart)"
                    acc.remote.append(f"{repo.rstrip('/')}/{name}{suffix}")
                    acc.vendor_at.append((f"{repo.rstrip('/')}/{name}{suffix}", chart_dir))
                else:
                    acc.missing.add(chart_dir)
                    acc.errors.append(f"{where}: chart {name} not found at {chart_dir} and no repo given")
        for ref in (chart.get("valuesFile"), *strings(chart.get("additionalValuesFiles"))):
            if ref:
                cache.add_file(root, kdir, ref, f"{where} values", acc)


# --------------------------------------------------------------------------------------------
# The plan's cheap scan: what a kustomization may name, without building its closure
# --------------------------------------------------------------------------------------------

CAN_SCAN = _CSafeLoader is not None

if _CSafeLoader is not None:
    class _Composer(_CSafeLoader):  # type: ignore[misc,valid-type]
        """libyaml composing nodes without resolving implicit tags (the scan wants strings only)."""

        def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
            return ""


def scan_references(text: bytes) -> list[str] | None:
    """Every string the kustomization `text` may name a file or directory with, for a scan cheaper
    than its closure (`prbot.plan.probe.TreeProbe`).  A superset: every scalar of every field but
    `INERT_FIELDS` (keys included, `INERT_SUBFIELDS` left out), as itself and after a ``key=``,
    stripped; empty ones left out.  None when such a scan cannot vouch for the kustomization: no
    libyaml, not UTF-8, invalid YAML or several documents, not a mapping, a merge key, or a field
    in `SCAN_REFUSED`."""
    if not CAN_SCAN:
        return None
    try:
        loader = _Composer(text.decode("utf-8"))
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except Exception:  # noqa: BLE001 - any failure (invalid YAML, several documents): the closure decides
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    refs: list[str] = []
    for key, value in root.value:
        if not isinstance(key, yaml.ScalarNode) or key.value == "<<":      # a merge key
            return None
        if key.value in SCAN_REFUSED:
            return None
        if key.value in INERT_FIELDS:
            continue
        for scalar in _scalar_nodes(value):
            candidates = (scalar.strip(), scalar.split("=", 1)[1].strip()) if "=" in scalar else (scalar.strip(),)
            refs.extend(ref for ref in candidates if ref)
    return refs


def _scalar_nodes(node: Any) -> Iterator[str]:
    """Every scalar value below a composed YAML node, keys included, inert sub-fields left out."""
    seen: set[int] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.ScalarNode):
            yield str(current.value)
        elif isinstance(current, yaml.SequenceNode):
            pending.extend(current.value)
        elif isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.value in INERT_SUBFIELDS:
                    continue
                pending.append(key)
                pending.append(value)

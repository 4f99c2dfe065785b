"""Expansions: what the cluster would create from an object a target renders.

A Flux `HelmRelease` installs a chart, a Flux `Kustomization` builds a path, an Argo CD `Application`
renders its sources.  Each such (API group, kind) has an `Expander` (one module each, one line in
`prbot.expand.EXPANDERS`); after a target renders, every object with an expander is expanded and the
target's objects become its own plus the expanded ones (recursively, up to `MAX_DEPTH`).

Two duties per expander:
- `inputs(doc, ctx)`: from one raw YAML document of the target's closure files, the repository paths
  (with the renderer that would read them, or None for a file or a whole directory such as a chart)
  and the remote references it would read.  The closure rule (`closure_extension`) adds them, so
  "affected" and the render cache key follow them; remote ones are *optional*
  (`Closure.optional_remote`): fetched when `render.remote` allows them, otherwise that expansion
  is "not expanded", never the target skipped.  `template_inputs(root, rel, text)` does the same
  from a closure file that is a Helm template (a Helm target's own chart templating the objects).
- `expand(obj, ctx)`: the objects, rendered in the same jail and limits as any render
  (`ExpandContext.render_path`, `ExpandContext.render_chart`) from a copy of the closure's files alone;
  `ExpandError(reason)` when it cannot be done.  The target keeps its own objects and the reason is
  shown per object (`Rendered.not_expanded`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from prbot.errors import ExpandError, RenderError
from prbot.limits import Limits
from prbot.model import KUSTOMIZATION_FILES, PLAIN_SUFFIXES, Target
from prbot.remote import Vendored
from prbot.renderers import get_renderer
from prbot.renderers.base import RenderJob, parse_documents, run
from prbot.renderers.closure import Closure, ClosureBuilder, ClosureCache, Invalid, norm
from prbot.tools import find_tool, which

log = logging.getLogger("prbot.expand")

MAX_DEPTH = 3
"""Expansions of expansions: an Application rendering Applications, a Kustomization rendering
HelmReleases … stop this deep, the deeper ones named as not expanded."""

MAX_VALUES = 1024 * 1024
"""Bytes of values (JSON) one chart expansion may pass to Helm."""


# --------------------------------------------------------------------------------------------
# What a target rendered, with what came from expansions
# --------------------------------------------------------------------------------------------

class Rendered(list[dict[str, Any]]):
    """A target's objects (a list, as before) plus what expansions added: `origins` (index of an
    expanded object -> "HelmRelease apps/podinfo", the object it came from) and `not_expanded`
    ("HelmRelease apps/podinfo: why")."""

    def __init__(self, objects: Sequence[dict[str, Any]] = (), origins: Mapping[int, str] | None = None,
                 not_expanded: Sequence[str] = ()) -> None:
        super().__init__(objects)
        self.origins: dict[int, str] = dict(origins or {})
        self.not_expanded: list[str] = list(not_expanded)

    def origin_of(self, index: int) -> str | None:
        return self.origins.get(index)

    def encode(self) -> str:
        """JSON text of the whole (the render cache keeps this)."""
        body: dict[str, Any] = {"objects": list(self)}
        if self.origins:
            body["origins"] = {str(k): v for k, v in self.origins.items()}
        if self.not_expanded:
            body["not_expanded"] = self.not_expanded
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def decode(cls, data: Any) -> Rendered:
        """From `encode`'s JSON value (or a bare list of objects)."""
        if isinstance(data, list):
            return cls(data)
        origins = {int(k): str(v) for k, v in (data.get("origins") or {}).items()}
        return cls(data.get("objects") or [], origins, [str(n) for n in data.get("not_expanded") or []])


# --------------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------------

@dataclass
class Inputs:
    """What expanding one document reads: repository paths (`(path, renderer name or None)`: None
    is a file, or every file below a directory such as a chart) and remote references (the text
    `prbot.remote.parse_ref` reads, e.g. ``https://charts.example/podinfo (version 6.x)``)."""

    local: list[tuple[str, str | None]] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class InputsContext:
    """What `Expander.inputs` may look at: the tree, the target, the file the document is in, and
    every raw document of the target's closure files (to find a HelmRepository by name …)."""

    root: str
    target: Target
    path: str
    docs: Sequence[tuple[str, dict[str, Any]]]

    def find_docs(self, kind: str, name: str | None = None, group: str | None = None) -> list[dict[str, Any]]:
        """Raw documents of this kind (and name, and API group), whatever their namespace (a
        kustomization may set it): a superset of what the rendering holds."""
        return [d for _, d in self.docs if d.get("kind") == kind and (name is None or meta(d).get("name") == name)
                and (group is None or api_group(d.get("apiVersion")) == group)]


class Expander(ABC):
    """Expands objects of `kinds` ((API group, kind) pairs) into what the cluster would create."""

    kinds: ClassVar[tuple[tuple[str, str], ...]]
    looks_at: ClassVar[tuple[str, ...]] = ()
    """API groups of the other documents `inputs` looks up in `InputsContext.docs` (sources …)."""

    @abstractmethod
    def inputs(self, doc: dict[str, Any], ctx: InputsContext) -> Inputs:
        """Static, from one raw YAML document: a best-effort superset of what `expand` reads.
        Never raises for odd documents."""

    @abstractmethod
    def expand(self, obj: dict[str, Any], ctx: ExpandContext) -> list[dict[str, Any]]:
        """The objects the cluster would get from `obj` (one rendered object); ExpandError(reason)."""

    def template_inputs(self, root: str, rel: str, text: str) -> Inputs:
        """From the text of one closure file that is a Helm template (it holds `{{` and an API group
        of `kinds`: a chart's own templates, which cannot be read as YAML before Helm renders them): a
        best-effort superset of what expanding the objects it renders reads.  Never raises."""
        return Inputs()


@dataclass
class ExpandContext:
    """Everything an expansion may use (see the module doc)."""

    root: Path                                   # the tree rendered
    target: Target
    closure: Closure                             # the target's closure: what is staged is read from it
    limits: Limits
    kube_version: str | None = None
    deadline: float | None = None
    remotes: Mapping[str, Vendored] = field(default_factory=dict)      # optional remote ref -> fetched
    remote_problems: Mapping[str, str] = field(default_factory=dict)   # optional remote ref -> why not fetched
    repository_urls: tuple[str, ...] = ()        # URLs meaning "this repository" (normalised)
    objects: list[dict[str, Any]] = field(default_factory=list)         # every object rendered so far
    depth: int = 0
    origin: str = ""                             # the object being expanded ("HelmRelease apps/podinfo")
    cache: ClosureCache | None = None

    # ---------------------------------------------------------------- lookups
    def find(self, kind: str, namespace: str | None, name: str, group: str | None = None) -> dict[str, Any] | None:
        """The rendered object of this kind, namespace and name (the target's namespace for one
        naming none), or None."""
        for obj in self.objects:
            if obj.get("kind") != kind or meta(obj).get("name") != name:
                continue
            if group is not None and api_group(obj.get("apiVersion")) != group:
                continue
            if namespace is not None and (meta(obj).get("namespace") or self.target.namespace) != namespace:
                continue
            return obj
        return None

    def this_repository(self, url: Any) -> bool:
        """Whether `url` (a GitRepository's url, an Application's repoURL) names the repository
        being planned: its origin, or one listed in `render.repository`."""
        got = normalise_repository_url(url)
        return got is not None and got in self.repository_urls

    def remote(self, ref: str) -> Vendored:
        """The fetched copy of an optional remote reference; ExpandError saying why there is none."""
        got = self.remotes.get(ref)
        if got is not None:
            return got
        problem = self.remote_problems.get(ref)
        if problem is None:
            problem = (f"{ref} was not fetched: prbot found no such reference in the target's files "
                       "(one made by a patch or a substitution is not followed)")
        raise ExpandError(problem)

    # ---------------------------------------------------------------- paths in the tree
    def local_path(self, ref: Any, what: str, base: str = "") -> str:
        """The repository-relative path `ref` names (relative to `base`); ExpandError when it is not
        a path inside the repository."""
        if not isinstance(ref, str) or not ref.strip() or "\0" in ref:
            raise ExpandError(f"{what}: {str(ref)[:100]!r} is not a path")
        ref = ref.strip()
        if posixpath.isabs(ref) or os.path.isabs(ref) or re.match(r"^[A-Za-z]:[\\/]", ref):
            raise ExpandError(f"refused: {what} {ref[:200]} is an absolute path outside the repository")
        rel = posixpath.normpath(posixpath.join(base, ref))
        if rel == ".." or rel.startswith("../"):
            raise ExpandError(f"refused: {what} {ref[:200]} leaves the repository")
        rel = "" if rel == "." else rel
        cache = self.cache or ClosureCache()
        if cache.kind(os.fspath(self.root), rel) == "outside":
            raise ExpandError(f"refused: {what} {ref[:200]} resolves (through a symbolic link) outside the repository")
        return rel

    def files_below(self, rel: str) -> list[str]:
        """The closure's files at or below `rel`."""
        prefix = f"{rel}/" if rel else ""
        return sorted(f for f in self.closure.files if f == rel or f.startswith(prefix))

    def render_path(self, rel: str, renderer: str | None = None, *, namespace: str | None = None,
                    chart: str | None = None, values: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Render the repository directory `rel` (a kustomization, a chart, plain manifests: the
        renderer detected like a target's when None) from a copy of what its closure reads, which
        must be inside the target's closure (else ExpandError naming the file missed)."""
        cache = self.cache or ClosureCache()
        root = os.fspath(self.root)
        if renderer is None:
            renderer = ("kustomize" if any(cache.kind(root, posixpath.join(rel, n) if rel else n) == "file"
                                           for n in KUSTOMIZATION_FILES)
                        else "helm" if cache.kind(root, posixpath.join(rel, "Chart.yaml") if rel else "Chart.yaml")
                        == "file" else "plain")
        target = Target(self.target.app, self.target.env, rel, renderer, namespace=namespace, chart=chart,
                        values=tuple(values))
        closure = cache.closure(root, target)
        if closure.outside:
            raise ExpandError(f"refused: {closure.outside[0]}")
        if closure.errors:
            raise ExpandError(closure.errors[0])
        missed = sorted(closure.files - self.closure.files)
        if missed:
            raise ExpandError(f"{missed[0]} is not among the target's inputs")
        if closure.remote:
            raise ExpandError(f"{rel or '.'} reads the remote {closure.remote[0]}: vendor it into the repository")
        try:
            return get_renderer(renderer).render(RenderJob(root=self.root, target=target, closure=closure,
                                                           limits=self.limits, kube_version=self.kube_version,
                                                           deadline=self.deadline))
        except RenderError as exc:
            if exc.transient:
                raise
            raise ExpandError(str(exc)) from exc

    @contextlib.contextmanager
    def scratch(self) -> Iterator[tuple[Path, Path]]:
        """(scratch home, empty tree): where an expansion stages what it runs a tool on."""
        with tempfile.TemporaryDirectory(prefix="prbot-expand-") as home:
            tree = Path(home) / "tree"
            tree.mkdir(mode=0o700)
            yield Path(home), tree

    def stage_local(self, rel: str, dest: Path) -> None:
        """Copy the closure's files below `rel` to `dest` (keeping their paths below `rel`)."""
        files = self.files_below(rel)
        if not files:
            kind = (self.cache or ClosureCache()).kind(os.fspath(self.root), rel)
            if kind == "missing":
                raise ExpandError(f"{rel or '.'} does not exist")
            raise ExpandError(f"{rel or '.'} exists but is not among the target's inputs (prbot's reading of "
                              "what the target reads missed it)")
        for f in files:
            inner = f[len(rel) + 1:] if rel else f
            out = dest / inner
            out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copyfile(os.path.join(self.root, f), out, follow_symlinks=True)

    def run(self, argv: list[str], *, label: str, cwd: Path, home: Path) -> str:
        """Run a tool in the jail, under the render limits and the plan's deadline."""
        job = RenderJob(root=self.root, target=self.target, closure=self.closure, limits=self.limits,
                        kube_version=self.kube_version, deadline=self.deadline)
        return run(job, argv, label=label, cwd=cwd, home=home)

    def render_chart(self, chart: str | Vendored, release: str, namespace: str, values: Mapping[str, Any], *,
                     include_crds: bool = True, values_files: Sequence[str] = (),
                     post_kustomize: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
        """`helm template` of a chart (a repository path inside the closure, or a fetched remote chart)
        with `values` (`values_files`: repository paths merged into the chart's values.yaml, in
        order, as Flux's source controller does), then each `post_kustomize` (a kustomization's
        `patches`, `images` …, applied by kustomize in the jail) in order."""
        text = json.dumps(values, ensure_ascii=False)
        if len(text) > MAX_VALUES:
            raise ExpandError(f"refused: its values are larger than {MAX_VALUES // 1024} KiB")
        with self.scratch() as (home, tree):
            chart_dir = tree / "chart"
            if isinstance(chart, str):
                escapes = (self.cache or ClosureCache()).tree(os.fspath(self.root), chart).outside
                if escapes:
                    raise ExpandError(f"refused: {escapes[0]}")
                self.stage_local(chart, chart_dir)
            else:
                chart_dir.mkdir(mode=0o700)
                for f in sorted(chart.files):
                    out = chart_dir / f
                    out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    shutil.copyfile(chart.fetched.root / f, out, follow_symlinks=False)
            if not (chart_dir / "Chart.yaml").is_file():
                raise ExpandError(f"the chart {chart if isinstance(chart, str) else chart.fetched.ref.url} "
                                  "holds no Chart.yaml")
            if values_files:
                merged: dict[str, Any] = {}
                for rel in values_files:
                    if rel not in self.closure.files:
                        raise ExpandError(f"values file {rel} is not among the target's inputs")
                    merged = deep_merge(merged, load_values_file(self.root, rel))
                (chart_dir / "values.yaml").write_text(json.dumps(merged, ensure_ascii=False), encoding="utf-8")
            (tree / "values.json").write_text(text, encoding="utf-8")
            argv = [find_tool("helm"), "template", release, "./chart", "--namespace", namespace,
                    "--values", "./values.json", "--skip-tests"]
            if include_crds:
                argv.append("--include-crds")
            if self.kube_version:
                argv += ["--kube-version", self.kube_version]
            try:
                printed = self.run(argv, label="helm template", cwd=tree, home=home)
                for index, kustomization in enumerate(post_kustomize):
                    printed = self._kustomize(printed, kustomization, index, home)
                return parse_documents(printed, f"helm template {release}", max_bytes=self.limits.output,
                                       limits=self.limits, deadline=self.deadline)
            except RenderError as exc:
                if exc.transient:
                    raise
                raise ExpandError(str(exc)) from exc

    def _kustomize(self, text: str, kustomization: Mapping[str, Any], index: int, home: Path) -> str:
        """`text` through a kustomization of `patches`/`images`/… (no resources of its own): a Flux
        post-renderer."""
        allowed = ("patches", "patchesStrategicMerge", "patchesJson6902", "images", "commonLabels",
                   "commonAnnotations", "labels")
        body: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                                "resources": ["helm-output.yaml"]}
        for key in allowed:
            if kustomization.get(key) is not None:
                body[key] = kustomization[key]
        # inline patches only: a patch `path` would read a file nobody staged
        for patch in body.get("patches") or []:
            if isinstance(patch, dict) and "path" in patch:
                raise ExpandError("postRenderers: a patch path is not read (only inline patches)")
        work = Path(tempfile.mkdtemp(prefix=f"post-{index}-", dir=home))
        (work / "helm-output.yaml").write_text(text, encoding="utf-8")
        (work / "kustomization.yaml").write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
        kustomize = which("kustomize")
        argv = [kustomize, "build"] if kustomize else [find_tool("kubectl"), "kustomize"]
        argv += ["--load-restrictor", "LoadRestrictionsRootOnly", "."]
        return self.run(argv, label="postRenderers kustomize", cwd=work, home=home)


# --------------------------------------------------------------------------------------------
# Small shared helpers
# --------------------------------------------------------------------------------------------

def meta(obj: Any) -> dict[str, Any]:
    m = obj.get("metadata") if isinstance(obj, dict) else None
    return m if isinstance(m, dict) else {}


def api_group(api_version: Any) -> str:
    text = api_version if isinstance(api_version, str) else ""
    return text.rsplit("/", 1)[0] if "/" in text else ""


def describe(obj: dict[str, Any], default_namespace: str | None = None) -> str:
    """`HelmRelease apps/podinfo`: how the comment names an object expansions come from."""
    m = meta(obj)
    name = str(m.get("name") or "?")
    namespace = m.get("namespace") or default_namespace
    return f"{obj.get('kind')} {namespace}/{name}" if namespace else f"{obj.get('kind')} {name}"


def within_target(closure: Closure, ctx: ExpandContext, rel: str) -> Closure:
    """`closure` (what an expansion will read for the directory `rel`) when it is readable: nothing
    outside the repository, no error, nothing remote, every file among the target's own inputs (what
    the plan hashed); ExpandError naming the first problem otherwise."""
    if closure.outside:
        raise ExpandError(f"refused: {closure.outside[0]}")
    if closure.errors:
        raise ExpandError(closure.errors[0])
    if closure.remote:
        raise ExpandError(f"{rel or '.'} reads the remote {closure.remote[0]}: vendor it into the repository")
    missed = sorted(closure.files - ctx.closure.files)
    if missed:
        raise ExpandError(f"{missed[0]} is not among the target's inputs")
    return closure


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's and Flux's merge of values: maps merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_text(root: Path, rel: str, what: str = "") -> str:
    """The text of the staged file `rel` (`what` names it in messages, e.g. "values file "), at most
    `MAX_VALUES` bytes of UTF-8; ExpandError otherwise."""
    try:
        with open(os.path.join(root, rel), "rb") as fh:
            data = fh.read(MAX_VALUES + 1)
    except OSError as exc:
        raise ExpandError(f"{what}{rel} cannot be read ({exc.strerror})") from exc
    if len(data) > MAX_VALUES:
        raise ExpandError(f"refused: {what}{rel} is larger than {MAX_VALUES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExpandError(f"{what}{rel} is not UTF-8 text") from exc


def load_values_file(root: Path, rel: str) -> dict[str, Any]:
    from prbot.yamlio import YAML_ERRORS, load_yaml

    text = read_text(root, rel, "values file ")
    try:
        doc = load_yaml(text)
    except YAML_ERRORS as exc:  # type: ignore[misc]
        raise ExpandError(f"values file {rel} is not YAML") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ExpandError(f"values file {rel} is not a mapping")
    return doc


_SCP_LIKE = re.compile(r"^(?:[\w.-]+@)?(?P<host>[\w.-]+):(?!//)(?P<path>.*)$")


def normalise_repository_url(url: Any) -> str | None:
    """`host/owner/name` (host lower-cased, no scheme, credentials, port of ssh, `.git` or trailing
    `/`) for a git URL in any of its spellings (https, ssh://git@host/, git@host:), or None."""
    if not isinstance(url, str):
        return None
    text = url.strip()
    if not text or len(text) > 2048 or any(c.isspace() for c in text):
        return None
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme.lower() not in ("https", "http", "ssh", "git"):
            return None
        host = (parts.hostname or "").lower()
        path = parts.path
    else:
        m = _SCP_LIKE.match(text)
        if not m:
            return None
        host, path = m["host"].lower(), m["path"]
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[:-4]
    path = path.strip("/")
    if not host or not path or ".." in path.split("/"):
        return None
    return f"{host}/{path}"


# --------------------------------------------------------------------------------------------
# The closure rule: what expansions read, from the raw documents of the target's files
# --------------------------------------------------------------------------------------------

def raw_documents(cache: ClosureCache, root: str, files: Iterable[str],
                  markers: Sequence[bytes]) -> list[tuple[str, dict[str, Any]]]:
    """Every mapping document of the YAML/JSON files among `files` whose text holds one of
    `markers` (the API groups expanders know: a cheap test before any parse)."""
    memo: dict[tuple[str, str], list[dict[str, Any]]] = cache.__dict__.setdefault("_expand_docs", {})
    out: list[tuple[str, dict[str, Any]]] = []
    for rel in sorted(files):
        got = memo.get((root, rel))
        if got is None:
            got = memo[(root, rel)] = _documents(cache, root, rel, markers)
        out.extend((rel, d) for d in got)
    return out


def _documents(cache: ClosureCache, root: str, rel: str, markers: Sequence[bytes]) -> list[dict[str, Any]]:
    if not rel.endswith(PLAIN_SUFFIXES):
        return []
    data = cache._read(root, rel)[1]           # hashed on the way: the digest reads it from the cache
    if data is None or len(data) > MAX_VALUES * 8 or not any(m in data for m in markers):
        return []
    docs = cache.load(root, rel, all_documents=True)
    if isinstance(docs, Invalid) or not isinstance(docs, list):
        return []
    return [d for d in docs if isinstance(d, dict)]


def closure_extension(expanders: Mapping[tuple[str, str], Expander]) -> Any:
    """The `prbot.renderers.closure.CLOSURE_EXTENSIONS` rule for these expanders."""
    def extend(cache: ClosureCache, root: str, target: Target, closure: Closure) -> Closure:
        if target.app == "expand-input" or not expanders:
            return closure                  # a path an expansion reads: the caller's rounds go on
        markers = sorted({group.encode() for group, _ in expanders}
                         | {group.encode() for e in expanders.values() for group in e.looks_at})
        seen_docs: set[str] = set()
        for _ in range(MAX_DEPTH + 1):
            new = [f for f in closure.files if f not in seen_docs]
            if not new:
                break
            seen_docs.update(new)
            acc = ClosureBuilder()
            for rel, text in _templates(cache, root, new, markers):
                for scanner in dict.fromkeys(expanders.values()):
                    try:
                        got = scanner.template_inputs(root, rel, text)
                    except Exception:  # noqa: BLE001 - best effort, as `inputs`
                        log.debug("template inputs of %s", rel, exc_info=True)
                        continue
                    for path, renderer in got.local:
                        _add_local(cache, root, target, path, renderer, acc)
                    acc.optional_remote.extend(r for r in got.remote if isinstance(r, str) and r)
            docs = raw_documents(cache, root, closure.files, markers)
            if not docs:
                closure = closure | acc.freeze()
                continue                    # the templates' paths (if any) are read in the next round
            for rel, doc in docs:
                expander = expanders.get((api_group(doc.get("apiVersion")), str(doc.get("kind"))))
                if expander is None:
                    continue
                try:
                    got = expander.inputs(doc, InputsContext(root, target, rel, docs))
                except Exception:  # noqa: BLE001 - inputs are best effort; the expansion says what is wrong
                    log.debug("inputs of %s in %s", describe(doc), rel, exc_info=True)
                    continue
                for path, renderer in got.local:
                    _add_local(cache, root, target, path, renderer, acc)
                acc.optional_remote.extend(r for r in got.remote if isinstance(r, str) and r)
            closure = closure | acc.freeze()
        return closure

    return extend


TEMPLATE_SUFFIXES = (*PLAIN_SUFFIXES, ".tpl")
MAX_TEMPLATE_BYTES = 256 * 1024
"""Only this much of a template is looked at for the paths its objects read."""


def _templates(cache: ClosureCache, root: str, files: Iterable[str],
               markers: Sequence[bytes]) -> list[tuple[str, str]]:
    """(path, text) of the files among `files` that are Helm templates holding one of `markers`."""
    memo: dict[tuple[str, str], str | None] = cache.__dict__.setdefault("_expand_templates", {})
    out: list[tuple[str, str]] = []
    for rel in sorted(files):
        if (root, rel) not in memo:
            memo[(root, rel)] = _template_text(root, rel, markers)
        text = memo[(root, rel)]
        if text is not None:
            out.append((rel, text))
    return out


def _template_text(root: str, rel: str, markers: Sequence[bytes]) -> str | None:
    if not rel.endswith(TEMPLATE_SUFFIXES):
        return None
    try:
        with open(os.path.join(root, rel), "rb") as fh:
            data = fh.read(MAX_TEMPLATE_BYTES)
    except OSError:
        return None
    if b"{{" not in data or not any(m in data for m in markers):
        return None
    return data.decode("utf-8", "replace")


def _add_local(cache: ClosureCache, root: str, target: Target, path: Any, renderer: str | None,
               acc: ClosureBuilder) -> None:
    """Add one path an expansion reads; paths leaving the repository are left out (the expansion
    refuses them when it runs: they must not refuse the target)."""
    if not isinstance(path, str) or "\0" in path or posixpath.isabs(path) or os.path.isabs(path):
        return
    rel = norm(posixpath.normpath(path)) if path.strip() else ""
    if rel == ".." or rel.startswith("../"):
        return
    kind = cache.kind(root, rel)
    if kind == "outside":
        return
    if kind == "missing":
        acc.missing.add(rel)
        return
    if renderer is not None and kind == "dir":
        sub = Target("expand-input", target.env, rel, renderer, namespace=target.namespace)
        part = cache.closure(root, sub)
        acc.parts.append(dataclasses.replace(part, errors=(), outside=(), _cache=None))
    elif kind == "dir":
        acc.parts.append(dataclasses.replace(cache.tree(root, rel), outside=()))
    elif kind == "file":
        acc.files.update(cache.with_real(root, rel))


def expand_objects(objects: list[dict[str, Any]], ctx: ExpandContext,
                   expanders: Mapping[tuple[str, str], Expander]) -> Rendered:
    """The target's objects plus every expansion (depth first, up to `MAX_DEPTH`); what could not be
    expanded is named in `Rendered.not_expanded`, never raised."""
    out = Rendered(objects)
    ctx.objects = out
    pending: list[tuple[int, int, str]] = [(i, 0, "") for i in range(len(out))]   # (index, depth, chain)
    while pending:
        index, depth, chain = pending.pop(0)
        obj = out[index]
        expander = expanders.get((api_group(obj.get("apiVersion")), str(obj.get("kind"))))
        if expander is None:
            continue
        name = describe(obj, ctx.target.namespace)
        if depth >= MAX_DEPTH:
            out.not_expanded.append(f"{name}: expansions nested more than {MAX_DEPTH} deep")
            continue
        if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
            out.not_expanded.append(f"{name}: {ctx.limits.describe('plan_budget')} ran out")
            continue
        sub = dataclasses.replace(ctx, depth=depth, origin=name, objects=out)
        try:
            made = expander.expand(obj, sub)
        except ExpandError as exc:
            out.not_expanded.append(f"{name}: {exc}")
            continue
        except RenderError as exc:
            if exc.transient:
                raise
            out.not_expanded.append(f"{name}: {exc}")
            continue
        except RecursionError:
            out.not_expanded.append(f"{name}: nested too deeply")
            continue
        except Exception as exc:  # noqa: BLE001 - one odd object must not take the target; its text may hold values
            log.warning("expanding %s of %s: %s", name, ctx.target.key, type(exc).__name__)
            out.not_expanded.append(f"{name}: prbot could not expand it ({type(exc).__name__})")
            continue
        if len(out) + len(made) > ctx.limits.max_objects:
            out.not_expanded.append(f"{name}: refused: the target would have more than "
                                    f"{ctx.limits.max_objects:,} objects ({ctx.limits.describe('max_objects')})")
            continue
        origin = f"{chain} › {name}" if chain else name
        for new in made:
            out.append(new)
            out.origins[len(out) - 1] = origin
            pending.append((len(out) - 1, depth + 1, origin))
    return out

"""Argo CD `Application` (argoproj.io/v1alpha1): what each of its sources renders, as Argo CD would.

The pure part reads one Application into an `AppPlan`: per source (`spec.source`, or each of
`spec.sources[]`, which win when both are set) where it comes from and with which options.
- A source whose `repoURL` names this repository (`this_repo`, the framework's matching) and has a
  `path`: a repository directory, checked to stay inside the repository (no `..` climbing out, no
  absolute path).  Its renderer is the explicit one (`kustomize:` / `helm:` / `directory:` set) or, as
  Argo CD's discovery does, `kustomize` when the directory holds a kustomization file, `helm` with a
  `Chart.yaml`, else a plain directory (`directory.recurse`, `include` / `exclude` globs; `*.jsonnet`
  and config management plugins are not rendered, and named).
- Kustomize options (`images`, `namePrefix`, `nameSuffix`, `commonLabels`, `commonAnnotations`,
  `namespace`, `replicas`, `patches`, `components`) become a kustomization *around* the path
  (`wrapper_kustomization`), rendered by kustomize itself; Argo CD instead edits the path's own
  kustomization, which differs only where that file sets the same field (a `namePrefix` there is
  kept under the Application's one, not replaced).
- Helm options become `helm template` arguments in Argo CD's order (`helm_arguments`): `valueFiles`
  (relative to the chart, or `$name/…` from the source declaring `ref: name`), then `values` /
  `valuesObject` (the object wins), then `parameters` (`--set`, or `--set-string` with
  `forceString`) and `fileParameters`; the release is `releaseName` or the Application's name, the
  namespace `helm.namespace` or the destination namespace.
- A `chart` source is a chart from a chart repository (`https://…` → the remote reference text
  ``"URL/NAME (version V)"`` that `prbot.remote.parse_ref` reads) or an OCI registry (a repoURL
  without a scheme, as Argo CD writes them, or `oci://…`).
- A path in another repository is the remote git reference ``URL//PATH?ref=REV`` — never read from
  the local checkout, whatever its URL looks like.
- `targetRevision` of a source in this repository: prbot renders the revision it plans (the pull
  request's head, and its base), whatever revision the source names: a change to the path is shown
  where the Application is, as the change that reaches the cluster once that revision has it.
- Applications written by Helm templates (a chart an Application's source names, or a Helm target's
  own chart: `template_inputs`) cannot be read as YAML before Helm renders them: what they read is
  taken from the templates' text, a superset — the literal part of each `path:` and `$ref/…` value
  (`envs/{{ .Values.env }}` → `envs`), and for a path computed entirely by a template
  (`{{ .path | default .name }}`) the whole repository: an Application path computed entirely by a
  template makes every file of the repository an input of that target.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from prbot.diff import CLUSTER_SCOPED, api_group
from prbot.errors import ExpandError, RenderError
from prbot.expand.base import MAX_VALUES, ExpandContext, Expander, Inputs, InputsContext, read_text, within_target
from prbot.model import Target
from prbot.remote import Vendored
from prbot.renderers import get_renderer
from prbot.renderers.base import RenderJob, parse_documents, parse_file
from prbot.renderers.closure import Closure, ClosureCache, stage
from prbot.tools import find_tool

GROUP = "argoproj.io"
KIND = "Application"

KUSTOMIZE, HELM, PLAIN = "kustomize", "helm", "plain"
_EXPLICIT = (("kustomize", KUSTOMIZE), ("helm", HELM), ("directory", PLAIN))
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class ValueFile:
    """One `valueFiles` entry: a repository path (this repository), a remote reference, or refused."""

    text: str
    path: str = ""                 # repo-relative, when it is read from this repository
    remote: str = ""               # a URL or `$ref` into another repository
    problem: str = ""
    in_chart: bool = False         # a file of a chart fetched from a chart repository (`path` inside it)


@dataclass(frozen=True)
class HelmOptions:
    value_files: tuple[ValueFile, ...] = ()
    values: Any = None             # the mapping `values` / `valuesObject` holds (the object wins)
    values_problem: str = ""
    parameters: tuple[tuple[str, str, bool], ...] = ()      # (name, value, forceString)
    file_parameters: tuple[tuple[str, ValueFile], ...] = ()
    release_name: str = ""
    namespace: str = ""
    ignore_missing: bool = False
    skip_crds: bool = False
    api_versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class KustomizeOptions:
    images: tuple[str, ...] = ()
    name_prefix: str = ""
    name_suffix: str = ""
    common_labels: Mapping[str, str] = field(default_factory=dict)
    common_annotations: Mapping[str, str] = field(default_factory=dict)
    label_without_selector: bool = False
    namespace: str = ""
    replicas: tuple[tuple[str, Any], ...] = ()
    patches: tuple[Mapping[str, Any], ...] = ()        # inline `patch:` or `path:` (repo-relative after reading)
    components: tuple[str, ...] = ()                    # repo-relative

    @property
    def empty(self) -> bool:
        return self == KustomizeOptions()


@dataclass(frozen=True)
class DirectoryOptions:
    recurse: bool = False
    include: str = ""
    exclude: str = ""


@dataclass(frozen=True)
class SourcePlan:
    """What one source of an Application renders."""

    where: str                     # "spec.source" | "spec.sources[N]"
    repo_url: str
    local: bool                    # repoURL names this repository
    path: str = ""                 # repo-relative directory (local), or the path in the remote repository
    chart: str = ""
    revision: str = ""
    ref: str = ""                  # `ref:` name other sources use as `$name/…`
    explicit: str = ""             # the renderer its options name ("" = discover from the directory)
    remote: str = ""               # remote reference text (chart, or git path of another repository)
    problem: str = ""              # why it cannot be rendered (named, never read)
    helm: HelmOptions = HelmOptions()
    kustomize: KustomizeOptions = KustomizeOptions()
    directory: DirectoryOptions = DirectoryOptions()

    @property
    def ref_only(self) -> bool:
        """A source that only lends its files to `$ref` value files: Argo CD renders nothing from it."""
        return bool(self.ref) and not self.path and not self.chart


@dataclass(frozen=True)
class AppPlan:
    name: str
    namespace: str                 # destination namespace ("" = none)
    sources: tuple[SourcePlan, ...]
    problem: str = ""              # the Application as a whole cannot be read


# --------------------------------------------------------------------------------------------
# Reading an Application
# --------------------------------------------------------------------------------------------

def is_application(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        return False
    api = doc.get("apiVersion")
    return isinstance(api, str) and api.startswith(GROUP + "/")


def describe(doc: Mapping[str, Any]) -> str:
    """`Application argocd/guestbook` (what the comment names)."""
    meta = _mapping(doc.get("metadata"))
    name, ns = _text(meta.get("name")), _text(meta.get("namespace"))
    return f"Application {ns}/{name}" if ns else f"Application {name}"


def read_application(doc: Mapping[str, Any], this_repo: Callable[[str], bool]) -> AppPlan:
    """The sources of the Application `doc` and what each renders (see the module doc).  Never raises
    for odd documents: what cannot be read is a `problem` named on the source or the plan."""
    meta = _mapping(doc.get("metadata"))
    spec = _mapping(doc.get("spec"))
    name = _text(meta.get("name"))
    dest = _mapping(spec.get("destination"))
    namespace = _text(dest.get("namespace"))
    raw = spec.get("sources")
    if isinstance(raw, list) and raw:
        entries = [(f"spec.sources[{i}]", s) for i, s in enumerate(raw)]
    elif isinstance(spec.get("source"), dict):
        entries = [("spec.source", spec["source"])]
    else:
        return AppPlan(name, namespace, (), problem="it has no spec.source or spec.sources")
    refs: dict[str, SourcePlan] = {}
    firsts: list[SourcePlan] = []
    for where, src in entries:
        plan = _read_source(where, src, this_repo, name)
        if plan.ref and plan.ref not in refs:
            refs[plan.ref] = plan
        firsts.append(plan)
    sources = tuple(_resolve_values(p, refs) for p in firsts)
    return AppPlan(name, namespace, sources)


def _read_source(where: str, src: Any, this_repo: Callable[[str], bool], app_name: str) -> SourcePlan:
    if not isinstance(src, dict):
        return SourcePlan(where, "", False, problem=f"{where} is not a mapping")
    repo_url = src["repoURL"].strip() if isinstance(src.get("repoURL"), str) else ""
    revision = _text(src.get("targetRevision")).strip()
    chart = _text(src.get("chart")).strip()
    ref = _text(src.get("ref")).strip()
    raw_path = src.get("path")
    path_text = _text(raw_path) if raw_path is not None else ""
    explicit = [r for key, r in _EXPLICIT if _set(src.get(key))]
    base = SourcePlan(where, repo_url, False, path=path_text, chart=chart, revision=revision, ref=ref,
                      explicit=explicit[0] if len(explicit) == 1 else "")
    if not repo_url:
        return replace(base, problem=f"{where} has no repoURL")
    if _set(src.get("plugin")):
        return replace(base, problem=f"{where}: config management plugins are not rendered by prbot")
    if len(explicit) > 1:
        return replace(base, problem=f"{where}: multiple application source types ({', '.join(explicit)})")
    if chart:
        remote = chart_ref(repo_url, chart, revision)
        if isinstance(remote, Problem):
            return replace(base, problem=f"{where}: {remote.text}")
        return replace(base, remote=remote, explicit=HELM,
                       helm=_helm_options(src.get("helm"), "", app_name, local=False))
    local = this_repo(repo_url)
    if raw_path is None and ref:
        return replace(base, local=local)                          # only lends files to `$ref`
    rel = safe_path(path_text, "")
    if isinstance(rel, Problem):
        return replace(base, local=local, problem=f"{where}: path {path_text!r} {rel.text}")
    if not local:
        return replace(base, path=rel, remote=git_ref(repo_url, rel, revision))
    if isinstance(src.get("directory"), dict) and _set(src["directory"].get("jsonnet")):
        return replace(base, local=True, path=rel, problem=f"{where}: jsonnet is not rendered by prbot")
    return replace(base, local=True, path=rel,
                   helm=_helm_options(src.get("helm"), rel, app_name, local=True),
                   kustomize=_kustomize_options(src.get("kustomize"), rel),
                   directory=_directory_options(src.get("directory")))


def _resolve_values(plan: SourcePlan, refs: Mapping[str, SourcePlan]) -> SourcePlan:
    """`$name/…` value files and file parameters read from the source declaring `ref: name`."""
    if plan.problem or not (plan.helm.value_files or plan.helm.file_parameters):
        return plan
    files = tuple(_resolve_value_file(v, plan, refs) for v in plan.helm.value_files)
    params = tuple((n, _resolve_value_file(v, plan, refs)) for n, v in plan.helm.file_parameters)
    return replace(plan, helm=replace(plan.helm, value_files=files, file_parameters=params))


def _resolve_value_file(vf: ValueFile, plan: SourcePlan, refs: Mapping[str, SourcePlan]) -> ValueFile:
    if vf.problem or not vf.text.startswith("$"):
        return vf
    name, _, rest = vf.text[1:].partition("/")
    source = refs.get(name)
    if source is None:
        return replace(vf, problem=f"${name} names no source of this Application (no source has ref: {name})")
    if not rest:
        return replace(vf, problem=f"{vf.text} names no file")
    if not source.local:
        return replace(vf, remote=git_ref(source.repo_url, rest, source.revision))
    rel = safe_path(rest, "")
    if isinstance(rel, Problem):
        return replace(vf, problem=f"{vf.text} {rel.text}")
    return replace(vf, path=rel)


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

def _helm_options(raw: Any, chart_dir: str, app_name: str, *, local: bool) -> HelmOptions:
    helm = raw if isinstance(raw, dict) else {}
    files: list[ValueFile] = []
    for item in helm.get("valueFiles") or []:
        files.append(_value_file(_text(item), chart_dir, local))
    values: Any = None
    problem = ""
    if isinstance(helm.get("valuesObject"), dict):
        values = helm["valuesObject"]
    elif isinstance(helm.get("values"), str) and helm["values"].strip():
        try:
            values = yaml.safe_load(helm["values"])
        except yaml.YAMLError as exc:
            problem = f"helm.values is not YAML ({' '.join(str(exc).split())[:200]})"
        if values is not None and not isinstance(values, dict):
            problem, values = "helm.values is not a mapping", None
    params = tuple((_text(p.get("name")), _text(p.get("value")), p.get("forceString") is True)
                   for p in helm.get("parameters") or [] if isinstance(p, dict) and _text(p.get("name")))
    file_params = tuple((_text(p.get("name")), _value_file(_text(p.get("path")), chart_dir, local))
                        for p in helm.get("fileParameters") or [] if isinstance(p, dict) and _text(p.get("name")))
    return HelmOptions(
        value_files=tuple(files), values=values, values_problem=problem, parameters=params,
        file_parameters=file_params, release_name=_text(helm.get("releaseName")) or app_name,
        namespace=_text(helm.get("namespace")), ignore_missing=helm.get("ignoreMissingValueFiles") is True,
        skip_crds=helm.get("skipCrds") is True,
        api_versions=tuple(_text(v) for v in helm.get("apiVersions") or [] if _text(v)))


def _value_file(text: str, chart_dir: str, local: bool) -> ValueFile:
    if not text:
        return ValueFile(text, problem="an empty value file name")
    if text.startswith("$"):
        return ValueFile(text)                  # resolved against the `ref:` sources
    if _SCHEME.match(text):
        return ValueFile(text, remote=text)
    rel = safe_path(text, chart_dir)
    if isinstance(rel, Problem):
        return ValueFile(text, problem=f"{text} {rel.text}")
    return ValueFile(text, path=rel, in_chart=not local)


def _kustomize_options(raw: Any, path: str) -> KustomizeOptions:
    k = raw if isinstance(raw, dict) else {}
    replicas = tuple((_text(r.get("name")), r.get("count")) for r in k.get("replicas") or []
                     if isinstance(r, dict) and _text(r.get("name")))
    patches: list[Mapping[str, Any]] = []
    for p in k.get("patches") or []:
        if not isinstance(p, dict):
            continue
        entry = {key: p[key] for key in ("patch", "target", "options") if key in p}
        if isinstance(p.get("path"), str):
            rel = safe_path(p["path"], path)
            entry["path"] = rel.text if isinstance(rel, Problem) else rel
            if isinstance(rel, Problem):
                entry["problem"] = f"patch {p['path']} {rel.text}"
        patches.append(entry)
    components: list[str] = []
    for c in k.get("components") or []:
        rel = safe_path(_text(c), path)
        components.append(f"!{c} {rel.text}" if isinstance(rel, Problem) else rel)
    return KustomizeOptions(
        images=tuple(_text(i) for i in k.get("images") or [] if _text(i)),
        name_prefix=_text(k.get("namePrefix")), name_suffix=_text(k.get("nameSuffix")),
        common_labels=_string_map(k.get("commonLabels")), common_annotations=_string_map(k.get("commonAnnotations")),
        label_without_selector=k.get("labelWithoutSelector") is True, namespace=_text(k.get("namespace")),
        replicas=replicas, patches=tuple(patches), components=tuple(components))


def _directory_options(raw: Any) -> DirectoryOptions:
    d = raw if isinstance(raw, dict) else {}
    return DirectoryOptions(recurse=d.get("recurse") is True, include=_text(d.get("include")),
                            exclude=_text(d.get("exclude")))


def kustomize_problems(opts: KustomizeOptions) -> list[str]:
    out = [str(p["problem"]) for p in opts.patches if "problem" in p]
    out += [c[1:] for c in opts.components if c.startswith("!")]
    return out


# --------------------------------------------------------------------------------------------
# Paths and references
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    text: str


def safe_path(text: str, base: str) -> str | Problem:
    """`text` (relative to the repository directory `base`) as a normalised repository path, or the
    Problem: absolute, climbing out of the repository, or holding what no checkout path holds."""
    if "\x00" in text or "\\" in text:
        return Problem("holds a character no repository path holds")
    if text.startswith("/"):
        return Problem("is absolute: a source path is read inside the repository only")
    joined = posixpath.normpath(posixpath.join(base, text)) if text not in ("", ".") else (base or ".")
    if joined == ".." or joined.startswith("../"):
        return Problem("climbs out of the repository")
    return "" if joined == "." else joined


def _joined(a: str, b: str) -> str:
    return f"{a.rstrip('/')}/{b}" if a else b


def chart_ref(repo_url: str, chart: str, version: str) -> str | Problem:
    """The remote reference of a chart source: ``"REPO/NAME (version V)"`` (``(chart)`` without a
    version), REPO being `https://…` for a chart repository or `oci://…` for an OCI registry (Argo CD
    writes those without a scheme)."""
    if "/" in chart or chart in (".", "..") or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", chart):
        return Problem(f"chart {chart!r} is not a chart name")
    url = shown_url(repo_url).rstrip("/")
    if not _SCHEME.match(url):
        url = f"oci://{url}"
    what = f"version {version}" if version and version != "*" else "chart"
    return f"{url}/{chart} ({what})"


def shown_url(url: str) -> str:
    """`url` without credentials (`https://user:token@host/…` → `https://host/…`), for messages."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", url.strip())[:300]


def git_ref(repo_url: str, path: str, revision: str) -> str:
    """A path of another git repository as the remote reference text `prbot.remote.parse_ref` reads."""
    url = shown_url(repo_url).rstrip("/")
    text = f"{url}//{path}" if path else url
    return f"{text}?ref={revision}" if revision and revision != "HEAD" else text


# --------------------------------------------------------------------------------------------
# Renderer detection and plain directories
# --------------------------------------------------------------------------------------------

def detect(is_file: Callable[[str], bool], plan: SourcePlan) -> str:
    """The renderer of a local path source, as Argo CD decides: the options' type, else a
    kustomization file → kustomize, a Chart.yaml → helm, else a plain directory."""
    if plan.explicit:
        return plan.explicit
    if any(is_file(_joined(plan.path, n)) for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
        return KUSTOMIZE
    if is_file(_joined(plan.path, "Chart.yaml")):
        return HELM
    return PLAIN


MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def directory_files(listing: list[str], opts: DirectoryOptions) -> tuple[list[str], list[str]]:
    """(manifest files to read, jsonnet files found) of a plain directory source, from the paths
    below it (`listing`, relative to the directory, `/`-separated), as Argo CD picks them: only the
    directory itself unless `recurse`; `exclude` drops, `include` keeps (globs over the relative
    path, `*` crossing `/`, `{a,b}` alternatives); hidden directories are skipped."""
    files: list[str] = []
    jsonnet: list[str] = []
    for rel in sorted(listing):
        parts = rel.split("/")
        if not opts.recurse and len(parts) > 1:
            continue
        if any(p.startswith(".") for p in parts[:-1]):
            continue
        if opts.exclude and glob_match(opts.exclude, rel):
            continue
        if opts.include and not glob_match(opts.include, rel):
            continue
        if rel.endswith(".jsonnet"):
            jsonnet.append(rel)
        elif rel.endswith(MANIFEST_SUFFIXES):
            files.append(rel)
    return files, jsonnet


def glob_match(pattern: str, text: str) -> bool:
    """Argo CD's glob (gobwas/glob without separators): `*` and `**` any run of characters (`/`
    too), `?` one, `[abc]` / `[!abc]` classes, `{a,b}` alternatives."""
    try:
        return re.fullmatch(_glob_regex(pattern), text, re.DOTALL) is not None
    except re.error:
        return False


def _glob_regex(pattern: str) -> str:
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            while i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                neg = body.startswith("!")
                body = body[1:] if neg else body
                out.append(f"[{'^' if neg else ''}{body.replace(chr(92), chr(92) * 2)}]")
                i = end
        elif c == "{":
            depth += 1
            out.append("(?:")
        elif c == "}" and depth:
            depth -= 1
            out.append(")")
        elif c == "," and depth:
            out.append("|")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + ")" * depth


# --------------------------------------------------------------------------------------------
# What the tools are given
# --------------------------------------------------------------------------------------------

def wrapper_kustomization(resource: str, opts: KustomizeOptions, patch_texts: Mapping[str, str],
                          to_root: str) -> dict[str, Any]:
    """The kustomization rendered around a source path: `resource` is the path as seen from the
    wrapper's directory, `to_root` the way from there to the repository's top (for components);
    patches given by `path:` are inlined from `patch_texts` (kustomize reads no file outside the
    wrapper's own directory)."""
    k: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                         "resources": [resource]}
    if opts.namespace:
        k["namespace"] = opts.namespace
    if opts.name_prefix:
        k["namePrefix"] = opts.name_prefix
    if opts.name_suffix:
        k["nameSuffix"] = opts.name_suffix
    if opts.common_labels:
        if opts.label_without_selector:
            k["labels"] = [{"pairs": dict(opts.common_labels), "includeSelectors": False}]
        else:
            k["commonLabels"] = dict(opts.common_labels)
    if opts.common_annotations:
        k["commonAnnotations"] = dict(opts.common_annotations)
    if opts.images:
        k["images"] = [image_entry(i) for i in opts.images]
    if opts.replicas:
        k["replicas"] = [{"name": n, "count": _count(c)} for n, c in opts.replicas]
    patches = []
    for p in opts.patches:
        entry = {key: p[key] for key in ("target", "options") if key in p}
        if "path" in p:
            entry["patch"] = patch_texts[str(p["path"])]
        elif "patch" in p:
            entry["patch"] = p["patch"]
        else:
            continue
        patches.append(entry)
    if patches:
        k["patches"] = patches
    if opts.components:
        k["components"] = [f"{to_root}/{c}" if c else to_root for c in opts.components]
    return k


def _count(value: Any) -> Any:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def image_entry(text: str) -> dict[str, str]:
    """`kustomize edit set image` syntax — ``[name=]newName[:tag][@digest]`` — as an `images:` entry."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = "", text
    digest = ""
    if "@" in rest:
        rest, _, digest = rest.partition("@")
    new_name, tag = rest, ""
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        new_name, tag = rest[:colon], rest[colon + 1:]
    entry: dict[str, str] = {"name": name or new_name}
    if name and new_name != name:
        entry["newName"] = new_name
    if tag:
        entry["newTag"] = tag
    if digest:
        entry["digest"] = digest
    return entry


def helm_arguments(opts: HelmOptions, values_files: list[str], extra_values: str | None) -> list[str]:
    """`helm template` arguments after the chart, in Argo CD's order: `--values` per value file (given,
    already staged and relative to where helm runs), the Application's own values last, then
    `--set` / `--set-string` per parameter (the last of one name wins) and `--set-file`."""
    argv: list[str] = []
    for f in values_files:
        argv += ["--values", f]
    if extra_values:
        argv += ["--values", extra_values]
    last: dict[str, tuple[str, bool]] = {}
    for name, value, force in opts.parameters:
        last[name] = (value, force)
    for name in sorted(last):
        value, force = last[name]
        argv += ["--set-string" if force else "--set", f"{name}={_clean_set(value)}"]
    if not opts.skip_crds:
        argv.append("--include-crds")
    for v in opts.api_versions:
        argv += ["--api-versions", v]
    return argv


def _clean_set(value: str) -> str:
    """Argo CD escapes commas in a parameter (not a `{a,b}` list, not one already escaped)."""
    if value.startswith("{") and value.endswith("}"):
        return value
    return re.sub(r"(?<!\\),", r"\\,", value)


# --------------------------------------------------------------------------------------------

def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) else ""


def _set(value: Any) -> bool:
    """An options block that says something (Argo CD drops empty ones)."""
    return isinstance(value, dict) and any(v not in (None, "", [], {}, False) for v in value.values())


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _string_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): _text(v) for k, v in value.items()}



# --------------------------------------------------------------------------------------------
# The expander
# --------------------------------------------------------------------------------------------

WRAPPER_DIR = ".prbot-argocd"
"""Where the kustomization around a source path is written in the staged tree (never a repository path)."""
CHART_DIR = ".prbot-chart"
"""Where a chart fetched from a chart repository is staged."""
VALUES_FILE = ".prbot-argocd-values.json"
"""The Application's own `values` / `valuesObject`, staged for `helm template`."""
_SCAN_FILES = 200
_SCAN_BYTES = 256 * 1024
_TEMPLATED_PATH = re.compile(r"^\s*-?\s*path:\s*[\"']?([^\"'\s#]+)", re.MULTILINE)
_TEMPLATED_REF = re.compile(r"\$[A-Za-z0-9_-]+/([^\s\"',\]]+)")


class ApplicationExpander(Expander):
    """An Argo CD Application renders its sources (see the module doc)."""

    kinds = ((GROUP, KIND),)

    # ---------------------------------------------------------------- inputs (static)
    def inputs(self, doc: dict[str, Any], ctx: InputsContext) -> Inputs:
        out = Inputs()
        if not is_application(doc):
            return out
        # which repoURL is this repository is not known here: every path source counts as one (a
        # superset: reading a path only adds files to the closure; `expand` never reads another
        # repository's path from the checkout)
        plan = read_application(doc, lambda url: True)
        for src in plan.sources:
            if src.chart:
                if src.remote:
                    out.remote.append(src.remote)
            elif not src.problem and not src.ref_only:
                self._local_inputs(src, ctx.root, out)
            for vf in (*src.helm.value_files, *(v for _, v in src.helm.file_parameters)):
                if vf.path and not vf.in_chart:
                    out.local.append((vf.path, None))
        return out

    def _local_inputs(self, src: SourcePlan, root: str, out: Inputs) -> None:
        renderer = detect(lambda rel: os.path.isfile(os.path.join(root, rel)), src)
        if renderer == PLAIN:
            out.local.append((src.path, None if src.directory.recurse else "plain"))
            return
        out.local.append((src.path, "kustomize" if renderer == KUSTOMIZE else None))
        for patch in src.kustomize.patches:
            if "path" in patch and "problem" not in patch:
                out.local.append((str(patch["path"]), None))
        out.local.extend((c, "kustomize") for c in src.kustomize.components if not c.startswith("!"))
        out.local.extend(_templated_inputs(root, src.path))

    def template_inputs(self, root: str, rel: str, text: str) -> Inputs:
        """The target's own files that are Helm templates of Applications (a Helm target that is an
        app of apps): the paths they may read, as for a chart an Application's source names."""
        return Inputs(local=_template_paths(root, text))

    # ---------------------------------------------------------------- expand
    def expand(self, obj: dict[str, Any], ctx: ExpandContext) -> list[dict[str, Any]]:
        plan = read_application(obj, ctx.this_repository)
        if plan.problem:
            raise ExpandError(plan.problem)
        objects: list[dict[str, Any]] = []
        for src in plan.sources:
            if src.problem:
                raise ExpandError(src.problem)
            if src.ref_only:
                continue
            objects.extend(_render_source(src, plan, ctx))
        return with_namespace(objects, plan.namespace, [*ctx.objects, *objects])


def _render_source(src: SourcePlan, plan: AppPlan, ctx: ExpandContext) -> list[dict[str, Any]]:
    if src.chart:
        return _render_helm(src, plan, ctx, ctx.remote(src.remote))
    if not src.local:
        raise ExpandError(f"{src.where}: {src.remote} is in another repository, whose paths prbot does not fetch "
                          "(vendor it here, or list the URL in render.repository of .prbot.yml if it is this "
                          "repository)")
    rel = ctx.local_path(src.path or ".", f"{src.where} path")
    cache = ctx.cache or ClosureCache()
    root = os.fspath(ctx.root)
    if cache.kind(root, rel) != "dir":
        raise ExpandError(f"{src.where}: path {rel or '.'} is not a directory of the repository")
    renderer = detect(lambda p: cache.kind(root, p) == "file", src)
    if renderer == HELM:
        return _render_helm(src, plan, ctx, rel)
    if renderer == KUSTOMIZE:
        if src.kustomize.empty:
            return ctx.render_path(rel, KUSTOMIZE)
        return _render_kustomize(src, rel, ctx)
    return _render_directory(src, rel, ctx)


def _render_directory(src: SourcePlan, rel: str, ctx: ExpandContext) -> list[dict[str, Any]]:
    root = os.fspath(ctx.root)
    cache = ctx.cache or ClosureCache()
    listing: list[str] = []
    for current, dirs, names in os.walk(os.path.join(root, rel) if rel else root):
        inner = os.path.relpath(current, os.path.join(root, rel) if rel else root).replace(os.sep, "/")
        inner = "" if inner == "." else inner
        dirs[:] = sorted(d for d in dirs if d != ".git")
        listing.extend(f"{inner}/{n}" if inner else n for n in names)
        if not src.directory.recurse:
            break
    files, jsonnet = directory_files(listing, src.directory)
    if jsonnet:
        raise ExpandError(f"{src.where}: {_joined(rel, jsonnet[0])} is jsonnet, which prbot does not render")
    objects: list[dict[str, Any]] = []
    budget = ctx.limits.output
    for name in files:
        path = _joined(rel, name)
        kind = cache.kind(root, path)
        if kind == "outside":
            raise ExpandError(f"refused: {path} is a symbolic link to a path outside the repository")
        if path not in ctx.closure.files:
            raise ExpandError(f"{path} is not among the target's inputs")
        size = os.path.getsize(os.path.join(root, path))
        if size > budget:
            raise ExpandError(f"{rel or '.'}: the manifests are larger than {ctx.limits.describe('output')}")
        budget -= size
        objects.extend(parse_file(ctx.root, path, max_bytes=size, limits=ctx.limits, deadline=ctx.deadline))
    return objects


def _render_kustomize(src: SourcePlan, rel: str, ctx: ExpandContext) -> list[dict[str, Any]]:
    opts = src.kustomize
    problems = kustomize_problems(opts)
    if problems:
        raise ExpandError(f"refused: {src.where}: kustomize: {problems[0]}")
    cache = ctx.cache or ClosureCache()
    closure = _kustomize_closure(ctx, cache, rel)
    components = []
    for comp in opts.components:
        crel = ctx.local_path(comp, f"{src.where} kustomize component")
        closure = closure | _kustomize_closure(ctx, cache, crel)
        components.append(crel)
    patch_texts: dict[str, str] = {}
    for patch in opts.patches:
        if "path" in patch:
            prel = ctx.local_path(str(patch["path"]), f"{src.where} kustomize patch")
            if prel not in ctx.closure.files:
                raise ExpandError(f"{prel} is not among the target's inputs")
            patch_texts[str(patch["path"])] = read_text(ctx.root, prel)
    body = wrapper_kustomization(f"../{rel}" if rel else "..", replace(opts, components=tuple(components)),
                                 patch_texts, "..")
    with ctx.scratch() as (_home, tree):
        stage(ctx.root, closure, tree)
        (tree / WRAPPER_DIR).mkdir(mode=0o700, exist_ok=True)
        (tree / WRAPPER_DIR / "kustomization.yaml").write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
        target = Target(ctx.target.app, ctx.target.env, WRAPPER_DIR, KUSTOMIZE)
        wrapped = ClosureCache().closure(tree, target)
        if wrapped.outside or wrapped.errors or wrapped.remote:
            raise ExpandError(f"{src.where}: kustomize: " + (wrapped.outside or wrapped.errors or wrapped.remote)[0])
        try:
            return get_renderer(KUSTOMIZE).render(RenderJob(root=tree, target=target, closure=wrapped,
                                                            limits=ctx.limits, kube_version=ctx.kube_version,
                                                            deadline=ctx.deadline))
        except RenderError as exc:
            if exc.transient:
                raise
            raise ExpandError(str(exc).replace(str(tree), ".")) from exc


def _kustomize_closure(ctx: ExpandContext, cache: ClosureCache, rel: str) -> Closure:
    """What kustomize reads for the directory `rel`, which must be inside the target's closure."""
    closure = cache.closure(os.fspath(ctx.root), Target(ctx.target.app, ctx.target.env, rel, KUSTOMIZE))
    return within_target(closure, ctx, rel)


def _render_helm(src: SourcePlan, plan: AppPlan, ctx: ExpandContext, chart: str | Vendored) -> list[dict[str, Any]]:
    h = src.helm
    if h.values_problem:
        raise ExpandError(f"{src.where}: {h.values_problem}")
    root = os.fspath(ctx.root)
    cache = ctx.cache or ClosureCache()
    with ctx.scratch() as (home, tree):
        if isinstance(chart, str):
            escapes = cache.tree(root, chart).outside
            if escapes:
                raise ExpandError(f"refused: {escapes[0]}")
            ctx.stage_local(chart, tree / chart if chart else tree)
            chart_arg, chart_dir = (f"./{chart}" if chart else "."), chart
        else:
            for f in sorted(chart.files):
                out = tree / CHART_DIR / f
                out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                shutil.copyfile(chart.fetched.root / f, out, follow_symlinks=False)
            chart_arg, chart_dir = f"./{CHART_DIR}", CHART_DIR
        if not (tree / chart_dir / "Chart.yaml").is_file():
            raise ExpandError(f"{src.where}: {src.chart or chart_dir} holds no Chart.yaml")
        values: list[str] = []
        for vf in h.value_files:
            got = _stage_value_file(vf, src, chart_dir, ctx, tree)
            if got is not None:
                values.append(got)
        extra = None
        if h.values:
            text = json.dumps(h.values, ensure_ascii=False)
            if len(text) > MAX_VALUES:
                raise ExpandError(f"refused: {src.where}: its values are larger than {MAX_VALUES // 1024} KiB")
            (tree / VALUES_FILE).write_text(text, encoding="utf-8")
            extra = f"./{VALUES_FILE}"
        argv = [find_tool("helm"), "template", h.release_name or plan.name or "release", chart_arg, "--skip-tests"]
        namespace = h.namespace or plan.namespace
        if namespace:
            argv += ["--namespace", namespace]
        if ctx.kube_version:
            argv += ["--kube-version", ctx.kube_version]
        argv += helm_arguments(h, values, extra)
        for name, vf in h.file_parameters:
            got = _stage_value_file(replace(vf, text=f"fileParameters {name}: {vf.text}"), src, chart_dir, ctx, tree,
                                    ignore_missing=False)
            argv += ["--set-file", f"{name}={got}"]
        printed = ctx.run(argv, label="helm template", cwd=tree, home=home)
    return parse_documents(printed, f"helm template {h.release_name}", max_bytes=ctx.limits.output,
                           limits=ctx.limits, deadline=ctx.deadline)


def _stage_value_file(vf: ValueFile, src: SourcePlan, chart_dir: str, ctx: ExpandContext, tree: Path,
                      ignore_missing: bool | None = None) -> str | None:
    """Where `helm template` reads one value file in the staged tree (None: missing, and ignored)."""
    ignore = src.helm.ignore_missing if ignore_missing is None else ignore_missing
    if vf.problem:
        raise ExpandError(f"refused: {src.where}: value file {vf.problem}")
    if vf.remote:
        raise ExpandError(f"{src.where}: value file {vf.text} is read from {vf.remote}, another repository or "
                          "a URL, which prbot does not fetch")
    if vf.in_chart:
        if (tree / chart_dir / vf.path).is_file():
            return f"./{chart_dir}/{vf.path}"
        if ignore:
            return None
        raise ExpandError(f"{src.where}: value file {vf.text} is not in the chart")
    rel = ctx.local_path(vf.path, f"{src.where} value file")
    if rel not in ctx.closure.files:
        kind = (ctx.cache or ClosureCache()).kind(os.fspath(ctx.root), rel)
        if kind == "missing" and ignore:
            return None
        if kind == "missing":
            raise ExpandError(f"{src.where}: value file {vf.text} does not exist")
        raise ExpandError(f"{rel} is not among the target's inputs")
    out = tree / rel
    if not out.is_file():
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(ctx.root, rel), out, follow_symlinks=True)
    return f"./{rel}"


def with_namespace(objects: list[dict[str, Any]], namespace: str, known: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The destination namespace set on every namespaced object naming none, as Argo CD does when it
    applies (cluster-scoped kinds: the built-in ones and those a rendered CRD declares so)."""
    if not namespace:
        return objects
    scoped = set(CLUSTER_SCOPED)
    for obj in known:
        spec = _mapping(obj.get("spec"))
        names = _mapping(spec.get("names"))
        if obj.get("kind") == "CustomResourceDefinition" and spec.get("scope") == "Cluster":
            scoped.add((_text(spec.get("group")), _text(names.get("kind"))))
    for obj in objects:
        if (api_group(obj.get("apiVersion")), obj.get("kind")) in scoped:
            continue
        meta = obj.setdefault("metadata", {})
        if isinstance(meta, dict) and not meta.get("namespace"):
            meta["namespace"] = namespace
    return objects


def _templated_inputs(root: str, rel: str) -> list[tuple[str, str | None]]:
    """Paths the Helm-templated Applications below `rel` may read (an app of apps as a chart): the
    literal part of each `path:` and `$ref/…` value, a superset, since the templates cannot be read
    as YAML before Helm renders them."""
    out: list[tuple[str, str | None]] = []
    base = os.path.join(root, rel) if rel else root
    seen = 0
    for current, dirs, names in os.walk(base):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.endswith((".yaml", ".yml", ".tpl", ".json")):
                continue
            seen += 1
            if seen > _SCAN_FILES:
                return out
            path = os.path.join(current, name)
            if os.path.islink(path):
                continue
            try:
                with open(path, "rb") as fh:
                    text = fh.read(_SCAN_BYTES).decode("utf-8", "replace")
            except OSError:
                continue
            out.extend(_template_paths(root, text))
    return out


def _template_paths(root: str, text: str) -> list[tuple[str, str | None]]:
    """The paths one Helm template of Applications may read (see `_templated_inputs`)."""
    if GROUP not in text or "{{" not in text:
        return []
    out: list[tuple[str, str | None]] = []
    for found in [*_TEMPLATED_PATH.findall(text), *_TEMPLATED_REF.findall(text)]:
        got = _literal_part(root, found)
        if got is not None:
            out.append(got)
    return out


def _literal_part(root: str, text: str) -> tuple[str, str | None] | None:
    """A templated path's literal directory (`envs/{{ .Values.env }}/x.yaml` → `envs`), or the path;
    a path computed entirely by the template (`{{ .path | default .name }}`) may be any directory:
    the whole repository (`""`)."""
    templated = "{{" in text
    if templated:
        text = text.split("{{", 1)[0].rpartition("/")[0]
        if not text:
            return "", None
    rel = safe_path(text, "")
    if isinstance(rel, Problem) or not rel:
        return None
    if not templated and any(os.path.isfile(os.path.join(root, rel, n))
                             for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
        return rel, KUSTOMIZE
    return rel, None

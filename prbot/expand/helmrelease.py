"""The Flux `HelmRelease` (helm.toolkit.fluxcd.io v2, v2beta1, v2beta2): the chart it installs.

The chart comes from `spec.chart.spec` (`chart`, `version`, `sourceRef` of a GitRepository,
HelmRepository or Bucket) or `spec.chartRef` (an OCIRepository or HelmChart); sources are looked up
among the target's rendered objects, in the HelmRelease's namespace unless the reference names one
(as Flux does).  A GitRepository naming this repository reads the chart from the tree planned (its
directory is in the target's closure); one naming another repository is the remote git reference
``https://HOST/REPO//CHART-PATH?ref=REF`` (`git_chart_ref`: the ref `spec.ref` names, Flux's order),
fetched by prbot over https when `render.remote` allows it and its chart copied out of the checkout
(links leaving it refused); a chart repository's (`type: default`, an https index) is the
remote chart ``URL/NAME (version V)``, a semver range resolved against the index as Flux does; an
OCI one (`type: oci`, an OCIRepository) ``oci://…/NAME (version V)``.  Both are fetched by prbot
only when `render.remote` allows them.

Values as Flux merges them: the chart's defaults ← each `valuesFrom` in order (a ConfigMap or
Secret among the target's objects, `valuesKey` default ``values.yaml``, `targetPath`, `optional`)
← `spec.values`.  The release is named `spec.releaseName` or ``[targetNamespace-]name`` (shortened
past 53 characters as Flux does), installed in `targetNamespace` or the HelmRelease's namespace,
CRDs included unless `install.crds: Skip` (`install.skipCRDs` before v2), and each
`postRenderers[].kustomize` applied by kustomize in the jail.  Values read from a Secret never reach
a message: a Helm error naming one is shown without it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import os
import posixpath
import re
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

from prbot.diff import CLUSTER_SCOPED
from prbot.errors import ExpandError
from prbot.expand.base import (
    MAX_VALUES,
    ExpandContext,
    Expander,
    Inputs,
    InputsContext,
    api_group,
    deep_merge,
    load_values_file,
    meta,
    normalise_repository_url,
)
from prbot.remote import Vendored
from prbot.remote import chart_ref as remote_chart_ref
from prbot.renderers.closure import ClosureCache
from prbot.yamlio import YAML_ERRORS, load_yaml

GROUP = "helm.toolkit.fluxcd.io"
SOURCE_GROUP = "source.toolkit.fluxcd.io"
MAX_RELEASE_NAME = 53


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def chart_ref(url: str, name: str, version: str) -> str:
    """The remote reference text of a chart (what `prbot.remote.parse_ref` reads)."""
    return f"{url.strip().rstrip('/')}/{name.strip()} (version {version.strip() or '*'})"


def oci_ref(url: str, ref: dict[str, Any]) -> tuple[str, str]:
    """(chart reference, version) of an OCIRepository: its URL's last segment is the chart, its
    `ref` read as Flux reads it — `digest` before `semver` before `tag` (default ``latest``)."""
    base, _, name = url.strip().rstrip("/").rpartition("/")
    digest = _str(ref.get("digest")).strip()
    if digest:
        return remote_chart_ref(base, name.strip(), digest=digest), digest
    version = _str(ref.get("semver") or ref.get("tag")).strip() or "latest"
    return chart_ref(base, name, version), version


def release_name(obj: dict[str, Any]) -> str:
    """Flux's release name: `spec.releaseName`, else ``targetNamespace-name`` or ``name``, longer
    than 53 characters shortened to 40 plus ``-`` and 12 hex digits of its sha256."""
    spec = _dict(obj.get("spec"))
    if _str(spec.get("releaseName")):
        return _str(spec["releaseName"])
    name = _str(meta(obj).get("name"))
    if _str(spec.get("targetNamespace")):
        name = f"{spec['targetNamespace']}-{name}"
    if len(name) > MAX_RELEASE_NAME:
        name = f"{name[:MAX_RELEASE_NAME - 13]}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return name


def include_crds(spec: dict[str, Any]) -> bool:
    install = _dict(spec.get("install"))
    if install.get("skipCRDs") is True:
        return False
    return _str(install.get("crds")) != "Skip"


# --------------------------------------------------------------------------------------------
# valuesFrom
# --------------------------------------------------------------------------------------------

_PATH_PART = re.compile(r"((?:\\.|[^.\[\\])+)((?:\[\d+\])*)")


def _path(target_path: str) -> list[str | int]:
    """`a.b\\.c[0].d` -> ["a", "b.c", 0, "d"] (Helm's --set path syntax)."""
    out: list[str | int] = []
    for part in re.split(r"(?<!\\)\.", target_path):
        m = _PATH_PART.fullmatch(part)
        if not m:
            raise ExpandError(f"valuesFrom targetPath {target_path[:100]!r} is not a values path")
        out.append(m[1].replace("\\.", ".").replace("\\\\", "\\"))
        out.extend(int(i) for i in re.findall(r"\[(\d+)\]", m[2]))
    if len(out) > 64 or any(isinstance(p, int) and p > 1000 for p in out):
        raise ExpandError(f"valuesFrom targetPath {target_path[:100]!r} is too deep")
    return out


def set_path(values: dict[str, Any], target_path: str, value: str) -> dict[str, Any]:
    """`values` with `value` (a string, as Flux passes it) at `target_path`."""
    parts = _path(target_path)
    root: Any = values
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        nxt: Any = value if last else ([] if isinstance(parts[index + 1], int) else {})
        if isinstance(part, int):
            if not isinstance(root, list):
                raise ExpandError(f"valuesFrom targetPath {target_path[:100]!r} indexes a value that is not a list")
            while len(root) <= part:
                root.append(None)
            if last or not isinstance(root[part], dict | list):
                root[part] = nxt
            root = root[part]
        else:
            if not isinstance(root, dict):
                raise ExpandError(f"valuesFrom targetPath {target_path[:100]!r} names a key of a value that "
                                  "is not a map")
            if last or not isinstance(root.get(part), dict | list):
                root[part] = nxt
            root = root[part]
    return values


def _secret_strings(node: Any, out: set[str]) -> None:
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            stack.extend(cur.values())
            stack.extend(k for k in cur if isinstance(k, str))
        elif isinstance(cur, list):
            stack.extend(cur)
        elif cur is not None and not isinstance(cur, bool):
            out.add(str(cur))


def _data(obj: dict[str, Any], key: str, secret: bool) -> str | None:
    """The text under `key` of a ConfigMap (`data`, `binaryData`) or Secret (`stringData`, `data`)."""
    if secret and isinstance(_dict(obj.get("stringData")).get(key), str):
        return str(obj["stringData"][key])
    raw = _dict(obj.get("data")).get(key)
    if raw is None and not secret:
        raw = _dict(obj.get("binaryData")).get(key)
        secret = raw is not None
    if raw is None:
        return None
    if not secret:
        return _str(raw)
    try:
        return base64.b64decode(_str(raw), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise ExpandError(f"valuesFrom key {key!r} does not hold base64 UTF-8 text") from None


def values_from(obj: dict[str, Any], ctx: ExpandContext, secrets: set[str]) -> dict[str, Any]:
    """The merged `valuesFrom` of a HelmRelease; the strings read from Secrets are added to `secrets`."""
    namespace = _str(meta(obj).get("namespace")) or ctx.target.namespace
    merged: dict[str, Any] = {}
    total = 0
    for ref in _list(_dict(obj.get("spec")).get("valuesFrom")):
        ref = _dict(ref)
        kind, name = _str(ref.get("kind")), _str(ref.get("name"))
        key = _str(ref.get("valuesKey")) or "values.yaml"
        if kind not in ("ConfigMap", "Secret"):
            raise ExpandError(f"valuesFrom kind {kind[:50]!r} is not ConfigMap or Secret")
        source = ctx.find(kind, namespace, name, group="")
        text = _data(source, key, kind == "Secret") if source is not None else None
        if text is None:
            if ref.get("optional") is True:
                continue
            where = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
            missing = "is not among the target's objects" if source is None else f"has no key {key[:100]!r}"
            raise ExpandError(f"valuesFrom {where} {missing} (Flux reads it from the cluster; prbot only "
                              "from what the target renders)")
        total += len(text)
        if total > MAX_VALUES:
            raise ExpandError(f"refused: valuesFrom holds more than {MAX_VALUES // 1024} KiB")
        if kind == "Secret":
            secrets.add(text)
        if _str(ref.get("targetPath")):
            merged = set_path(merged, _str(ref["targetPath"]), text)
            continue
        try:
            doc = load_yaml(text)
        except YAML_ERRORS:
            raise ExpandError(f"valuesFrom {kind} {name} key {key[:100]!r} is not YAML") from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ExpandError(f"valuesFrom {kind} {name} key {key[:100]!r} is not a map of values")
        if kind == "Secret":
            _secret_strings(doc, secrets)
        merged = deep_merge(merged, doc)
    return merged


def redact(message: str, secrets: set[str], names: list[str]) -> str:
    """`message` without any value read from a Secret; when one is too short to find safely, the
    message is not shown at all."""
    if not secrets:
        return message
    if any(len(s) < 4 for s in secrets if s.strip()):
        return (f"helm template failed; its message is not shown, as the values hold Secret data "
                f"({', '.join(names)})")
    for value in sorted(secrets, key=len, reverse=True):
        if value.strip():
            message = message.replace(value, "***")
            for line in value.splitlines():
                if len(line.strip()) >= 4:
                    message = message.replace(line.strip(), "***")
    return message


# --------------------------------------------------------------------------------------------
# A chart in another git repository
# --------------------------------------------------------------------------------------------

_GIT_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$")


def shown_url(url: str) -> str:
    """A git URL as messages show it: never a user name, password or token."""
    text = url.strip()[:300]
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        netloc = parts.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return text.rpartition("@")[2] if re.match(r"^[^/]*@", text) else text


def git_ref_of(ref: Any) -> str:
    """The git ref a GitRepository's `spec.ref` names, in Flux's order (`commit`, `name`, `tag`,
    `branch`; "" for the default branch); ExpandError for a `semver` range or an odd ref."""
    ref = _dict(ref)
    if _str(ref.get("commit")):
        got = _str(ref["commit"])
    elif _str(ref.get("name")):
        got = _str(ref["name"])
    elif _str(ref.get("semver")):
        raise ExpandError(f"its ref.semver {_str(ref['semver'])[:50]!r} is not expanded (prbot does not list "
                          "another repository's tags): pin ref.tag or ref.commit, or vendor the chart")
    else:
        got = _str(ref.get("tag")) or _str(ref.get("branch"))
    if got and (not _GIT_REF.match(got) or ".." in got or got.endswith((".", "/", ".lock"))):
        raise ExpandError(f"refused: its ref {got[:50]!r} is not a git ref prbot fetches")
    return got


def chart_path(chart: str) -> str:
    """The normalised chart directory inside a repository; ExpandError when it leaves it."""
    text = chart.strip()
    if not text or "\0" in text or "?" in text or "#" in text or "%" in text or any(c.isspace() for c in text):
        raise ExpandError(f"chart path {text[:100]!r} is not a path")
    rel = posixpath.normpath(text)
    if posixpath.isabs(text) or rel == ".." or rel.startswith("../"):
        raise ExpandError(f"refused: chart path {text[:200]} leaves the repository")
    return "" if rel == "." else rel


def git_chart_ref(url: str, ref: Any, chart: str) -> str:
    """The remote reference text (what `prbot.remote.parse_ref` reads) of the chart directory
    `chart` of the git repository at `url`, at the ref a GitRepository's `spec.ref` names:
    ``https://HOST/REPO//CHART?ref=REF``.  ExpandError when prbot would not fetch it: ssh (prbot
    fetches https only), credentials in the URL, a semver ref, a path leaving the repository."""
    text = url.strip()
    shown = shown_url(text)
    if text.lower().startswith(("ssh://", "git@", "git::")) or re.match(r"^[\w.-]+@[\w.-]+:", text):
        plain = normalise_repository_url(text)
        https = f" (https://{plain})" if plain else ""
        raise ExpandError(f"{shown} is an ssh URL, which prbot does not fetch (https only): point the "
                          f"GitRepository at its https form{https} and allow that in render.remote, or vendor "
                          "the chart into this repository")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
        raise ExpandError(f"{shown} is not an https URL, which is all prbot fetches")
    if parts.username or parts.password:
        raise ExpandError(f"refused: the URL of {shown} carries credentials; prbot fetches public https "
                          "repositories only, without them")
    if parts.query or parts.fragment or "%" in text or any(c.isspace() for c in text) or "//" in parts.path:
        raise ExpandError(f"{shown} is not a repository URL prbot fetches")
    rev = git_ref_of(ref)
    base = f"{parts.scheme.lower()}://{parts.netloc}{parts.path.rstrip('/')}//{chart_path(chart)}"
    return f"{base}?ref={rev}" if rev else base


def copy_git_chart(vendored: Vendored, rel: str, values_files: list[str], into: Path) -> Vendored:
    """The chart directory `rel` of a fetched checkout copied to `into` (links followed, but only
    inside the checkout; `values_files`, paths of the checkout, merged into its values.yaml as
    Flux's source controller does), as a Vendored chart `ExpandContext.render_chart` stages.  The
    checkout itself (the shared cache) is never written."""
    root = os.fspath(vendored.fetched.root)
    cache = ClosureCache()
    kind = cache.kind(root, rel)
    if kind == "outside":
        raise ExpandError(f"refused: chart path {rel} resolves (through a symbolic link) outside the fetched "
                          "repository")
    if kind != "dir":
        raise ExpandError(f"chart path {rel or '.'} is not a directory of the fetched repository")
    tree = cache.tree(root, rel)
    if tree.outside:
        raise ExpandError(f"refused: {tree.outside[0]} (in the fetched repository)")
    if tree.errors:
        raise ExpandError(tree.errors[0])
    prefix = f"{rel}/" if rel else ""
    files = sorted(f[len(prefix):] for f in tree.files if f.startswith(prefix))
    for f in files:
        out = into / f
        out.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(root, prefix + f), out, follow_symlinks=True)
    if values_files:
        merged: dict[str, Any] = {}
        for name in values_files:
            path = chart_path(name)
            if cache.kind(root, path) != "file":
                raise ExpandError(f"values file {name[:200]} is not a file of the fetched repository"
                                  if cache.kind(root, path) != "outside" else
                                  f"refused: values file {name[:200]} resolves outside the fetched repository")
            merged = deep_merge(merged, load_values_file(Path(root), path))
        (into / "values.yaml").write_text(json.dumps(merged, ensure_ascii=False), encoding="utf-8")
        files = sorted({*files, "values.yaml"})
    fetched = dataclasses.replace(vendored.fetched, root=into)
    return Vendored(fetched, frozenset(files), {})




# --------------------------------------------------------------------------------------------
# The expander
# --------------------------------------------------------------------------------------------

class HelmReleaseExpander(Expander):
    kinds = ((GROUP, "HelmRelease"),)
    looks_at = (SOURCE_GROUP,)

    # ---------------------------------------------------------------- static inputs
    def inputs(self, doc: dict[str, Any], ctx: InputsContext) -> Inputs:
        spec = _dict(doc.get("spec"))
        name = _str(meta(doc).get("name"))
        # the documents of this name (a patch may set the version or the chart)
        same = [d for d in ctx.find_docs("HelmRelease", name, GROUP)] or [doc]
        charts = [_dict(_dict(_dict(d.get("spec")).get("chart")).get("spec")) for d in same]
        chart_names = {_str(c.get("chart")) for c in charts if _str(c.get("chart"))}
        versions = {_str(c.get("version")) or "*" for c in charts} or {"*"}
        got = Inputs()
        chart_spec = _dict(_dict(spec.get("chart")).get("spec"))
        source = _dict(chart_spec.get("sourceRef"))
        kind = _str(source.get("kind"))
        if kind in ("GitRepository", "Bucket") or (chart_spec and not kind):
            for chart in chart_names:
                got.local.append((chart, None))
        if kind == "GitRepository":
            # which URL is this repository is not known here: every URL counts as another one too
            # (the plan does not fetch one naming this repository)
            got.remote.extend(_git_inputs(ctx, _str(source.get("name")), chart_names))
            for c in charts:
                got.local.extend((_str(f), None) for f in _list(c.get("valuesFiles")) if _str(f))
                if _str(c.get("valuesFile")):
                    got.local.append((_str(c["valuesFile"]), None))
        if kind == "HelmRepository":
            for repo in ctx.find_docs("HelmRepository", _str(source.get("name")), SOURCE_GROUP):
                url = _str(_dict(repo.get("spec")).get("url"))
                if url:
                    got.remote.extend(chart_ref(url, c, v) for c in chart_names for v in sorted(versions))
        chart_ref_spec = _dict(spec.get("chartRef"))
        if chart_ref_spec:
            ref_name = _str(chart_ref_spec.get("name"))
            if _str(chart_ref_spec.get("kind")) == "OCIRepository":
                for repo in ctx.find_docs("OCIRepository", ref_name, SOURCE_GROUP):
                    rspec = _dict(repo.get("spec"))
                    if _str(rspec.get("url")):
                        got.remote.append(oci_ref(_str(rspec["url"]), _dict(rspec.get("ref")))[0])
            else:
                for helm_chart in ctx.find_docs("HelmChart", ref_name, SOURCE_GROUP):
                    hspec = _dict(helm_chart.get("spec"))
                    hsource = _dict(hspec.get("sourceRef"))
                    if _str(hsource.get("kind")) == "HelmRepository":
                        for repo in ctx.find_docs("HelmRepository", _str(hsource.get("name")), SOURCE_GROUP):
                            url = _str(_dict(repo.get("spec")).get("url"))
                            if url and _str(hspec.get("chart")):
                                got.remote.append(chart_ref(url, _str(hspec["chart"]), _str(hspec.get("version"))))
                    elif _str(hspec.get("chart")):
                        got.local.append((_str(hspec["chart"]), None))
                        if _str(hsource.get("kind")) == "GitRepository":
                            got.remote.extend(_git_inputs(ctx, _str(hsource.get("name")), {_str(hspec["chart"])}))
        return got

    # ---------------------------------------------------------------- expansion
    def expand(self, obj: dict[str, Any], ctx: ExpandContext) -> list[dict[str, Any]]:
        spec = _dict(obj.get("spec"))
        namespace = _str(meta(obj).get("namespace")) or ctx.target.namespace or "default"
        with contextlib.ExitStack() as stack:
            return self._expand(obj, spec, namespace, ctx, stack)

    def _expand(self, obj: dict[str, Any], spec: dict[str, Any], namespace: str, ctx: ExpandContext,
                stack: contextlib.ExitStack) -> list[dict[str, Any]]:
        release_ns = _str(spec.get("targetNamespace")) or namespace
        chart, version, values_files = self._chart(obj, spec, namespace, ctx, stack)
        secrets: set[str] = set()
        secret_names = [f"{namespace}/{_str(_dict(r).get('name'))}" for r in _list(spec.get("valuesFrom"))
                        if _dict(r).get("kind") == "Secret"]
        values = values_from(obj, ctx, secrets)
        if isinstance(spec.get("values"), dict):
            values = deep_merge(values, spec["values"])
        elif spec.get("values") is not None:
            raise ExpandError("spec.values is not a map")
        post = [_dict(_dict(p).get("kustomize")) for p in _list(spec.get("postRenderers"))
                if _dict(_dict(p).get("kustomize"))]
        try:
            objects = ctx.render_chart(chart, release_name(obj), release_ns, values,
                                       include_crds=include_crds(spec), values_files=values_files,
                                       post_kustomize=post)
        except ExpandError as exc:
            raise ExpandError(redact(str(exc), secrets, secret_names)) from None
        return _in_namespace(objects, release_ns)

    def _chart(self, obj: dict[str, Any], spec: dict[str, Any], namespace: str, ctx: ExpandContext,
               stack: contextlib.ExitStack) -> tuple[Any, str, list[str]]:
        """(the chart: a repository path or a fetched remote, its version, values files)."""
        chart_ref_spec = _dict(spec.get("chartRef"))
        if chart_ref_spec:
            kind, name = _str(chart_ref_spec.get("kind")), _str(chart_ref_spec.get("name"))
            ns = _str(chart_ref_spec.get("namespace")) or namespace
            source = ctx.find(kind, ns, name, group=SOURCE_GROUP) if kind in ("OCIRepository", "HelmChart") else None
            if kind not in ("OCIRepository", "HelmChart"):
                raise ExpandError(f"chartRef kind {kind[:50]!r} is not OCIRepository or HelmChart")
            if source is None:
                raise ExpandError(f"its chart source {kind} {ns}/{name} is not among the target's objects")
            sspec = _dict(source.get("spec"))
            if kind == "OCIRepository":
                ref, version = oci_ref(_str(sspec.get("url")), _dict(sspec.get("ref")))
                return ctx.remote(ref), version, []
            return self._from_source(_dict(sspec.get("sourceRef")), ns, _str(sspec.get("chart")),
                                     _str(sspec.get("version")) or "*", [], ctx, stack)
        chart_spec = _dict(_dict(spec.get("chart")).get("spec"))
        if not chart_spec:
            raise ExpandError("it names no chart (spec.chart.spec or spec.chartRef)")
        files = [_str(f) for f in _list(chart_spec.get("valuesFiles")) if _str(f)]
        if _str(chart_spec.get("valuesFile")):
            files.insert(0, _str(chart_spec["valuesFile"]))
        return self._from_source(_dict(chart_spec.get("sourceRef")), namespace, _str(chart_spec.get("chart")),
                                 _str(chart_spec.get("version")) or "*", files, ctx, stack)

    def _from_source(self, source_ref: dict[str, Any], namespace: str, chart: str, version: str,
                     values_files: list[str], ctx: ExpandContext,
                     stack: contextlib.ExitStack) -> tuple[Any, str, list[str]]:
        kind, name = _str(source_ref.get("kind")), _str(source_ref.get("name"))
        ns = _str(source_ref.get("namespace")) or namespace
        if not chart:
            raise ExpandError("it names no chart")
        if kind not in ("GitRepository", "HelmRepository", "Bucket"):
            raise ExpandError(f"chart sourceRef kind {kind[:50]!r} is not GitRepository, HelmRepository or Bucket")
        source = ctx.find(kind, ns, name, group=SOURCE_GROUP)
        if source is None:
            raise ExpandError(f"its chart source {kind} {ns}/{name} is not among the target's objects")
        sspec = _dict(source.get("spec"))
        url = _str(sspec.get("url"))
        if kind == "Bucket":
            raise ExpandError(f"its chart comes from Bucket {ns}/{name}: charts from buckets are not expanded")
        if kind == "GitRepository":
            if not ctx.this_repository(url):
                return self._other_repository(source, ns, name, chart, version, values_files, ctx, stack)
            rel = ctx.local_path(chart, "chart path")
            files = [ctx.local_path(f, "values file") for f in values_files]
            return rel, version, files
        if not url:
            raise ExpandError(f"HelmRepository {ns}/{name} has no url")
        if values_files:
            raise ExpandError("valuesFiles of a chart from a chart repository are not expanded")
        if _str(sspec.get("type")) == "oci" and not url.startswith("oci://"):
            raise ExpandError(f"HelmRepository {ns}/{name} of type oci has a url that is not oci://")
        return ctx.remote(chart_ref(url, chart, version)), version, []

    def _other_repository(self, source: dict[str, Any], ns: str, name: str, chart: str, version: str,
                          values_files: list[str], ctx: ExpandContext,
                          stack: contextlib.ExitStack) -> tuple[Any, str, list[str]]:
        """The chart of a GitRepository naming another repository: fetched (when render.remote
        allows it) at the ref it names, its chart directory copied out of the checkout."""
        sspec = _dict(source.get("spec"))
        url = _str(sspec.get("url"))
        where = (f"its chart comes from GitRepository {ns}/{name} ({shown_url(url) or 'no url'}), which is not "
                 "this repository")
        try:
            text = git_chart_ref(url, sspec.get("ref"), chart)
            fetched = ctx.remote(text)
            home, _ = stack.enter_context(ctx.scratch())
            into = home / "git-chart"
            into.mkdir(mode=0o700)
            return copy_git_chart(fetched, chart_path(chart), values_files, into), version, []
        except ExpandError as exc:
            raise ExpandError(f"{where} (a mirror or fork of it can be listed in render.repository): {exc}") from None


def _git_inputs(ctx: InputsContext, name: str, charts: set[str]) -> list[str]:
    """The remote references of `charts` in the GitRepository documents of this name: every URL
    with every ref they hold (an overlay's patch may set the ref, or the URL, alone)."""
    specs = [_dict(d.get("spec")) for d in ctx.find_docs("GitRepository", name, SOURCE_GROUP)]
    urls = sorted({_str(s.get("url")) for s in specs if _str(s.get("url"))})
    refs: list[Any] = [s.get("ref") for s in specs if isinstance(s.get("ref"), dict)]
    if len(refs) < len(specs) or not refs:
        refs.append(None)
    out = []
    for url in urls:
        for ref in refs:
            for chart in sorted(charts):
                with contextlib.suppress(ExpandError):
                    out.append(git_chart_ref(url, ref, chart))
    return list(dict.fromkeys(out))


def _in_namespace(objects: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    """What Helm installs into the release namespace: every namespaced object naming none gets it."""
    scoped = set(CLUSTER_SCOPED)
    for obj in objects:
        if obj.get("kind") == "CustomResourceDefinition" and _dict(obj.get("spec")).get("scope") == "Cluster":
            names = _dict(_dict(obj.get("spec")).get("names"))
            scoped.add((_str(_dict(obj.get("spec")).get("group")), _str(names.get("kind"))))
    for obj in objects:
        if (api_group(obj.get("apiVersion")), _str(obj.get("kind"))) in scoped:
            continue
        metadata = obj.setdefault("metadata", {})
        if isinstance(metadata, dict) and not metadata.get("namespace"):
            metadata["namespace"] = namespace
    return objects


__all__ = ["HelmReleaseExpander", "chart_ref", "release_name", "set_path"]

"""Helm: `helm template` of a chart in the repository, with the target's values files.

Closure rule: every file below the chart directory (templates, `values.yaml`, `Chart.yaml`,
vendored `charts/`, `.helmignore` …) and the values files of the target (an optional one that is
missing counts as missing: its appearing affects the target); a chart given as a URL
(`oci://…`, `https://…`: `apps[].helm` with `version`, or `repo`) is remote: prbot fetches it
(`prbot.remote`) when `render.remote` allows it, and it is staged beside the target's files.
Dependencies of a chart in the repository must be vendored (`helm dependency build`): a
dependency missing from `charts/` is refused with the repository it would come from.  Helm renders
with `--include-crds --skip-tests` (what Argo CD and Flux apply), the environment's Kubernetes
version and the target's namespace, from a copy of the closure alone.
"""

from __future__ import annotations

import shutil
from typing import Any

from prbot.config import AppSpec
from prbot.errors import RenderError
from prbot.model import Target, TreeReader
from prbot.renderers.base import Renderer, RenderJob, parse_documents, run
from prbot.renderers.closure import Closure, ClosureBuilder, ClosureCache, Invalid, items, join, norm
from prbot.tools import find_tool

REMOTE_CHART_DIR = ".prbot-remote-chart"


class HelmRenderer(Renderer):
    name = "helm"

    def detect(self, tree: TreeReader, rel: str, spec: AppSpec) -> bool:
        return tree.is_file(join(rel, "Chart.yaml")) or bool(spec.helm is not None and spec.helm.chart)

    def fingerprint_tools(self) -> tuple[str, ...]:
        return ("helm",)

    def closure(self, cache: ClosureCache, root: str, target: Target) -> Closure:
        acc = ClosureBuilder()
        chart_ref = target.chart or target.path
        where = f"{target.path}: chart"
        rel = cache.local_or_remote(root, "", chart_ref, where, acc)
        if rel is not None:
            kind = cache.kind(root, rel)
            if kind == "dir":
                acc.parts.append(cache.tree(root, rel))
                if cache.kind(root, join(rel, "Chart.yaml")) != "file":
                    acc.errors.append(f"{where}: {rel or '.'} holds no Chart.yaml")
            elif kind == "file":            # a packaged chart (.tgz) in the repository
                acc.files.update(cache.with_real(root, rel))
            else:
                acc.missing.add(rel)
                acc.errors.append(f"{where}: chart directory {rel or '.'} does not exist")
        for values in target.values:
            if values in target.optional_values:
                # used where present: its absence is an input too (the file appearing changes the digest)
                rel = cache.local_or_remote(root, "", values, f"{target.path}: values", acc)
                if rel is not None and cache.kind(root, rel) == "file":
                    acc.files.update(cache.with_real(root, rel))
                elif rel is not None:
                    acc.missing.add(rel)
                continue
            cache.add_file(root, "", values, f"{target.path}: values", acc)
        return acc.freeze()

    def render(self, job: RenderJob) -> list[dict[str, Any]]:
        helm = find_tool("helm")
        target = job.target
        remote = (job.remotes or {}).get((target.chart or "").strip())
        if remote is not None:              # fetched by prbot (prbot.remote): staged beside the tree
            chart_rel = f"{REMOTE_CHART_DIR}/{remote.fetched.ref.path}"
        else:
            chart_rel = norm(target.chart or target.path)
            _check_dependencies(job, chart_rel)
        argv = [helm, "template", f"{target.app}-{target.env}", f"./{chart_rel}" if chart_rel else ".",
                "--include-crds", "--skip-tests"]
        if target.namespace:
            argv += ["--namespace", target.namespace]
        if job.kube_version:
            argv += ["--kube-version", job.kube_version]
        for values in target.values:
            if values in target.optional_values and norm(values) not in job.closure.files:
                continue                                    # an optional values file this target lacks
            argv += ["--values", f"./{norm(values)}"]     # the staged tree holds no directory just for `..`
        with job.staged() as (home, tree):
            if remote is not None:
                for rel in remote.files:
                    (tree / chart_rel / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(remote.fetched.root / rel, tree / chart_rel / rel)
            text = run(job, argv, label="helm template", cwd=tree, home=home)
        return parse_documents(text, f"helm template {chart_rel}", max_bytes=job.limits.output,
                               limits=job.limits, deadline=job.deadline)


def _check_dependencies(job: RenderJob, chart_rel: str) -> None:
    """Refuse a chart whose dependencies are not vendored, naming where they would come from."""
    cache = job.closure._cache or ClosureCache()
    root = str(job.root)
    if cache.kind(root, chart_rel) != "dir":
        return
    name = chart_rel.rpartition("/")[2] or "chart"
    deps: list[dict[str, Any]] = []
    for fname in ("Chart.yaml", "requirements.yaml"):
        rel = join(chart_rel, fname)
        if rel not in job.closure.files:
            continue
        doc = cache.load(root, rel)
        if isinstance(doc, Invalid) or not isinstance(doc, dict):
            continue                        # helm reports a broken Chart.yaml itself
        if fname == "Chart.yaml" and isinstance(doc.get("name"), str):
            name = doc["name"]
        deps.extend(d for d in items(doc.get("dependencies")) if isinstance(d, dict) and d.get("name"))
    prefix = join(chart_rel, "charts/")
    below = [f[len(prefix):] for f in job.closure.files if f.startswith(prefix)]
    packaged = {f for f in below if "/" not in f and f.endswith(".tgz")}
    unpacked = {f.split("/")[0] for f in below if f.count("/") == 1 and f.endswith("/Chart.yaml")}
    for dep in deps:
        dep_name = str(dep["name"])
        if dep_name in unpacked or any(p == f"{dep_name}.tgz" or p.startswith(f"{dep_name}-") for p in packaged):
            continue
        origin = f" from {dep['repository']}" if dep.get("repository") else ""
        raise RenderError(f"chart {name} needs dependency {dep_name}{origin}: vendor it with helm dependency build")

"""`PRBOT_CLUSTERS`: the operator's map of cluster names to a kubeconfig and an optional context.

The file is YAML (or JSON): ``dev: {kubeconfig: /etc/prbot/dev.kubeconfig, context: dev-admin}``.
`load_clusters` checks every entry (the kubeconfig exists and holds the context) and reports
problems as ``FILE:LINE: message``; kubeconfigs are parsed here, never quoted, since they hold
credentials.  `cluster_for` answers "which cluster does this environment use", naming the file when
an environment's `cluster` is not in the map.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from prbot.config import Config
from prbot.errors import PrbotError

__all__ = ["CLUSTERS_ENV", "ClusterMap", "ClusterRef", "MissingCluster", "cluster_for", "clusters_from_env",
           "kubeconfig_contexts", "load_clusters"]

CLUSTERS_ENV = "PRBOT_CLUSTERS"
CLUSTER_KEYS = ("kubeconfig", "context")


@dataclass(frozen=True)
class ClusterRef:
    """One entry of the PRBOT_CLUSTERS file."""

    name: str
    kubeconfig: Path                    # absolute path
    context: str | None = None          # None: the kubeconfig's current-context


class ClusterMap(dict[str, ClusterRef]):
    """The clusters of a PRBOT_CLUSTERS file (a dict by name) and the file they came from."""

    def __init__(self, clusters: Mapping[str, ClusterRef] | None = None, *, source: Path | None = None) -> None:
        super().__init__(clusters or {})
        self.source = source


class MissingCluster(PrbotError):
    """An environment names a cluster that the cluster map does not hold."""

    def __init__(self, env: str, cluster: str, clusters: Mapping[str, ClusterRef]) -> None:
        source = getattr(clusters, "source", None)
        where = f"{CLUSTERS_ENV} ({source})" if source is not None else CLUSTERS_ENV
        known = ", ".join(sorted(clusters)) or "none"
        close = difflib.get_close_matches(cluster, list(clusters), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        super().__init__(f"environment {env!r} uses cluster {cluster!r}, which is not in {where} "
                         f"(known: {known}{hint})")
        self.env = env
        self.cluster = cluster


def _line(node: Any, key: Any, default: int) -> int:
    """1-based line of `key` in a ruamel mapping, else `default`."""
    try:
        return int(node.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return default


def _node_line(node: Any, default: int) -> int:
    try:
        return int(node.lc.line) + 1
    except (AttributeError, TypeError):
        return default


def kubeconfig_contexts(path: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """{context name: context} and the current-context of a kubeconfig file.

    Parsed here rather than by the client so that no error message can quote the file, which holds
    credentials: only line numbers are reported.  Raises ValueError with a one-line message.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or type(e).__name__}") from None
    try:
        doc = YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ValueError(f"{path} is not valid YAML{where}") from None
    except (YAMLError, ValueError, TypeError):
        raise ValueError(f"{path} is not valid YAML") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a kubeconfig (expected a mapping)")
    contexts: dict[str, dict[str, Any]] = {}
    for item in doc.get("contexts") or []:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            ctx = item.get("context")
            contexts[item["name"]] = ctx if isinstance(ctx, dict) else {}
    current = doc.get("current-context")
    return contexts, current if isinstance(current, str) and current else None


def load_clusters(path: Path) -> ClusterMap:
    """Read a PRBOT_CLUSTERS file: ``name: {kubeconfig: PATH, context: CTX}`` (context optional).

    Relative kubeconfig paths are relative to the file's directory; `~` is expanded.  Every
    kubeconfig must exist and hold the named context (or a current-context).  Problems raise
    `PrbotError` with a one-line ``FILE:LINE: message`` (the first problem, and how many more).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise PrbotError(f"{path}: cannot read the cluster map: "
                         f"{getattr(e, 'strerror', None) or type(e).__name__}") from None
    try:
        doc = YAML(typ="rt", pure=True).load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f":{mark.line + 1}" if mark is not None else ""
        what = " ".join(str(e.problem or e.context or "invalid YAML").split())
        raise PrbotError(f"{path}{at}: {what}") from None
    except Exception as e:  # noqa: BLE001 - ruamel raises a few unrelated types on odd input
        raise PrbotError(f"{path}: not valid YAML ({type(e).__name__})") from None
    if doc is None:
        return ClusterMap(source=path)
    if not isinstance(doc, dict):
        raise PrbotError(f"{path}:{_node_line(doc, 1)}: expected a mapping of cluster names to "
                         "{kubeconfig: PATH, context: NAME}")
    problems: list[str] = []
    out = ClusterMap(source=path)

    def report(at: int, message: str) -> None:
        problems.append(f"{path}:{at}: {message}")

    for name, entry in doc.items():
        line = _line(doc, name, 1)
        if not isinstance(name, str) or not name.strip():
            report(line, f"cluster name {name!r} must be a non-empty string")
            continue
        if not isinstance(entry, dict):
            report(line, f"{name}: expected {{kubeconfig: PATH, context: NAME}}")
            continue
        unknown = [k for k in entry if k not in CLUSTER_KEYS]
        for key in unknown:
            close = difflib.get_close_matches(str(key), CLUSTER_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(CLUSTER_KEYS)})"
            report(_line(entry, key, line), f"{name}: unknown key {key!r}{hint}")
        kubeconfig = entry.get("kubeconfig")
        kline = _line(entry, "kubeconfig", line)
        if "kubeconfig" not in entry:
            report(line, f"{name}.kubeconfig is required")
            continue
        if not isinstance(kubeconfig, str) or not kubeconfig.strip():
            report(kline, f"{name}.kubeconfig must be a path")
            continue
        context = entry.get("context")
        cline = _line(entry, "context", line)
        if context is not None and (not isinstance(context, str) or not context.strip()):
            report(cline, f"{name}.context must be a context name")
            continue
        if unknown:
            continue
        file = Path(os.path.expanduser(kubeconfig))
        if not file.is_absolute():
            file = path.resolve().parent / file
        if not file.is_file():
            report(kline, f"{name}.kubeconfig: {file} does not exist")
            continue
        try:
            contexts, current = kubeconfig_contexts(file)
        except ValueError as e:
            report(kline, f"{name}.kubeconfig: {e}")
            continue
        if context is not None and context not in contexts:
            known = ", ".join(sorted(contexts)) or "none"
            report(cline, f"{name}.context: {context!r} is not a context of {file} (known: {known})")
            continue
        if context is None and current is None:
            report(kline, f"{name}: {file} has no current-context; name one with `context:`")
            continue
        out[name] = ClusterRef(name=name, kubeconfig=file, context=None if context is None else str(context))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PrbotError(problems[0] + more)
    return out


def clusters_from_env(environ: Mapping[str, str] | None = None) -> ClusterMap:
    """The cluster map named by `$PRBOT_CLUSTERS`; empty when the variable is unset or empty."""
    value = (os.environ if environ is None else environ).get(CLUSTERS_ENV, "").strip()
    return load_clusters(Path(value)) if value else ClusterMap()


def cluster_for(config: Config, env: str, clusters: Mapping[str, ClusterRef]) -> ClusterRef | None:
    """The cluster environment `env` deploys to; None when it names none.

    Raises `MissingCluster` (naming the environment, the cluster and the PRBOT_CLUSTERS file) when
    the environment names a cluster the map does not hold, and `PrbotError` for an unknown
    environment.
    """
    name = config.env(env).cluster
    if not name:
        return None
    ref = clusters.get(name)
    if ref is None:
        raise MissingCluster(env, name, clusters)
    return ref

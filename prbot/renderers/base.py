"""The renderer interface, the render error, and turning a renderer's output into objects.

A renderer is one small object (`Renderer`) with three duties:
- `detect(directory, spec)`: whether a target directory is rendered by it (the registry in
  `prbot.renderers` asks kustomize, then helm, then plain);
- `closure(cache, root, target)`: every local file its rendering reads, and every remote or
  outside reference (see `prbot.renderers.closure`) — the plan's notion of "affected" and the
  render cache key follow it;
- `render(job)`: the objects, from a copy of the closure alone, run through `prbot.sandbox`.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import os
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import prbot
from prbot.config import AppSpec
from prbot.errors import RenderError, ToolError
from prbot.limits import KIB, Limits, format_size
from prbot.model import Target, TreeReader
from prbot.parse_worker import count_documents, load_json, yaml_problem
from prbot.paths import scratch_dir
from prbot.renderers.closure import Closure, ClosureCache, stage
from prbot.sandbox import run_tool
from prbot.timing import clocked, timed
from prbot.yamlio import YAML_ERRORS, load_yaml_all

log = logging.getLogger("prbot.render")


@dataclass(frozen=True)
class RenderJob:
    """One rendering: the tree, the target and its closure, and what it may use."""

    root: Path
    target: Target
    closure: Closure
    limits: Limits
    kube_version: str | None = None
    deadline: float | None = None           # time.monotonic() by which the plan's budget runs out
    remotes: Mapping[str, Any] | None = None    # remote reference -> prbot.remote.Vendored (allowed, fetched)

    @contextlib.contextmanager
    def staged(self) -> Iterator[tuple[Path, Path]]:
        """(scratch home, tree holding the closure's files only): where a tool runs.  Both are
        removed afterwards."""
        with timed("staging"):                       # making, filling and removing the copy
            scratch, tree = self._stage(scratch_dir())
        try:
            yield Path(scratch.name), tree
        finally:
            with timed("staging"):
                scratch.cleanup()

    def _stage(self, where: str | None) -> tuple[tempfile.TemporaryDirectory[str], Path]:
        """The scratch directory (in `where`, None: the system's temporary directory) and the tree in
        it holding the closure's copy; a memory file system that turns out full is left for the disk."""
        try:
            scratch = tempfile.TemporaryDirectory(prefix="prbot-render-", dir=where)
        except OSError:
            if where is None:
                raise
            log.warning("the scratch directory %s cannot be used: renders stage in the temporary directory", where)
            return self._stage(None)
        tree = Path(scratch.name) / "tree"
        try:
            tree.mkdir(mode=0o700)
            stage(self.root, self.closure, tree)
        except OSError as exc:
            scratch.cleanup()
            if exc.errno == errno.ENOSPC and where is not None:
                return self._stage(None)
            raise RenderError(f"{self.target.path or '.'}: cannot copy the target's files "
                              f"({exc.strerror or exc})") from exc
        return scratch, tree


def run(job: RenderJob, argv: list[str], *, label: str, cwd: Path, home: Path) -> str:
    """Run a renderer binary for `job` in the sandbox; RenderError naming any limit it ran into."""
    try:
        with timed("render"):
            return run_tool(argv, cwd=cwd, home=home, label=label, limits=job.limits, deadline=job.deadline)
    except ToolError as exc:
        raise RenderError(str(exc), transient=exc.transient, limit=exc.limit) from exc


class Renderer(ABC):
    """One way of turning a target directory into objects (see the module doc)."""

    name: ClassVar[str]

    @abstractmethod
    def detect(self, tree: TreeReader, rel: str, spec: AppSpec) -> bool:
        """Whether this renderer renders the directory `rel` of `tree` (the disk, or git's tree)."""

    @abstractmethod
    def closure(self, cache: ClosureCache, root: str, target: Target) -> Closure:
        """Every input of rendering `target` in the tree at `root`."""

    @abstractmethod
    def render(self, job: RenderJob) -> list[dict[str, Any]]:
        """The objects of `job.target`; RenderError with a one-line message otherwise."""

    def fingerprint_tools(self) -> tuple[str, ...]:
        """Names of the binaries this renderer runs (their identity is part of the cache key)."""
        return ()


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    """Objects as the JSON the API server would see: string keys, no bytes/sets."""
    if isinstance(value, dict):
        return {_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, set | frozenset):
        return {_key(k): None for k in value}
    return value


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


def _is_list(obj: dict[str, Any]) -> bool:
    kind = obj.get("kind")
    return isinstance(kind, str) and kind.endswith("List") and isinstance(obj.get("items"), list)


def collect(doc: Any, source: str, index: int, out: list[dict[str, Any]]) -> None:
    """Append the Kubernetes objects of one parsed document to `out`; `kind: *List` documents are
    expanded, Lists inside Lists too (as kubectl does)."""
    if doc is None or doc == {}:
        return
    if not isinstance(doc, dict):
        raise RenderError(f"{source}: document {index} is not a Kubernetes object "
                          f"(a {type(doc).__name__}, not a mapping)")
    obj = _jsonable(doc)
    if not _is_list(obj):
        if "kind" not in obj or "apiVersion" not in obj:
            raise RenderError(f"{source}: document {index} is not a Kubernetes object "
                              "(it needs apiVersion and kind)")
        out.append(obj)
        return
    pending: list[tuple[str, list[Any]]] = [(obj["kind"], list(obj["items"]))]
    while pending:                                  # depth first, in order
        kind, items = pending[-1]
        if not items:
            pending.pop()
            continue
        item = items.pop(0)
        if not isinstance(item, dict) or "kind" not in item or "apiVersion" not in item:
            raise RenderError(f"{source}: document {index}: an item of the {kind} is not a "
                              "Kubernetes object (it needs apiVersion and kind)")
        if _is_list(item):
            pending.append((item["kind"], list(item["items"])))
        else:
            out.append(item)


PARSE_IN_PROCESS = 256 * KIB
"""Texts up to this size are parsed in prbot's own process; larger ones in `prbot.parse_worker`, under
the render's memory, time and output limits.  Parsing costs up to ~200x the text in Python objects
(a 10 MB manifest took 2.2 GB), so 256 KiB stays near 50 MB even then, a few tenths of a second of
CPU, while a worker process costs ~0.3 s to start: every common manifest and render stays in process."""


def _worker_argv(path: str, source: str, kind: str, max_bytes: int, limits: Limits) -> list[str]:
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(prbot.__file__)))
    boot = ("import sys; sys.path.insert(0, sys.argv[1]); del sys.argv[1]; "
            "from prbot.parse_worker import main; sys.exit(main())")
    # -I: neither the environment nor the working directory (never the repository) reach sys.path
    return [sys.executable, "-I", "-c", boot, package_root, path, source, kind, str(max_bytes),
            str(limits.max_objects)]


def parse_elsewhere(path: Path, source: str, *, kind: str, max_bytes: int, limits: Limits,
                    deadline: float | None) -> list[Any]:
    """The documents of the file `path`, parsed by `prbot.parse_worker` in a process bounded by
    `limits` (and `deadline`); RenderError naming the limit it went over, or the parse error."""
    with tempfile.TemporaryDirectory(prefix="prbot-parse-") as home:
        try:
            out = run_tool(_worker_argv(os.fspath(path), source, kind, max_bytes, limits), cwd=Path(home),
                           home=Path(home), label=f"parsing {source}", limits=limits, deadline=deadline,
                           jail=False)
        except ToolError as exc:
            raise RenderError(str(exc), transient=exc.transient, limit=exc.limit) from exc
    try:
        answer = json.loads(out)
    except (ValueError, RecursionError) as exc:      # pragma: no cover - the worker prints JSON
        raise RenderError(f"parsing {source}: the parser's answer is not JSON", transient=True) from exc
    if "error" in answer:
        limit = answer.get("limit")
        message = answer["error"]
        if limit == "max_objects":
            message += f" ({limits.describe('max_objects')})"
        raise RenderError(message, limit=limit)
    docs: list[Any] = answer["docs"]
    return docs


def _objects(docs: list[Any], source: str, limits: Limits | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for index, doc in enumerate(docs, 1):
        collect(doc, source, index, out)
        if limits is not None and len(out) > (most := limits.max_objects):
            raise RenderError(f"{source}: refused: more than {most:,} objects ({limits.describe('max_objects')})",
                              limit="max_objects")
    return out


def _too_many_documents(text: str, source: str, limits: Limits | None) -> None:
    if limits is not None and count_documents(text) > limits.max_objects:
        raise RenderError(f"{source}: refused: more than {limits.max_objects:,} documents "
                          f"({limits.describe('max_objects')})", limit="max_objects")


@clocked("parse")
def parse_documents(text: str, source: str = "output", *, max_bytes: int | None = None,
                    limits: Limits | None = None, deadline: float | None = None) -> list[dict[str, Any]]:
    """Kubernetes objects of a multi-document YAML text; `kind: *List` documents are expanded.

    Invalid YAML raises RenderError ``SOURCE:LINE: invalid YAML: problem``; a text over the
    `prbot.yamlio` guards (size, alias expansion, nesting) ``SOURCE: refused: …``.  With `limits`:
    more documents or objects than `limits.max_objects` are refused (documents counted before any
    parsing), and a text over `PARSE_IN_PROCESS` is parsed in a process bounded by them and by
    `deadline` (`parse_elsewhere`).
    """
    if max_bytes is not None and len(text) > max_bytes:
        raise RenderError(f"{source}: refused: larger than {format_size(max_bytes)}", limit="output")
    _too_many_documents(text, source, limits)
    if limits is not None and len(text) > PARSE_IN_PROCESS:
        with tempfile.TemporaryDirectory(prefix="prbot-text-") as scratch:
            path = Path(scratch) / "text.yaml"
            path.write_text(text, encoding="utf-8")
            docs = parse_elsewhere(path, source, kind="yaml", max_bytes=max(len(path.read_bytes()), 1),
                                   limits=limits, deadline=deadline)
        return _objects(docs, source, limits)
    try:
        docs = load_yaml_all(text, max_bytes=max_bytes)
    except YAML_ERRORS as exc:
        raise RenderError(yaml_problem(exc, source)) from exc
    except RecursionError as exc:                   # pragma: no cover - libyaml stops at 1000 levels
        raise RenderError(f"{source}: refused: nested too deeply") from exc
    return _objects(docs, source, limits)


@clocked("parse")
def parse_file(root: Path, rel: str, *, max_bytes: int | None = None, limits: Limits | None = None,
               deadline: float | None = None) -> list[dict[str, Any]]:
    """The objects of one manifest file (YAML, or JSON for `*.json`); `limits`, `deadline` as for
    `parse_documents` (a big file is parsed by the worker straight from the disk)."""
    path = os.path.join(root, rel)
    kind = "json" if rel.endswith(".json") else "yaml"
    if limits is not None:
        try:
            size = os.path.getsize(path)
        except OSError as exc:
            raise RenderError(f"{rel}: cannot be read ({exc.strerror or exc})") from exc
        if size > PARSE_IN_PROCESS:
            if max_bytes is not None and size > max_bytes:
                raise RenderError(f"{rel}: refused: larger than {format_size(max_bytes)}", limit="output")
            docs = parse_elsewhere(Path(path), rel, kind=kind, max_bytes=max_bytes if max_bytes is not None
                                   else limits.output, limits=limits, deadline=deadline)
            return _objects(docs, rel, limits)
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1 if max_bytes is not None else -1)
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RenderError(f"{rel}: not UTF-8 text") from exc
    except OSError as exc:
        raise RenderError(f"{rel}: cannot be read ({exc.strerror or exc})") from exc
    if kind == "yaml":
        return parse_documents(text, rel, max_bytes=max_bytes, limits=limits, deadline=deadline)
    if max_bytes is not None and len(data) > max_bytes:
        raise RenderError(f"{rel}: refused: larger than the output limit")
    try:
        doc = load_json(text, rel)
    except ValueError as exc:
        raise RenderError(str(exc)) from exc
    return _objects([doc], rel, limits)

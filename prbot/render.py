"""Renderers: kustomize / helm / plain, as subprocesses without a shell."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from prbot.errors import PrbotError
from prbot.targets import PLAIN_SUFFIXES, Target

DEFAULT_TIMEOUT = 120.0


class RenderError(PrbotError):
    """A target could not be rendered; the message is the renderer's, cleaned to one line."""


def find_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RenderError(f"{name} is not installed or not on PATH (install it, or run scripts/fetch-tools)")
    return path


def _run(argv: list[str], cwd: Path, timeout: float) -> str:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RenderError(f"{Path(argv[0]).name} timed out after {timeout:g}s") from exc
    if proc.returncode != 0:
        msg = " ".join((proc.stderr or proc.stdout or "failed").split())
        raise RenderError(f"{Path(argv[0]).name}: {msg}")
    return proc.stdout


def parse_documents(text: str, source: str = "output") -> list[dict[str, Any]]:
    yaml = YAML(typ="safe", pure=True)
    try:
        docs = list(yaml.load_all(text))
    except YAMLError as exc:
        raise RenderError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from exc
    out: list[dict[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
            out.extend(i for i in doc["items"] if isinstance(i, dict))
        elif isinstance(doc, dict):
            out.append(doc)
        else:
            raise RenderError(f"{source}: a document is not a Kubernetes object")
    return out


def render_target(root: Path, target: Target, *, timeout: float = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
    """Render one target of the repository checked out at `root` into a list of objects."""
    root = Path(root)
    directory = root / target.path
    if target.renderer == "kustomize":
        kustomize = shutil.which("kustomize")
        argv = [kustomize, "build"] if kustomize else [find_tool("kubectl"), "kustomize"]
        return parse_documents(_run([*argv, str(directory)], root, timeout), target.path)
    if target.renderer == "helm":
        chart = root / (target.chart or target.path)
        argv = [find_tool("helm"), "template", f"{target.app}-{target.env}", str(chart)]
        if target.namespace:
            argv += ["--namespace", target.namespace]
        for values in target.values:
            argv += ["--values", str(root / values)]
        return parse_documents(_run(argv, root, timeout), target.path)
    objects: list[dict[str, Any]] = []
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in PLAIN_SUFFIXES):
        objects.extend(parse_documents(path.read_text(), f"{target.path}/{path.name}"))
    return objects

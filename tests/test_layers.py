"""The layers of prbot, kept by a test: each module imports only from its own layer or below, and
no import cycle exists anywhere, counting imports made inside functions and type-only imports.

The order (bottom up) is the one DESIGN.md describes; a new module must be placed in `LAYERS`
before this test passes, which is the moment to decide where it belongs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "prbot"

# Bottom up.  A name stands for the module and, for a package, everything in it.
LAYERS: list[tuple[str, ...]] = [
    # 0: words with no prbot dependency but the exceptions
    ("prbot", "prbot.errors", "prbot.paths", "prbot.diskcache", "prbot.limits", "prbot.images", "prbot.yamlio",
     "prbot.secrets", "prbot.branches", "prbot.timing"),
    # 1: the data model, the configuration, and tools that read or edit files
    ("prbot.model", "prbot.config", "prbot.tools", "prbot.gitrepo", "prbot.yamledit", "prbot.diff",
     "prbot.parse_worker",
     "prbot.validate", "prbot.image_rules"),
    # 2: the jail every renderer process runs in, and the renderers
    ("prbot.sandbox", "prbot.renderers"),
    # 3: discovery, remote inputs, the render pool
    ("prbot.targets", "prbot.remote", "prbot.render", "prbot.expand"),
    # 4: what a change does: the plan, the edits, the report
    ("prbot.plan", "prbot.edit", "prbot.report"),
    # 5: the interfaces use cases are written against
    ("prbot.ports", "prbot.progress", "prbot.envboard"),
    # 6: the use cases
    ("prbot.flows", "prbot.commands", "prbot.repoindex"),
    # 7: adapters to the outside world
    ("prbot.github", "prbot.workspace", "prbot.registries", "prbot.cluster", "prbot.standins", "prbot.service",
     "prbot.cli", "prbot.demo", "prbot.demo_serve", "prbot.rbac"),
]


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None          # (length of the matching name, layer)
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or (name != "prbot" and module.startswith(name + "."))) and \
                    (best is None or len(name) > best[0]):
                best = (len(name), index)
    return None if best is None else best[1]


def _imports(module: str, path: Path) -> set[str]:
    """The prbot modules `module` imports, anywhere in the file (functions, TYPE_CHECKING blocks)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from prbot import gitrepo` imports the module prbot.gitrepo, not the package
            names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                     for alias in node.names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if _layer(m) is None]
    assert unplaced == [], f"place these modules in tests/test_layers.py LAYERS: {unplaced}"


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = [f"{m} (layer {_layer(m)}) imports {dep} (layer {_layer(dep)})"
              for m, deps in sorted(GRAPH.items()) for dep in sorted(deps)
              if (_layer(m) or 0) < (_layer(dep) or 0)]
    assert upward == []


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_the_core_imports_no_adapter_library() -> None:
    """Flask, PyGithub, huey, redis and the kubernetes client are reached through adapters only."""
    adapters = {"flask", "github", "huey", "redis", "kubernetes", "gunicorn", "prometheus_client"}
    core = [m for m in MODULES if (_layer(m) or 0) <= 6]
    offenders: list[str] = []
    for module in core:
        for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
            roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else \
                [(node.module or "").split(".")[0]] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{module} imports {r}" for r in roots if r in adapters]
    assert offenders == []


# ------------------------------------------------------------------ the checker itself

def test_the_cycle_finder_sees_a_cycle_through_three_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(("module", "layer"), [("prbot.errors", 0), ("prbot.renderers.kustomize", 2),
                                               ("prbot.service.app", 7), ("prbot", 0)])
def test_a_package_name_places_its_modules(module: str, layer: int) -> None:
    assert _layer(module) == layer


def test_imports_inside_functions_count(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from prbot.targets import discover_targets\n    from prbot import gitrepo\n")
    assert _imports("prbot.config", source) == {"prbot.targets", "prbot.gitrepo"}

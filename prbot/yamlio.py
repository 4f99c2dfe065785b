"""The one YAML loader: safe, Kubernetes semantics, and guarded against hostile input.

Every YAML text prbot reads from a repository or a renderer goes through `load_yaml_all`:
- **safe**: libyaml through PyYAML when installed (~15x faster), else ruamel.yaml, both with the safe
  constructor only; timestamps stay strings, as Kubernetes reads them (sigs.k8s.io/yaml);
- **bounded**: a text longer than `max_bytes` is refused before parsing; after parsing, the
  documents are measured once (shared alias targets counted once per use without being expanded):
  more than `max_nodes` nodes once aliases are expanded (a "billion laughs" alias bomb), nesting
  deeper than `MAX_DEPTH` (deeper objects break diffing and schema validation), or a recursive
  alias raise `YamlLimitError`, whose message names the limit, and so does an integer longer than
  `MAX_INT_DIGITS`.  libyaml itself refuses nesting
  deeper than 1000 levels while parsing, so nothing here recurses without bound.
`check_tree` applies the same node and depth guard to data parsed otherwise (JSON).
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import YAMLError

from prbot.errors import YamlLimitError

try:                                    # libyaml through PyYAML (a dependency of `kubernetes`)
    import yaml as _pyyaml
    _CLoader: Any = getattr(_pyyaml, "CSafeLoader", None)
except ImportError:                     # pragma: no cover - depends on the installation
    _pyyaml = None  # type: ignore[assignment]
    _CLoader = None

MAX_DEPTH = 128
"""Deepest nesting accepted in a document (Kubernetes objects, CRD schemas included, stay far below)."""
MAX_NODES = 5_000_000
"""Default bound on the nodes of one text with aliases expanded (about what 50 MB of YAML holds)."""
MAX_INT_DIGITS = 100
"""Longest integer accepted (Kubernetes integers have at most 19 digits; Python refuses to convert
more than 4,300, which would otherwise fail the whole document with an internal error)."""


def _check_int(text: str) -> None:
    if len(text) > MAX_INT_DIGITS:
        raise YamlLimitError(f"an integer of {len(text):,} characters (the limit is {MAX_INT_DIGITS} digits)")


class _RuamelConstructor(SafeConstructor):
    def construct_yaml_int(self, node: Any) -> Any:
        _check_int(str(node.value))
        return super().construct_yaml_int(node)


_RuamelConstructor.add_constructor("tag:yaml.org,2002:timestamp", SafeConstructor.construct_yaml_str)
_RuamelConstructor.add_constructor("tag:yaml.org,2002:int", _RuamelConstructor.construct_yaml_int)

if _CLoader is not None:
    class _FastLoader(_CLoader):  # type: ignore[misc,valid-type]
        pass

    _FastLoader.add_constructor("tag:yaml.org,2002:timestamp", _pyyaml.SafeLoader.construct_yaml_str)
    _FastLoader.add_constructor("tag:yaml.org,2002:value", _pyyaml.SafeLoader.construct_yaml_str)

    def _fast_int(loader: Any, node: Any) -> Any:
        _check_int(str(node.value))
        return _pyyaml.SafeLoader.construct_yaml_int(loader, node)

    _FastLoader.add_constructor("tag:yaml.org,2002:int", _fast_int)
    YAML_ERRORS: tuple[type[Exception], ...] = (YAMLError, _pyyaml.YAMLError, YamlLimitError)
    YAML_LOADER = f"libyaml-{_pyyaml.__version__}"
else:                                   # pragma: no cover - depends on the installation
    YAML_ERRORS = (YAMLError, YamlLimitError)
    YAML_LOADER = "ruamel.yaml"


def load_yaml_all(text: str, *, max_nodes: int = MAX_NODES, max_bytes: int | None = None,
                  max_depth: int = MAX_DEPTH) -> list[Any]:
    """Every document of a YAML text, loaded safely and within the guards (see the module doc).

    Raises one of `YAML_ERRORS`; those carry ``problem`` and, for syntax errors,
    ``problem_mark.line`` (0-based).
    """
    if max_bytes is not None and len(text) > max_bytes:
        from prbot.limits import format_size
        raise YamlLimitError(f"larger than {format_size(max_bytes)}")
    if _CLoader is not None:
        docs = list(_pyyaml.load_all(text, Loader=_FastLoader))
    else:                               # pragma: no cover - depends on the installation
        yaml = YAML(typ="safe", pure=True)
        yaml.Constructor = _RuamelConstructor
        docs = list(yaml.load_all(text))
    check_tree(docs, max_nodes=max_nodes, max_depth=max_depth + 1)   # +1: the list of documents
    return docs


def load_yaml(text: str, **limits: Any) -> Any:
    """The single document of a YAML text (None when empty); see `load_yaml_all`."""
    docs = load_yaml_all(text, **limits)
    if len(docs) > 1:
        raise YAMLError(f"expected one YAML document, found {len(docs)}")
    return docs[0] if docs else None


def check_tree(data: Any, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> int:
    """Nodes of `data` with shared containers (YAML aliases) counted at every use; YamlLimitError
    when over `max_nodes`, nested deeper than `max_depth`, or recursive.

    Each distinct container is visited once (sizes are memoised), so an alias bomb is measured
    without being expanded, in time linear in the parsed text.
    """
    sizes: dict[int, tuple[int, int]] = {}      # id -> (expanded nodes, depth)
    open_: set[int] = set()
    keep: list[Any] = []                        # keeps ids valid while measuring
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, done = stack.pop()
        ident = id(node)
        if done:
            nodes, depth = 1, 0
            for child in _children(node):
                got = sizes.get(id(child)) if isinstance(child, dict | list) else None
                child_nodes, child_depth = got if got is not None else (1, 0)
                nodes += child_nodes
                depth = max(depth, child_depth)
            depth += 1
            open_.discard(ident)
            if nodes > max_nodes:
                raise YamlLimitError(f"aliases expand to more than {max_nodes:,} nodes")
            if depth > max_depth:
                raise YamlLimitError(f"nested deeper than {max_depth - 1} levels")
            sizes[ident] = (nodes, depth)
            continue
        if ident in sizes:
            continue
        if ident in open_:
            raise YamlLimitError("a recursive alias (a node that contains itself)")
        open_.add(ident)
        keep.append(node)
        if len(open_) > max_depth:
            raise YamlLimitError(f"nested deeper than {max_depth - 1} levels")
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node)
                     if isinstance(child, dict | list) and id(child) not in sizes)
    if isinstance(data, dict | list):
        return sizes[id(data)][0]
    return 1


def _children(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return list(node.values())
    if isinstance(node, list):
        return node
    return []

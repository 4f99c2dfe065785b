"""Byte-preserving YAML edits: change one scalar's source text, never re-dump a file.

ruamel.yaml composes every document of the file into nodes whose marks carry the character offset
of each node in the original string (CRLF, BOM and multi-byte characters included), so an edit is
a :class:`TextEdit` — a span of the original text and its replacement.  Everything outside the span
(comments, key order, quoting of other scalars, indentation, blank lines, document separators, line
endings) stays byte for byte as it was.

A replaced scalar keeps its quoting style: plain stays plain unless the new value would read back
as something else (``1.10``, ``0x1``, ``true``, ``a: b``, ``""``…) — it is then double-quoted;
single-quoted stays single-quoted when that can hold the value; double-quoted is escaped for
YAML and JSON alike.  Block scalars (``|``, ``>``) are refused rather than rewritten.

Structural edits (inserting a key next to another, deleting a key line, appending a sequence item,
adding a top-level block) write new lines with the indentation and line endings of their
neighbours, in flow style inside flow collections.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from prbot.errors import YamlEditError

#: What a structural edit may write as a value: a scalar, a mapping or a list of those.
Value = str | Mapping[str, "Value"] | Sequence["Value"]

_ALIAS_NAME = re.compile(r"\*[^\s,\[\]{}]+")
_PROPERTY = re.compile(r"[&!][^\s,\[\]{}]*")
_SIMPLE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")


@dataclass(frozen=True)
class TextEdit:
    """Replace ``text[start:end]`` by ``new``."""

    start: int
    end: int
    new: str


def apply_edits(text: str, edits: Iterable[TextEdit]) -> str:
    """Apply non-overlapping edits made against the same `text` (insertions may share a position)."""
    ordered = sorted(edits, key=lambda e: (e.start, e.end))
    out: list[str] = []
    pos = 0
    for e in ordered:
        if e.start < pos or e.end < e.start or e.end > len(text):
            raise YamlEditError(f"overlapping or out-of-range edit at offset {e.start}")
        out.append(text[pos:e.start])
        out.append(e.new)
        pos = e.end
    out.append(text[pos:])
    return "".join(out)


def line_ending(text: str) -> str:
    """The file's line ending: CRLF when its first line break is one, else LF."""
    i = text.find("\n")
    return "\r\n" if i > 0 and text[i - 1] == "\r" else "\n"


# -- scalar formatting ----------------------------------------------------------------------------------

_SAFE_LOADERS: dict[str, YAML] = {}


def _reads_back(document: str, expected: Any) -> bool:
    for version_prefix in ("", "%YAML 1.1\n---\n"):
        loader = _SAFE_LOADERS.setdefault("safe", YAML(typ="safe", pure=True))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = loader.load(version_prefix + document)
        except YAMLError:
            return False
        except Exception:  # noqa: BLE001 - any failure to read it back means "not safe"
            return False
        if got != expected or not _all_str(got):
            return False
    return True


def _all_str(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _all_str(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_all_str(v) for v in value)
    return isinstance(value, str)


@lru_cache(maxsize=4096)
def _plain_ok(value: str, flow: bool) -> bool:
    if not value or value != value.strip() or any(c in value for c in "\r\n\x85\u2028\u2029\ufeff"):
        return False
    if any(not _printable(c) or c == "\t" for c in value):
        return False
    if flow:
        return _reads_back(f"[{value}]\n", [value]) and _reads_back(f"{{k: {value}}}\n", {"k": value})
    return (_reads_back(f"k: {value}\n", {"k": value}) and _reads_back(f"- {value}\n", [value])
            and _reads_back(f"k: {value} # c\n", {"k": value}))


@lru_cache(maxsize=4096)
def _single_ok(value: str, flow: bool) -> bool:
    if any(c in value for c in "\r\n\x85\u2028\u2029\ufeff") or any(not _printable(c) for c in value):
        return False
    quoted = _single(value)
    if flow:
        return _reads_back(f"[{quoted}]\n", [value])
    return _reads_back(f"k: {quoted}\n", {"k": value})


def _printable(c: str) -> bool:
    o = ord(c)
    return (o in (0x09, 0x0A, 0x0D, 0x85) or 0x20 <= o <= 0x7E or 0xA0 <= o <= 0xD7FF
            or 0xE000 <= o <= 0xFFFD or 0x10000 <= o <= 0x10FFFF) and o != 0xFEFF


def _single(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_DOUBLE_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b",
                   "\f": "\\f"}


def _double(value: str) -> str:
    """Double-quoted, with escapes that YAML and JSON both read (``\\uXXXX``, never ``\\x``)."""
    out = ['"']
    for c in value:
        if c in _DOUBLE_ESCAPES:
            out.append(_DOUBLE_ESCAPES[c])
        elif not _printable(c) or c in "\x85\u2028\u2029" or ord(c) < 0x20 or ord(c) == 0x7F:
            o = ord(c)
            out.append(f"\\u{o:04X}" if o <= 0xFFFF else f"\\U{o:08X}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def format_scalar(value: str, style: str | None = None, *, flow: bool = False) -> str:
    """`value` written as a YAML scalar of `style` (None plain, ``'`` or ``"``).

    Falls back to double quotes when the style cannot hold the value (a plain ``true``, ``1.10``
    or ``a: b`` would read back as something else; single quotes cannot hold a line break).
    `flow` says whether the scalar sits inside a ``[...]`` / ``{...}`` collection.
    """
    if not isinstance(value, str):
        raise TypeError(f"scalar value must be a str, not {type(value).__name__}")
    if style in ("|", ">"):
        raise YamlEditError("block scalars (| or >) are not edited")
    if style == "'" and _single_ok(value, flow):
        return _single(value)
    if style is None and _plain_ok(value, flow):
        return value
    return _double(value)


# -- node helpers ---------------------------------------------------------------------------------------

def entries(node: Node | None) -> list[tuple[Node, Node]]:
    """The (key, value) pairs of a mapping node; [] for anything else."""
    return list(node.value) if isinstance(node, MappingNode) else []


def items(node: Node | None) -> list[Node]:
    """The items of a sequence node; [] for anything else."""
    return list(node.value) if isinstance(node, SequenceNode) else []


def get_entry(node: Node | None, key: str) -> tuple[Node, Node] | None:
    for k, v in entries(node):
        if isinstance(k, ScalarNode) and k.value == key:
            return k, v
    return None


def get_value(node: Node | None, key: str) -> Node | None:
    found = get_entry(node, key)
    return found[1] if found else None


def scalar_value(node: Node | None) -> str | None:
    """The text of a non-null scalar node; None for a null, a missing or a collection node."""
    if not isinstance(node, ScalarNode) or node.tag == "tag:yaml.org,2002:null":
        return None
    return str(node.value)


def walk(node: Node | None) -> Iterator[Node]:
    """The node and every node below it, depth first, in document order (aliases once)."""
    seen: set[int] = set()
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        if isinstance(n, MappingNode):
            for k, v in reversed(n.value):
                stack.extend((v, k))
        elif isinstance(n, SequenceNode):
            stack.extend(reversed(n.value))


# -- the file -------------------------------------------------------------------------------------------

def _yaml_error(source: str, exc: Exception) -> YamlEditError:
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}" if mark is not None else ""
        what = exc.problem or exc.context or "invalid YAML"
        return YamlEditError(f"{source}{where}: invalid YAML: {what}")
    return YamlEditError(f"{source}: invalid YAML: {' '.join(str(exc).split())}")


class YamlFile:
    """One YAML (or JSON) text, every document composed, ready to produce :class:`TextEdit`\\ s."""

    def __init__(self, text: str, source: str = "<string>") -> None:
        self.text = text
        self.source = source
        try:
            self.documents: list[Node] = list(YAML(typ="rt").compose_all(text))
        except YAMLError as exc:
            raise _yaml_error(source, exc) from exc
        except Exception as exc:  # noqa: BLE001 - ruamel raises a few non-YAMLError types on bad input
            raise YamlEditError(f"{source}: invalid YAML: {' '.join(str(exc).split())}") from exc
        self._parent: dict[int, Node] = {}
        self._refs: dict[int, int] = {}
        for doc in self.documents:
            self._index(doc)

    def _index(self, root: Node) -> None:
        stack: list[Node] = [root]
        while stack:
            n = stack.pop()
            self._refs[id(n)] = self._refs.get(id(n), 0) + 1
            if self._refs[id(n)] > 1:
                continue
            children: list[Node] = []
            if isinstance(n, MappingNode):
                for k, v in n.value:
                    children += [k, v]
            elif isinstance(n, SequenceNode):
                children = list(n.value)
            for c in children:
                self._parent.setdefault(id(c), n)
            stack.extend(children)

    # -- positions --

    def eol(self) -> str:
        return line_ending(self.text)

    def _line_start(self, pos: int) -> int:
        return self.text.rfind("\n", 0, pos) + 1

    def _after_line(self, pos: int) -> int:
        """The offset just after the line break ending the line that holds `pos` (or the text's end)."""
        if pos > 0 and self.text[pos - 1] == "\n":
            return pos
        i = self.text.find("\n", pos)
        return len(self.text) if i < 0 else i + 1

    def _column(self, pos: int) -> int:
        return pos - self._line_start(pos)

    def in_flow(self, node: Node) -> bool:
        """True when the node is, or sits inside, a flow collection."""
        n: Node | None = node
        while n is not None:
            if isinstance(n, (MappingNode, SequenceNode)) and n.flow_style:
                return True
            n = self._parent.get(id(n))
        return False

    def is_aliased(self, node: Node) -> bool:
        return self._refs.get(id(node), 0) > 1

    def scalar_span(self, node: Node) -> tuple[int, int]:
        """The span of a scalar's own text: quotes included, anchor and tag (``&a !!str``) excluded."""
        if not isinstance(node, ScalarNode):
            raise YamlEditError(f"{self.source}: not a scalar")
        start, end = node.start_mark.index, node.end_mark.index
        text = self.text
        while start < end and text[start] in "&!":
            m = _PROPERTY.match(text, start)
            start = m.end() if m else start + 1
            while start < end:
                if text[start] in " \t\r\n":
                    start += 1
                elif text[start] == "#":
                    nl = text.find("\n", start)
                    start = end if nl < 0 else nl + 1
                else:
                    break
        return start, end

    def _value_end(self, key: Node, value: Node) -> int:
        """Where the source text of a mapping value (or sequence item) ends."""
        if value.start_mark.index < key.end_mark.index:          # an alias: `key: *anchor`
            star = self.text.find("*", key.end_mark.index)
            m = _ALIAS_NAME.match(self.text, star) if star >= 0 else None
            return m.end() if m else key.end_mark.index
        if isinstance(value, ScalarNode) and value.start_mark.index == value.end_mark.index:
            return self._after_colon(key)                          # `key:` with no value written
        return max(key.end_mark.index, self._node_end(value))

    def _after_colon(self, key: Node) -> int:
        colon = self.text.find(":", key.end_mark.index)
        if colon < 0:
            raise YamlEditError(f"{self.source}:{key.start_mark.line + 1}: cannot find the ':' after a key")
        return colon + 1

    def _node_end(self, node: Node) -> int:
        if isinstance(node, ScalarNode) or getattr(node, "flow_style", False):
            return int(node.end_mark.index)
        if isinstance(node, MappingNode) and node.value:
            k, v = node.value[-1]
            return self._value_end(k, v)
        if isinstance(node, SequenceNode) and node.value:
            return self._item_end(node, len(node.value) - 1)
        return int(node.end_mark.index)

    def _item_end(self, sequence: Node, index: int) -> int:
        """Where the source text of a sequence's item ends (an alias item `- *a` included)."""
        item = sequence.value[index]
        bound = (self._item_end(sequence, index - 1) if index > 0 else sequence.start_mark.index)
        if item.start_mark.index < bound:
            star = self.text.find("*", bound)
            m = _ALIAS_NAME.match(self.text, star) if star >= 0 else None
            if m is None:
                raise YamlEditError(f"{self.source}: cannot locate an alias item")
            return m.end()
        return self._node_end(item)

    # -- indentation style --

    def mapping_step(self, default: int = 2) -> int:
        """How far this file indents a nested block mapping below its key."""
        for doc in self.documents:
            for n in walk(doc):
                if isinstance(n, MappingNode) and not n.flow_style:
                    for k, v in n.value:
                        if isinstance(v, MappingNode) and not v.flow_style and v.value:
                            step = self._column(v.value[0][0].start_mark.index) - self._column(
                                k.start_mark.index)
                            if step > 0:
                                return step
        return default

    def sequence_indent(self, default: int = 0) -> int:
        """How far this file indents a block sequence's ``-`` below its key (0 or 2, usually)."""
        for doc in self.documents:
            for n in walk(doc):
                if isinstance(n, MappingNode) and not n.flow_style:
                    for k, v in n.value:
                        if isinstance(v, SequenceNode) and not v.flow_style and v.value:
                            dash = self._dash(v.value[0])
                            if dash is not None:
                                return max(0, self._column(dash) - self._column(k.start_mark.index))
        return default

    def _dash(self, item: Node) -> int | None:
        i = item.start_mark.index - 1
        while i >= 0 and self.text[i] in " \t":
            i -= 1
        return i if i >= 0 and self.text[i] == "-" else None

    # -- edits --

    def set_scalar(self, node: Node, value: str) -> TextEdit:
        """Replace a scalar's text by `value`, in the scalar's own quoting style."""
        if not isinstance(node, ScalarNode):
            raise YamlEditError(f"{self.source}:{node.start_mark.line + 1}: expected a scalar, found a "
                                f"{'mapping' if isinstance(node, MappingNode) else 'sequence'}")
        line = node.start_mark.line + 1
        if node.style in ("|", ">"):
            raise YamlEditError(f"{self.source}:{line}: refusing to edit a block scalar ({node.style}); "
                                "write the value on one line")
        if self.is_aliased(node):
            raise YamlEditError(f"{self.source}:{line}: refusing to edit a scalar that an alias (*) "
                                "also refers to")
        start, end = self.scalar_span(node)
        if start == end:  # an empty (null) value, `key:` — write a plain scalar after the colon
            parent = self._parent.get(id(node))
            key = next((k for k, v in entries(parent) if v is node), None)
            if key is None or node.value not in ("", None):
                raise YamlEditError(f"{self.source}:{line}: cannot locate the scalar's text")
            pos = self._after_colon(key)
            return TextEdit(pos, pos, " " + format_scalar(value, None, flow=self.in_flow(node)))
        return TextEdit(start, end, format_scalar(value, node.style, flow=self.in_flow(node)))

    def insert_key(self, mapping: Node, key: str, value: Value, *,
                   after: str | Sequence[str] = ()) -> TextEdit:
        """Add ``key: value`` to a mapping, right after the first existing key of `after`, else last."""
        if not isinstance(mapping, MappingNode):
            raise YamlEditError(f"{self.source}: not a mapping")
        _check_key(key)
        if get_entry(mapping, key) is not None:
            raise YamlEditError(f"{self.source}:{mapping.start_mark.line + 1}: key {key!r} already exists")
        names = [after] if isinstance(after, str) else list(after)
        anchor: tuple[Node, Node] | None = None
        for name in names:
            anchor = get_entry(mapping, name)
            if anchor is not None:
                break
        pairs = entries(mapping)
        if anchor is None and pairs:
            anchor = pairs[-1]
        if mapping.flow_style:
            if anchor is None:
                brace = self.text.index("{", mapping.start_mark.index)
                return TextEdit(brace + 1, brace + 1, f"{key}: {_flow_value(value)}")
            pos = self._value_end(*anchor)
            return TextEdit(pos, pos, f", {key}: {_flow_value(value)}")
        if anchor is None:
            raise YamlEditError(f"{self.source}: cannot add a key to an empty block mapping")
        column = self._column(pairs[0][0].start_mark.index)
        pos = self._after_line(self._value_end(*anchor))
        return self._insert_lines(pos, self._key_lines(key, value, column))

    def delete_key(self, mapping: Node, key: str) -> TextEdit:
        """Remove ``key: value`` (its whole line, or lines, in block style) from a mapping."""
        if not isinstance(mapping, MappingNode):
            raise YamlEditError(f"{self.source}: not a mapping")
        pairs = entries(mapping)
        index = next((i for i, (k, _) in enumerate(pairs)
                      if isinstance(k, ScalarNode) and k.value == key), None)
        if index is None:
            raise YamlEditError(f"{self.source}: no key {key!r} to delete")
        k, v = pairs[index]
        kstart = k.start_mark.index
        vend = self._value_end(k, v)
        if mapping.flow_style:
            if index + 1 < len(pairs):
                return TextEdit(kstart, pairs[index + 1][0].start_mark.index, "")
            if index > 0:
                pk, pv = pairs[index - 1]
                return TextEdit(self._value_end(pk, pv), vend, "")
            return TextEdit(kstart, vend, "")
        line_start = self._line_start(kstart)
        if self.text[line_start:kstart].strip() == "":
            if len(pairs) == 1:
                raise YamlEditError(f"{self.source}:{k.start_mark.line + 1}: refusing to delete {key!r}, "
                                    "the only key of its mapping")
            return TextEdit(line_start, self._after_line(vend), "")
        if index + 1 < len(pairs):          # `- key: v` opening a sequence item: pull the next key up
            return TextEdit(kstart, pairs[index + 1][0].start_mark.index, "")
        return TextEdit(kstart, vend, "{}")

    def append_item(self, sequence: Node, item: Value) -> TextEdit:
        """Append an item (a scalar or a mapping of scalars) at the end of a sequence."""
        if not isinstance(sequence, SequenceNode):
            raise YamlEditError(f"{self.source}: not a sequence")
        existing = items(sequence)
        if sequence.flow_style:
            if not existing:
                bracket = self.text.index("[", sequence.start_mark.index)
                return TextEdit(bracket + 1, bracket + 1, _flow_value(item))
            pos = self._item_end(sequence, len(existing) - 1)
            return TextEdit(pos, pos, f", {_flow_value(item)}")
        first = existing[0]
        dash = self._dash(first)
        if dash is None:
            raise YamlEditError(f"{self.source}:{first.start_mark.line + 1}: cannot find the sequence's '-'")
        dash_col = self._column(dash)
        content_col = self._column(first.start_mark.index)
        if isinstance(first, MappingNode) and first.value and not first.flow_style:
            content_col = self._column(first.value[0][0].start_mark.index)
        pos = self._after_line(self._item_end(sequence, len(existing) - 1))
        return self._insert_lines(pos, self._item_lines(item, dash_col, content_col - dash_col))

    def set_empty_value(self, mapping: Node, key: str, value: Value) -> TextEdit:
        """Give a key written with no value (``images:``) a block value on the lines below it."""
        found = get_entry(mapping, key)
        if found is None:
            raise YamlEditError(f"{self.source}: no key {key!r}")
        k, v = found
        if not isinstance(v, ScalarNode) or v.start_mark.index != v.end_mark.index:
            raise YamlEditError(f"{self.source}:{k.start_mark.line + 1}: {key!r} already has a value")
        if isinstance(value, str) or getattr(mapping, "flow_style", False) or self.in_flow(mapping):
            return self.set_scalar(v, value) if isinstance(value, str) else TextEdit(
                v.start_mark.index, v.end_mark.index, " " + _flow_value(value))
        column = self._column(k.start_mark.index)
        lines = self._key_lines(key, value, column)[1:]
        return self._insert_lines(self._after_line(k.end_mark.index), lines)

    def _insert_lines(self, pos: int, lines: list[str]) -> TextEdit:
        eol = self.eol()
        block = eol.join(lines)
        if pos >= len(self.text) and self.text and not self.text.endswith("\n"):
            return TextEdit(pos, pos, eol + block)           # keep the file's "no final newline"
        return TextEdit(pos, pos, block + eol)

    def _key_lines(self, key: str, value: Value, column: int) -> list[str]:
        pad = " " * column
        _check_key(key)
        if isinstance(value, str):
            return [f"{pad}{key}: {format_scalar(value)}"]
        if isinstance(value, Mapping):
            if not value:
                return [f"{pad}{key}: {{}}"]
            lines = [f"{pad}{key}:"]
            for k, v in value.items():
                lines += self._key_lines(k, v, column + self.mapping_step())
            return lines
        seq = list(value)
        if not seq:
            return [f"{pad}{key}: []"]
        lines = [f"{pad}{key}:"]
        dash_col = column + self.sequence_indent()
        for item in seq:
            lines += self._item_lines(item, dash_col, 2)
        return lines

    def _item_lines(self, item: Value, dash_col: int, offset: int) -> list[str]:
        offset = max(offset, 2)
        head = " " * dash_col + "-" + " " * (offset - 1)
        if isinstance(item, str):
            return [head + format_scalar(item)]
        if isinstance(item, Mapping) and item:
            lines: list[str] = []
            for k, v in item.items():
                lines += self._key_lines(k, v, dash_col + offset)
            return [head + lines[0][dash_col + offset:], *lines[1:]]
        return [head + _flow_value(item)]


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not _SIMPLE_KEY.fullmatch(key):
        raise YamlEditError(f"refusing to write the key {key!r}")


def _flow_value(value: Value) -> str:
    if isinstance(value, str):
        return format_scalar(value, None, flow=True)
    if isinstance(value, Mapping):
        for k in value:
            _check_key(k)
        return "{" + ", ".join(f"{k}: {_flow_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(_flow_value(v) for v in value) + "]"


def set_scalar(text: str, path: Sequence[str | int], value: str, *, document: int = 0) -> str:
    """Convenience: the text with the scalar at `path` (keys and sequence indexes) set to `value`."""
    f = YamlFile(text)
    if document >= len(f.documents):
        raise YamlEditError(f"no document {document}")
    node: Node | None = f.documents[document]
    for step in path:
        if isinstance(step, int):
            seq = items(node)
            node = seq[step] if -len(seq) <= step < len(seq) else None
        else:
            node = get_value(node, step)
        if node is None:
            raise YamlEditError(f"no node at {'.'.join(map(str, path))}")
    if node is None:                       # an empty path: the document itself
        raise YamlEditError("no node at the document root")
    return apply_edits(text, [f.set_scalar(node, value)])

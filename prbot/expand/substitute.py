"""Flux's post-build variable substitution (`spec.postBuild` of a Flux `Kustomization`), as
kustomize-controller applies it, on objects already rendered.

What Flux does, and so what this module does:
- the variables are read from `postBuild.substituteFrom` (ConfigMaps' `data`, Secrets' `data`
  decoded from base64 — and `stringData`, which the API server stores there — in list order, later
  ones winning; a missing reference fails unless `optional: true`), then `postBuild.substitute`
  wins over all of them; every value loses its newlines; a variable name must match
  ``^[_[:alpha:]][_[:alpha:][:digit:]]*$`` or the whole build fails;
- with no variable at all, nothing is substituted (not even `${var:=default}`);
- an object labelled or annotated `kustomize.toolkit.fluxcd.io/substitute: disabled` is left as is;
- each other object is written as YAML, the text is run through Flux's `envsubst` (a fork of
  drone/envsubst, strict mode off: an unset variable is empty), and the text is read back.  Only
  `${…}` is an expression — `$var` stays as it is — and `$$` is one `$` (so `$${var}` stays
  `${var}`); the bash forms `${var:-default}`, `${var:=default}`, `${var-default}`, `${var=default}`,
  `${#var}`, `${var^}`, `${var^^}`, `${var,}`, `${var,,}`, `${var:offset}`, `${var:offset:length}`,
  `${var#glob}`, `${var##glob}`, `${var%glob}`, `${var%%glob}`, `${var/glob/text}` and its `//`,
  `/#`, `/%` forms work as there.  Since the text is read back, a value typed as a string becomes a
  number or a boolean when it reads as one (`replicas: ${replicas}` → `3`, also when the source
  quoted it: kustomize writes `${replicas}` unquoted); Flux users quote with a variable
  (`${quote}${var}${quote}`).

Where prbot is stricter than Flux (the repository is hostile):
- a substitution may change scalars that held a `$`, nothing else: a value that would add or change
  a field, an item or an object (a `\\r` line break, `: `, a flow mapping) fails the substitution,
  naming the field, never the value;
- values read from a Secret are substituted into Secret objects only (whose values are masked
  everywhere); in any other object they read `(secret:NAME)`, so a Secret's value never reaches a
  diff, a comment or a message;
- the output is bounded (`max_bytes`), and so are the nesting of `${…}` and the work of glob
  patterns;
- error messages name the object, the variable or the field — never a value.
"""

from __future__ import annotations

import base64
import binascii
import re
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml as _pyyaml

from prbot.errors import SubstitutionError
from prbot.yamlio import YAML_ERRORS, load_yaml

DISABLE_KEY = "kustomize.toolkit.fluxcd.io/substitute"
DISABLED = "disabled"
VAR_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*\Z")
MAX_NESTING = 32
"""Deepest nesting of `${…}` inside a default or a pattern."""
MAX_GLOB_STEPS = 2_000_000
"""Work allowed to glob patterns (`${v#…}`, `${v%…}`) in one substitution, in character comparisons."""


@dataclass(frozen=True)
class Variables:
    """The variables of one `postBuild`: `values` by name; `secret` names those whose value came
    from a Secret (and was not overridden by a later source)."""
    values: dict[str, str] = field(default_factory=dict)
    secret: frozenset[str] = frozenset()


def secret_mask(name: str) -> str:
    """What a variable read from a Secret reads in an object that is not a Secret."""
    return f"(secret:{name})"


# -- the variables -------------------------------------------------------------------------------


def variables(post_build: Any, objects: Sequence[Mapping[str, Any]], namespace: str | None) -> Variables:
    """The variables `post_build` (a Kustomization's `spec.postBuild`) defines, reading
    `substituteFrom` references among `objects` (a ConfigMap or Secret of that name in `namespace`,
    or without a namespace).  SubstitutionError for a reference that is missing and not optional."""
    if not isinstance(post_build, Mapping):
        return Variables()
    values: dict[str, str] = {}
    secret: set[str] = set()
    refs = post_build.get("substituteFrom")
    for index, ref in enumerate(refs if isinstance(refs, list) else []):
        if not isinstance(ref, Mapping):
            raise SubstitutionError(f"postBuild.substituteFrom[{index}] is not a mapping")
        kind, name = ref.get("kind"), ref.get("name")
        if kind not in ("ConfigMap", "Secret") or not isinstance(name, str):
            raise SubstitutionError(f"postBuild.substituteFrom[{index}]: kind must be ConfigMap or Secret, "
                                    "with a name")
        found = _find(objects, kind, name, namespace)
        if found is None:
            if ref.get("optional") is True:
                continue
            where = f"{namespace}/{name}" if namespace else name
            raise SubstitutionError(f"substituteFrom {kind} {where} is not among the objects rendered "
                                    "(mark it optional: true if the cluster has it)")
        for key, value in _source_values(found).items():
            values[key] = value.replace("\n", "")
            if kind == "Secret":
                secret.add(key)
            else:
                secret.discard(key)
    inline = post_build.get("substitute")
    if isinstance(inline, Mapping):
        for key, value in inline.items():
            if not isinstance(value, str):
                raise SubstitutionError(f"postBuild.substitute.{key} must be a string")
            values[str(key)] = value.replace("\n", "")
            secret.discard(str(key))
    return Variables(values, frozenset(secret))


def _find(objects: Sequence[Mapping[str, Any]], kind: str, name: str,
          namespace: str | None) -> Mapping[str, Any] | None:
    for obj in objects:
        if not isinstance(obj, Mapping) or obj.get("kind") != kind or obj.get("apiVersion") != "v1":
            continue
        meta = obj.get("metadata")
        if not isinstance(meta, Mapping) or meta.get("name") != name:
            continue
        if meta.get("namespace") in (None, namespace):
            return obj
    return None


def _source_values(obj: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    data = obj.get("data")
    if isinstance(data, Mapping):
        for key, value in data.items():
            if obj.get("kind") == "Secret":
                try:
                    out[str(key)] = base64.b64decode(str(value), validate=True).decode("utf-8", "replace")
                except (binascii.Error, ValueError):
                    raise SubstitutionError(f"substituteFrom Secret: data.{key} is not base64") from None
            else:
                out[str(key)] = "" if value is None else str(value)
    string_data = obj.get("stringData")
    if obj.get("kind") == "Secret" and isinstance(string_data, Mapping):
        for key, value in string_data.items():
            out[str(key)] = "" if value is None else str(value)
    return out


# -- substitution on objects -----------------------------------------------------------------------


def substitute(objects: Sequence[dict[str, Any]], variables: Variables | Mapping[str, str], *,
               max_bytes: int = 64 << 20) -> list[dict[str, Any]]:
    """`objects` with the variables substituted as Flux substitutes them (see the module doc)."""
    if not isinstance(variables, Variables):
        variables = Variables(dict(variables))
    if not variables.values:
        return list(objects)
    for name in variables.values:
        if not VAR_NAME.match(name):
            raise SubstitutionError(f"variable name {name!r} is invalid: it must match "
                                    "^[_[:alpha:]][_[:alpha:][:digit:]]*$")
    budget = _Budget(max_bytes)
    out = []
    for obj in objects:
        if _disabled(obj):
            out.append(obj)
            continue
        out.append(_substitute_one(obj, variables, budget))
    return out


def _disabled(obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return False
    return any(isinstance(block := meta.get(f), Mapping) and block.get(DISABLE_KEY) == DISABLED
               for f in ("labels", "annotations"))


def _describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    name = meta.get("name", "?")
    return f"{obj.get('kind', '?')} {meta['namespace']}/{name}" if meta.get("namespace") else \
        f"{obj.get('kind', '?')} {name}"


def _substitute_one(obj: dict[str, Any], variables: Variables, budget: _Budget) -> dict[str, Any]:
    text = dump(obj)
    if "$" not in text:                 # `$$` alone is unescaped too
        return obj
    in_secret = obj.get("kind") == "Secret"
    values = variables.values

    def mapper(name: str) -> str:
        if name in variables.secret and not in_secret:
            return secret_mask(name)
        return values.get(name, "")

    what = _describe(obj)
    try:
        result = envsubst(text, mapper, budget)
    except SubstitutionError as err:
        raise SubstitutionError(f"{what}: {err}") from None
    try:
        new = load_yaml(result, max_bytes=budget.max_bytes)
    except YAML_ERRORS as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1} of the object)" if mark is not None else ""
        raise SubstitutionError(f"{what}: the substituted object is not valid YAML{line}") from None
    problem = _changed_structure(obj, new, "")
    if problem is not None:
        raise SubstitutionError(f"{what}: a substituted value changes the object's structure at {problem or 'its top'}"
                                " (a value may replace one scalar only)")
    return new  # type: ignore[no-any-return]


def _changed_structure(old: Any, new: Any, path: str) -> str | None:
    """The path where `new` differs from `old` other than in a scalar that held a `$`, or None."""
    if isinstance(old, dict):
        if not isinstance(new, dict) or len(new) != len(old):
            return path
        for (key, value), (new_key, new_value) in zip(_dump_order(old), new.items(), strict=True):
            here = f"{path}.{key}" if path else str(key)
            if new_key != key and not (isinstance(key, str) and "$" in key and not isinstance(new_key, dict | list)):
                return here
            found = _changed_structure(value, new_value, here)
            if found is not None:
                return found
        return None
    if isinstance(old, list):
        if not isinstance(new, list) or len(new) != len(old):
            return path
        for index, (item, new_item) in enumerate(zip(old, new, strict=True)):
            found = _changed_structure(item, new_item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if isinstance(new, dict | list):
        return path
    if isinstance(old, str) and "$" in old:
        return None
    return None if (type(old), old) == (type(new), new) else path


def _dump_order(mapping: dict[Any, Any]) -> list[tuple[Any, Any]]:
    """A mapping's items in the order `dump` writes them (sorted keys, as PyYAML sorts)."""
    try:
        return sorted(mapping.items(), key=lambda item: item[0])
    except TypeError:
        return list(mapping.items())


class _Dumper(_pyyaml.SafeDumper):
    """Block style, no line folding, multi-line strings as literal blocks (as kustomize writes them)."""


def _str(dumper: _pyyaml.SafeDumper, value: str) -> Any:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump(obj: Any) -> str:
    """One object as YAML, the way kustomize-controller writes it before substituting."""
    return _pyyaml.dump(obj, Dumper=_Dumper, default_flow_style=False, sort_keys=True, allow_unicode=True,
                        width=1 << 30)


# -- Flux's envsubst -------------------------------------------------------------------------------


class _Budget:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.written = 0
        self.glob_steps = 0

    def write(self, n: int) -> None:
        self.written += n
        if self.written > self.max_bytes:
            raise SubstitutionError(f"the substituted objects exceed {self.max_bytes:,} bytes")

    def glob(self, n: int) -> None:
        self.glob_steps += n
        if self.glob_steps > MAX_GLOB_STEPS:
            raise SubstitutionError("glob patterns in ${…} take too long to match")


def envsubst(text: str, mapping: Callable[[str], str], budget: _Budget | None = None) -> str:
    """`text` with every `${…}` expression evaluated (Flux's envsubst, strict mode off).
    SubstitutionError for a malformed expression ("bad substitution")."""
    budget = budget or _Budget(64 << 20)
    nodes = _Parser(text).parse()
    out: list[str] = []
    for node in nodes:
        piece = _eval(node, mapping, budget)
        budget.write(len(piece))
        out.append(piece)
    return "".join(out)


_EOF = "\x00"       # Go's eof rune is 0, and a NUL in the text reads as the end, as there
_IDENT, _LBRACK, _RBRACK, _ESCAPE = 1, 2, 4, 8
_T_ILLEGAL, _T_EOF, _T_IDENT, _T_LBRACK, _T_RBRACK = range(5)
_DOLLAR, _BACKSLASH = 1, 2

Accept = Callable[[str, int], bool]


def _accept_rune(r: str, i: int) -> bool:
    return True


def _accept_ident(r: str, i: int) -> bool:
    return r.isalpha() or r.isdigit() or r == "_"


def _accept_colon(r: str, i: int) -> bool:
    return r == ":"


def _accept_one_hash(r: str, i: int) -> bool:
    return r == "#" and i == 1


def _accept_not_closing(r: str, i: int) -> bool:
    return r != "}"


def _accept_hash_func(r: str, i: int) -> bool:
    return r == "#" and i < 3


def _accept_percent_func(r: str, i: int) -> bool:
    return r == "%" and i < 3


def _accept_default_func(r: str, i: int) -> bool:
    return (i == 1 and r == ":") or (i == 2 and r in "=-?+")


def _accept_replace_func(r: str, i: int) -> bool:
    return (i == 1 and r == "/") or (i == 2 and r in "/#%")


def _accept_one_equal(r: str, i: int) -> bool:
    return i == 1 and r == "="


def _accept_one_colon(r: str, i: int) -> bool:
    return i == 1 and r == ":"


def _reject_colon_close(r: str, i: int) -> bool:
    return r not in ":}"


def _accept_slash(r: str, i: int) -> bool:
    return r == "/"


def _accept_not_slash(r: str, i: int) -> bool:
    return r != "/"


def _accept_casing_func(r: str, i: int) -> bool:
    return r in ",^" and i < 3


class _Scanner:
    """drone/envsubst's scanner.  Where it deletes an escaping character from its buffer, this one
    records the deleted position, so `$$$$…` costs linear time."""

    def __init__(self, buf: str) -> None:
        self.buf = buf
        self.pos = 0
        self.start = 0
        self.width = 0
        self.mode = 0
        self.escape = 0
        self.deleted: list[int] = []
        self.accept: Accept = _accept_rune

    def read(self) -> str:
        if self.pos >= len(self.buf):
            self.width = 0
            return _EOF
        self.width = 1
        self.pos += 1
        return self.buf[self.pos - 1]

    def unread(self) -> None:
        self.pos -= self.width

    def skip(self) -> None:
        # the character just read (the escaping one) leaves the buffer and the next one is consumed
        self.deleted.append(self.pos - 1)
        self.pos += 1

    def peek(self) -> str:
        r = self.read()
        self.unread()
        return r

    def _gone(self) -> list[int]:
        if not self.deleted:
            return []
        return self.deleted[bisect_left(self.deleted, self.start):bisect_left(self.deleted, self.pos)]

    def string(self) -> str:
        gone = self._gone()
        if not gone:
            return self.buf[self.start:self.pos]
        parts, at = [], self.start
        for i in gone:
            parts.append(self.buf[at:i])
            at = i + 1
        parts.append(self.buf[at:self.pos])
        return "".join(parts)

    def offset(self) -> int:
        """Go's `s.pos - s.start` (deleted characters no longer count)."""
        return self.pos - self.start - len(self._gone())

    def scan(self) -> int:
        self.start = self.pos
        r = self.read()
        if r == _EOF:
            return _T_EOF
        if self._lbrack(r):
            return _T_LBRACK
        if self._rbrack(r):
            return _T_RBRACK
        if self._ident(r):
            return _T_IDENT
        return _T_ILLEGAL

    def _ident(self, r: str) -> bool:
        if not self.mode & _IDENT:
            return False
        if self._escaped(r):
            self.skip()
        elif not self.accept(r, self.offset()):
            return False
        while True:
            r = self.read()
            if r == _EOF:
                self.unread()
                break
            if self._lbrack(r):
                self.unread()
                self.unread()
                break
            if self._escaped(r):
                self.skip()
                continue
            if not self.accept(r, self.offset()):
                self.unread()
                break
        return True

    def _lbrack(self, r: str) -> bool:
        if not self.mode & _LBRACK:
            return False
        if r == "$":
            if self.read() == "{":
                return True
            self.unread()
        return False

    def _rbrack(self, r: str) -> bool:
        return bool(self.mode & _RBRACK) and r == "}"

    def _escaped(self, r: str) -> bool:
        if not self.mode & _ESCAPE:
            return False
        if r == "$" and self.escape & _DOLLAR and self.peek() == "$":
            return True
        return r == "\\" and bool(self.escape & _BACKSLASH) and self.peek() in ("/", "\\")


@dataclass
class _Text:
    value: str


@dataclass
class _Func:
    param: str = ""
    name: str = ""
    args: list[_Text | _Func] = field(default_factory=list)


_BAD = "bad substitution"


class _Parser:
    """drone/envsubst's parser (as forked by Flux), with the top-level list made a loop and the
    nesting of `${…}` bounded."""

    def __init__(self, text: str) -> None:
        self.s = _Scanner(text)
        self.depth = 0

    def parse(self) -> list[_Text | _Func]:
        s = self.s
        nodes: list[_Text | _Func] = []
        while True:
            s.accept, s.mode, s.escape = _accept_rune, _IDENT | _LBRACK | _ESCAPE, _DOLLAR
            token = s.scan()
            if token == _T_IDENT:
                nodes.append(_Text(s.string()))
            elif token == _T_EOF:
                return nodes
            elif token == _T_LBRACK:
                nodes.append(self.func())
            else:
                raise SubstitutionError(_BAD)

    def func(self) -> _Func:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise SubstitutionError(f"${{…}} nested deeper than {MAX_NESTING} levels")
        try:
            return self._func()
        finally:
            self.depth -= 1

    def _func(self) -> _Func:
        s = self.s
        s.escape = _DOLLAR | _BACKSLASH
        if s.peek() == "#":
            return self.length()
        s.accept, s.mode = _accept_ident, _IDENT
        if s.scan() != _T_IDENT:
            raise SubstitutionError("unable to parse variable name")
        name = s.string()
        nxt = s.peek()
        if nxt == ":":
            return self.default_or_substr(name)
        if nxt == "=":
            return self.default(name)
        if nxt in (",", "^"):
            return self.casing(name)
        if nxt == "/":
            return self.replace(name)
        if nxt == "#":
            return self.remove(name, _accept_hash_func)
        if nxt == "%":
            return self.remove(name, _accept_percent_func)
        s.accept, s.mode = _accept_ident, _RBRACK
        if s.scan() != _T_RBRACK:
            raise SubstitutionError("missing closing brace")
        return _Func(param=name)

    def param(self, accept: Accept, mode: int) -> _Text | _Func:
        s = self.s
        s.accept, s.mode = accept, mode | _LBRACK
        token = s.scan()
        if token == _T_LBRACK:
            return self.func()
        if token in (_T_IDENT, _T_RBRACK):
            return _Text(s.string())
        raise SubstitutionError("unable to parse substitution within function")

    def default_or_substr(self, name: str) -> _Func:
        s = self.s
        s.read()
        r = s.peek()
        s.unread()
        return self.default(name) if r in ("=", "-", "?", "+") else self.substr(name)

    def substr(self, name: str) -> _Func:
        s = self.s
        node = _Func(param=name)
        s.accept, s.mode = _accept_one_colon, _IDENT
        if s.scan() != _T_IDENT:
            raise SubstitutionError(_BAD)
        node.name = s.string()
        node.args.append(self.param(_reject_colon_close, _IDENT))
        s.accept, s.mode = _accept_colon, _IDENT | _RBRACK
        token = s.scan()
        if token == _T_RBRACK:
            return node
        if token != _T_IDENT:
            raise SubstitutionError(_BAD)
        node.args.append(self.param(_accept_not_closing, _IDENT))
        self.close()
        return node

    def remove(self, name: str, accept: Accept) -> _Func:
        s = self.s
        node = _Func(param=name)
        s.accept, s.mode = accept, _IDENT
        if s.scan() != _T_IDENT:
            raise SubstitutionError(_BAD)
        node.name = s.string()
        node.args.append(self.param(_accept_not_closing, _IDENT))
        self.close()
        return node

    def replace(self, name: str) -> _Func:
        s = self.s
        node = _Func(param=name)
        s.accept, s.mode = _accept_replace_func, _IDENT
        if s.scan() != _T_IDENT:
            raise SubstitutionError(_BAD)
        node.name = s.string()
        node.args.append(self.param(_accept_not_slash, _IDENT | _ESCAPE))
        s.accept, s.mode = _accept_slash, _IDENT
        if s.scan() != _T_IDENT:
            raise SubstitutionError(_BAD)
        if s.peek() == "}":
            self.close()
            return node
        node.args.append(self.param(_accept_not_closing, _IDENT | _ESCAPE))
        self.close()
        return node

    def default(self, name: str) -> _Func:
        s = self.s
        node = _Func(param=name)
        s.accept = _accept_one_equal if s.peek() == "=" else _accept_default_func
        s.mode = _IDENT
        if s.scan() != _T_IDENT:
            raise SubstitutionError("unable to parse default function")
        node.name = s.string()
        while True:
            if s.peek() == "}":
                self.close()
                return node
            node.args.append(self.param(_accept_not_closing, _IDENT))

    def casing(self, name: str) -> _Func:
        s = self.s
        node = _Func(param=name)
        s.accept, s.mode = _accept_casing_func, _IDENT
        if s.scan() != _T_IDENT:
            raise SubstitutionError(_BAD)
        node.name = s.string()
        self.close()
        return node

    def length(self) -> _Func:
        s = self.s
        node = _Func()
        s.accept, s.mode = _accept_one_hash, _IDENT
        if s.scan() != _T_IDENT:
            raise SubstitutionError(_BAD)
        node.name = s.string()
        s.accept, s.mode = _accept_ident, _IDENT
        if s.scan() != _T_IDENT:
            raise SubstitutionError(_BAD)
        node.param = s.string()
        self.close()
        return node

    def close(self) -> None:
        s = self.s
        s.mode = _RBRACK
        if s.scan() != _T_RBRACK:
            raise SubstitutionError(_BAD)


def _eval(node: _Text | _Func, mapping: Callable[[str], str], budget: _Budget) -> str:
    if isinstance(node, _Text):
        return node.value
    args = [_eval(arg, mapping, budget) for arg in node.args]
    value = mapping(node.param)
    result = _function(node.name, len(args))(value, args, budget)
    budget.write(0 if len(result) < 4096 else len(result) // 2)     # nested results count too
    return result


# -- the functions -----------------------------------------------------------------------------------

Func = Callable[[str, list[str], _Budget], str]


def _to_default(s: str, args: list[str], budget: _Budget) -> str:
    return "".join(args) if not s and args else s


def _atoi(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[+-]?[0-9]{1,18}", text) else None


def _to_substr(s: str, args: list[str], budget: _Budget) -> str:
    # Go slices bytes
    raw = s.encode()
    if not args:
        return s
    pos = _atoi(args[0])
    if pos is None:
        return s
    if pos < 0:
        pos = max(len(raw) + pos, 0)
    if len(args) == 1:
        return raw[pos:].decode("utf-8", "replace") if pos < len(raw) else ""
    length = _atoi(args[1])
    if length is None:
        return s
    if pos + length >= len(raw):
        return raw[pos:].decode("utf-8", "replace")
    if length < 0 or pos > len(raw):
        raise SubstitutionError(_BAD)      # Go panics on these bounds
    return raw[pos:pos + length].decode("utf-8", "replace")


def _replace(count: int) -> Func:
    def fn(s: str, args: list[str], budget: _Budget) -> str:
        if not args:
            return s
        new = args[1] if len(args) > 1 else ""
        budget.write(0 if not new else s.count(args[0]) * len(new) if count < 0 else len(new))
        return s.replace(args[0], new, count)
    return fn


def _replace_prefix(s: str, args: list[str], budget: _Budget) -> str:
    if len(args) != 2:
        return s
    return s.replace(args[0], args[1], 1) if s.startswith(args[0]) else s


def _replace_suffix(s: str, args: list[str], budget: _Budget) -> str:
    if len(args) != 2:
        return s
    return (s[: len(s) - len(args[0])] if args[0] else s) + args[1] if s.endswith(args[0]) else s


def _trim(shortest: bool, suffix: bool) -> Func:
    def fn(s: str, args: list[str], budget: _Budget) -> str:
        if not args:
            return s
        text, pattern = (s[::-1], args[0][::-1]) if suffix else (s, args[0])
        out = _trim_shortest(text, pattern, budget) if shortest else _trim_longest(text, pattern, budget)
        return out[::-1] if suffix else out
    return fn


def _trim_shortest(s: str, pattern: str, budget: _Budget) -> str:
    shortest = ""
    for i in range(len(s)):
        matched = _glob(pattern, s[: len(s) - i], budget)
        if matched is None:
            return s
        if matched:
            shortest = s[: len(s) - i]
    return s[len(shortest):] if shortest else s


def _trim_longest(s: str, pattern: str, budget: _Budget) -> str:
    for i in range(len(s)):
        matched = _glob(pattern, s[: len(s) - i], budget)
        if matched is None:
            return s
        if matched:
            return s[len(s) - i:]
    return s


def _function(name: str, nargs: int) -> Func:
    table: dict[str, Func] = {
        ",": lambda s, a, b: s[:1].lower() + s[1:],
        ",,": lambda s, a, b: s.lower(),
        "^": lambda s, a, b: s[:1].upper() + s[1:],
        "^^": lambda s, a, b: s.upper(),
        "##": _trim(False, False),
        "%": _trim(True, True),
        "%%": _trim(False, True),
        ":": _to_substr,
        "/#": _replace_prefix,
        "/%": _replace_suffix,
        "/": _replace(1),
        "//": _replace(-1),
    }
    if name == "#":
        return (lambda s, a, b: str(len(s.encode()))) if nargs == 0 else _trim(True, False)
    return table.get(name, _to_default)


# -- Flux's copy of Go's path.Match (where `*` and `?` also match `/`) -------------------------------------

class _BadPattern(Exception):
    pass


def _glob(pattern: str, name: str, budget: _Budget) -> bool | None:
    """Whether `name` matches `pattern`; None for a malformed pattern."""
    try:
        return _match(pattern, name, budget)
    except _BadPattern:
        return None


def _match(pattern: str, name: str, budget: _Budget) -> bool:
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return True
        rest, ok = _match_chunk(chunk, name, budget)
        if ok and (not rest or pattern):
            name = rest
            continue
        if star:
            matched = False
            for i in range(len(name)):
                rest, ok = _match_chunk(chunk, name[i + 1:], budget)
                if ok:
                    if not pattern and rest:
                        continue
                    name = rest
                    matched = True
                    break
            if matched:
                continue
        return False
    return not name


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern.startswith("*"):
        pattern = pattern[1:]
        star = True
    in_range = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _match_chunk(chunk: str, s: str, budget: _Budget) -> tuple[str, bool]:
    budget.glob(len(chunk) + 1)
    while chunk:
        if not s:
            return "", False
        c = chunk[0]
        if c == "[":
            r, s = s[0], s[1:]
            chunk = chunk[1:]
            positive = True
            if chunk.startswith("^"):
                positive = False
                chunk = chunk[1:]
            match = False
            ranges = 0
            while True:
                if chunk.startswith("]") and ranges > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:])
                if lo <= r <= hi:
                    match = True
                ranges += 1
            if match != positive:
                return "", False
        elif c == "?":
            s, chunk = s[1:], chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise _BadPattern
            if chunk[0] != s[0]:
                return "", False
            s, chunk = s[1:], chunk[1:]
    return s, True


def _get_esc(chunk: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise _BadPattern
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise _BadPattern
    r, rest = chunk[0], chunk[1:]
    if not rest:
        raise _BadPattern
    return r, rest

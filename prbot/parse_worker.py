"""prbot's YAML parser in a process of its own, so a big text is parsed under a render's limits.

Parsing YAML costs far more memory than the text (a 10 MB manifest of small documents took 2.2 GB
in Python objects), so a text above `prbot.renderers.base.PARSE_IN_PROCESS` is parsed here, run by
`prbot.sandbox.run_tool` with the render's memory, time and output limits (outside the jail: it
evaluates nothing of the repository, it only reads one file with `prbot.yamlio.load_yaml_all`).

    python -I -c 'import sys; sys.path.insert(0, ROOT); from prbot.parse_worker import main; main()' \
        FILE SOURCE yaml|json MAX_BYTES MAX_OBJECTS

prints one JSON object: ``{"docs": [...]}`` (bytes as base64, sets as mappings, as `collect` wants),
or ``{"error": "SOURCE:LINE: invalid YAML: …"}`` (with ``"limit"`` when a limit refused it) for a text
that is not YAML (JSON) or that a guard refused: the messages of an in-process parse.  `python -I`
keeps the repository's files off ``sys.path`` (the working directory is a scratch directory anyway).
"""

from __future__ import annotations

import base64
import json
import re
import sys
from typing import Any

from prbot.errors import YamlLimitError
from prbot.limits import format_size
from prbot.yamlio import YAML_ERRORS, check_tree, load_yaml_all

DOCUMENT_START = re.compile(r"^---(?=[ \t\r\n]|$)", re.MULTILINE)
"""A document marker: ``---`` at the start of a line.  YAML forbids such a line inside any scalar, so
one more than their count bounds the documents of a text, before any parsing."""


def count_documents(data: str) -> int:
    """At most how many documents `data` holds (every ``---`` line, plus the first document)."""
    return sum(1 for _ in DOCUMENT_START.finditer(data)) + 1


def yaml_problem(exc: BaseException, source: str) -> str:
    """`SOURCE:LINE: invalid YAML: problem` (or `SOURCE: refused: …` naming the guard that refused it)."""
    if isinstance(exc, YamlLimitError):
        return f"{source}: refused: {exc.problem}"
    if isinstance(exc, RecursionError):            # pragma: no cover - libyaml stops at 1000 levels
        return f"{source}: refused: nested too deeply"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{source}:{mark.line + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context and context not in str(problem) else str(problem)
    return f"{where}: invalid YAML: {detail}"


def load_json(text: str, source: str) -> Any:
    """The one document of a JSON text, within the node and depth guards; ValueError with the
    one-line message otherwise."""
    try:
        doc = json.loads(text)
        check_tree(doc)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    except YamlLimitError as exc:
        raise ValueError(f"{source}: refused: {exc.problem}") from exc
    except RecursionError as exc:
        raise ValueError(f"{source}: refused: nested too deeply") from exc
    return doc


def _keyed(value: Any) -> Any:
    """`value` with every mapping key a string (what JSON takes), keys named as kubectl would."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(k, default=_plain).strip('"'): _keyed(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_keyed(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """What JSON cannot hold, as `prbot.renderers.base.collect` would turn it."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, set | frozenset):
        return {str(k): None for k in value}
    raise TypeError(f"{type(value).__name__} is not JSON")


def parse(data: bytes, source: str, *, max_bytes: int, max_objects: int, kind: str = "yaml") -> dict[str, Any]:
    """The answer for the text `data` (see the module doc)."""
    if len(data) > max_bytes:
        return {"error": f"{source}: refused: larger than {format_size(max_bytes)}", "limit": "output"}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"error": f"{source}: not UTF-8 text"}
    if kind == "json":
        try:
            return {"docs": [load_json(text, source)]}
        except ValueError as exc:
            return {"error": str(exc)}
    if count_documents(text) > max_objects:
        return {"error": f"{source}: refused: more than {max_objects:,} documents", "limit": "max_objects"}
    try:
        return {"docs": load_yaml_all(text)}
    except YAML_ERRORS + (RecursionError,) as exc:
        return {"error": yaml_problem(exc, source)}


def main(argv: list[str] | None = None) -> int:
    path, source, kind, max_bytes, max_objects = (argv if argv is not None else sys.argv[1:])[:5]
    with open(path, "rb") as fh:
        data = fh.read(int(max_bytes) + 1)
    answer = parse(data, source, max_bytes=int(max_bytes), max_objects=int(max_objects), kind=kind)
    del data
    try:
        text = json.dumps(answer, default=_plain, separators=(",", ":"), ensure_ascii=False)
    except TypeError:                               # a key JSON cannot take as it is (bytes, a float)
        text = json.dumps(_keyed(answer), default=_plain, separators=(",", ":"), ensure_ascii=False)
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":                          # pragma: no cover - run through `main`
    sys.exit(main())

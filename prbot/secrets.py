"""What a secret value is, in one place (Secret values are never shown).

A *Secret* is any mapping with `kind: Secret` — at the top of an object or nested anywhere inside one
(the items of a `List` inside a `List`, a template's objects, a custom resource carrying manifests),
whatever its apiVersion.  Its *values* are everything under `data` and `stringData` (each value, and
the whole field when it is not a mapping) and its `kubectl.kubernetes.io/last-applied-configuration`
annotation (which repeats them).

- `mask(obj)` / `mask_pair(before, after)`: copies with every value `***`; in a pair, values that
  differ between the two versions of one Secret read `*** (before)` / `*** (after)`, so a diff shows
  which keys changed and never a value.
- `secret_values(obj)`: every value as text (and `data` decoded from base64), longest first, to scrub
  messages as a second line of defence (`scrub`).

The diff engine, schema validation (and the cluster adapter) ask this module, never their own rule.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

MASK = "***"
MASK_BEFORE = "*** (before)"
MASK_AFTER = "*** (after)"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
VALUE_FIELDS = ("data", "stringData")


def is_secret(obj: Any) -> bool:
    """A mapping that is a Secret (whatever its apiVersion)."""
    return isinstance(obj, Mapping) and obj.get("kind") == "Secret"


def contains_secret(obj: Any) -> bool:
    """`obj` is a Secret or holds one anywhere inside."""
    return any(True for _ in _secrets(obj))


def _secrets(obj: Any) -> Any:
    """Every Secret mapping in `obj` (itself included), depth first, without recursion."""
    pending = [obj]
    while pending:
        node = pending.pop()
        if isinstance(node, Mapping):
            if is_secret(node):
                yield node
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def mask(obj: Any) -> Any:
    """A deep copy of `obj` with every secret value `***`."""
    return _masked(obj, None, "plain")


def mask_pair(before: Any, after: Any) -> tuple[Any, Any]:
    """Masked copies of two versions of one object: a value that differs reads `*** (before)` /
    `*** (after)`, an equal one `***`.  Nested Secrets are paired by their place in the object."""
    return _masked(before, after, "before"), _masked(after, before, "after")


def _masked(node: Any, other: Any, side: str) -> Any:
    if isinstance(node, Mapping):
        theirs = other if isinstance(other, Mapping) else {}
        if is_secret(node):
            return _mask_secret(node, theirs if is_secret(theirs) else {}, side)
        return {k: _masked(v, theirs.get(k), side) for k, v in node.items()}
    if isinstance(node, list):
        theirs_list = other if isinstance(other, list) else []
        return [_masked(v, theirs_list[i] if i < len(theirs_list) else None, side) for i, v in enumerate(node)]
    return node


def _mask_map(mine: Mapping[str, Any], theirs: Mapping[str, Any], side: str) -> dict[str, Any]:
    marker = {"before": MASK_BEFORE, "after": MASK_AFTER}.get(side, MASK)
    return {k: marker if k in theirs and theirs[k] != v else MASK for k, v in mine.items()}


def _mask_secret(obj: Mapping[str, Any], other: Mapping[str, Any], side: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        their = other.get(key)
        if key in VALUE_FIELDS:
            if isinstance(value, Mapping):
                out[key] = _mask_map(value, their if isinstance(their, Mapping) else {}, side)
            elif value is not None:
                out[key] = MASK
            else:
                out[key] = None
        elif key == "metadata" and isinstance(value, Mapping):
            out[key] = _mask_metadata(value, their if isinstance(their, Mapping) else {}, side)
        else:
            out[key] = _masked(value, their, side)
    return out


def _mask_metadata(meta: Mapping[str, Any], other: Mapping[str, Any], side: str) -> dict[str, Any]:
    out = _masked(dict(meta), other, side)
    annotations = out.get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        theirs = other.get("annotations")
        theirs = theirs if isinstance(theirs, Mapping) else {}
        pair = {LAST_APPLIED: theirs[LAST_APPLIED]} if LAST_APPLIED in theirs else {}
        annotations[LAST_APPLIED] = _mask_map({LAST_APPLIED: annotations[LAST_APPLIED]}, pair, side)[LAST_APPLIED]
    return out  # type: ignore[no-any-return]


def secret_values(obj: Any) -> list[str]:
    """Every secret value in `obj` as text (plus `data` decoded from base64), longest first;
    values shorter than 3 characters are left out (scrubbing them would mangle every message)."""
    values: set[str] = set()
    for secret in _secrets(obj):
        for field in VALUE_FIELDS:
            block = secret.get(field)
            items = block.values() if isinstance(block, Mapping) else [block] if block is not None else []
            for value in items:
                if value is None:
                    continue
                text = value if isinstance(value, str) else json.dumps(value, default=str)
                values.add(text)
                if field == "data" and isinstance(value, str):
                    try:
                        values.add(base64.b64decode(value, validate=True).decode("utf-8"))
                    except (binascii.Error, ValueError):
                        pass
                elif field == "stringData" and isinstance(value, str):     # what the API stores in data
                    values.add(base64.b64encode(value.encode()).decode())
        meta = secret.get("metadata")
        annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
        if isinstance(annotations, Mapping) and isinstance(annotations.get(LAST_APPLIED), str):
            values.add(annotations[LAST_APPLIED])
    return sorted((v for v in values if len(v) >= 3), key=len, reverse=True)


def scrub(text: str, values: list[str]) -> str:
    """`text` with every one of `values` (see `secret_values`) replaced by `***`, quoted forms first
    (an API message quotes the value it refuses: `"…"`, `'…'`, JSON-escaped)."""
    for value in values:
        for quoted in {json.dumps(value), f"'{value}'", f'"{value}"'}:
            text = text.replace(quoted, f'"{MASK}"')
        text = text.replace(value, MASK)
    return text

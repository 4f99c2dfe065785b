"""Offline schema validation of rendered objects (kubernetes-validate).

The schemas are the ones shipped by the `kubernetes-validate` package (one JSON-schema set per
Kubernetes minor version).  Its own `validate()` reloads the 1.4 MB definitions file on every call
and compares versions as strings, so prbot reads the same schema files once per version, indexes
them by (group, version, kind) from their `x-kubernetes-group-version-kind` markers and keeps one
compiled validator per kind: validating a few hundred objects takes a fraction of a second.

Decisions:
- **Strict schemas.** Unknown fields are errors, not warnings: `kubectl apply` validates strictly by
  default, and server-side apply (Argo CD's `ServerSideApply=true`, Flux, prbot's own dry-run and
  apply) rejects a field that is not in the schema ("field not declared in schema").  A typo such as
  `replica:` would otherwise merge green and then fail the sync, or be silently dropped.
- **No schema is not a pass.** Custom resources (and any group the schemas do not know) are reported
  as `skipped`.  A kind of a built-in group at an apiVersion the Kubernetes version does not serve
  (`policy/v1beta1 PodDisruptionBudget` on 1.25+) is an error: the API server would refuse it.
- **Versions.** None means the newest version shipped; a version not shipped (`1.99`, `1.10`) is
  validated against the nearest one, with one `warning` issue saying so.
- **Paths** read `spec.template.spec.containers[0].image`; a key holding a dot is escaped as in
  `diff.ignore` (`metadata.labels.app\\.kubernetes\\.io/name`).
- **Secrets.** Messages about a Secret never quote a value (they say `value`), and every message is
  scrubbed of the object's `data`/`stringData` values as a second line of defence.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

from prbot import secrets
from prbot.limits import in_time


@dataclass(frozen=True)
class ValidationIssue:
    kind: str
    name: str
    level: str            # "error" fails the target | "warning" does not | "skipped": no schema known
    path: str             # dotted path in the object, "" for the whole object
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


MAX_ERRORS_PER_OBJECT = 20
_VALUE_REPR_LIMIT = 60
_DEFS_ID = "https://kubernetes.io/api/_definitions.json"
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?$")


# --------------------------------------------------------------------------------------------
# Versions and schemas
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def known_versions() -> tuple[str, ...]:
    """Kubernetes minor versions with schemas, oldest first ("1.25", ..., "1.37")."""
    out: list[str] = []
    for version in kv_utils.all_versions():
        m = _VERSION.match(version)
        if m and f"{m[1]}.{m[2]}" not in out:
            out.append(f"{m[1]}.{m[2]}")
    return tuple(out)


def _as_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


def resolve_version(requested: str | None) -> tuple[str, str | None]:
    """(schema version to use, warning or None) for a configured `kubernetes_version`."""
    known = known_versions()
    newest = known[-1]
    if requested is None or str(requested).strip() == "":
        return newest, None
    text = str(requested).strip()
    m = _VERSION.match(text)
    if not m:
        return newest, (f"kubernetes_version {text!r} is not a Kubernetes version; "
                        f"validated against {newest}, the newest known")
    wanted = (int(m[1]), int(m[2]))
    if f"{wanted[0]}.{wanted[1]}" in known:
        return f"{wanted[0]}.{wanted[1]}", None
    older = [v for v in known if _as_tuple(v) < wanted]
    nearest = older[-1] if older else known[0]          # newer than all known: the newest
    return nearest, (f"no schemas for Kubernetes {text} in kubernetes-validate "
                     f"{kubernetes_validate.__version__} (known: {known[0]} to {newest}); "
                     f"validated against {nearest}, the nearest known")


class _SchemaSet:
    """The strict schemas of one Kubernetes version, with validators compiled on first use."""

    def __init__(self, version: str) -> None:
        self.version = version
        directory = resources.files("kubernetes_validate").joinpath(
            "kubernetes-json-schema", f"v{version}.0-local-strict")
        defs = json.loads(directory.joinpath("_definitions.json").read_text(encoding="utf-8"))
        self.registry: Registry = Resource.from_contents(defs) @ Registry()
        self.by_gvk: dict[tuple[str, str, str], str] = {}
        self.by_group_kind: dict[tuple[str, str], list[str]] = {}
        self.groups: set[str] = set()
        for name, definition in defs.get("$defs", {}).items():
            for gvk in definition.get("x-kubernetes-group-version-kind", ()):
                group, version_, kind = gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", "")
                if definition.get("properties", {}).get("kind") is None:
                    continue                       # not a top-level object (e.g. DeleteOptions)
                self.by_gvk.setdefault((group, version_, kind), name)
                self.by_group_kind.setdefault((group, kind), []).append(version_)
                self.groups.add(group)
        self._validators: dict[str, jsonschema.protocols.Validator] = {}
        self._lock = threading.Lock()

    def validator(self, definition: str) -> jsonschema.protocols.Validator:
        with self._lock:
            got = self._validators.get(definition)
            if got is None:
                got = jsonschema.Draft202012Validator({"$ref": f"{_DEFS_ID}#/$defs/{definition}"},
                                                      registry=self.registry)
                self._validators[definition] = got
            return got


_load_lock = threading.Lock()


@lru_cache(maxsize=4)
def _schemas_unlocked(version: str) -> _SchemaSet:
    return _SchemaSet(version)


def _schemas(version: str) -> _SchemaSet:
    with _load_lock:                         # one load per version, even from several threads
        return _schemas_unlocked(version)


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------

def format_path(parts: Iterable[Any]) -> str:
    """`spec.template.spec.containers[0].image`; dots inside keys escaped as `\\.`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = str(part).replace("\\", "\\\\").replace(".", "\\.")
            out += f".{text}" if out else text
    return out


def _show(value: Any, secret: bool) -> str:
    if secret:
        return "value"
    text = repr(value)
    return text if len(text) <= _VALUE_REPR_LIMIT else text[:_VALUE_REPR_LIMIT - 3] + "..."


def _type_names(schema: Any) -> list[str] | None:
    """The types a schema (or a oneOf/anyOf of plain type schemas) allows, without "null"."""
    if not isinstance(schema, dict):
        return None
    if "type" in schema and set(schema) <= {"type", "description", "format"}:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        return [t for t in types if t != "null"]
    for combinator in ("oneOf", "anyOf"):
        if combinator in schema and isinstance(schema[combinator], list):
            names: list[str] = []
            for sub in schema[combinator]:
                sub_names = _type_names(sub)
                if sub_names is None:
                    return None
                names += [n for n in sub_names if n not in names]
            return names
    return None


def _issues_for_error(error: jsonschema.ValidationError, secret: bool) -> list[tuple[str, str]]:
    """(path, message) pairs for one schema error."""
    path = list(error.absolute_path)
    where = format_path(path)
    shown = _show(error.instance, secret)
    validator = error.validator
    if validator == "additionalProperties" and error.validator_value is False \
            and isinstance(error.instance, dict):
        allowed = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = sorted((k for k in error.instance if k not in allowed), key=str)
        return [(p, f"{p}: unknown field") for p in (format_path([*path, k]) for k in extra)]
    if validator == "required" and isinstance(error.instance, dict):
        missing = [k for k in error.validator_value if k not in error.instance]  # type: ignore[union-attr]
        return [(p, f"{p}: required field is missing") for p in (format_path([*path, k]) for k in missing)]
    if validator in ("type", "oneOf", "anyOf"):
        types = _type_names({"type": error.validator_value} if validator == "type" else error.schema)
        if types:
            detail = f"{shown} is not of type " + " or ".join(repr(t) for t in types)
        else:
            detail = f"{shown} is not valid here"
    elif validator == "enum":
        options = error.validator_value if isinstance(error.validator_value, list) else []
        detail = f"{shown} is not one of {', '.join(repr(v) for v in options if v is not None)}"
    elif secret:
        detail = f"value does not satisfy {validator} {error.validator_value!r}"[:200]
    else:
        detail = error.message
    return [(where, f"{where}: {detail}" if where else detail)]


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

def _jsonable(node: Any) -> Any:
    """The object as the API server receives it: YAML timestamps and binaries become strings."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_jsonable(v) for v in node]
    if isinstance(node, (datetime.date, datetime.datetime)):
        return node.isoformat()
    if isinstance(node, bytes):
        return base64.b64encode(node).decode("ascii")
    return node


def _secret_data_errors(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """`data` values of a Secret must be base64 (the API server refuses them otherwise)."""
    data = obj.get("data")
    if not isinstance(data, dict):
        return []
    out = []
    for key, value in data.items():
        if isinstance(value, str):
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                path = format_path(["data", key])
                out.append((path, f"{path}: value is not valid base64 (use stringData for plain text)"))
    return out


def _validate_one(obj: dict, schemas: _SchemaSet) -> list[ValidationIssue]:
    raw_kind = obj.get("kind")
    kind: str = raw_kind if isinstance(raw_kind, str) else ""
    raw_meta = obj.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    raw_name = meta.get("name") or meta.get("generateName") or ""
    name: str = raw_name if isinstance(raw_name, str) else str(raw_name)
    api_version = obj.get("apiVersion")

    def issue(level: str, path: str, message: str) -> ValidationIssue:
        return ValidationIssue(kind=kind, name=name, level=level, path=path, message=message)

    missing = [path for path, ok in (("apiVersion", isinstance(api_version, str) and api_version),
                                     ("kind", bool(kind)),
                                     ("metadata.name", bool(name))) if not ok]
    issues = [issue("error", p, f"{p}: required field is missing") for p in missing]
    if "apiVersion" in missing or "kind" in missing:
        return issues
    assert isinstance(api_version, str)
    group, _, version = api_version.rpartition("/")
    definition = schemas.by_gvk.get((group, version, kind))
    if definition is None:
        served = schemas.by_group_kind.get((group, kind))
        if served:
            use = " or ".join(f"{group}/{v}" if group else v for v in served)
            return [*issues, issue("error", "apiVersion",
                                   f"apiVersion: {api_version} {kind} is not served by Kubernetes "
                                   f"{schemas.version}; use {use}")]
        if group in schemas.groups:
            return [*issues, issue("error", "kind",
                                   f"kind: {api_version} has no kind {kind} in Kubernetes {schemas.version}")]
        return [*issues, issue("skipped", "", f"no schema for {api_version} {kind}")]

    secret = secrets.contains_secret(obj)
    found: list[tuple[str, str]] = []
    for error in schemas.validator(definition).iter_errors(_jsonable(obj)):
        found.extend(_issues_for_error(error, secret))
    if secrets.is_secret(obj):
        found.extend(_secret_data_errors(obj))
    found = [f for f in found if f[0] not in missing]          # already reported above
    found.sort(key=lambda f: f[0])
    if len(found) > MAX_ERRORS_PER_OBJECT:
        extra = len(found) - MAX_ERRORS_PER_OBJECT
        found = found[:MAX_ERRORS_PER_OBJECT] + [("", f"... and {extra} more schema errors")]
    scrub = secrets.secret_values(obj) if secret else []
    issues.extend(issue("error", path, secrets.scrub(message, scrub)) for path, message in found)
    return issues


def validate_objects(objects: list[dict], kubernetes_version: str | None, *,
                     deadline: float | None = None) -> list[ValidationIssue]:
    """Validate every object against the strict schema of `kubernetes_version` (None: the newest).

    Returns the problems only: `error` (fails the target), `warning` (version fallback) and
    `skipped` (no schema known, e.g. a custom resource); an object that passes yields nothing.
    Past `deadline` (time.monotonic(): the plan's budget) PlanBudgetError is raised.
    """
    if not objects:
        return []
    version, warning = resolve_version(kubernetes_version)
    schemas = _schemas(version)
    issues: list[ValidationIssue] = []
    if warning:
        issues.append(ValidationIssue(kind="", name="", level="warning", path="", message=warning))
    for obj in in_time(objects, deadline, "validating", every=10):
        if not isinstance(obj, dict):
            issues.append(ValidationIssue(kind="", name="", level="error", path="",
                                          message="a document is not a Kubernetes object"))
            continue
        issues.extend(_validate_one(obj, schemas))
    return issues

"""The record every registry parser returns, and the helpers that read untrusted payloads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prbot.errors import ImageError, PayloadError
from prbot.images import parse_image

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MISSING = object()


@dataclass(frozen=True)
class Context:
    """What parsers need beyond the payload.

    acr_hosts: ACR region or instance id → registry host (``PRBOT_ACR_HOSTS``), for Enterprise
    Edition instances and VPC endpoints; without an entry, ``registry.<region>.aliyuncs.com``.
    """

    acr_hosts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageRecord:
    """One pushed image: the full reference with its tag and the manifest digest when known."""

    image: str
    digest: str | None = None
    source: str | None = None          # the source repository's URL, when the caller gave it

    def as_dict(self) -> dict[str, str | None]:
        out = {"image": self.image, "digest": self.digest}
        if self.source:
            out["source"] = self.source
        return out


def record(name: str, tag: str, digest: str | None, *, where: str = "image") -> ImageRecord:
    """A checked record for repository `name` at `tag` (`digest` optional)."""
    ref = f"{name}:{tag}"
    try:
        parsed = parse_image(ref)
    except ImageError as exc:
        raise PayloadError(f"{where}: {exc}") from None
    if parsed.tag is None or parsed.digest is not None:
        raise PayloadError(f"{where}: {_clip(ref)!r} is not a repository with one tag")
    return ImageRecord(str(parsed), check_digest(digest, where="digest"))


_SOURCE = re.compile(r"https://[A-Za-z0-9.-]+(?::\d+)?(?:/[A-Za-z0-9._~%+-]+){1,8}/?")


def check_source(value: object, *, where: str) -> str | None:
    """An optional `https://host/owner/repo` URL of the image's source repository (for the bump
    PR's link to the commit a git-SHA tag names)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _SOURCE.fullmatch(value):
        raise PayloadError(f"{where}: expected an https:// repository URL such as https://github.com/acme/app")
    return value.rstrip("/")


def check_digest(digest: object, *, where: str) -> str | None:
    if digest is None or digest == "":
        return None
    if not isinstance(digest, str):
        raise PayloadError(f"{where}: expected a string, got {type_name(digest)}")
    if not DIGEST.fullmatch(digest):
        raise PayloadError(f"{where}: {_clip(digest)!r} is not a digest (sha256: and 64 lowercase hex digits)")
    return digest


def obj(payload: object, where: str = "payload") -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise PayloadError(f"{where}: expected a JSON object, got {type_name(payload)}")
    return payload


def field_of(payload: Mapping[str, Any], path: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
    """The value at dotted `path` with type `kind`; None when absent and not `required`."""
    cur: Any = payload
    walked = []
    for part in path.split("."):
        walked.append(part)
        if not isinstance(cur, Mapping):
            raise PayloadError(f"{'.'.join(walked[:-1])}: expected a JSON object, got {type_name(cur)}")
        cur = cur.get(part, _MISSING)
        if cur is _MISSING or cur is None:
            if required:
                raise PayloadError(f"missing field {path}")
            return None
    if not isinstance(cur, kind) or isinstance(cur, bool) and bool not in _tuple(kind):
        expected = " or ".join(type_name_of(k) for k in _tuple(kind))
        raise PayloadError(f"{path}: expected {expected}, got {type_name(cur)}")
    return cur


def text_field(payload: Mapping[str, Any], path: str, *, required: bool = True) -> str | None:
    value = field_of(payload, path, str, required=required)
    if value is not None and required and not value.strip():
        raise PayloadError(f"{path}: empty")
    return value


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def type_name_of(kind: type) -> str:
    return {str: "a string", int: "a number", float: "a number", list: "a list", dict: "a JSON object",
            bool: "true or false"}.get(kind, kind.__name__)


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, Mapping):
        return "a JSON object"
    return type_name_of(type(value))


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"

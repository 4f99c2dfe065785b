"""GitHub ``package`` / ``registry_package`` webhook payloads (the container registry, ghcr.io).

The worker calls `parse_package_event` on the body of a signed GitHub event.  The image is
``package.package_version.package_url`` without its tag (``ghcr.io/owner/name``, lower-cased as
GHCR names are; GitHub Enterprise gives its own host there), the tag is
``container_metadata.tag.name`` and the digest ``container_metadata.tag.digest``.  A multi-arch
push sends one event per manifest, the per-platform ones with an empty tag: those give no record.
Events for other ecosystems (npm, maven …) and actions other than ``published`` / ``updated``
give none either.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prbot.errors import PayloadError
from prbot.registries.records import DIGEST, ImageRecord, field_of, obj, record

log = logging.getLogger(__name__)

CONTAINER_TYPES = frozenset({"container", "docker"})
PUSH_ACTIONS = frozenset({"published", "updated"})


def parse_package_event(event: str, body: object) -> list[ImageRecord]:
    """The tagged container images a `package` / `registry_package` event reports (maybe none)."""
    if event not in ("package", "registry_package"):
        raise PayloadError(f"event {event[:40]!r} is not a package event")
    payload = obj(body)
    action = field_of(payload, "action", str, required=False)
    if action not in PUSH_ACTIONS:
        return []
    package = field_of(payload, event, dict)
    if not _is_container(package):
        return []
    version = field_of(package, "package_version", dict)
    tag = field_of(version, "container_metadata.tag.name", str, required=False)
    if not tag:
        return []
    digest = field_of(version, "container_metadata.tag.digest", str, required=False)
    if digest and not DIGEST.fullmatch(digest):
        log.warning("package event: ignoring malformed digest %r", digest[:80])
        digest = None
    return [record(_image_name(package, version, event), tag, digest, where=f"{event}.package_version")]


def _is_container(package: Mapping[str, Any]) -> bool:
    kinds = {str(package.get(k) or "").lower() for k in ("package_type", "ecosystem")}
    return bool(kinds & CONTAINER_TYPES)


def _image_name(package: Mapping[str, Any], version: Mapping[str, Any], event: str) -> str:
    url = field_of(version, "package_url", str, required=False)
    if url:
        name = url.rsplit("@", 1)[0]
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name = name[:colon]
        return name.lower()
    owner = field_of(package, "owner.login", str, required=False)
    name = field_of(package, "name", str, required=False)
    if not owner or not name:
        raise PayloadError(f"{event}: neither package_version.package_url nor owner.login and name")
    return f"ghcr.io/{owner}/{name}".lower()

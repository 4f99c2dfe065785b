"""Harbor v2 webhook, type ``PUSH_ARTIFACT``: one record per tagged resource.

``event_data.resources[]`` carry ``tag``, ``digest`` and ``resource_url`` (``host/project/repo:tag``),
which gives the host (Harbor's payload has no other).
"""

from __future__ import annotations

from prbot.errors import ImageError, NotAPush, PayloadError
from prbot.images import parse_image
from prbot.registries.records import Context, ImageRecord, field_of, obj, record, text_field

MAX_RESOURCES = 100


def parse(payload: object, context: Context) -> list[ImageRecord]:
    body = obj(payload)
    kind = text_field(body, "type")
    if kind != "PUSH_ARTIFACT":
        raise NotAPush(f"Harbor event {str(kind)[:40]!r} is not an image push")
    resources = field_of(body, "event_data.resources", list)
    if len(resources) > MAX_RESOURCES:
        raise PayloadError(f"event_data.resources: more than {MAX_RESOURCES} resources")
    out = []
    for i, resource in enumerate(resources):
        where = f"event_data.resources[{i}]"
        res = obj(resource, where)
        tag = field_of(res, "tag", str, required=False)
        digest = field_of(res, "digest", str, required=False)
        url = field_of(res, "resource_url", str, required=False)
        if not url:
            raise PayloadError(f"{where}: missing field resource_url")
        if not tag:
            continue
        try:
            name = parse_image(url).name
        except ImageError as exc:
            raise PayloadError(f"{where}.resource_url: {exc}") from None
        first = name.split("/", 1)[0]
        if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
            raise PayloadError(f"{where}.resource_url: {url[:120]!r} names no registry host")
        out.append(record(name, tag, digest, where=where))
    return out

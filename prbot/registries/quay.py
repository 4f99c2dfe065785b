"""Quay "Repository Push" notification: ``docker_url`` and ``updated_tags[]`` (one record per tag)."""

from __future__ import annotations

from prbot.errors import PayloadError
from prbot.registries.records import Context, ImageRecord, field_of, obj, record, text_field

MAX_TAGS = 100


def parse(payload: object, context: Context) -> list[ImageRecord]:
    body = obj(payload)
    url = text_field(body, "docker_url")
    assert url is not None
    tags = field_of(body, "updated_tags", list)
    if len(tags) > MAX_TAGS:
        raise PayloadError(f"updated_tags: more than {MAX_TAGS} tags")
    out = []
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag:
            raise PayloadError(f"updated_tags[{i}]: expected a tag")
        out.append(record(url.removeprefix("https://").removeprefix("http://"), tag, None, where="docker_url"))
    return out

"""The generic endpoint CI calls after ``docker push``: ``{"image": "repo:tag", "digest": "sha256:…"}``.

``source`` (optional): the https URL of the repository the image was built from; when the tag is a
git SHA, the bump PR links the commit (``<source>/commit/<tag>``).

``image`` must carry a tag; the digest may be given in ``digest`` or inline (``repo:tag@sha256:…``).
Several images at once: ``{"images": [{"image": …, "digest": …}, …]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prbot.errors import ImageError, PayloadError
from prbot.images import parse_image
from prbot.registries.records import (
    Context,
    ImageRecord,
    check_digest,
    check_source,
    field_of,
    obj,
    record,
    text_field,
)

MAX_IMAGES = 100


def parse(payload: object, context: Context) -> list[ImageRecord]:
    body = obj(payload)
    if "images" in body:
        items = field_of(body, "images", list)
        if len(items) > MAX_IMAGES:
            raise PayloadError(f"images: more than {MAX_IMAGES} images")
        return [_one(obj(item, f"images[{i}]"), f"images[{i}]") for i, item in enumerate(items)]
    return [_one(body, "")]


def _one(body: Mapping[str, Any], where: str) -> ImageRecord:
    prefix = f"{where}." if where else ""
    text = text_field(body, "image")
    assert text is not None
    try:
        ref = parse_image(text)
    except ImageError as exc:
        raise PayloadError(f"{prefix}image: {exc}") from None
    if ref.tag is None:
        raise PayloadError(f"{prefix}image: {text[:120]!r} has no tag (expected repository:tag)")
    digest = check_digest(body.get("digest"), where=f"{prefix}digest")
    if ref.digest and digest and ref.digest != digest:
        raise PayloadError(f"{prefix}digest: differs from the digest in {prefix}image")
    found = record(ref.name, ref.tag, digest or ref.digest, where=f"{prefix}image")
    source = check_source(body.get("source"), where=f"{prefix}source")
    return ImageRecord(found.image, found.digest, source) if source else found

"""Azure Container Registry webhook: action ``push``.

``target.repository`` / ``target.tag`` / ``target.digest``, the host in ``request.host``.  Other
actions (``delete``, ``chart_push``, ``quarantine``, ``ping`` …) are not image pushes.
"""

from __future__ import annotations

from prbot.errors import NotAPush
from prbot.registries.records import Context, ImageRecord, field_of, obj, record, text_field


def parse(payload: object, context: Context) -> list[ImageRecord]:
    body = obj(payload)
    action = text_field(body, "action")
    if action != "push":
        raise NotAPush(f"Azure action {str(action)[:40]!r} is not an image push")
    repository = text_field(body, "target.repository")
    tag = field_of(body, "target.tag", str, required=False)
    digest = field_of(body, "target.digest", str, required=False)
    host = text_field(body, "request.host")
    if not tag:
        return []                       # pushed by digest: nothing a tag policy can take
    return [record(f"{host}/{repository}", tag, digest, where="target")]

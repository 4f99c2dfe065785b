"""Docker Hub webhook: ``repository.repo_name`` and ``push_data.tag``; no digest, host ``docker.io``."""

from __future__ import annotations

from prbot.registries.records import Context, ImageRecord, field_of, obj, record, text_field


def parse(payload: object, context: Context) -> list[ImageRecord]:
    body = obj(payload)
    repo_name = text_field(body, "repository.repo_name")
    tag = field_of(body, "push_data.tag", str, required=False)
    if not tag:
        return []
    return [record(f"docker.io/{repo_name}", tag, None, where="repository.repo_name")]

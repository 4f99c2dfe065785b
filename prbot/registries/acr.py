"""Alibaba Cloud Container Registry (ACR) push trigger.

``push_data.tag`` / ``push_data.digest``; ``repository.region`` / ``namespace`` / ``name``.  The
payload names no host: ``registry.<region>.aliyuncs.com`` (Personal Edition's public endpoint)
unless ``PRBOT_ACR_HOSTS`` maps the instance id or the region to another host (Enterprise Edition
instances, VPC endpoints).
"""

from __future__ import annotations

import re

from prbot.errors import PayloadError
from prbot.registries.records import Context, ImageRecord, field_of, obj, record, text_field

_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_INSTANCE_FIELDS = ("repository.instance_id", "repository.instanceId", "instance_id", "instanceId")


def parse(payload: object, context: Context) -> list[ImageRecord]:
    body = obj(payload)
    tag = text_field(body, "push_data.tag")
    assert tag is not None
    digest = field_of(body, "push_data.digest", str, required=False)
    region = text_field(body, "repository.region")
    assert region is not None
    if not _REGION.fullmatch(region):
        raise PayloadError(f"repository.region: {region[:64]!r} is not an Alibaba Cloud region id")
    full = text_field(body, "repository.repo_full_name", required=False)
    if not full:
        namespace = text_field(body, "repository.namespace")
        name = text_field(body, "repository.name")
        full = f"{namespace}/{name}"
    host = _host(body, region, context)
    return [record(f"{host}/{full}", tag, digest, where="repository")]


def _host(body: object, region: str, context: Context) -> str:
    assert isinstance(body, dict)
    for path in _INSTANCE_FIELDS:
        instance = field_of(body, path, str, required=False)
        if instance and instance in context.acr_hosts:
            return context.acr_hosts[instance]
    return context.acr_hosts.get(region) or f"registry.{region}.aliyuncs.com"

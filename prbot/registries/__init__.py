"""Registry push webhooks → (image, digest) records, one parser per registry.

Each parser takes the decoded JSON payload of one push notification (untrusted: any JSON value)
and returns the images it reports as `ImageRecord`s: the full reference *with its tag*
(``registry.cn-hangzhou.aliyuncs.com/demo/app:3f9c2e1``) and the manifest digest when the registry
sends one.  A payload it cannot read raises `PayloadError` (one line saying which field is wrong);
a well-formed notification that is not an image push (a delete, a ping, a chart) raises
`NotAPush`; a push without a tag (by digest only) yields no record.

GitHub's container registry reports pushes as signed GitHub webhooks (`package` /
`registry_package`): `prbot.registries.github_packages` reads those for the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prbot.errors import NotAPush, PayloadError
from prbot.registries import acr, azure, dockerhub, generic, harbor, quay
from prbot.registries.records import Context, ImageRecord

Parser = Callable[[object, Context], list[ImageRecord]]

PARSERS: Mapping[str, Parser] = {
    "acr": acr.parse,
    "azure": azure.parse,
    "dockerhub": dockerhub.parse,
    "generic": generic.parse,
    "harbor": harbor.parse,
    "quay": quay.parse,
}


@dataclass(frozen=True)
class PushReport:
    """What one registry call said: the records read and, for a call that is not a push, why."""

    provider: str
    records: list[ImageRecord] = field(default_factory=list)
    ignored: str | None = None


def parse_push(provider: str, payload: object, context: Context | None = None) -> PushReport:
    """Read one push notification of `provider` (a key of `PARSERS`).

    Raises KeyError for an unknown provider and `PayloadError` for an unreadable payload.
    """
    parser = PARSERS[provider]
    try:
        records = parser(payload, context or Context())
    except NotAPush as exc:
        return PushReport(provider, [], str(exc))
    return PushReport(provider, _unique(records))


def _unique(records: list[ImageRecord]) -> list[ImageRecord]:
    seen: set[ImageRecord] = set()
    out = []
    for r in records:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


__all__ = ["PARSERS", "Context", "ImageRecord", "NotAPush", "PayloadError", "PushReport", "parse_push"]

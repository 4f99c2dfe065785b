"""Webhook deliveries the fake records when its state changes the way GitHub would send them.

Payloads are GitHub's own example payloads (`templates/`, copied from
`../shared/fixtures/github-webhooks`) used as templates: every object the fake knows (pull request,
issue, comment, repository, sender, installation, check run …) replaces the template's, so ids,
shas and URLs are the fake's; fields the fake does not model keep the template's values.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).resolve().parent / "templates"       # copies of the shared fixtures

# event.action -> fixture file used as the template
_TEMPLATES = {
    "pull_request": "pull_request.opened.json",
    "pull_request.closed": "pull_request.closed.json",
    "pull_request.reopened": "pull_request.reopened.json",
    "pull_request.synchronize": "pull_request.synchronize.json",
    "issue_comment": "issue_comment.created.with-installation.json",
    "issue_comment.edited": "issue_comment.edited.json",
    "push": "push.json",
    "check_run": "check_run.rerequested.json",
    "installation": "installation.created.json",
    "installation.deleted": "installation.deleted.json",
}


@cache
def _load(name: str) -> dict[str, Any]:
    return json.loads((TEMPLATES / name).read_text())


def template(event: str, action: str | None) -> dict[str, Any]:
    """A deep copy of the example payload for `event` (and `action` when there is a closer one)."""
    name = _TEMPLATES.get(f"{event}.{action}") or _TEMPLATES.get(event)
    return copy.deepcopy(_load(name)) if name else {}


def fill(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`base` with each key of `values` replaced (objects merged one level: the fake's object wins
    key by key, template keys the fake does not know are kept)."""
    out = dict(base)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


@dataclass
class Webhook:
    """One delivery: `event` (X-GitHub-Event), `payload` (its JSON), a unique `delivery` id."""

    event: str
    payload: dict[str, Any]
    delivery: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def action(self) -> str | None:
        return self.payload.get("action")

    @property
    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":")).encode()

    def headers(self, secret: str | bytes) -> dict[str, str]:
        """The headers GitHub sends, signed with `secret` (`X-Hub-Signature-256` over `body`)."""
        key = secret.encode() if isinstance(secret, str) else secret
        signature = hmac.new(key, self.body, hashlib.sha256).hexdigest()
        return {"X-GitHub-Event": self.event, "X-GitHub-Delivery": self.delivery,
                "X-Hub-Signature-256": f"sha256={signature}", "Content-Type": "application/json",
                "User-Agent": "GitHub-Hookshot/fake"}

    def __repr__(self) -> str:
        return f"Webhook({self.event}.{self.action})" if self.action else f"Webhook({self.event})"

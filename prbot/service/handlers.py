"""Job kind → flow: the handlers `prbot serve` and `prbot worker` run.

Register each with `prbot.service.jobs.register` (importing this module is what fills the
process-wide registry; the worker imports it before it starts)::

    @register("github_event")
    def github_event(rt: Runtime, job: Job) -> None: ...

Kinds the web layer enqueues:
- ``github_event``: payload ``{"event": X-GitHub-Event, "delivery": id, "body": <parsed payload>}``,
  ``repo`` = the repository's full name when the payload has one.
- ``registry_push``: payload ``{"provider", "images": [{"image": "<ref with tag>", "digest": …|None}],
  "repo": "owner/name"|None}`` (``repo``: the ``?repo=`` narrowing).
"""

from __future__ import annotations

from prbot.service.jobs import register  # noqa: F401  (used by the handlers below)

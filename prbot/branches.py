"""Branch names of the PRs prbot opens: one branch per update, rewritten in place (as Renovate does)."""

from __future__ import annotations

import re


def slug(text: str) -> str:
    """A branch-safe slug: `registry.example.com/team/app` -> `registry-example-com-team-app`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def bump_branch(env: str, repository: str) -> str:
    """`prbot/bump/<env>/<repository-slug>` — one open bump PR per (environment, repository)."""
    return f"prbot/bump/{slug(env)}/{slug(repository)}"


def promote_branch(to_env: str, app: str) -> str:
    """`prbot/promote/<to-env>/<app>` — one open promotion PR per (target environment, app)."""
    return f"prbot/promote/{slug(to_env)}/{slug(app)}"

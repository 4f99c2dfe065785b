"""The prbot service: the web app (`create_app`), the durable queue, its workers and store.

``gunicorn 'prbot.service:create_app()'`` serves the web app with settings from the environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from prbot.service.settings import Settings


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """The Flask app (see `prbot.service.app.create_app`)."""
    from prbot.service.app import create_app as _create_app

    return _create_app(settings, **overrides)


__all__ = ["create_app"]

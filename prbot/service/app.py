"""The Flask app factory: verify, enqueue, answer.  No GitHub call, no plan, no routing here.

The blueprints (`prbot.service.webhooks`) reach the shared settings and queue through
`prbot.service.context`, never through this module.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

import prbot.service.health as health
import prbot.service.metrics as metrics
from prbot.service.boards import BoardSource, StoreBoards
from prbot.service.context import Service, install, service
from prbot.service.logs import add_secret, setup_logging
from prbot.service.queue import Queue
from prbot.service.settings import Settings
from prbot.service.status_page import install_boards, status_blueprint
from prbot.service.webhooks import github_blueprint, registry_blueprint

log = logging.getLogger("prbot.web")


def create_app(settings: Settings | None = None, *, queue: Queue | None = None, configure_logging: bool = True,
               boards: BoardSource | None = None, **overrides: Any) -> Flask:
    """The web app.  `settings` default to the environment; `overrides` replace single fields
    (``create_app(github_webhook_secret=Secret("…"), queue_url="sqlite:///…")``).  Raises
    `SettingsError` when GITHUB_WEBHOOK_SECRET is missing or a setting is invalid.  `boards`: where
    the environments page (`/status`) gets its boards (default: kept in the store by the worker)."""
    settings = settings or Settings.from_env()
    if overrides:
        settings = settings.with_overrides(**overrides)
    settings.require("web")
    for secret in settings.secrets():
        add_secret(secret)
    if configure_logging:
        setup_logging()

    app = Flask("prbot")
    app.config["MAX_CONTENT_LENGTH"] = max(settings.max_github_body, settings.max_registry_body)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    svc = Service(settings, queue or Queue(settings))
    install(app, svc)
    app.register_blueprint(github_blueprint)
    app.register_blueprint(registry_blueprint)
    app.register_blueprint(status_blueprint)
    install_boards(app, boards or StoreBoards(svc.store, svc.queue))

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        svc = service()
        failed = health.readiness(svc.settings, svc.store, svc.queue)
        if failed:
            log.warning("not ready", extra={"failed": failed})
            return jsonify(status="unavailable", failed=failed), 503
        return jsonify(status="ready", queue=svc.settings.queue_backend), 200

    @app.get("/metrics")
    def metrics_view() -> Response:
        body, content_type = metrics.exposition()
        svc = service()
        return Response(body + health.exposition(svc.store, svc.queue), content_type=content_type)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> tuple[Response, int]:
        metrics.WEBHOOKS.labels(event=_event_label(), outcome="too_large").inc()
        limit = request.max_content_length
        return jsonify(error=f"request body larger than {limit} bytes"), 413

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.description or exc.name), exc.code or 500

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> tuple[Response, int]:
        log.exception("request failed", extra={"path": request.path})
        return jsonify(error="internal error (see the server log)"), 500

    return app


def _event_label() -> str:
    if request.path.startswith("/webhooks/registry/"):
        return "registry/" + request.path.rsplit("/", 1)[-1][:32]
    return request.headers.get("X-GitHub-Event", "unknown")[:64]

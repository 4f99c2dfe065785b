"""Serving the web app: gunicorn options shared by `prbot serve` and the Procfile, and `serve()`.

`prbot serve` runs gunicorn in-process (one gthread worker process) and starts ONE queue worker
thread inside it, so a single process is a complete bot.  For more capacity run gunicorn with the
Procfile's options (``gunicorn --config python:prbot.service.gunicorn_conf 'prbot.service:create_app()'``)
and `prbot worker` processes beside it.

Gunicorn's access log is off: request URLs of registry calls may carry ``?token=``.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from prbot.service.jobs import REGISTRY, Registry
from prbot.service.settings import Settings

log = logging.getLogger("prbot.server")

LOGCONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "prbot.service.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "prbot.service.logs._JsonHandler", "formatter": "json",
                            "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
        "huey": {"level": "WARNING"},
    },
}


def gunicorn_options(host: str, port: int, *, workers: int = 1, threads: int = 8) -> dict[str, Any]:
    return {
        "bind": f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": 60,
        "graceful_timeout": 30,
        "accesslog": None,
        "logconfig_dict": LOGCONFIG,
        "limit_request_line": 8190,
        "control_socket_disable": True,      # gunicorn ≥ 23's control socket: shared path, not needed
    }


class _Server(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any], registry: Registry, in_process_worker: bool):
        self.settings = settings
        self.options = options
        self.registry = registry
        self.in_process_worker = in_process_worker
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:             # older gunicorns lack some (control_socket_disable)
                self.cfg.set(key, value)
        if self.in_process_worker:
            self.cfg.set("post_worker_init", self._start_worker)
            self.cfg.set("worker_exit", self._stop_worker)

    def load(self) -> Any:                       # runs in the gunicorn worker process (after fork)
        from prbot.service.app import create_app

        return create_app(self.settings)

    def _start_worker(self, gunicorn_worker: Any) -> None:
        import prbot.service.handlers  # noqa: F401  (fills REGISTRY)
        from prbot.service.worker import Worker

        app = gunicorn_worker.wsgi
        queue = app.extensions["prbot"].queue if hasattr(app, "extensions") else None
        worker = Worker(self.settings, self.registry, threads=1, queue=queue)
        worker.start()
        gunicorn_worker.prbot_worker = worker

    def _stop_worker(self, server: Any, gunicorn_worker: Any) -> None:
        worker = getattr(gunicorn_worker, "prbot_worker", None)
        if worker is not None:
            worker.stop(graceful=True, timeout=25)


def serve(settings: Settings, host: str, port: int, *, registry: Registry | None = None,
          in_process_worker: bool = True) -> None:
    """Serve until SIGTERM/SIGINT (gunicorn's master in this process, one worker process)."""
    _Server(settings, gunicorn_options(host, port), registry or REGISTRY, in_process_worker).run()

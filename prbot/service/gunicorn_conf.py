"""gunicorn settings for ``gunicorn --config python:prbot.service.gunicorn_conf 'prbot.service:create_app()'``.

Binds ``0.0.0.0:$PORT`` (8080), ``$WEB_CONCURRENCY`` worker processes (2) of 8 threads, JSON logs,
no access log (registry calls may carry ``?token=`` in their URL).  Queue workers run apart
(`prbot worker`).  With several worker processes set ``PROMETHEUS_MULTIPROC_DIR`` so that
``/metrics`` adds them up.
"""

import os

from prbot.service.server import gunicorn_options

_options = gunicorn_options("0.0.0.0", int(os.environ.get("PORT", "8080")),
                            workers=int(os.environ.get("WEB_CONCURRENCY", "2")), threads=8)
bind = _options["bind"]
workers = _options["workers"]
worker_class = _options["worker_class"]
threads = _options["threads"]
timeout = _options["timeout"]
graceful_timeout = _options["graceful_timeout"]
accesslog = _options["accesslog"]
logconfig_dict = _options["logconfig_dict"]
limit_request_line = _options["limit_request_line"]
control_socket_disable = _options["control_socket_disable"]


def child_exit(server: object, worker: object) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]

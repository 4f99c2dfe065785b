"""What the web views share, reached through this module, never through the app factory.

`create_app` (`prbot.service.app`) builds one `Service` and stores it on the Flask app; a view or
blueprint (`prbot.service.webhooks`) asks `service()` for the current app's.  So blueprints import
this small module and the factory imports the blueprints: no module imports the factory back.
"""

from __future__ import annotations

import time

from flask import Flask, current_app

from prbot.service.jobs import Job
from prbot.service.queue import Queue
from prbot.service.settings import Settings

EXTENSION = "prbot"


class Service:
    """What the views share: settings and the queue (with its store)."""

    def __init__(self, settings: Settings, queue: Queue) -> None:
        self.settings = settings
        self.queue = queue
        self.store = queue.store
        self.started = time.time()

    def enqueue(self, job: Job) -> str:
        return self.queue.enqueue(job)


def install(app: Flask, svc: Service) -> None:
    """Make `svc` what `service()` returns for `app`'s requests."""
    app.extensions[EXTENSION] = svc


def service() -> Service:
    """The `Service` of the app handling the current request."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]

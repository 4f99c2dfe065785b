"""JSON log lines with the delivery id, repository, PR and job they concern; secrets scrubbed.

The web layer and the job runner set the context with `log_context(...)`; every record logged
inside it carries those fields.  `JsonFormatter` writes one JSON object per line and replaces every
registered secret value (`add_secret`: the webhook secret, the registry token, the App's private
key, installation tokens the GitHub adapter obtains) and anything shaped like a token, a bearer
header or a webhook signature with ``***`` — in the message, the arguments and tracebacks alike.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

CONTEXT_FIELDS = ("delivery", "repo", "pr", "job", "kind", "event", "provider", "worker")
_vars: dict[str, contextvars.ContextVar[Any]] = {
    name: contextvars.ContextVar(f"prbot_log_{name}", default=None) for name in CONTEXT_FIELDS
}

_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S)
_PATTERNS = [
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"),                    # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}\b"),
    re.compile(r"sha(?:1|256)=[0-9a-fA-F]{40,64}"),                    # webhook signatures
    re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+"),                      # Authorization: Bearer …
    re.compile(r"(?i)([?&]token=)[^&\s\"']+"),                          # ?token=…
    _PEM,
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),                     # user:password@ in URLs
]
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def add_secret(value: str | None) -> None:
    """Never write `value` (nor, for a multi-line key, any of its long lines) to a log."""
    if not value:
        return
    with _secrets_lock:
        if len(value) >= 4:
            _secrets.add(value)
        for line in value.splitlines():
            if len(line.strip()) >= 16 and not line.startswith("-----"):   # PEM armour is no secret
                _secrets.add(line.strip())


def redact(text: str) -> str:
    text = _PEM.sub(_mask, text)                # whole PEM keys first, registered or not
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
    for pattern in _PATTERNS:
        text = pattern.sub(_mask, text)
    return text


def _mask(m: re.Match[str]) -> str:
    return f"{m.group(1)}***" if m.lastindex else "***"


def current_context() -> dict[str, Any]:
    return {name: var.get() for name, var in _vars.items() if var.get() is not None}


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Set log fields (delivery, repo, pr, job, kind, event, provider, worker) for the block."""
    tokens = []
    for name, value in values.items():
        if name not in _vars:
            raise TypeError(f"unknown log field {name!r}")
        if value is not None:
            tokens.append((_vars[name], _vars[name].set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context fields, extra fields, exc."""

    _STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(current_context())
        for key, value in record.__dict__.items():
            if key not in self._STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            out["exc"] = record.exc_text
        return redact(json.dumps(out, default=str, ensure_ascii=False))


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    prbot_json = True


def setup_logging(stream: IO[str] | None = None, level: int = logging.INFO, *, force: bool = False) -> None:
    """Send the root logger's records to `stream` (stderr) as JSON lines (idempotent)."""
    root = logging.getLogger()
    existing = [h for h in root.handlers if getattr(h, "prbot_json", False)]
    if existing and not force:
        return
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _JsonHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("huey", "huey.consumer", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("gunicorn.error").propagate = True

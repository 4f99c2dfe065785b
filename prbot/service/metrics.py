"""Prometheus metrics of the web app and the workers (prometheus-client).

- ``prbot_webhooks_total{event, outcome}``: GitHub events by name, registry calls as
  ``registry/<provider>``; outcome queued, duplicate, ignored, unrouted (no repository uses the
  image: answered, not queued), rate_limited, unauthorized, bad_request, too_large, unavailable.
- ``prbot_jobs_total{kind, outcome}``: success, retried, failed (permanent error or retries spent),
  error (a bug: an unexpected exception), superseded, duplicate, waiting (repo busy, re-checked later),
  recovered (re-enqueued after its worker died), unhandled (no handler for the kind), dead_letter
  (transient failures past `max_attempts`: kept in the dead-letter set), revived (a dead letter
  queued again).
- ``prbot_jobs_failed_total{kind, reason}``: jobs ended without success, by why: permanent (a
  refusal such as a bad configuration), retries_spent (transient errors past the attempts),
  worker_died (its worker died on each attempt), bug (an unexpected exception), unhandled.
- the queue gauges (depth by kind, oldest job, live workers, dead letters) are read from the store
  at each scrape: `prbot.service.health`.
- ``prbot_job_duration_seconds{kind}``: handler run time; ``prbot_job_latency_seconds{kind}``:
  from enqueue to the end of the run that finished the job.
- ``prbot_github_requests_total{method, status}`` and ``prbot_github_rate_limit_remaining``:
  fed by the GitHub adapter through `record_github_response`.

With several gunicorn workers (or a web and a worker process on one host) set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by them: ``/metrics`` then aggregates every
process (prometheus-client's multiprocess mode).  Otherwise each process reports its own.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

WEBHOOKS = Counter("prbot_webhooks", "Webhook calls received, by event and outcome", ["event", "outcome"])
JOBS = Counter("prbot_jobs", "Job runs, by kind and outcome", ["kind", "outcome"])
JOBS_FAILED = Counter("prbot_jobs_failed", "Jobs ended without success, by kind and reason", ["kind", "reason"])
JOB_DURATION = Histogram("prbot_job_duration_seconds", "Handler run time of a job", ["kind"],
                         buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
JOB_LATENCY = Histogram("prbot_job_latency_seconds", "Time from enqueue to the end of a job", ["kind"],
                        buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
DEAD_LETTERS = Gauge("prbot_dead_letters", "Jobs in the dead-letter set, waiting for their dependency",
                     multiprocess_mode="mostrecent")
GITHUB_REQUESTS = Counter("prbot_github_requests", "GitHub API responses, by method and status",
                          ["method", "status"])
GITHUB_RATE_LIMIT = Gauge("prbot_github_rate_limit_remaining", "x-ratelimit-remaining of the latest GitHub response",
                          multiprocess_mode="mostrecent")


def record_github_response(method: str, status: int | str, remaining: int | str | None = None) -> None:
    """Count one GitHub API response (give this to the GitHub adapter as its callback)."""
    GITHUB_REQUESTS.labels(method=str(method).upper(), status=str(status)).inc()
    if remaining is not None and str(remaining).strip().lstrip("-").isdigit():
        GITHUB_RATE_LIMIT.set(int(remaining))


def job_failed(kind: str, reason: str) -> None:
    """Count one job that ended without success (`reason`: one of the fixed words above)."""
    JOBS_FAILED.labels(kind=kind, reason=reason).inc()


def exposition() -> tuple[bytes, str]:
    """The text exposition of every metric (all processes in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

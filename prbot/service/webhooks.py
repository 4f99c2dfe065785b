"""The webhook endpoints: verify the caller, read the payload, enqueue one job, answer 202."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import re
import time
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request

import prbot.service.metrics as metrics
from prbot.registries import PARSERS, Context, PayloadError, parse_push
from prbot.service.context import service
from prbot.service.jobs import Job
from prbot.service.logs import log_context

log = logging.getLogger("prbot.web")

github_blueprint = Blueprint("github", __name__)
registry_blueprint = Blueprint("registry", __name__)

_REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
_DELIVERY = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_EVENT = re.compile(r"[a-z_]{1,64}")


def _answer(event: str, outcome: str, code: int, /, **body: Any) -> tuple[Response, int]:
    metrics.WEBHOOKS.labels(event=event, outcome=outcome).inc()
    return jsonify(body), code


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:             # parsers disagree on which one counts: neither does
            raise PayloadError(f"body is not usable JSON: key {key[:40]!r} appears twice in one object")
        out[key] = value
    return out


def _constant(name: str) -> Any:
    raise PayloadError(f"body is not JSON: {name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise PayloadError(f"body is not usable JSON: the number {text[:20]}… is out of range")
    return value


def read_json(body: bytes) -> tuple[Any, str]:
    """(the value, "") of a strict JSON body, or (None, why not) in one line: UTF-8 only, no
    duplicate keys, no NaN/Infinity or numbers beyond a float, no unpaired surrogate escapes, and a
    nesting too deep to parse is a refusal, not a crash."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"body is not JSON: not UTF-8 (byte {exc.start})"
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_finite)
    except RecursionError:
        return None, "body is not usable JSON: nested too deeply"
    except PayloadError as exc:                    # what a lenient parser would take, prbot does not
        return None, str(exc)
    except ValueError as exc:                      # JSONDecodeError, an integer with too many digits
        return None, "body is not JSON: " + " ".join(str(exc).split())[:120]
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return None, "body is not usable JSON: a string holds an unpaired UTF-16 surrogate"
    except RecursionError:                         # as deep as the parser allowed, deeper for the encoder
        return None, "body is not usable JSON: nested too deeply"
    return value, ""


# -- GitHub ------------------------------------------------------------------------------------------

@github_blueprint.post("/webhooks/github")
def github_webhook() -> tuple[Response, int]:
    svc = service()
    request.max_content_length = svc.settings.max_github_body
    raw_event = request.headers.get("X-GitHub-Event", "")
    event = raw_event if _EVENT.fullmatch(raw_event) else "unknown"
    delivery = request.headers.get("X-GitHub-Delivery", "")
    body = request.get_data(cache=False)
    secret = svc.settings.github_webhook_secret
    assert secret is not None                      # create_app requires it
    signature = request.headers.get("X-Hub-Signature-256")
    if not signature:
        log.warning("webhook without X-Hub-Signature-256 refused", extra={"event": event})
        return _answer(event, "unauthorized", 401, error="missing X-Hub-Signature-256")
    expected = "sha256=" + hmac.new(secret.reveal().encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        log.warning("webhook with a wrong signature refused", extra={"event": event})
        return _answer(event, "unauthorized", 401, error="X-Hub-Signature-256 does not match the payload")
    if event == "unknown":
        return _answer(event, "bad_request", 400, error="missing or invalid X-GitHub-Event")
    if not _DELIVERY.fullmatch(delivery):
        return _answer(event, "bad_request", 400, error="missing or invalid X-GitHub-Delivery")
    payload, problem = read_json(body)
    if problem:
        return _answer(event, "bad_request", 400, error=problem)
    if not isinstance(payload, dict):
        return _answer(event, "bad_request", 400, error="body is not a JSON object")
    repo = _repo_of(payload)
    pr = _pr_of(payload)
    with log_context(delivery=delivery, event=event, repo=repo, pr=pr):
        job = Job(kind="github_event", payload={"event": event, "delivery": delivery, "body": payload},
                  repo=repo, delivery=delivery, pr=pr)
        return _accept_delivery(svc, event, delivery, job)


def _accept_delivery(svc: Any, event: str, delivery: str, job: Job) -> tuple[Response, int]:
    """Queue the delivery's job once.  ``delivery:<id>`` holds the delivery's state (JSON): a web
    process claims it (``pending``) before it queues the job, makes it ``queued`` after, and a worker
    makes it ``failed`` when a job of the delivery fails or goes to the dead-letter set.  A
    redelivery (GitHub reuses the id) is a duplicate unless the delivery failed, or its claim is
    older than `Settings.delivery_claim` (a 503 answer whose claim landed anyway): then it runs again."""
    key = f"delivery:{delivery}"
    ttl = svc.settings.delivery_ttl
    try:
        job_id, claim = _claim(svc, key, ttl)
    except Exception:  # noqa: BLE001 - the store is down: say so, GitHub shows the 503 for redelivery
        log.exception("could not record the delivery")
        return _answer(event, "unavailable", 503, error="queue unavailable, delivery not accepted")
    if claim is None:
        log.info("duplicate delivery acknowledged, not processed again")
        return _answer(event, "duplicate", 200, status="duplicate", delivery=delivery)
    try:
        job_id = svc.queue.enqueue(job, job_id=job_id)
    except Exception:  # noqa: BLE001 - GitHub retries nothing by itself, but a 503 shows in its log
        log.exception("could not enqueue the delivery")
        try:
            svc.store.compare_and_set(key, claim, None)   # forget it, so that a redelivery is processed
        except Exception:  # noqa: BLE001 - the claim lapses after `delivery_claim`: a redelivery runs then
            log.warning("could not forget the delivery id; a redelivery runs once its claim lapses")
        return _answer(event, "unavailable", 503, error="queue unavailable, delivery not accepted")
    try:
        svc.store.compare_and_set(key, claim, _delivery_state("queued", job_id), ttl=ttl)
    except Exception:  # noqa: BLE001 - queued all the same; a redelivery after the claim re-queues the same id
        log.warning("could not mark the delivery queued")
    log.info("webhook queued", extra={"job": job_id})
    return _answer(event, "queued", 202, status="queued", event=event, delivery=delivery, job=job_id)


def _delivery_state(state: str, job_id: str) -> str:
    return json.dumps({"state": state, "job": job_id, "at": time.time()})


def _claim(svc: Any, key: str, ttl: float) -> tuple[str, str | None]:
    """(the job id to queue, this process's claim), or (…, None) when the delivery is a duplicate."""
    job_id = uuid.uuid4().hex
    claim = _delivery_state("pending", job_id)
    if svc.store.put_if_absent(key, claim, ttl=ttl):
        return job_id, claim
    current = svc.store.get(key)
    if current is None:                                # forgotten meanwhile: claim it afresh
        return job_id, claim if svc.store.put_if_absent(key, claim, ttl=ttl) else None
    state = _loads_state(current)
    if state.get("state") == "failed":
        log.info("redelivery of a delivery whose job failed: it runs again")
    elif state.get("state") == "pending" and time.time() - float(state.get("at") or 0) >= svc.settings.delivery_claim:
        old = state.get("job")
        if isinstance(old, str) and _DELIVERY.fullmatch(old):
            job_id = old                               # it may have been queued after all: queued twice runs once
            claim = _delivery_state("pending", job_id)
        log.info("redelivery of a delivery never confirmed queued: it is queued now")
    else:
        return job_id, None
    return job_id, claim if svc.store.compare_and_set(key, current, claim, ttl=ttl) else None


def _loads_state(raw: str) -> dict[str, Any]:
    try:
        state = json.loads(raw)
    except ValueError:
        return {}                                      # an older record (a timestamp): seen
    return state if isinstance(state, dict) else {}


def _repo_of(payload: dict[str, Any]) -> str | None:
    repository = payload.get("repository")
    if isinstance(repository, dict):
        name = repository.get("full_name")
        if isinstance(name, str) and _REPO.fullmatch(name):
            return name
    return None


def _pr_of(payload: dict[str, Any]) -> int | None:
    for key in ("pull_request", "issue"):
        obj = payload.get(key)
        if isinstance(obj, dict):
            number = obj.get("number")
            if isinstance(number, int) and not isinstance(number, bool):
                return number
    number = payload.get("number")
    return number if isinstance(number, int) and not isinstance(number, bool) else None


# -- registries ----------------------------------------------------------------------------------------

@registry_blueprint.post("/webhooks/registry/<provider>")
def registry_webhook(provider: str) -> tuple[Response, int]:
    svc = service()
    request.max_content_length = svc.settings.max_registry_body
    if provider not in PARSERS:
        return _answer("registry/unknown", "bad_request", 404,
                       error=f"unknown registry provider {provider[:40]!r} (known: {', '.join(sorted(PARSERS))})")
    event = f"registry/{provider}"
    token = svc.settings.registry_token
    if not token:
        return _answer(event, "unauthorized", 403,
                       error="registry webhooks are off: PRBOT_REGISTRY_TOKEN is not set on the server")
    given = request.args.get("token", "")
    auth = request.headers.get("Authorization", "")
    if not given and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    if not given:
        return _answer(event, "unauthorized", 401, error="missing token (?token= or Authorization: Bearer)")
    if not hmac.compare_digest(token.reveal().encode(), given.encode("utf-8", "replace")):
        log.warning("registry webhook with a wrong token refused", extra={"provider": provider})
        return _answer(event, "unauthorized", 401, error="wrong token")
    wait = _rate_limited(svc.store, given, svc.settings.registry_rate_limit, svc.settings.registry_rate_window)
    if wait:
        resp, code = _answer(event, "rate_limited", 429,
                             error=f"more than {svc.settings.registry_rate_limit} calls with this token in "
                                   f"{svc.settings.registry_rate_window:g}s; retry after {wait}s")
        resp.headers["Retry-After"] = str(wait)
        return resp, code
    narrow = request.args.get("repo") or None
    if narrow is not None and not _REPO.fullmatch(narrow):
        return _answer(event, "bad_request", 400, error="repo: expected owner/name")
    payload, problem = read_json(request.get_data(cache=False))
    if problem:
        return _answer(event, "bad_request", 400, error=problem)
    try:
        report = parse_push(provider, payload, Context(acr_hosts=svc.settings.acr_hosts))
    except PayloadError as exc:
        log.info("registry payload refused: %s", exc, extra={"provider": provider})
        return _answer(event, "bad_request", 400, error=str(exc))
    images = [r.as_dict() for r in report.records]
    routes, indexed = _routes(svc.store, images, narrow)
    delivery = f"registry-{uuid.uuid4().hex[:12]}"
    with log_context(delivery=delivery, provider=provider, repo=narrow):
        if not images:
            reason = report.ignored or "no tagged image in the payload"
            log.info("registry call ignored: %s", reason)
            return _answer(event, "ignored", 200, status="ignored", provider=provider, reason=reason, images=[])
        if indexed and not any(route["accepted"] for route in routes):
            log.info("registry call routes nowhere, not queued", extra={"images": [i["image"] for i in images]})
            return _answer(event, "unrouted", 200, status="unrouted", provider=provider, images=images, repo=narrow,
                           reason="no repository uses this image" if not routes else
                           "every repository using this image refuses this tag", routes=routes)
        job = Job(kind="registry_push", payload={"provider": provider, "images": images, "repo": narrow},
                  delivery=delivery)
        try:
            job_id = svc.enqueue(job)
        except Exception:  # noqa: BLE001
            log.exception("could not enqueue the registry push")
            return _answer(event, "unavailable", 503, error="queue unavailable, push not accepted")
        log.info("registry push queued", extra={"job": job_id, "images": [i["image"] for i in images]})
        return _answer(event, "queued", 202, status="queued", provider=provider, images=images, repo=narrow,
                       job=job_id, routes=routes)


def _routes(store: Any, images: list[dict[str, Any]], narrow: str | None) -> tuple[list[dict[str, Any]], bool]:
    """What the index of installed repositories says each image does there (a tag an
    `images[]` rule refuses is reported), and whether the index could say (False before the first
    index, which the worker builds, or when the store cannot be read: the push is queued then).
    Read from the store only: no GitHub call on this path."""
    from prbot.images import parse_image
    from prbot.repoindex import RepoIndex

    out: list[dict[str, Any]] = []
    try:
        index = RepoIndex(store)
        if index.empty():
            return [], False
        for item in images:
            ref = parse_image(str(item["image"]))
            out += [{"image": item["image"], **route.describe()} for route in index.routes(ref, narrow)]
    except Exception:  # noqa: BLE001 - the worker routes with the index it reads; queue the push
        log.exception("could not read the repository index for the answer")
        return [], False
    return out, True


def _rate_limited(store: Any, token: str, limit: int, window: float) -> int:
    """Count one call of `token` in the current fixed window; 0 when within `limit`, else the
    seconds until the window ends (for Retry-After).  One store key per token and window, expiring
    with it; a store that cannot count lets the call through (the enqueue reports an outage)."""
    if limit <= 0 or window <= 0:
        return 0
    now = time.time()
    start = math.floor(now / window) * window
    digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:16]
    key = f"rate:registry:{digest}:{int(start)}"
    try:
        store.put_if_absent(key, "0", ttl=window * 2)
        count = store.incr(key)
    except Exception:  # noqa: BLE001
        log.exception("could not count the registry call against its rate limit")
        return 0
    return 0 if count <= limit else max(1, math.ceil(start + window - now))

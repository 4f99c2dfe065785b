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
        key = f"delivery:{delivery}"
        try:
            fresh = svc.store.put_if_absent(key, str(time.time()), ttl=svc.settings.delivery_ttl)
        except Exception:  # noqa: BLE001 - the store is down: say so, GitHub shows the 503 for redelivery
            log.exception("could not record the delivery")
            return _answer(event, "unavailable", 503, error="queue unavailable, delivery not accepted")
        if not fresh:
            log.info("duplicate delivery acknowledged, not processed again")
            return _answer(event, "duplicate", 200, status="duplicate", delivery=delivery)
        job = Job(kind="github_event", payload={"event": event, "delivery": delivery, "body": payload},
                  repo=repo, delivery=delivery, pr=pr)
        try:
            job_id = svc.enqueue(job)
        except Exception:  # noqa: BLE001 - GitHub retries nothing by itself, but a 503 shows in its log
            log.exception("could not enqueue the delivery")
            try:
                svc.store.delete(key)              # forget it, so that a redelivery is processed
            except Exception:  # noqa: BLE001
                log.exception("could not forget the delivery id; a redelivery will be taken for a duplicate")
            return _answer(event, "unavailable", 503, error="queue unavailable, delivery not accepted")
        log.info("webhook queued", extra={"job": job_id})
        return _answer(event, "queued", 202, status="queued", event=event, delivery=delivery, job=job_id)


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
    routes = _routes(svc.store, images, narrow)
    delivery = f"registry-{uuid.uuid4().hex[:12]}"
    with log_context(delivery=delivery, provider=provider, repo=narrow):
        if not images:
            reason = report.ignored or "no tagged image in the payload"
            log.info("registry call ignored: %s", reason)
            return _answer(event, "ignored", 200, status="ignored", provider=provider, reason=reason, images=[])
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


def _routes(store: Any, images: list[dict[str, Any]], narrow: str | None) -> list[dict[str, Any]]:
    """What the index of installed repositories says each image does there (a tag an
    `images[]` rule refuses is reported).  Read from the store only: no GitHub call on this path.
    Empty before the first index; the worker routes again with a fresh index anyway."""
    from prbot.images import parse_image
    from prbot.repoindex import RepoIndex

    out: list[dict[str, Any]] = []
    try:
        index = RepoIndex(store)
        for item in images:
            ref = parse_image(str(item["image"]))
            out += [{"image": item["image"], **route.describe()} for route in index.routes(ref, narrow)]
    except Exception:  # noqa: BLE001 - the answer is informative only; the push is queued regardless
        log.exception("could not read the repository index for the answer")
    return out

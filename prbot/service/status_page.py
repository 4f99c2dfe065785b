"""The environments page: `GET /status` (the repositories and the service's health) and
`GET /status/<owner>/<repo>` (its board: `prbot.flows.board`), server-rendered from the templates
beside this module, refreshing itself while a deployment runs.

Who may look (`PRBOT_STATUS_PAGE`):
- ``off`` (the default): every `/status` path answers 404, as if the page did not exist;
- ``token``: `PRBOT_STATUS_TOKEN`, sent as ``Authorization: Bearer …`` or once as ``?token=…``
  (then kept in a signed session cookie and dropped from the address), compared in constant time;
- ``github``: GitHub sign-in with the App's OAuth client (`GITHUB_CLIENT_ID`/`_SECRET`): authorize
  with a one-time `state` kept in the signed session, the callback checks and spends it, swaps the
  code for a user token, and asks GitHub which repositories of the App's installations the user can
  read (`GET /user/installations`, `GET /user/installations/{id}/repositories`).  The session keeps
  the login and those repository names for an hour, never the token; a repository outside them is
  404, exactly like one prbot does not serve.

Nothing secret reaches the page: boards hold versions, names, states and PR titles (escaped by
Jinja), never a token or a Secret's value.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from prbot.envboard import STATE_ICONS, Board, when
from prbot.service.boards import BoardSource
from prbot.service.context import service
from prbot.service.settings import Settings

log = logging.getLogger("prbot.web")

status_blueprint = Blueprint("status", __name__, template_folder="templates")
EXTENSION = "prbot_boards"
SESSION_HOURS = 1.0
STATE_SECONDS = 600.0                   # an OAuth round trip must come back within this
DEPLOYING_REFRESH = 5                   # seconds between reloads of a page while a deployment runs
IDLE_REFRESH = 60
MAX_REPOS = 200                         # repository names kept in a signed-in session


def install_boards(app: Flask, boards: BoardSource) -> None:
    """Give the page its boards and the app a session key (derived from the webhook secret, so every
    web process of one deployment signs alike and no new secret is needed)."""
    app.extensions[EXTENSION] = boards
    settings = service_settings(app)
    secret = settings.github_webhook_secret.reveal() if settings.github_webhook_secret else secrets.token_hex(16)
    app.secret_key = hmac.new(secret.encode(), b"prbot status page session", hashlib.sha256).hexdigest()
    app.config.update(SESSION_COOKIE_NAME="prbot_status", SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax",
                      SESSION_COOKIE_SECURE=bool(settings.public_url and settings.public_url.startswith("https:")))


def service_settings(app: Flask) -> Settings:
    from prbot.service.context import EXTENSION as SERVICE

    return app.extensions[SERVICE].settings  # type: ignore[no-any-return]


def _boards() -> BoardSource:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Viewer:
    who: str                             # "token" or a GitHub login
    repos: frozenset[str] | None         # None: every repository


@status_blueprint.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy",
                                "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    return response


def _mode() -> str:
    mode = service().settings.status_page
    if mode not in ("token", "github"):
        abort(404)
    return mode


def _token_digest(token: str) -> str:
    return hashlib.sha256(b"prbot status token\0" + token.encode()).hexdigest()[:32]


def _viewer() -> Viewer | BaseResponse:
    """Who is looking, or the answer to give instead (a redirect to sign in, 401, 403)."""
    settings = service().settings
    mode = _mode()
    if mode == "token":
        assert settings.status_token is not None            # `require("web")` checked it
        expected = settings.status_token.reveal()
        given = request.args.get("token")
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        if given is not None:
            if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode()):
                log.warning("status page: a wrong token was refused", extra={"path": request.path})
                abort(403)
            if "token" in request.args:                      # keep it in the cookie, not in the address
                session.clear()
                session["viewer"] = {"kind": "token", "key": _token_digest(expected), "exp": time.time()
                                     + SESSION_HOURS * 3600}
                query = {k: v for k, v in request.args.items() if k != "token"}
                return redirect(request.path + (f"?{urllib.parse.urlencode(query)}" if query else ""))
            return Viewer("token", None)
        kept = session.get("viewer")
        if isinstance(kept, dict) and kept.get("kind") == "token" and _fresh(kept) and \
                hmac.compare_digest(str(kept.get("key", "")), _token_digest(expected)):
            return Viewer("token", None)
        return Response(render_template("status/denied.html", mode="token"), status=401)
    kept = session.get("viewer")
    if isinstance(kept, dict) and kept.get("kind") == "github" and _fresh(kept) and isinstance(kept.get("login"), str):
        return Viewer(kept["login"], frozenset(str(r) for r in kept.get("repos", [])))
    return Response(render_template("status/denied.html", mode="github", login=url_for("status.login",
                                                                                          next=request.path)),
                    status=401)


def _fresh(kept: dict[str, Any]) -> bool:
    exp = kept.get("exp")
    return isinstance(exp, int | float) and time.time() < exp


def _visible(viewer: Viewer) -> list[str]:
    names = _boards().repos()
    return [n for n in names if viewer.repos is None or n.lower() in viewer.repos]


# --------------------------------------------------------------------------------------------
# The pages
# --------------------------------------------------------------------------------------------

@status_blueprint.get("/status")
def index() -> Any:
    viewer = _viewer()
    if not isinstance(viewer, Viewer):
        return viewer
    repos = _visible(viewer)
    if len(repos) == 1:
        return redirect(url_for("status.repo_page", owner=repos[0].split("/")[0], name=repos[0].split("/")[1]))
    return render_template("status/index.html", repos=repos, health=_boards().health(), viewer=viewer,
                           refresh=IDLE_REFRESH)


@status_blueprint.get("/status/<owner>/<name>")
def repo_page(owner: str, name: str) -> Any:
    viewer = _viewer()
    if not isinstance(viewer, Viewer):
        return viewer
    full = f"{owner}/{name}"
    found = next((r for r in _visible(viewer) if r.lower() == full.lower()), None)
    if found is None:
        abort(404)
    board = _boards().board(found)
    now = max(time.time(), board.at if board else 0.0)     # a board built on a clock ahead (the demo's)
    deploying = board is None or board.deploying
    return render_template("status/board.html", repo=found, board=board, health=_boards().health(), viewer=viewer,
                           refresh=DEPLOYING_REFRESH if deploying else IDLE_REFRESH, now=now,
                           cells=_cells(board, now) if board else [], icons=STATE_ICONS, when=when)


def _cells(board: Board, now: float) -> list[dict[str, Any]]:
    """Per app, per environment: what the template shows (plain values; Jinja escapes them)."""
    rows = []
    for app in board.apps:
        cells = []
        for env in board.envs:
            cell = board.cell(app, env.name)
            cells.append({"env": env.name, "present": bool(cell.path) or cell.healthy is not None,
                          "rendered": [v.short for v in cell.rendered],
                          "rendered_full": [v.text for v in cell.rendered],
                          "healthy": None if cell.healthy is None else [v.short for v in cell.healthy],
                          "error": cell.error,
                          "differs": cell.healthy is not None and [v.text for v in cell.healthy]
                          != [v.text for v in cell.rendered]})
        rows.append({"app": app, "cells": cells})
    return rows


# --------------------------------------------------------------------------------------------
# GitHub sign-in
# --------------------------------------------------------------------------------------------

def _callback_url() -> str:
    settings = service().settings
    path = url_for("status.callback")
    return f"{settings.public_url}{path}" if settings.public_url else url_for("status.callback", _external=True)


@status_blueprint.get("/status/login")
def login() -> Any:
    if _mode() != "github":
        abort(404)
    settings = service().settings
    state = secrets.token_urlsafe(24)
    nxt = request.args.get("next", "")
    session["oauth"] = {"state": state, "at": time.time(),
                        "next": nxt if nxt.startswith("/status") and "//" not in nxt else "/status"}
    query = urllib.parse.urlencode({"client_id": settings.github_client_id, "redirect_uri": _callback_url(),
                                    "state": state, "allow_signup": "false"})
    return redirect(f"{settings.web_url}/login/oauth/authorize?{query}")


@status_blueprint.get("/status/callback")
def callback() -> Any:
    if _mode() != "github":
        abort(404)
    pending = session.pop("oauth", None)                   # spent whatever happens next: no replay
    state = request.args.get("state", "")
    code = request.args.get("code", "")
    if not isinstance(pending, dict) or not isinstance(pending.get("state"), str) or not state or \
            not hmac.compare_digest(pending["state"].encode(), state.encode("utf-8", "replace")) or \
            time.time() - float(pending.get("at", 0)) > STATE_SECONDS or not code:
        log.warning("status page: a sign-in callback without its state was refused")
        session.clear()
        return Response(render_template("status/denied.html", mode="github", login=url_for("status.login"),
                                        problem="The sign-in could not be verified; sign in again."), status=403)
    try:
        token = _exchange(code)
        login_name, repos = _readable_repositories(token)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("status page: GitHub sign-in failed (%s)", type(exc).__name__)
        return Response(render_template("status/denied.html", mode="github", login=url_for("status.login"),
                                        problem="GitHub did not confirm the sign-in; sign in again."), status=403)
    served = {r.lower() for r in _boards().repos()}
    session.clear()
    session["viewer"] = {"kind": "github", "login": login_name, "exp": time.time() + SESSION_HOURS * 3600,
                         "repos": sorted(r for r in repos if r in served)[:MAX_REPOS]}
    return redirect(str(pending.get("next") or "/status"))


@status_blueprint.get("/status/logout")
def logout() -> Any:
    _mode()
    session.clear()
    return redirect(url_for("status.index"))


def _http(url: str, *, data: dict[str, str] | None = None, token: str | None = None) -> tuple[Any, str]:
    """One JSON request to GitHub: (the body, the next page's URL or "")."""
    headers = {"Accept": "application/json", "User-Agent": "prbot"}
    if token:
        headers.update({"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json"})
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=10) as resp:          # noqa: S310 - GitHub's configured URL
        link = resp.headers.get("Link", "")
        payload = json.loads(resp.read(2_000_000))
    nxt = ""
    for part in link.split(","):
        if 'rel="next"' in part:
            nxt = part.split(";")[0].strip().strip("<>")
    return payload, nxt


def _exchange(code: str) -> str:
    settings = service().settings
    assert settings.github_client_secret is not None
    payload, _ = _http(f"{settings.web_url}/login/oauth/access_token",
                       data={"client_id": settings.github_client_id or "",
                             "client_secret": settings.github_client_secret.reveal(), "code": code,
                             "redirect_uri": _callback_url()})
    token = payload.get("access_token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise ValueError("no access token")
    return token


def _readable_repositories(token: str) -> tuple[str, set[str]]:
    """The user's login and the lower-case names of the repositories of the App's installations the
    user can read (GitHub answers only those)."""
    api = service().settings.github_api_url.rstrip("/")
    user, _ = _http(f"{api}/user", token=token)
    login_name = str(user["login"])
    repos: set[str] = set()
    url = f"{api}/user/installations?per_page=100"
    installations: list[int] = []
    while url and len(installations) < 100:
        page, url = _http(url, token=token)
        installations += [int(i["id"]) for i in page.get("installations", [])]
    for iid in installations:
        url = f"{api}/user/installations/{iid}/repositories?per_page=100"
        while url and len(repos) < 5000:
            try:
                page, url = _http(url, token=token)
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    break
                raise
            repos |= {str(r["full_name"]).lower() for r in page.get("repositories", [])}
    return login_name, repos

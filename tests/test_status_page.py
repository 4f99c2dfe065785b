"""The environments page (`/status`, `prbot.service.status_page`): the board of the demo's sample
repository on the stand-ins, and who may see it — off by default, a static token, or GitHub sign-in
against the fake GitHub at the HTTP boundary.  And the attacks: a page that is off, a wrong token,
an OAuth state mismatched or replayed, a repository the user cannot read, HTML in lock reasons, PR
titles and branch names, secrets in the HTML."""

from __future__ import annotations

import http.client
import io
import re
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakegithub import FakeGitHub
from flask import Flask
from flask.testing import FlaskClient
from service_support import WEBHOOK_SECRET

from prbot import flows
from prbot.demo import Narrator, Story, World, make_world
from prbot.envboard import Board, Cell, Deploy, Env, Lock, OpenPull, ServiceHealth, Version
from prbot.service import create_app
from prbot.service.liveboards import LiveBoards
from prbot.service.settings import Secret, Settings

TOKEN = "status-token-5be1f0c2a9d84e67"
REPO = "acme/gitops"
HEALTH = ServiceHealth(queue_depth=3, workers=2, dead_letters=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The demo's sample repository after the bump PR merged: its deployment started, not polled."""
    world = make_world(tmp_path_factory.mktemp("status-world"))
    story = Story(world, Narrator(io.StringIO()))
    number = story.push()
    assert number is not None
    story.plan(number, "plan")
    assert story.merge(number)
    state = flows.deploy_merged(world.repo, world.clusters, number)
    assert state is not None and not state.done
    flows.set_lock(world.repo.store, REPO, "prod", "alice", "<script>alert('lock')</script> @acme/sre", 0.0)
    return world


def make_app(tmp_path: Path, world: World, **settings: Any) -> Flask:
    values: dict[str, Any] = {"github_webhook_secret": Secret(WEBHOOK_SECRET), "data_dir": tmp_path / "data"}
    values.update(settings)
    return create_app(Settings(**values), configure_logging=False,
                      boards=LiveBoards({REPO: world.repo}, lambda: HEALTH))


def token_client(tmp_path: Path, world: World) -> FlaskClient:
    app = make_app(tmp_path, world, status_page="token", status_token=Secret(TOKEN))
    client = app.test_client()
    assert client.get(f"/status/{REPO}?token={TOKEN}").status_code == 302
    return client


def text_of(html: str) -> str:
    html = re.sub(r"<style>.*?</style>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --------------------------------------------------------------------------------------------
# Off unless turned on
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/status", f"/status/{REPO}", "/status/login", "/status/callback?code=x&state=y",
                                  f"/status/{REPO}?token={TOKEN}"])
def test_the_page_is_off_by_default_every_path_404(tmp_path: Path, world: World, path: str) -> None:
    client = make_app(tmp_path, world).test_client()
    resp = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 404
    assert b"gitops" not in resp.data


def test_token_mode_needs_a_token_of_16_characters() -> None:
    settings = Settings(github_webhook_secret=Secret(WEBHOOK_SECRET), status_page="token",
                        status_token=Secret("short"))
    assert "PRBOT_STATUS_TOKEN" in " ".join(settings.missing("web"))
    env = Settings.from_env({"PRBOT_STATUS_PAGE": "public"})
    assert any(p.startswith("PRBOT_STATUS_PAGE") for p in env.problems) and env.status_page == "off"
    github = Settings(github_webhook_secret=Secret(WEBHOOK_SECRET), status_page="github")
    assert {"GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET"} <= set(github.missing("web"))


# --------------------------------------------------------------------------------------------
# The board
# --------------------------------------------------------------------------------------------

def test_the_board_shows_versions_the_running_deployment_locks_and_health(tmp_path: Path, world: World) -> None:
    client = token_client(tmp_path, world)
    resp = client.get(f"/status/{REPO}")
    assert resp.status_code == 200
    html = resp.data.decode()
    page = text_of(html)
    assert '<meta http-equiv="refresh" content="5">' in html           # a deployment runs: reloads soon
    assert "A deployment is running" in page
    path = re.search(r'<ol class="path" id="path".*?</ol>', html, re.S)
    assert path is not None and re.findall(r'<li data-env="([^"]+)"', path.group()) == ["dev", "staging", "prod"]
    assert text_of(path.group()).count("→") == 2                          # the promotion path
    assert "shop" in page and "1.2.0" in page and "billing" in page and "worker" in page
    dev = re.search(r'<tr data-env-row="dev">(.*?)</tr>', html, re.S)
    assert dev is not None and "PR #1" in text_of(dev.group(1))
    assert re.search(r"(syncing|waiting|progressing)", text_of(dev.group(1)))
    assert "🔒 alice" in page
    assert "queue: 3 jobs waiting" in page and "workers: 2" in page and "dead letters: 1" in page
    assert resp.headers["Cache-Control"] == "no-store"
    assert "script-src" not in resp.headers["Content-Security-Policy"]     # no script runs on the page


def test_the_index_lists_the_repositories_and_one_repository_goes_straight_to_its_board(
        tmp_path: Path, world: World) -> None:
    client = token_client(tmp_path, world)
    resp = client.get("/status")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/status/{REPO}")


# --------------------------------------------------------------------------------------------
# Static token
# --------------------------------------------------------------------------------------------

def test_a_token_in_the_address_becomes_a_cookie_and_leaves_the_address(tmp_path: Path, world: World) -> None:
    app = make_app(tmp_path, world, status_page="token", status_token=Secret(TOKEN))
    client = app.test_client()
    first = client.get(f"/status/{REPO}?token={TOKEN}&x=1")
    assert first.status_code == 302 and first.headers["Location"] == f"/status/{REPO}?x=1"
    cookie = first.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and TOKEN not in cookie
    page = client.get(f"/status/{REPO}")
    assert page.status_code == 200 and TOKEN.encode() not in page.data
    header = app.test_client().get(f"/status/{REPO}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert header.status_code == 200


def test_a_wrong_or_missing_token_sees_nothing(tmp_path: Path, world: World) -> None:
    client = make_app(tmp_path, world, status_page="token", status_token=Secret(TOKEN)).test_client()
    missing = client.get(f"/status/{REPO}")
    assert missing.status_code == 401 and b"shop" not in missing.data
    for wrong in (TOKEN[:-1], TOKEN + "x", "", TOKEN.upper()):
        resp = client.get(f"/status/{REPO}?token={urllib.parse.quote(wrong)}")
        assert resp.status_code in (401, 403) and b"shop" not in resp.data and "Set-Cookie" not in resp.headers
        resp = client.get(f"/status/{REPO}", headers={"Authorization": f"Bearer {wrong}"})
        assert resp.status_code in (401, 403) and b"shop" not in resp.data


def test_a_session_from_an_old_token_ends_when_the_operator_changes_it(tmp_path: Path, world: World) -> None:
    client = token_client(tmp_path, world)
    cookie = client.get_cookie("prbot_status")
    assert cookie is not None
    rotated = make_app(tmp_path / "b", world, status_page="token", status_token=Secret(TOKEN + "-new")).test_client()
    rotated.set_cookie("prbot_status", cookie.value)
    assert rotated.get(f"/status/{REPO}").status_code == 401


# --------------------------------------------------------------------------------------------
# GitHub sign-in
# --------------------------------------------------------------------------------------------

@pytest.fixture
def github(tmp_path: Path, fake_github: FakeGitHub) -> Iterator[FakeGitHub]:
    fake_github.add_installation("acme")
    fake_github.create_repo(REPO, files={"README.md": "x"})
    fake_github.create_repo("acme/payroll", files={"README.md": "x"})
    fake_github.set_permission(REPO, "carol", "read")                 # carol reads gitops, not payroll
    fake_github.set_permission("acme/payroll", "paula", "write")
    fake_github.signed_in = "carol"
    yield fake_github
    fake_github.assert_healthy()


def github_app(tmp_path: Path, world: World, fake: FakeGitHub) -> Flask:
    values: dict[str, Any] = {"github_webhook_secret": Secret(WEBHOOK_SECRET), "data_dir": tmp_path / "data",
                              "status_page": "github", "github_api_url": fake.api_url,
                              "github_client_id": fake.client_id, "github_client_secret": Secret(fake.client_secret)}
    return create_app(Settings(**values), configure_logging=False,
                      boards=LiveBoards({REPO: world.repo, "acme/payroll": world.repo}, lambda: HEALTH))


def authorize(fake: FakeGitHub, location: str) -> str:
    """The browser at GitHub's authorize page: the signed-in person approves; where GitHub sends it."""
    assert location.startswith(f"{fake.web_url}/login/oauth/authorize?")
    parts = urllib.parse.urlsplit(location)
    conn = http.client.HTTPConnection(parts.netloc, timeout=10)
    try:
        conn.request("GET", f"{parts.path}?{parts.query}")
        resp = conn.getresponse()
        assert resp.status == 302, resp.status
        return str(resp.getheader("Location"))
    finally:
        conn.close()


def local(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}"


def sign_in(client: FlaskClient, fake: FakeGitHub, start: str = f"/status/{REPO}") -> Any:
    denied = client.get(start)
    assert denied.status_code == 401
    login = re.search(r'id="sign-in" href="([^"]+)"', denied.data.decode())
    assert login is not None
    to_github = client.get(login.group(1).replace("&amp;", "&"))
    assert to_github.status_code == 302
    back = authorize(fake, to_github.headers["Location"])
    return client.get(local(back))


def test_github_sign_in_shows_the_repositories_the_user_can_read(tmp_path: Path, world: World,
                                                                 github: FakeGitHub) -> None:
    client = github_app(tmp_path, world, github).test_client()
    done = sign_in(client, github)
    assert done.status_code == 302 and done.headers["Location"] == f"/status/{REPO}"
    page = client.get(f"/status/{REPO}")
    assert page.status_code == 200 and "signed in as carol" in text_of(page.data.decode())
    assert client.get("/status/acme/payroll").status_code == 404          # installed, but carol cannot read it
    assert client.get("/status/acme/unknown").status_code == 404
    index = client.get("/status")
    assert index.status_code == 302 and index.headers["Location"].endswith(f"/status/{REPO}")
    for secret in (github.client_secret, WEBHOOK_SECRET):
        assert secret.encode() not in page.data
    cookie = client.get_cookie("prbot_status")
    assert cookie is not None and "ghu_" not in cookie.value            # the user's token is not kept
    assert client.get("/status/logout").status_code == 302
    assert client.get(f"/status/{REPO}").status_code == 401


def test_an_oauth_state_that_does_not_match_or_is_replayed_is_refused(tmp_path: Path, world: World,
                                                                      github: FakeGitHub) -> None:
    client = github_app(tmp_path, world, github).test_client()
    to_github = client.get("/status/login")
    back = urllib.parse.urlsplit(authorize(github, to_github.headers["Location"]))
    query = dict(urllib.parse.parse_qsl(back.query))
    forged = client.get(f"/status/callback?code={query['code']}&state=forged-{query['state']}")
    assert forged.status_code == 403
    assert client.get(f"/status/{REPO}").status_code == 401              # the state was spent, nobody signed in
    replay = client.get(f"{back.path}?{back.query}")                     # the genuine answer, after the state died
    assert replay.status_code == 403 and client.get(f"/status/{REPO}").status_code == 401

    stranger = github_app(tmp_path / "b", world, github).test_client()    # a callback with no sign-in begun
    to_github = client.get("/status/login")
    back = urllib.parse.urlsplit(authorize(github, to_github.headers["Location"]))
    assert stranger.get(f"{back.path}?{back.query}").status_code == 403   # login CSRF: not this browser's state
    assert stranger.get(f"/status/{REPO}").status_code == 401


def test_sign_in_never_sends_the_browser_elsewhere(tmp_path: Path, world: World, github: FakeGitHub) -> None:
    client = github_app(tmp_path, world, github).test_client()
    for target in ("https://evil.example/", "//evil.example/status", "/status/../../evil"):
        to_github = client.get(f"/status/login?next={urllib.parse.quote(target)}")
        done = client.get(local(authorize(github, to_github.headers["Location"])))
        assert done.status_code == 302 and done.headers["Location"] in ("/status", "/status/../../evil")
        assert "evil.example" not in done.headers["Location"]


def test_a_user_without_any_readable_repository_sees_none(tmp_path: Path, world: World, github: FakeGitHub) -> None:
    github.add_user("mallory")
    github.signed_in = "mallory"
    client = github_app(tmp_path, world, github).test_client()
    sign_in(client, github, "/status")
    assert client.get(f"/status/{REPO}").status_code == 404
    assert client.get("/status/acme/payroll").status_code == 404
    index = client.get("/status")
    assert index.status_code == 200 and "that you can read" in text_of(index.data.decode())


# --------------------------------------------------------------------------------------------
# Injection
# --------------------------------------------------------------------------------------------

class FixedBoards:
    """A board whose every name is hostile: what a repository could put in branch names, app
    directories, PR titles, lock reasons and renderer errors."""

    def __init__(self, board: Board) -> None:
        self._board = board

    def repos(self) -> list[str]:
        return [REPO]

    def board(self, name: str) -> Board | None:
        return self._board

    def health(self) -> ServiceHealth | None:
        return None


EVIL = '<img src=x onerror="alert(1)">'


def test_html_in_names_titles_and_reasons_is_text(tmp_path: Path, world: World) -> None:
    board = Board(repo=REPO, html_url="https://github.example/acme/gitops", default_branch=f"main{EVIL}",
                  sha="a" * 40, at=0.0, apps=[f"shop{EVIL}"],
                  envs=[Env(name="dev", cluster="dev", lock=Lock(by=f"m{EVIL}", reason=f"freeze {EVIL}", at=0.0),
                            last=Deploy(sha="b" * 40, state="failed", pr=7, author="m", started=0.0, finished=1.0,
                                        reason=f"rollout {EVIL}"))],
                  cells={f"shop{EVIL}": {"dev": Cell(path="apps/x", rendered=[Version("r/x", "1.0.0")],
                                                      error=f"broken {EVIL}")}},
                  pulls=[OpenPull("promote", 9, f"Promote {EVIL}", "javascript:alert(1)", "dev", EVIL)])
    values: dict[str, Any] = {"github_webhook_secret": Secret(WEBHOOK_SECRET), "data_dir": tmp_path / "data",
                              "status_page": "token", "status_token": Secret(TOKEN)}
    app = create_app(Settings(**values), configure_logging=False, boards=FixedBoards(board))
    resp = app.test_client().get(f"/status/{REPO}", headers={"Authorization": f"Bearer {TOKEN}"})
    html = resp.data.decode()
    assert resp.status_code == 200
    assert "<img" not in html and "javascript:" not in html
    assert html.count("&lt;img src=x onerror=&#34;alert(1)&#34;&gt;") >= 6


def test_the_lock_reason_of_the_sample_world_is_escaped(tmp_path: Path, world: World) -> None:
    client = token_client(tmp_path, world)
    html = client.get(f"/status/{REPO}").data.decode()
    assert "<script>" not in html and "&lt;script&gt;alert(&#39;lock&#39;)&lt;/script&gt;" in html

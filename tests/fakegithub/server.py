"""A stateful fake GitHub (REST, a sliver of GraphQL, git smart HTTP) on 127.0.0.1, laid out as
GitHub Enterprise Server: the API under ``/api/v3``, GraphQL at ``/api/graphql``, repositories at
``/<owner>/<name>.git``.  See `tests/fakegithub/__init__.py` for how tests use it."""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import secrets
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from . import gitstore
from .gitstore import Person
from .model import (
    CONCLUSIONS,
    DEPLOYMENT_STATES,
    LEGACY_PERMISSION,
    PASSING,
    REACTIONS,
    ROLE_ORDER,
    CheckRun,
    Comment,
    Deployment,
    DeploymentStatus,
    Installation,
    Issue,
    Label,
    Logged,
    Pull,
    Reaction,
    Repo,
    Team,
    Token,
    User,
)
from .webhooks import Webhook, fill, template

API = "/api/v3"
GRAPHQL = "/api/graphql"
DOCS = "https://docs.github.com/rest"
SECONDARY_MESSAGE = ("You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
                     "If you reach out to GitHub Support for help, please include the request ID FAKE.")
MAX_BODY = 65536                       # issue comments, PR bodies
MAX_CHECK_TEXT = 65535                 # check-run output summary and text
MAX_ANNOTATIONS = 50                   # per check-run request



_KEY_LOCK = threading.Lock()
_KEY: tuple[str, str] | None = None


def app_key_pair() -> tuple[str, str]:
    """(private key PEM, public key PEM) of the test App, made once per process."""
    global _KEY
    with _KEY_LOCK:
        if _KEY is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
            public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()
            _KEY = (private, public)
        return _KEY


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_id(kind: str, ident: int) -> str:
    return f"{kind}_" + base64.b64encode(f"{kind}:{ident}".encode()).decode().rstrip("=")


class ApiError(Exception):
    """Answer the request with this status and GitHub's error body."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, dict(headers or {})


def _validation(*errors: dict[str, Any]) -> ApiError:
    return ApiError(422, "Validation Failed", list(errors))


@dataclass
class Failure:
    """An injected failure: `kind` "status" (answer `status`), "secondary" (GitHub's secondary rate
    limit, 403 or 429 with Retry-After), "drop" (close the connection without an answer) or
    "drop-after" (do what was asked, then close the connection without an answer)."""

    kind: str
    times: int
    status: int = 503
    method: str | None = None
    path: re.Pattern[str] | None = None
    scope: str = "api"                  # "api" (REST and GraphQL) | "git" | "any"
    retry_after: int | None = None
    message: str | None = None

    def matches(self, method: str, path: str, scope: str) -> bool:
        return (self.times > 0 and (self.scope == "any" or self.scope == scope)
                and (self.method is None or self.method == method)
                and (self.path is None or self.path.search(path) is not None))


@dataclass
class _Actor:
    kind: str                           # "app" | "installation"
    installation: Installation | None = None
    user: User | None = None


class _QuietHandler(WSGIRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002 - werkzeug's signature
        return None


class FakeGitHub:
    """The fake GitHub.  `start()` / `stop()`, or use it as a context manager."""

    def __init__(self, root: Path, *, app_id: int = 4242, app_slug: str = "prbot",
                 token_lifetime: float = 3600.0) -> None:
        self.root = Path(root)
        self.repos_dir = self.root / "repos"
        self.repos_dir.mkdir(parents=True, exist_ok=True)
        self.app_id = app_id
        self.app_slug = app_slug
        self.private_key, self.public_key = app_key_pair()
        self.token_lifetime = token_lifetime
        self.events: list[Webhook] = []
        self.requests: list[Logged] = []
        self.server_errors: list[str] = []
        self._lock = threading.RLock()
        self._repo_locks: dict[str, threading.Lock] = {}
        self._ids = 1000
        self._offset = 0.0
        self._users: dict[str, User] = {}
        self._installations: dict[int, Installation] = {}
        self._tokens: dict[str, Token] = {}
        self._repos: dict[str, Repo] = {}
        self._pulls: dict[str, dict[int, Pull]] = {}
        self._issues: dict[str, dict[int, Issue]] = {}       # plain issues; PRs are in `_pulls`
        self._comments: dict[int, Comment] = {}
        self._check_runs: dict[int, CheckRun] = {}
        self._deployments: dict[int, Deployment] = {}
        self._teams: dict[tuple[str, str], Team] = {}
        self._failures: list[Failure] = []
        self._pace: tuple[int, float] | None = None       # (writes, per seconds)
        self._paced: list[float] = []
        self.tokens_issued = 0
        # GitHub sign-in (the App's OAuth client): who is signed in to the fake's web pages, the
        # codes handed to the App's callback, the user tokens they were exchanged for
        self.client_id = f"Iv1.fake{app_id}"
        self.client_secret = secrets.token_hex(20)
        self.signed_in: str | None = None
        self._codes: dict[str, tuple[str, str]] = {}          # code -> (login, redirect_uri)
        self._user_tokens: dict[str, str] = {}                # token -> login
        self.bot = self._user(f"{app_slug}[bot]", "Bot")
        self.app_owner = self._user("prbot-dev", "Organization")
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._routes = self._route_table()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeGitHub:
        server = make_server("127.0.0.1", self.port, self, threaded=True, request_handler=_QuietHandler)
        self.port = server.server_port
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-github", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @contextlib.contextmanager
    def unreachable(self) -> Iterator[None]:
        """GitHub is down: nothing listens on the port until the block ends."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What `GITHUB_API_URL` is set to (GitHub Enterprise layout)."""
        return f"{self.web_url}{API}"

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        """The fake's clock (the real one plus `advance`): token expiry and the write pace use it."""
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds

    # ------------------------------------------------------------------ seeding
    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _user(self, login: str, kind: str = "User") -> User:
        with self._lock:
            user = self._users.get(login.lower())
            if user is None:
                user = self._users[login.lower()] = User(login, self._next_id(), kind)
            return user

    def _repo(self, full_name: str) -> Repo:
        repo = self._repos.get(full_name.lower())
        if repo is None:
            raise KeyError(f"the fake has no repository {full_name}")
        return repo

    def add_user(self, login: str, *, kind: str = "User") -> User:
        return self._user(login, kind)

    def add_installation(self, account: str, *, repos: Iterable[str] | None = None,
                         account_type: str = "Organization") -> int:
        """Install the App on `account`: every repository of it (`repos` None, also those created
        later) or the named ones.  Records an `installation.created` webhook."""
        with self._lock:
            owner = self._user(account, account_type)
            inst = Installation(self._next_id(), owner, None if repos is None else {r.lower() for r in repos},
                                created_at=self.now(), rate_reset=self.now() + 3600)
            self._installations[inst.id] = inst
            self._emit("installation", {"action": "created", "installation": self._installation_json(inst),
                                        "repositories": [self._repo_brief(r) for r in self._installed_repos(inst)],
                                        "sender": self._user_json(owner), "requester": None})
            return inst.id

    def add_repositories(self, installation_id: int, *names: str) -> None:
        """Add repositories to an installation with selected repositories."""
        with self._lock:
            inst = self._installations[installation_id]
            assert inst.repos is not None, "this installation covers every repository of its account"
            inst.repos.update(n.lower() for n in names)
            added = [self._repos[n.lower()] for n in names if n.lower() in self._repos]
            self._emit_installation_repositories(inst, added)

    def create_repo(self, full_name: str, *, files: Mapping[str, str | bytes] | None = None,
                    source: Path | None = None, default_branch: str = "main", private: bool = True,
                    allow_auto_merge: bool = True, message: str = "initial commit",
                    author: str | None = None) -> Repo:
        """A repository whose default branch holds `files` or the files of the directory `source`
        (one commit), or nothing when neither is given."""
        owner_login, name = full_name.split("/")
        with self._lock:
            owner = self._users.get(owner_login.lower()) or self._user(owner_login, "Organization")
            repo = Repo(self._next_id(), owner, name, self.repos_dir / owner.login / f"{name}.git", default_branch,
                        private=private, allow_auto_merge=allow_auto_merge, created_at=self.now(),
                        pushed_at=self.now())
            gitstore.init_bare(repo.path, default_branch)
            if files or source is not None:
                who = self._user(author) if author else owner
                sha = gitstore.commit_files(repo.path, None, files or {}, message, self._person(who), source=source)
                gitstore.update_ref(repo.path, f"refs/heads/{default_branch}", sha)
            self._repos[repo.key] = repo
            self._pulls[repo.key] = {}
            self._issues[repo.key] = {}
            for inst in self._installations.values():
                if inst.repos is None and inst.account.login.lower() == owner.login.lower():
                    self._emit_installation_repositories(inst, [repo])
            return repo

    def fork_repo(self, parent: str, owner: str) -> Repo:
        """A fork of `parent` owned by `owner` (every branch copied)."""
        with self._lock:
            source = self._repo(parent)
            fork = self.create_repo(f"{owner}/{source.name}", default_branch=source.default_branch,
                                    private=source.private)
            fork.parent = source.key
            gitstore.run(fork.path, "fetch", "-q", "--no-tags", str(source.path), "+refs/heads/*:refs/heads/*")
            return fork

    def set_permission(self, repo: str, user: str, role: str) -> None:
        """`user`'s role on `repo`: admin, maintain, write, triage, read or none."""
        assert role in ROLE_ORDER, role
        with self._lock:
            self._user(user)
            self._repo(repo).collaborators[user.lower()] = role

    def add_team(self, org: str, slug: str, *, members: Iterable[str] = (), maintainers: Iterable[str] = (),
                 pending: Iterable[str] = ()) -> Team:
        with self._lock:
            self._user(org, "Organization")
            team = Team(self._next_id(), org, slug)
            for login in members:
                team.members[self._user(login).login.lower()] = "member"
            for login in maintainers:
                team.members[self._user(login).login.lower()] = "maintainer"
            team.pending.update(self._user(p).login.lower() for p in pending)
            self._teams[(org.lower(), slug.lower())] = team
            return team

    def protect_branch(self, repo: str, branch: str, *, required_checks: Iterable[str]) -> None:
        """Branch protection with required status checks: merges wait for them (and auto-merge
        becomes possible, as on GitHub)."""
        with self._lock:
            self._repo(repo).required_checks[branch] = list(required_checks)

    def set_rate_limit(self, installation_id: int, remaining: int, *, reset_in: float = 3600) -> None:
        """The installation's primary rate limit (requests left until `reset_in` seconds from now)."""
        with self._lock:
            inst = self._installations[installation_id]
            inst.rate_remaining, inst.rate_reset = remaining, self.now() + reset_in

    # ------------------------------------------------------------------ acting as people
    def commit(self, repo: str, branch: str, files: Mapping[str, str | bytes | None], *,
               message: str = "change", user: str | None = None, parent: str | None = None,
               executable: Iterable[str] = ()) -> str:
        """Push one commit to `branch` (created from the default branch when missing, or from
        `parent`), as `user` (default: the owner): files with None are deleted, those named in
        `executable` get mode 100755.  Records the push and `pull_request.synchronize` webhooks, as a
        `git push` would."""
        with self._lock:
            r = self._repo(repo)
            pusher = self._user(user) if user else r.owner
            old = gitstore.ref_sha(r.path, f"refs/heads/{branch}")
            base = parent or old or gitstore.ref_sha(r.path, f"refs/heads/{r.default_branch}")
            sha = gitstore.commit_files(r.path, base, files, message, self._person(pusher),
                                        executable=frozenset(executable))
            gitstore.update_ref(r.path, f"refs/heads/{branch}", sha)
            self._after_push(r, {f"refs/heads/{branch}": (old, sha)}, pusher)
            return sha

    def delete_branch(self, repo: str, branch: str, *, user: str | None = None) -> None:
        with self._lock:
            r = self._repo(repo)
            old = gitstore.ref_sha(r.path, f"refs/heads/{branch}")
            gitstore.update_ref(r.path, f"refs/heads/{branch}", None)
            self._after_push(r, {f"refs/heads/{branch}": (old, None)}, self._user(user) if user else r.owner)

    def open_pull(self, repo: str, *, head: str, base: str | None = None, title: str = "A change",
                  body: str | None = "", user: str | None = None, head_repo: str | None = None,
                  draft: bool = False) -> int:
        """Open a PR as `user` from `head` (a branch of `head_repo`, default this repository)."""
        with self._lock:
            r = self._repo(repo)
            author = self._user(user) if user else r.owner
            hrepo = self._repo(head_repo) if head_repo else r
            pull = self._create_pull(r, author, title, body, hrepo, head, base or r.default_branch, draft)
            return pull.number

    def open_issue(self, repo: str, *, title: str = "A question", body: str | None = "",
                   user: str | None = None) -> int:
        """Open a plain issue as `user` (records `issues.opened`); its number comes from the sequence
        the repository's PRs use."""
        with self._lock:
            r = self._repo(repo)
            return self._create_issue(r, self._user(user) if user else r.owner, title, body).number

    def comment(self, repo: str, number: int, body: str, *, user: str) -> int:
        """A conversation comment by `user` on a PR or a plain issue (records `issue_comment.created`).
        People read a thread before they comment: the comment is made in a later second than its last
        change (GitHub's timestamps have one-second resolution), the clock moving on if need be."""
        with self._lock:
            r = self._repo(repo)
            gap = math.floor(self._issue_or_pull(r, number).updated_at) + 1 - self.now()
            if gap > 0:
                self._offset += gap
            return self._create_comment(r, number, body, self._user(user), via_app=False).id

    def label_pull(self, repo: str, number: int, label: str, *, user: str) -> None:
        """`user` adds `label` to the PR from GitHub's page (records `pull_request.labeled`; GitHub
        lets triage users do this)."""
        with self._lock:
            r = self._repo(repo)
            pull = self._pull(r, number)
            key = label.lower()
            if key not in r.labels:
                r.labels[key] = Label(self._next_id(), label)
            if key not in pull.labels:
                pull.labels.append(key)
            pull.updated_at = self.now()
            self._emit_pull(r, pull, "labeled", self._user(user), label=self._label_json(r, r.labels[key]))

    def edit_comment(self, comment_id: int, body: str, *, user: str | None = None) -> None:
        with self._lock:
            c = self._comments[comment_id]
            self._edit_comment(c, body, self._user(user) if user else c.user)

    def close_pull(self, repo: str, number: int, *, user: str | None = None) -> None:
        with self._lock:
            r = self._repo(repo)
            self._set_state(r, self._pull(r, number), "closed", self._user(user) if user else r.owner)

    def reopen_pull(self, repo: str, number: int, *, user: str | None = None) -> None:
        with self._lock:
            r = self._repo(repo)
            self._set_state(r, self._pull(r, number), "open", self._user(user) if user else r.owner)

    def merge(self, repo: str, number: int, *, user: str | None = None, method: str = "merge") -> str:
        """Merge the PR as `user` (the merge button); the merge commit sha."""
        with self._lock:
            r = self._repo(repo)
            return self._merge(r, self._pull(r, number), self._user(user) if user else r.owner, method, None,
                               None, None)

    def rerequest_check_run(self, check_run_id: int, *, user: str) -> None:
        """Someone pressed "Re-run" on a check run (records `check_run.rerequested`)."""
        with self._lock:
            run = self._check_runs[check_run_id]
            r = self._repos[run.repo]
            self._emit("check_run", {"action": "rerequested", "check_run": self._check_run_json(run),
                                     "repository": self._repo_json(r), "sender": self._user_json(self._user(user))},
                       repo=r)

    # ------------------------------------------------------------------ reading state
    def repo(self, full_name: str) -> Repo:
        with self._lock:
            return self._repo(full_name)

    def pulls(self, repo: str, *, state: str = "all") -> list[Pull]:
        with self._lock:
            return [p for p in self._pulls[self._repo(repo).key].values() if state in ("all", p.state)]

    def issues(self, repo: str, *, state: str = "all") -> list[Issue]:
        """The plain issues (not the PRs) of `repo`."""
        with self._lock:
            return [i for i in self._issues[self._repo(repo).key].values() if state in ("all", i.state)]

    def pull(self, repo: str, number: int) -> Pull:
        with self._lock:
            r = self._repo(repo)
            return self._pull(r, number)

    def comments(self, repo: str, number: int) -> list[Comment]:
        with self._lock:
            key = self._repo(repo).key
            return [c for c in self._comments.values() if c.repo == key and c.number == number]

    def check_runs(self, repo: str, head_sha: str | None = None) -> list[CheckRun]:
        with self._lock:
            key = self._repo(repo).key
            return [c for c in self._check_runs.values()
                    if c.repo == key and (head_sha is None or c.head_sha == head_sha)]

    def deployments(self, repo: str) -> list[Deployment]:
        with self._lock:
            key = self._repo(repo).key
            return [d for d in self._deployments.values() if d.repo == key]

    def branch_sha(self, repo: str, branch: str) -> str | None:
        return gitstore.ref_sha(self._repo(repo).path, f"refs/heads/{branch}")

    def read_file(self, repo: str, rev: str, path: str) -> bytes | None:
        return gitstore.read_blob(self._repo(repo).path, rev, path)

    def labels(self, repo: str, number: int) -> list[str]:
        with self._lock:
            r = self._repo(repo)
            return [r.labels[n].name for n in self._pull(r, number).labels]

    # ------------------------------------------------------------------ failures, pace, log
    def fail(self, status: int = 503, *, times: int = 1, method: str | None = None, path: str | None = None,
             scope: str = "api", message: str | None = None, retry_after: int | None = None) -> None:
        """The next `times` matching requests (`path`: a regex searched in the path without the
        API prefix) get `status`."""
        self._failures.append(Failure("status", times, status, method, re.compile(path) if path else None, scope,
                                      retry_after, message))

    def heal(self) -> None:
        """End every injected failure (an outage is over)."""
        with self._lock:
            self._failures.clear()

    def secondary_rate_limit(self, *, times: int = 1, retry_after: int | None = 60, status: int = 403,
                             method: str | None = None, path: str | None = None) -> None:
        """GitHub's secondary rate limit for the next `times` matching requests: 403 (or 429) with
        `Retry-After` (None: without the header, as GitHub sometimes does) and its message."""
        self._failures.append(Failure("secondary", times, status, method, re.compile(path) if path else None,
                                      "api", retry_after))

    def drop_connections(self, *, times: int = 1, method: str | None = None, path: str | None = None,
                         scope: str = "api", after: bool = False) -> None:
        """Close the connection of the next `times` matching requests without answering — before
        doing anything, or with `after` once the request took effect (a response lost on the way:
        the client cannot tell whether it happened)."""
        self._failures.append(Failure("drop-after" if after else "drop", times, 0, method,
                                      re.compile(path) if path else None, scope))

    def pace_writes(self, per_minute: int | None = 80) -> None:
        """GitHub's documented pace for content-creating requests: more than `per_minute` writes in
        any minute get the secondary-rate-limit 403 with `Retry-After` (None: no pace, the default)."""
        with self._lock:
            self._pace = (per_minute, 60.0) if per_minute else None
            self._paced = []

    def expire_tokens(self) -> None:
        """Every installation token issued so far stops working (401 Bad credentials)."""
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = min(token.expires_at, self.now() - 1)

    def api_writes(self, *, path: str | None = None) -> list[Logged]:
        """Content-creating API requests answered with success (`path`: a regex to narrow)."""
        pattern = re.compile(path) if path else None
        with self._lock:
            return [r for r in self.requests if r.write and r.status < 400 and r.kind != "git"
                    and (pattern is None or pattern.search(r.path))]

    def drain_events(self) -> list[Webhook]:
        """The webhooks recorded since the last call, oldest first."""
        with self._lock:
            events, self.events = self.events, []
            return events

    def assert_healthy(self) -> None:
        """Fail when the fake itself crashed while answering a request."""
        assert not self.server_errors, "\n".join(self.server_errors)

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        path = request.path
        if path.startswith("/login/oauth/"):                 # GitHub's web sign-in, not the API
            response = self._oauth(request, path)
            self._log(request.method, path, response.status_code, "oauth", False, None)
            return response(environ, start_response)
        if path.startswith(API + "/") or path == API:
            kind, rel = "api", path[len(API):] or "/"
        elif path == GRAPHQL:
            kind, rel = "graphql", path
        else:
            kind, rel = "git", path
        scope = "git" if kind == "git" else "api"
        write = kind != "git" and request.method in ("POST", "PATCH", "PUT", "DELETE") \
            and not rel.endswith("/access_tokens")
        if kind == "graphql":
            write = b"mutation" in request.get_data()[:4096]
        failure = self._take_failure(request.method, rel, scope)
        if failure is not None and failure.kind == "drop":
            self._log(request.method, rel, 0, kind, write, None)
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)
            return []
        installation: int | None = None
        rated: Installation | None = None
        lost = failure is not None and failure.kind == "drop-after"
        if lost:
            failure = None
        try:
            if failure is not None:
                raise self._failure_error(failure)
            if kind == "git":
                git_actor = self._basic_actor(request)
                installation = git_actor.installation.id if git_actor and git_actor.installation else None
                response = self._git(request, rel, git_actor)
            else:
                actor = self._authenticate(request)
                installation = actor.installation.id if actor.installation else None
                rated = actor.installation
                if kind == "graphql":
                    self._check_pace(write)
                    response = self._json(200, self._graphql(request, actor))
                else:
                    self._check_rate(actor)
                    self._check_pace(write)
                    response = self._dispatch(request, rel, actor)
        except ApiError as e:
            body: dict[str, Any] = {"message": e.message, "documentation_url": DOCS, "status": str(e.status)}
            if e.errors is not None:
                body["errors"] = e.errors
            response = self._json(e.status, body)
            response.headers.update(e.headers)
        except Exception:  # noqa: BLE001 - a crash in the fake: answer 500 and let the test see it
            self.server_errors.append(f"{request.method} {path}\n{traceback.format_exc()}")
            response = self._json(500, {"message": "fake GitHub crashed", "documentation_url": DOCS})
        if rated is not None:
            self._rate_headers(response, rated)
        self._log(request.method, rel, response.status_code, kind, write, installation)
        if lost:                                       # it happened; the answer never arrives
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(2)
            return []
        return response(environ, start_response)

    def _log(self, method: str, path: str, status: int, kind: str, write: bool, installation: int | None) -> None:
        with self._lock:
            self.requests.append(Logged(method, path, status, kind, write, installation, self.now()))

    def _take_failure(self, method: str, path: str, scope: str) -> Failure | None:
        with self._lock:
            for failure in self._failures:
                if failure.matches(method, path, scope):
                    failure.times -= 1
                    return failure
        return None

    def _failure_error(self, failure: Failure) -> ApiError:
        headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
        if failure.kind == "secondary":
            headers.update({"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4000"})
            return ApiError(failure.status, SECONDARY_MESSAGE, headers=headers)
        return ApiError(failure.status, failure.message or ("Server Error" if failure.status >= 500
                                                            else "Injected failure"), headers=headers)

    def _check_pace(self, write: bool) -> None:
        if not write:
            return
        with self._lock:
            if self._pace is None:
                return
            limit, window = self._pace
            now = self.now()
            self._paced = [t for t in self._paced if t > now - window]
            if len(self._paced) >= limit:
                wait = max(1, math.ceil(self._paced[0] + window - now))
                raise ApiError(403, SECONDARY_MESSAGE, headers={"Retry-After": str(wait)})
            self._paced.append(now)

    def _check_rate(self, actor: _Actor) -> None:
        inst = actor.installation
        if inst is None:
            return
        with self._lock:
            if self.now() >= inst.rate_reset:
                inst.rate_remaining, inst.rate_reset = inst.rate_limit, self.now() + 3600
            if inst.rate_remaining <= 0:
                raise ApiError(403, f"API rate limit exceeded for installation ID {inst.id}.",
                               headers=self._rate_values(inst))
            inst.rate_remaining -= 1

    def _rate_values(self, inst: Installation) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(inst.rate_limit), "X-RateLimit-Remaining": str(inst.rate_remaining),
                "X-RateLimit-Reset": str(int(inst.rate_reset)), "X-RateLimit-Used": str(inst.rate_limit
                                                                                      - inst.rate_remaining),
                "X-RateLimit-Resource": "core"}

    def _rate_headers(self, response: Response, inst: Installation) -> None:
        with self._lock:
            for name, value in self._rate_values(inst).items():
                response.headers.setdefault(name, value)

    @staticmethod
    def _json(status: int, data: Any, headers: Mapping[str, str] | None = None) -> Response:
        if status == 204:
            return Response(status=204, headers=dict(headers or {}))
        return Response(json.dumps(data), status=status, headers=dict(headers or {}),
                        content_type="application/json; charset=utf-8")

    # ------------------------------------------------------------------ authentication
    def _authenticate(self, request: Request) -> _Actor:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if not credential:
            raise ApiError(401, "Requires authentication")
        if scheme.lower() == "bearer" and credential.count(".") == 2:
            return self._verify_jwt(credential)
        if scheme.lower() in ("token", "bearer"):
            with self._lock:
                login = self._user_tokens.get(credential)
            if login is not None:
                return _Actor("user", None, self._users[login.lower()])
            return self._installation_actor(credential)
        raise ApiError(401, "Bad credentials")

    def _verify_jwt(self, token: str) -> _Actor:
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"],
                                options={"require": ["exp", "iat", "iss"]}, leeway=60)
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "'Expiration time' claim ('exp') must be a numeric value representing the "
                                "future time at which the assertion expires") from None
        except jwt.PyJWTError:
            raise ApiError(401, "A JSON web token could not be decoded") from None
        if str(claims["iss"]) != str(self.app_id):
            raise ApiError(401, "'Issuer' claim ('iss') must be an Integer")
        if claims["exp"] - claims["iat"] > 660:
            raise ApiError(401, "'Expiration time' claim ('exp') is too far in the future")
        return _Actor("app")

    def _installation_actor(self, value: str) -> _Actor:
        with self._lock:
            token = self._tokens.get(value)
            if token is None or token.expires_at <= self.now():
                raise ApiError(401, "Bad credentials")
            inst = self._installations.get(token.installation_id)
            if inst is None:
                raise ApiError(401, "Bad credentials")
            return _Actor("installation", inst, self.bot)

    def _basic_actor(self, request: Request) -> _Actor | None:
        header = request.headers.get("Authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            _user, _, password = base64.b64decode(credential).decode().partition(":")
            return self._installation_actor(password)
        except (ValueError, ApiError):
            return None

    def _installed_repos(self, inst: Installation) -> list[Repo]:
        return [r for r in self._repos.values() if self._covers(inst, r)]

    @staticmethod
    def _covers(inst: Installation, repo: Repo) -> bool:
        if inst.repos is None:
            return repo.owner.login.lower() == inst.account.login.lower()
        return repo.key in inst.repos

    def _installation_of(self, repo: Repo) -> Installation | None:
        return next((i for i in self._installations.values() if self._covers(i, repo)), None)

    def _visible(self, actor: _Actor, owner: str, name: str, *, write: bool = False) -> Repo:
        if actor.kind != "installation":
            raise ApiError(401, "Bad credentials")
        repo = self._repos.get(f"{owner}/{name}".lower())
        if repo is None:
            raise ApiError(404, "Not Found")
        assert actor.installation is not None
        if not self._covers(actor.installation, repo):
            if repo.private:
                raise ApiError(404, "Not Found")
            if write:
                raise ApiError(403, "Resource not accessible by integration")
        return repo

    # ------------------------------------------------------------------ JSON shapes
    def _user_json(self, user: User) -> dict[str, Any]:
        api = f"{self.api_url}/users/{user.login}"
        return {"login": user.login, "id": user.id, "node_id": node_id("U", user.id),
                "avatar_url": f"{self.web_url}/avatars/u/{user.id}", "gravatar_id": "", "url": api,
                "html_url": f"{self.web_url}/{user.login}", "followers_url": f"{api}/followers",
                "following_url": f"{api}/following{{/other_user}}", "gists_url": f"{api}/gists{{/gist_id}}",
                "starred_url": f"{api}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{api}/subscriptions",
                "organizations_url": f"{api}/orgs", "repos_url": f"{api}/repos",
                "events_url": f"{api}/events{{/privacy}}", "received_events_url": f"{api}/received_events",
                "type": user.type, "site_admin": False}

    def _app_json(self) -> dict[str, Any]:
        return {"id": self.app_id, "slug": self.app_slug, "node_id": node_id("A", self.app_id),
                "owner": self._user_json(self.app_owner), "name": self.app_slug,
                "description": "fake App", "external_url": self.web_url,
                "html_url": f"{self.web_url}/apps/{self.app_slug}", "created_at": iso(0), "updated_at": iso(0),
                "permissions": {"checks": "write", "contents": "write", "deployments": "write", "issues": "write",
                                "members": "read", "metadata": "read", "pull_requests": "write"},
                "events": ["pull_request", "issue_comment", "push", "check_run"]}

    def _installation_json(self, inst: Installation) -> dict[str, Any]:
        return {"id": inst.id, "node_id": node_id("I", inst.id), "account": self._user_json(inst.account),
                "repository_selection": "all" if inst.repos is None else "selected",
                "access_tokens_url": f"{self.api_url}/app/installations/{inst.id}/access_tokens",
                "repositories_url": f"{self.api_url}/installation/repositories",
                "html_url": f"{self.web_url}/settings/installations/{inst.id}", "app_id": self.app_id,
                "app_slug": self.app_slug, "target_id": inst.account.id, "target_type": inst.account.type,
                "permissions": self._app_json()["permissions"], "events": self._app_json()["events"],
                "created_at": iso(inst.created_at), "updated_at": iso(inst.created_at),
                "single_file_name": None, "suspended_at": None, "suspended_by": None}

    def _repo_brief(self, repo: Repo) -> dict[str, Any]:
        return {"id": repo.id, "node_id": node_id("R", repo.id), "name": repo.name, "full_name": repo.full_name,
                "private": repo.private}

    def _repo_json(self, repo: Repo, *, full: bool = False) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{repo.full_name}"
        html = f"{self.web_url}/{repo.full_name}"
        data: dict[str, Any] = {
            **self._repo_brief(repo), "owner": self._user_json(repo.owner), "html_url": html,
            "description": None, "fork": repo.parent is not None, "url": api,
            "clone_url": f"{html}.git", "git_url": f"{html}.git", "ssh_url": f"git@127.0.0.1:{repo.full_name}.git",
            "svn_url": html, "mirror_url": None, "homepage": None, "size": 1,
            "created_at": iso(repo.created_at), "updated_at": iso(repo.pushed_at), "pushed_at": iso(repo.pushed_at),
            "default_branch": repo.default_branch, "visibility": "private" if repo.private else "public",
            "archived": False, "disabled": False, "is_template": False, "topics": [],
            "has_issues": True, "has_projects": False, "has_wiki": False, "has_pages": False,
            "has_downloads": False, "forks_count": 0, "forks": 0, "open_issues_count": 0, "open_issues": 0,
            "watchers": 0, "watchers_count": 0, "stargazers_count": 0, "language": None, "license": None,
            "allow_auto_merge": repo.allow_auto_merge, "allow_merge_commit": repo.allow_merge_commit,
            "allow_squash_merge": repo.allow_squash_merge, "allow_rebase_merge": repo.allow_rebase_merge,
            "web_commit_signoff_required": False,
        }
        for name, suffix in (("forks", "/forks"), ("keys", "/keys{/key_id}"),
                             ("collaborators", "/collaborators{/collaborator}"), ("teams", "/teams"),
                             ("hooks", "/hooks"), ("issue_events", "/issues/events{/number}"), ("events", "/events"),
                             ("assignees", "/assignees{/user}"), ("branches", "/branches{/branch}"),
                             ("tags", "/tags"), ("blobs", "/git/blobs{/sha}"), ("git_tags", "/git/tags{/sha}"),
                             ("git_refs", "/git/refs{/sha}"), ("trees", "/git/trees{/sha}"),
                             ("statuses", "/statuses/{sha}"), ("languages", "/languages"),
                             ("stargazers", "/stargazers"), ("contributors", "/contributors"),
                             ("subscribers", "/subscribers"), ("subscription", "/subscription"),
                             ("commits", "/commits{/sha}"), ("git_commits", "/git/commits{/sha}"),
                             ("comments", "/comments{/number}"), ("issue_comment", "/issues/comments{/number}"),
                             ("contents", "/contents/{+path}"), ("compare", "/compare/{base}...{head}"),
                             ("merges", "/merges"), ("archive", "/{archive_format}{/ref}"),
                             ("downloads", "/downloads"), ("issues", "/issues{/number}"),
                             ("pulls", "/pulls{/number}"), ("milestones", "/milestones{/number}"),
                             ("notifications", "/notifications{?since,all,participating}"),
                             ("labels", "/labels{/name}"), ("releases", "/releases{/id}"),
                             ("deployments", "/deployments")):
            data[f"{name}_url"] = api + suffix
        if full:
            inst = self._installation_of(repo)
            data["permissions"] = {"admin": False, "maintain": False, "push": inst is not None, "triage": True,
                                   "pull": True}
            if repo.parent is not None:
                parent = self._repos[repo.parent]
                data["parent"] = data["source"] = self._repo_json(parent)
        return data

    def _label_json(self, repo: Repo, label: Label) -> dict[str, Any]:
        return {"id": label.id, "node_id": node_id("LA", label.id), "name": label.name, "color": label.color,
                "default": False, "description": label.description,
                "url": f"{self.api_url}/repos/{repo.full_name}/labels/{label.name}"}

    def _association(self, repo: Repo, user: User) -> str:
        if user.login.lower() == repo.owner.login.lower():
            return "OWNER"
        if repo.collaborators.get(user.login.lower(), "none") != "none":
            return "COLLABORATOR"
        return "NONE"

    def _branch_tip(self, repo: Repo, branch: str) -> str | None:
        return gitstore.ref_sha(repo.path, f"refs/heads/{branch}")

    def _base_sha(self, repo: Repo, pull: Pull) -> str:
        return pull.base_sha or self._branch_tip(repo, pull.base_ref) or ""

    def _pull_json(self, pull: Pull, *, detail: bool = False) -> dict[str, Any]:
        repo = self._repos[pull.repo]
        head_repo = self._repos.get(pull.head_repo) if pull.head_repo else None
        api = f"{self.api_url}/repos/{repo.full_name}"
        html = f"{self.web_url}/{repo.full_name}"
        n = pull.number
        head_owner = head_repo.owner if head_repo else pull.user
        data: dict[str, Any] = {
            "url": f"{api}/pulls/{n}", "id": pull.id, "node_id": node_id("PR", pull.id),
            "html_url": f"{html}/pull/{n}", "diff_url": f"{html}/pull/{n}.diff",
            "patch_url": f"{html}/pull/{n}.patch", "issue_url": f"{api}/issues/{n}", "number": n,
            "state": pull.state, "locked": False, "title": pull.title, "user": self._user_json(pull.user),
            "body": pull.body, "created_at": iso(pull.created_at), "updated_at": iso(pull.updated_at),
            "closed_at": iso(pull.closed_at), "merged_at": iso(pull.merged_at),
            "merge_commit_sha": pull.merge_commit_sha, "assignee": None, "assignees": [],
            "requested_reviewers": [], "requested_teams": [],
            "labels": [self._label_json(repo, repo.labels[name]) for name in pull.labels], "milestone": None,
            "draft": pull.draft, "commits_url": f"{api}/pulls/{n}/commits",
            "review_comments_url": f"{api}/pulls/{n}/comments",
            "review_comment_url": f"{api}/pulls/comments{{/number}}", "comments_url": f"{api}/issues/{n}/comments",
            "statuses_url": f"{api}/statuses/{pull.head_sha}",
            "head": {"label": f"{head_owner.login}:{pull.head_ref}", "ref": pull.head_ref, "sha": pull.head_sha,
                     "user": self._user_json(head_owner),
                     "repo": self._repo_json(head_repo) if head_repo else None},
            "base": {"label": f"{repo.owner.login}:{pull.base_ref}", "ref": pull.base_ref,
                     "sha": self._base_sha(repo, pull), "user": self._user_json(repo.owner),
                     "repo": self._repo_json(repo)},
            "_links": {"self": {"href": f"{api}/pulls/{n}"}, "html": {"href": f"{html}/pull/{n}"},
                       "issue": {"href": f"{api}/issues/{n}"}, "comments": {"href": f"{api}/issues/{n}/comments"},
                       "review_comments": {"href": f"{api}/pulls/{n}/comments"},
                       "review_comment": {"href": f"{api}/pulls/comments{{/number}}"},
                       "commits": {"href": f"{api}/pulls/{n}/commits"},
                       "statuses": {"href": f"{api}/statuses/{pull.head_sha}"}},
            "author_association": self._association(repo, pull.user), "auto_merge": pull.auto_merge,
            "active_lock_reason": None, "merged": pull.merged, "mergeable": None, "rebaseable": None,
            "mergeable_state": "unknown",
            "merged_by": self._user_json(pull.merged_by) if pull.merged_by else None,
            "comments": sum(1 for c in self._comments.values() if c.repo == repo.key and c.number == n),
            "review_comments": 0, "maintainer_can_modify": pull.maintainer_can_modify,
            "commits": 0, "additions": 0, "deletions": 0, "changed_files": 0,
        }
        if detail:
            base = self._base_sha(repo, pull)
            if pull.state == "open":
                mergeable = gitstore.merge_tree(repo.path, base, pull.head_sha) is not None
                data["mergeable"] = data["rebaseable"] = mergeable
                data["mergeable_state"] = self._mergeable_state(repo, pull, mergeable)
            else:
                data["mergeable_state"] = "unknown"
            if base:
                merge_base = gitstore.out(repo.path, "merge-base", base, pull.head_sha, ok=(0, 1)) or base
                data["commits"] = int(gitstore.out(repo.path, "rev-list", "--count", f"{merge_base}..{pull.head_sha}"))
                names = gitstore.out(repo.path, "diff", "--name-only", merge_base, pull.head_sha)
                data["changed_files"] = len(names.split()) if names else 0
        return data

    def _mergeable_state(self, repo: Repo, pull: Pull, mergeable: bool) -> str:
        if pull.draft:
            return "draft"
        if not mergeable:
            return "dirty"
        return "clean" if not self._missing_checks(repo, pull) else "blocked"

    def _missing_checks(self, repo: Repo, pull: Pull) -> list[str]:
        """Required checks of the base branch not passing on the head."""
        required = repo.required_checks.get(pull.base_ref, [])
        latest: dict[str, CheckRun] = {}
        for run in self._check_runs.values():
            if run.repo == repo.key and run.head_sha == pull.head_sha:
                latest[run.name] = run            # ids grow: the last one wins
        return [name for name in required
                if name not in latest or latest[name].status != "completed" or latest[name].conclusion not in PASSING]

    def _issue_json(self, thread: Pull | Issue) -> dict[str, Any]:
        if isinstance(thread, Issue):
            return self._plain_issue_json(thread)
        pull = thread
        repo = self._repos[pull.repo]
        pr = self._pull_json(pull)
        api = f"{self.api_url}/repos/{repo.full_name}"
        keys = ("html_url", "number", "state", "locked", "title", "user", "labels", "assignee", "assignees",
                "milestone", "comments", "created_at", "updated_at", "closed_at", "author_association",
                "active_lock_reason", "body", "draft")
        data = {k: pr[k] for k in keys}
        data.update({"url": f"{api}/issues/{pull.number}", "repository_url": api,
                     "labels_url": f"{api}/issues/{pull.number}/labels{{/name}}",
                     "comments_url": f"{api}/issues/{pull.number}/comments",
                     "events_url": f"{api}/issues/{pull.number}/events", "id": pull.id + 500000,
                     "node_id": node_id("I", pull.id), "state_reason": None,
                     "reactions": self._reactions_summary(f"{api}/issues/{pull.number}/reactions", []),
                     "pull_request": {"url": pr["url"], "html_url": pr["html_url"], "diff_url": pr["diff_url"],
                                      "patch_url": pr["patch_url"], "merged_at": pr["merged_at"]}})
        return data

    def _plain_issue_json(self, issue: Issue) -> dict[str, Any]:
        """An issue as GitHub serves it: no `pull_request` key (that key is how clients tell a PR)."""
        repo = self._repos[issue.repo]
        api = f"{self.api_url}/repos/{repo.full_name}"
        n = issue.number
        return {"url": f"{api}/issues/{n}", "repository_url": api, "labels_url": f"{api}/issues/{n}/labels{{/name}}",
                "comments_url": f"{api}/issues/{n}/comments", "events_url": f"{api}/issues/{n}/events",
                "html_url": f"{self.web_url}/{repo.full_name}/issues/{n}", "id": issue.id,
                "node_id": node_id("I", issue.id), "number": n, "title": issue.title,
                "user": self._user_json(issue.user),
                "labels": [self._label_json(repo, repo.labels[name]) for name in issue.labels],
                "state": issue.state, "locked": False, "assignee": None, "assignees": [], "milestone": None,
                "comments": sum(1 for c in self._comments.values() if c.repo == repo.key and c.number == n),
                "created_at": iso(issue.created_at), "updated_at": iso(issue.updated_at),
                "closed_at": iso(issue.closed_at), "author_association": self._association(repo, issue.user),
                "active_lock_reason": None, "body": issue.body, "draft": False, "state_reason": None,
                "reactions": self._reactions_summary(f"{api}/issues/{n}/reactions", [])}

    @staticmethod
    def _reactions_summary(url: str, reactions: list[Reaction]) -> dict[str, Any]:
        summary: dict[str, Any] = {"url": url, "total_count": len(reactions)}
        for content in REACTIONS:
            summary[content] = sum(1 for r in reactions if r.content == content)
        return summary

    def _comment_json(self, c: Comment) -> dict[str, Any]:
        repo = self._repos[c.repo]
        api = f"{self.api_url}/repos/{repo.full_name}"
        page = "issues" if c.number in self._issues[repo.key] else "pull"
        return {"url": f"{api}/issues/comments/{c.id}",
                "html_url": f"{self.web_url}/{repo.full_name}/{page}/{c.number}#issuecomment-{c.id}",
                "issue_url": f"{api}/issues/{c.number}", "id": c.id, "node_id": node_id("IC", c.id),
                "user": self._user_json(c.user), "created_at": iso(c.created_at), "updated_at": iso(c.updated_at),
                "author_association": self._association(repo, c.user), "body": c.body,
                "reactions": self._reactions_summary(f"{api}/issues/comments/{c.id}/reactions", c.reactions),
                "performed_via_github_app": self._app_json() if c.via_app else None}

    def _reaction_json(self, r: Reaction) -> dict[str, Any]:
        return {"id": r.id, "node_id": node_id("REA", r.id), "user": self._user_json(r.user),
                "content": r.content, "created_at": iso(r.created_at)}

    def _check_run_json(self, run: CheckRun) -> dict[str, Any]:
        repo = self._repos[run.repo]
        api = f"{self.api_url}/repos/{repo.full_name}"
        pulls = [p for p in self._pulls[repo.key].values() if p.head_sha == run.head_sha and p.state == "open"]
        return {"id": run.id, "node_id": node_id("CR", run.id), "head_sha": run.head_sha,
                "external_id": run.external_id, "url": f"{api}/check-runs/{run.id}",
                "html_url": f"{self.web_url}/{repo.full_name}/runs/{run.id}", "details_url": run.details_url,
                "status": run.status, "conclusion": run.conclusion, "started_at": iso(run.started_at),
                "completed_at": iso(run.completed_at), "name": run.name,
                "output": {"title": run.output.get("title"), "summary": run.output.get("summary"),
                           "text": run.output.get("text"), "annotations_count": len(run.annotations),
                           "annotations_url": f"{api}/check-runs/{run.id}/annotations"},
                "check_suite": {"id": run.suite_id}, "app": self._app_json(),
                "pull_requests": [{"url": f"{api}/pulls/{p.number}", "id": p.id, "number": p.number,
                                   "head": {"ref": p.head_ref, "sha": p.head_sha},
                                   "base": {"ref": p.base_ref, "sha": self._base_sha(repo, p)}} for p in pulls]}

    def _deployment_json(self, d: Deployment) -> dict[str, Any]:
        repo = self._repos[d.repo]
        api = f"{self.api_url}/repos/{repo.full_name}"
        return {"url": f"{api}/deployments/{d.id}", "id": d.id, "node_id": node_id("DE", d.id), "sha": d.sha,
                "ref": d.ref, "task": d.task, "payload": d.payload, "original_environment": d.environment,
                "environment": d.environment, "description": d.description, "creator": self._user_json(d.creator),
                "created_at": iso(d.created_at), "updated_at": iso(d.created_at),
                "statuses_url": f"{api}/deployments/{d.id}/statuses", "repository_url": api,
                "transient_environment": d.transient_environment,
                "production_environment": d.production_environment, "performed_via_github_app": self._app_json()}

    def _deployment_status_json(self, d: Deployment, s: DeploymentStatus) -> dict[str, Any]:
        repo = self._repos[d.repo]
        api = f"{self.api_url}/repos/{repo.full_name}"
        return {"url": f"{api}/deployments/{d.id}/statuses/{s.id}", "id": s.id, "node_id": node_id("DES", s.id),
                "state": s.state, "creator": self._user_json(s.creator), "description": s.description,
                "environment": s.environment, "target_url": s.log_url, "log_url": s.log_url,
                "environment_url": s.environment_url, "created_at": iso(s.created_at),
                "updated_at": iso(s.created_at), "deployment_url": f"{api}/deployments/{d.id}",
                "repository_url": api, "performed_via_github_app": self._app_json()}

    # ------------------------------------------------------------------ REST routing
    def _route_table(self) -> list[tuple[str, re.Pattern[str], Callable[..., Response]]]:
        repo = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
        table: list[tuple[str, str, Callable[..., Response]]] = [
            ("GET", r"/app", self._get_app),
            ("GET", r"/app/installations", self._list_installations),
            ("GET", r"/app/installations/(?P<iid>\d+)", self._get_installation),
            ("POST", r"/app/installations/(?P<iid>\d+)/access_tokens", self._create_token),
            ("GET", repo + r"/installation", self._repo_installation),
            ("GET", r"/installation/repositories", self._installation_repositories),
            ("GET", r"/rate_limit", self._rate_limit),
            ("GET", r"/user", self._get_signed_in_user),
            ("GET", r"/user/installations", self._user_installations),
            ("GET", r"/user/installations/(?P<iid>\d+)/repositories", self._user_installation_repositories),
            ("GET", r"/users/(?P<login>[^/]+)", self._get_user),
            ("GET", repo, self._get_repo),
            ("GET", repo + r"/branches", self._list_branches),
            ("GET", repo + r"/branches/(?P<branch>.+)", self._get_branch),
            ("GET", repo + r"/git/ref/(?P<ref>.+)", self._get_ref),
            ("GET", repo + r"/git/matching-refs/(?P<ref>.*)", self._matching_refs),
            ("GET", repo + r"/contents/?(?P<path>.*)", self._get_contents),
            ("GET", repo + r"/pulls", self._list_pulls),
            ("POST", repo + r"/pulls", self._post_pull),
            ("GET", repo + r"/pulls/(?P<number>\d+)", self._get_pull),
            ("PATCH", repo + r"/pulls/(?P<number>\d+)", self._patch_pull),
            ("GET", repo + r"/pulls/(?P<number>\d+)/merge", self._get_merged),
            ("PUT", repo + r"/pulls/(?P<number>\d+)/merge", self._put_merge),
            ("POST", repo + r"/issues", self._post_issue),
            ("GET", repo + r"/issues/(?P<number>\d+)", self._get_issue),
            ("GET", repo + r"/labels", self._list_repo_labels),
            ("GET", repo + r"/issues/(?P<number>\d+)/labels", self._list_labels),
            ("POST", repo + r"/issues/(?P<number>\d+)/labels", self._add_labels),
            ("DELETE", repo + r"/issues/(?P<number>\d+)/labels/(?P<label>.+)", self._remove_label),
            ("GET", repo + r"/issues/(?P<number>\d+)/comments", self._list_comments),
            ("POST", repo + r"/issues/(?P<number>\d+)/comments", self._post_comment),
            ("GET", repo + r"/issues/comments/(?P<cid>\d+)", self._get_comment),
            ("PATCH", repo + r"/issues/comments/(?P<cid>\d+)", self._patch_comment),
            ("DELETE", repo + r"/issues/comments/(?P<cid>\d+)", self._delete_comment),
            ("GET", repo + r"/issues/comments/(?P<cid>\d+)/reactions", self._list_reactions),
            ("POST", repo + r"/issues/comments/(?P<cid>\d+)/reactions", self._post_reaction),
            ("POST", repo + r"/check-runs", self._post_check_run),
            ("GET", repo + r"/check-runs/(?P<rid>\d+)", self._get_check_run),
            ("PATCH", repo + r"/check-runs/(?P<rid>\d+)", self._patch_check_run),
            ("GET", repo + r"/check-runs/(?P<rid>\d+)/annotations", self._list_annotations),
            ("GET", repo + r"/commits/(?P<ref>.+)/check-runs", self._list_check_runs),
            ("GET", repo + r"/deployments", self._list_deployments),
            ("POST", repo + r"/deployments", self._post_deployment),
            ("GET", repo + r"/deployments/(?P<did>\d+)", self._get_deployment),
            ("GET", repo + r"/deployments/(?P<did>\d+)/statuses", self._list_deployment_statuses),
            ("POST", repo + r"/deployments/(?P<did>\d+)/statuses", self._post_deployment_status),
            ("GET", repo + r"/collaborators/(?P<login>[^/]+)/permission", self._permission),
            ("GET", r"/orgs/(?P<org>[^/]+)/teams/(?P<slug>[^/]+)/memberships/(?P<login>[^/]+)", self._membership),
        ]
        return [(method, re.compile(pattern + "$"), handler) for method, pattern, handler in table]

    def _dispatch(self, request: Request, rel: str, actor: _Actor) -> Response:
        allowed = False
        for method, pattern, handler in self._routes:
            m = pattern.match(rel)
            if m is None:
                continue
            allowed = True
            if method == request.method:
                with self._lock:
                    return handler(request, actor, **m.groupdict())
        if allowed:
            raise ApiError(404, "Not Found")        # GitHub answers an unknown method with 404 too
        raise ApiError(404, "Not Found")

    @staticmethod
    def _body(request: Request) -> Any:
        data = request.get_data()
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError:
            raise ApiError(400, "Problems parsing JSON") from None

    def _page(self, request: Request, items: list[Any], wrap: str | None = None,
              total: int | None = None) -> Response:
        try:
            per_page = max(1, min(int(request.args.get("per_page", 30)), 100))
            page = max(1, int(request.args.get("page", 1)))
        except ValueError:
            raise ApiError(422, "Invalid pagination parameters") from None
        chunk = items[(page - 1) * per_page: page * per_page]
        last = max(1, math.ceil(len(items) / per_page))
        links = []
        base = f"{self.web_url}{request.path}"

        def url(p: int) -> str:
            args = {k: v for k, v in request.args.items() if k != "page"}
            args["page"] = str(p)
            return f"{base}?{urlencode(args)}"
        if page < last:
            links += [f'<{url(page + 1)}>; rel="next"', f'<{url(last)}>; rel="last"']
        if page > 1:
            links += [f'<{url(page - 1)}>; rel="prev"', f'<{url(1)}>; rel="first"']
        headers = {"Link": ", ".join(links)} if links else {}
        body: Any = chunk if wrap is None else {"total_count": len(items) if total is None else total, wrap: chunk}
        return self._json(200, body, headers)

    # ------------------------------------------------------------------ App endpoints (JWT)
    @staticmethod
    def _need_app(actor: _Actor) -> None:
        if actor.kind != "app":
            raise ApiError(401, "A JSON web token could not be decoded")

    def _get_app(self, request: Request, actor: _Actor) -> Response:
        self._need_app(actor)
        return self._json(200, self._app_json())

    def _list_installations(self, request: Request, actor: _Actor) -> Response:
        self._need_app(actor)
        return self._page(request, [self._installation_json(i) for i in self._installations.values()])

    def _get_installation(self, request: Request, actor: _Actor, iid: str) -> Response:
        self._need_app(actor)
        inst = self._installations.get(int(iid))
        if inst is None:
            raise ApiError(404, "Not Found")
        return self._json(200, self._installation_json(inst))

    def _create_token(self, request: Request, actor: _Actor, iid: str) -> Response:
        self._need_app(actor)
        inst = self._installations.get(int(iid))
        if inst is None:
            raise ApiError(404, "Not Found")
        value = "ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36]
        token = Token(value, inst.id, self.now() + self.token_lifetime)
        self._tokens[value] = token
        self.tokens_issued += 1
        return self._json(201, {"token": value, "expires_at": iso(token.expires_at),
                                "permissions": self._app_json()["permissions"],
                                "repository_selection": "all" if inst.repos is None else "selected"})

    def _repo_installation(self, request: Request, actor: _Actor, owner: str, name: str) -> Response:
        self._need_app(actor)
        repo = self._repos.get(f"{owner}/{name}".lower())
        inst = self._installation_of(repo) if repo else None
        if inst is None:
            raise ApiError(404, "Not Found")
        return self._json(200, self._installation_json(inst))

    # ------------------------------------------------------------------ installation endpoints
    def _installation_repositories(self, request: Request, actor: _Actor) -> Response:
        if actor.installation is None:
            raise ApiError(403, "This endpoint requires an installation access token")
        repos = [self._repo_json(r, full=True) for r in self._installed_repos(actor.installation)]
        return self._page(request, repos, wrap="repositories")

    # ------------------------------------------------------------------ GitHub sign-in (OAuth web flow)
    def _oauth(self, request: Request, path: str) -> Response:
        """`GET /login/oauth/authorize`: the signed-in person approves at once (a redirect to the
        App's callback with a one-time code and the App's state); `POST /login/oauth/access_token`:
        the code for a user token (GitHub answers a bad code with 200 and an `error`)."""
        if path == "/login/oauth/authorize" and request.method == "GET":
            if request.args.get("client_id") != self.client_id:
                return Response("unknown client", status=404)
            redirect_uri = request.args.get("redirect_uri", "")
            with self._lock:
                login = self.signed_in
                if login is None:
                    return Response("sign in to the fake GitHub first (FakeGitHub.signed_in)", status=401)
                code = secrets.token_hex(10)
                self._codes[code] = (login, redirect_uri)
            sep = "&" if "?" in redirect_uri else "?"
            query = urlencode({"code": code, "state": request.args.get("state", "")})
            return Response(status=302, headers={"Location": f"{redirect_uri}{sep}{query}"})
        if path == "/login/oauth/access_token" and request.method == "POST":
            form = request.form if request.form else (self._body(request) or {})
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                return self._json(200, {"error": "incorrect_client_credentials"})
            with self._lock:
                found = self._codes.pop(str(form.get("code", "")), None)      # one use only
                if found is None:
                    return self._json(200, {"error": "bad_verification_code"})
                token = "ghu_" + secrets.token_hex(18)
                self._user_tokens[token] = found[0]
            return self._json(200, {"access_token": token, "token_type": "bearer", "scope": ""})
        return Response("not found", status=404)

    def _can_read(self, login: str, repo: Repo) -> bool:
        role = repo.collaborators.get(login.lower(), "none")
        return not repo.private or repo.owner.login.lower() == login.lower() or role != "none"

    def _need_user(self, actor: _Actor) -> User:
        if actor.kind != "user" or actor.user is None:
            raise ApiError(403, "You must authenticate with an access token authorized to a GitHub App")
        return actor.user

    def _get_signed_in_user(self, request: Request, actor: _Actor) -> Response:
        return self._json(200, self._user_json(self._need_user(actor)))

    def _user_installations(self, request: Request, actor: _Actor) -> Response:
        user = self._need_user(actor)
        found = [self._installation_json(i) for i in self._installations.values()
                 if any(self._can_read(user.login, r) for r in self._installed_repos(i))]
        return self._page(request, found, wrap="installations")

    def _user_installation_repositories(self, request: Request, actor: _Actor, iid: str) -> Response:
        user = self._need_user(actor)
        inst = self._installations.get(int(iid))
        if inst is None:
            raise ApiError(404, "Not Found")
        repos = [self._repo_json(r, full=True) for r in self._installed_repos(inst) if self._can_read(user.login, r)]
        if not repos:
            raise ApiError(404, "Not Found")
        return self._page(request, repos, wrap="repositories")

    def _rate_limit(self, request: Request, actor: _Actor) -> Response:
        inst = actor.installation
        core = {"limit": inst.rate_limit if inst else 5000, "remaining": inst.rate_remaining if inst else 5000,
                "reset": int(inst.rate_reset) if inst else 0, "used": 0}
        return self._json(200, {"resources": {"core": core, "graphql": core}, "rate": core})

    def _get_user(self, request: Request, actor: _Actor, login: str) -> Response:
        user = self._users.get(login.lower())
        if user is None:
            raise ApiError(404, "Not Found")
        return self._json(200, self._user_json(user))

    def _get_repo(self, request: Request, actor: _Actor, owner: str, name: str) -> Response:
        return self._json(200, self._repo_json(self._visible(actor, owner, name), full=True))

    def _branch_json(self, repo: Repo, branch: str, sha: str) -> dict[str, Any]:
        api = f"{self.api_url}/repos/{repo.full_name}"
        return {"name": branch, "commit": {"sha": sha, "url": f"{api}/commits/{sha}"},
                "protected": branch in repo.required_checks}

    def _list_branches(self, request: Request, actor: _Actor, owner: str, name: str) -> Response:
        repo = self._visible(actor, owner, name)
        heads = sorted((ref[11:], sha) for ref, sha in gitstore.refs(repo.path).items()
                       if ref.startswith("refs/heads/"))
        return self._page(request, [self._branch_json(repo, b, s) for b, s in heads])

    def _get_branch(self, request: Request, actor: _Actor, owner: str, name: str, branch: str) -> Response:
        repo = self._visible(actor, owner, name)
        sha = self._branch_tip(repo, branch)
        if sha is None:
            raise ApiError(404, "Branch not found")
        return self._json(200, self._branch_json(repo, branch, sha))

    def _ref_json(self, repo: Repo, ref: str, sha: str) -> dict[str, Any]:
        return {"ref": ref, "node_id": node_id("REF", abs(hash(ref)) % 10**9),
                "url": f"{self.api_url}/repos/{repo.full_name}/git/{ref}",
                "object": {"type": "commit", "sha": sha,
                           "url": f"{self.api_url}/repos/{repo.full_name}/git/commits/{sha}"}}

    def _get_ref(self, request: Request, actor: _Actor, owner: str, name: str, ref: str) -> Response:
        repo = self._visible(actor, owner, name)
        full = f"refs/{ref}"
        sha = gitstore.refs(repo.path).get(full)
        if sha is None:
            raise ApiError(404, "Not Found")
        return self._json(200, self._ref_json(repo, full, sha))

    def _matching_refs(self, request: Request, actor: _Actor, owner: str, name: str, ref: str) -> Response:
        repo = self._visible(actor, owner, name)
        refs = sorted((r, s) for r, s in gitstore.refs(repo.path).items() if r.startswith(f"refs/{ref}"))
        return self._json(200, [self._ref_json(repo, r, s) for r, s in refs])

    def _get_contents(self, request: Request, actor: _Actor, owner: str, name: str, path: str) -> Response:
        repo = self._visible(actor, owner, name)
        ref = request.args.get("ref") or repo.default_branch
        sha = gitstore.ref_sha(repo.path, ref)
        if sha is None:
            raise ApiError(404, f"No commit found for the ref {ref}")
        path = path.strip("/")
        api = f"{self.api_url}/repos/{repo.full_name}/contents"
        entries = gitstore.tree_entries(repo.path, sha, path)
        if entries is not None:
            listing = [{"type": "dir" if kind == "tree" else "symlink" if mode == "120000" else "file",
                        "name": entry, "path": f"{path}/{entry}" if path else entry, "sha": oid,
                        "url": f"{api}/{path + '/' if path else ''}{entry}?ref={ref}"}
                       for mode, kind, oid, entry in entries]
            return self._json(200, listing)
        data = gitstore.read_blob(repo.path, sha, path)
        if data is None:
            raise ApiError(404, "Not Found")
        oid = gitstore.out(repo.path, "rev-parse", f"{sha}:{path}")
        return self._json(200, {"type": "file", "encoding": "base64", "size": len(data),
                                "name": path.rsplit("/", 1)[-1], "path": path, "sha": oid,
                                "content": base64.encodebytes(data).decode(), "url": f"{api}/{path}?ref={ref}",
                                "html_url": f"{self.web_url}/{repo.full_name}/blob/{ref}/{path}",
                                "download_url": None})

    # ------------------------------------------------------------------ pull requests
    def _pull(self, repo: Repo, number: int | str) -> Pull:
        pull = self._pulls[repo.key].get(int(number))
        if pull is None:
            raise ApiError(404, "Not Found")
        return pull

    def _list_pulls(self, request: Request, actor: _Actor, owner: str, name: str) -> Response:
        repo = self._visible(actor, owner, name)
        state = request.args.get("state", "open")
        pulls = [p for p in self._pulls[repo.key].values() if state == "all" or p.state == state]
        head = request.args.get("head")
        if head and ":" in head:                 # GitHub ignores a head filter without "owner:"
            head_owner, _, head_ref = head.partition(":")
            pulls = [p for p in pulls if p.head_ref == head_ref and p.head_repo is not None
                     and self._repos[p.head_repo].owner.login.lower() == head_owner.lower()]
        base = request.args.get("base")
        if base:
            pulls = [p for p in pulls if p.base_ref == base]
        sort = request.args.get("sort", "created")
        direction = request.args.get("direction", "desc" if sort == "created" else "asc")
        key = {"updated": lambda p: p.updated_at}.get(sort, lambda p: p.number)
        pulls.sort(key=key, reverse=direction == "desc")
        return self._page(request, [self._pull_json(p) for p in pulls])

    def _post_pull(self, request: Request, actor: _Actor, owner: str, name: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        body = self._body(request)
        if not body.get("title"):
            raise _validation({"resource": "PullRequest", "code": "missing_field", "field": "title"})
        head = str(body.get("head") or "")
        if not head:
            raise _validation({"resource": "PullRequest", "code": "missing_field", "field": "head"})
        head_repo = repo
        if ":" in head:
            head_owner, _, head = head.partition(":")
            if head_owner.lower() != repo.owner.login.lower():
                found = [r for r in self._repos.values() if r.owner.login.lower() == head_owner.lower()
                         and (r.parent == repo.key or r.key == repo.key)]
                if not found:
                    raise _validation({"resource": "PullRequest", "field": "head", "code": "invalid"})
                head_repo = found[0]
        assert actor.user is not None
        pull = self._create_pull(repo, actor.user, str(body["title"]), body.get("body"), head_repo, head,
                                 str(body.get("base") or ""), bool(body.get("draft", False)),
                                 bool(body.get("maintainer_can_modify", False)))
        return self._json(201, self._pull_json(pull, detail=True))

    def _create_pull(self, repo: Repo, author: User, title: str, body: str | None, head_repo: Repo, head: str,
                     base: str, draft: bool, maintainer_can_modify: bool = False) -> Pull:
        if body is not None and len(body) > MAX_BODY:
            raise _validation({"resource": "PullRequest", "code": "custom", "field": "body",
                               "message": f"body is too long (maximum is {MAX_BODY} characters)"})
        base_sha = self._branch_tip(repo, base) if base else None
        if base_sha is None:
            raise _validation({"resource": "PullRequest", "field": "base", "code": "invalid"})
        head_sha = self._branch_tip(head_repo, head)
        if head_sha is None:
            raise _validation({"resource": "PullRequest", "field": "head", "code": "invalid"})
        for other in self._pulls[repo.key].values():
            if (other.state == "open" and other.head_repo == head_repo.key and other.head_ref == head
                    and other.base_ref == base):
                raise _validation({"resource": "PullRequest", "code": "custom",
                                   "message": f"A pull request already exists for {head_repo.owner.login}:{head}."})
        if head_repo is not repo:
            gitstore.fetch_local(repo.path, head_repo.path, f"refs/heads/{head}", "refs/prbot-fake/incoming")
        if gitstore.is_ancestor(repo.path, head_sha, base_sha):
            raise _validation({"resource": "PullRequest", "code": "custom",
                               "message": f"No commits between {base} and {head}"})
        number = repo.next_number
        repo.next_number += 1
        now = self.now()
        pull = Pull(self._next_id(), number, repo.key, title, body, author, head_repo.key, head, head_sha, base,
                    now, now, draft=draft, maintainer_can_modify=maintainer_can_modify)
        self._pulls[repo.key][number] = pull
        self._update_pull_ref(repo, pull)
        self._emit_pull(repo, pull, "opened", author)
        return pull

    def _update_pull_ref(self, repo: Repo, pull: Pull) -> None:
        """GitHub keeps every PR's head as refs/pull/N/head in the base repository."""
        ref = f"refs/pull/{pull.number}/head"
        if pull.head_repo == repo.key:
            gitstore.update_ref(repo.path, ref, pull.head_sha)
        elif pull.head_repo is not None:
            gitstore.fetch_local(repo.path, self._repos[pull.head_repo].path, pull.head_sha, ref)

    def _get_pull(self, request: Request, actor: _Actor, owner: str, name: str, number: str) -> Response:
        repo = self._visible(actor, owner, name)
        return self._json(200, self._pull_json(self._pull(repo, number), detail=True))

    def _patch_pull(self, request: Request, actor: _Actor, owner: str, name: str, number: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        pull = self._pull(repo, number)
        body = self._body(request)
        assert actor.user is not None
        changes: dict[str, Any] = {}
        if "body" in body and body["body"] is not None and len(body["body"]) > MAX_BODY:
            raise _validation({"resource": "PullRequest", "code": "custom", "field": "body",
                               "message": f"body is too long (maximum is {MAX_BODY} characters)"})
        for field_name in ("title", "body"):
            if field_name in body and body[field_name] != getattr(pull, field_name):
                changes[field_name] = {"from": getattr(pull, field_name)}
                setattr(pull, field_name, body[field_name])
        if "base" in body and body["base"] != pull.base_ref:
            if self._branch_tip(repo, body["base"]) is None:
                raise _validation({"resource": "PullRequest", "field": "base", "code": "invalid"})
            changes["base"] = {"ref": {"from": pull.base_ref}}
            pull.base_ref = body["base"]
        if changes:
            pull.updated_at = self.now()
            self._emit_pull(repo, pull, "edited", actor.user, changes=changes)
        state = body.get("state")
        if state in ("open", "closed") and state != pull.state:
            self._set_state(repo, pull, state, actor.user)
        elif state not in (None, "open", "closed"):
            raise _validation({"resource": "PullRequest", "field": "state", "code": "invalid"})
        return self._json(200, self._pull_json(pull, detail=True))

    def _set_state(self, repo: Repo, pull: Pull, state: str, user: User) -> None:
        if pull.merged:
            raise _validation({"resource": "PullRequest", "code": "custom",
                               "message": "Cannot change the state of a merged pull request"})
        if state == "open":
            head_repo = self._repos.get(pull.head_repo or "")
            if head_repo is None or self._branch_tip(head_repo, pull.head_ref) is None:
                raise _validation({"resource": "PullRequest", "code": "custom",
                                   "message": "state cannot be changed. The head branch was deleted."})
            pull.state, pull.closed_at, pull.base_sha = "open", None, None
            pull.head_sha = self._branch_tip(head_repo, pull.head_ref) or pull.head_sha
            self._update_pull_ref(repo, pull)
        else:
            pull.base_sha = self._base_sha(repo, pull)
            pull.state, pull.closed_at = "closed", self.now()
        pull.updated_at = self.now()
        self._emit_pull(repo, pull, "reopened" if state == "open" else "closed", user)

    def _get_merged(self, request: Request, actor: _Actor, owner: str, name: str, number: str) -> Response:
        pull = self._pull(self._visible(actor, owner, name), number)
        if not pull.merged:
            raise ApiError(404, "Not Found")
        return self._json(204, None)

    def _put_merge(self, request: Request, actor: _Actor, owner: str, name: str, number: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        pull = self._pull(repo, number)
        body = self._body(request)
        assert actor.user is not None
        sha = self._merge(repo, pull, actor.user, body.get("merge_method") or "merge", body.get("sha"),
                          body.get("commit_title"), body.get("commit_message"))
        return self._json(200, {"sha": sha, "merged": True, "message": "Pull Request successfully merged"})

    def _merge(self, repo: Repo, pull: Pull, user: User, method: str, expected: str | None, title: str | None,
               message: str | None) -> str:
        allowed = {"merge": repo.allow_merge_commit, "squash": repo.allow_squash_merge,
                   "rebase": repo.allow_rebase_merge}
        if method not in allowed:
            raise _validation({"resource": "PullRequest", "field": "merge_method", "code": "invalid"})
        if not allowed[method]:
            what = {"merge": "Merge commits", "squash": "Squash merges", "rebase": "Rebase merges"}[method]
            raise ApiError(405, f"{what} are not allowed on this repository.")
        if pull.state != "open":
            raise ApiError(405, "Pull Request is not mergeable")
        if pull.draft:
            raise ApiError(405, "Pull Request is still a draft")
        if expected is not None and expected != pull.head_sha:
            raise ApiError(409, "Head branch was modified. Review and try the merge again.")
        missing = self._missing_checks(repo, pull)
        if missing:
            raise ApiError(405, f'Required status check "{missing[0]}" is expected.')
        base_sha = self._branch_tip(repo, pull.base_ref)
        assert base_sha is not None
        tree = gitstore.merge_tree(repo.path, base_sha, pull.head_sha)
        if tree is None:
            raise ApiError(405, "Pull Request is not mergeable")
        head_repo = self._repos.get(pull.head_repo or "")
        label = f"{head_repo.owner.login if head_repo else 'unknown'}/{pull.head_ref}"
        committer = Person("GitHub", "noreply@github.com")
        if method == "merge":
            text = f"{title or f'Merge pull request #{pull.number} from {label}'}\n\n{message or pull.title}"
            parents = [base_sha, pull.head_sha]
        else:           # squash, and rebase (replayed as one commit: the fake keeps no per-commit replay)
            text = f"{title or f'{pull.title} (#{pull.number})'}\n\n{message or (pull.body or '')}".strip()
            parents = [base_sha]
        merge_sha = gitstore.commit_tree(repo.path, tree, parents, text, self._person(user), committer)
        if not gitstore.update_ref(repo.path, f"refs/heads/{pull.base_ref}", merge_sha, base_sha):
            raise ApiError(405, "Base branch was modified. Review and try the merge again.")
        now = self.now()
        pull.base_sha = base_sha
        pull.state, pull.merged, pull.merged_at, pull.closed_at, pull.updated_at = "closed", True, now, now, now
        pull.merged_by, pull.merge_commit_sha = user, merge_sha
        self._after_push(repo, {f"refs/heads/{pull.base_ref}": (base_sha, merge_sha)}, user)
        self._emit_pull(repo, pull, "closed", user)
        return merge_sha

    def _try_auto_merge(self, repo: Repo, pull: Pull) -> None:
        if pull.auto_merge is None or pull.state != "open" or self._missing_checks(repo, pull):
            return
        user = self._users[pull.auto_merge["enabled_by"]["login"].lower()]
        with contextlib.suppress(ApiError):     # GitHub leaves it pending when the merge cannot happen
            self._merge(repo, pull, user, pull.auto_merge["merge_method"], None, None, None)

    # ------------------------------------------------------------------ issues: labels, comments, reactions
    def _issue_or_pull(self, repo: Repo, number: int | str) -> Pull | Issue:
        """The PR or plain issue numbered `number` (one number sequence for both, as on GitHub)."""
        issue = self._issues[repo.key].get(int(number))
        return issue if issue is not None else self._pull(repo, number)

    def _get_issue(self, request: Request, actor: _Actor, owner: str, name: str, number: str) -> Response:
        repo = self._visible(actor, owner, name)
        return self._json(200, self._issue_json(self._issue_or_pull(repo, number)))

    def _post_issue(self, request: Request, actor: _Actor, owner: str, name: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        body = self._body(request)
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise _validation({"resource": "Issue", "code": "missing_field", "field": "title"})
        text = body.get("body")
        if text is not None and not isinstance(text, str):
            raise _validation({"resource": "Issue", "code": "invalid", "field": "body"})
        assert actor.user is not None
        issue = self._create_issue(repo, actor.user, title, text)
        return self._json(201, self._issue_json(issue))

    def _create_issue(self, repo: Repo, author: User, title: str, body: str | None) -> Issue:
        number = repo.next_number
        repo.next_number += 1
        now = self.now()
        issue = Issue(self._next_id(), number, repo.key, title, body, author, now, now)
        self._issues[repo.key][number] = issue
        self._emit("issues", {"action": "opened", "issue": self._issue_json(issue), "repository": self._repo_json(repo),
                              "sender": self._user_json(author)}, repo=repo)
        return issue

    def _list_repo_labels(self, request: Request, actor: _Actor, owner: str, name: str) -> Response:
        repo = self._visible(actor, owner, name)
        return self._page(request, [self._label_json(repo, lb) for lb in repo.labels.values()])

    def _list_labels(self, request: Request, actor: _Actor, owner: str, name: str, number: str) -> Response:
        repo = self._visible(actor, owner, name)
        names = self._issue_or_pull(repo, number).labels
        return self._page(request, [self._label_json(repo, repo.labels[n]) for n in names])

    def _add_labels(self, request: Request, actor: _Actor, owner: str, name: str, number: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        pull = self._issue_or_pull(repo, number)
        body = self._body(request)
        names = body.get("labels") if isinstance(body, dict) else body
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
            raise _validation({"resource": "Label", "field": "name", "code": "invalid"})
        for label_name in names:
            key = label_name.lower()
            if key not in repo.labels:             # GitHub creates labels it does not know yet
                repo.labels[key] = Label(self._next_id(), label_name)
            if key not in pull.labels:
                pull.labels.append(key)
        return self._json(200, [self._label_json(repo, repo.labels[n]) for n in pull.labels])

    def _remove_label(self, request: Request, actor: _Actor, owner: str, name: str, number: str,
                      label: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        pull = self._issue_or_pull(repo, number)
        if label.lower() not in pull.labels:
            raise ApiError(404, "Label does not exist")
        pull.labels.remove(label.lower())
        return self._json(200, [self._label_json(repo, repo.labels[n]) for n in pull.labels])

    def _list_comments(self, request: Request, actor: _Actor, owner: str, name: str, number: str) -> Response:
        repo = self._visible(actor, owner, name)
        self._issue_or_pull(repo, number)
        comments = [c for c in self._comments.values() if c.repo == repo.key and c.number == int(number)]
        return self._page(request, [self._comment_json(c) for c in sorted(comments, key=lambda c: c.id)])

    def _post_comment(self, request: Request, actor: _Actor, owner: str, name: str, number: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        body = self._body(request)
        assert actor.user is not None
        comment = self._create_comment(repo, int(number), body.get("body"), actor.user, via_app=True)
        return self._json(201, self._comment_json(comment))

    def _check_comment_body(self, text: Any) -> str:
        if not isinstance(text, str) or not text.strip():
            raise _validation({"resource": "IssueComment", "code": "missing_field", "field": "body"})
        if len(text) > MAX_BODY:
            raise _validation({"resource": "IssueComment", "code": "custom", "field": "body",
                               "message": f"body is too long (maximum is {MAX_BODY} characters)"})
        return text

    def _create_comment(self, repo: Repo, number: int, text: Any, user: User, *, via_app: bool) -> Comment:
        pull = self._issue_or_pull(repo, number)
        text = self._check_comment_body(text)
        now = self.now()
        comment = Comment(self._next_id(), repo.key, number, text, user, now, now, via_app=via_app)
        self._comments[comment.id] = comment
        self._emit("issue_comment", {"action": "created", "issue": self._issue_json(pull),
                                     "comment": self._comment_json(comment), "repository": self._repo_json(repo),
                                     "sender": self._user_json(user)}, repo=repo)
        return comment

    def _comment(self, repo: Repo, cid: str) -> Comment:
        comment = self._comments.get(int(cid))
        if comment is None or comment.repo != repo.key:
            raise ApiError(404, "Not Found")
        return comment

    def _get_comment(self, request: Request, actor: _Actor, owner: str, name: str, cid: str) -> Response:
        return self._json(200, self._comment_json(self._comment(self._visible(actor, owner, name), cid)))

    def _patch_comment(self, request: Request, actor: _Actor, owner: str, name: str, cid: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        comment = self._comment(repo, cid)
        assert actor.user is not None
        self._edit_comment(comment, self._body(request).get("body"), actor.user)
        return self._json(200, self._comment_json(comment))

    def _edit_comment(self, comment: Comment, text: Any, user: User) -> None:
        text = self._check_comment_body(text)
        old = comment.body
        comment.body, comment.updated_at = text, self.now()
        repo = self._repos[comment.repo]
        self._emit("issue_comment", {"action": "edited", "changes": {"body": {"from": old}},
                                     "issue": self._issue_json(self._issue_or_pull(repo, comment.number)),
                                     "comment": self._comment_json(comment), "repository": self._repo_json(repo),
                                     "sender": self._user_json(user)}, repo=repo)

    def _delete_comment(self, request: Request, actor: _Actor, owner: str, name: str, cid: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        comment = self._comment(repo, cid)
        del self._comments[comment.id]
        assert actor.user is not None
        thread = self._issue_or_pull(repo, comment.number)
        self._emit("issue_comment", {"action": "deleted", "issue": self._issue_json(thread),
                                     "comment": self._comment_json(comment), "repository": self._repo_json(repo),
                                     "sender": self._user_json(actor.user)}, repo=repo)
        return self._json(204, None)

    def _list_reactions(self, request: Request, actor: _Actor, owner: str, name: str, cid: str) -> Response:
        comment = self._comment(self._visible(actor, owner, name), cid)
        content = request.args.get("content")
        return self._page(request, [self._reaction_json(r) for r in comment.reactions
                                    if content is None or r.content == content])

    def _post_reaction(self, request: Request, actor: _Actor, owner: str, name: str, cid: str) -> Response:
        comment = self._comment(self._visible(actor, owner, name, write=True), cid)
        content = self._body(request).get("content")
        if content not in REACTIONS:
            raise _validation({"resource": "Reaction", "code": "invalid", "field": "content"})
        assert actor.user is not None
        for existing in comment.reactions:
            if existing.user.id == actor.user.id and existing.content == content:
                return self._json(200, self._reaction_json(existing))
        reaction = Reaction(self._next_id(), actor.user, content, self.now())
        comment.reactions.append(reaction)
        return self._json(201, self._reaction_json(reaction))

    # ------------------------------------------------------------------ check runs
    def _check_output(self, output: Any, run: CheckRun | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        if not isinstance(output, dict):
            raise _validation({"resource": "CheckRun", "code": "invalid", "field": "output"})
        if run is None and (not output.get("title") or not output.get("summary")):
            raise _validation({"resource": "CheckRun", "code": "missing_field", "field": "output.summary"})
        for field_name in ("summary", "text"):
            text = output.get(field_name)
            if isinstance(text, str) and len(text) > MAX_CHECK_TEXT:
                raise ApiError(422, f"Invalid request.\n\nOnly {MAX_CHECK_TEXT} characters are allowed; "
                                    f"{len(text)} were supplied.")
        annotations = output.get("annotations") or []
        if len(annotations) > MAX_ANNOTATIONS:
            raise ApiError(422, f"Invalid request.\n\nOnly {MAX_ANNOTATIONS} annotations are allowed per request; "
                                f"{len(annotations)} were supplied.")
        for a in annotations:
            if (not isinstance(a, dict) or not a.get("path") or not isinstance(a.get("start_line"), int)
                    or not isinstance(a.get("end_line"), int) or not a.get("message")
                    or a.get("annotation_level") not in ("notice", "warning", "failure")):
                raise ApiError(422, "Invalid request.\n\nInvalid annotation: path, start_line, end_line, "
                                    "annotation_level (notice, warning, failure) and message are required.")
        kept = {k: output[k] for k in ("title", "summary", "text") if k in output}
        return kept, [dict(a) for a in annotations]

    def _apply_check(self, run: CheckRun, body: dict[str, Any]) -> None:
        if "output" in body:
            kept, annotations = self._check_output(body["output"], run if run.id else None)
            run.output.update(kept)
            run.annotations.extend(annotations)
        for key in ("details_url", "external_id", "name"):
            if key in body:
                setattr(run, key, body[key])
        conclusion = body.get("conclusion")
        status = body.get("status")
        if conclusion is not None and conclusion not in CONCLUSIONS:
            raise _validation({"resource": "CheckRun", "code": "invalid", "field": "conclusion"})
        if status is not None and status not in ("queued", "in_progress", "completed"):
            raise _validation({"resource": "CheckRun", "code": "invalid", "field": "status"})
        if status == "completed" and conclusion is None and run.conclusion is None:
            raise _validation({"resource": "CheckRun", "code": "missing_field", "field": "conclusion"})
        if conclusion is not None:
            run.conclusion, run.status, run.completed_at = conclusion, "completed", self.now()
        elif status is not None:
            run.status = status

    def _post_check_run(self, request: Request, actor: _Actor, owner: str, name: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        body = self._body(request)
        if not body.get("name"):
            raise _validation({"resource": "CheckRun", "code": "missing_field", "field": "name"})
        head_sha = str(body.get("head_sha") or "")
        if not re.fullmatch(r"[0-9a-f]{40}", head_sha) or gitstore.ref_sha(repo.path, head_sha) is None:
            raise ApiError(422, f"No commit found for SHA: {head_sha}")
        run = CheckRun(0, repo.key, head_sha, str(body["name"]), "queued", None, self.now(), None, {},
                       suite_id=abs(hash((repo.key, head_sha))) % 10**8)
        self._apply_check(run, body)
        run.id = self._next_id()
        self._check_runs[run.id] = run
        self._checks_changed(repo, run)
        return self._json(201, self._check_run_json(run))

    def _check_run(self, repo: Repo, rid: str) -> CheckRun:
        run = self._check_runs.get(int(rid))
        if run is None or run.repo != repo.key:
            raise ApiError(404, "Not Found")
        return run

    def _get_check_run(self, request: Request, actor: _Actor, owner: str, name: str, rid: str) -> Response:
        return self._json(200, self._check_run_json(self._check_run(self._visible(actor, owner, name), rid)))

    def _patch_check_run(self, request: Request, actor: _Actor, owner: str, name: str, rid: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        run = self._check_run(repo, rid)
        self._apply_check(run, self._body(request))
        self._checks_changed(repo, run)
        return self._json(200, self._check_run_json(run))

    def _checks_changed(self, repo: Repo, run: CheckRun) -> None:
        if run.status == "completed":
            for pull in list(self._pulls[repo.key].values()):
                if pull.head_sha == run.head_sha:
                    self._try_auto_merge(repo, pull)

    def _list_annotations(self, request: Request, actor: _Actor, owner: str, name: str, rid: str) -> Response:
        run = self._check_run(self._visible(actor, owner, name), rid)
        return self._page(request, run.annotations)

    def _list_check_runs(self, request: Request, actor: _Actor, owner: str, name: str, ref: str) -> Response:
        repo = self._visible(actor, owner, name)
        sha = gitstore.ref_sha(repo.path, ref)
        if sha is None:
            raise ApiError(422, f"No commit found for SHA: {ref}")
        runs = sorted((r for r in self._check_runs.values() if r.repo == repo.key and r.head_sha == sha),
                      key=lambda r: -r.id)
        check_name = request.args.get("check_name")
        if check_name:
            runs = [r for r in runs if r.name == check_name]
        status = request.args.get("status")
        if status:
            runs = [r for r in runs if r.status == status]
        if request.args.get("filter", "latest") == "latest":
            seen: set[str] = set()
            runs = [r for r in runs if not (r.name in seen or seen.add(r.name))]   # type: ignore[func-returns-value]
        return self._page(request, [self._check_run_json(r) for r in runs], wrap="check_runs")

    # ------------------------------------------------------------------ deployments
    def _deployment(self, repo: Repo, did: str) -> Deployment:
        d = self._deployments.get(int(did))
        if d is None or d.repo != repo.key:
            raise ApiError(404, "Not Found")
        return d

    def _list_deployments(self, request: Request, actor: _Actor, owner: str, name: str) -> Response:
        repo = self._visible(actor, owner, name)
        found = [d for d in self._deployments.values() if d.repo == repo.key]
        for key in ("environment", "sha", "ref", "task"):
            if request.args.get(key):
                found = [d for d in found if getattr(d, key) == request.args[key]]
        found.sort(key=lambda d: -d.id)
        return self._page(request, [self._deployment_json(d) for d in found])

    def _post_deployment(self, request: Request, actor: _Actor, owner: str, name: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        body = self._body(request)
        ref = str(body.get("ref") or "")
        sha = gitstore.ref_sha(repo.path, ref) if ref else None
        if sha is None:
            raise ApiError(422, f"No ref found for: {ref}")
        required = body.get("required_contexts")
        failing = sorted({r.name for r in self._check_runs.values() if r.repo == repo.key and r.head_sha == sha
                          and r.status == "completed" and r.conclusion not in PASSING
                          and (required is None or r.name in required)})
        if failing:
            raise ApiError(409, f"Conflict: Commit status checks failed for {ref}.",
                           [{"contexts": [{"context": n, "state": "failure"} for n in failing],
                             "resource": "Deployment", "field": "required_contexts", "code": "invalid"}])
        payload = body.get("payload", {})
        if isinstance(payload, str):
            try:
                payload = json.loads(payload) if payload else {}
            except ValueError:
                raise _validation({"resource": "Deployment", "field": "payload", "code": "invalid"}) from None
        environment = str(body.get("environment") or "production")
        assert actor.user is not None
        d = Deployment(self._next_id(), repo.key, ref, sha, str(body.get("task") or "deploy"), environment,
                       body.get("description"), payload, actor.user, self.now(),
                       bool(body.get("transient_environment", False)),
                       bool(body.get("production_environment", environment == "production")))
        self._deployments[d.id] = d
        return self._json(201, self._deployment_json(d))

    def _get_deployment(self, request: Request, actor: _Actor, owner: str, name: str, did: str) -> Response:
        return self._json(200, self._deployment_json(self._deployment(self._visible(actor, owner, name), did)))

    def _list_deployment_statuses(self, request: Request, actor: _Actor, owner: str, name: str,
                                  did: str) -> Response:
        d = self._deployment(self._visible(actor, owner, name), did)
        return self._page(request, [self._deployment_status_json(d, s) for s in reversed(d.statuses)])

    def _post_deployment_status(self, request: Request, actor: _Actor, owner: str, name: str,
                                did: str) -> Response:
        repo = self._visible(actor, owner, name, write=True)
        d = self._deployment(repo, did)
        body = self._body(request)
        state = body.get("state")
        if state not in DEPLOYMENT_STATES:
            raise _validation({"resource": "DeploymentStatus", "field": "state", "code": "invalid"})
        description = str(body.get("description") or "")
        if len(description) > 140:
            raise _validation({"resource": "DeploymentStatus", "field": "description", "code": "custom",
                               "message": "description is too long (maximum is 140 characters)"})
        assert actor.user is not None
        if body.get("environment"):
            d.environment = str(body["environment"])
        status = DeploymentStatus(self._next_id(), state, description, d.environment,
                                  str(body.get("environment_url") or ""),
                                  str(body.get("log_url") or body.get("target_url") or ""), actor.user, self.now())
        d.statuses.append(status)
        if state == "success" and body.get("auto_inactive", True):
            for other in self._deployments.values():
                if (other.id != d.id and other.repo == repo.key and other.environment == d.environment
                        and other.statuses and other.statuses[-1].state == "success"):
                    other.statuses.append(DeploymentStatus(self._next_id(), "inactive",
                                                           "superseded by a newer deployment", other.environment,
                                                           "", "", actor.user, self.now()))
        return self._json(201, self._deployment_status_json(d, status))

    # ------------------------------------------------------------------ people
    def _permission(self, request: Request, actor: _Actor, owner: str, name: str, login: str) -> Response:
        repo = self._visible(actor, owner, name)
        user = self._users.get(login.lower())
        if user is None:
            raise ApiError(404, "Not Found")
        if user.login.lower() == repo.owner.login.lower():
            role = "admin"
        else:
            role = repo.collaborators.get(user.login.lower(), "none" if repo.private else "read")
        return self._json(200, {"permission": LEGACY_PERMISSION[role], "role_name": role,
                                "user": {**self._user_json(user), "permissions": {
                                    "admin": role == "admin", "maintain": role in ("admin", "maintain"),
                                    "push": role in ("admin", "maintain", "write"),
                                    "triage": role not in ("none", "read"), "pull": role != "none"}}})

    def _membership(self, request: Request, actor: _Actor, org: str, slug: str, login: str) -> Response:
        if actor.installation is None:
            raise ApiError(401, "Bad credentials")
        team = self._teams.get((org.lower(), slug.lower()))
        if team is None or actor.installation.account.login.lower() != org.lower():
            raise ApiError(404, "Not Found")
        key = login.lower()
        if key not in team.members and key not in team.pending:
            raise ApiError(404, "Not Found")
        return self._json(200, {"url": f"{self.api_url}/organizations/{team.id}/team/{team.id}/memberships/{login}",
                                "role": team.members.get(key, "member"),
                                "state": "active" if key in team.members else "pending"})

    # ------------------------------------------------------------------ GraphQL
    def _graphql(self, request: Request, actor: _Actor) -> dict[str, Any]:
        if actor.installation is None:
            raise ApiError(401, "Bad credentials")
        body = self._body(request)
        query = str(body.get("query") or "")
        variables = body.get("variables") or {}
        for mutation in ("enablePullRequestAutoMerge", "disablePullRequestAutoMerge"):
            if re.search(rf"\b{mutation}\s*\(", query):
                data = variables.get("input") or {}
                with self._lock:
                    return self._auto_merge_mutation(mutation, data, actor)
        return {"errors": [{"message": "the fake GitHub answers only enablePullRequestAutoMerge and "
                                       "disablePullRequestAutoMerge"}]}

    def _auto_merge_mutation(self, mutation: str, data: dict[str, Any], actor: _Actor) -> dict[str, Any]:
        pull = next((p for pulls in self._pulls.values() for p in pulls.values()
                     if node_id("PR", p.id) == data.get("pullRequestId")), None)

        def error(message: str, kind: str = "UNPROCESSABLE") -> dict[str, Any]:
            return {"data": {mutation: None},
                    "errors": [{"type": kind, "path": [mutation], "locations": [{"line": 1, "column": 1}],
                                "message": message}]}
        if pull is None:
            return error(f"Could not resolve to a node with the global id of '{data.get('pullRequestId')}'",
                         "NOT_FOUND")
        repo = self._repos[pull.repo]
        assert actor.installation is not None and actor.user is not None
        if not self._covers(actor.installation, repo):
            return error("Resource not accessible by integration", "FORBIDDEN")
        if mutation == "disablePullRequestAutoMerge":
            pull.auto_merge = None
        else:
            if not repo.allow_auto_merge:
                return error("Pull request Auto merge is not allowed for this repository")
            if pull.state != "open":
                return error("Pull request is closed")
            expected = data.get("expectedHeadOid")
            if expected and expected != pull.head_sha:
                return error("The expected head OID does not match the pull request's head")
            mergeable = gitstore.merge_tree(repo.path, self._base_sha(repo, pull), pull.head_sha) is not None
            state = self._mergeable_state(repo, pull, mergeable)
            if state == "clean":
                return error("Pull request is in clean status")
            method = str(data.get("mergeMethod") or "MERGE").lower()
            pull.auto_merge = {"enabled_by": self._user_json(actor.user), "merge_method": method,
                               "commit_title": data.get("commitHeadline"), "commit_message": data.get("commitBody")}
        pull.updated_at = self.now()
        actor_json = {"login": actor.user.login, "avatarUrl": "", "resourcePath": f"/{actor.user.login}",
                      "url": f"{self.web_url}/{actor.user.login}"}
        return {"data": {mutation: {"actor": actor_json, "clientMutationId": data.get("clientMutationId"),
                                    "pullRequest": {"id": node_id("PR", pull.id), "number": pull.number}}}}

    # ------------------------------------------------------------------ git smart HTTP
    def _git(self, request: Request, path: str, actor: _Actor | None) -> Response:
        m = re.fullmatch(r"/(?P<owner>[^/]+)/(?P<name>[^/]+?)\.git/(?P<rest>info/refs|git-upload-pack|"
                         r"git-receive-pack|HEAD)", path)
        if m is None:
            raise ApiError(404, "Not Found")
        with self._lock:
            repo = self._repos.get(f"{m['owner']}/{m['name']}".lower())
        service = request.args.get("service") if m["rest"] == "info/refs" else m["rest"]
        if service not in ("git-upload-pack", "git-receive-pack"):
            raise ApiError(403, "dumb HTTP is not served")
        denied = Response("Authentication failed\n", status=401, headers={"WWW-Authenticate": 'Basic realm="GitHub"'})
        if actor is None or actor.installation is None:
            return denied
        if repo is None:
            return Response("Repository not found.\n", status=404)
        covered = self._covers(actor.installation, repo)
        if not covered and (repo.private or service == "git-receive-pack"):
            return Response("Repository not found.\n", status=404) if repo.private else Response(
                "Permission denied\n", status=403)
        body = request.get_data()
        headers = {k: v for k, v in request.headers.items()}
        project = self.repos_dir
        path_info = f"/{repo.owner.login}/{repo.name}.git/{m['rest']}"
        if m["rest"] != "git-receive-pack":
            status, out_headers, out = gitstore.http_backend(project, path_info, request.method,
                                                             request.query_string.decode(), body, headers, "x")
            return Response(out, status=status, headers=out_headers)
        lock = self._repo_locks.setdefault(repo.key, threading.Lock())
        with lock:
            before = gitstore.refs(repo.path)
            status, out_headers, out = gitstore.http_backend(project, path_info, request.method,
                                                             request.query_string.decode(), body, headers, "x")
            after = gitstore.refs(repo.path)
        changes = {ref: (before.get(ref), after.get(ref)) for ref in set(before) | set(after)
                   if before.get(ref) != after.get(ref) and ref.startswith(("refs/heads/", "refs/tags/"))}
        if changes:
            with self._lock:
                self._after_push(repo, changes, self.bot)
        return Response(out, status=status, headers=out_headers)

    # ------------------------------------------------------------------ what a push changes
    @staticmethod
    def _person(user: User) -> Person:
        return Person(user.login, user.email)

    def _after_push(self, repo: Repo, changes: Mapping[str, tuple[str | None, str | None]], pusher: User) -> None:
        repo.pushed_at = self.now()
        for ref, (old, new) in sorted(changes.items()):
            self._emit_push(repo, ref, old, new, pusher)
            if not ref.startswith("refs/heads/"):
                continue
            branch = ref[len("refs/heads/"):]
            for base_key, pulls in self._pulls.items():
                for pull in list(pulls.values()):
                    if pull.state != "open" or pull.head_repo != repo.key or pull.head_ref != branch:
                        continue
                    base_repo = self._repos[base_key]
                    if new is None:
                        self._set_state(base_repo, pull, "closed", pusher)
                        continue
                    before, pull.head_sha, pull.updated_at = pull.head_sha, new, self.now()
                    self._update_pull_ref(base_repo, pull)
                    self._emit_pull(base_repo, pull, "synchronize", pusher, before=before, after=new)

    def _commit_json(self, repo: Repo, sha: str) -> dict[str, Any]:
        info = gitstore.commit_info(repo.path, sha)
        files = gitstore.changed_files(repo.path, sha)
        return {"id": sha, "tree_id": info["tree"], "distinct": True, "message": info["message"],
                "timestamp": info["committer_date"], "url": f"{self.web_url}/{repo.full_name}/commit/{sha}",
                "author": {"name": info["author_name"], "email": info["author_email"], "username": info["author_name"]},
                "committer": {"name": info["committer_name"], "email": info["committer_email"],
                              "username": info["committer_name"]}, **files}

    def _emit_push(self, repo: Repo, ref: str, old: str | None, new: str | None, pusher: User) -> None:
        commits: list[str] = []
        forced = False
        if new is not None:
            if old is not None:
                forced = not gitstore.is_ancestor(repo.path, old, new)
                commits = gitstore.rev_list(repo.path, new, old)
            else:
                others = [sha for r, sha in gitstore.refs(repo.path).items()
                          if r.startswith("refs/heads/") and r != ref]
                commits = gitstore.rev_list(repo.path, new, *others)
        zero = gitstore.ZERO
        repository = self._repo_json(repo)
        repository.update({"created_at": int(repo.created_at), "pushed_at": int(repo.pushed_at),
                           "master_branch": repo.default_branch, "stargazers": 0})
        self._emit("push", {
            "ref": ref, "before": old or zero, "after": new or zero, "created": old is None,
            "deleted": new is None, "forced": forced, "base_ref": None,
            "compare": f"{self.web_url}/{repo.full_name}/compare/{(old or zero)[:12]}...{(new or zero)[:12]}",
            "commits": [self._commit_json(repo, c) for c in commits],
            "head_commit": self._commit_json(repo, new) if new else None, "repository": repository,
            "pusher": {"name": pusher.login, "email": pusher.email}, "sender": self._user_json(pusher)}, repo=repo)

    def _emit_pull(self, repo: Repo, pull: Pull, action: str, sender: User, **extra: Any) -> None:
        values = {"action": action, "number": pull.number, "pull_request": self._pull_json(pull),
                  "repository": self._repo_json(repo), "sender": self._user_json(sender), **extra}
        self._emit("pull_request", values, repo=repo)

    def _emit_installation_repositories(self, inst: Installation, repos: list[Repo]) -> None:
        if repos:
            self._emit("installation_repositories", {
                "action": "added", "installation": self._installation_json(inst),
                "repository_selection": "all" if inst.repos is None else "selected",
                "repositories_added": [self._repo_brief(r) for r in repos], "repositories_removed": [],
                "requester": None, "sender": self._user_json(inst.account)})

    def _emit(self, event: str, values: dict[str, Any], *, repo: Repo | None = None) -> None:
        payload = fill(template(event, values.get("action")), values)
        if "pull_request" in values:          # the template's pull request, head and base are not ours
            payload["pull_request"] = values["pull_request"]
        if repo is not None:
            inst = self._installation_of(repo)
            payload.pop("organization", None)
            if repo.owner.type == "Organization":
                payload["organization"] = {k: v for k, v in self._user_json(repo.owner).items()
                                           if k in ("login", "id", "node_id", "url", "repos_url", "avatar_url")}
            if inst is not None:
                payload["installation"] = {"id": inst.id, "node_id": node_id("I", inst.id)}
            else:
                payload.pop("installation", None)
        self.events.append(Webhook(event, payload))

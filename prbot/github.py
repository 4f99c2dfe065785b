"""PyGithub behind `prbot.ports.Forge`: the GitHub App, its installations, tokens and repositories.

`GitHubApp` authenticates as the App (`Auth.AppAuth`, a JWT per request) for the App endpoints and
as an installation for everything else.  Installation tokens are cached per installation until
`TOKEN_MARGIN` seconds before they expire (one token request per installation per hour, shared by
every thread).  `GITHUB_API_URL` (GitHub Enterprise: ``https://ghe.example.com/api/v3``) is the
`api_url`; GraphQL is found beside it as PyGithub does.

Nothing here sleeps for long: PyGithub's own pacing is off and its retry is a short one (two quick
retries of idempotent reads and of connections that never reached GitHub).  Every other failure
becomes one of the errors of `prbot.ports`: `TransientError` for 5xx, connection errors, the
secondary rate limit (403/429 with `Retry-After` or GitHub's message) and the primary one (with
the reset time as `retry_after`); `NotFound` for 404; `ForgeError` for the rest, with GitHub's
reason on one line.  A token never appears in a message or a log line.

A `GitHubForge` holds its own PyGithub client: use one per job (PyGithub's connection objects are
not shared safely between threads); the token cache behind it is shared.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NoReturn

import requests
from github import Auth, Github, GithubException, GithubIntegration
from github.CheckRun import CheckRun as GhCheckRun
from github.IssueComment import IssueComment as GhIssueComment
from github.PaginatedList import PaginatedList
from github.PullRequest import PullRequest as GhPullRequest
from github.Repository import Repository as GhRepository
from github.Requester import Requester
from urllib3.util import Retry

from prbot.errors import ForgeError, NotFound, TransientError
from prbot.ports import (
    Annotation,
    CheckRun,
    CheckRunOutput,
    Comment,
    Deployment,
    MergeMethod,
    Permission,
    PullRequest,
    Reaction,
)

log = logging.getLogger("prbot.github")

DEFAULT_API_URL = "https://api.github.com"
TOKEN_MARGIN = 300.0            # seconds: a cached installation token is replaced this long before it expires
MAX_TEXT = 65535                # check-run summary and text
MAX_ANNOTATIONS = 50            # annotations per check-run request
MAX_DESCRIPTION = 140           # deployment status description
USER_AGENT = "prbot"
ROLES: frozenset[str] = frozenset({"admin", "maintain", "write", "triage", "read", "none"})
_SECONDARY = re.compile(r"secondary rate limit|abuse detection|retry your request again later|"
                        r"wait a few minutes before you try again", re.I)

OnResponse = Callable[[str, int, "int | None"], None]
"""Called per API response with (HTTP method, status, X-RateLimit-Remaining or None); status 0 when
no response came (connection error)."""


def default_retry() -> Retry:
    """Two quick retries (0.25 s, 0.5 s) of reads and of requests that never reached GitHub; never
    waits for a `Retry-After` (the queue does, through `TransientError.retry_after`)."""
    return Retry(total=2, connect=2, read=1, status=2, other=0, backoff_factor=0.25, backoff_max=1.0,
                 status_forcelist=(502, 503, 504), allowed_methods=frozenset({"GET", "HEAD"}),
                 respect_retry_after_header=False, raise_on_status=False, raise_on_redirect=False)


@dataclass(frozen=True)
class InstalledRepository:
    """A repository an installation can see (for the routing index)."""

    installation_id: int
    full_name: str
    default_branch: str
    clone_url: str
    private: bool


class GitHubApp:
    """The GitHub App: installation tokens (cached, thread-safe), installations, repositories and a
    `GitHubForge` per (installation, repository)."""

    def __init__(self, app_id: int | str, private_key: str, *, api_url: str = DEFAULT_API_URL,
                 on_response: OnResponse | None = None, timeout: int = 30, retry: Retry | int | None = None,
                 seconds_between_writes: float | None = None, clock: Callable[[], float] = time.time) -> None:
        if not str(app_id).strip():
            raise ForgeError("GITHUB_APP_ID is empty")
        if "\\n" in private_key and "\n" not in private_key.strip():
            private_key = private_key.replace("\\n", "\n")        # a PEM squeezed into one line of an env var
        if "PRIVATE KEY" not in private_key:
            raise ForgeError("the GitHub App private key is not a PEM key (GITHUB_PRIVATE_KEY)")
        self.app_id = str(app_id).strip()
        self.api_url = (api_url or DEFAULT_API_URL).rstrip("/")
        self.on_response = on_response
        self._timeout = timeout
        self._retry = default_retry() if retry is None else retry
        self._seconds_between_writes = seconds_between_writes
        self._clock = clock
        self._app_auth = Auth.AppAuth(self.app_id, private_key)
        self._integration = GithubIntegration(auth=self._app_auth, base_url=self.api_url, timeout=timeout,
                                              user_agent=USER_AGENT, retry=self._retry,
                                              seconds_between_requests=None, seconds_between_writes=None)
        _observe(self._integration.requester, self._report)
        self._app_lock = threading.Lock()          # one request at a time on the App's client
        self._lock = threading.Lock()
        self._token_locks: dict[int, threading.Lock] = {}
        self._tokens: dict[int, tuple[str, float]] = {}
        self._bot_login: str | None = None

    # ------------------------------------------------------------------ tokens
    def installation_token(self, installation_id: int) -> str:
        """A token of the installation, requested once and reused until `TOKEN_MARGIN` seconds
        before it expires (a token shorter-lived than twice the margin is reused for half its life)."""
        with self._lock:
            lock = self._token_locks.setdefault(installation_id, threading.Lock())
        with lock:
            cached = self._tokens.get(installation_id)
            now = self._clock()
            if cached is not None and cached[1] > now:
                return cached[0]
            with self._app_lock, _translating(f"get an installation token for installation {installation_id}",
                                              app=True):
                grant = self._integration.get_access_token(installation_id)
            expires = _timestamp(grant.expires_at) if grant.expires_at else now + 3600
            lifetime = max(0.0, expires - now)
            self._tokens[installation_id] = (grant.token, now + lifetime - min(TOKEN_MARGIN, lifetime / 2))
            return grant.token

    def forget_token(self, installation_id: int, token: str | None = None) -> None:
        """Drop the cached token (GitHub refused it): the next call asks for a new one."""
        with self._lock:
            cached = self._tokens.get(installation_id)
            if cached is not None and (token is None or cached[0] == token):
                del self._tokens[installation_id]

    # ------------------------------------------------------------------ the App
    def bot_login(self) -> str:
        """The login the App posts as (`<slug>[bot]`): how the bot tells its own comments from
        another App's that carry the same marker.  One request, then remembered."""
        with self._lock:
            cached = self._bot_login
        if cached:
            return cached
        with self._app_lock, _translating("read the App", app=True):
            slug = self._integration.get_app().slug
        with self._lock:
            self._bot_login = f"{slug}[bot]"
            return self._bot_login

    def installation_ids(self) -> list[int]:
        with self._app_lock, _translating("list the App's installations", app=True):
            return [inst.id for inst in self._integration.get_installations()]

    def installation_for(self, full_name: str) -> int:
        """The installation that can see `full_name` (NotFound when the App is not installed there)."""
        owner, _, name = full_name.partition("/")
        with self._app_lock, _translating(f"find the installation of {full_name}", app=True):
            return int(self._integration.get_repo_installation(owner, name).id)

    def repositories(self, installation_id: int) -> list[InstalledRepository]:
        """Every repository the installation can see, with its default branch."""
        gh = self._github(installation_id)
        found: PaginatedList[GhRepository] = PaginatedList(GhRepository, gh.requester, "/installation/repositories",
                                                           {"per_page": "100"}, list_item="repositories")
        with self._translating(installation_id, f"list the repositories of installation {installation_id}"):
            return [InstalledRepository(installation_id, r.full_name, r.default_branch, r.clone_url, r.private)
                    for r in found]

    def forge(self, installation_id: int, full_name: str) -> GitHubForge:
        """`full_name` as `installation_id` sees it (one API read: the repository)."""
        gh = self._github(installation_id)
        with self._translating(installation_id, f"read {full_name}"):
            repo = gh.get_repo(full_name)
            repo.default_branch            # noqa: B018 - completes the lazy object: one GET
        return GitHubForge(self, installation_id, gh, repo)

    # ------------------------------------------------------------------ internals
    def _github(self, installation_id: int) -> Github:
        gh = Github(auth=_InstallationAuth(self, installation_id), base_url=self.api_url, timeout=self._timeout,
                    user_agent=USER_AGENT, per_page=100, retry=self._retry, seconds_between_requests=None,
                    seconds_between_writes=self._seconds_between_writes, lazy=True)
        _observe(gh.requester, self._report)
        return gh

    def _report(self, method: str, status: int, remaining: int | None) -> None:
        if self.on_response is None:
            return
        try:
            self.on_response(method, status, remaining)
        except Exception:  # noqa: BLE001 - a broken metrics hook must not fail the API call
            log.exception("on_response hook failed")

    @contextmanager
    def _translating(self, installation_id: int, what: str) -> Iterator[None]:
        try:
            with _translating(what):
                yield
        except TransientError as e:
            if getattr(e, "bad_credentials", False):
                self.forget_token(installation_id)
            raise


class _InstallationAuth(Auth.Auth):
    """The installation's cached token, looked up per request (so a refreshed token is used at once)."""

    def __init__(self, app: GitHubApp, installation_id: int) -> None:
        self._app = app
        self._installation_id = installation_id

    @property
    def token_type(self) -> str:
        return "token"

    @property
    def token(self) -> str:
        return self._app.installation_token(self._installation_id)

    @property
    def _masked_token(self) -> str:
        return "token (removed)"


def _observe(requester: Requester, report: Callable[[str, int, int | None], None]) -> None:
    """Call `report` for every HTTP response this requester gets.  PyGithub has no response hook:
    the requester's connection class is replaced by a subclass that reports (a test proves it)."""
    attribute = "_Requester__connectionClass"
    base = getattr(requester, attribute)

    class Observed(base):  # type: ignore[valid-type,misc]
        def getresponse(self) -> Any:
            try:
                response = super().getresponse()
            except Exception:
                report(self.verb, 0, None)
                raise
            remaining = dict((k.lower(), v) for k, v in response.getheaders()).get("x-ratelimit-remaining")
            report(self.verb, response.status, int(float(remaining)) if remaining not in (None, "") else None)
            return response

    setattr(requester, attribute, Observed)


def _timestamp(value: datetime) -> float:
    return value.timestamp()


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

@contextmanager
def _translating(what: str, *, app: bool = False) -> Iterator[None]:
    """Turn PyGithub's and requests' exceptions into the errors of `prbot.ports`."""
    try:
        yield
    except GithubException as e:
        _raise_for(e, what, app=app)
    except (requests.ConnectionError, requests.Timeout) as e:
        log.warning("%s: GitHub unreachable (%s)", what, type(e).__name__)
        raise TransientError(f"{what}: GitHub is unreachable ({type(e).__name__})") from None
    except requests.RequestException as e:
        log.warning("%s: request failed (%s)", what, type(e).__name__)
        raise TransientError(f"{what}: the request to GitHub failed ({type(e).__name__})") from None


def _header(headers: Mapping[str, Any] | None, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return str(value)
    return None


def _reason(e: GithubException) -> str:
    data = e.data if isinstance(e.data, dict) else {}
    message = str(data.get("message") or e.message or "").strip()
    details = []
    for error in data.get("errors") or []:
        if isinstance(error, dict):
            detail = error.get("message") or " ".join(str(error[k]) for k in ("field", "code") if error.get(k))
            if detail and detail not in message:
                details.append(str(detail))
        elif isinstance(error, str):
            details.append(error)
    text = "; ".join(p for p in [message, *details] if p) or f"HTTP {e.status}"
    return " ".join(text.split())[:300]


def _raise_for(e: GithubException, what: str, *, app: bool = False) -> NoReturn:
    status = e.status or 0
    reason = _reason(e)
    retry_after = _header(e.headers, "retry-after")
    remaining = _header(e.headers, "x-ratelimit-remaining")
    log.warning("%s: GitHub answered %s: %s", what, status, reason)
    if status >= 500 or status == 0:
        raise TransientError(f"{what}: GitHub failed ({status}: {reason})",
                             retry_after=_seconds(retry_after)) from None
    if status in (403, 429) and (retry_after is not None or _SECONDARY.search(reason) or status == 429):
        raise TransientError(f"{what}: GitHub's secondary rate limit ({reason})",
                             retry_after=_seconds(retry_after) or 60.0) from None
    if status in (403, 429) and remaining == "0":
        reset = _header(e.headers, "x-ratelimit-reset")
        wait = max(1.0, float(reset) - time.time()) if reset and reset.isdigit() else 60.0
        raise TransientError(f"{what}: GitHub's rate limit is exhausted ({reason})", retry_after=wait) from None
    if status == 401 and not app:
        error = TransientError(f"{what}: GitHub refused the installation token ({reason})", retry_after=1.0)
        error.bad_credentials = True                  # type: ignore[attr-defined]
        raise error from None
    if status == 401:
        raise ForgeError(f"{what}: GitHub refused the App's credentials ({reason}); check GITHUB_APP_ID, the "
                         "private key and the clock", status=status) from None
    if status == 404:
        raise NotFound(f"{what}: not found", status=status) from None
    raise ForgeError(f"{what}: {reason}", status=status) from None


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = "\n\n… (truncated)"
    return text[:limit - len(marker)] + marker


# ----------------------------------------------------------------------------------------------
# The forge
# ----------------------------------------------------------------------------------------------

class GitHubForge:
    """One repository as one installation sees it (`prbot.ports.Forge`)."""

    def __init__(self, app: GitHubApp, installation_id: int, gh: Github, repo: GhRepository) -> None:
        self._app = app
        self.installation_id = installation_id
        self._gh = gh
        self._repo = repo
        self._requester: Requester = gh.requester
        self.full_name: str = repo.full_name
        self.default_branch: str = repo.default_branch
        self.clone_url: str = repo.clone_url
        self.html_url: str = repo.html_url
        self._url = f"/repos/{self.full_name}"
        self._owner = self.full_name.split("/", 1)[0]

    def git_token(self) -> str:
        with self._translating("get a token for git"):
            return self._app.installation_token(self.installation_id)

    def forget_git_token(self) -> None:
        """git was refused the token (revoked): the next `git_token` asks GitHub for a new one."""
        self._app.forget_token(self.installation_id)

    @contextmanager
    def _translating(self, what: str) -> Iterator[None]:
        with self._app._translating(self.installation_id, f"{what} ({self.full_name})"):
            yield

    def _request(self, verb: str, path: str, *, parameters: dict[str, Any] | None = None,
                 body: Any = None) -> Any:
        """One request to a path below the repository (or absolute from the API root with "/")."""
        url = path if path.startswith("/") else f"{self._url}/{path}"
        _headers, data = self._requester.requestJsonAndCheck(verb, url, parameters=parameters, input=body)
        return data

    # ------------------------------------------------------------------ pull requests
    def _pull(self, pr: GhPullRequest) -> PullRequest:
        head_repo = pr.head.repo
        return PullRequest(
            number=pr.number, title=pr.title or "", body=pr.body or "",
            state="closed" if pr.state == "closed" else "open", merged=bool(pr.merged), draft=bool(pr.draft),
            head_ref=pr.head.ref, head_sha=pr.head.sha, head_repo=head_repo.full_name if head_repo else None,
            base_ref=pr.base.ref, base_sha=pr.base.sha, author=pr.user.login if pr.user else "",
            labels=tuple(label.name for label in pr.labels), merge_commit_sha=pr.merge_commit_sha,
            html_url=pr.html_url or "", repo=self.full_name, node_id=pr.node_id or "",
            updated_at=pr.updated_at.isoformat() if pr.updated_at else "")

    def get_pull(self, number: int) -> PullRequest:
        with self._translating(f"read pull request #{number}"):
            return self._pull(self._repo.get_pull(number))

    def find_pull(self, head_branch: str, *, state: Literal["open", "closed", "all"] = "open") -> PullRequest | None:
        with self._translating(f"look for a pull request from {head_branch}"):
            pulls = self._repo.get_pulls(state=state, head=f"{self._owner}:{head_branch}", sort="created",
                                         direction="desc")
            for pr in pulls:
                if pr.head.ref == head_branch and pr.head.repo is not None \
                        and pr.head.repo.full_name.lower() == self.full_name.lower():
                    return self._pull(pr)
                break
        return None

    def create_pull(self, *, title: str, body: str, head: str, base: str) -> PullRequest:
        with self._translating(f"open a pull request from {head} into {base}"):
            return self._pull(self._repo.create_pull(title=title, body=body, head=head, base=base))

    def update_pull(self, number: int, *, title: str | None = None, body: str | None = None,
                    state: Literal["open", "closed"] | None = None) -> None:
        changes: dict[str, Any] = {k: v for k, v in (("title", title), ("body", body), ("state", state))
                                   if v is not None}
        if not changes:
            return
        with self._translating(f"update pull request #{number}"):
            self._repo.get_pull(number).edit(**changes)

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        if not labels:
            return
        with self._translating(f"label pull request #{number}"):
            self._repo.get_issue(number).add_to_labels(*labels)

    def enable_auto_merge(self, pull: PullRequest, *, method: MergeMethod = "squash") -> bool:
        node = pull.node_id or self.get_pull(pull.number).node_id
        what = f"enable auto-merge on pull request #{pull.number}"
        try:
            with self._translating(what):
                self._requester.graphql_named_mutation(
                    "enablePullRequestAutoMerge",
                    {"pullRequestId": node, "mergeMethod": method.upper(), "expectedHeadOid": pull.head_sha},
                    "clientMutationId")
        except ForgeError as e:
            message = str(e).lower()
            if "not allowed" in message or "clean status" in message or "unstable status" in message:
                log.info("%s: GitHub declined (%s)", what, e)
                return False
            raise
        return True

    def merge_pull(self, number: int, *, sha: str, method: MergeMethod = "squash") -> str | None:
        what = f"merge pull request #{number}"
        try:
            with self._translating(what):
                status = self._repo.get_pull(number).merge(merge_method=method, sha=sha)
        except ForgeError as e:
            if e.status in (405, 409, 422):       # not mergeable, head moved, checks missing, method disabled
                log.info("%s: GitHub refused (%s)", what, e)
                return None
            raise
        return status.sha if status.merged else None

    # ------------------------------------------------------------------ comments and reactions
    @staticmethod
    def _comment(c: GhIssueComment) -> Comment:
        user = c.user
        return Comment(id=c.id, body=c.body or "", author=user.login if user else "",
                       author_is_bot=bool(user and (user.type == "Bot" or user.login.endswith("[bot]"))))

    def list_comments(self, number: int) -> list[Comment]:
        with self._translating(f"list the comments of pull request #{number}"):
            return [self._comment(c) for c in self._repo.get_issue(number).get_comments()]

    def create_comment(self, number: int, body: str) -> Comment:
        with self._translating(f"comment on pull request #{number}"):
            return self._comment(self._repo.get_issue(number).create_comment(body))

    def _issue_comment(self, comment_id: int) -> GhIssueComment:
        return GhIssueComment(self._requester, url=f"{self._url}/issues/comments/{comment_id}")

    def edit_comment(self, comment_id: int, body: str) -> None:
        with self._translating(f"edit comment {comment_id}"):
            self._issue_comment(comment_id).edit(body)

    def delete_comment(self, comment_id: int) -> None:
        """Delete a comment; one already gone counts as deleted (a retried job)."""
        try:
            with self._translating(f"delete comment {comment_id}"):
                self._issue_comment(comment_id).delete()
        except NotFound:
            log.info("comment %s of %s was already deleted", comment_id, self.full_name)

    def react(self, comment_id: int, reaction: Reaction) -> None:
        with self._translating(f"react {reaction} to comment {comment_id}"):
            self._issue_comment(comment_id).create_reaction(reaction)

    # ------------------------------------------------------------------ check runs
    @staticmethod
    def _check_run(run: GhCheckRun) -> CheckRun:
        status = run.status if run.status in ("queued", "in_progress", "completed") else "queued"
        return CheckRun(id=run.id, name=run.name, head_sha=run.head_sha, status=status,  # type: ignore[arg-type]
                        conclusion=run.conclusion)

    def find_check_run(self, head_sha: str, name: str) -> CheckRun | None:
        with self._translating(f"look for check run {name} on {head_sha[:12]}"):
            for run in self._repo.get_commit(head_sha).get_check_runs(check_name=name, filter="latest"):
                return self._check_run(run)
        return None

    @staticmethod
    def _annotation(a: Annotation) -> dict[str, Any]:
        data: dict[str, Any] = {"path": a.path, "start_line": max(1, a.start_line),
                                "end_line": max(a.start_line, a.end_line, 1), "annotation_level": a.level,
                                "message": _clip(a.message, 64 * 1024 - 1) or "(no message)"}
        if a.title:
            data["title"] = a.title[:255]
        return data

    @classmethod
    def _outputs(cls, output: CheckRunOutput) -> list[dict[str, Any]]:
        """The output as GitHub takes it: the first with up to 50 annotations, then one more (same
        title and summary) per 50 further annotations."""
        base: dict[str, Any] = {"title": _clip(output.title or "prbot", 255),
                                "summary": _clip(output.summary, MAX_TEXT)}
        if output.text:
            base["text"] = _clip(output.text, MAX_TEXT)
        annotations = [cls._annotation(a) for a in output.annotations]
        batches = [annotations[i:i + MAX_ANNOTATIONS] for i in range(0, len(annotations), MAX_ANNOTATIONS)] or [[]]
        outputs = []
        for i, batch in enumerate(batches):
            part = dict(base) if i == 0 else {"title": base["title"], "summary": base["summary"]}
            if batch:
                part["annotations"] = batch
            outputs.append(part)
        return outputs

    def create_check_run(self, *, head_sha: str, name: str, status: Literal["queued", "in_progress", "completed"],
                         conclusion: str | None = None, output: CheckRunOutput | None = None,
                         details_url: str | None = None) -> CheckRun:
        outputs = self._outputs(output) if output is not None else []
        kwargs: dict[str, Any] = {"name": name, "head_sha": head_sha, "status": status}
        if conclusion is not None:
            kwargs["conclusion"] = conclusion
        if details_url:
            kwargs["details_url"] = details_url
        if outputs:
            kwargs["output"] = outputs[0]
        with self._translating(f"create check run {name} on {head_sha[:12]}"):
            run = self._repo.create_check_run(**kwargs)
            for more in outputs[1:]:
                run.edit(output=more)
        return self._check_run(run)

    def update_check_run(self, check_run_id: int, *,
                         status: Literal["queued", "in_progress", "completed"] | None = None,
                         conclusion: str | None = None, output: CheckRunOutput | None = None) -> None:
        outputs = self._outputs(output) if output is not None else []
        kwargs: dict[str, Any] = {}
        if status is not None:
            kwargs["status"] = status
        if conclusion is not None:
            kwargs["conclusion"] = conclusion
        if outputs:
            kwargs["output"] = outputs[0]
        if not kwargs:
            return
        with self._translating(f"update check run {check_run_id}"):
            run = GhCheckRun(self._requester, url=f"{self._url}/check-runs/{check_run_id}")
            run.edit(**kwargs)
            for more in outputs[1:]:
                run.edit(output=more)

    # ------------------------------------------------------------------ permissions
    def permission(self, user: str) -> Permission:
        quoted = urllib.parse.quote(user, safe="")
        try:
            with self._translating(f"read {user}'s permission"):
                data = self._request("GET", f"collaborators/{quoted}/permission")
        except NotFound:
            return "none"
        role = str(data.get("role_name") or "")
        if role not in ROLES:          # a custom role: GitHub's base permission for it
            role = str(data.get("permission") or "none")
        return role if role in ROLES else "none"  # type: ignore[return-value]

    def is_team_member(self, org: str, team_slug: str, user: str) -> bool:
        path = "/orgs/{}/teams/{}/memberships/{}".format(*(urllib.parse.quote(p, safe="") for p in (org, team_slug,
                                                                                                      user)))
        try:
            with self._translating(f"check {user}'s membership of @{org}/{team_slug}"):
                data = self._request("GET", path)
        except NotFound:
            return False
        return data.get("state") == "active"

    # ------------------------------------------------------------------ deployments
    def create_deployment(self, *, ref: str, environment: str, description: str,
                          payload: Mapping[str, object]) -> Deployment:
        with self._translating(f"create a deployment of {ref[:12]} to {environment}"):
            data = self._request("POST", "deployments", body={
                "ref": ref, "environment": environment, "description": description[:MAX_DESCRIPTION],
                "payload": dict(payload), "auto_merge": False, "required_contexts": []})
        return self._deployment(data, None)

    @staticmethod
    def _deployment(data: Mapping[str, Any], state: str | None) -> Deployment:
        payload = data.get("payload")
        return Deployment(id=int(data["id"]), ref=str(data.get("ref") or ""), sha=str(data.get("sha") or ""),
                          environment=str(data.get("environment") or ""),
                          payload=payload if isinstance(payload, dict) else {}, state=state)

    def set_deployment_status(self, deployment_id: int, *,
                              state: Literal["queued", "in_progress", "success", "failure", "error", "inactive"],
                              description: str, environment_url: str | None = None,
                              log_url: str | None = None) -> None:
        body: dict[str, Any] = {"state": state, "description": description[:MAX_DESCRIPTION], "auto_inactive": True}
        if environment_url:
            body["environment_url"] = environment_url
        if log_url:
            body["log_url"] = log_url
        with self._translating(f"set deployment {deployment_id} to {state}"):
            self._request("POST", f"deployments/{deployment_id}/statuses", body=body)

    def list_deployments(self, *, environment: str, limit: int = 30, sha: str | None = None) -> list[Deployment]:
        """The newest `limit` deployments to `environment` (of commit `sha`, if given), newest first,
        each with its latest status (one request for the list, one per deployment for its status)."""
        found = []
        parameters: dict[str, Any] = {"environment": environment, "per_page": max(1, min(limit, 100))}
        if sha:
            parameters["sha"] = sha
        with self._translating(f"list the deployments to {environment}"):
            data = self._request("GET", "deployments", parameters=parameters)
            for item in data[:limit]:
                statuses = self._request("GET", f"deployments/{item['id']}/statuses", parameters={"per_page": 1})
                found.append(self._deployment(item, statuses[0]["state"] if statuses else None))
        return found

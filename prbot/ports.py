"""The small interfaces the flows (`prbot.flows`) are written against.

A *forge* is one repository as one installation of the GitHub App sees it (`prbot.github`
implements it with PyGithub); a *workspace* is the bare git mirror of that repository
(`prbot.workspace`); a *store* is the durable key-value store beside the job queue
(`prbot.service.store`); a *deployer* syncs targets on their clusters (`prbot.cluster.deploy`) and
reads back a `Progress` (`prbot.progress`).  Flows import only this module and the core; they
never import an adapter (nor `prbot.gitrepo`: git goes through the workspace), so every flow runs
the same against GitHub, the test fakes and the demo's stand-ins.

Errors adapters raise:
- `TransientError`: worth retrying later (5xx, connection errors, GitHub's secondary rate limit);
  the queue re-runs the job after `retry_after` seconds (or its own backoff).  Flows are written
  so that re-running a job after any partial progress ends in the same state (find before create).
- `ForgeError` (a `PrbotError`): the forge refused for a reason a user can act on (404, 422 …).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from prbot.config import Config, SyncSpec
from prbot.model import Target
from prbot.progress import Progress

if TYPE_CHECKING:                          # the core's planning types, named in `Workspace.plan`
    from prbot.plan import DryRunner, Plan
    from prbot.render import RenderPool


# --------------------------------------------------------------------------------------------
# Data the forge returns
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PullRequest:
    number: int
    title: str
    body: str                             # "" when GitHub sends null
    state: Literal["open", "closed"]
    merged: bool
    draft: bool
    head_ref: str                         # branch name in the head repository
    head_sha: str
    head_repo: str | None                 # full name of the head repository; None: a deleted fork
    base_ref: str
    base_sha: str
    author: str
    labels: tuple[str, ...] = ()
    merge_commit_sha: str | None = None
    html_url: str = ""
    repo: str = ""                        # full name of the base repository
    node_id: str = ""                     # GraphQL id (auto-merge); "" when unknown
    updated_at: str = ""                  # GitHub's ISO 8601 time of its last change; "" when unknown

    @property
    def from_fork(self) -> bool:
        return self.head_repo != self.repo


@dataclass(frozen=True)
class Comment:
    id: int
    body: str
    author: str
    author_is_bot: bool = False


@dataclass(frozen=True)
class Annotation:
    """A check-run annotation on one file (GitHub takes at most 50 per request; adapters batch)."""

    path: str
    start_line: int
    end_line: int
    level: Literal["notice", "warning", "failure"]
    message: str
    title: str | None = None


@dataclass(frozen=True)
class CheckRun:
    id: int
    name: str
    head_sha: str
    status: Literal["queued", "in_progress", "completed"]
    conclusion: str | None = None


@dataclass(frozen=True)
class CheckRunOutput:
    title: str
    summary: str                           # at most 65,535 characters (adapters clip)
    text: str = ""                         # at most 65,535 characters (adapters clip)
    annotations: tuple[Annotation, ...] = ()


@dataclass(frozen=True)
class Deployment:
    id: int
    ref: str
    sha: str
    environment: str
    payload: Mapping[str, object] = field(default_factory=dict)
    state: str | None = None               # the latest status, None when it has none


Permission = Literal["admin", "maintain", "write", "triage", "read", "none"]
WRITE_PERMISSIONS: frozenset[str] = frozenset({"admin", "maintain", "write"})
MergeMethod = Literal["merge", "squash", "rebase"]
Reaction = Literal["eyes", "rocket", "confused", "+1", "-1", "laugh", "hooray", "heart"]


# --------------------------------------------------------------------------------------------
# The interfaces
# --------------------------------------------------------------------------------------------

class Forge(Protocol):
    """One repository, as one installation of the App sees it."""

    full_name: str                         # "owner/name"
    default_branch: str
    clone_url: str                         # as the API gives it (GitHub Enterprise, local mirrors)
    html_url: str

    def git_token(self) -> str:
        """An installation token for git over HTTPS (cached by the adapter until shortly before expiry)."""
        ...

    # pull requests
    def get_pull(self, number: int) -> PullRequest: ...
    def find_pull(self, head_branch: str, *, state: Literal["open", "closed", "all"] = "open") -> PullRequest | None:
        """The most recent PR from `head_branch` of this repository into any base, or None."""
        ...
    def create_pull(self, *, title: str, body: str, head: str, base: str) -> PullRequest: ...
    def update_pull(self, number: int, *, title: str | None = None, body: str | None = None,
                    state: Literal["open", "closed"] | None = None) -> None: ...
    def add_labels(self, number: int, labels: Sequence[str]) -> None: ...
    def enable_auto_merge(self, pull: PullRequest, *, method: MergeMethod = "squash") -> bool:
        """GraphQL `enablePullRequestAutoMerge`; False when the repository does not allow it."""
        ...
    def merge_pull(self, number: int, *, sha: str, method: MergeMethod = "squash") -> str | None:
        """Merge when the head is still `sha`; the merge commit sha, or None when GitHub refused."""
        ...

    # issue comments (PR conversation) and reactions
    def list_comments(self, number: int) -> list[Comment]: ...
    def create_comment(self, number: int, body: str) -> Comment: ...
    def edit_comment(self, comment_id: int, body: str) -> None: ...
    def delete_comment(self, comment_id: int) -> None: ...
    def react(self, comment_id: int, reaction: Reaction) -> None: ...

    # check runs
    def find_check_run(self, head_sha: str, name: str) -> CheckRun | None: ...
    def create_check_run(self, *, head_sha: str, name: str,
                         status: Literal["queued", "in_progress", "completed"],
                         conclusion: str | None = None, output: CheckRunOutput | None = None,
                         details_url: str | None = None) -> CheckRun: ...
    def update_check_run(self, check_run_id: int, *,
                         status: Literal["queued", "in_progress", "completed"] | None = None,
                         conclusion: str | None = None, output: CheckRunOutput | None = None) -> None: ...

    # permissions
    def permission(self, user: str) -> Permission:
        """The user's permission on this repository ("none" when not a collaborator)."""
        ...
    def is_team_member(self, org: str, team_slug: str, user: str) -> bool: ...

    # deployments
    def create_deployment(self, *, ref: str, environment: str, description: str,
                          payload: Mapping[str, object]) -> Deployment: ...
    def set_deployment_status(self, deployment_id: int, *,
                              state: Literal["queued", "in_progress", "success", "failure", "error", "inactive"],
                              description: str, environment_url: str | None = None,
                              log_url: str | None = None) -> None: ...
    def list_deployments(self, *, environment: str, limit: int = 30, sha: str | None = None) -> list[Deployment]:
        """The newest `limit` (only those of commit `sha`, if given), newest first, each with its
        latest status in `state`."""
        ...


class Workspace(Protocol):
    """The bare mirror of one repository: fetched incrementally, never a fresh clone per job, with
    the token passed per git command (never stored in `.git/config`).  Flows read git only through
    it: they never see where the mirror lives."""

    def fetch(self, *refs: str) -> None:
        """Bring these refs up to date (e.g. "refs/heads/main", "refs/pull/7/head"); a missing ref is
        not an error (a branch that does not exist yet)."""
        ...
    def resolve(self, rev: str) -> str | None:
        """The commit sha of a ref or sha, None when unknown."""
        ...
    def read_file(self, rev: str, path: str) -> bytes | None: ...
    def checkout(self, rev: str) -> AbstractContextManager[Path]:
        """A full working tree of `rev` in a temporary directory (for edits), removed on exit."""
        ...
    def materialize(self, rev: str) -> AbstractContextManager[Path]:
        """A directory tree of `rev` in a temporary directory (for reading), removed on exit."""
        ...
    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of `a` and `b` (where a PR forked); None when either is unknown
        or they share no history."""
        ...
    def same_tree(self, a: str, b: str) -> bool:
        """Whether commits `a` and `b` hold the same files (equal trees)."""
        ...
    def plan(self, config: Config, base: str, head: str, *, pool: RenderPool | None = None,
             dry_runner: DryRunner | None = None) -> Plan:
        """The plan of base...head (`prbot.plan.make_plan`), read from the mirror."""
        ...
    @property
    def repository_urls(self) -> tuple[str, ...]:
        """The URLs naming this repository (what a GitRepository or an Application's repoURL
        must say for an expansion to read this repository's files)."""
        ...
    def commit(self, *, parent: str, files: Mapping[str, bytes], message: str) -> str:
        """A new commit whose tree is `parent`'s with `files` (repo-relative) written; its sha."""
        ...
    def push(self, branch: str, sha: str, *, force: bool = False) -> None:
        """Point `refs/heads/<branch>` on the forge at `sha` (a force-push when `force`)."""
        ...


class Store(Protocol):
    """Durable key-value data beside the queue (SQLite or Redis): delivery ids, the repository
    index, coalesced pushes, locks, deployments being watched.  Values are strings (JSON)."""

    def get(self, key: str) -> str | None: ...
    def put(self, key: str, value: str) -> None: ...
    def put_if_absent(self, key: str, value: str) -> bool:
        """Atomically set `key` when it has no value; True when this call set it."""
        ...
    def delete(self, key: str) -> None: ...
    def items(self, prefix: str) -> Iterator[tuple[str, str]]:
        """Every (key, value) whose key starts with `prefix`."""
        ...


class Deployer(Protocol):
    """Syncs a target on its cluster and reads its health, one pass per call (never waits).

    A *ticket* (JSON) is what `poll` needs of a sync in flight; the flow keeps it in the store
    between polls, so a restarted worker picks the wait up again.  `Progress` is one read.
    """

    def start(self, cluster: str, target: Target, spec: SyncSpec, sha: str, *,
              objects: Sequence[Mapping[str, Any]] = (), repo_urls: Sequence[str] = (),
              info: Sequence[tuple[str, str]] = ()) -> tuple[dict[str, Any], Progress]: ...
    def poll(self, ticket: Mapping[str, Any]) -> tuple[dict[str, Any], Progress]: ...


__all__ = ["Annotation", "CheckRun", "CheckRunOutput", "Comment", "Deployer", "Deployment", "Forge", "MergeMethod",
           "Permission", "Progress", "PullRequest", "Reaction", "Store", "WRITE_PERMISSIONS", "Workspace"]

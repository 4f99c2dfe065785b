"""The fake's state: what GitHub keeps about installations, repositories, pull requests, issues, comments,
check runs and deployments (plain dataclasses; the server turns them into REST JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLE_ORDER = ("none", "read", "triage", "write", "maintain", "admin")
# the legacy `permission` field of the collaborator permission endpoint
LEGACY_PERMISSION = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read",
                     "none": "none"}
REACTIONS = ("+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes")
CONCLUSIONS = ("action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out")
PASSING = ("success", "neutral", "skipped")
DEPLOYMENT_STATES = ("error", "failure", "inactive", "in_progress", "queued", "pending", "success")


@dataclass
class User:
    login: str
    id: int
    type: str = "User"                 # "User" | "Bot" | "Organization"

    @property
    def email(self) -> str:
        return f"{self.id}+{self.login}@users.noreply.github.com"


@dataclass
class Token:
    value: str
    installation_id: int
    expires_at: float


@dataclass
class Installation:
    id: int
    account: User
    repos: set[str] | None             # lower-case full names; None: every repository of the account
    created_at: float
    rate_limit: int = 5000
    rate_remaining: int = 5000
    rate_reset: float = 0.0


@dataclass
class Label:
    id: int
    name: str
    color: str = "ededed"
    description: str | None = None


@dataclass
class Repo:
    id: int
    owner: User
    name: str
    path: Path                         # the bare repository on disk
    default_branch: str
    private: bool = True
    parent: str | None = None          # full name of the repository this one is a fork of
    allow_auto_merge: bool = True
    allow_merge_commit: bool = True
    allow_squash_merge: bool = True
    allow_rebase_merge: bool = True
    labels: dict[str, Label] = field(default_factory=dict)          # lower-case name -> label
    collaborators: dict[str, str] = field(default_factory=dict)    # lower-case login -> role
    required_checks: dict[str, list[str]] = field(default_factory=dict)   # branch -> check names
    next_number: int = 1
    created_at: float = 0.0
    pushed_at: float = 0.0

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"

    @property
    def key(self) -> str:
        return self.full_name.lower()


@dataclass
class Pull:
    id: int
    number: int
    repo: str                          # key of the base repository
    title: str
    body: str | None
    user: User
    head_repo: str | None              # key of the head repository
    head_ref: str
    head_sha: str
    base_ref: str
    created_at: float
    updated_at: float
    state: str = "open"
    draft: bool = False
    labels: list[str] = field(default_factory=list)               # lower-case label names, in order
    merged: bool = False
    merged_at: float | None = None
    merged_by: User | None = None
    merge_commit_sha: str | None = None
    closed_at: float | None = None
    base_sha: str | None = None        # frozen when closed
    auto_merge: dict[str, Any] | None = None
    maintainer_can_modify: bool = False


@dataclass
class Issue:
    """A plain issue (not a pull request); it shares the repository's number sequence with PRs."""

    id: int
    number: int
    repo: str                          # key of the repository
    title: str
    body: str | None
    user: User
    created_at: float
    updated_at: float
    state: str = "open"
    labels: list[str] = field(default_factory=list)               # lower-case label names, in order
    closed_at: float | None = None


@dataclass
class Reaction:
    id: int
    user: User
    content: str
    created_at: float


@dataclass
class Comment:
    id: int
    repo: str
    number: int
    body: str
    user: User
    created_at: float
    updated_at: float
    via_app: bool = False
    reactions: list[Reaction] = field(default_factory=list)


@dataclass
class CheckRun:
    id: int
    repo: str
    head_sha: str
    name: str
    status: str
    conclusion: str | None
    started_at: float
    completed_at: float | None
    output: dict[str, Any]
    annotations: list[dict[str, Any]] = field(default_factory=list)
    details_url: str | None = None
    external_id: str = ""
    suite_id: int = 0


@dataclass
class DeploymentStatus:
    id: int
    state: str
    description: str
    environment: str
    environment_url: str
    log_url: str
    creator: User
    created_at: float


@dataclass
class Deployment:
    id: int
    repo: str
    ref: str
    sha: str
    task: str
    environment: str
    description: str | None
    payload: Any
    creator: User
    created_at: float
    transient_environment: bool = False
    production_environment: bool = False
    statuses: list[DeploymentStatus] = field(default_factory=list)


@dataclass
class Team:
    id: int
    org: str
    slug: str
    members: dict[str, str] = field(default_factory=dict)          # lower-case login -> "member"|"maintainer"
    pending: set[str] = field(default_factory=set)


@dataclass
class Logged:
    """One request as the fake saw it."""

    method: str
    path: str                          # without the API prefix for API calls ("/repos/o/r/pulls")
    status: int
    kind: str                          # "api" | "graphql" | "git"
    write: bool                        # a content-creating request (what GitHub's write pace counts)
    installation: int | None = None
    at: float = 0.0

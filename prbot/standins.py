"""In-process stand-ins for GitHub, for `prbot demo`: a forge that keeps pull requests, comments,
check runs, labels, reactions and deployments in memory and tells a listener what the bot did.

The flows run against it exactly as against GitHub (`prbot.ports.Forge`); its git side is a real
bare repository on disk that the demo's workspace mirrors.  Not used by the service.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from prbot.ports import (
    CheckRun,
    CheckRunOutput,
    Comment,
    Deployment,
    MergeMethod,
    NotFound,
    Permission,
    PullRequest,
    Reaction,
)

Listener = Callable[[str, str], None]          # (what happened, text the bot posted)


@dataclass
class _Check:
    run: CheckRun
    output: CheckRunOutput | None = None


@dataclass
class MemoryForge:
    """One repository: its git data in a bare repository at `origin` (the `clone_url`)."""

    full_name: str
    origin: Path
    default_branch: str = "main"
    bot_login: str = "prbot[bot]"
    permissions: dict[str, Permission] = field(default_factory=dict)
    teams: dict[str, set[str]] = field(default_factory=dict)        # "org/team" -> logins
    listener: Listener | None = None
    pulls: dict[int, PullRequest] = field(default_factory=dict)
    comments: dict[int, tuple[int, Comment]] = field(default_factory=dict)   # id -> (pr, comment)
    reactions: list[tuple[int, str]] = field(default_factory=list)
    checks: dict[int, _Check] = field(default_factory=dict)
    deployments: dict[int, Deployment] = field(default_factory=dict)
    statuses: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    auto_merge: set[int] = field(default_factory=set)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def clone_url(self) -> str:
        return self.origin.as_uri()

    @property
    def html_url(self) -> str:
        return f"https://github.example/{self.full_name}"

    def _tell(self, what: str, body: str = "") -> None:
        if self.listener is not None:
            self.listener(what, body)

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "--git-dir", str(self.origin), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    def _sha(self, branch: str) -> str:
        return self._git("rev-parse", f"refs/heads/{branch}")

    def git_token(self) -> str:
        return "demo-token"

    # pull requests -------------------------------------------------------------------------
    def get_pull(self, number: int) -> PullRequest:
        pr = self.pulls.get(number)
        if pr is None:
            raise NotFound(f"pull request #{number} not found", status=404)
        if pr.state == "open":                       # the head follows its branch, as on GitHub
            pr = replace(pr, head_sha=self._sha(pr.head_ref))
            self.pulls[number] = pr
            self._git("update-ref", f"refs/pull/{number}/head", pr.head_sha)
        return pr

    def find_pull(self, head_branch: str, *, state: Literal["open", "closed", "all"] = "open") -> PullRequest | None:
        found = [p for p in self.pulls.values() if p.head_ref == head_branch and (state == "all" or p.state == state)]
        return self.get_pull(max(found, key=lambda p: p.number).number) if found else None

    def create_pull(self, *, title: str, body: str, head: str, base: str) -> PullRequest:
        number = next(self._ids)
        sha = self._sha(head)
        self._git("update-ref", f"refs/pull/{number}/head", sha)
        pr = PullRequest(number=number, title=title, body=body, state="open", merged=False, draft=False,
                         head_ref=head, head_sha=sha, head_repo=self.full_name, base_ref=base,
                         base_sha=self._sha(base), author=self.bot_login, repo=self.full_name,
                         html_url=f"{self.html_url}/pull/{number}")
        self.pulls[number] = pr
        self._tell(f"opened PR #{number} {head} → {base}: {title}", body)
        return pr

    def update_pull(self, number: int, *, title: str | None = None, body: str | None = None,
                    state: Literal["open", "closed"] | None = None) -> None:
        pr = self.get_pull(number)
        self.pulls[number] = replace(pr, title=title if title is not None else pr.title,
                                     body=body if body is not None else pr.body, state=state or pr.state)
        self._tell(f"updated PR #{number}: {self.pulls[number].title}", body or "")

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        pr = self.get_pull(number)
        self.pulls[number] = replace(pr, labels=tuple(dict.fromkeys((*pr.labels, *labels))))
        self._tell(f"labelled PR #{number}: {', '.join(labels)}")

    def enable_auto_merge(self, pull: PullRequest, *, method: MergeMethod = "squash") -> bool:
        self.auto_merge.add(pull.number)
        self._tell(f"enabled auto-merge on PR #{pull.number}")
        return True

    def merge_pull(self, number: int, *, sha: str, method: MergeMethod = "squash") -> str | None:
        pr = self.get_pull(number)
        if pr.state != "open" or pr.head_sha != sha:
            return None
        base = self._sha(pr.base_ref)
        tree = self._git("rev-parse", f"{sha}^{{tree}}")
        merge = self._git("commit-tree", tree, "-p", base, "-p", sha, "-m", f"Merge pull request #{number}")
        self._git("update-ref", f"refs/heads/{pr.base_ref}", merge)
        self.pulls[number] = replace(pr, state="closed", merged=True, merge_commit_sha=merge)
        self._tell(f"merged PR #{number} into {pr.base_ref} as {merge[:7]}")
        return merge

    # comments ------------------------------------------------------------------------------
    def list_comments(self, number: int) -> list[Comment]:
        return [c for pr, c in sorted(self.comments.values(), key=lambda pc: pc[1].id) if pr == number]

    def create_comment(self, number: int, body: str) -> Comment:
        comment = Comment(id=next(self._ids), body=body, author=self.bot_login, author_is_bot=True)
        self.comments[comment.id] = (number, comment)
        self._tell(f"commented on PR #{number}", body)
        return comment

    def add_user_comment(self, number: int, user: str, body: str) -> Comment:
        """A human's comment (the demo types slash commands with it)."""
        comment = Comment(id=next(self._ids), body=body, author=user)
        self.comments[comment.id] = (number, comment)
        return comment

    def edit_comment(self, comment_id: int, body: str) -> None:
        number, comment = self.comments[comment_id]
        self.comments[comment_id] = (number, replace(comment, body=body))
        self._tell(f"edited comment {comment_id} on PR #{number}", body)

    def delete_comment(self, comment_id: int) -> None:
        number, _ = self.comments.pop(comment_id)
        self._tell(f"deleted comment {comment_id} on PR #{number}")

    def react(self, comment_id: int, reaction: Reaction) -> None:
        self.reactions.append((comment_id, reaction))
        self._tell(f"reacted {reaction} to comment {comment_id}")

    # check runs ----------------------------------------------------------------------------
    def find_check_run(self, head_sha: str, name: str) -> CheckRun | None:
        found = [c.run for c in self.checks.values() if c.run.head_sha == head_sha and c.run.name == name]
        return max(found, key=lambda r: r.id) if found else None

    def create_check_run(self, *, head_sha: str, name: str, status: Literal["queued", "in_progress", "completed"],
                         conclusion: str | None = None, output: CheckRunOutput | None = None,
                         details_url: str | None = None) -> CheckRun:
        run = CheckRun(id=next(self._ids), name=name, head_sha=head_sha, status=status, conclusion=conclusion)
        self.checks[run.id] = _Check(run, output)
        self._tell(f"check run {name} on {head_sha[:7]}: {conclusion or status}")
        return run

    def update_check_run(self, check_run_id: int, *,
                         status: Literal["queued", "in_progress", "completed"] | None = None,
                         conclusion: str | None = None, output: CheckRunOutput | None = None) -> None:
        check = self.checks[check_run_id]
        check.run = replace(check.run, status=status or check.run.status, conclusion=conclusion or check.run.conclusion)
        check.output = output or check.output
        title = f" — {output.title}" if output else ""
        self._tell(f"check run {check.run.name} on {check.run.head_sha[:7]}: {check.run.conclusion or check.run.status}"
                   f"{title}")

    # permissions ---------------------------------------------------------------------------
    def permission(self, user: str) -> Permission:
        return self.permissions.get(user, "none")

    def is_team_member(self, org: str, team_slug: str, user: str) -> bool:
        return user in self.teams.get(f"{org}/{team_slug}", set())

    # deployments ---------------------------------------------------------------------------
    def create_deployment(self, *, ref: str, environment: str, description: str,
                          payload: Mapping[str, object]) -> Deployment:
        dep = Deployment(id=next(self._ids), ref=ref, sha=self._git("rev-parse", ref), environment=environment,
                         payload=dict(payload))
        self.deployments[dep.id] = dep
        self._tell(f"deployment {dep.id} of {ref[:7]} to {environment}: created")
        return dep

    def set_deployment_status(self, deployment_id: int, *,
                              state: Literal["queued", "in_progress", "success", "failure", "error", "inactive"],
                              description: str, environment_url: str | None = None, log_url: str | None = None) -> None:
        dep = self.deployments[deployment_id]
        self.deployments[deployment_id] = replace(dep, state=state)
        self.statuses.setdefault(deployment_id, []).append((state, description))
        self._tell(f"deployment {deployment_id} to {dep.environment}: {state} — {description}")

    def list_deployments(self, *, environment: str) -> list[Deployment]:
        return sorted((d for d in self.deployments.values() if d.environment == environment),
                      key=lambda d: d.id, reverse=True)

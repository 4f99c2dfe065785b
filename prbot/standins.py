"""In-process stand-ins for `prbot demo`: GitHub, the store and the clusters, so that the demo runs
the flows (`prbot.flows`) exactly as the worker runs them, with nothing to set up.

- `MemoryForge` (`prbot.ports.Forge`): one repository whose git side is a real bare repository on
  disk (its `clone_url` is a ``file://`` URL the real `prbot.workspace.Mirror` fetches from and pushes
  to) and whose pull requests, comments, check runs, labels, reactions and deployments are kept in
  memory, following GitHub's rules where the flows meet them: one open PR per head and base, a merge
  refused while a required check has not passed or when the head moved, real merge commits (or
  squashes) computed by git, auto-merge only on a PR that is not mergeable yet, and merged later,
  as GitHub does, once its required checks pass (`run_auto_merge`).  A `listener` is told about
  every write the bot makes: the demo prints them.
- `MemoryStore` (`prbot.ports.Store`): a dictionary.
- `StandinClusters` (`prbot.ports.Deployer`): the clusters, with an Argo CD, a Flux and a kubelet
  played one step per poll.  The sync is asked for with the same pure code the real deployer sends
  (`prbot.cluster.sync`), and progress is judged by the same pure code (`prbot.cluster.health`)
  from the Application, Kustomization / HelmRelease and workloads the stand-in keeps, so the demo
  shows the states and reasons a real rollout shows: waiting (Argo CD busy with an automated sync),
  syncing, progressing with workload counts, healthy — or failed, for the targets in `fail`.

Not used by the service.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prbot import gitrepo
from prbot.cluster.health import (
    WORKLOAD_KINDS,
    argocd_progress,
    flux_progress,
    rollout_progress,
    workload_state,
)
from prbot.cluster.names import check_api_version
from prbot.cluster.sync import ObjectRef, argocd_sync, confine, flux_sync, subject
from prbot.config import SyncSpec
from prbot.errors import ForgeError, NotFound, NotServed, RenderError
from prbot.model import Target
from prbot.ports import (
    CheckRun,
    CheckRunOutput,
    Comment,
    Deployment,
    MergeMethod,
    Permission,
    PullRequest,
    Reaction,
)
from prbot.progress import Progress
from prbot.render import render_target

Listener = Callable[[str, str], None]          # (what happened, text the bot posted)

PASSING = frozenset({"success", "neutral", "skipped"})
GITHUB = ("GitHub", "noreply@github.com")


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------

class MemoryStore:
    """`prbot.ports.Store` in a dictionary (the service's is SQLite or Redis)."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._data[key] = value

    def put_if_absent(self, key: str, value: str) -> bool:
        with self._lock:
            if key in self._data:
                return False
            self._data[key] = value
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def items(self, prefix: str) -> Iterator[tuple[str, str]]:
        with self._lock:
            found = sorted((k, v) for k, v in self._data.items() if k.startswith(prefix))
        return iter(found)


# --------------------------------------------------------------------------------------------
# GitHub
# --------------------------------------------------------------------------------------------

@dataclass
class _Check:
    run: CheckRun
    output: CheckRunOutput | None = None


def _git_env() -> dict[str, str]:
    return {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C",
            "GIT_AUTHOR_NAME": GITHUB[0], "GIT_AUTHOR_EMAIL": GITHUB[1],
            "GIT_COMMITTER_NAME": GITHUB[0], "GIT_COMMITTER_EMAIL": GITHUB[1]}


@dataclass
class MemoryForge:
    """One repository: its git data in a bare repository at `origin` (the `clone_url`).

    `required_checks`: the checks branch protection of the default branch requires (merges wait
    for them).  `permissions` / `teams`: who may do what (`/prbot` commands ask).
    """

    full_name: str
    origin: Path
    default_branch: str = "main"
    bot_login: str = "prbot[bot]"
    permissions: dict[str, Permission] = field(default_factory=dict)
    teams: dict[str, set[str]] = field(default_factory=dict)        # "org/team" -> logins
    required_checks: tuple[str, ...] = ()
    allow_auto_merge: bool = True
    listener: Listener | None = None
    pulls: dict[int, PullRequest] = field(default_factory=dict)
    issues: dict[int, str] = field(default_factory=dict)                      # number -> title (not PRs)
    comments: dict[int, tuple[int, Comment]] = field(default_factory=dict)   # id -> (pr, comment)
    reactions: list[tuple[int, str]] = field(default_factory=list)
    checks: dict[int, _Check] = field(default_factory=dict)
    deployments: dict[int, Deployment] = field(default_factory=dict)
    statuses: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    auto_merge: dict[int, MergeMethod] = field(default_factory=dict)          # PR -> merge method
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))      # PR numbers
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1001))       # everything else

    clone_url: str = field(init=False)
    html_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.clone_url = self.origin.as_uri()
        self.html_url = f"https://github.example/{self.full_name}"

    def _tell(self, what: str, body: str = "") -> None:
        if self.listener is not None:
            self.listener(what, body)

    def _git(self, *args: str, ok: tuple[int, ...] = (0,)) -> str:
        proc = subprocess.run(["git", "--git-dir", str(self.origin), *args], capture_output=True, text=True,
                              env=_git_env())
        if proc.returncode not in ok:
            raise ForgeError(f"git {args[0]} failed in {self.full_name}: {proc.stderr.strip()[:300]}")
        return proc.stdout.strip()

    def _sha(self, branch: str) -> str | None:
        out = self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}", ok=(0, 1))
        return out or None

    def git_token(self) -> str:
        return "demo-token"

    # pull requests -------------------------------------------------------------------------
    def get_pull(self, number: int) -> PullRequest:
        pr = self.pulls.get(number)
        if pr is None:
            raise NotFound(f"pull request #{number} not found", status=404)
        if pr.state == "open":                       # head and base follow their branches, as on GitHub
            head, base = self._sha(pr.head_ref), self._sha(pr.base_ref)
            pr = replace(pr, head_sha=head or pr.head_sha, base_sha=base or pr.base_sha)
            self.pulls[number] = pr
            self._git("update-ref", f"refs/pull/{number}/head", pr.head_sha)
        return pr

    def find_pull(self, head_branch: str, *, state: Literal["open", "closed", "all"] = "open") -> PullRequest | None:
        found = [p for p in self.pulls.values() if p.head_ref == head_branch and (state == "all" or p.state == state)]
        return self.get_pull(max(found, key=lambda p: p.number).number) if found else None

    def create_pull(self, *, title: str, body: str, head: str, base: str) -> PullRequest:
        head_sha, base_sha = self._sha(head), self._sha(base)
        if head_sha is None or base_sha is None:
            raise ForgeError(f"Validation Failed: {'head' if head_sha is None else 'base'} invalid", status=422)
        if any(p.state == "open" and p.head_ref == head and p.base_ref == base for p in self.pulls.values()):
            raise ForgeError(f"Validation Failed: A pull request already exists for "
                             f"{self.full_name.split('/')[0]}:{head}.", status=422)
        if self._is_ancestor(head_sha, base_sha):
            raise ForgeError(f"Validation Failed: No commits between {base} and {head}", status=422)
        number = next(self._numbers)
        self._git("update-ref", f"refs/pull/{number}/head", head_sha)
        pr = PullRequest(number=number, title=title, body=body, state="open", merged=False, draft=False,
                         head_ref=head, head_sha=head_sha, head_repo=self.full_name, base_ref=base,
                         base_sha=base_sha, author=self.bot_login, repo=self.full_name,
                         html_url=f"{self.html_url}/pull/{number}")
        self.pulls[number] = pr
        self._tell(f"opened PR #{number} {head} → {base}: {title}", body)
        return pr

    def _is_ancestor(self, a: str, b: str) -> bool:
        proc = subprocess.run(["git", "--git-dir", str(self.origin), "merge-base", "--is-ancestor", a, b],
                              capture_output=True, env=_git_env())
        return proc.returncode == 0

    def update_pull(self, number: int, *, title: str | None = None, body: str | None = None,
                    state: Literal["open", "closed"] | None = None) -> None:
        pr = self.get_pull(number)
        self.pulls[number] = replace(pr, title=title if title is not None else pr.title,
                                     body=body if body is not None else pr.body, state=state or pr.state)
        if state == "closed":
            self.auto_merge.pop(number, None)
        self._tell(f"updated PR #{number}: {self.pulls[number].title}" + (f" ({state})" if state else ""),
                   body or "")

    def add_labels(self, number: int, labels: Sequence[str]) -> None:
        pr = self.get_pull(number)
        self.pulls[number] = replace(pr, labels=tuple(dict.fromkeys((*pr.labels, *labels))))
        self._tell(f"labelled PR #{number}: {', '.join(labels)}")

    def missing_checks(self, number: int) -> list[str]:
        """The required checks not (yet) passing on the PR's head, as branch protection sees them."""
        pr = self.get_pull(number)
        latest: dict[str, CheckRun] = {}
        for check in sorted(self.checks.values(), key=lambda c: c.run.id):
            if check.run.head_sha == pr.head_sha:
                latest[check.run.name] = check.run
        return [name for name in self.required_checks
                if name not in latest or latest[name].status != "completed" or latest[name].conclusion not in PASSING]

    def enable_auto_merge(self, pull: PullRequest, *, method: MergeMethod = "squash") -> bool:
        """As GitHub's `enablePullRequestAutoMerge`: refused (False) when the repository does not allow
        auto-merge or when the PR could be merged right now ("clean status")."""
        pr = self.get_pull(pull.number)
        if not self.allow_auto_merge or pr.state != "open" or not self.missing_checks(pr.number):
            return False
        self.auto_merge[pr.number] = method
        self._tell(f"enabled auto-merge ({method}) on PR #{pr.number}")
        return True

    def run_auto_merge(self) -> list[int]:
        """What GitHub does in the background: merge every PR with auto-merge whose required checks
        now pass.  The numbers merged."""
        merged = []
        for number, method in sorted(self.auto_merge.items()):
            pr = self.get_pull(number)
            if pr.state == "open" and not self.missing_checks(number) and \
                    self._merge(pr, method, why="auto-merge: the required checks passed"):
                merged.append(number)
        return merged

    def merge_pull(self, number: int, *, sha: str, method: MergeMethod = "squash") -> str | None:
        pr = self.get_pull(number)
        if pr.state != "open" or pr.head_sha != sha or self.missing_checks(number):
            return None
        return self._merge(pr, method, why="")

    def _merge(self, pr: PullRequest, method: MergeMethod, *, why: str) -> str | None:
        base = self._sha(pr.base_ref)
        assert base is not None
        proc = subprocess.run(["git", "--git-dir", str(self.origin), "merge-tree", "--write-tree", "--no-messages",
                               base, pr.head_sha], capture_output=True, text=True, env=_git_env())
        if proc.returncode != 0:                         # 1: conflicts (GitHub: "not mergeable")
            return None
        tree = proc.stdout.split("\n", 1)[0].strip()
        if method == "merge":
            message = f"Merge pull request #{pr.number} from {self.full_name.split('/')[0]}/{pr.head_ref}\n\n{pr.title}"
            parents = ["-p", base, "-p", pr.head_sha]
        else:                                            # squash (and rebase, replayed as one commit)
            message = f"{pr.title} (#{pr.number})\n\n{pr.body}".strip()
            parents = ["-p", base]
        merge = self._git("commit-tree", tree, *parents, "-m", message)
        self._git("update-ref", f"refs/heads/{pr.base_ref}", merge, base)
        self.pulls[pr.number] = replace(pr, state="closed", merged=True, merge_commit_sha=merge, base_sha=base)
        self.auto_merge.pop(pr.number, None)
        self._tell(f"merged PR #{pr.number} into {pr.base_ref} as {merge[:7]} ({method})"
                   + (f" — {why}" if why else ""))
        return merge

    # comments ------------------------------------------------------------------------------
    def list_comments(self, number: int) -> list[Comment]:
        return [c for pr, c in sorted(self.comments.values(), key=lambda pc: pc[1].id) if pr == number]

    def open_issue(self, title: str) -> int:
        """An issue (not a pull request): its number, from the PRs' sequence as on GitHub."""
        number = next(self._numbers)
        self.issues[number] = title
        return number

    def _conversation(self, number: int) -> None:
        """A PR or an issue: comments go on either."""
        if number not in self.issues:
            self.get_pull(number)

    def create_comment(self, number: int, body: str) -> Comment:
        self._conversation(number)
        comment = Comment(id=next(self._ids), body=body, author=self.bot_login, author_is_bot=True)
        self.comments[comment.id] = (number, comment)
        self._tell(f"commented on {'issue' if number in self.issues else 'PR'} #{number}", body)
        return comment

    def add_user_comment(self, number: int, user: str, body: str) -> Comment:
        """A person's comment (the demo types slash commands with it)."""
        self._conversation(number)
        comment = Comment(id=next(self._ids), body=body, author=user)
        self.comments[comment.id] = (number, comment)
        return comment

    def _comment(self, comment_id: int) -> tuple[int, Comment]:
        found = self.comments.get(comment_id)
        if found is None:
            raise NotFound(f"comment {comment_id} not found", status=404)
        return found

    def edit_comment(self, comment_id: int, body: str) -> None:
        number, comment = self._comment(comment_id)
        self.comments[comment_id] = (number, replace(comment, body=body))
        self._tell(f"edited comment {comment_id} on PR #{number}", body)

    def delete_comment(self, comment_id: int) -> None:
        number, _ = self._comment(comment_id)
        del self.comments[comment_id]
        self._tell(f"deleted comment {comment_id} on PR #{number}")

    def react(self, comment_id: int, reaction: Reaction) -> None:
        number, comment = self._comment(comment_id)
        self.reactions.append((comment_id, reaction))
        self._tell(f"reacted {reaction} to {comment.author}'s comment on PR #{number}")

    # check runs ----------------------------------------------------------------------------
    def find_check_run(self, head_sha: str, name: str) -> CheckRun | None:
        found = [c.run for c in self.checks.values() if c.run.head_sha == head_sha and c.run.name == name]
        return max(found, key=lambda r: r.id) if found else None

    def create_check_run(self, *, head_sha: str, name: str, status: Literal["queued", "in_progress", "completed"],
                         conclusion: str | None = None, output: CheckRunOutput | None = None,
                         details_url: str | None = None) -> CheckRun:
        run = CheckRun(id=next(self._ids), name=name, head_sha=head_sha, status=status, conclusion=conclusion)
        self.checks[run.id] = _Check(run, output)
        title = f" — {output.title}" if output else ""
        self._tell(f"check run {name} on {head_sha[:7]}: {conclusion or status}{title}")
        return run

    def update_check_run(self, check_run_id: int, *,
                         status: Literal["queued", "in_progress", "completed"] | None = None,
                         conclusion: str | None = None, output: CheckRunOutput | None = None) -> None:
        check = self.checks.get(check_run_id)
        if check is None:
            raise NotFound(f"check run {check_run_id} not found", status=404)
        check.run = replace(check.run, status=status or check.run.status, conclusion=conclusion or check.run.conclusion)
        check.output = output or check.output
        title = f" — {output.title}" if output else ""
        self._tell(f"check run {check.run.name} on {check.run.head_sha[:7]}: {check.run.conclusion or check.run.status}"
                   f"{title}")

    def check_output(self, head_sha: str, name: str) -> CheckRunOutput | None:
        run = self.find_check_run(head_sha, name)
        return self.checks[run.id].output if run else None

    # permissions ---------------------------------------------------------------------------
    def permission(self, user: str) -> Permission:
        return self.permissions.get(user, "none")

    def is_team_member(self, org: str, team_slug: str, user: str) -> bool:
        return user in self.teams.get(f"{org}/{team_slug}", set())

    # deployments ---------------------------------------------------------------------------
    def create_deployment(self, *, ref: str, environment: str, description: str,
                          payload: Mapping[str, object]) -> Deployment:
        sha = self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", ok=(0, 1))
        if not sha:
            raise ForgeError(f"No ref found for: {ref}", status=422)
        dep = Deployment(id=next(self._ids), ref=ref, sha=sha, environment=environment, payload=dict(payload))
        self.deployments[dep.id] = dep
        self._tell(f"deployment {dep.id} of {sha[:7]} to {environment} created: {description}")
        return dep

    def set_deployment_status(self, deployment_id: int, *,
                              state: Literal["queued", "in_progress", "success", "failure", "error", "inactive"],
                              description: str, environment_url: str | None = None, log_url: str | None = None) -> None:
        dep = self.deployments.get(deployment_id)
        if dep is None:
            raise NotFound(f"deployment {deployment_id} not found", status=404)
        self.deployments[deployment_id] = replace(dep, state=state)
        self.statuses.setdefault(deployment_id, []).append((state, description))
        self._tell(f"deployment {deployment_id} to {dep.environment}: {state} — {description}")

    def list_deployments(self, *, environment: str, limit: int = 30, sha: str | None = None) -> list[Deployment]:
        return sorted((d for d in self.deployments.values()
                       if d.environment == environment and (sha is None or d.sha == sha)),
                      key=lambda d: d.id, reverse=True)[:limit]


# --------------------------------------------------------------------------------------------
# The clusters
# --------------------------------------------------------------------------------------------

def _merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch, in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _noted(ticket: Mapping[str, Any], progress: Progress) -> Progress:
    """The progress with what the sync left out (as prbot's deployer says it)."""
    notes = ticket.get("notes") or []
    return replace(progress, reason=f"{progress.reason} (note: {'; '.join(notes)})") if notes else progress


def _key(cluster: str, ref: ObjectRef) -> str:
    return f"{cluster}|{ref.api_version}|{ref.kind}|{ref.namespace or ''}|{ref.name}"


SERVED: Mapping[tuple[str, str], str] = {             # what the stand-in clusters serve: Argo CD, Flux 2.3+
    ("argoproj.io", "Application"): "argoproj.io/v1alpha1",
    ("kustomize.toolkit.fluxcd.io", "Kustomization"): "kustomize.toolkit.fluxcd.io/v1",
    ("helm.toolkit.fluxcd.io", "HelmRelease"): "helm.toolkit.fluxcd.io/v2",
    ("source.toolkit.fluxcd.io", "GitRepository"): "source.toolkit.fluxcd.io/v1",
    ("source.toolkit.fluxcd.io", "HelmRepository"): "source.toolkit.fluxcd.io/v1",
    ("source.toolkit.fluxcd.io", "HelmChart"): "source.toolkit.fluxcd.io/v1",
    ("source.toolkit.fluxcd.io", "OCIRepository"): "source.toolkit.fluxcd.io/v1beta2",
}

# The built-in kinds the stand-in clusters serve: (apiVersion, kind) -> namespaced.
BUILTIN: Mapping[tuple[str, str], bool] = {
    **{("v1", k): True for k in ("ConfigMap", "Secret", "Service", "ServiceAccount", "PersistentVolumeClaim", "Pod")},
    **{("v1", k): False for k in ("Namespace", "Node", "PersistentVolume")},
    **{("apps/v1", k): True for k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")},
    **{("batch/v1", k): True for k in ("Job", "CronJob")},
    ("networking.k8s.io/v1", "Ingress"): True, ("networking.k8s.io/v1", "NetworkPolicy"): True,
    ("networking.k8s.io/v1", "IngressClass"): False,
    ("rbac.authorization.k8s.io/v1", "Role"): True, ("rbac.authorization.k8s.io/v1", "RoleBinding"): True,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): False,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): False,
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): False,
    ("scheduling.k8s.io/v1", "PriorityClass"): False, ("storage.k8s.io/v1", "StorageClass"): False,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): True, ("policy/v1", "PodDisruptionBudget"): True,
}


@dataclass
class StandinClusters:
    """`prbot.ports.Deployer` over in-memory clusters: each poll moves the controllers one step.

    `source`: the git repository the controllers render from (the forge's bare repository).
    `fail`: targets ("app/env") whose rollout never becomes ready.  `busy`: Argo CD is still
    running an automated sync of the previous commit when prbot asks for its sync, so prbot waits.
    `served`: the clusters' discovery, (API group, kind) -> apiVersion (default `SERVED`); prbot's
    sync asks each kind at the version found there, and a kind missing is not served.  `kinds`:
    the other kinds served, (apiVersion, kind) -> namespaced (default `BUILTIN`; add CRDs there).
    A confined apply (a preview) sends only what these say is namespaced, as prbot's deployer does.
    """

    source: Path
    fail: frozenset[str] = frozenset()
    busy: bool = True
    served: Mapping[tuple[str, str], str] = field(default_factory=lambda: dict(SERVED))
    kinds: Mapping[tuple[str, str], bool] = field(default_factory=lambda: dict(BUILTIN))
    live: dict[str, dict[str, Any]] = field(default_factory=dict)      # key -> object, per cluster
    _version: Iterator[int] = field(default_factory=lambda: itertools.count(100))

    # -- prbot.ports.Deployer ---------------------------------------------------------------------
    def start(self, cluster: str, target: Target, spec: SyncSpec, sha: str, *,
              objects: Sequence[Mapping[str, Any]] = (), repo_urls: Sequence[str] = (),
              info: Sequence[tuple[str, str]] = ()) -> tuple[dict[str, Any], Progress]:
        ticket: dict[str, Any] = {"kind": spec.kind, "cluster": cluster, "app": target.app, "env": target.env,
                                  "sha": sha, "subject": None, "token": None, "notes": [],
                                  "requested": False, "workloads": [], "sources": [], "polls": 0,
                                  "repo_urls": list(repo_urls), "info": [list(i) for i in info]}
        try:
            ref = subject(target, spec, self._served_version)
        except NotServed as e:
            return ticket, Progress("failed", f"cluster {cluster} does not serve {e.kind} ({e.api_version}): is the "
                                              "controller that defines it installed? Nothing was synced")
        ticket["subject"] = ref.to_json() if ref else None
        left_out: list[tuple[str, str]] = []
        if spec.kind == "apply" and spec.options.get("confine") and target.namespace:
            rendered, left_out = confine(objects, target.namespace, namespaced=self._namespaced, cluster=cluster)
        elif spec.kind == "apply":
            rendered = [dict(o) for o in objects]
        else:
            try:
                rendered = self._render(target, sha)
            except RenderError as exc:
                controller = "Argo CD" if spec.kind == "argocd" else "Flux"
                return ticket, Progress("failed", f"{controller} cannot render {target.path} at {sha[:7]}: {exc}")
        workloads = [o for o in rendered if o.get("kind") in WORKLOAD_KINDS]
        ticket["workloads"] = [self._seed_workload(cluster, target, o) for o in workloads]
        if spec.kind == "argocd":
            assert ref is not None
            self._seed_application(cluster, ref, target, sha, repo_urls)
            return ticket, self._argocd(ticket, info)
        if spec.kind == "flux":
            assert ref is not None
            return ticket, self._flux_request(ticket, ref, target, sha)
        for key in ticket["workloads"]:
            self._roll_out(key, target.key in self.fail)                 # applied: a new generation
        ticket["requested"] = True
        return ticket, Progress("syncing", f"applied {len(rendered)} objects", left_out=tuple(left_out))

    def poll(self, ticket_in: Mapping[str, Any]) -> tuple[dict[str, Any], Progress]:
        ticket = copy.deepcopy(dict(ticket_in))
        ticket["polls"] = int(ticket.get("polls", 0)) + 1
        self._tick(ticket)
        if ticket["kind"] == "argocd":
            return ticket, self._argocd(ticket, [(str(k), str(v)) for k, v in ticket.get("info") or []])
        if ticket["kind"] == "flux":
            ref = ObjectRef.from_json(ticket["subject"])
            live = self.live.get(_key(ticket["cluster"], ref))
            sources = [self.live.get(k) for k in ticket["sources"]]
            return ticket, _noted(ticket, flux_progress(live, ticket["token"], ticket["sha"], sources=sources,
                                                        workloads=self._counted(ticket)))
        return ticket, rollout_progress((self._describe(k), self.live.get(k)) for k in ticket["workloads"])

    def _served_version(self, group: str, kind: str) -> str | None:
        return self.served.get((group, kind))

    def _namespaced(self, api_version: str, kind: str) -> bool:
        """What the stand-in's discovery says: namespaced or not; raises `NotServed`."""
        check_api_version(api_version, kind)
        if (api_version, kind) in self.kinds:
            return self.kinds[(api_version, kind)]
        group = api_version.rpartition("/")[0]
        if group and self.served.get((group, kind)) == api_version:
            return True                                  # the Argo CD and Flux kinds are namespaced
        raise NotServed(api_version, kind)

    # -- rendering and workloads ------------------------------------------------------------------
    def _render(self, target: Target, sha: str) -> list[dict[str, Any]]:
        with gitrepo.materialize(self.source, sha) as root:
            return render_target(root, target)

    def _seed_workload(self, cluster: str, target: Target, obj: Mapping[str, Any]) -> str:
        """The workload as it runs before the sync: rolled out, ready."""
        meta = obj.get("metadata") or {}
        ref = ObjectRef(str(obj.get("apiVersion")), str(obj.get("kind")), str(meta.get("name")),
                        meta.get("namespace") or target.namespace)
        key = _key(cluster, ref)
        if key not in self.live:
            replicas = int((obj.get("spec") or {}).get("replicas") or 1)
            live = {"apiVersion": ref.api_version, "kind": ref.kind,
                    "metadata": {"name": ref.name, "namespace": ref.namespace, "generation": 1},
                    "spec": {"replicas": replicas}, "status": {}}
            self.live[key] = live
            self._workload_status(live, updated=replicas, available=replicas, failed=False)
        return key

    @staticmethod
    def _describe(key: str) -> str:
        _, _, kind, namespace, name = key.split("|")
        return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"

    def _roll_out(self, key: str, failing: bool) -> None:
        """A new generation of the workload was applied: its rollout starts."""
        live = self.live[key]
        live["metadata"]["generation"] += 1
        live["_rollout"] = {"updated": 0, "available": 0, "failing": failing}

    def _step_rollout(self, key: str) -> None:
        """One step of the workload's controller: it observes the generation and updates a replica,
        then each step makes the updated replicas available and updates one more; a failing rollout
        stops at its first replica and exceeds its progress deadline."""
        live = self.live[key]
        rollout = live.get("_rollout")
        if rollout is None:
            return
        replicas = int(live["spec"]["replicas"])
        if live["status"].get("observedGeneration", 0) < live["metadata"]["generation"]:
            live["status"]["observedGeneration"] = live["metadata"]["generation"]
            rollout["updated"] = min(replicas, 1)
        elif rollout["failing"]:
            rollout["failed"] = True
        else:
            rollout["available"] = rollout["updated"]
            rollout["updated"] = min(replicas, rollout["updated"] + 1)
        self._workload_status(live, updated=rollout["updated"], available=rollout["available"],
                              failed=bool(rollout.get("failed")))
        if rollout["available"] >= replicas:
            del live["_rollout"]

    @staticmethod
    def _workload_status(live: dict[str, Any], *, updated: int, available: int, failed: bool) -> None:
        replicas = int(live["spec"]["replicas"])
        status = live["status"]
        status.setdefault("observedGeneration", live["metadata"]["generation"])
        if live["kind"] == "Deployment":
            status.update({"replicas": replicas, "updatedReplicas": updated, "readyReplicas": available,
                           "availableReplicas": available})
            if failed:
                status["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                         "message": f'ReplicaSet "{live["metadata"]["name"]}" has timed out '
                                                    "progressing."}]
        elif live["kind"] == "StatefulSet":
            status.update({"replicas": replicas, "readyReplicas": available, "updatedReplicas": updated,
                           "currentRevision": "new" if updated >= replicas else "old", "updateRevision": "new"})
        else:                                               # DaemonSet: one pod per node
            status.update({"desiredNumberScheduled": replicas, "updatedNumberScheduled": updated,
                           "numberAvailable": available})

    def _counted(self, ticket: Mapping[str, Any]) -> tuple[int, int]:
        states = [workload_state(self.live.get(k))[0] for k in ticket["workloads"]]
        return sum(s == "ready" for s in states), len(states)

    def _settled(self, ticket: Mapping[str, Any]) -> str:
        """"ready", "failed" or "progressing" over the target's workloads."""
        states = [workload_state(self.live.get(k))[0] for k in ticket["workloads"]]
        return "failed" if "failed" in states else "ready" if all(s == "ready" for s in states) else "progressing"

    def _tick(self, ticket: dict[str, Any]) -> None:
        """Time passes: the controllers take one step (the sync controller, then the workloads')."""
        if ticket["kind"] == "argocd":
            self._argocd_controller(ticket)
        for key in ticket["workloads"]:
            self._step_rollout(key)
        if ticket["kind"] == "argocd":
            self._argocd_refresh(ticket)
        elif ticket["kind"] == "flux":
            self._flux_controller(ticket)

    # -- Argo CD ------------------------------------------------------------------------------------
    def _seed_application(self, cluster: str, ref: ObjectRef, target: Target, sha: str,
                          repo_urls: Sequence[str]) -> None:
        key = _key(cluster, ref)
        if key in self.live:
            return
        previous = self._parent(sha)
        app: dict[str, Any] = {
            "apiVersion": ref.api_version, "kind": ref.kind,
            "metadata": {"name": ref.name, "namespace": ref.namespace, "resourceVersion": str(next(self._version))},
            "spec": {"project": "default",
                     "source": {"repoURL": repo_urls[0] if repo_urls else self.source.as_uri(), "path": target.path,
                                "targetRevision": "HEAD"},
                     "destination": {"server": "https://kubernetes.default.svc", "namespace": target.namespace}},
            "status": {"sync": {"status": "OutOfSync", "revision": previous}, "health": {"status": "Healthy"},
                       "operationState": {"phase": "Succeeded", "operation": {"sync": {"revision": previous}},
                                          "syncResult": {"revision": previous}}}}
        if self.busy:                     # an automated sync of the previous commit is still running
            operation = {"sync": {"revision": previous}, "initiatedBy": {"automated": True}}
            app["operation"] = operation
            app["status"]["operationState"] = {"phase": "Running", "operation": copy.deepcopy(operation),
                                               "message": "one or more tasks are running"}
        self.live[key] = app

    def _parent(self, sha: str) -> str:
        proc = subprocess.run(["git", "--git-dir", str(self.source), "rev-parse", "--verify", "--quiet", f"{sha}^1"],
                              capture_output=True, text=True, env=_git_env())
        return proc.stdout.strip() or sha

    def _argocd(self, ticket: dict[str, Any], info: Sequence[tuple[str, str]]) -> Progress:
        """What prbot's deployer does for Argo CD: ask for the sync until it is asked, then judge."""
        ref = ObjectRef.from_json(ticket["subject"])
        key = _key(ticket["cluster"], ref)
        live = self.live.get(key)
        if ticket["requested"]:
            return argocd_progress(live, ticket["sha"])
        step = argocd_sync(live, ref, ticket["sha"], repo_urls=ticket["repo_urls"], info=info)
        if step.error:
            return Progress("failed", step.error)
        if step.wait:
            return argocd_progress(live, ticket["sha"]) if live else Progress("waiting", step.wait)
        ticket["requested"] = True
        if step.already:
            return argocd_progress(live, ticket["sha"])
        assert live is not None
        for request in step.requests:
            body = copy.deepcopy(request.body)
            if body["metadata"].pop("resourceVersion", live["metadata"]["resourceVersion"]) != \
                    live["metadata"]["resourceVersion"]:
                ticket["requested"] = False
                return Progress("waiting", "the Application changed while prbot asked for the sync; asking again")
            _merge_patch(live, body)
            live["metadata"]["resourceVersion"] = str(next(self._version))
        return Progress("syncing", f"sync to {ticket['sha'][:7]} requested from Argo CD")

    def _argocd_controller(self, ticket: dict[str, Any]) -> None:
        app = self.live[_key(ticket["cluster"], ObjectRef.from_json(ticket["subject"]))]
        status = app["status"]
        operation = app.get("operation")
        state = status.get("operationState") or {}
        if isinstance(operation, dict) and state.get("phase") != "Running":          # the operation starts
            status["operationState"] = {"phase": "Running", "operation": copy.deepcopy(operation),
                                        "message": "one or more tasks are running", "startedAt": _stamp()}
        elif isinstance(operation, dict):                                           # ... and finishes
            revision = str((operation.get("sync") or {}).get("revision") or "")
            del app["operation"]
            status["operationState"] = {**state, "phase": "Succeeded", "finishedAt": _stamp(),
                                        "message": "successfully synced (all tasks run)",
                                        "syncResult": {"revision": revision}}
            status["sync"] = {"status": "Synced", "revision": revision}
            if revision == ticket["sha"]:
                for key in ticket["workloads"]:
                    self._roll_out(key, f"{ticket['app']}/{ticket['env']}" in self.fail)

    def _argocd_refresh(self, ticket: dict[str, Any]) -> None:
        """Argo CD's view of the workloads: the Application's resource tree and health."""
        app = self.live[_key(ticket["cluster"], ObjectRef.from_json(ticket["subject"]))]
        status = app["status"]
        resources = []
        for key in ticket["workloads"]:
            state_, detail = workload_state(self.live.get(key))
            health = {"ready": "Healthy", "failed": "Degraded"}.get(state_, "Progressing")
            _, api_version, kind, namespace, name = key.split("|")
            resources.append({"group": api_version.rpartition("/")[0], "version": api_version.rpartition("/")[2],
                              "kind": kind, "namespace": namespace, "name": name, "status": "Synced",
                              "health": {"status": health} | ({} if health == "Healthy" else {"message": detail})})
        status["resources"] = resources
        overall = self._settled(ticket)
        status["health"] = {"status": {"ready": "Healthy", "failed": "Degraded"}.get(overall, "Progressing")}
        app["metadata"]["resourceVersion"] = str(next(self._version))

    # -- Flux ---------------------------------------------------------------------------------------
    def _flux_request(self, ticket: dict[str, Any], ref: ObjectRef, target: Target, sha: str) -> Progress:
        cluster = ticket["cluster"]
        previous = self._parent(sha)
        key = _key(cluster, ref)
        git_source = ObjectRef(self.served[("source.toolkit.fluxcd.io", "GitRepository")], "GitRepository",
                               "flux-system", ref.namespace)
        if key not in self.live:
            spec: dict[str, Any] = {"interval": "10m"}
            status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded"}]}
            source_ref = {"kind": "GitRepository", "name": git_source.name, "namespace": git_source.namespace}
            if ref.kind == "HelmRelease":
                spec["chart"] = {"spec": {"chart": target.chart or target.path, "sourceRef": source_ref}}
                status["history"] = [{"chartVersion": self._chart_version(target, previous)}]
                chart_version = self._served_version("source.toolkit.fluxcd.io", "HelmChart")
                if chart_version is not None:                 # Flux makes a HelmChart where it serves one
                    chart = ObjectRef(chart_version, "HelmChart", f"{ref.namespace}-{ref.name}", ref.namespace)
                    status["helmChart"] = f"{chart.namespace}/{chart.name}"
                    self.live.setdefault(_key(cluster, chart), {"apiVersion": chart.api_version, "kind": chart.kind,
                                                                "metadata": {"name": chart.name,
                                                                             "namespace": chart.namespace},
                                                                "status": {}})
            else:
                spec["sourceRef"] = source_ref
                status["lastAppliedRevision"] = f"main@sha1:{previous}"
            self.live[key] = {"apiVersion": ref.api_version, "kind": ref.kind,
                              "metadata": {"name": ref.name, "namespace": ref.namespace}, "spec": spec,
                              "status": status}
            self.live.setdefault(_key(cluster, git_source), {
                "apiVersion": git_source.api_version, "kind": git_source.kind,
                "metadata": {"name": git_source.name, "namespace": git_source.namespace},
                "status": {"artifact": {"revision": f"main@sha1:{previous}"}}})
        ticket["token"] = _stamp()
        step = flux_sync(self.live[key], ref, ticket["token"], self._served_version)
        if step.error:
            return Progress("failed", step.error)
        ticket["notes"] = list(step.notes)
        for request in step.requests:
            live = self.live.get(_key(cluster, request.ref))
            if live is None:
                continue
            _merge_patch(live, request.body)
            if request.ref != ref:
                ticket["sources"].append(_key(cluster, request.ref))
        ticket["requested"] = True
        ticket["chart"] = self._chart_version(target, sha) if ref.kind == "HelmRelease" else None
        return _noted(ticket, Progress("syncing", f"reconcile requested from Flux for {ref}"))

    def _chart_version(self, target: Target, sha: str) -> str:
        if not target.chart:
            return "0.0.0"
        data = gitrepo.read_file(self.source, sha, f"{target.chart}/Chart.yaml") or b""
        found = re.search(rb"(?m)^version:\s*['\"]?([^'\"\s]+)", data)
        return found.group(1).decode() if found else "0.0.0"

    def _flux_controller(self, ticket: dict[str, Any]) -> None:
        ref = ObjectRef.from_json(ticket["subject"])
        obj = self.live[_key(ticket["cluster"], ref)]
        token, sha = ticket["token"], ticket["sha"]
        status = obj["status"]
        for key in ticket["sources"]:                       # the source controller fetches first
            source = self.live[key]
            if source["kind"] == "GitRepository":
                source["status"] = {"artifact": {"revision": f"main@sha1:{sha}"}, "lastHandledReconcileAt": token}
        if status.get("lastHandledReconcileAt") != token:      # then the Kustomization / HelmRelease
            status["lastHandledReconcileAt"] = token
            action = "Running 'upgrade' action" if ref.kind == "HelmRelease" else "Reconciliation in progress"
            status["conditions"] = [{"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": action}]
            for key in ticket["workloads"]:
                self._roll_out(key, f"{ticket['app']}/{ticket['env']}" in self.fail)
            return
        settled = self._settled(ticket)
        if settled == "progressing":
            return
        if settled == "failed":
            reason = "UpgradeFailed" if ref.kind == "HelmRelease" else "HealthCheckFailed"
            status["conditions"] = [{"type": "Ready", "status": "False", "reason": reason,
                                     "message": "health check failed: a workload exceeded its progress deadline"}]
            return
        if ref.kind == "HelmRelease":
            status["history"] = [{"chartVersion": ticket.get("chart") or "0.0.0"}]
            message = f"Helm upgrade succeeded for release {ref.namespace}/{ref.name}"
        else:
            status["lastAppliedRevision"] = f"main@sha1:{sha}"
            message = f"Applied revision: main@sha1:{sha}"
        status["conditions"] = [{"type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                                 "message": message}]


__all__ = ["BUILTIN", "SERVED", "Listener", "MemoryForge", "MemoryStore", "StandinClusters"]

"""Merge → deploy: merging is the deployment gate.

When a PR is merged into the default branch, each target it changed whose environment has a
cluster and whose app has a `sync` is deployed at the merge SHA:

- one GitHub Deployment per environment (ref = the merge SHA), `in_progress` while it syncs;
- the sync, sent by the `Deployer` (Argo CD operation, Flux reconcile, or server-side apply);
- a bounded wait for health, by polls: each poll is one job that reads the cluster once and is
  re-enqueued with a delay (`poll_deploy` says when), so waiting never blocks a worker and a worker
  restarted mid-wait picks it up from the state kept in the store;
- the Deployment's status `success` / `failure` with the reason, and ONE result comment on the
  merged PR, edited in place as the rollout moves;
- a deploy always ends: an error while starting a target's sync (the cluster unreachable, a 5xx
  after retries, anything raised) fails that target at once with the reason and ends the
  Deployment as `error`; an error while polling is a failed target too, except one the cluster may
  recover from (unreachable, 5xx), which keeps the target waiting with the reason shown until the
  environment's deadline ends it.  Never `in_progress` forever;
- when an environment turns healthy at a merge that changed images, the promotion PR into the
  next environment (`prbot.flows.promote`).

A locked environment takes no sync: its targets are `held` until `/prbot unlock` + `/prbot sync`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prbot.config import Config
from prbot.errors import PrbotError, RenderError, TransientError
from prbot.flows.context import Repo, config_at, env_state_key
from prbot.flows.locks import get_lock
from prbot.flows.promote import Provenance, promote_healthy
from prbot.flows.sticky import sticky_comment
from prbot.model import Target
from prbot.plan import Plan, TargetPlan
from prbot.ports import Deployer, Progress, PullRequest
from prbot.render import RenderPool, render_target
from prbot.report.markdown import code, md, short_sha
from prbot.report.texts import text
from prbot.targets import discover_targets

log = logging.getLogger("prbot.flows")

DEPLOY_MARKER = "<!-- prbot:deploy -->"
POLL_DELAYS = (5.0, 5.0, 10.0, 10.0, 20.0, 30.0)   # seconds between polls, then the last one repeated
ICONS = {"waiting": "⏳", "syncing": "🔄", "progressing": "🔄", "healthy": "✅", "failed": "❌", "held": "🔒"}
_IMAGE_LINE = re.compile(r"^[+-]\s*(?:- )?(?:image|newTag|tag|digest|newName):\s")


# --------------------------------------------------------------------------------------------
# State kept in the store between polls
# --------------------------------------------------------------------------------------------

@dataclass
class TargetDeploy:
    app: str
    ticket: dict[str, Any] | None = None
    progress: dict[str, Any] = field(default_factory=lambda: Progress("waiting", "not started").to_json())
    error: bool = False              # prbot could not start or poll the sync (GitHub state `error`)

    @property
    def state(self) -> Progress:
        return Progress.from_json(self.progress)


@dataclass
class EnvDeploy:
    env: str
    cluster: str
    deployment: int | None = None
    state: str = "waiting"           # waiting | syncing | progressing | healthy | failed | held
    reason: str = ""
    started: float = 0.0
    finished: float | None = None
    deadline: float = 0.0
    images_changed: bool = False
    promoted: str | None = None      # "#12" once the promotion PR is opened / updated, or why not
    targets: list[TargetDeploy] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.state in ("healthy", "failed", "held")


@dataclass
class DeployState:
    repo: str
    pr: int
    author: str
    sha: str
    started: float
    polls: int = 0
    envs: list[EnvDeploy] = field(default_factory=list)
    comment: int | None = None

    @property
    def done(self) -> bool:
        return all(e.done for e in self.envs)

    def to_json(self) -> str:
        return json.dumps({
            "repo": self.repo, "pr": self.pr, "author": self.author, "sha": self.sha, "started": self.started,
            "polls": self.polls, "comment": self.comment,
            "envs": [{**{k: v for k, v in e.__dict__.items() if k != "targets"},
                      "targets": [t.__dict__ for t in e.targets]} for e in self.envs]})

    @classmethod
    def from_json(cls, raw: str) -> DeployState:
        data = json.loads(raw)
        envs = [EnvDeploy(**{**{k: v for k, v in e.items() if k != "targets"},
                             "targets": [TargetDeploy(**t) for t in e.get("targets", [])]}) for e in data["envs"]]
        return cls(repo=data["repo"], pr=data["pr"], author=data["author"], sha=data["sha"], started=data["started"],
                   polls=data.get("polls", 0), envs=envs, comment=data.get("comment"))


def state_key(repo: str, sha: str) -> str:
    return f"deploy:{repo}:{sha}"


def load_state(repo: Repo, sha: str) -> DeployState | None:
    raw = repo.store.get(state_key(repo.name, sha))
    return DeployState.from_json(raw) if raw else None


def save_state(repo: Repo, state: DeployState) -> None:
    repo.store.put(state_key(repo.name, state.sha), state.to_json())


# --------------------------------------------------------------------------------------------
# What a merged PR changed
# --------------------------------------------------------------------------------------------

def images_changed(tp: TargetPlan) -> bool:
    """Whether a target's rendered diff moves an image (a container image, a values `tag` …)."""
    return any(_IMAGE_LINE.match(line) for c in tp.changes for line in c.diff.splitlines()
               if not line.startswith(("---", "+++")))


def pr_plan(repo: Repo, config: Config, pr: PullRequest, at: str) -> Plan:
    """The plan of the PR's own change (fork point … head), with the configuration at `at`.

    For a merge commit, a squash and a rebase alike, the fork point is the merge base of the PR's
    head and the commit before the merge, so other PRs merged meanwhile are not counted.
    """
    ws = repo.workspace
    ws.fetch(f"refs/pull/{pr.number}/head")
    head = ws.resolve(f"refs/pull/{pr.number}/head") or pr.head_sha
    before = ws.resolve(f"{at}^1") or pr.base_sha
    base = ws.merge_base(before, head) or pr.base_sha
    pool = RenderPool(cache_dir=repo.render_cache,
                      kube_versions={e.name: e.kubernetes_version for e in config.environments if e.kubernetes_version})
    return ws.plan(config, base, head, pool=pool)


def record_pr_targets(repo: Repo, number: int, plan: Plan) -> None:
    """Remember which (app, env) a PR changes, for `/prbot promote`, `sync` and `rollback`."""
    targets = [[t.app, t.env, t.status, images_changed(t)] for t in plan.targets]
    repo.store.put(f"prtargets:{repo.name}#{number}", json.dumps({"head": plan.head, "targets": targets}))


def pr_targets(repo: Repo, number: int) -> list[tuple[str, str, str, bool]]:
    raw = repo.store.get(f"prtargets:{repo.name}#{number}")
    if not raw:
        return []
    try:
        return [(str(a), str(e), str(s), bool(i)) for a, e, s, i in json.loads(raw)["targets"]]
    except (ValueError, KeyError, TypeError):
        return []


# --------------------------------------------------------------------------------------------
# Starting a deployment
# --------------------------------------------------------------------------------------------

def deploy_merged(repo: Repo, deployer: Deployer, number: int, *,
                  timeout: float | None = None) -> DeployState | None:
    """A PR was merged into the default branch: deploy what it changed at the merge SHA."""
    pr = repo.forge.get_pull(number)
    if not pr.merged or not pr.merge_commit_sha or pr.base_ref != repo.forge.default_branch:
        return None
    repo.workspace.fetch(repo.default_ref())
    sha = pr.merge_commit_sha
    existing = load_state(repo, sha)
    if existing is not None:                      # a redelivery, or a job run again: keep going
        return existing
    config = config_at(repo, sha)
    if config is None:
        return None
    plan = pr_plan(repo, config, pr, sha)
    record_pr_targets(repo, number, plan)
    wanted = [(t.app, t.env, images_changed(t)) for t in plan.targets if t.status in ("changed", "added")]
    return start_deploy(repo, deployer, config, pr, sha, wanted, timeout=timeout)


def start_deploy(repo: Repo, deployer: Deployer, config: Config, pr: PullRequest, sha: str,
                 wanted: Iterable[tuple[str, str, bool]], *, timeout: float | None = None,
                 envs: Sequence[str] | None = None) -> DeployState | None:
    """Deploy the (app, env, images changed) targets at `sha`; None when none has a cluster and a sync."""
    now = repo.clock()
    timeout = repo.deploy_timeout if timeout is None else timeout
    state = DeployState(repo=repo.name, pr=pr.number, author=pr.author, sha=sha, started=now)
    chosen: dict[str, list[tuple[str, bool]]] = {}
    for app, env, images in wanted:
        if envs is not None and env not in envs:
            continue
        environment = next((e for e in config.environments if e.name == env), None)
        if environment is None or environment.cluster is None:
            continue
        chosen.setdefault(env, []).append((app, images))
    if not chosen:
        return None
    with repo.workspace.materialize(sha) as root:
        targets = {(t.app, t.env): t for t in discover_targets(config, root)}
        for env in config.env_names:                          # promotion order
            if env not in chosen:
                continue
            cluster = config.env(env).cluster
            assert cluster is not None
            syncs = [(targets[(app, env)], images) for app, images in chosen[env]
                     if (app, env) in targets and config.apps[targets[(app, env)].app_index].sync is not None]
            if not syncs:
                continue
            entry = EnvDeploy(env=env, cluster=cluster, started=now, deadline=now + timeout,
                              images_changed=any(images for _, images in syncs),
                              targets=[TargetDeploy(app=t.app) for t, _ in syncs])
            state.envs.append(entry)
            lock = get_lock(repo.store, repo.name, env)
            if lock is not None:
                by, why = lock.describe()
                entry.state, entry.reason = "held", text("deploy_held", env=md(env), by=by, reason=why)
                entry.finished = now
                continue
            deployment = repo.forge.create_deployment(
                ref=sha, environment=env, description=f"PR #{pr.number}: {', '.join(t.app for t, _ in syncs)}"[:140],
                payload={"pr": pr.number, "apps": [t.app for t, _ in syncs], "prbot": True})
            entry.deployment = deployment.id
            repo.forge.set_deployment_status(deployment.id, state="in_progress",
                                             description=f"syncing {short_sha(sha)}")
            for (target, _), td in zip(syncs, entry.targets, strict=True):
                try:
                    _start_target(repo, deployer, config, root, target, sha, pr, td)
                except Exception as exc:  # noqa: BLE001 - the Deployment exists: it must end
                    log.exception("starting the sync of %s at %s failed", target.key, sha[:7])
                    td.progress, td.error = Progress("failed", _unexpected("starting the sync", exc)).to_json(), True
            _settle(repo, state, entry)
    if not state.envs:
        return None
    save_state(repo, state)
    _report(repo, state)
    save_state(repo, state)
    return state


def _start_target(repo: Repo, deployer: Deployer, config: Config, root: Any, target: Target, sha: str,
                  pr: PullRequest, td: TargetDeploy) -> None:
    spec = config.apps[target.app_index].sync
    assert spec is not None
    cluster = config.env(target.env).cluster
    assert cluster is not None
    objects: list[dict[str, Any]] = []
    if spec.kind == "apply":
        try:
            objects = render_target(root, target, kube_version=config.env(target.env).kubernetes_version)
        except RenderError as exc:
            td.progress = Progress("failed", f"{target.path} does not render: {exc}").to_json()
            return
    try:
        ticket, progress = deployer.start(cluster, target, spec, sha, objects=objects,
                                          repo_urls=[repo.forge.clone_url, repo.forge.html_url],
                                          info=[("PR", f"#{pr.number}"), ("Author", pr.author)])
    except PrbotError as exc:                     # e.g. the cluster is not in PRBOT_CLUSTERS
        td.progress = Progress("failed", str(exc)).to_json()
        return
    except TransientError as exc:                 # the Deployment exists: end it, never leave it in_progress
        td.progress = Progress("failed", f"{exc}: the sync was not started; /prbot sync {target.env} "
                                         "tries again").to_json()
        td.error = True
        return
    td.ticket, td.progress = ticket, progress.to_json()


def _unexpected(doing: str, exc: BaseException) -> str:
    """One line for an error prbot did not expect: its type only (its text may hold a response
    body, headers or a token); the service log has the traceback."""
    return f"prbot failed while {doing} ({type(exc).__name__}); the service log has the details"


# --------------------------------------------------------------------------------------------
# Polling
# --------------------------------------------------------------------------------------------

Promoter = Callable[[Repo, DeployState, EnvDeploy], str | None]


def promote_next(repo: Repo, state: DeployState, entry: EnvDeploy) -> str | None:
    """An environment turned healthy at a merge that changed images: open (or update) its apps'
    promotion PRs into the next environment, citing the merged PR, its author and the Deployment
    that proved the environment healthy.  What the result comment says about it, or None."""
    provenance = Provenance(pr=state.pr, author=state.author, deployment=entry.deployment, sha=state.sha)
    return promote_healthy(repo, state.sha, entry.env, [t.app for t in entry.targets], provenance)


def poll_deploy(repo: Repo, deployer: Deployer, sha: str, *,
                promote: Promoter | None = promote_next) -> float | None:
    """One poll of every environment still deploying at `sha`: read the cluster once per target,
    update the Deployments and the result comment, promote what turned healthy (`promote_next`;
    `promote=None` promotes nothing).

    Returns the delay before the next poll, or None when every environment is done.
    """
    state = load_state(repo, sha)
    if state is None:
        return None
    now = repo.clock()
    state.polls += 1
    for entry in state.envs:
        if entry.done:
            continue
        for td in entry.targets:
            if td.ticket is None or td.state.done:
                continue
            try:
                ticket, progress = deployer.poll(td.ticket)
            except TransientError as exc:        # may pass: keep waiting, say why; the deadline ends it
                was = td.state
                td.progress = Progress(was.state, f"{exc} (trying again)", was.ready, was.total).to_json()
                td.error = True
                continue
            except Exception as exc:  # noqa: BLE001 - whatever a deployer raises must end the Deployment
                log.exception("polling the sync of %s/%s at %s failed", td.app, entry.env, sha[:7])
                td.progress, td.error = Progress("failed", _unexpected("polling the sync", exc)).to_json(), True
                continue
            td.ticket, td.progress, td.error = ticket, progress.to_json(), False
        if not all(t.state.done for t in entry.targets) and now >= entry.deadline:
            for td in entry.targets:
                if not td.state.done:
                    minutes = max(1, round((entry.deadline - entry.started) / 60))
                    td.progress = Progress("failed", f"not healthy after {minutes} min: {td.state.reason}",
                                           td.state.ready, td.state.total).to_json()
        _settle(repo, state, entry)
        if entry.state == "healthy" and entry.images_changed and entry.promoted is None and promote is not None:
            entry.promoted = promote(repo, state, entry) or "—"
    save_state(repo, state)
    _report(repo, state)
    save_state(repo, state)
    if state.done:
        return None
    return POLL_DELAYS[min(state.polls, len(POLL_DELAYS) - 1)]


def _settle(repo: Repo, state: DeployState, entry: EnvDeploy) -> None:
    """The environment's state from its targets'; its Deployment status when it finishes."""
    if entry.state == "held":
        return
    progresses = [t.state for t in entry.targets]
    entry.reason = "; ".join(f"{t.app}: {t.state.reason}" for t in entry.targets if t.state.reason)[:600]
    if not all(p.done for p in progresses):
        order = ("waiting", "syncing", "progressing")
        entry.state = min((p.state for p in progresses if not p.done), key=order.index)
        return
    entry.state = "failed" if any(p.state == "failed" for p in progresses) else "healthy"
    if entry.finished is None:
        entry.finished = repo.clock()
        if entry.deployment is not None:
            ok = entry.state == "healthy"
            errored = any(t.error and t.state.state == "failed" for t in entry.targets)
            repo.forge.set_deployment_status(entry.deployment,
                                             state="success" if ok else "error" if errored else "failure",
                                             description=(f"healthy at {short_sha(state.sha)}" if ok
                                                          else entry.reason)[:140])
        _remember_env(repo, state, entry)


def _remember_env(repo: Repo, state: DeployState, entry: EnvDeploy) -> None:
    """The last deployment outcome of an environment (the promotion picture shows it)."""
    repo.store.put(env_state_key(repo, entry.env),
                   json.dumps({"sha": state.sha, "state": entry.state, "pr": state.pr,
                               "deployment": entry.deployment, "at": entry.finished}))


# --------------------------------------------------------------------------------------------
# The result comment
# --------------------------------------------------------------------------------------------

def is_deploy_comment(body: str) -> bool:
    return body.startswith(DEPLOY_MARKER)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def render_result(repo: Repo, state: DeployState) -> str:
    now = repo.clock()
    rows = []
    for entry in state.envs:
        elapsed = (entry.finished or now) - entry.started
        for td in entry.targets:
            progress = td.state
            shown = entry.state if entry.state == "held" else progress.state
            detail = entry.reason if entry.state == "held" else md(progress.reason, 300)
            if progress.total and "workload" not in progress.reason:        # said once, not twice
                detail += f" · {progress.workloads()}"
            rows.append(text("deploy_row", env=md(entry.env), app=md(td.app), icon=ICONS.get(shown, "•"),
                             state=shown, detail=detail, time=_duration(elapsed) if entry.state != "held" else ""))
    notes = []
    for entry in state.envs:
        if entry.promoted and entry.promoted != "—":
            notes.append(text("deploy_promoted", env=md(entry.env), promoted=entry.promoted))
        if entry.state == "failed":
            notes.append(text("deploy_not_promoted", env=md(entry.env)))
    verdict = ("deploy_done_ok" if state.done and all(e.state == "healthy" for e in state.envs)
               else "deploy_done_failed" if state.done else "deploy_running")
    return text("deploy_comment", marker=DEPLOY_MARKER, sha=code(short_sha(state.sha)), verdict=text(verdict),
                rows="\n".join(rows), notes="".join(f"\n{n}" for n in notes))


def _report(repo: Repo, state: DeployState) -> None:
    body = render_result(repo, state)
    ids = sticky_comment(repo.forge, state.pr, [body], bot_login=repo.bot_login, is_mine=is_deploy_comment)
    state.comment = ids[0] if ids else None

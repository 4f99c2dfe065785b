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
- one Deployment per environment and merge, whatever dies when: the intent (environments, targets,
  deadlines, an intent id) is saved in the store before any GitHub or cluster write, each write is
  saved as it lands, and a run replayed after a crash adopts the Deployment carrying its intent id
  (`_ensure_deployment`) instead of creating another;
- a deploy always ends, by its deadline measured from the merge: a sync the cluster could not
  start (unreachable, a 5xx after retries) is started again by the next polls; a poll the cluster
  could not answer keeps the target waiting with the reason shown; at the deadline what is not
  done fails with its reason and the Deployment ends `error` (prbot could not reach the cluster),
  `failure` (the sync failed or was not healthy in time) or `success`.  A poll that raises (GitHub
  or the store away) is polled again (`retry_poll_delay`), never dropped.  Anything unexpected
  fails its target at once with the error's type.  Never `in_progress` forever;
- when an environment turns healthy at a merge that changed images, the promotion PR into the
  next environment (`prbot.flows.promote`).

A locked environment takes no sync: its targets are `held` until `/prbot unlock` + `/prbot sync`.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prbot.config import CONFIG_FILE, Config
from prbot.envboard import deploy_key
from prbot.errors import PrbotError, RenderError, TransientError
from prbot.flows.context import Repo, config_at, env_state_key
from prbot.flows.locks import get_lock
from prbot.flows.promote import Provenance, promote_healthy
from prbot.flows.sticky import sticky_comment
from prbot.model import Target
from prbot.plan import Plan, TargetPlan
from prbot.ports import Deployer, Progress, PullRequest, Store
from prbot.render import RenderPool, render_target
from prbot.report.markdown import code, md, short_sha
from prbot.report.texts import text
from prbot.targets import discover_targets

log = logging.getLogger("prbot.flows")

DEPLOY_MARKER = "<!-- prbot:deploy -->"
POLL_DELAYS = (5.0, 5.0, 10.0, 10.0, 20.0, 30.0)   # seconds between polls, then the last one repeated
GIVE_UP_AFTER = 24 * 3600.0   # a deploy whose end cannot be written (GitHub away): polled this long past its deadline
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
    announced: bool = False          # its Deployment was set `in_progress`
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
        """Held, or ended with its Deployment's last status written."""
        return self.finished is not None


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
    intent: str = ""                 # in the payload of the Deployments this deploy created

    @property
    def done(self) -> bool:
        return all(e.done for e in self.envs)

    def to_json(self) -> str:
        return json.dumps({
            "repo": self.repo, "pr": self.pr, "author": self.author, "sha": self.sha, "started": self.started,
            "polls": self.polls, "comment": self.comment, "intent": self.intent,
            "envs": [{**{k: v for k, v in e.__dict__.items() if k != "targets"},
                      "targets": [t.__dict__ for t in e.targets]} for e in self.envs]})

    @classmethod
    def from_json(cls, raw: str) -> DeployState:
        data = json.loads(raw)
        envs = [EnvDeploy(**{**{k: v for k, v in e.items() if k != "targets"},
                             "targets": [TargetDeploy(**t) for t in e.get("targets", [])]}) for e in data["envs"]]
        return cls(repo=data["repo"], pr=data["pr"], author=data["author"], sha=data["sha"], started=data["started"],
                   polls=data.get("polls", 0), envs=envs, comment=data.get("comment"),
                   intent=data.get("intent", ""))


def state_key(repo: str, sha: str) -> str:
    return deploy_key(repo, sha)                 # the board reads these records too (`prbot.envboard`)


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

def deploy_merged(repo: Repo, deployer: Deployer, number: int, *, timeout: float | None = None,
                  merged_at: float | None = None) -> DeployState | None:
    """A PR was merged into the default branch: deploy what it changed at the merge SHA.

    `merged_at` (prbot's clock when the merge was heard of) starts the deadline; None: now.  Run
    again (a redelivery, a job replayed after its worker died) it returns the recorded deploy
    without writing anything: the polls carry it on from the record.
    """
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
    return start_deploy(repo, deployer, config, pr, sha, wanted, timeout=timeout, since=merged_at)


def start_deploy(repo: Repo, deployer: Deployer, config: Config, pr: PullRequest, sha: str,
                 wanted: Iterable[tuple[str, str, bool]], *, timeout: float | None = None,
                 envs: Sequence[str] | None = None, since: float | None = None) -> DeployState | None:
    """Deploy the (app, env, images changed) targets at `sha`; None when none has a cluster and a sync.

    The intent (environments, targets, deadlines from `since`, a fresh intent id) is saved before
    any GitHub or cluster write; each write after it is saved as it lands and is idempotent on
    replay (`_ensure_deployment` adopts a Deployment carrying the intent id), so whatever dies when,
    an environment gets one Deployment.  A failure after the intent is saved is left to the polls.
    """
    now = repo.clock()
    timeout = repo.deploy_timeout if timeout is None else timeout
    started = now if since is None else min(now, since)
    state = DeployState(repo=repo.name, pr=pr.number, author=pr.author, sha=sha, started=started,
                        intent=uuid.uuid4().hex)
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
            entry = EnvDeploy(env=env, cluster=cluster, started=started, deadline=started + timeout,
                              images_changed=any(images for _, images in syncs),
                              targets=[TargetDeploy(app=t.app) for t, _ in syncs])
            state.envs.append(entry)
            lock = get_lock(repo.store, repo.name, env)
            if lock is not None:
                by, why = lock.describe()
                entry.state, entry.reason = "held", text("deploy_held", env=md(env), by=by, reason=why)
                entry.finished = now
        if not state.envs:
            return None
        save_state(repo, state)                   # the intent: before any GitHub or cluster write
        try:
            _start_pending(repo, deployer, config, root, state)
            _report(repo, state)
            save_state(repo, state)
        except Exception as exc:  # noqa: BLE001 - the intent is recorded: the polls carry it on
            log.warning("starting the deploy of %s at %s stopped (%s); the polls carry it on",
                        repo.name, sha[:7], _one_line(exc))
    return state


def _start_pending(repo: Repo, deployer: Deployer, config: Config, root: Any, state: DeployState) -> None:
    """Start every target not started yet of the environments still deploying, each environment's
    Deployment first; the state is saved after each write.  Not past the environment's deadline:
    there the poll ends it instead."""
    targets: dict[tuple[str, str], Target] | None = None
    for entry in state.envs:
        if entry.done or (state.polls and repo.clock() >= entry.deadline):
            continue
        pending = [td for td in entry.targets if td.ticket is None and not td.state.done]
        if not pending:
            continue
        _ensure_deployment(repo, state, entry)
        if targets is None:
            targets = {(t.app, t.env): t for t in discover_targets(config, root)}
        for td in pending:
            target = targets.get((td.app, entry.env))
            if target is None or config.apps[target.app_index].sync is None:
                td.progress = Progress("failed", f"{td.app} has no sync in {entry.env} at "
                                                 f"{short_sha(state.sha)}").to_json()
            else:
                try:
                    _start_target(repo, deployer, config, root, target, state, td)
                except Exception as exc:  # noqa: BLE001 - the Deployment exists: it must end
                    log.exception("starting the sync of %s at %s failed", target.key, state.sha[:7])
                    td.progress, td.error = Progress("failed", _unexpected("starting the sync", exc)).to_json(), True
            save_state(repo, state)
        _settle(repo, state, entry)
        save_state(repo, state)


def _ensure_deployment(repo: Repo, state: DeployState, entry: EnvDeploy) -> None:
    """The environment's one GitHub Deployment, `in_progress`: created once, or adopted when a
    run that died (or whose answer was lost) created it before the record said so."""
    if entry.deployment is None:
        mine = [d for d in repo.forge.list_deployments(environment=entry.env, sha=state.sha)
                if state.intent and d.payload.get("intent") == state.intent]
        if mine:
            found = min(mine, key=lambda d: d.id)
            entry.deployment, entry.announced = found.id, found.state is not None
        else:
            apps = [t.app for t in entry.targets]
            created = repo.forge.create_deployment(
                ref=state.sha, environment=entry.env, description=f"PR #{state.pr}: {', '.join(apps)}"[:140],
                payload={"pr": state.pr, "apps": apps, "prbot": True, "intent": state.intent})
            entry.deployment = created.id
        save_state(repo, state)
    if not entry.announced:
        repo.forge.set_deployment_status(entry.deployment, state="in_progress",
                                         description=f"syncing {short_sha(state.sha)}")
        entry.announced = True
        save_state(repo, state)


def _start_target(repo: Repo, deployer: Deployer, config: Config, root: Any, target: Target,
                  state: DeployState, td: TargetDeploy) -> None:
    spec = config.apps[target.app_index].sync
    assert spec is not None
    cluster = config.env(target.env).cluster
    assert cluster is not None
    objects: list[dict[str, Any]] = []
    if spec.kind == "apply":
        try:
            objects = render_target(root, target, kube_version=config.env(target.env).kubernetes_version,
                                    expand=False)   # the cluster's Flux / Argo CD expands them
        except RenderError as exc:
            td.progress = Progress("failed", f"{target.path} does not render: {exc}").to_json()
            return
    try:
        ticket, progress = deployer.start(cluster, target, spec, state.sha, objects=objects,
                                          repo_urls=[repo.forge.clone_url, repo.forge.html_url],
                                          info=[("PR", f"#{state.pr}"), ("Author", state.author)])
    except PrbotError as exc:                     # e.g. the cluster is not in PRBOT_CLUSTERS
        td.progress = Progress("failed", str(exc)).to_json()
        return
    except TransientError as exc:                 # the cluster may come back: the polls start it again
        td.progress = Progress("waiting", f"{exc}: the sync is not started yet (trying again)").to_json()
        td.error = True
        return
    td.ticket, td.progress, td.error = ticket, progress.to_json(), False


def _unexpected(doing: str, exc: BaseException) -> str:
    """One line for an error prbot did not expect: its type only (its text may hold a response
    body, headers or a token); the service log has the traceback."""
    return f"prbot failed while {doing} ({type(exc).__name__}); the service log has the details"


def _one_line(exc: BaseException) -> str:
    """prbot's own errors say what failed; anything else only its type (see `_unexpected`)."""
    if isinstance(exc, PrbotError | TransientError):
        return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return type(exc).__name__


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
    """One poll of every environment still deploying at `sha`: start what is not started yet
    (its Deployment first), read the cluster once per started target, end what passed its
    deadline, update the Deployments and the result comment, promote what turned healthy
    (`promote_next`; `promote=None` promotes nothing).

    Returns the delay before the next poll (never past the nearest deadline), or None when every
    environment is done.  An error raised here (GitHub or the store away) leaves the record as
    it was saved; `retry_poll_delay` says when to try again.
    """
    state = load_state(repo, sha)
    if state is None:
        return None
    state.polls += 1
    if any(not e.done and repo.clock() < e.deadline and any(td.ticket is None and not td.state.done
                                                            for td in e.targets) for e in state.envs):
        repo.workspace.fetch(repo.default_ref())
        config = config_at(repo, sha)
        if config is None:
            raise PrbotError(f"no {CONFIG_FILE} at {short_sha(sha)}: the deploy cannot start its syncs")
        with repo.workspace.materialize(sha) as root:
            _start_pending(repo, deployer, config, root, state)
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
        if not all(t.state.done for t in entry.targets) and repo.clock() >= entry.deadline:
            _expire(entry)                       # the clock after the reads: their retries take time
        save_state(repo, state)                  # what was read: a failing end is retried without reading again
        _settle(repo, state, entry)
        if entry.state == "healthy" and entry.images_changed and entry.promoted is None and promote is not None:
            save_state(repo, state)              # the end is written: a failing promotion does not write it again
            entry.promoted = promote(repo, state, entry) or "—"
        save_state(repo, state)
    _report(repo, state)
    save_state(repo, state)
    if state.done:
        return None
    return _next_delay(state, repo.clock(), POLL_DELAYS[min(state.polls, len(POLL_DELAYS) - 1)])


def _expire(entry: EnvDeploy) -> None:
    """The environment's deadline passed: each target not done fails with what it was waiting on."""
    span = entry.deadline - entry.started
    took = f"{max(1, round(span / 60))} min" if span >= 60 else f"{max(1, round(span))} s"
    for td in entry.targets:
        if not td.state.done:
            what = "not started" if td.ticket is None else "not healthy"
            td.progress = Progress("failed", f"{what} after {took}: {td.state.reason}",
                                   td.state.ready, td.state.total).to_json()


def _next_delay(state: DeployState, now: float, delay: float) -> float:
    """`delay`, cut so that the poll after it comes at the nearest deadline at the latest."""
    nearest = min((e.deadline for e in state.envs if not e.done), default=now)
    if nearest <= now:                          # passed (its end could not be written yet): wait as long
        return delay
    return max(0.05, min(delay, nearest - now + 0.05))


def retry_poll_delay(store: Store, repo_name: str, sha: str, now: float) -> float | None:
    """A poll raised (GitHub, the cluster or the store away): the delay before polling again, so
    that a poll job is never dropped while the deploy it carries is not done; None once it is done,
    unknown, or `GIVE_UP_AFTER` past its last deadline (what could not be ended by then is logged)."""
    raw = store.get(state_key(repo_name, sha))
    if not raw:
        return None
    state = DeployState.from_json(raw)
    if state.done:
        return None
    last = max((e.deadline for e in state.envs), default=state.started)
    if now >= last + GIVE_UP_AFTER:
        log.error("the deploy of %s at %s could not be ended within %d h of its deadline; giving up",
                  repo_name, sha[:7], GIVE_UP_AFTER // 3600)
        return None
    return _next_delay(state, now, POLL_DELAYS[-1])


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
        if entry.deployment is None:              # it failed before its Deployment could be made
            _ensure_deployment(repo, state, entry)
        assert entry.deployment is not None
        ok = entry.state == "healthy"
        errored = any(t.error and t.state.state == "failed" for t in entry.targets)
        repo.forge.set_deployment_status(entry.deployment,
                                         state="success" if ok else "error" if errored else "failure",
                                         description=(f"healthy at {short_sha(state.sha)}" if ok
                                                      else entry.reason)[:140])
        entry.finished = repo.clock()             # only once its end is written: until then, polled again
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

"""Job kind → flow: the handlers `prbot serve` and `prbot worker` run.

The web layer enqueues two kinds, which route cheaply and enqueue the real work:
- ``github_event``: payload ``{"event": X-GitHub-Event, "delivery": id, "body": <parsed payload>}``;
- ``registry_push``: payload ``{"provider", "images": [{"image", "digest", "source"?}], "repo"}``.

The real work, one repository at a time (`Job.repo`):
- ``plan``: the plan comment and check run of a PR (superseded per PR: only the newest runs);
- ``bump``: the bump PR of (repository, image repository) from the pushes recorded for it;
- ``command``: the slash commands of one comment (queued once per comment id, ever);
- ``index_repo`` / ``index_installation``: refresh the routing index (`prbot.repoindex`);
- ``deploy``: a merged PR's sync (`prbot.flows.deploy`), then ``deploy_poll`` jobs re-enqueued with
  a delay until every environment is healthy or failed (a restarted worker resumes them);
- ``preview``: deploy / update / tear down a PR's preview environment;
- ``board``: the environments page's board of a repository, kept in the store.

This is the only place where adapters (GitHub, the mirror, clusters) meet the flows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prbot import flows
from prbot.config import CONFIG_FILE, Config
from prbot.errors import HeadMoved, NotFound, PrbotError, TransientError
from prbot.flows.board import build_board
from prbot.flows.heads import Seen, record_head
from prbot.images import parse_image
from prbot.ports import WRITE_PERMISSIONS
from prbot.registries.github_packages import parse_package_event
from prbot.repoindex import RepoIndex
from prbot.service import warm
from prbot.service.boards import snapshot_key
from prbot.service.jobs import Job, Runtime, register
from prbot.service.logs import add_secret

log = logging.getLogger("prbot.handlers")


# --------------------------------------------------------------------------------------------
# Adapters, built once per worker process
# --------------------------------------------------------------------------------------------

def github_app(rt: Runtime) -> Any:
    def build(rt: Runtime) -> Any:
        from prbot.github import GitHubApp

        settings = rt.settings
        if not settings.github_app_id or settings.github_private_key is None:
            raise PrbotError("GITHUB_APP_ID and GITHUB_PRIVATE_KEY are needed to talk to GitHub")
        return GitHubApp(settings.github_app_id, settings.github_private_key.reveal(),
                         api_url=settings.github_api_url, on_response=rt.record_github_response)

    return rt.service("github", build)


def _dry_runner_factory(rt: Runtime) -> Any:
    """config → DryRunner for `plan_pull_request`, or None when the server has no PRBOT_CLUSTERS."""
    path = rt.settings.clusters_file
    if path is None:
        return None

    def factory(config: Config) -> Any:
        from prbot.cluster.clusters import load_clusters
        from prbot.cluster.dryrun import make_dry_runner

        clusters = rt.service("clusters", lambda rt: load_clusters(path))
        return make_dry_runner(config, clusters)

    return factory


class _JsonDeployer:
    """`prbot.cluster.deploy.Deployer` with its tickets as JSON (`prbot.ports.Deployer`)."""

    def __init__(self, deployer: Any) -> None:
        self._deployer = deployer

    def start(self, cluster: str, target: Any, spec: Any, sha: str, **kwargs: Any) -> tuple[dict[str, Any], Any]:
        ticket, progress = self._deployer.start(cluster, target, spec, sha, **kwargs)
        return ticket.to_json(), progress

    def poll(self, ticket: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
        from prbot.cluster.deploy import Ticket

        updated, progress = self._deployer.poll(Ticket.from_json(ticket))
        return updated.to_json(), progress


def deployer(rt: Runtime) -> Any:
    """The cluster deployer of this process, or None when the server has no PRBOT_CLUSTERS (unless
    the process was given one: `prbot demo --serve` gives its stand-in clusters)."""
    path = rt.settings.clusters_file
    if path is None:
        return rt.services.get("deployer")

    def build(rt: Runtime) -> Any:
        from prbot.cluster.clusters import load_clusters
        from prbot.cluster.deploy import Deployer

        return _JsonDeployer(Deployer(load_clusters(path)))

    return rt.service("deployer", build)


def repo_context(rt: Runtime, installation_id: int, full_name: str) -> flows.Repo:
    """The forge, mirror and store of one repository, as the flows want them."""
    from prbot.workspace import Mirror

    app = github_app(rt)
    forge = app.forge(installation_id, full_name)
    mirror = Mirror.for_forge(rt.data_dir, forge)
    add_secret(forge.git_token())              # the installation token: scrubbed from every log line
    bot = getattr(app, "bot_login", None)
    return flows.Repo(forge=forge, workspace=mirror, store=rt.store, installation_id=installation_id,
                      bot_login=bot() if callable(bot) else None, render_cache=rt.data_dir / "render-cache",
                      dry_runner=_dry_runner_factory(rt), deployer=deployer(rt),
                      deploy_timeout=rt.settings.deploy_timeout)


# --------------------------------------------------------------------------------------------
# Routing GitHub events
# --------------------------------------------------------------------------------------------

def _obj(value: object) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (payloads are untrusted)."""
    return value if isinstance(value, dict) else {}


def _installation(body: Mapping[str, Any]) -> int | None:
    inst = body.get("installation")
    ident = inst.get("id") if isinstance(inst, dict) else None
    return ident if isinstance(ident, int) and not isinstance(ident, bool) else None


def _repo_name(body: Mapping[str, Any]) -> str | None:
    repo = body.get("repository")
    name = repo.get("full_name") if isinstance(repo, dict) else None
    return name if isinstance(name, str) else None


def _sender_is_bot(body: Mapping[str, Any]) -> bool:
    sender = body.get("sender")
    return isinstance(sender, dict) and sender.get("type") == "Bot"


@dataclass(frozen=True)
class Event:
    """One GitHub event as its handler gets it."""

    name: str                                 # X-GitHub-Event
    body: dict[str, Any]                      # the payload (untrusted)
    action: object                            # body["action"], any JSON value
    delivery: str | None
    installation: int | None
    received: float | None                    # when the job was queued


@dataclass(frozen=True)
class RepoEvent(Event):
    """An event about one repository of one installation."""

    installation: int
    repo: str


@register("github_event")
def github_event(rt: Runtime, job: Job) -> None:
    """Turn one GitHub event into the jobs it calls for (no GitHub call here): `APP_EVENTS` take any
    event, `REPO_EVENTS` those naming an installation and a repository; other events are ignored."""
    name = str(job.payload.get("event", ""))
    body = job.payload.get("body")
    if not isinstance(body, dict):
        raise PrbotError("github_event job without a body")
    installation = _installation(body)
    event = Event(name, body, body.get("action"), job.delivery, installation, job.enqueued_at)
    app_handler = APP_EVENTS.get(name)
    if app_handler is not None:
        app_handler(rt, event)
        return
    repo = _repo_name(body)
    if installation is None or repo is None:
        log.info("event %s/%s ignored: no installation or repository", name, event.action)
        return
    repo_handler = REPO_EVENTS.get(name)
    if repo_handler is None:
        log.debug("event %s/%s: nothing to do", name, event.action)
        return
    repo_handler(rt, RepoEvent(name, body, event.action, job.delivery, installation, job.enqueued_at, repo))


def _on_installation(rt: Runtime, ev: Event) -> None:
    """The app was installed, removed or given other repositories: refresh the routing index."""
    if ev.installation is not None:
        rt.enqueue(Job("index_installation", {"installation": ev.installation, "event": ev.name, "action": ev.action,
                                              "body": _installation_body(ev.body)}, delivery=ev.delivery))


def _on_package(rt: Runtime, ev: Event) -> None:
    """A push to GitHub's container registry: routed like any registry push."""
    records = parse_package_event(ev.name, ev.body)
    if records:
        version = _obj(_obj(ev.body.get(ev.name)).get("package_version"))
        labels = _obj(_obj(version.get("container_metadata")).get("labels"))
        source = labels.get("source") or _obj(ev.body.get("repository")).get("html_url")   # OCI source label
        images = [{**r.as_dict(), "source": source} for r in records]
        rt.enqueue(Job("registry_push", {"provider": "ghcr", "images": images, "repo": None,
                                         "received": ev.received}, delivery=ev.delivery))


def _on_pull_request(rt: Runtime, ev: RepoEvent) -> None:
    """Remember the head it names and when it came (`flows.heads`: what binds a command to the head
    its author saw), plan a PR when its head moves (not drafts), then what its action means for its
    preview and, once merged, its deployment (`PULL_REQUEST_ACTIONS`)."""
    pr = _obj(ev.body.get("pull_request"))
    number = pr.get("number") or ev.body.get("number")
    if not isinstance(number, int):
        return
    head = _head_sha(pr)
    if head is not None:
        record_head(rt.store, ev.repo, number, head, received=_received(ev),
                                updated_at=pr.get("updated_at"))
    if ev.action in flows.PLAN_ACTIONS and not pr.get("draft"):
        _enqueue_plan(rt, ev.installation, ev.repo, number, ev.delivery, with_cluster=None)
    then = PULL_REQUEST_ACTIONS.get(ev.action) if isinstance(ev.action, str) else None
    if then is not None:
        then(rt, ev, pr, number)


def _head_sha(pr: Mapping[str, Any]) -> str | None:
    sha = _obj(pr.get("head")).get("sha")
    return sha if isinstance(sha, str) and sha else None


def _received(ev: Event) -> float:
    return ev.received if ev.received is not None else time.time()


def _sender(ev: Event) -> str | None:
    login = _obj(ev.body.get("sender")).get("login")
    return login if isinstance(login, str) else None


def _has_preview_label(pr: Mapping[str, Any]) -> bool:
    return flows.preview.LABEL in [str(_obj(label).get("name")) for label in pr.get("labels") or []]


def _pr_labeled(rt: Runtime, ev: RepoEvent, pr: Mapping[str, Any], number: int) -> None:
    if _obj(ev.body.get("label")).get("name") == flows.preview.LABEL:
        _enqueue_preview(rt, ev, number, stop=False, head=_head_sha(pr))


def _pr_reopened(rt: Runtime, ev: RepoEvent, pr: Mapping[str, Any], number: int) -> None:
    if _has_preview_label(pr):
        _enqueue_preview(rt, ev, number, stop=False, head=_head_sha(pr))


def _pr_synchronize(rt: Runtime, ev: RepoEvent, pr: Mapping[str, Any], number: int) -> None:
    """A push: the preview (labelled, or still up) follows the pushed head if the pusher may."""
    _enqueue_preview(rt, ev, number, stop=False, head=_head_sha(pr), if_active=not _has_preview_label(pr))


def _pr_closed(rt: Runtime, ev: RepoEvent, pr: Mapping[str, Any], number: int) -> None:
    _enqueue_preview(rt, ev, number, stop=True)
    if pr.get("merged"):
        rt.enqueue(Job("deploy", {"installation": ev.installation, "number": number}, repo=ev.repo,
                       delivery=ev.delivery, pr=number))


def _on_issue_comment(rt: Runtime, ev: RepoEvent) -> None:
    """A new comment with `/prbot` on a PR or an issue (where only `status` and `help` run): a
    `command` job, once per comment whatever the delivery id (`_first_time`; edited comments are not
    run again)."""
    if ev.action != "created" or _sender_is_bot(ev.body):
        return
    issue = _obj(ev.body.get("issue"))
    comment = _obj(ev.body.get("comment"))
    text = comment.get("body") if isinstance(comment.get("body"), str) else ""
    user = _obj(comment.get("user")).get("login")
    comment_id = comment.get("id")
    if not isinstance(text, str) or "/prbot" not in text or not isinstance(issue.get("number"), int) \
            or not isinstance(user, str) or not isinstance(comment_id, int) or isinstance(comment_id, bool):
        return
    if not _first_time(rt, ev, comment_id, text):
        return
    created = comment.get("created_at") if isinstance(comment.get("created_at"), str) else None
    rt.enqueue(Job("command", {"installation": ev.installation, "number": issue["number"], "user": user,
                               "comment_id": comment_id, "body": text[:20_000], "received": _received(ev),
                               "created_at": created, "issue": "pull_request" not in issue},
                   repo=ev.repo, delivery=ev.delivery, pr=issue["number"]))


def _first_time(rt: Runtime, ev: RepoEvent, comment_id: int, text: str) -> bool:
    """Claim the comment for good (no expiry: the delivery ids the web layer keeps expire after 7
    days, and a replay may bring a new one).  A comment runs at most once: a second `created`
    delivery of the same comment id is a replay and changes nothing, whatever its body says (GitHub
    reports edits as `edited`, which never runs)."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    key = f"comment:{ev.repo}:{comment_id}"
    if rt.store.put_if_absent(key, json.dumps({"delivery": ev.delivery, "body": digest})):
        return True
    try:
        first = json.loads(rt.store.get(key) or "{}")
    except ValueError:
        first = {}
    same = isinstance(first, dict) and first.get("body") == digest
    log.warning("comment %d on %s delivered again (delivery %s, %s body): its commands ran once already",
                comment_id, ev.repo, ev.delivery, "same" if same else "another")
    return False


def _on_push(rt: Runtime, ev: RepoEvent) -> None:
    """A push to the default branch: re-index the repository when it may change `.prbot.yml`, and
    render its targets in the background (`warm_base`)."""
    default = _obj(ev.body.get("repository")).get("default_branch")
    if ev.body.get("ref") != f"refs/heads/{default}":
        return
    if _touches_config(ev.body):
        rt.enqueue(Job("index_repo", {"installation": ev.installation}, repo=ev.repo, delivery=ev.delivery))
    warm.on_default_push(rt, ev.installation, ev.repo, ev.body.get("after"), ev.delivery)


@register("warm_base")
def warm_base(rt: Runtime, job: Job) -> None:
    warm.run(rt, job, repo_context)


def _on_check_run(rt: Runtime, ev: RepoEvent) -> None:
    """Someone asked to re-run prbot's check run: plan its PRs again."""
    run = _obj(ev.body.get("check_run"))
    if ev.action == "rerequested" and run.get("name") == flows.CHECK_NAME:
        for pr in run.get("pull_requests") or []:
            if isinstance(pr, dict) and isinstance(pr.get("number"), int):
                _enqueue_plan(rt, ev.installation, ev.repo, pr["number"], ev.delivery, with_cluster=None)


APP_EVENTS: Mapping[str, Callable[[Runtime, Event], None]] = {
    "installation": _on_installation,
    "installation_repositories": _on_installation,
    "package": _on_package,
    "registry_package": _on_package,
}
"""Events handled whether or not they name a repository."""

REPO_EVENTS: Mapping[str, Callable[[Runtime, RepoEvent], None]] = {
    "pull_request": _on_pull_request,
    "issue_comment": _on_issue_comment,
    "push": _on_push,
    "check_run": _on_check_run,
}
"""Events about one repository (ignored without an installation and a repository)."""

PULL_REQUEST_ACTIONS: Mapping[str, Callable[[Runtime, RepoEvent, Mapping[str, Any], int], None]] = {
    "labeled": _pr_labeled,
    "reopened": _pr_reopened,
    "synchronize": _pr_synchronize,
    "closed": _pr_closed,
}
"""What a pull_request action means for the PR's preview and deployment (after its plan)."""


def _installation_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """What index_installation needs of an installation event: the repositories added / removed."""
    def names(key: str) -> list[str]:
        return [r["full_name"] for r in body.get(key) or [] if isinstance(r, dict) and isinstance(r.get("full_name"),
                                                                                                    str)]
    return {"added": names("repositories_added"), "removed": names("repositories_removed")}


def _touches_config(body: Mapping[str, Any]) -> bool:
    commits = body.get("commits")
    if not isinstance(commits, list) or not commits or len(commits) >= 20:   # GitHub lists at most 20
        return True
    for commit in commits:
        if not isinstance(commit, dict):
            return True
        for key in ("added", "modified", "removed"):
            if CONFIG_FILE in (commit.get(key) or []):
                return True
    return False


def _enqueue_preview(rt: Runtime, ev: RepoEvent, number: int, *, stop: bool, head: str | None = None,
                     if_active: bool = False) -> None:
    """A preview job: tear down (`stop`), or apply `head` for the event's sender (`if_active`: only
    when a preview is up); the job checks the sender's permission."""
    payload: dict[str, Any] = {"installation": ev.installation, "number": number}
    if stop:
        payload["stop"] = True
    else:
        payload.update({"if_active": True} if if_active else {"stop": False})
        payload.update({"sender": _sender(ev), "head": head})
    rt.enqueue(Job("preview", payload, repo=ev.repo, supersede=f"preview:{ev.repo}#{number}", delivery=ev.delivery,
                   pr=number))


def _enqueue_poll(rt: Runtime, installation: int, repo: str, sha: str, delay: float, pr: int | None) -> None:
    if rt.settings.deploy_poll is not None:
        delay = rt.settings.deploy_poll
    rt.enqueue(Job("deploy_poll", {"installation": installation, "sha": sha}, repo=repo,
                   supersede=f"deploy_poll:{repo}:{sha}", pr=pr), delay)


def _enqueue_plan(rt: Runtime, installation: int, repo: str, number: int, delivery: str | None, *,
                  with_cluster: bool | None) -> None:
    rt.enqueue(Job("plan", {"installation": installation, "number": number, "with_cluster": with_cluster},
                   repo=repo, supersede=f"plan:{repo}#{number}", delivery=delivery, pr=number))


# --------------------------------------------------------------------------------------------
# The work
# --------------------------------------------------------------------------------------------

def _int(payload: Mapping[str, Any], key: str) -> int:
    value = payload.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise PrbotError(f"job payload: {key} is not a number")
    return value


@register("plan")
def plan(rt: Runtime, job: Job) -> None:
    assert job.repo is not None
    repo = repo_context(rt, _int(job.payload, "installation"), job.repo)
    with_cluster = job.payload.get("with_cluster")
    flows.plan_pull_request(repo, _int(job.payload, "number"),
                            with_cluster=with_cluster if isinstance(with_cluster, bool) else None)


@register("command")
def command(rt: Runtime, job: Job) -> None:
    assert job.repo is not None
    installation = _int(job.payload, "installation")
    repo = repo_context(rt, installation, job.repo)
    received = job.payload.get("received")
    created = job.payload.get("created_at")
    seen = Seen(float(received) if isinstance(received, int | float) else None,
                            created if isinstance(created, str) else None)
    outcome = flows.run_commands(repo, number=_int(job.payload, "number"),
                                 comment_id=_int(job.payload, "comment_id"), user=str(job.payload.get("user")),
                                 body=str(job.payload.get("body", "")), seen=seen,
                                 issue=job.payload.get("issue") is True)
    for sha in outcome.deploys:
        _enqueue_poll(rt, installation, job.repo, sha, flows.deploy.POLL_DELAYS[0], job.pr)


@register("registry_push")
def registry_push(rt: Runtime, job: Job) -> None:
    """Route each pushed image to the repositories whose `.prbot.yml` lists it; record the push and
    queue one bump job per (repository, image repository), `BUMP_DELAY` ahead (a newer push of the
    image supersedes it: the bump runs once the burst is over)."""
    index = RepoIndex(rt.store)
    if index.empty():
        _index_everything(rt)
    narrow = job.payload.get("repo") if isinstance(job.payload.get("repo"), str) else None
    received = job.payload.get("received")          # when the webhook came: orders an image's pushes
    if not isinstance(received, int | float) or isinstance(received, bool):
        received = job.enqueued_at if job.enqueued_at is not None else time.time()
    for item in job.payload.get("images") or []:
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            continue
        digest = item.get("digest")
        ref = parse_image(item["image"] + (f"@{digest}" if isinstance(digest, str) and digest else ""))
        source = item.get("source") if isinstance(item.get("source"), str) else None
        routes = index.routes(ref, narrow)
        if not routes:
            log.info("push of %s matches no installed repository", ref)
        for route in routes:
            if not route.decision.accepted:
                log.info("push of %s ignored for %s: %s", ref, route.entry.repo, route.decision.reason)
                continue
            flows.record_push(rt.store, route.entry.repo, flows.Push(ref, source, at=received))
            rt.enqueue(Job("bump", {"installation": route.entry.installation_id, "repository": ref.repository},
                           repo=route.entry.repo, supersede=f"bump:{route.entry.repo}:{ref.repository}",
                           delivery=job.delivery), BUMP_DELAY)


BUMP_DELAY = 2.0
"""Seconds a bump job waits after the last push of its image: the pushes of a burst (a CI
pushing several tags, a multi-arch push, a backlog redelivered) end in one PR write, not one each."""


MAX_RATE_WAITS = 120


def _rate_gate(installation: int) -> str:
    return f"ratelimit:{installation}"


@register("bump")
def bump(rt: Runtime, job: Job) -> None:
    """The bump PR of one image.  GitHub's rate limits are waited out, not failed: the job is queued
    again for when `Retry-After` ends (its pushes stay recorded), without counting as an attempt,
    and the installation's other bump jobs hold back until then instead of asking GitHub again."""
    assert job.repo is not None
    installation = _int(job.payload, "installation")
    gate = _rate_gate(installation)
    wait = _float(rt.store.get(gate)) - time.time()
    if wait > 0:
        _bump_later(rt, job, wait, "GitHub's rate limit")
        return
    repo = repo_context(rt, installation, job.repo)
    try:
        flows.bump_pending(repo, str(job.payload.get("repository", "")))
    except TransientError as exc:
        if exc.retry_after is None or "rate limit" not in str(exc):
            raise
        delay = min(exc.retry_after, rt.settings.retry_max * 6)       # as the worker caps a retry
        until = time.time() + delay
        if _float(rt.store.get(gate)) < until:
            rt.store.put(gate, repr(until), ttl=delay + 60)
        _bump_later(rt, job, delay, str(exc))


def _bump_later(rt: Runtime, job: Job, delay: float, why: str) -> None:
    waits = job.payload.get("rate_waits")
    waits = waits + 1 if isinstance(waits, int) else 1
    if waits > MAX_RATE_WAITS:
        raise TransientError(f"still rate limited after {MAX_RATE_WAITS} waits: {why}", retry_after=delay)
    log.info("bump of %s waits %.1fs for %s", job.payload.get("repository"), delay, why)
    rt.enqueue(Job("bump", {**job.payload, "rate_waits": waits}, repo=job.repo, supersede=job.supersede,
                   delivery=job.delivery), delay)


def _float(raw: str | None) -> float:
    try:
        return float(raw) if raw is not None else 0.0
    except ValueError:
        return 0.0


@register("deploy")
def deploy(rt: Runtime, job: Job) -> None:
    """A PR was merged: record the deploy's intent, start it, then poll.  Replayed (its worker died,
    or it raised), it carries on from the record: the poll it queues starts what is not started."""
    assert job.repo is not None
    installation = _int(job.payload, "installation")
    repo = repo_context(rt, installation, job.repo)
    if repo.deployer is None:
        log.info("merge of %s#%s: no clusters configured, nothing to deploy", job.repo, job.payload.get("number"))
        return
    state = flows.deploy_merged(repo, repo.deployer, _int(job.payload, "number"), merged_at=job.enqueued_at)
    if state is not None and not state.done:
        _enqueue_poll(rt, installation, job.repo, state.sha, flows.deploy.POLL_DELAYS[0], state.pr)


@register("deploy_poll")
def deploy_poll(rt: Runtime, job: Job) -> None:
    """One read of a deployment in flight; re-enqueued with a delay until it is done.  A poll that
    raises (GitHub, the cluster or the store away) is re-enqueued too, never dropped: the deploy's
    deadline must still end its Deployments."""
    assert job.repo is not None
    installation = _int(job.payload, "installation")
    sha = str(job.payload.get("sha", ""))
    try:
        repo = repo_context(rt, installation, job.repo)
        if repo.deployer is None:
            return
        delay = flows.poll_deploy(repo, repo.deployer, sha)
    except Exception as exc:
        retry = flows.deploy.retry_poll_delay(rt.store, job.repo, sha, time.time())
        if retry is None:
            raise
        log.warning("polling the deploy of %s at %s failed (%s); polling again in %.0fs", job.repo, sha[:7],
                    type(exc).__name__, retry)
        delay = retry
    if delay is not None:
        _enqueue_poll(rt, installation, job.repo, sha, delay, job.pr)


@register("preview")
def preview(rt: Runtime, job: Job) -> None:
    """Tear down, or apply the head a label, a reopening or a push named — only for a sender with
    write permission now, and only while that head is still the PR's head."""
    assert job.repo is not None
    number = _int(job.payload, "number")
    if (job.payload.get("if_active") or job.payload.get("stop")) \
            and rt.store.get(flows.preview.state_key(job.repo, number)) is None:
        return                                        # no preview up: nothing to update or tear down
    repo = repo_context(rt, _int(job.payload, "installation"), job.repo)
    if repo.deployer is None:
        return
    pr = repo.forge.get_pull(number)
    repo.workspace.fetch(repo.default_ref())
    config = flows.default_config(repo)
    if job.payload.get("stop") or pr.state != "open":
        flows.preview_down(repo, repo.deployer, config, pr)
        return
    if config is None:
        return
    sender, head = job.payload.get("sender"), job.payload.get("head")
    if not isinstance(sender, str) or not isinstance(head, str):
        log.info("preview of %s#%d not applied: the event names no sender or head", job.repo, number)
        return
    permission = repo.forge.permission(sender)
    if permission not in WRITE_PERMISSIONS:
        log.info("preview of %s#%d at %s not applied: %s has %s permission, a preview needs write",
                 job.repo, number, head[:7], sender, permission)
        return
    try:
        flows.preview_up(repo, repo.deployer, config, pr, head_sha=head)
    except HeadMoved:
        log.info("preview of %s#%d at %s not applied: the head moved to %s", job.repo, number, head[:7],
                 pr.head_sha[:7])


@register("index_repo")
def index_repo(rt: Runtime, job: Job) -> None:
    assert job.repo is not None
    _index_one(rt, _int(job.payload, "installation"), job.repo)


@register("index_installation")
def index_installation(rt: Runtime, job: Job) -> None:
    installation = _int(job.payload, "installation")
    index = RepoIndex(rt.store)
    body = _obj(job.payload.get("body"))
    if job.payload.get("event") == "installation" and job.payload.get("action") in ("deleted", "suspend"):
        gone = index.remove_installation(installation)
        log.info("installation %d gone: %d repositories left the index", installation, len(gone))
        return
    for name in body.get("removed") or []:
        index.remove(str(name))
    for repo in github_app(rt).repositories(installation):
        rt.enqueue(Job("index_repo", {"installation": installation}, repo=repo.full_name, delivery=job.delivery))


def _index_one(rt: Runtime, installation: int, full_name: str) -> None:
    index = RepoIndex(rt.store)
    try:
        repo = repo_context(rt, installation, full_name)
    except NotFound:
        index.remove(full_name)
        return
    repo.workspace.fetch(repo.default_ref())
    data = repo.workspace.read_file(repo.default_ref(), CONFIG_FILE)
    text = data.decode("utf-8", "replace") if data is not None else None
    entry = index.update(full_name, installation, default_branch=repo.forge.default_branch,
                         clone_url=repo.forge.clone_url, config_text=text)
    log.info("indexed %s: %s", full_name, entry.error or (f"{len(entry.images)} image(s)" if text else "no config"))


def _index_everything(rt: Runtime) -> None:
    """First push after a fresh start: index every repository of every installation, inline."""
    app = github_app(rt)
    started = time.monotonic()
    for installation in app.installation_ids():
        for repo in app.repositories(installation):
            _index_one(rt, installation, repo.full_name)
    log.info("indexed every installation in %.1fs", time.monotonic() - started)


@register("board")
def board(rt: Runtime, job: Job) -> None:
    """Build the environments page's board of one repository and keep it in the store (the page
    asks for it: `prbot.service.boards.StoreBoards`)."""
    assert job.repo is not None
    repo = repo_context(rt, _int(job.payload, "installation"), job.repo)
    rt.store.put(snapshot_key(job.repo), build_board(repo).to_json())

"""The use cases of the bot, written against `prbot.ports` only (SPEC §5–§7):

- a registry push → the image-bump PR into the first environment (`bump_pull_request`);
- a pull request → the sticky plan comment and the `prbot/plan` check run (`plan_pull_request`);
- a `/prbot …` comment → its commands (`run_commands`).

The worker runs them (`prbot.service.handlers`) with the GitHub adapter and the repository mirror;
`prbot demo` narrates them with in-process stand-ins.  Every flow can be re-run after a failure at
any point and ends in the same state: it finds what it made before (the PR of a branch, the
comment with the marker, the check run of a head) before making anything.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prbot import commands as cmds
from prbot.branches import bump_branch
from prbot.config import CONFIG_FILE, Config, ConfigError, load_config
from prbot.edit import bump as edit_bump
from prbot.errors import PrbotError
from prbot.images import ImageRef, is_newer
from prbot.plan import DryRunner, Plan, TargetPlan, make_plan
from prbot.ports import (
    Annotation,
    CheckRunOutput,
    Comment,
    Forge,
    ForgeError,
    PullRequest,
    Store,
    Workspace,
)
from prbot.pushes import decide
from prbot.render import RenderPool
from prbot.report import is_plan_comment, render_markdown
from prbot.report.markdown import code, md, short_sha
from prbot.report.texts import text

log = logging.getLogger("prbot.flows")

CHECK_NAME = "prbot/plan"
CHECK_TEXT_LIMIT = 65_000
LABELS = ("prbot", "bump")
PLAN_ACTIONS = frozenset({"opened", "synchronize", "reopened", "ready_for_review"})


@dataclass
class Repo:
    """Everything a flow needs about one repository."""

    forge: Forge
    workspace: Workspace
    store: Store
    installation_id: int = 0
    bot_login: str | None = None                         # our own login ("prbot[bot]"), when known
    render_cache: Path | None = None                     # the render pool's disk cache
    dry_runner: Callable[[Config], DryRunner | None] | None = None   # None: no clusters configured
    clock: Callable[[], float] = time.time

    @property
    def name(self) -> str:
        return self.forge.full_name

    def default_ref(self) -> str:
        return f"refs/heads/{self.forge.default_branch}"


# --------------------------------------------------------------------------------------------
# Configuration: always the default branch's (a PR cannot loosen its own gate)
# --------------------------------------------------------------------------------------------

def default_config(repo: Repo) -> Config | None:
    """`.prbot.yml` of the default branch as fetched into the mirror; None when there is none.

    Raises `ConfigError` when it is invalid.
    """
    data = repo.workspace.read_file(repo.default_ref(), CONFIG_FILE)
    if data is None:
        return None
    try:
        return load_config(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{CONFIG_FILE}: not UTF-8 text"]) from exc


# --------------------------------------------------------------------------------------------
# Locks (persisted in the store; SPEC §6, §7)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lock:
    env: str
    by: str
    reason: str
    at: float

    def describe(self) -> tuple[str, str]:
        """(by, reason) as the templates want them: escaped, reason prefixed."""
        return code(self.by), (f" ({md(self.reason)})" if self.reason else "")


def _lock_key(repo: str, env: str) -> str:
    return f"lock:{repo}:{env}"


def get_lock(store: Store, repo: str, env: str) -> Lock | None:
    raw = store.get(_lock_key(repo, env))
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Lock(env=env, by=str(data.get("by", "")), reason=str(data.get("reason", "")),
                    at=float(data.get("at", 0)))
    except (ValueError, TypeError):
        return None


def set_lock(store: Store, repo: str, env: str, by: str, reason: str, now: float) -> bool:
    """Lock `env`; False when it was locked already (the first lock stays)."""
    return store.put_if_absent(_lock_key(repo, env), json.dumps({"by": by, "reason": reason, "at": now}))


def clear_lock(store: Store, repo: str, env: str) -> bool:
    had = store.get(_lock_key(repo, env)) is not None
    store.delete(_lock_key(repo, env))
    return had


def locks(store: Store, repo: str, envs: Sequence[str]) -> list[Lock]:
    return [lock for env in envs if (lock := get_lock(store, repo, env)) is not None]


# --------------------------------------------------------------------------------------------
# The sticky comment
# --------------------------------------------------------------------------------------------

def is_ours(comment: Comment, bot_login: str | None) -> bool:
    if bot_login is not None:
        return comment.author.lower() == bot_login.lower()
    return comment.author_is_bot


def sticky_comment(forge: Forge, number: int, parts: Sequence[str], *, bot_login: str | None,
                   is_mine: Callable[[str], bool] = is_plan_comment) -> list[int]:
    """Make the PR's bot comments recognised by `is_mine` exactly `parts`, in order: edit in place,
    create what is missing, delete the surplus.  Returns the comment ids, part order.

    Our comments are taken in creation order (part 1 is the oldest), so a re-run after a lost
    response finds the comment the first run created instead of adding another.
    """
    ours = sorted((c for c in forge.list_comments(number) if is_ours(c, bot_login) and is_mine(c.body)),
                  key=lambda c: c.id)
    ids: list[int] = []
    for index, body in enumerate(parts):
        if index < len(ours):
            if ours[index].body != body:
                forge.edit_comment(ours[index].id, body)
            ids.append(ours[index].id)
        else:
            ids.append(forge.create_comment(number, body).id)
    for surplus in ours[len(parts):]:
        forge.delete_comment(surplus.id)
    return ids


# --------------------------------------------------------------------------------------------
# PR → plan comment + check run
# --------------------------------------------------------------------------------------------

@dataclass
class PlanOutcome:
    status: str                     # "posted" | "superseded" | "closed" | "no-config" | "bad-config"
    plan: Plan | None = None
    conclusion: str | None = None
    comment_ids: list[int] = field(default_factory=list)
    locked: list[Lock] = field(default_factory=list)


def plan_pull_request(repo: Repo, number: int, *, head_sha: str | None = None,
                      with_cluster: bool | None = None) -> PlanOutcome:
    """Plan the PR's base…head with the default branch's `.prbot.yml`; keep ONE sticky comment and
    the `prbot/plan` check run on the head.

    `head_sha`: the head the event was about — when the PR has moved on, the plan is dropped (a
    newer job plans the newer head).  `with_cluster`: dry-run on the environments' clusters; None
    means "unless the PR comes from a fork" (a writer's `/prbot plan` passes True).
    """
    forge, ws = repo.forge, repo.workspace
    pr = forge.get_pull(number)
    if pr.state != "open":
        return PlanOutcome("closed")
    if head_sha is not None and pr.head_sha != head_sha:
        log.info("plan of %s#%d at %s superseded by %s", repo.name, number, head_sha[:7], pr.head_sha[:7])
        return PlanOutcome("superseded")
    head_ref = f"refs/pull/{number}/head"
    ws.fetch(repo.default_ref(), f"refs/heads/{pr.base_ref}", head_ref)
    try:
        config = default_config(repo)
    except ConfigError as exc:
        _finish_check(forge, pr.head_sha, "failure", CheckRunOutput(
            title=text("check_config_title"),
            summary=text("check_config_summary", errors="\n".join(f"- {md(e, 600)}" for e in exc.errors[:20]))))
        return PlanOutcome("bad-config", conclusion="failure")
    if config is None:
        return PlanOutcome("no-config")
    check = forge.find_check_run(pr.head_sha, CHECK_NAME)
    if check is None:
        check = forge.create_check_run(head_sha=pr.head_sha, name=CHECK_NAME, status="in_progress", output=(
            CheckRunOutput(title=text("check_running_title", head=short_sha(pr.head_sha)),
                           summary=text("check_running_summary"))))
    head = ws.resolve(head_ref) or pr.head_sha
    base = _merge_base(ws, f"refs/heads/{pr.base_ref}", head) or pr.base_sha
    cluster = with_cluster if with_cluster is not None else not pr.from_fork
    runner = repo.dry_runner(config) if (cluster and repo.dry_runner is not None) else None
    pool = RenderPool(cache_dir=repo.render_cache,
                      kube_versions={e.name: e.kubernetes_version for e in config.environments
                                     if e.kubernetes_version})
    try:
        plan = make_plan(ws.git_dir, config, base, head, pool=pool, dry_runner=runner)
    finally:
        close = getattr(runner, "close", None)
        if callable(close):
            close()
    latest = forge.get_pull(number)
    if latest.head_sha != pr.head_sha or latest.state != "open":
        forge.update_check_run(check.id, status="completed", conclusion="cancelled", output=CheckRunOutput(
            title=text("check_superseded_title"), summary=text("check_superseded_summary")))
        return PlanOutcome("superseded", plan=plan)
    held = locks(repo.store, repo.name, sorted({t.env for t in plan.targets}))
    banners = [text("lock_banner", env=md(lock.env), by=lock.describe()[0], reason=lock.describe()[1])
               for lock in held]
    parts = _with_banners(render_markdown(plan), banners)
    ids = sticky_comment(forge, number, parts, bot_login=repo.bot_login)
    conclusion = "failure" if plan.failed or held else "success"
    forge.update_check_run(check.id, status="completed", conclusion=conclusion,
                           output=_check_output(plan, parts, banners, repo, head))
    log.info("planned %s#%d at %s: %d target(s), %s", repo.name, number, short_sha(head), len(plan.targets),
             conclusion)
    if conclusion == "success":
        _auto_merge_fallback(repo, number, pr.head_sha)
    return PlanOutcome("posted", plan=plan, conclusion=conclusion, comment_ids=ids, locked=held)


def _merge_base(ws: Workspace, base_ref: str, head: str) -> str | None:
    """The fork point of the PR (what GitHub's three-dot diff compares), via the core's git helper."""
    from prbot import gitrepo

    base = ws.resolve(base_ref)
    if base is None:
        return None
    try:
        return gitrepo.merge_base(ws.git_dir, base, head)
    except PrbotError:
        return base


def _with_banners(parts: list[str], banners: Sequence[str]) -> list[str]:
    """Lock banners right after the first line (the marker) of part 1."""
    if not banners or not parts:
        return parts
    first, _, rest = parts[0].partition("\n")
    return [f"{first}\n" + "\n".join(banners) + "\n\n" + rest, *parts[1:]]


def _finish_check(forge: Forge, head_sha: str, conclusion: str, output: CheckRunOutput) -> None:
    check = forge.find_check_run(head_sha, CHECK_NAME)
    if check is None:
        forge.create_check_run(head_sha=head_sha, name=CHECK_NAME, status="completed", conclusion=conclusion,
                               output=output)
    else:
        forge.update_check_run(check.id, status="completed", conclusion=conclusion, output=output)


def _verdict_line(parts: Sequence[str]) -> str:
    """The plan comment's verdict (its first bold line), as the check run's title."""
    for line in parts[0].splitlines() if parts else ():
        if line.startswith("**"):
            return re.sub(r"[*`]", "", line)[:200]
    return "prbot plan"


def _check_output(plan: Plan, parts: Sequence[str], banners: Sequence[str], repo: Repo, head: str) -> CheckRunOutput:
    whole = "\n\n".join(parts)
    summary = whole if len(whole) <= CHECK_TEXT_LIMIT else whole[:CHECK_TEXT_LIMIT] + text("check_truncated")
    return CheckRunOutput(title=_verdict_line(parts), summary=summary,
                          annotations=tuple(check_annotations(plan, repo.workspace, head)))


_FILE_LINE = re.compile(r"(?<![\w./-])((?:[\w.@+-]+/)*[\w.@+-]+\.(?:ya?ml|json|tpl|txt|env|properties))(?::(\d+))?")


def check_annotations(plan: Plan, ws: Workspace, head: str) -> list[Annotation]:
    """One annotation per target that failed to render or validate, on the file the message names
    (when it exists at head) or else the target's entry file."""
    out: list[Annotation] = []
    exists: dict[str, bool] = {}

    def present(path: str) -> bool:
        if path not in exists:
            exists[path] = ws.read_file(head, path) is not None
        return exists[path]

    for t in plan.targets:
        messages: list[str] = []
        if t.status == "error" and t.error:
            messages.append(t.error)
        messages += [f"{v.kind} {v.name}: {v.message}" for v in t.validation if v.level == "error"]
        if t.dry_run is not None:
            messages += [f"{e.kind} {e.name}: {e.message}" for e in t.dry_run.errors]
        if not messages:
            continue
        path, line = _locate(t, messages[0], present)
        out.append(Annotation(path=path, start_line=line, end_line=line, level="failure",
                              title=f"{t.env} · {t.app}"[:255], message="\n".join(messages[:20])[:4000]))
    return out


def _locate(t: TargetPlan, message: str, present: Callable[[str], bool]) -> tuple[str, int]:
    for m in _FILE_LINE.finditer(message):
        path = posixpath.normpath(m.group(1))
        for candidate in (path, posixpath.join(t.path, path)):
            if not candidate.startswith("../") and present(candidate):
                return candidate, int(m.group(2) or 1)
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization", "Chart.yaml", "values.yaml"):
        candidate = posixpath.join(t.path, name) if t.path else name
        if present(candidate):
            return candidate, 1
    return (t.path or "."), 1


def _auto_merge_fallback(repo: Repo, number: int, head_sha: str) -> None:
    """Merge a bump PR whose environment has `auto_merge` when GitHub's auto-merge was unavailable."""
    key = f"automerge:{repo.name}#{number}"
    if repo.store.get(key) is None:
        return
    merged = repo.forge.merge_pull(number, sha=head_sha)
    if merged:
        repo.store.delete(key)
        log.info("merged %s#%d at %s (auto_merge)", repo.name, number, short_sha(head_sha))


# --------------------------------------------------------------------------------------------
# Registry push → bump PR
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Push:
    """One image push as a registry reported it."""

    image: ImageRef                 # with tag (and digest when the registry gave one)
    source: str | None = None       # a commit URL when the pushing CI gave its repository
    at: float = 0.0


@dataclass
class BumpOutcome:
    status: str                     # "opened" | "updated" | "unchanged" | "ignored"
    reason: str = ""
    pull: PullRequest | None = None
    writes: int = 0


def _push_key(repo: str, repository: str) -> str:
    return f"push:{repo}:{repository}:"


def record_push(store: Store, repo: str, push: Push) -> bool:
    """Remember a push for `repo`'s next bump job; False when this tag was recorded already (the
    several events of one multi-arch push, or a redelivery)."""
    image = push.image
    value = json.dumps({"image": str(image), "source": push.source, "at": push.at})
    return store.put_if_absent(_push_key(repo, image.repository) + (image.tag or image.digest or ""), value)


def take_pushes(store: Store, repo: str, repository: str) -> list[tuple[str, Push]]:
    """Every push recorded for (repo, repository) not yet bumped, oldest first, with its key."""
    from prbot.images import parse_image

    out: list[tuple[str, Push]] = []
    for key, raw in store.items(_push_key(repo, repository)):
        try:
            data = json.loads(raw)
            out.append((key, Push(parse_image(data["image"]), data.get("source"), float(data.get("at", 0)))))
        except (ValueError, KeyError, TypeError, PrbotError):
            store.delete(key)
    return sorted(out, key=lambda kp: kp[1].at)


def best_push(pushes: Sequence[Push], policy: str) -> Push | None:
    """The push a bump PR should carry: the latest pushed, or under `semver` the highest version."""
    if not pushes:
        return None
    if policy != "semver":
        return pushes[-1]
    best = pushes[0]
    for p in pushes[1:]:
        if is_newer(p.image.tag or "", best.image.tag or "") is True:
            best = p
    return best


def bump_pending(repo: Repo, repository: str) -> BumpOutcome | None:
    """Bump to the best push recorded for `repository` (see `record_push`), then forget every push
    it makes obsolete.  Pushes are forgotten only after the bump went through, so a job that fails
    half-way and runs again sees them all again."""
    pending = take_pushes(repo.store, repo.name, repository)
    if not pending:
        return None
    repo.workspace.fetch(repo.default_ref())
    config = default_config(repo)
    policy = next((r.policy for r in (config.images if config else ()) if _same(r.repository, repository)), "pushed")
    best = best_push([p for _, p in pending], policy)
    assert best is not None
    outcome = bump_pull_request(repo, best)
    for key, _ in pending:
        repo.store.delete(key)
    return outcome


def _same(a: str, b: str) -> bool:
    from prbot.images import same_repository

    return same_repository(a, b)


def _bump_record_key(repo: str, branch: str) -> str:
    return f"bump:{repo}:{branch}"


def bump_pull_request(repo: Repo, push: Push) -> BumpOutcome:
    """Open — or update — the ONE bump PR of (environment, image repository) for `push`.

    The branch `prbot/bump/<env>/<repository-slug>` is rewritten as one fresh commit on the default
    branch; the PR's title and body follow.  Under `policy: semver` a lower version than the open
    PR's or the default branch's never replaces it.  API writes: create + labels (+ auto-merge) for
    a new PR, one update for an existing one, none when nothing changed.
    """
    forge, ws = repo.forge, repo.workspace
    ws.fetch(repo.default_ref())
    config = default_config(repo)
    if config is None:
        return BumpOutcome("ignored", f"{repo.name} has no {CONFIG_FILE} on {forge.default_branch}")
    decision = decide(config, push.image)
    if not decision.accepted or decision.env is None or decision.rule is None:
        return BumpOutcome("ignored", decision.reason)
    env, rule, image = decision.env, decision.rule, decision.image
    branch = bump_branch(env, image.repository)
    ws.fetch(f"refs/heads/{branch}")
    existing = forge.find_pull(branch, state="open")
    record = _read_json(repo.store.get(_bump_record_key(repo.name, branch)))
    if (existing is not None and record and record.get("pr") == existing.number and rule.policy == "semver"
            and is_newer(str(record.get("tag")), image.tag or "") is True):
        return BumpOutcome("ignored", f"tag {image.tag} is not a higher version than {record.get('tag')}, which "
                                      f"PR #{existing.number} carries (policy: semver)", existing)
    base_sha = ws.resolve(repo.default_ref())
    if base_sha is None:
        raise ForgeError(f"{repo.name}: default branch {forge.default_branch} not found")
    with ws.checkout(base_sha) as root:
        result = edit_bump(root, config, str(image), env)
        if result.errors:
            raise PrbotError(f"cannot bump {image.repository} in {env}: {result.errors[0]}")
        if not result.matched:
            return BumpOutcome("ignored", f"no target of {env} uses {image.repository}")
        if rule.policy == "semver":
            for e in result.edits:
                old_tag = e.old.split("@", 1)[0]
                if old_tag and is_newer(old_tag, image.tag or "") is True:
                    return BumpOutcome("ignored", f"tag {image.tag} is not a higher version than {old_tag}, which "
                                                  f"{env} runs (policy: semver)")
        files = {e.path: (root / e.path).read_bytes() for e in result.edits}
    if not files:
        return BumpOutcome("unchanged", f"{env} already runs {image.version}", existing)
    title = text("bump_title", repository=image.repository, version=image.version, env=env)
    commit = ws.commit(parent=base_sha, files=files, message=text("bump_commit", repository=image.repository,
                                                                 version=image.version, env=env))
    body = _bump_body(config, env, image, result.edits, push)
    writes = 0
    tip = ws.resolve(f"refs/heads/{branch}")
    if tip is None or not _same_tree(ws, tip, commit) or ws.resolve(f"{tip}^") != base_sha:
        ws.push(branch, commit, force=True)
    if existing is not None:
        if existing.title != title or existing.body != body:
            forge.update_pull(existing.number, title=title, body=body)
            writes += 1
        pull, status = existing, "updated"
    else:
        pull = forge.create_pull(title=title, body=body, head=branch, base=forge.default_branch)
        forge.add_labels(pull.number, [*LABELS, f"env:{env}"])
        writes += 2
        status = "opened"
        if config.env(env).auto_merge:
            writes += 1
            if not forge.enable_auto_merge(pull):
                repo.store.put(f"automerge:{repo.name}#{pull.number}", pull.head_sha)
    repo.store.put(_bump_record_key(repo.name, branch),
                   json.dumps({"tag": image.tag, "version": image.version, "pr": pull.number, "sha": commit}))
    log.info("%s bump PR %s#%d: %s → %s in %s", status, repo.name, pull.number, image.repository, image.version, env)
    return BumpOutcome(status, pull=pull, writes=writes)


def _same_tree(ws: Workspace, a: str, b: str) -> bool:
    return ws.resolve(f"{a}^{{tree}}") == ws.resolve(f"{b}^{{tree}}")


_SHA_TAG = re.compile(r"[0-9a-f]{7,40}")


def _bump_body(config: Config, env: str, image: ImageRef, edits: Sequence[object], push: Push) -> str:
    rows = "\n".join(text("bump_row", target=code(getattr(e, "target", "")), path=code(getattr(e, "path", "")),
                          old=code(getattr(e, "old", "")), new=code(getattr(e, "new", ""))) for e in edits)
    details = []
    if image.digest:
        details.append(text("bump_digest", digest=code(image.digest)))
    if push.source and image.tag and _SHA_TAG.fullmatch(image.tag) and re.fullmatch(r"https://[^\s<>()]+", push.source):
        details.append(text("bump_source", link=f"[{image.tag[:7]}]({push.source.rstrip('/')}/commit/{image.tag})"))
    note = text("bump_auto_merge", env=env) if config.env(env).auto_merge else text("bump_manual_merge", env=env)
    return text("bump_body", repository=code(image.repository), version=code(image.version), env=md(env),
                rows=rows, details="".join(f"{d}\n" for d in details), merge_note=note)


def _read_json(raw: str | None) -> dict[str, object] | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# --------------------------------------------------------------------------------------------
# Slash commands
# --------------------------------------------------------------------------------------------

@dataclass
class CommandOutcome:
    ran: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    plan: PlanOutcome | None = None


Executor = Callable[[Repo, PullRequest, cmds.Command, str, Config], str | None]


def run_commands(repo: Repo, *, number: int, comment_id: int, user: str, body: str,
                 extra: dict[str, Executor] | None = None) -> CommandOutcome:
    """Run the `/prbot` lines of a PR comment by `user` (SPEC §6): 👀 when taken, 🚀 when every
    command ran, 😕 otherwise, and one reply for refusals, typos and answers.

    `extra` maps command names to executors wired by later features (promote, sync, rollback,
    preview); the others are answered "not available yet".
    """
    forge = repo.forge
    outcome = CommandOutcome()
    repo.workspace.fetch(repo.default_ref())
    try:
        config = default_config(repo)
    except ConfigError:
        config = None
    env_names = config.env_names if config else []
    parsed = cmds.parse_commands(body, env_names)
    if not parsed:
        return outcome
    forge.react(comment_id, "eyes")
    pr = forge.get_pull(number)
    permission: str | None = None
    failed = False
    for item in parsed:
        line = code(item.line, 120)
        if isinstance(item, cmds.CommandError):
            outcome.replies.append(text("reply_error", line=line, message=item.message))
            failed = True
            continue
        if config is None and item.name != "help":
            outcome.replies.append(text("reply_failed", line=line, message=f"this repository has no valid "
                                                                             f"{CONFIG_FILE} on its default branch"))
            failed = True
            continue
        if item.name != "help" and permission is None:
            permission = forge.permission(user)
        env = item.env
        deployers = config.env(env).deployers if (config and env) else ()
        why = cmds.refusal(item, user, permission or "none", deployers,
                           lambda org, team: forge.is_team_member(org, team, user))
        if why is not None:
            outcome.refused.append(item.name)
            outcome.replies.append(text("reply_refused", line=line, message=why))
            failed = True
            continue
        try:
            reply = _execute(repo, pr, item, user, config, outcome, extra or {})
        except NotAvailable as exc:
            outcome.replies.append(str(exc))
            failed = True
            continue
        except PrbotError as exc:
            outcome.replies.append(text("reply_failed", line=line, message=md(str(exc), 600)))
            failed = True
            continue
        outcome.ran.append(item.name)
        if reply:
            outcome.replies.append(reply)
    if outcome.replies:
        forge.create_comment(number, "\n".join(outcome.replies))
    forge.react(comment_id, "confused" if failed else "rocket")
    return outcome


def _execute(repo: Repo, pr: PullRequest, command: cmds.Command, user: str, config: Config | None,
             outcome: CommandOutcome, extra: dict[str, Executor]) -> str | None:
    name = command.name
    if name == "help":
        return text("reply_help", table=cmds.help_text())
    assert config is not None
    if name == "plan":
        outcome.plan = plan_pull_request(repo, pr.number, with_cluster=True)
        return None
    if name == "lock":
        assert command.env is not None
        reason = f" ({md(command.reason)})" if command.reason else ""
        if set_lock(repo.store, repo.name, command.env, user, command.reason, repo.clock()):
            return text("reply_locked", env=md(command.env), reason=reason)
        held = get_lock(repo.store, repo.name, command.env)
        by, why = held.describe() if held else ("?", "")
        return text("reply_already_locked", env=md(command.env), by=by, reason=why)
    if name == "unlock":
        assert command.env is not None
        if clear_lock(repo.store, repo.name, command.env):
            return text("reply_unlocked", env=md(command.env))
        return text("reply_not_locked", env=md(command.env))
    executor = extra.get(name)
    if executor is None:
        raise NotAvailable(text("reply_not_yet", line=code(command.line, 120)))
    return executor(repo, pr, command, user, config)


class NotAvailable(PrbotError):
    """A command this deployment of prbot does not run; its message is the whole reply line."""

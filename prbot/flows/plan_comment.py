"""A pull request → its plan: the sticky comment and the `prbot/plan` check run.

The check is green only when the comment shows everything the PR affects: a target that failed, a
target prbot could not render (a blind spot) or one the comment had no room for fails it, by name.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prbot.errors import ConfigError
from prbot.flows.context import Repo, default_config
from prbot.flows.locks import Lock, locks
from prbot.flows.sticky import sticky_comment
from prbot.plan import Plan, TargetPlan
from prbot.ports import (
    Annotation,
    CheckRunOutput,
    Forge,
    Workspace,
)
from prbot.render import RenderPool
from prbot.report import Comment, blind_spots, render_comment
from prbot.report.markdown import code, md, short_sha, visible
from prbot.report.texts import text

log = logging.getLogger("prbot.flows")

CHECK_NAME = "prbot/plan"
CHECK_TEXT_LIMIT = 65_000
PLAN_ACTIONS = frozenset({"opened", "synchronize", "reopened", "ready_for_review"})


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

    `head_sha`: the head the event or command was about — when the PR has moved on (GitHub's answer
    or the fetched head ref), nothing is planned nor sent to a cluster and the outcome is
    "superseded" (a newer job plans the newer head; a bound command says so).
    `with_cluster`: dry-run on the environments' clusters; None means "unless the PR comes from a
    fork" (a writer's `/prbot plan` passes True, with the head the writer saw as `head_sha`).
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
    if head_sha is not None and ws.resolve(head_ref) != head_sha:   # pushed between the two reads
        log.info("plan of %s#%d at %s superseded by a push", repo.name, number, head_sha[:7])
        return PlanOutcome("superseded")
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
    if cluster and pr.base_ref != forge.default_branch:
        # what a target owns on a cluster comes from the default branch; another base branch may
        # hold targets nobody reviewed, so a PR into it is planned without the cluster
        log.info("plan of %s#%d without the cluster: its base %s is not the default branch",
                 repo.name, number, pr.base_ref)
        cluster = False
    runner = repo.dry_runner(config) if (cluster and repo.dry_runner is not None) else None
    pool = RenderPool(cache_dir=repo.render_cache,
                      kube_versions={e.name: e.kubernetes_version for e in config.environments
                                     if e.kubernetes_version})
    try:
        plan = ws.plan(config, base, head, pool=pool, dry_runner=runner)
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
    comment = render_comment(plan)
    parts = _with_banners(comment.parts, banners)
    ids = sticky_comment(forge, number, parts, bot_login=repo.bot_login)
    blind = blind_spots(plan)
    conclusion = "failure" if plan.failed or held or blind or comment.hidden else "success"
    forge.update_check_run(check.id, status="completed", conclusion=conclusion,
                           output=_check_output(plan, comment, parts, repo, head))
    log.info("planned %s#%d at %s: %d target(s), %s", repo.name, number, short_sha(head), len(plan.targets),
             conclusion)
    if conclusion == "success":
        _auto_merge_fallback(repo, number, pr.head_sha)
    return PlanOutcome("posted", plan=plan, conclusion=conclusion, comment_ids=ids, locked=held)


def _merge_base(ws: Workspace, base_ref: str, head: str) -> str | None:
    """The fork point of the PR (what GitHub's three-dot diff compares); the base itself when they
    share no history."""
    base = ws.resolve(base_ref)
    if base is None:
        return None
    return ws.merge_base(base, head) or base


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


_NAMED_TEXT = 25_000                # characters of one gate section: both fit the check run's summary


def _named(targets: Sequence[TargetPlan], line: Callable[[TargetPlan], str]) -> str:
    lines: list[str] = []
    used = 0
    for i, t in enumerate(targets):
        got = line(t)
        if used + len(got) > _NAMED_TEXT:
            lines.append(text("check_more", count=len(targets) - i))
            break
        lines.append(got)
        used += len(got) + 1
    return "\n".join(lines)


def _gate(plan: Plan, comment: Comment) -> tuple[str, str]:
    """(title suffix, summary head) saying what the comment does not show: targets not rendered,
    each with its reason and the way out, and targets left out for room, each by name."""
    blind = blind_spots(plan)
    suffix, sections = "", []
    if blind:                       # the verdict (the title) already counts them per environment
        sections.append(text("check_not_rendered", way_out=text("check_not_rendered_way_out"),
                             targets=_named(blind, lambda t: text(
                                 "check_not_rendered_target", target=md(f"{t.env}/{t.app}", 100),
                                 path=code(t.path, 200),
                                 reason=md(t.error or "not expanded: " + "; ".join(t.not_expanded), 600)))))
    if comment.hidden:
        suffix = " · " + text("check_hidden_title", count=len(comment.hidden))
        sections.append(text("check_hidden", parts=len(comment.parts), targets=_named(comment.hidden, lambda t: text(
            "check_hidden_target", target=md(f"{t.env}/{t.app}", 100), path=code(t.path, 200)))))
    return suffix, "".join(f"{s}\n\n" for s in sections)


def _check_output(plan: Plan, comment: Comment, parts: Sequence[str], repo: Repo, head: str) -> CheckRunOutput:
    suffix, gate = _gate(plan, comment)
    whole = gate + "\n\n".join(parts)
    summary = whole if len(whole) <= CHECK_TEXT_LIMIT else whole[:CHECK_TEXT_LIMIT] + text("check_truncated")
    return CheckRunOutput(title=(_verdict_line(parts) + suffix)[:255], summary=summary,
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
        if t.status == "skipped" and t.error:           # not rendered: a blind spot, and the way out
            messages.append(f"{t.error}. {text('check_not_rendered_way_out')}")
        messages += [f"{v.kind} {v.name}: {v.message}" for v in t.validation if v.level == "error"]
        if t.dry_run is not None:
            messages += [f"{e.kind} {e.name}: {e.message}" for e in t.dry_run.errors]
        if not messages:
            continue
        # a blind spot's message names `.prbot.yml`; the file that reads the remote is the target's own
        path, line = _locate(t, "" if t.status == "skipped" else messages[0], present)
        out.append(Annotation(path=path, start_line=line, end_line=line, level="failure",
                              title=visible(f"{t.env} · {t.app}")[:255],
                              message=visible("\n".join(messages[:20]))[:4000]))
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

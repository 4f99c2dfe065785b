"""Promotion PRs: once an environment is healthy at a merge that changed
images, the bot opens — or updates — `prbot/promote/<next-env>/<app>`, carrying the versions the
environment runs into the next one with the edit engine's `promote`, with provenance (the source
PR and its author, the image digests, the Deployment that proved it healthy) and a picture of
where each version runs.  `/prbot promote [ENV]` does the same on demand.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from prbot.branches import promote_branch
from prbot.config import Config
from prbot.edit import FileEdit, rendered_images
from prbot.edit import promote as edit_promote
from prbot.errors import PrbotError, RenderError
from prbot.flows.context import Repo, config_at, env_state
from prbot.images import ImageRef
from prbot.model import Target
from prbot.ports import PullRequest
from prbot.report.markdown import code, md, short_sha
from prbot.report.texts import text
from prbot.targets import discover_targets

log = logging.getLogger("prbot.flows")

LABELS = ("prbot", "promote")
HEALTH_ICONS = {"healthy": "✅", "failed": "❌", "held": "🔒", "waiting": "⏳", "syncing": "🔄", "progressing": "🔄"}


@dataclass(frozen=True)
class Provenance:
    """Where a promotion comes from."""

    pr: int | None = None               # the source PR
    author: str | None = None
    deployment: int | None = None       # the Deployment that proved the source environment healthy
    sha: str | None = None              # the commit the source environment is healthy at
    requested_by: str | None = None     # `/prbot promote` by


@dataclass
class PromotionOutcome:
    app: str
    status: str                          # "opened" | "updated" | "nothing" | "refused"
    pull: PullRequest | None = None
    reason: str = ""


def open_promotion(repo: Repo, config: Config, from_env: str, to_env: str, app: str,
                   provenance: Provenance) -> PromotionOutcome:
    """Open or update the promotion PR of `app` from `from_env` into `to_env` on the default branch."""
    forge, ws = repo.forge, repo.workspace
    branch = promote_branch(to_env, app)
    ws.fetch(repo.default_ref(), f"refs/heads/{branch}")
    base_sha = ws.resolve(repo.default_ref())
    if base_sha is None:
        raise PrbotError(f"default branch {forge.default_branch} not found")
    existing = forge.find_pull(branch, state="open")
    with ws.checkout(base_sha) as root:
        result = edit_promote(root, config, from_env, to_env, app)
        if result.errors:
            raise PrbotError(f"cannot promote {app} from {from_env} to {to_env}: {result.errors[0]}")
        if result.refused:                            # a lower semantic version: never automatically
            return PromotionOutcome(app, "refused", existing, result.refused[0])
        if not result.edits:
            return PromotionOutcome(app, "nothing", existing, f"{to_env} already runs what {from_env} runs")
        files = {e.path: (root / e.path).read_bytes() for e in result.edits}
        digests = _digests(repo, root, config, from_env, app)
    picture = picture_for(repo, config, base_sha, app)      # where versions run now: `root` holds the edit
    title = text("promote_title", app=app, from_env=from_env, to_env=to_env,
                 versions=", ".join(sorted({e.new for e in result.edits})))
    body = _body(repo, app, from_env, to_env, result.edits, provenance, picture, digests)
    commit = ws.commit(parent=base_sha, files=files, message=title)
    tip = ws.resolve(f"refs/heads/{branch}")
    if tip is None or not ws.same_tree(tip, commit) or ws.resolve(f"{tip}^") != base_sha:
        ws.push(branch, commit, force=True)
    labels = [*LABELS, f"env:{to_env}"]
    marker = f"promoted:{repo.name}#"
    if existing is not None:
        if existing.title != title or existing.body != body:
            forge.update_pull(existing.number, title=title, body=body)
        missing = [name for name in labels if name not in existing.labels]
        if missing:                                   # a run that opened the PR and failed before labelling it
            forge.add_labels(existing.number, missing)
        pull, status = existing, "updated"
    else:
        pull = forge.create_pull(title=title, body=body, head=branch, base=forge.default_branch)
        forge.add_labels(pull.number, labels)
        status = "opened"
    if config.env(to_env).auto_merge and repo.store.get(f"{marker}{pull.number}") is None:   # once per PR
        if not forge.enable_auto_merge(pull):
            repo.store.put(f"automerge:{repo.name}#{pull.number}", pull.head_sha)
        repo.store.put(f"{marker}{pull.number}", "auto-merge")
    log.info("%s promotion PR %s#%d: %s %s → %s", status, repo.name, pull.number, app, from_env, to_env)
    return PromotionOutcome(app, status, pull)


def promote_healthy(repo: Repo, sha: str, env: str, apps: Sequence[str], provenance: Provenance) -> str | None:
    """An environment turned healthy at `sha`: promote its apps into the next environment.  Returns
    what the result comment says about it ("#12, #13"), or None when there is no next environment.

    The mirror is brought up to date first: this runs on whichever worker polled the deploy, whose
    mirror may not hold the merge commit yet (it would read no configuration and promote nothing)."""
    if repo.workspace.resolve(sha) is None:
        repo.workspace.fetch(repo.default_ref())
    config = config_at(repo, sha)
    if config is None:
        return None
    nxt = config.next_env(env)
    if nxt is None:
        return None
    said = []
    for app in apps:
        try:
            outcome = open_promotion(repo, config, env, nxt.name, app, provenance)
        except PrbotError as exc:
            log.warning("promotion of %s from %s failed: %s", app, env, exc)
            said.append(f"{md(app)}: {md(str(exc), 200)}")
            continue
        if outcome.pull is not None and outcome.status in ("opened", "updated"):
            said.append(f"#{outcome.pull.number} ({md(app)} → {md(nxt.name)})")
    return ", ".join(said) or None


# --------------------------------------------------------------------------------------------
# The body: provenance and the picture of where each version runs
# --------------------------------------------------------------------------------------------

def _body(repo: Repo, app: str, from_env: str, to_env: str, edits: Sequence[FileEdit], provenance: Provenance,
          picture: str, digests: Sequence[str]) -> str:
    rows = "\n".join(text("bump_row", target=code(e.target), path=code(e.path), old=code(e.old), new=code(e.new))
                     for e in edits)
    lines = []
    if provenance.pr is not None:
        author = f" by {code(provenance.author)}" if provenance.author else ""
        lines.append(text("promote_source", pr=f"#{provenance.pr}", author=author))
    if provenance.deployment is not None:
        lines.append(text("promote_deployment", deployment=str(provenance.deployment), env=md(from_env),
                          sha=code(short_sha(provenance.sha or "")),
                          url=f"{repo.forge.html_url}/deployments/{md(from_env)}"))
    if provenance.requested_by:
        lines.append(text("promote_requested", user=code(provenance.requested_by)))
    lines += [text("promote_digest", image=code(d)) for d in digests] or [text("promote_no_digest")]
    return text("promote_body", app=md(app), from_env=md(from_env), to_env=md(to_env), rows=rows,
                provenance="\n".join(lines), picture=picture)


def _env_targets(config: Config, root: Path, app: str) -> dict[str, Target]:
    return {t.env: t for t in discover_targets(config, root) if t.app == app}


def _images(root: Path, target: Target, config: Config) -> dict[str, ImageRef]:
    try:
        return rendered_images(root, target, kube_version=config.env(target.env).kubernetes_version)
    except RenderError:
        return {}


def _digests(repo: Repo, root: Path, config: Config, env: str, app: str) -> list[str]:
    """The images the promotion carries, pinned by digest where the source or the bump knew one."""
    target = _env_targets(config, root, app).get(env)
    if target is None:
        return []
    out = []
    known = known_digests(repo)
    for ref in _images(root, target, config).values():
        digest = ref.digest or known.get((ref.repository, ref.tag or ""))
        if digest:
            out.append(f"{ref.repository}@{digest}")
    return out


def known_digests(repo: Repo) -> dict[tuple[str, str], str]:
    """(repository, tag) → digest of the pushes the bump flow recorded."""
    out: dict[tuple[str, str], str] = {}
    for _, raw in repo.store.items(f"bump:{repo.name}:"):
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("digest") and data.get("repository") and data.get("tag"):
            out[(str(data["repository"]), str(data["tag"]))] = str(data["digest"])
    return out


def versions_picture(repo: Repo, config: Config, root: Path, app: str) -> str:
    """A Mermaid flowchart of the environments in promotion order, each with the version(s) `app`
    runs there (on the default branch) and the health of its last deployment."""
    targets = _env_targets(config, root, app)
    nodes = []
    for index, env in enumerate(config.env_names):
        target = targets.get(env)
        versions = sorted({r.version for r in _images(root, target, config).values()}) if target else []
        state = env_state(repo, env) or {}
        health = str(state.get("state") or "")
        line = " ".join(v for v in versions[:3]) or "—"
        label = f"{env}<br/>{app} {line}<br/>{HEALTH_ICONS.get(health, '·')} {health or 'not deployed by prbot'}"
        nodes.append(f'  e{index}["{_mermaid(label)}"]')
    arrows = " --> ".join(f"e{i}" for i in range(len(nodes)))
    return "```mermaid\nflowchart LR\n" + "\n".join(nodes) + (f"\n  {arrows}" if len(nodes) > 1 else "") + "\n```"


def _mermaid(label: str) -> str:
    """Text inside a quoted Mermaid label: no quotes, no markdown, no mentions."""
    return label.replace('"', "'").replace("@", "＠").replace("`", "'")


def picture_for(repo: Repo, config: Config, sha: str, app: str) -> str:
    with repo.workspace.materialize(sha) as root:
        return versions_picture(repo, config, root, app)

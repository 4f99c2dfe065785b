"""Rollback PRs (`/prbot rollback [ENV]`): a PR restoring the images an environment ran
at its previous successful GitHub Deployment.

GitHub's Deployments are the record: the newest successful deployment of the environment is what
runs now, the one before it is what to go back to.  The images each target of the environment
rendered at that commit are put back with the edit engine (as `prbot bump --force` would), on a
fresh commit of the default branch, in `prbot/rollback/<env>`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prbot.branches import slug
from prbot.config import Config
from prbot.edit import FileEdit, rendered_images
from prbot.edit import bump as edit_bump
from prbot.errors import PrbotError, RenderError
from prbot.flows.context import Repo
from prbot.ports import Deployment, PullRequest
from prbot.report.markdown import code, md, short_sha
from prbot.report.texts import text
from prbot.targets import discover_targets

log = logging.getLogger("prbot.flows")

LABELS = ("prbot", "rollback")


@dataclass
class RollbackOutcome:
    status: str                          # "opened" | "updated" | "nothing"
    pull: PullRequest | None = None
    to: Deployment | None = None
    reason: str = ""


def rollback_branch(env: str) -> str:
    return f"prbot/rollback/{slug(env)}"


def previous_success(repo: Repo, env: str) -> tuple[Deployment, Deployment]:
    """(the deployment running now, the one to go back to): the two newest successful ones.

    GitHub marks a successful deployment `inactive` when a newer one of its environment succeeds
    (and only a successful one), so both states count as "was deployed and healthy"."""
    done = [d for d in repo.forge.list_deployments(environment=env) if d.state in ("success", "inactive")]
    if len(done) < 2:
        raise PrbotError(f"{env} has no earlier successful deployment to roll back to")
    return done[0], done[1]


def open_rollback(repo: Repo, config: Config, env: str, *, requested_by: str) -> RollbackOutcome:
    forge, ws = repo.forge, repo.workspace
    current, previous = previous_success(repo, env)
    branch = rollback_branch(env)
    ws.fetch(repo.default_ref(), f"refs/heads/{branch}")
    base_sha = ws.resolve(repo.default_ref())
    old_sha = ws.resolve(previous.sha)
    if base_sha is None or old_sha is None:
        raise PrbotError(f"the commit of deployment {previous.id} ({short_sha(previous.sha)}) is not on "
                         f"{forge.default_branch}")
    wanted: list[tuple[str, str]] = []                   # (app, image reference)
    with ws.materialize(old_sha) as old_root:
        for target in discover_targets(config, old_root):
            if target.env != env:
                continue
            try:
                images = rendered_images(old_root, target, kube_version=config.env(env).kubernetes_version)
            except RenderError as exc:
                raise PrbotError(f"{target.path} does not render at {short_sha(old_sha)}: {exc}") from exc
            wanted += [(target.app, str(ref)) for ref in images.values() if ref.tag or ref.digest]
    if not wanted:
        raise PrbotError(f"{env} ran no image at {short_sha(old_sha)}")
    edits: list[FileEdit] = []
    with ws.checkout(base_sha) as root:
        for app, image in wanted:
            result = edit_bump(root, config, image, env, app, force=True)
            if result.errors:
                raise PrbotError(f"cannot roll back {app} in {env}: {result.errors[0]}")
            edits += result.edits
        files = {e.path: (root / e.path).read_bytes() for e in edits}
    existing = forge.find_pull(branch, state="open")
    if not files:
        return RollbackOutcome("nothing", existing, previous, f"{env} already runs what it ran at "
                                                              f"{short_sha(old_sha)}")
    title = text("rollback_title", env=env, sha=short_sha(old_sha))
    rows = "\n".join(text("bump_row", target=code(e.target), path=code(e.path), old=code(e.old), new=code(e.new))
                     for e in edits)
    body = text("rollback_body", env=md(env), sha=code(short_sha(old_sha)), previous=str(previous.id),
                current=str(current.id), current_sha=code(short_sha(current.sha)), rows=rows,
                user=code(requested_by))
    commit = ws.commit(parent=base_sha, files=files, message=title)
    ws.push(branch, commit, force=True)
    if existing is not None:
        forge.update_pull(existing.number, title=title, body=body)
        return RollbackOutcome("updated", existing, previous)
    pull = forge.create_pull(title=title, body=body, head=branch, base=forge.default_branch)
    forge.add_labels(pull.number, [*LABELS, f"env:{env}"])
    log.info("opened rollback PR %s#%d: %s to %s", repo.name, pull.number, env, short_sha(old_sha))
    return RollbackOutcome("opened", pull, previous)

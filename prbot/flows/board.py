"""The board of a repository: where every version runs.

Per app and environment, in promotion order: the version (tag and digest) its target renders on the
default branch, and the version it rendered at the last deployment that ended healthy; per
environment, the last deployment (state, time, PR; running or ended), its lock; the open bump,
promotion and rollback PRs; the promotion path.  Everything comes from the ports: the default
branch's targets are rendered from the mirror (the edit engine's `rendered_images`), deployments
from the records the deploy flow keeps in the store (`deploy:<repo>:<sha>`), locks from the store,
open PRs from the forge by the branches prbot opens them on.  The service's health is not the
repository's: the caller passes it (`ServiceHealth`), the web page shows it.

`board_markdown` is the board as a comment (`/prbot status`): a table and a Mermaid picture of the
promotion path.  Every text that comes from a repository (names, tags, PR titles, lock reasons) is
data: the markdown escapes it here, the page's templates escape it as HTML.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prbot.branches import bump_branch, promote_branch, slug
from prbot.config import CONFIG_FILE, Config, load_config
from prbot.edit import rendered_images
from prbot.envboard import (
    STATE_ICONS,
    Board,
    Cell,
    Deploy,
    Env,
    Lock,
    OpenPull,
    ServiceHealth,
    Version,
    deploy_history,
    read_lock,
    refresh_live,
    when,
)
from prbot.errors import ConfigError, ImageError, PrbotError, RenderError
from prbot.flows.context import Repo, default_config
from prbot.flows.promote import known_digests
from prbot.images import ImageRef
from prbot.ports import PullRequest
from prbot.report.markdown import code, md, short_sha
from prbot.targets import discover_targets

log = logging.getLogger("prbot.flows")

__all__ = ["STATE_ICONS", "Board", "Cell", "Deploy", "Env", "Lock", "OpenPull", "ServiceHealth", "Version",
           "board_markdown", "build_board", "deploy_history", "mermaid_path", "open_pulls", "refresh_live"]

# --------------------------------------------------------------------------------------------
# Building it
# --------------------------------------------------------------------------------------------

def build_board(repo: Repo) -> Board:
    """The board of `repo` now: renders the default branch's targets (and those of each
    environment's last healthy deployment), reads the deployment records and locks from the store
    and the open PRs prbot made from the forge."""
    forge = repo.forge
    board = Board(repo=repo.name, html_url=forge.html_url, default_branch=forge.default_branch, at=repo.clock())
    repo.workspace.fetch(repo.default_ref())
    sha = repo.workspace.resolve(repo.default_ref())
    if sha is None:
        board.error = f"the default branch {forge.default_branch} was not found"
        return board
    board.sha = sha
    try:
        config = default_config(repo)
    except ConfigError as exc:
        board.error = f"the .prbot.yml of {forge.default_branch} is not valid: {str(exc).splitlines()[0]}"
        return board
    if config is None:
        board.error = f"no .prbot.yml on {forge.default_branch}"
        return board
    last, healthy = deploy_history(repo.store, repo.name, config.env_names)
    for environment in config.environments:
        board.envs.append(Env(name=environment.name, cluster=environment.cluster,
                              lock=read_lock(repo.store, repo.name, environment.name),
                              last=last.get(environment.name), healthy=healthy.get(environment.name)))
    digests = known_digests(repo)
    with repo.workspace.materialize(sha) as root:
        targets = discover_targets(config, root)
        for target in targets:
            if target.app not in board.apps:
                board.apps.append(target.app)
            cell = board.cells.setdefault(target.app, {}).setdefault(target.env, Cell())
            cell.path = target.path
            try:
                cell.rendered = _versions(root, config, target, digests)
            except RenderError as exc:
                cell.error = str(exc).splitlines()[0][:300] if str(exc) else "does not render"
    by_sha: dict[str, list[str]] = {}
    for env in board.envs:
        if env.healthy is not None:
            by_sha.setdefault(env.healthy.sha, []).append(env.name)
    for at_sha, envs in by_sha.items():
        _healthy_versions(repo, board, at_sha, envs, digests)
    board.pulls = open_pulls(repo, config, board.apps)
    return board


def _versions(root: Path, config: Config, target: Any, digests: Mapping[tuple[str, str], str]) -> list[Version]:
    images = rendered_images(root, target, kube_version=config.env(target.env).kubernetes_version)
    out = []
    for ref in images.values():
        digest = ref.digest or digests.get((ref.repository, ref.tag or ""))
        out.append(Version(ref.repository, ref.tag, digest))
    return sorted(out, key=lambda v: v.image)


def _healthy_versions(repo: Repo, board: Board, sha: str, envs: list[str],
                      digests: Mapping[tuple[str, str], str]) -> None:
    """What the targets of `envs` rendered at `sha`, a deployment that ended healthy there."""
    if repo.workspace.resolve(sha) is None:
        return                                   # not in the mirror (a rewritten history): unknown
    try:
        with repo.workspace.materialize(sha) as root:
            config = _config_in(root)
            if config is None:
                return
            for target in discover_targets(config, root):
                if target.env not in envs:
                    continue
                cell = board.cells.setdefault(target.app, {}).setdefault(target.env, Cell())
                if target.app not in board.apps:
                    board.apps.append(target.app)
                try:
                    cell.healthy = _versions(root, config, target, digests)
                except RenderError:
                    cell.healthy = None
    except PrbotError as exc:
        log.info("the board of %s cannot read the deployed commit %s: %s", repo.name, sha[:7], exc)


def _config_in(root: Path) -> Config | None:
    path = root / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return load_config(path.read_text(encoding="utf-8"))
    except (ConfigError, UnicodeDecodeError):
        return None


def open_pulls(repo: Repo, config: Config, apps: Iterable[str]) -> list[OpenPull]:
    """The open PRs prbot made, found by their branches: a bump per image rule, a promotion per
    (app, environment after the first), a rollback per environment."""
    forge = repo.forge
    out: list[OpenPull] = []
    names = config.env_names

    def find(kind: str, branch: str, env: str, subject: str) -> None:
        pull: PullRequest | None = forge.find_pull(branch, state="open")
        if pull is not None:
            out.append(OpenPull(kind, pull.number, pull.title, pull.html_url, env, subject))

    seen: set[str] = set()
    for rule in config.images:
        env = rule.land_in or (names[0] if names else "")
        try:
            repository = ImageRef(rule.repository).repository
        except ImageError:
            repository = rule.repository
        branch = bump_branch(env, repository)
        if branch not in seen:
            seen.add(branch)
            find("bump", branch, env, repository)
    for env in names[1:]:
        for app in apps:
            find("promote", promote_branch(env, app), env, app)
    for env in names:
        find("rollback", f"prbot/rollback/{slug(env)}", env, "")
    return out


# --------------------------------------------------------------------------------------------
# The board as a comment
# --------------------------------------------------------------------------------------------

def _versions_md(versions: list[Version] | None) -> str:
    if not versions:
        return "—"
    return "<br>".join(code(v.short) for v in versions)        # tags and digests: no `|` can be in them


def _deploy_md(deploy: Deploy | None, now: float) -> str:
    """The last deployment in a table cell: the PR is prbot's own reference (a link), the rest inert."""
    if deploy is None:
        return "not deployed by prbot"
    ago = when(deploy.at, now)
    return (f"{STATE_ICONS.get(deploy.state, '•')} {md(deploy.state)} · #{deploy.pr} · {code(short_sha(deploy.sha))}"
            + (f" · {ago}" if ago else ""))


def board_markdown(board: Board, now: float | None = None) -> str:
    """The board as a comment: one table of apps × environments, the environments' last
    deployments and locks, the open PRs, and the promotion path as a Mermaid flowchart."""
    now = board.at if now is None else now
    lines = [f"### Where every version runs — {md(board.repo)}"]
    if board.error:
        return "\n".join([*lines, "", md(board.error, 300)])
    lines.append(f"Default branch {code(board.default_branch)} at {code(short_sha(board.sha))}; "
                 "each cell: rendered on the default branch / last deployed healthy.")
    lines += ["", "| app | " + " | ".join(md(e.name) for e in board.envs) + " |",
              "| --- |" + " --- |" * len(board.envs)]
    for app in board.apps:
        cells = []
        for env in board.envs:
            cell = board.cell(app, env.name)
            if not cell.path and cell.healthy is None:
                cells.append("·")
                continue
            rendered = md(cell.error, 80) if cell.error else _versions_md(cell.rendered)
            deployed = _versions_md(cell.healthy) if cell.healthy is not None else "—"
            cells.append(f"{rendered} / {deployed}")
        lines.append(f"| {md(app)} | " + " | ".join(cells) + " |")
    lines.append("| **last deployment** | " + " | ".join(_deploy_md(e.last, now) for e in board.envs) + " |")
    lines.append("| **lock** | " + " | ".join(
        (f"🔒 {md(e.lock.by)}" + (f": {md(e.lock.reason, 120)}" if e.lock.reason else "")) if e.lock else "—"
        for e in board.envs) + " |")
    if board.pulls:
        lines += ["", "**Open PRs**"]
        for pull in board.pulls:
            what = f"{pull.kind} into {md(pull.env)}" + (f" ({md(pull.subject)})" if pull.subject else "")
            lines.append(f"- #{pull.number} {md(pull.title, 120)} — {what}")
    lines += ["", mermaid_path(board)]
    return "\n".join(lines)


def mermaid_path(board: Board) -> str:
    """The promotion path as a Mermaid flowchart: each environment with its apps' versions (on the
    default branch) and its last deployment."""
    nodes = []
    for index, env in enumerate(board.envs):
        versions = []
        for app in board.apps:
            cell = board.cell(app, env.name)
            if cell.rendered:
                versions.append(f"{app} {' '.join(v.tag or v.short for v in cell.rendered[:2])}")
        state = env.last.state if env.last else "not deployed by prbot"
        icon = STATE_ICONS.get(env.last.state, "·") if env.last else "·"
        lock = "<br/>🔒 locked" if env.lock else ""
        label = f"{env.name}<br/>{'<br/>'.join(versions[:4]) or '—'}<br/>{icon} {state}{lock}"
        nodes.append(f'  e{index}["{_mermaid(label)}"]')
    arrows = " --> ".join(f"e{i}" for i in range(len(nodes)))
    return "```mermaid\nflowchart LR\n" + "\n".join(nodes) + (f"\n  {arrows}" if len(nodes) > 1 else "") + "\n```"


def _mermaid(label: str) -> str:
    """Text inside a quoted Mermaid label: no quotes, backticks, mentions, angle brackets but ours."""
    safe = label.replace("<br/>", "\n")
    safe = safe.replace('"', "'").replace("@", "＠").replace("`", "'").replace("<", "‹").replace(">", "›")
    safe = safe.replace("#", "＃").replace("\r", " ")
    return safe.replace("\n", "<br/>")

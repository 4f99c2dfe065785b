"""`/prbot …` comments → their commands (SPEC §6): 👀 when taken, 🚀 when every command ran, 😕
otherwise, and one reply for refusals, typos and answers.

Who may: everything but `help` needs write permission; `promote`, `sync`, `rollback`, `lock` and
`unlock` also need the deployers of the environment they act on (the one named, or the one the
PR's change implies: `promote` → the next environment, `sync` → the PR's environments, `rollback`
→ the PR's environment).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from prbot import commands as cmds
from prbot.config import CONFIG_FILE, Config
from prbot.errors import ConfigError, PrbotError
from prbot.flows.context import Repo, config_at, default_config
from prbot.flows.deploy import pr_plan, pr_targets, record_pr_targets, start_deploy
from prbot.flows.locks import clear_lock, get_lock, set_lock
from prbot.flows.plan_comment import PlanOutcome, plan_pull_request
from prbot.flows.preview import preview_down, preview_up
from prbot.flows.promote import Provenance, open_promotion
from prbot.flows.rollback import open_rollback
from prbot.ports import PullRequest, TransientError
from prbot.report.markdown import code, md
from prbot.report.texts import text

log = logging.getLogger("prbot.flows")


@dataclass
class CommandOutcome:
    ran: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    plan: PlanOutcome | None = None
    deploys: list[str] = field(default_factory=list)     # SHAs whose deployment polls must be scheduled


class NotAvailable(PrbotError):
    """A command this deployment of prbot cannot run; its message is the whole reply line."""


def run_commands(repo: Repo, *, number: int, comment_id: int, user: str, body: str) -> CommandOutcome:
    """Run the `/prbot` lines of a PR comment by `user`."""
    forge = repo.forge
    outcome = CommandOutcome()
    repo.workspace.fetch(repo.default_ref())
    try:
        config = default_config(repo)
    except ConfigError:
        config = None
    parsed = cmds.parse_commands(body, config.env_names if config else [])
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
            outcome.replies.append(text("reply_failed", line=line,
                                        message=f"this repository has no valid {CONFIG_FILE} on its default branch"))
            failed = True
            continue
        try:
            if item.name != "help" and permission is None:
                permission = forge.permission(user)
            why = None
            for env in _acting_envs(repo, pr, item, config) if config else []:
                why = cmds.refusal(item, user, permission or "none", config.env(env).deployers if config else (),
                                   lambda org, team: forge.is_team_member(org, team, user))
                if why:
                    break
            if item.name != "help" and why is None:
                why = cmds.refusal(item, user, permission or "none", (), lambda org, team: False)
            if why is not None:
                outcome.refused.append(item.name)
                outcome.replies.append(text("reply_refused", line=line, message=why))
                failed = True
                continue
            reply = _execute(repo, pr, item, user, config, outcome)
        except NotAvailable as exc:
            outcome.replies.append(str(exc))
            failed = True
            continue
        except PrbotError as exc:
            outcome.replies.append(text("reply_failed", line=line, message=md(str(exc), 600)))
            failed = True
            continue
        except TransientError:
            raise                                     # the job runs again later; nothing said yet
        except Exception:                             # a bug: logged with its traceback, the user told
            log.exception("/prbot %s on %s#%d failed", item.name, repo.name, number)
            outcome.replies.append(text("reply_failed", line=line, message="internal error (logged on the server)"))
            failed = True
            continue
        outcome.ran.append(item.name)
        if reply:
            outcome.replies.append(reply)
    if outcome.replies:
        forge.create_comment(number, "\n".join(outcome.replies))
    forge.react(comment_id, "confused" if failed else "rocket")
    return outcome


# --------------------------------------------------------------------------------------------
# The environments a command acts on
# --------------------------------------------------------------------------------------------

def _pr_envs(repo: Repo, pr: PullRequest, config: Config) -> list[tuple[str, str, bool]]:
    """(app, env, images changed) of what the PR changes, computed once and remembered."""
    found = pr_targets(repo, pr.number)
    if not found:
        at = pr.merge_commit_sha if pr.merged and pr.merge_commit_sha else repo.workspace.resolve(repo.default_ref())
        plan = pr_plan(repo, config, pr, at or pr.base_sha)
        record_pr_targets(repo, pr.number, plan)
        found = pr_targets(repo, pr.number)
    order = config.env_names
    return sorted(((a, e, i) for a, e, s, i in found if s != "removed" and e in order),
                  key=lambda t: (order.index(t[1]), t[0]))


def _source_env(repo: Repo, pr: PullRequest, config: Config) -> str:
    envs = [e for _, e, _ in _pr_envs(repo, pr, config)]
    if not envs:
        raise PrbotError("this pull request changes no target, so it has no environment to act on")
    return envs[-1]                                   # the furthest along the promotion order


def _acting_envs(repo: Repo, pr: PullRequest, command: cmds.Command, config: Config) -> list[str]:
    if command.env is not None:
        return [command.env]
    if command.name == "promote":
        nxt = config.next_env(_source_env(repo, pr, config))
        if nxt is None:
            raise PrbotError(f"{_source_env(repo, pr, config)} is the last environment: nothing to promote into")
        return [nxt.name]
    if command.name == "sync":
        return list(dict.fromkeys(e for _, e, _ in _pr_envs(repo, pr, config)))
    if command.name == "rollback":
        return [_source_env(repo, pr, config)]
    return []


# --------------------------------------------------------------------------------------------
# Running one command
# --------------------------------------------------------------------------------------------

def _execute(repo: Repo, pr: PullRequest, command: cmds.Command, user: str, config: Config | None,
             outcome: CommandOutcome) -> str | None:
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
    if name == "promote":
        return _promote(repo, pr, command, user, config)
    if name == "rollback":
        env = _acting_envs(repo, pr, command, config)[0]
        result = open_rollback(repo, config, env, requested_by=user)
        if result.pull is None:
            return text("reply_nothing", line=code(command.line, 120), reason=md(result.reason))
        return text("reply_rollback", env=md(env), pr=f"#{result.pull.number}",
                    deployment=str(result.to.id if result.to else "?"))
    if repo.deployer is None:
        raise NotAvailable(text("reply_no_cluster", line=code(command.line, 120)))
    if name == "sync":
        return _sync(repo, pr, command, config, outcome)
    if name == "preview":
        if command.stop:
            down = preview_down(repo, repo.deployer, config, pr)
            return text("reply_preview_stopped" if down.status == "stopped" else "reply_preview_off")
        preview_up(repo, repo.deployer, config, pr)
        return None                                   # the preview comment says it all
    raise NotAvailable(text("reply_not_yet", line=code(command.line, 120)))


def _promote(repo: Repo, pr: PullRequest, command: cmds.Command, user: str, config: Config) -> str:
    source = _source_env(repo, pr, config)
    dest = _acting_envs(repo, pr, command, config)[0]
    if dest == source:
        raise PrbotError(f"this pull request's environment is {source}: promote it into another one")
    apps = sorted({a for a, e, _ in _pr_envs(repo, pr, config) if e == source})
    said = []
    for app in apps:
        result = open_promotion(repo, config, source, dest, app, Provenance(pr=pr.number, author=pr.author,
                                                                             requested_by=user))
        if result.pull is not None and result.status in ("opened", "updated"):
            said.append(text("reply_promoted", status=result.status, pr=f"#{result.pull.number}", app=md(app),
                             from_env=md(source), to_env=md(dest)))
        elif result.status == "refused":
            said.append(text("reply_promote_refused", app=md(app), reason=md(result.reason, 300)))
        else:
            said.append(text("reply_promote_nothing", app=md(app), from_env=md(source), to_env=md(dest)))
    return "\n".join(said)


def _sync(repo: Repo, pr: PullRequest, command: cmds.Command, config: Config, outcome: CommandOutcome) -> str:
    if not pr.merged:
        raise PrbotError("`/prbot sync` re-syncs a merged pull request; this one is not merged")
    assert repo.deployer is not None
    tip = repo.workspace.resolve(repo.default_ref())
    if tip is None:
        raise PrbotError(f"default branch {repo.forge.default_branch} not found")
    at_tip = config_at(repo, tip) or config
    envs = _acting_envs(repo, pr, command, config)
    wanted = [(a, e, i) for a, e, i in _pr_envs(repo, pr, config) if e in envs]
    state = start_deploy(repo, repo.deployer, at_tip, pr, tip, wanted, envs=envs)
    if state is None:
        raise PrbotError(f"nothing to sync: no target of {', '.join(envs) or 'this PR'} has a cluster and a sync")
    outcome.deploys.append(tip)
    return text("reply_sync", envs=", ".join(md(e.env) for e in state.envs), sha=code(tip[:7]))

"""`/prbot …` comments → their commands (SPEC §6): 👀 when taken, 🚀 when done, 😕 on failure,
and one reply for refusals, typos and answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from prbot import commands as cmds
from prbot.config import CONFIG_FILE, Config, ConfigError
from prbot.errors import PrbotError
from prbot.flows.context import Repo, default_config
from prbot.flows.locks import clear_lock, get_lock, set_lock
from prbot.flows.plan_comment import PlanOutcome, plan_pull_request
from prbot.ports import (
    PullRequest,
)
from prbot.report.markdown import code, md
from prbot.report.texts import text

log = logging.getLogger("prbot.flows")


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

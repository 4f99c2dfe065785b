"""`/prbot …` comments → their commands: 👀 when taken, 🚀 when every command ran, 😕 otherwise,
and one reply for refusals, typos and answers.

Every command is declared once, in `COMMANDS`: its grammar, the permission it needs and its help
line (a `prbot.commands.Spec`), the handler that runs it and, for commands acting on environments
they do not name, how to find them.  Adding a command is one handler and one entry there.

Who may: see `prbot.commands.refusal`; a `deployers` command needs the deployers of the
environment it acts on (the one named, or the one the PR's change implies: `promote` → the next
environment, `sync` → the PR's environments, `rollback` → the PR's environment).  Someone without
write permission gets a reply to `/prbot help` only; anything else they write (a typo, a command
they may not run) gets reactions and no comment, so prbot relays nobody's text.

What a command acts on: `plan` (with its cluster dry-run) and `preview` run only for the head the
commenter saw (`Call.bound_head`, `prbot.flows.heads`); when the PR's head moved since, or prbot
cannot tell, the reply is "the head moved; comment again".  Commands that change state
(`changes_state`) are logged with who asked and from which comment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prbot import commands as cmds
from prbot.commands import Spec
from prbot.config import CONFIG_FILE, Config
from prbot.errors import ConfigError, HeadMoved, NotAvailable, PrbotError, TransientError
from prbot.flows.board import board_markdown, build_board
from prbot.flows.context import Repo, config_at, default_config
from prbot.flows.deploy import pr_plan, pr_targets, record_pr_targets, start_deploy
from prbot.flows.heads import MOVED, Seen, head_at, record_head
from prbot.flows.locks import clear_lock, get_lock, set_lock
from prbot.flows.plan_comment import PlanOutcome, plan_pull_request
from prbot.flows.preview import preview_down, preview_up
from prbot.flows.promote import Provenance, open_promotion
from prbot.flows.rollback import open_rollback
from prbot.ports import WRITE_PERMISSIONS, Deployer, PullRequest
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


@dataclass
class Call:
    """One command to run: what its handler gets."""

    repo: Repo
    pull: PullRequest | None               # None: the comment is on an issue (only `on_issues` commands run)
    command: cmds.Command
    user: str
    config_or_none: Config | None          # None only for a command declared with needs_config=False
    outcome: CommandOutcome
    comment_id: int = 0
    seen: Seen | None = None               # when the comment was made; None: unbound (CLI, demo)

    @property
    def pr(self) -> PullRequest:
        """The pull request commented on (`run_commands` runs no PR command on an issue)."""
        assert self.pull is not None
        return self.pull

    @property
    def config(self) -> Config:
        """The default branch's `.prbot.yml` (`run_commands` runs no command needing it without one)."""
        assert self.config_or_none is not None
        return self.config_or_none

    @property
    def line(self) -> str:
        """The command line as written, as a code span for the reply."""
        return code(self.command.line, 120)

    def bound_head(self) -> str | None:
        """The head the commenter saw, which must still be the PR's head (`HeadMoved` otherwise);
        None when the caller binds nothing (the CLI and the demo run as the operator)."""
        if self.seen is None:
            return None
        head = head_at(self.repo.store, self.repo.name, self.pr.number, self.seen)
        record_head(self.repo.store, self.repo.name, self.pr.number, self.pr.head_sha,   # for the next comment
                    received=self.repo.clock(), updated_at=self.pr.updated_at)
        if head is None or head != self.pr.head_sha:
            log.info("/prbot %s on %s#%d by %s: the head moved (saw %s, now %s)", self.command.name,
                     self.repo.name, self.pr.number, self.user, (head or "?")[:7], self.pr.head_sha[:7])
            raise HeadMoved(MOVED)
        return head

    def deployer(self) -> Deployer:
        """The server's clusters, or `NotAvailable` when it has none."""
        if self.repo.deployer is None:
            raise NotAvailable(text("reply_no_cluster", line=self.line))
        return self.repo.deployer


Handler = Callable[[Call], str | None]
"""Runs one command; returns its reply line (None: nothing to say).  A `PrbotError` is the reply."""
ActingEnvs = Callable[[Repo, PullRequest, Config], list[str]]
"""The environments a command acts on when it names none (their deployers may run it)."""


@dataclass(frozen=True)
class SlashCommand:
    """One entry of `COMMANDS`."""

    spec: cmds.Spec                        # name, arguments, permission, help line
    run: Handler
    acting_envs: ActingEnvs | None = None  # when ENV is not given; None: the named one only
    needs_config: bool = True              # False: runs without a valid `.prbot.yml` (help)
    on_issues: bool = False                # True: runs on an issue's comment too, not only a PR's
    changes_state: bool = False            # logged with who asked, from which comment


def run_commands(repo: Repo, *, number: int, comment_id: int, user: str, body: str,
                 seen: Seen | None = None, issue: bool = False) -> CommandOutcome:
    """Run the `/prbot` lines of a PR comment by `user`; `seen`: when the comment was made (binds
    `plan` and `preview` to the head its author saw; None binds nothing).  `issue`: the comment is
    on an issue, where only the commands declared `on_issues` run (the others are refused)."""
    forge = repo.forge
    outcome = CommandOutcome()
    repo.workspace.fetch(repo.default_ref())
    try:
        config = default_config(repo)
    except ConfigError:
        config = None
    parsed = cmds.parse_commands(body, config.env_names if config else [], GRAMMAR)
    if not parsed:
        return outcome
    forge.react(comment_id, "eyes")
    pr = None if issue else forge.get_pull(number)
    permission: str | None = None
    if any(not isinstance(item, cmds.Command) or item.spec.permission != "anyone" for item in parsed):
        permission = forge.permission(user)
    writer = permission in WRITE_PERMISSIONS
    failed = False
    for item in parsed:
        line = code(item.line, 120)
        if isinstance(item, cmds.CommandError):
            if writer:                                # an outsider's typo is not echoed back
                outcome.replies.append(text("reply_error", line=line, message=item.message))
            failed = True
            continue
        entry = COMMANDS[item.name]
        if pr is None and not entry.on_issues:
            if writer:
                outcome.replies.append(text("reply_failed", line=line, message=text("reply_not_pull")))
            failed = True
            continue
        if config is None and entry.needs_config:
            if writer:
                outcome.replies.append(text("reply_failed", line=line, message=(
                    f"this repository has no valid {CONFIG_FILE} on its default branch")))
            failed = True
            continue
        try:
            why = None
            if item.spec.permission != "anyone":      # write first: an outsider costs no plan of the PR
                why = cmds.refusal(item, user, permission or "none", (), lambda org, team: False)
            for env in _acting_envs(repo, pr, item, config) if config and pr and why is None else []:
                why = cmds.refusal(item, user, permission or "none", config.env(env).deployers if config else (),
                                   lambda org, team: forge.is_team_member(org, team, user))
                if why:
                    break
            if why is not None:
                outcome.refused.append(item.name)
                if writer:                            # someone without write gets reactions only
                    outcome.replies.append(text("reply_refused", line=line, message=why))
                else:
                    log.info("/prbot %s on %s#%d refused without a reply: %s", item.name, repo.name, number, why)
                failed = True
                continue
            if entry.changes_state:
                log.info("/prbot %s on %s#%d asked by %s in comment %d", item.line[len(cmds.PREFIX):].strip(),
                         repo.name, number, user, comment_id)
            reply = entry.run(Call(repo, pr, item, user, config, outcome, comment_id, seen))
        except HeadMoved as exc:
            outcome.replies.append(text("reply_error", line=line, message=str(exc)))
            failed = True
            continue
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


def _next_env(repo: Repo, pr: PullRequest, config: Config) -> list[str]:
    nxt = config.next_env(_source_env(repo, pr, config))
    if nxt is None:
        raise PrbotError(f"{_source_env(repo, pr, config)} is the last environment: nothing to promote into")
    return [nxt.name]


def _pr_env_names(repo: Repo, pr: PullRequest, config: Config) -> list[str]:
    return list(dict.fromkeys(e for _, e, _ in _pr_envs(repo, pr, config)))


def _own_env(repo: Repo, pr: PullRequest, config: Config) -> list[str]:
    return [_source_env(repo, pr, config)]


def _acting_envs(repo: Repo, pr: PullRequest, command: cmds.Command, config: Config) -> list[str]:
    if command.env is not None:
        return [command.env]
    implied = COMMANDS[command.name].acting_envs
    return implied(repo, pr, config) if implied else []


# --------------------------------------------------------------------------------------------
# The handlers, one per command
# --------------------------------------------------------------------------------------------

def _status(call: Call) -> str:
    return board_markdown(build_board(call.repo))


def _help(call: Call) -> str:
    return text("reply_help", table=cmds.help_text(GRAMMAR))


def _plan(call: Call) -> None:
    head = call.bound_head()
    call.outcome.plan = plan_pull_request(call.repo, call.pr.number, head_sha=head, with_cluster=True)
    if call.outcome.plan.status == "superseded":     # pushed while it was being planned
        raise HeadMoved(MOVED)
    return None


def _lock(call: Call) -> str:
    repo, command = call.repo, call.command
    assert command.env is not None
    reason = f" ({md(command.reason)})" if command.reason else ""
    if set_lock(repo.store, repo.name, command.env, call.user, command.reason, repo.clock()):
        return text("reply_locked", env=md(command.env), reason=reason)
    held = get_lock(repo.store, repo.name, command.env)
    by, why = held.describe() if held else ("?", "")
    return text("reply_already_locked", env=md(command.env), by=by, reason=why)


def _unlock(call: Call) -> str:
    env = call.command.env
    assert env is not None
    if clear_lock(call.repo.store, call.repo.name, env):
        return text("reply_unlocked", env=md(env))
    return text("reply_not_locked", env=md(env))


def _rollback(call: Call) -> str:
    repo, pr, config = call.repo, call.pr, call.config
    env = _acting_envs(repo, pr, call.command, config)[0]
    result = open_rollback(repo, config, env, requested_by=call.user)
    if result.pull is None:
        return text("reply_nothing", line=call.line, reason=md(result.reason))
    return text("reply_rollback", env=md(env), pr=f"#{result.pull.number}",
                deployment=str(result.to.id if result.to else "?"))


def _preview(call: Call) -> str | None:
    deployer = call.deployer()
    if call.command.stop:
        down = preview_down(call.repo, deployer, call.config, call.pr)
        return text("reply_preview_stopped" if down.status == "stopped" else "reply_preview_off")
    preview_up(call.repo, deployer, call.config, call.pr, head_sha=call.bound_head())
    return None                                   # the preview comment says it all


def _promote(call: Call) -> str:
    repo, pr, config, user = call.repo, call.pr, call.config, call.user
    source = _source_env(repo, pr, config)
    dest = _acting_envs(repo, pr, call.command, config)[0]
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


def _sync(call: Call) -> str:
    deployer = call.deployer()
    repo, pr, config = call.repo, call.pr, call.config
    if not pr.merged:
        raise PrbotError("`/prbot sync` re-syncs a merged pull request; this one is not merged")
    tip = repo.workspace.resolve(repo.default_ref())
    if tip is None:
        raise PrbotError(f"default branch {repo.forge.default_branch} not found")
    at_tip = config_at(repo, tip) or config
    envs = _acting_envs(repo, pr, call.command, config)
    wanted = [(a, e, i) for a, e, i in _pr_envs(repo, pr, config) if e in envs]
    state = start_deploy(repo, deployer, at_tip, pr, tip, wanted, envs=envs)
    if state is None:
        raise PrbotError(f"nothing to sync: no target of {', '.join(envs) or 'this PR'} has a cluster and a sync")
    call.outcome.deploys.append(tip)
    return text("reply_sync", envs=", ".join(md(e.env) for e in state.envs), sha=code(tip[:7]))


# --------------------------------------------------------------------------------------------
# The commands: one entry each, in the order `/prbot help` lists them
# --------------------------------------------------------------------------------------------

_ENTRIES = (
    SlashCommand(Spec("plan", "re-run the plan for the current head"), _plan),
    SlashCommand(Spec("promote", "open the promotion PR from this PR's environment to ENV (default: the next)",
                      env="optional", permission="deployers"), _promote, acting_envs=_next_env, changes_state=True),
    SlashCommand(Spec("sync", "re-trigger the sync of a merged PR's environments",
                      env="optional", permission="deployers"), _sync, acting_envs=_pr_env_names, changes_state=True),
    SlashCommand(Spec("rollback", "open a PR restoring ENV's images to the previously deployed versions",
                      env="optional", permission="deployers"), _rollback, acting_envs=_own_env, changes_state=True),
    SlashCommand(Spec("lock", "freeze deployments to ENV", env="required", rest="reason", permission="deployers"),
                 _lock, changes_state=True),
    SlashCommand(Spec("unlock", "unfreeze deployments to ENV", env="required", permission="deployers"), _unlock,
                 changes_state=True),
    SlashCommand(Spec("preview", "deploy (or tear down) this PR's preview environment", words=("stop",)), _preview),
    SlashCommand(Spec("status", "show where every version runs: apps × environments, deployments, locks, open PRs"),
                 _status, on_issues=True),
    SlashCommand(Spec("help", "list the commands", permission="anyone"), _help, needs_config=False, on_issues=True),
)

GRAMMAR: cmds.Grammar = cmds.grammar(c.spec for c in _ENTRIES)    # refuses a name declared twice
COMMANDS: Mapping[str, SlashCommand] = {c.spec.name: c for c in _ENTRIES}

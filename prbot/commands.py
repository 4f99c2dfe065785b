"""Slash commands (SPEC §6): parsing `/prbot …` lines and deciding who may run them.

Pure: no GitHub, no store.  `parse_commands` turns a comment body into commands or errors (with a
"did you mean" for typos); `refusal` says why a user may not run one, given their permission on
the repository and a way to ask whether they belong to a team.

A command is a line that starts with `/prbot` (leading spaces allowed).  Lines inside fenced code
blocks and quoted lines (`> /prbot plan`, as a reply quotes them) are not commands, so quoting a
command never runs it again.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prbot.ports import WRITE_PERMISSIONS

PREFIX = "/prbot"
MAX_COMMANDS = 10                   # per comment: more is a mistake or abuse, the rest is ignored


@dataclass(frozen=True)
class Spec:
    name: str
    usage: str
    summary: str
    env: str                        # "none" | "optional" | "required"
    deployers: bool                 # needs the environment's deployers when it lists any
    words: tuple[str, ...] = ()     # fixed sub-commands allowed after the name ("stop")


SPECS: dict[str, Spec] = {s.name: s for s in (
    Spec("plan", "/prbot plan", "re-run the plan for the current head", "none", False),
    Spec("promote", "/prbot promote [ENV]",
         "open the promotion PR from this PR's environment to ENV (default: the next)", "optional", True),
    Spec("sync", "/prbot sync [ENV]", "re-trigger the sync of a merged PR's environments", "optional", True),
    Spec("rollback", "/prbot rollback [ENV]",
         "open a PR restoring ENV's images to the previously deployed versions", "optional", True),
    Spec("lock", "/prbot lock ENV [reason]", "freeze deployments to ENV", "required", True),
    Spec("unlock", "/prbot unlock ENV", "unfreeze deployments to ENV", "required", True),
    Spec("preview", "/prbot preview [stop]", "deploy (or tear down) this PR's preview environment", "none",
         False, ("stop",)),
    Spec("help", "/prbot help", "list the commands", "none", False),
)}


@dataclass(frozen=True)
class Command:
    name: str
    env: str | None = None
    reason: str = ""                # lock: the free text after ENV
    stop: bool = False              # preview stop
    line: str = ""                  # the line as written (for replies)

    @property
    def spec(self) -> Spec:
        return SPECS[self.name]


@dataclass(frozen=True)
class CommandError:
    line: str
    message: str                    # one line, for the reply


Parsed = Command | CommandError
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")


def command_lines(body: str) -> list[str]:
    """The `/prbot` lines of a comment body, outside code fences and quotes."""
    lines: list[str] = []
    fence: str | None = None
    for raw in (body or "").splitlines():
        m = _FENCE.match(raw)
        if m:
            mark = m.group(1)
            if fence is None:
                fence = mark
            elif mark[0] == fence[0] and len(mark) >= len(fence):
                fence = None
            continue
        if fence is not None:
            continue
        stripped = raw.strip()
        if stripped == PREFIX or stripped.startswith(PREFIX + " ") or stripped.startswith(PREFIX + "\t"):
            lines.append(stripped)
        elif stripped.startswith(PREFIX) and re.match(r"/prbot[A-Za-z-]", stripped) is None:
            lines.append(stripped)
    return lines


def _suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" — did you mean `{close[0]}`?" if close else ""


def parse_line(line: str, env_names: Sequence[str]) -> Parsed:
    """One `/prbot …` line as a command, or an error saying what is wrong with it."""
    words = line.split()[1:]
    if not words:
        return CommandError(line, "a command is missing after `/prbot` (try `/prbot help`)")
    name = words[0].lower()
    spec = SPECS.get(name)
    if spec is None:
        return CommandError(line, f"unknown command `{_clip(words[0])}`{_suggest(name, list(SPECS))} "
                                  "(`/prbot help` lists the commands)")
    args = words[1:]
    if spec.words:
        if args and args[0].lower() in spec.words:
            if len(args) > 1:
                return CommandError(line, f"too many arguments — usage: `{spec.usage}`")
            return Command(name, stop=True, line=line)
        if args:
            return CommandError(line, f"unexpected `{_clip(args[0])}`{_suggest(args[0].lower(), spec.words)} "
                                      f"— usage: `{spec.usage}`")
        return Command(name, line=line)
    if spec.env == "none":
        if args:
            return CommandError(line, f"`{name}` takes no arguments — usage: `{spec.usage}`")
        return Command(name, line=line)
    if not args:
        if spec.env == "required":
            return CommandError(line, f"`{name}` needs an environment — usage: `{spec.usage}`")
        return Command(name, line=line)
    env = args[0]
    if env not in env_names:
        known = ", ".join(f"`{e}`" for e in env_names) or "none"
        return CommandError(line, f"unknown environment `{_clip(env)}`{_suggest(env, env_names)} (known: {known})")
    rest = args[1:]
    if rest and name != "lock":
        return CommandError(line, f"too many arguments — usage: `{spec.usage}`")
    reason = " ".join(rest)
    return Command(name, env=env, reason=reason[:500], line=line)


def parse_commands(body: str, env_names: Sequence[str]) -> list[Parsed]:
    """Every command of a comment, in order (at most `MAX_COMMANDS`)."""
    return [parse_line(line, env_names) for line in command_lines(body)[:MAX_COMMANDS]]


def _clip(text: str, limit: int = 40) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Who may run what
# --------------------------------------------------------------------------------------------

def is_deployer(user: str, deployers: Sequence[str], team_member: Callable[[str, str], bool]) -> bool:
    """Whether `user` is one of `deployers` (logins, or `@org/team` through team membership)."""
    for who in deployers:
        entry = who.lstrip("@")
        if "/" in entry:
            org, team = entry.split("/", 1)
            if team_member(org, team):
                return True
        elif entry.lower() == user.lower():
            return True
    return False


def refusal(command: Command, user: str, permission: str, env_deployers: Sequence[str],
            team_member: Callable[[str, str], bool]) -> str | None:
    """Why `user` may not run `command` (None: they may).

    Everything but `help` needs write, maintain or admin permission; commands marked `deployers`
    also need the environment's `deployers` when it lists any (the environment the command acts on,
    resolved by the caller and passed as `env_deployers`).
    """
    if command.name == "help":
        return None
    if permission not in WRITE_PERMISSIONS:
        return (f"`{user}` needs write permission on this repository to run `/prbot {command.name}` "
                f"(has `{permission}`)")
    if command.spec.deployers and env_deployers and not is_deployer(user, env_deployers, team_member):
        listed = ", ".join(f"`{who}`" for who in env_deployers)   # code spans: never ping a team
        return f"only the deployers of this environment ({listed}) may run `/prbot {command.name}`"
    return None


def help_text() -> str:
    """The `/prbot help` reply body (markdown)."""
    rows = "\n".join(f"| `{s.usage}` | {s.summary} |" for s in SPECS.values())
    return ("| command | does |\n| --- | --- |\n" + rows + "\n\n"
            "Everything but `help` needs write permission on the repository; `promote`, `sync`, `rollback`, "
            "`lock` and `unlock` also need the environment's `deployers` when it lists any.")

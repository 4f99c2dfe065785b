"""Slash commands: parsing `/prbot …` lines and deciding who may run them.

Pure: no GitHub, no store, and no command of its own.  The commands are declared once, in the
table of `prbot.flows.slash_commands` (grammar, permission, help line and handler together); this
module reads their grammar entries (`Spec`): `parse_commands` turns a comment body into commands or
errors (with a "did you mean" for typos), `refusal` says why a user may not run one, given their
permission on the repository and a way to ask whether they belong to a team, and `help_text` is the
`/prbot help` table.

A command is a line that starts with `/prbot` (leading spaces allowed).  Lines inside fenced code
blocks and quoted lines (`> /prbot plan`, as a reply quotes them) are not commands, so quoting a
command never runs it again.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from prbot.ports import WRITE_PERMISSIONS

PREFIX = "/prbot"
MAX_COMMANDS = 10                   # per comment: more is a mistake or abuse, the rest is ignored

Permission = Literal["anyone", "write", "deployers"]
"""Who may run a command: anyone; write, maintain or admin permission on the repository; or that
and, when the environment the command acts on lists `deployers`, one of them."""
EnvArg = Literal["none", "optional", "required"]


@dataclass(frozen=True)
class Spec:
    """One command's grammar, the permission it needs and its line in `/prbot help`."""

    name: str
    summary: str                    # what it does, for `/prbot help`
    env: EnvArg = "none"            # the ENV argument
    rest: str | None = None         # name of the free text allowed after ENV (lock: "reason")
    words: tuple[str, ...] = ()     # fixed sub-commands allowed after the name (preview: "stop")
    permission: Permission = "write"

    @property
    def usage(self) -> str:
        parts = [PREFIX, self.name]
        if self.words:
            parts.append(f"[{'|'.join(self.words)}]")
        if self.env != "none":
            parts.append("ENV" if self.env == "required" else "[ENV]")
        if self.rest:
            parts.append(f"[{self.rest}]")
        return " ".join(parts)


Grammar = Mapping[str, Spec]
"""The commands prbot knows, by name, in the order `/prbot help` lists them."""


def grammar(specs: Iterable[Spec]) -> Grammar:
    """`specs` by name (a name declared twice is a mistake in the table)."""
    out: dict[str, Spec] = {}
    for spec in specs:
        if spec.name in out:
            raise ValueError(f"command {spec.name!r} declared twice")
        out[spec.name] = spec
    return out


@dataclass(frozen=True)
class Command:
    spec: Spec
    env: str | None = None
    reason: str = ""                # lock: the free text after ENV
    stop: bool = False              # preview stop
    line: str = ""                  # the line as written (for replies)

    @property
    def name(self) -> str:
        return self.spec.name


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


def parse_line(line: str, env_names: Sequence[str], commands: Grammar) -> Parsed:
    """One `/prbot …` line as one of `commands`, or an error saying what is wrong with it."""
    words = line.split()[1:]
    if not words:
        return CommandError(line, "a command is missing after `/prbot` (try `/prbot help`)")
    name = words[0].lower()
    spec = commands.get(name)
    if spec is None:
        return CommandError(line, f"unknown command `{_clip(words[0])}`{_suggest(name, list(commands))} "
                                  "(`/prbot help` lists the commands)")
    args = words[1:]
    if spec.words:
        if args and args[0].lower() in spec.words:
            if len(args) > 1:
                return CommandError(line, f"too many arguments — usage: `{spec.usage}`")
            return Command(spec, stop=True, line=line)
        if args:
            return CommandError(line, f"unexpected `{_clip(args[0])}`{_suggest(args[0].lower(), spec.words)} "
                                      f"— usage: `{spec.usage}`")
        return Command(spec, line=line)
    if spec.env == "none":
        if args:
            return CommandError(line, f"`{name}` takes no arguments — usage: `{spec.usage}`")
        return Command(spec, line=line)
    if not args:
        if spec.env == "required":
            return CommandError(line, f"`{name}` needs an environment — usage: `{spec.usage}`")
        return Command(spec, line=line)
    env = args[0]
    if env not in env_names:
        known = ", ".join(f"`{e}`" for e in env_names) or "none"
        return CommandError(line, f"unknown environment `{_clip(env)}`{_suggest(env, env_names)} (known: {known})")
    rest = args[1:]
    if rest and spec.rest is None:
        return CommandError(line, f"too many arguments — usage: `{spec.usage}`")
    reason = " ".join(rest)
    return Command(spec, env=env, reason=reason[:500], line=line)


def parse_commands(body: str, env_names: Sequence[str], commands: Grammar) -> list[Parsed]:
    """Every command of a comment, in order (at most `MAX_COMMANDS`)."""
    return [parse_line(line, env_names, commands) for line in command_lines(body)[:MAX_COMMANDS]]


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
    """Why `user` may not run `command` (None: they may), by the permission its `Spec` needs.

    `write` needs write, maintain or admin permission; `deployers` also needs the environment's
    `deployers` when it lists any (the environment the command acts on, resolved by the caller and
    passed as `env_deployers`).
    """
    needed = command.spec.permission
    if needed == "anyone":
        return None
    if permission not in WRITE_PERMISSIONS:
        return (f"`{user}` needs write permission on this repository to run `/prbot {command.name}` "
                f"(has `{permission}`)")
    if needed == "deployers" and env_deployers and not is_deployer(user, env_deployers, team_member):
        listed = ", ".join(f"`{who}`" for who in env_deployers)   # code spans: never ping a team
        return f"only the deployers of this environment ({listed}) may run `/prbot {command.name}`"
    return None


def help_text(commands: Grammar) -> str:
    """The `/prbot help` reply body (markdown): one row per command, then who may run them."""
    rows = "\n".join(f"| `{s.usage}` | {s.summary} |" for s in commands.values())
    anyone = [s.name for s in commands.values() if s.permission == "anyone"]
    deployers = [s.name for s in commands.values() if s.permission == "deployers"]
    who = (f"Everything but {_names(anyone)} needs" if anyone else "Every command needs") \
        + " write permission on the repository"
    if deployers:
        who += (f"; {_names(deployers)} also {'need' if len(deployers) > 1 else 'needs'} the environment's "
                "`deployers` when it lists any")
    return "| command | does |\n| --- | --- |\n" + rows + "\n\n" + who + "."


def _names(names: Sequence[str]) -> str:
    """`a`, `b` and `c`."""
    spans = [f"`{n}`" for n in names]
    return spans[0] if len(spans) == 1 else ", ".join(spans[:-1]) + " and " + spans[-1]

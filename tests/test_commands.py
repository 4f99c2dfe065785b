"""Slash-command parsing and permission rules (prbot/commands.py over the commands' table in
prbot/flows/slash_commands.py): pure, no GitHub."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from prbot import commands
from prbot.commands import Command, CommandError, Parsed, command_lines, help_text, is_deployer, refusal
from prbot.flows.slash_commands import GRAMMAR

ENVS = ["dev", "staging", "prod"]


def parse_commands(body: str, env_names: Sequence[str]) -> list[Parsed]:
    return commands.parse_commands(body, env_names, GRAMMAR)


def test_every_command_parses() -> None:
    body = "\n".join(["/prbot plan", "/prbot promote", "/prbot promote prod", "/prbot sync staging",
                      "/prbot rollback", "/prbot lock prod release freeze until Monday", "/prbot unlock prod",
                      "/prbot preview", "/prbot preview stop", "/prbot help"])
    got = parse_commands(body, ENVS)
    assert [(c.name, c.env) for c in got if isinstance(c, Command)] == [
        ("plan", None), ("promote", None), ("promote", "prod"), ("sync", "staging"), ("rollback", None),
        ("lock", "prod"), ("unlock", "prod"), ("preview", None), ("preview", None), ("help", None)]
    lock = got[5]
    assert isinstance(lock, Command) and lock.reason == "release freeze until Monday"
    stop = got[8]
    assert isinstance(stop, Command) and stop.stop


def test_typos_get_a_did_you_mean() -> None:
    [err] = parse_commands("/prbot plna", ENVS)
    assert isinstance(err, CommandError) and "did you mean `plan`" in err.message
    [err] = parse_commands("/prbot promote prdo", ENVS)
    assert isinstance(err, CommandError) and "did you mean `prod`" in err.message and "`dev`" in err.message
    [err] = parse_commands("/prbot preview stpo", ENVS)
    assert isinstance(err, CommandError) and "did you mean `stop`" in err.message
    [err] = parse_commands("/prbot", ENVS)
    assert isinstance(err, CommandError) and "/prbot help" in err.message


@pytest.mark.parametrize(("line", "problem"), [
    ("/prbot lock", "needs an environment"),
    ("/prbot unlock", "needs an environment"),
    ("/prbot plan now", "takes no arguments"),
    ("/prbot help me", "takes no arguments"),
    ("/prbot sync dev extra", "too many arguments"),
    ("/prbot preview stop now", "too many arguments"),
    ("/prbot deploy prod", "unknown command"),
])
def test_wrong_arguments_say_the_usage(line: str, problem: str) -> None:
    [err] = parse_commands(line, ENVS)
    assert isinstance(err, CommandError) and problem in err.message


def test_only_command_lines_count() -> None:
    body = ("Looks good!\n> /prbot plan\n```\n/prbot lock prod\n```\n  /prbot help\n"
            "see /prbot plan inline\n/prbotplan\n~~~\n/prbot sync\n~~~\n")
    assert command_lines(body) == ["/prbot help"]
    assert parse_commands("", ENVS) == [] and parse_commands("no commands here", ENVS) == []


def test_at_most_ten_commands_per_comment() -> None:
    assert len(parse_commands("\n".join(["/prbot help"] * 50), ENVS)) == 10


def test_user_text_is_clipped_and_cannot_break_out_of_code_spans() -> None:
    [err] = parse_commands("/prbot `@everyone`" + "x" * 100, ENVS)
    assert isinstance(err, CommandError)
    assert "`" not in err.message.split("unknown command ", 1)[1].split(" ")[0].strip("`")
    assert len(err.message) < 200


def test_write_permission_and_deployers() -> None:
    lock = Command(GRAMMAR["lock"], env="prod")
    members = {("acme", "sre"): {"bob"}}

    def member(user: str):  # type: ignore[no-untyped-def]
        return lambda org, team: user in members.get((org, team), set())

    assert refusal(Command(GRAMMAR["help"]), "anyone", "none", (), member("anyone")) is None
    why = refusal(Command(GRAMMAR["plan"]), "reader", "read", (), member("reader"))
    assert why is not None and "needs write permission" in why and "`reader`" in why and "@reader" not in why
    assert refusal(Command(GRAMMAR["plan"]), "writer", "write", (), member("writer")) is None
    deployers = ("@acme/sre", "alice")
    why = refusal(lock, "writer", "write", deployers, member("writer"))
    assert why is not None and "`@acme/sre`" in why                 # a code span: the team is not pinged
    assert refusal(lock, "alice", "write", deployers, member("alice")) is None
    assert refusal(lock, "Alice", "admin", deployers, member("Alice")) is None   # logins are case-insensitive
    assert refusal(lock, "bob", "maintain", deployers, member("bob")) is None
    assert refusal(lock, "bob", "read", deployers, member("bob")) is not None   # deployers still need write
    preview = Command(GRAMMAR["preview"])
    assert refusal(preview, "carol", "write", deployers, member("carol")) is None   # no deployers rule
    assert is_deployer("bob", ["@acme/sre"], member("bob")) and not is_deployer("eve", ["@acme/sre"], member("eve"))


def test_help_lists_every_command() -> None:
    text = help_text(GRAMMAR)
    for usage in ("/prbot plan", "/prbot promote [ENV]", "/prbot sync [ENV]", "/prbot rollback [ENV]",
                  "/prbot lock ENV [reason]", "/prbot unlock ENV", "/prbot preview [stop]", "/prbot help"):
        assert f"`{usage}`" in text


def test_the_grammar_comes_from_the_entries_given() -> None:
    """A command added to the table parses, shows in help with its permission, and is refused below it."""
    table = commands.grammar([commands.Spec("freeze", "stop everything", env="required", rest="why",
                                            permission="deployers"),
                              commands.Spec("ping", "answer", permission="anyone")])
    [cmd] = commands.parse_commands("/prbot freeze prod now please", ENVS, table)
    assert isinstance(cmd, Command) and (cmd.name, cmd.env, cmd.reason) == ("freeze", "prod", "now please")
    [err] = commands.parse_commands("/prbot plan", ENVS, table)
    assert isinstance(err, CommandError) and "unknown command `plan`" in err.message
    text = help_text(table)
    assert "| `/prbot freeze ENV [why]` | stop everything |" in text and "| `/prbot ping` | answer |" in text
    assert "Everything but `ping` needs write permission" in text
    assert "`freeze` also needs the environment's `deployers`" in text
    assert refusal(cmd, "eve", "write", ["alice"], lambda org, team: False) == \
        "only the deployers of this environment (`alice`) may run `/prbot freeze`"
    with pytest.raises(ValueError, match="declared twice"):
        commands.grammar([commands.Spec("ping", "a"), commands.Spec("ping", "b")])

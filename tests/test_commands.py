"""Slash-command parsing and permission rules (prbot/commands.py): pure, no GitHub."""

from __future__ import annotations

import pytest

from prbot.commands import Command, CommandError, command_lines, help_text, is_deployer, parse_commands, refusal

ENVS = ["dev", "staging", "prod"]


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
    lock = Command("lock", env="prod")
    members = {("acme", "sre"): {"bob"}}

    def member(user: str):  # type: ignore[no-untyped-def]
        return lambda org, team: user in members.get((org, team), set())

    assert refusal(Command("help"), "anyone", "none", (), member("anyone")) is None
    why = refusal(Command("plan"), "reader", "read", (), member("reader"))
    assert why is not None and "needs write permission" in why and "`reader`" in why and "@reader" not in why
    assert refusal(Command("plan"), "writer", "write", (), member("writer")) is None
    deployers = ("@acme/sre", "alice")
    why = refusal(lock, "writer", "write", deployers, member("writer"))
    assert why is not None and "`@acme/sre`" in why                 # a code span: the team is not pinged
    assert refusal(lock, "alice", "write", deployers, member("alice")) is None
    assert refusal(lock, "Alice", "admin", deployers, member("Alice")) is None   # logins are case-insensitive
    assert refusal(lock, "bob", "maintain", deployers, member("bob")) is None
    assert refusal(lock, "bob", "read", deployers, member("bob")) is not None   # deployers still need write
    assert refusal(Command("preview"), "carol", "write", deployers, member("carol")) is None   # no deployers rule
    assert is_deployer("bob", ["@acme/sre"], member("bob")) and not is_deployer("eve", ["@acme/sre"], member("eve"))


def test_help_lists_every_command() -> None:
    text = help_text()
    for usage in ("/prbot plan", "/prbot promote [ENV]", "/prbot sync [ENV]", "/prbot rollback [ENV]",
                  "/prbot lock ENV [reason]", "/prbot unlock ENV", "/prbot preview [stop]", "/prbot help"):
        assert f"`{usage}`" in text

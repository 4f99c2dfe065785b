"""The slash commands' table (prbot/flows/slash_commands.py): every entry shows in `/prbot help` and
its permission is enforced, as the comment a writer sees says (someone without write permission
gets reactions only, and a reply to `/prbot help`).  Runs the real `run_commands` on the
demo's stand-in GitHub (carol may write, dave may read, prod's deployers are alice and @acme/sre)."""

from __future__ import annotations

import subprocess

import pytest

from prbot import flows
from prbot.demo import World, make_world
from prbot.flows.slash_commands import COMMANDS
from prbot.ports import PullRequest


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("world"))


def _pr(world: World) -> int:
    forge = world.forge
    number = max(forge.pulls, default=0) + 1
    sha = subprocess.run(["git", "--git-dir", str(world.origin), "rev-parse", "main"], capture_output=True,
                         text=True, check=True).stdout.strip()
    forge.pulls[number] = PullRequest(number=number, title="change", body="", state="open", merged=False, draft=False,
                                      head_ref="main", head_sha=sha, head_repo=forge.full_name, base_ref="main",
                                      base_sha=sha, author="carol", repo=forge.full_name)
    return number


def _say(world: World, user: str, line: str) -> tuple[flows.CommandOutcome, str]:
    """`user` comments `line` on a fresh PR: what ran and the bot's reply."""
    number = _pr(world)
    comment = world.forge.add_user_comment(number, user, line)
    outcome = flows.run_commands(world.repo, number=number, comment_id=comment.id, user=user, body=line)
    replies = [c.body for c in world.forge.list_comments(number) if c.author_is_bot]
    return outcome, "\n".join(replies)


def test_help_lists_every_command_of_the_table(world: World) -> None:
    outcome, reply = _say(world, "nobody", "/prbot help")          # no permission at all: help still answers
    assert outcome.ran == ["help"] and reply.startswith("**prbot commands**")
    for entry in COMMANDS.values():
        assert f"| `{entry.spec.usage}` | {entry.spec.summary} |" in reply
    anyone = [n for n, e in COMMANDS.items() if e.spec.permission == "anyone"]
    assert anyone == ["help"] and "Everything but `help` needs write permission on the repository" in reply
    assert ("`promote`, `sync`, `rollback`, `lock` and `unlock` also need the environment's `deployers` when it "
            "lists any.") in reply


@pytest.mark.parametrize("name", [n for n, e in COMMANDS.items() if e.spec.permission != "anyone"])
def test_each_command_refuses_a_user_below_its_permission(world: World, name: str) -> None:
    spec = COMMANDS[name].spec
    line = f"/prbot {name}" + (" prod" if spec.env != "none" else "")
    outcome, reply = _say(world, "dave", line)                     # dave may only read
    assert outcome.ran == [] and outcome.refused == [name]
    assert reply == ""                                             # reactions only: prbot relays no outsider
    comment = max(world.forge.comments)
    assert [r for c, r in world.forge.reactions if c == comment] == ["eyes", "confused"]
    if spec.permission == "deployers":                            # carol may write but does not deploy prod
        outcome, reply = _say(world, "carol", line)
        assert outcome.ran == [] and outcome.refused == [name]
        assert reply == (f"- `{line}`: refused — only the deployers of this environment (`@acme/sre`, `alice`) "
                         f"may run `/prbot {name}`")


def test_an_outsider_typo_gets_no_reply_and_a_writer_typo_does(world: World) -> None:
    outcome, reply = _say(world, "nobody", "/prbot plna")
    assert outcome.ran == [] and reply == ""
    assert [r for c, r in world.forge.reactions if c == max(world.forge.comments)] == ["eyes", "confused"]
    outcome, reply = _say(world, "nobody", "/prbot plna\n/prbot help")   # help is answered, the typo is not
    assert outcome.ran == ["help"] and reply.startswith("**prbot commands**") and "plna" not in reply
    outcome, reply = _say(world, "carol", "/prbot plna")
    assert reply == "- `/prbot plna`: unknown command `plna` — did you mean `plan`? (`/prbot help` lists the commands)"

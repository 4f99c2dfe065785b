"""The board of a repository (`prbot.flows.board`): where every version runs, as data and as the
`/prbot status` comment."""

from __future__ import annotations

from flowkit import GitOps, follow, overlay, overlay_path

from prbot import flows
from prbot.flows.board import Board, board_markdown, build_board


def merge_and_deploy(gitops: GitOps, env: str, tag: str, branch: str) -> tuple[int, str]:
    pr = gitops.open_pr(branch, {overlay_path(env): overlay(env, tag)}, title=f"shop {tag} in {env}")
    sha = gitops.merge(pr.number)
    state = flows.deploy_merged(gitops.repo, gitops.clusters, pr.number)
    assert state is not None
    return pr.number, sha


def test_a_fresh_repository_shows_what_the_default_branch_renders_and_nothing_deployed(gitops: GitOps) -> None:
    board = build_board(gitops.repo)
    assert board.error == "" and board.path == ["dev", "staging", "prod"] and board.apps == ["shop"]
    assert board.sha == gitops.sha("main")
    for env in board.path:
        cell = board.cell("shop", env)
        assert cell.path == f"apps/shop/envs/{env}"
        assert [(v.image, v.tag) for v in cell.rendered] == [("ghcr.io/acme/shop", "1.0.0")]
        assert cell.healthy is None
    assert all(e.last is None and e.lock is None for e in board.envs)
    assert board.pulls == [] and not board.deploying


def test_a_deployment_in_progress_then_healthy_with_its_promotion_pr_and_a_lock(gitops: GitOps) -> None:
    number, sha = merge_and_deploy(gitops, "dev", "1.1.0", "feature")
    running = build_board(gitops.repo)
    dev = running.envs[0]
    assert running.deploying and dev.last is not None and dev.last.running
    assert (dev.last.pr, dev.last.sha, dev.last.author) == (number, sha, gitops.forge.get_pull(number).author)
    assert dev.healthy is None and running.cell("shop", "dev").healthy is None
    assert [v.tag for v in running.cell("shop", "dev").rendered] == ["1.1.0"]

    follow(gitops, sha, promote=flows.deploy.promote_next)
    flows.set_lock(gitops.repo.store, gitops.repo.name, "prod", "alice", "release freeze", gitops.clock())
    board = build_board(gitops.repo)
    dev = board.envs[0]
    assert not board.deploying and dev.last is not None and dev.last.state == "healthy"
    assert dev.healthy is not None and dev.healthy.sha == sha
    assert [v.tag for v in board.cell("shop", "dev").healthy or []] == ["1.1.0"]
    assert board.envs[1].last is None
    assert board.envs[2].lock is not None and board.envs[2].lock.reason == "release freeze"
    [pull] = board.pulls
    assert (pull.kind, pull.env, pull.subject) == ("promote", "staging", "shop")
    assert pull.title == "Promote shop from dev to staging (1.1.0)"

    again = Board.from_json(board.to_json())                 # the page keeps it as JSON
    assert again == board


def test_a_failed_deployment_keeps_the_last_healthy_version_and_the_comment_says_both(gitops: GitOps) -> None:
    _, first = merge_and_deploy(gitops, "dev", "1.1.0", "feature")
    follow(gitops, first)
    gitops.clusters.fail = frozenset({"shop/dev"})           # the next rollout never becomes ready
    gitops.clock.advance(60)
    number, second = merge_and_deploy(gitops, "dev", "1.2.0", "feature-2")
    follow(gitops, second)
    board = build_board(gitops.repo)
    dev = board.envs[0]
    assert dev.last is not None and (dev.last.state, dev.last.sha, dev.last.pr) == ("failed", second, number)
    assert dev.healthy is not None and dev.healthy.sha == first
    cell = board.cell("shop", "dev")
    assert [v.tag for v in cell.rendered] == ["1.2.0"] and [v.tag for v in cell.healthy or []] == ["1.1.0"]
    comment = board_markdown(board)
    assert comment.startswith("### Where every version runs — acme/gitops\n")
    assert "| app | dev | staging | prod |" in comment
    assert "| shop | `1.2.0` / `1.1.0` | `1.0.0` / — | `1.0.0` / — |" in comment
    assert f"| ❌ failed · #{number} · `{second[:7]}` · 0s ago |" in comment
    assert "```mermaid\nflowchart LR\n" in comment and "e0 --> e1 --> e2" in comment


def test_hostile_names_stay_text_in_the_comment(gitops: GitOps) -> None:
    flows.set_lock(gitops.repo.store, gitops.repo.name, "staging", "mallory",
                   "<img src=x onerror=alert(1)> @everyone | `x`", 0.0)
    comment = board_markdown(build_board(gitops.repo))
    assert "<img" not in comment and "@everyone" not in comment
    assert "&lt;img src=x onerror=alert(1)&gt;" in comment and "\\|" in comment


def test_no_configuration_is_said(make: object) -> None:
    from flowkit import GITOPS_FILES

    assert callable(make)
    gitops = make({k: v for k, v in GITOPS_FILES.items() if k != ".prbot.yml"})
    board = build_board(gitops.repo)
    assert board.error == "no .prbot.yml on main" and board.envs == []
    assert board_markdown(board).endswith("no .prbot.yml on main")


def test_status_on_a_pr_replies_with_the_board(gitops: GitOps) -> None:
    pr = gitops.open_pr("feature", {overlay_path("staging"): overlay("staging", "1.1.0")})
    comment = gitops.comment(pr.number, "carol", "/prbot status")
    outcome = flows.run_commands(gitops.repo, number=pr.number, comment_id=comment.id, user="carol",
                                 body="/prbot status")
    assert outcome.ran == ["status"]
    [reply] = gitops.bot_comments(pr.number)
    assert reply.startswith("### Where every version runs — acme/gitops\n")
    assert "| shop | `1.0.0` / — | `1.0.0` / — | `1.0.0` / — |" in reply and "```mermaid" in reply
    assert [r for c, r in gitops.forge.reactions if c == comment.id] == ["eyes", "rocket"]


def test_status_on_an_issue_replies_and_pr_commands_there_are_refused(gitops: GitOps) -> None:
    number = gitops.forge.open_issue("Where is 1.1.0?")
    body = "/prbot status\n/prbot plan"
    comment = gitops.comment(number, "carol", body)
    outcome = flows.run_commands(gitops.repo, number=number, comment_id=comment.id, user="carol", body=body,
                                 issue=True)
    assert outcome.ran == ["status"]
    [reply] = gitops.bot_comments(number)
    assert reply.startswith("### Where every version runs — acme/gitops\n")
    assert reply.endswith("- `/prbot plan`: failed — this command works on pull requests only (on an issue: "
                          "`/prbot status`, `/prbot help`)")
    assert [r for c, r in gitops.forge.reactions if c == comment.id] == ["eyes", "confused"]


def test_status_by_a_reader_is_refused_without_a_reply(gitops: GitOps) -> None:
    """Building the board renders every target: someone without write cannot make prbot do it (nor
    post it) from a comment."""
    number = gitops.forge.open_issue("hello")
    comment = gitops.comment(number, "dave", "/prbot status")
    outcome = flows.run_commands(gitops.repo, number=number, comment_id=comment.id, user="dave",
                                 body="/prbot status", issue=True)
    assert outcome.refused == ["status"] and gitops.bot_comments(number) == []

"""The repository's configuration (`prbot.flows.context`): always the default branch's
`.prbot.yml`, so a pull request cannot change its own gate; an invalid one is an error."""

from __future__ import annotations

import pytest
from flowkit import CONFIG, GITOPS_FILES, GitOps, Make, overlay, overlay_path

from prbot import flows
from prbot.errors import ConfigError

LOOSER = CONFIG.replace('    deployers: ["alice"]\n', "")


def fetched(gitops: GitOps) -> GitOps:
    gitops.repo.workspace.fetch(gitops.repo.default_ref())
    return gitops


def test_default_config_reads_the_default_branchs_prbot_yml(gitops: GitOps) -> None:
    config = flows.default_config(fetched(gitops).repo)
    assert config is not None
    assert config.env_names == ["dev", "staging", "prod"]
    assert config.env("prod").deployers == ("alice",)
    assert [r.repository for r in config.images] == ["ghcr.io/acme/shop"]


def test_a_pr_cannot_change_the_configuration_it_is_judged_by(gitops: GitOps) -> None:
    pr = gitops.open_pr("loosen", {".prbot.yml": LOOSER, overlay_path("prod"): overlay("prod", "1.1.0")})
    assert flows.plan_pull_request(gitops.repo, pr.number).status == "posted"    # the mirror has the PR's head
    config = flows.default_config(gitops.repo)
    assert config is not None and config.env("prod").deployers == ("alice",)
    comment = gitops.comment(pr.number, "carol", "/prbot lock prod")
    outcome = flows.run_commands(gitops.repo, number=pr.number, comment_id=comment.id, user="carol",
                                 body=comment.body)
    assert outcome.refused == ["lock"]                       # still only alice, whatever the PR says
    at_head = flows.config_at(gitops.repo, f"refs/pull/{pr.number}/head")
    assert at_head is not None and at_head.env("prod").deployers == ()
    gitops.merge(pr.number)                                  # once merged, it is the configuration
    merged = flows.default_config(fetched(gitops).repo)
    assert merged is not None and merged.env("prod").deployers == ()


def test_a_pr_breaking_the_configuration_is_planned_with_the_default_branchs(gitops: GitOps) -> None:
    pr = gitops.open_pr("break", {".prbot.yml": "version: 1\nenvironments: nope\n",
                                  overlay_path("dev"): overlay("dev", "1.1.0")})
    outcome = flows.plan_pull_request(gitops.repo, pr.number)
    assert (outcome.status, outcome.conclusion) == ("posted", "success")
    [comment] = gitops.bot_comments(pr.number)
    assert "+      - image: ghcr.io/acme/shop:1.1.0" in comment


def test_config_at_reads_a_commit_and_none_without_a_file(gitops: GitOps) -> None:
    before = gitops.sha("main")
    gitops.merge(gitops.open_pr("drop", {".prbot.yml": None}).number)
    fetched(gitops)
    assert flows.config_at(gitops.repo, before) is not None
    assert flows.config_at(gitops.repo, gitops.sha("main")) is None
    assert flows.default_config(gitops.repo) is None


def test_an_invalid_configuration_raises_config_error_with_the_line(make: Make) -> None:
    bad = CONFIG.replace("  - name: staging\n", "  - name: staging\n    colour: blue\n")
    gitops = fetched(make({**GITOPS_FILES, ".prbot.yml": bad}))
    with pytest.raises(ConfigError) as raised:
        flows.default_config(gitops.repo)
    assert any(e.startswith(".prbot.yml:6:") and "colour" in e for e in raised.value.errors), raised.value.errors


def test_an_invalid_configuration_fails_the_plan_check_and_plans_nothing(make: Make) -> None:
    gitops = make({**GITOPS_FILES, ".prbot.yml": "version: 1\nenvironments: nope\n"})
    pr = gitops.open_pr("feature", {overlay_path("dev"): overlay("dev", "1.1.0")})
    outcome = flows.plan_pull_request(gitops.repo, pr.number)
    assert (outcome.status, outcome.conclusion) == ("bad-config", "failure")
    run = gitops.forge.find_check_run(pr.head_sha, flows.CHECK_NAME)
    output = gitops.forge.check_output(pr.head_sha, flows.CHECK_NAME)
    assert run is not None and run.conclusion == "failure" and output is not None
    assert output.title == "Invalid .prbot.yml"
    assert output.summary.startswith("The `.prbot.yml` of the default branch cannot be used, so nothing was planned")
    assert "- .prbot.yml:2:" in output.summary
    assert gitops.bot_comments(pr.number) == []


def test_a_configuration_that_is_not_text_is_a_config_error(gitops: GitOps) -> None:
    gitops.push_branch("main", {".prbot.yml": CONFIG.encode() + b"# caf\xe9\n"})
    with pytest.raises(ConfigError, match=r"^\.prbot\.yml: not UTF-8 text$"):
        flows.default_config(fetched(gitops).repo)
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        flows.config_at(gitops.repo, gitops.sha("main"))

"""The fake GitHub itself, through PyGithub and git: it must behave like GitHub where prbot's tests
rely on it (state, refusals, webhooks, git over smart HTTP)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fakegithub import SECONDARY_MESSAGE, FakeGitHub
from fakegithub.webhooks import TEMPLATES
from github import Auth, Github, GithubException, GithubIntegration

REPO = "acme/gitops"


@pytest.fixture
def fake(fake_github: FakeGitHub) -> FakeGitHub:
    fake_github.installation = fake_github.add_installation("acme")        # type: ignore[attr-defined]
    fake_github.create_repo(REPO, files={"README.md": "hello\n", "app/config.yaml": "a: 1\n"})
    return fake_github


def token(fake: FakeGitHub, installation: int | None = None) -> str:
    integration = GithubIntegration(auth=Auth.AppAuth(fake.app_id, fake.private_key), base_url=fake.api_url,
                                    retry=None)
    return integration.get_access_token(installation or fake.installation).token  # type: ignore[attr-defined]


def client(fake: FakeGitHub, value: str | None = None, per_page: int = 30) -> Github:
    return Github(auth=Auth.Token(value or token(fake)), base_url=fake.api_url, retry=None, per_page=per_page,
                  seconds_between_requests=None, seconds_between_writes=None)


def git(*args: str, cwd: Path | None = None, token_value: str | None = None, ok: bool = True) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "HOME": os.devnull,
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    options: list[str] = []
    if token_value:
        basic = base64.b64encode(f"x-access-token:{token_value}".encode()).decode()
        options = ["-c", f"http.extraHeader=Authorization: Basic {basic}"]
    proc = subprocess.run(["git", *options, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if ok and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc.stdout if ok else proc.stderr


# ---------------------------------------------------------------------------------------------
# App authentication
# ---------------------------------------------------------------------------------------------

def test_app_jwt_and_installation_tokens(fake: FakeGitHub) -> None:
    integration = GithubIntegration(auth=Auth.AppAuth(fake.app_id, fake.private_key), base_url=fake.api_url,
                                    retry=None)
    assert [i.id for i in integration.get_installations()] == [fake.installation]     # type: ignore[attr-defined]
    grant = integration.get_access_token(fake.installation)                           # type: ignore[attr-defined]
    assert grant.token.startswith("ghs_") and grant.expires_at is not None
    assert client(fake, grant.token).get_repo(REPO).default_branch == "main"
    with pytest.raises(GithubException) as err:                 # an installation token on an App endpoint
        client(fake, grant.token).requester.requestJsonAndCheck("GET", "/app/installations")
    assert err.value.status == 401


def test_wrong_key_wrong_token_and_expired_token_get_401(fake: FakeGitHub) -> None:
    other = GithubIntegration(auth=Auth.AppAuth(fake.app_id + 1, fake.private_key), base_url=fake.api_url,
                              retry=None)
    with pytest.raises(GithubException) as err:
        other.get_access_token(fake.installation)                                     # type: ignore[attr-defined]
    assert err.value.status == 401
    with pytest.raises(GithubException) as err:
        client(fake, "ghs_not-a-token").get_repo(REPO)
    assert err.value.status == 401 and err.value.data["message"] == "Bad credentials"
    fake.token_lifetime = 10
    short = token(fake)
    fake.advance(11)
    with pytest.raises(GithubException) as err:
        client(fake, short).get_repo(REPO)
    assert err.value.status == 401


def test_an_installation_sees_only_its_repositories(fake: FakeGitHub) -> None:
    other = fake.add_installation("umbrella", repos=["umbrella/one"])
    fake.create_repo("umbrella/one", files={"a": "b"})
    fake.create_repo("umbrella/two", files={"a": "b"})
    gh = client(fake, token(fake, other))
    assert gh.get_repo("umbrella/one").full_name == "umbrella/one"
    for hidden in ("umbrella/two", REPO):
        with pytest.raises(GithubException) as err:
            gh.get_repo(hidden)
        assert err.value.status == 404


def test_rate_limit_headers_count_down(fake: FakeGitHub) -> None:
    gh = client(fake)
    gh.get_repo(REPO)
    first = gh.rate_limiting[0]
    gh.get_repo(REPO)
    assert gh.rate_limiting == (first - 1, 5000)


# ---------------------------------------------------------------------------------------------
# Git over smart HTTP
# ---------------------------------------------------------------------------------------------

def test_clone_fetch_and_push_need_the_installation_token(fake: FakeGitHub, tmp_path: Path) -> None:
    url = f"{fake.web_url}/{REPO}.git"
    assert "could not read Username" in git("ls-remote", url, ok=False)     # asked for credentials
    git("ls-remote", url, token_value="ghs_wrong", ok=False)
    assert fake.requests[-1].status == 401
    other = fake.add_installation("umbrella")
    assert "not found" in git("ls-remote", url, token_value=token(fake, other), ok=False).lower()
    value = token(fake)
    git("clone", "-q", url, str(tmp_path / "work"), token_value=value)
    work = tmp_path / "work"
    assert (work / "README.md").read_text() == "hello\n"
    (work / "README.md").write_text("changed\n")
    git("commit", "-qam", "change", cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/feature", cwd=work, token_value=value)
    assert fake.read_file(REPO, "feature", "README.md") == b"changed\n"
    refused = git("push", "origin", "HEAD:refs/pull/9/head", cwd=work, token_value=value, ok=False)
    assert "rejected" in refused or "denied" in refused or "hidden" in refused
    assert value not in (work / ".git" / "config").read_text()


def test_a_push_updates_the_pull_request_and_sends_webhooks(fake: FakeGitHub, tmp_path: Path) -> None:
    first = fake.commit(REPO, "feature", {"app/config.yaml": "a: 2\n"}, user="alice")
    number = fake.open_pull(REPO, head="feature", title="Change a", user="alice")
    fake.drain_events()
    value = token(fake)
    git("clone", "-q", "--branch", "feature", f"{fake.web_url}/{REPO}.git", str(tmp_path / "w"), token_value=value)
    (tmp_path / "w" / "new.yaml").write_text("b: 1\n")
    git("add", "-A", cwd=tmp_path / "w")
    git("commit", "-qm", "more", cwd=tmp_path / "w")
    git("push", "-q", "origin", "feature", cwd=tmp_path / "w", token_value=value)
    second = fake.branch_sha(REPO, "feature")
    assert fake.pull(REPO, number).head_sha == second
    assert git("ls-remote", f"{fake.web_url}/{REPO}.git", f"refs/pull/{number}/head",
               token_value=value).split()[0] == second
    events = fake.drain_events()
    assert [(e.event, e.action) for e in events] == [("push", None), ("pull_request", "synchronize")]
    push, sync = events[0].payload, events[1].payload
    assert (push["ref"], push["before"], push["after"], push["forced"]) == ("refs/heads/feature", first, second,
                                                                            False)
    assert push["commits"][0]["added"] == ["new.yaml"] and push["head_commit"]["id"] == second
    assert (sync["before"], sync["after"], sync["number"]) == (first, second, number)
    assert sync["pull_request"]["head"]["sha"] == second
    assert sync["installation"]["id"] == fake.installation                           # type: ignore[attr-defined]


def test_fork_pull_requests_keep_their_head_in_the_base_repository(fake: FakeGitHub, tmp_path: Path) -> None:
    fake.fork_repo(REPO, "mallory")
    head = fake.commit("mallory/gitops", "evil", {"app/config.yaml": "a: 666\n"}, user="mallory")
    number = fake.open_pull(REPO, head="evil", head_repo="mallory/gitops", user="mallory")
    pr = client(fake).get_repo(REPO).get_pull(number)
    assert (pr.head.repo.full_name, pr.head.sha, pr.head.label) == ("mallory/gitops", head, "mallory:evil")
    mirror = tmp_path / "m.git"
    git("init", "-q", "--bare", str(mirror))
    git("--git-dir", str(mirror), "fetch", "-q", f"{fake.web_url}/{REPO}.git",
        f"+refs/pull/{number}/head:refs/pull/{number}/head", token_value=token(fake))
    assert git("--git-dir", str(mirror), "rev-parse", f"refs/pull/{number}/head").strip() == head
    fake.commit("mallory/gitops", "evil", {"more": "x"}, user="mallory")           # the fork moves on
    assert fake.pull(REPO, number).head_sha == fake.branch_sha("mallory/gitops", "evil")


def test_deleting_the_head_branch_closes_the_pull_request(fake: FakeGitHub) -> None:
    fake.commit(REPO, "feature", {"x": "1"})
    number = fake.open_pull(REPO, head="feature")
    fake.delete_branch(REPO, "feature")
    assert fake.pull(REPO, number).state == "closed"
    with pytest.raises(GithubException) as err:
        client(fake).get_repo(REPO).get_pull(number).edit(state="open")
    assert err.value.status == 422


# ---------------------------------------------------------------------------------------------
# Pull requests, merges, labels, comments
# ---------------------------------------------------------------------------------------------

def test_pull_request_list_filters_and_pages(fake: FakeGitHub) -> None:
    for i in range(5):
        fake.commit(REPO, f"b{i}", {f"f{i}": "x"})
        fake.open_pull(REPO, head=f"b{i}", title=f"PR {i}")
    fake.close_pull(REPO, 2)
    repo = client(fake).get_repo(REPO)
    assert [p.number for p in repo.get_pulls()] == [5, 4, 3, 1]                  # open, newest first
    assert [p.number for p in repo.get_pulls(state="closed")] == [2]
    assert [p.number for p in repo.get_pulls(state="all", head="acme:b3")] == [4]
    assert [p.number for p in repo.get_pulls(head="other:b3")] == []
    gh = client(fake, per_page=2)
    assert [p.number for p in gh.get_repo(REPO).get_pulls(state="all")] == [5, 4, 3, 2, 1]


def test_merge_methods_and_refusals(fake: FakeGitHub) -> None:
    repo = client(fake).get_repo(REPO)
    head = fake.commit(REPO, "one", {"one": "1"})
    fake.open_pull(REPO, head="one")
    with pytest.raises(GithubException) as err:
        repo.get_pull(1).merge(sha="f" * 40)
    assert err.value.status == 409
    base = fake.branch_sha(REPO, "main")
    result = repo.get_pull(1).merge(sha=head, merge_method="merge")
    parents = subprocess.run(["git", "--git-dir", str(fake.repo(REPO).path), "rev-list", "--parents", "-n1",
                              result.sha], capture_output=True, text=True).stdout.split()[1:]
    assert parents == [base, head]
    fake.commit(REPO, "two", {"app/config.yaml": "a: two\n"}, parent=base)
    fake.commit(REPO, "three", {"app/config.yaml": "a: three\n"}, parent=base)
    fake.open_pull(REPO, head="two")
    fake.open_pull(REPO, head="three")
    squash = repo.get_pull(2).merge(merge_method="squash")
    assert fake.read_file(REPO, "main", "app/config.yaml") == b"a: two\n"
    assert subprocess.run(["git", "--git-dir", str(fake.repo(REPO).path), "rev-list", "--parents", "-n1",
                           squash.sha], capture_output=True, text=True).stdout.split()[1:] == [result.sha]
    assert repo.get_pull(3).mergeable is False
    with pytest.raises(GithubException) as err:
        repo.get_pull(3).merge()
    assert err.value.status == 405 and "not mergeable" in err.value.data["message"]
    events = [(e.event, e.action) for e in fake.drain_events()]
    assert ("pull_request", "closed") in events


def test_plain_issues_share_the_number_sequence_and_carry_comments(fake: FakeGitHub) -> None:
    """An issue is served as GitHub serves one (no `pull_request` key), numbered in the sequence
    PRs use; its comments are listed and posted as a PR's, and its webhooks say it is no PR."""
    fake.commit(REPO, "f", {"f": "1"})
    first = fake.open_pull(REPO, head="f")
    repo = client(fake).get_repo(REPO)
    issue = repo.create_issue("Where does app run?", body="asking")
    assert issue.number == first + 1 and issue.pull_request is None
    assert issue.html_url.endswith(f"/{REPO}/issues/{issue.number}")
    assert fake.open_issue(REPO, title="another", user="someone") == first + 2
    got = repo.get_issue(issue.number)
    assert got.title == "Where does app run?" and got.pull_request is None and got.state == "open"
    assert repo.get_issue(first).pull_request is not None
    fake.drain_events()
    comment = got.create_comment("the board")
    assert [c.body for c in got.get_comments()] == ["the board"]
    assert comment.html_url.endswith(f"/issues/{issue.number}#issuecomment-{comment.id}")
    [hook] = fake.drain_events()
    assert hook.event == "issue_comment" and hook.payload["issue"]["number"] == issue.number
    assert "pull_request" not in hook.payload["issue"]
    with pytest.raises(GithubException) as err:
        repo.get_issue(first + 9)
    assert err.value.status == 404
    with pytest.raises(GithubException) as err:
        repo.get_pull(issue.number)                       # an issue is not a PR
    assert err.value.status == 404
    with pytest.raises(GithubException) as err:
        client(fake).get_repo(REPO).create_issue("")
    assert err.value.status == 422


def test_labels_comments_and_reactions(fake: FakeGitHub) -> None:
    fake.commit(REPO, "f", {"f": "1"})
    number = fake.open_pull(REPO, head="f")
    issue = client(fake).get_repo(REPO).get_issue(number)
    issue.add_to_labels("prbot", "env:dev")
    assert [lb.name for lb in issue.get_labels()] == ["prbot", "env:dev"]
    assert [lb.name for lb in client(fake).get_repo(REPO).get_labels()] == ["prbot", "env:dev"]
    comment = issue.create_comment("hi")
    assert comment.user.login == "prbot[bot]" and comment.user.type == "Bot"
    assert comment.performed_via_github_app is not None
    comment.edit("hi again")
    comment.create_reaction("rocket")
    assert [r.content for r in comment.get_reactions()] == ["rocket"]
    with pytest.raises(GithubException) as err:
        issue.create_comment("x" * 65537)
    assert err.value.status == 422
    comment.delete()
    assert fake.comments(REPO, number) == []
    kinds = [(e.event, e.action) for e in fake.drain_events() if e.event == "issue_comment"]
    assert kinds == [("issue_comment", "created"), ("issue_comment", "edited"), ("issue_comment", "deleted")]


# ---------------------------------------------------------------------------------------------
# Checks, deployments, GraphQL
# ---------------------------------------------------------------------------------------------

def test_check_run_limits_are_githubs(fake: FakeGitHub) -> None:
    sha = fake.branch_sha(REPO, "main")
    assert sha is not None
    repo = client(fake).get_repo(REPO)
    annotation: dict[str, Any] = {"path": "a", "start_line": 1, "end_line": 1, "annotation_level": "failure",
                                  "message": "m"}
    with pytest.raises(GithubException) as err:
        repo.create_check_run("c", sha, output={"title": "t", "summary": "s", "annotations": [annotation] * 51})
    assert err.value.status == 422
    with pytest.raises(GithubException) as err:
        repo.create_check_run("c", sha, output={"title": "t", "summary": "s" * 65536})
    assert err.value.status == 422
    with pytest.raises(GithubException) as err:
        repo.create_check_run("c", "0" * 40)
    assert err.value.status == 422
    run = repo.create_check_run("c", sha, output={"title": "t", "summary": "s", "annotations": [annotation] * 50})
    run.edit(output={"title": "t", "summary": "s", "annotations": [annotation] * 50}, conclusion="failure")
    assert run.output.annotations_count == 100 and run.status == "completed"


def test_deployment_refused_when_checks_failed_unless_contexts_are_given(fake: FakeGitHub) -> None:
    sha = fake.branch_sha(REPO, "main")
    assert sha is not None
    repo = client(fake).get_repo(REPO)
    repo.create_check_run("lint", sha, conclusion="failure", output={"title": "t", "summary": "s"})
    with pytest.raises(GithubException) as err:
        repo.create_deployment(ref="main", environment="dev")
    assert err.value.status == 409
    deployment = repo.create_deployment(ref="main", environment="dev", required_contexts=[])
    deployment.create_status("success", description="ok")
    assert [s.state for s in deployment.get_statuses()] == ["success"]


def test_graphql_auto_merge_needs_the_repository_setting(fake: FakeGitHub) -> None:
    fake.protect_branch(REPO, "main", required_checks=["ci"])
    fake.commit(REPO, "f", {"f": "1"})
    fake.open_pull(REPO, head="f")
    pr = client(fake).get_repo(REPO).get_pull(1)
    assert pr.mergeable_state == "blocked"
    pr.enable_automerge(merge_method="SQUASH")
    assert client(fake).get_repo(REPO).get_pull(1).auto_merge is not None
    pr.disable_automerge()
    fake.repo(REPO).allow_auto_merge = False
    with pytest.raises(GithubException) as err:
        pr.enable_automerge()
    assert "not allowed" in json.dumps(err.value.data)


# ---------------------------------------------------------------------------------------------
# Failures, pace, log
# ---------------------------------------------------------------------------------------------

def test_injected_failures_and_the_write_pace(fake: FakeGitHub) -> None:
    gh = client(fake)
    fake.secondary_rate_limit(retry_after=12, path=r"/pulls$")
    with pytest.raises(GithubException) as err:
        gh.get_repo(REPO).get_pulls()[0]
    assert err.value.status == 403 and (err.value.headers or {})["retry-after"] == "12"
    assert err.value.data["message"] == SECONDARY_MESSAGE
    fake.pace_writes(per_minute=2)
    fake.commit(REPO, "f", {"f": "1"})
    fake.open_pull(REPO, head="f")
    issue = gh.get_repo(REPO).get_issue(1)
    issue.create_comment("1")
    issue.create_comment("2")
    with pytest.raises(GithubException) as err:
        issue.create_comment("3")
    assert err.value.status == 403 and 1 <= int((err.value.headers or {})["retry-after"]) <= 60
    gh.get_repo(REPO).get_pull(1)                                   # reads are not paced
    fake.advance(61)
    issue.create_comment("3")
    assert [c.body for c in fake.comments(REPO, 1)] == ["1", "2", "3"]
    assert len(fake.api_writes(path=r"/comments$")) == 3


# ---------------------------------------------------------------------------------------------
# Webhooks
# ---------------------------------------------------------------------------------------------

def test_webhooks_are_shaped_like_githubs_and_signed(fake: FakeGitHub) -> None:
    fake.drain_events()
    fake.set_permission(REPO, "alice", "write")
    fake.commit(REPO, "f", {"f": "1"}, user="alice")
    number = fake.open_pull(REPO, head="f", title="Hello", body=None, user="alice")
    fake.comment(REPO, number, "/prbot plan", user="alice")
    events = fake.drain_events()
    assert [(e.event, e.action) for e in events] == [("push", None), ("pull_request", "opened"),
                                                     ("issue_comment", "created")]
    opened = events[1].payload
    template = json.loads((TEMPLATES / "pull_request.opened.json").read_text())
    assert set(template) <= set(opened) and set(template["pull_request"]) <= set(opened["pull_request"])
    assert opened["pull_request"]["body"] is None and opened["pull_request"]["user"]["login"] == "alice"
    assert opened["repository"]["clone_url"] == f"{fake.web_url}/{REPO}.git"
    comment = events[2].payload
    assert comment["issue"]["pull_request"]["url"].endswith(f"/pulls/{number}")
    assert comment["comment"]["body"] == "/prbot plan" and comment["sender"]["login"] == "alice"
    headers = events[2].headers("s3cret")
    expected = hmac.new(b"s3cret", events[2].body, hashlib.sha256).hexdigest()
    assert headers["X-Hub-Signature-256"] == f"sha256={expected}"
    assert headers["X-GitHub-Event"] == "issue_comment" and headers["X-GitHub-Delivery"] == events[2].delivery
    assert len({e.delivery for e in events}) == 3

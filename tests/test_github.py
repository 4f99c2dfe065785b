"""prbot.github: the GitHub App and the forge, against the fake GitHub (and `responses` for the
default api.github.com URL)."""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

import pytest
import responses
from fakegithub import FakeGitHub

from prbot.errors import ForgeError, NotFound, TransientError
from prbot.github import GitHubApp, GitHubForge
from prbot.ports import Annotation, CheckRunOutput

REPO = "acme/gitops"
FILES = {".prbot.yml": "version: 1\n", "apps/web/dev/kustomization.yaml": "resources: []\n"}


@pytest.fixture
def fake(fake_github: FakeGitHub) -> FakeGitHub:
    fake_github.installation = fake_github.add_installation("acme")        # type: ignore[attr-defined]
    fake_github.create_repo(REPO, files=FILES)
    fake_github.drain_events()
    return fake_github


def make_app(fake: FakeGitHub, **kw: object) -> GitHubApp:
    return GitHubApp(fake.app_id, fake.private_key, api_url=fake.api_url, clock=fake.now, **kw)  # type: ignore[arg-type]


@pytest.fixture
def app(fake: FakeGitHub) -> GitHubApp:
    return make_app(fake)


@pytest.fixture
def forge(fake: FakeGitHub, app: GitHubApp) -> GitHubForge:
    return app.forge(fake.installation, REPO)                               # type: ignore[attr-defined]


def branch(fake: FakeGitHub, name: str, content: str = "x") -> str:
    return fake.commit(REPO, name, {f"{name}.txt": content}, user="alice")


def requests_since(fake: FakeGitHub, start: int) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests[start:]]


# ---------------------------------------------------------------------------------------------
# The App: installations, tokens, Enterprise URL
# ---------------------------------------------------------------------------------------------

def test_installations_and_their_repositories(fake: FakeGitHub, app: GitHubApp) -> None:
    other = fake.add_installation("umbrella", repos=["umbrella/deploy"])
    fake.create_repo("umbrella/deploy", default_branch="trunk", files={"a": "b"})
    fake.create_repo("umbrella/not-installed", files={"a": "b"})
    assert sorted(app.installation_ids()) == sorted([fake.installation, other])      # type: ignore[attr-defined]
    repos = app.repositories(other)
    assert [(r.full_name, r.default_branch, r.private) for r in repos] == [("umbrella/deploy", "trunk", True)]
    assert repos[0].clone_url == f"{fake.web_url}/umbrella/deploy.git"
    assert app.installation_for("umbrella/deploy") == other
    with pytest.raises(NotFound):
        app.installation_for("umbrella/not-installed")


def test_forge_knows_the_repository_as_the_api_gives_it(fake: FakeGitHub, forge: GitHubForge) -> None:
    assert forge.full_name == REPO
    assert forge.default_branch == "main"
    assert forge.clone_url == f"{fake.web_url}/{REPO}.git"            # GitHub Enterprise layout: /api/v3 beside it
    assert forge.html_url == f"{fake.web_url}/{REPO}"


def test_one_token_request_per_installation_across_calls_and_threads(fake: FakeGitHub, app: GitHubApp) -> None:
    inst = fake.installation                                            # type: ignore[attr-defined]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            forge = app.forge(inst, REPO)
            forge.find_pull("nothing")
            forge.git_token()
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert fake.tokens_issued == 1
    assert len([r for r in fake.requests if r.path.endswith("/access_tokens")]) == 1


def test_token_is_renewed_shortly_before_it_expires(fake: FakeGitHub, app: GitHubApp, forge: GitHubForge) -> None:
    first = forge.git_token()
    fake.advance(3600 - 400)                       # still valid for 400 s: kept
    assert forge.git_token() == first
    fake.advance(200)                              # 200 s left (< 5 minutes): a new one
    second = forge.git_token()
    assert second != first and fake.tokens_issued == 2
    forge.find_pull("x")                           # the API calls use the new token too
    assert fake.requests[-1].status == 200


def test_revoked_token_is_a_transient_error_and_the_next_call_gets_a_new_token(
        fake: FakeGitHub, forge: GitHubForge, caplog: pytest.LogCaptureFixture) -> None:
    token = forge.git_token()
    fake.expire_tokens()
    with caplog.at_level(logging.DEBUG), pytest.raises(TransientError) as err:
        forge.get_pull(1)
    assert "refused the installation token" in str(err.value)
    assert token not in str(err.value) and token not in caplog.text
    with pytest.raises(NotFound):
        forge.get_pull(1)                          # a fresh token: the PR just does not exist
    assert fake.tokens_issued == 2


def test_wrong_private_key_is_a_forge_error_naming_the_settings(fake: FakeGitHub, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    app = GitHubApp(fake.app_id, key, api_url=fake.api_url)
    with pytest.raises(ForgeError) as err:
        app.forge(fake.installation, REPO)                                  # type: ignore[attr-defined]
    message = str(err.value)
    assert "GITHUB_APP_ID" in message and "\n" not in message and "PRIVATE KEY" not in message
    with pytest.raises(ForgeError, match="not a PEM key"):
        GitHubApp(fake.app_id, "not a key", api_url=fake.api_url)


def test_a_key_squeezed_into_one_line_works(fake: FakeGitHub) -> None:
    one_line = fake.private_key.strip().replace("\n", "\\n")
    assert "\n" not in one_line
    app = GitHubApp(fake.app_id, one_line, api_url=fake.api_url)
    assert app.forge(fake.installation, REPO).default_branch == "main"      # type: ignore[attr-defined]


def test_on_response_reports_every_api_response(fake: FakeGitHub) -> None:
    seen: list[tuple[str, int, int | None]] = []
    app = make_app(fake, on_response=lambda m, s, r: seen.append((m, s, r)))
    forge = app.forge(fake.installation, REPO)                              # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        forge.get_pull(99)
    api = [(r.method, r.status) for r in fake.requests if r.kind == "api"]
    assert [(m, s) for m, s, _ in seen] == api == [("POST", 201), ("GET", 200), ("GET", 404)]
    remaining = [r for _, _, r in seen[1:]]
    assert remaining[1] is not None and remaining[0] == remaining[1] + 1    # X-RateLimit-Remaining counts down


@responses.activate
def test_default_api_url_is_api_github_com(fake: FakeGitHub) -> None:
    responses.add(responses.POST, "https://api.github.com:443/app/installations/7/access_tokens", status=201,
                  json={"token": "ghs_abc", "expires_at": "2099-01-01T00:00:00Z"})
    responses.add(responses.GET, "https://api.github.com:443/repos/acme/gitops", json={
        "full_name": "acme/gitops", "default_branch": "main", "clone_url": "https://github.com/acme/gitops.git",
        "html_url": "https://github.com/acme/gitops", "url": "https://api.github.com/repos/acme/gitops"})
    forge = GitHubApp(fake.app_id, fake.private_key, retry=0).forge(7, "acme/gitops")
    assert forge.clone_url == "https://github.com/acme/gitops.git"
    assert responses.calls[1].request.headers["Authorization"] == "token ghs_abc"
    assert str(responses.calls[0].request.headers["Authorization"]).startswith("Bearer ")


# ---------------------------------------------------------------------------------------------
# Pull requests
# ---------------------------------------------------------------------------------------------

def test_create_find_get_update_pull(fake: FakeGitHub, forge: GitHubForge) -> None:
    sha = branch(fake, "prbot/bump/dev/web")
    assert forge.find_pull("prbot/bump/dev/web") is None
    pr = forge.create_pull(title="Bump web", body="old -> new", head="prbot/bump/dev/web", base="main")
    assert (pr.number, pr.title, pr.body, pr.state, pr.head_sha, pr.base_ref, pr.author, pr.repo) == (
        1, "Bump web", "old -> new", "open", sha, "main", "prbot[bot]", REPO)
    assert not pr.from_fork and pr.node_id and pr.html_url.endswith("/acme/gitops/pull/1")
    assert forge.find_pull("prbot/bump/dev/web") == pr
    start = len(fake.requests)
    forge.update_pull(1, title="Bump web to 1.2", body="new body")
    forge.update_pull(1)                                                   # nothing to change: no request
    assert requests_since(fake, start) == [("PATCH", f"/repos/{REPO}/pulls/1")]
    got = forge.get_pull(1)
    assert (got.title, got.body) == ("Bump web to 1.2", "new body")
    forge.update_pull(1, state="closed")
    assert forge.find_pull("prbot/bump/dev/web") is None
    assert forge.find_pull("prbot/bump/dev/web", state="closed").number == 1    # type: ignore[union-attr]
    assert forge.find_pull("prbot/bump/dev/web", state="all").state == "closed"  # type: ignore[union-attr]


def test_find_pull_ignores_a_fork_branch_of_the_same_name(fake: FakeGitHub, forge: GitHubForge) -> None:
    fake.fork_repo(REPO, "mallory")
    fake.commit("mallory/gitops", "prbot/bump/dev/web", {"evil": "1"}, user="mallory")
    number = fake.open_pull(REPO, head="prbot/bump/dev/web", head_repo="mallory/gitops", user="mallory")
    assert forge.find_pull("prbot/bump/dev/web") is None
    pr = forge.get_pull(number)
    assert pr.from_fork and pr.head_repo == "mallory/gitops" and pr.author == "mallory"


def test_create_pull_refusals_are_one_line_forge_errors(fake: FakeGitHub, forge: GitHubForge) -> None:
    branch(fake, "feature")
    forge.create_pull(title="t", body="", head="feature", base="main")
    with pytest.raises(ForgeError) as err:
        forge.create_pull(title="t", body="", head="feature", base="main")
    assert "A pull request already exists for acme:feature" in str(err.value) and err.value.status == 422
    with pytest.raises(ForgeError, match="head invalid"):
        forge.create_pull(title="t", body="", head="missing", base="main")


def test_labels_are_created_as_needed(fake: FakeGitHub, forge: GitHubForge) -> None:
    branch(fake, "feature")
    forge.create_pull(title="t", body="", head="feature", base="main")
    forge.add_labels(1, ["prbot", "bump", "env:dev"])
    forge.add_labels(1, ["prbot"])
    forge.add_labels(1, [])
    assert forge.get_pull(1).labels == ("prbot", "bump", "env:dev")
    assert len(fake.api_writes(path=r"/labels$")) == 2


def test_merge_pull_with_the_sha_guard(fake: FakeGitHub, forge: GitHubForge) -> None:
    sha = branch(fake, "feature")
    forge.create_pull(title="t", body="", head="feature", base="main")
    assert forge.merge_pull(1, sha="0" * 40) is None                      # the head moved: refused
    merged = forge.merge_pull(1, sha=sha, method="squash")
    assert merged is not None and fake.branch_sha(REPO, "main") == merged
    pr = forge.get_pull(1)
    assert pr.merged and pr.merge_commit_sha == merged and pr.state == "closed"
    assert fake.read_file(REPO, "main", "feature.txt") == b"x"
    assert forge.merge_pull(1, sha=sha) is None                           # already merged


def test_merge_pull_waits_for_required_checks(fake: FakeGitHub, forge: GitHubForge) -> None:
    fake.protect_branch(REPO, "main", required_checks=["prbot/plan"])
    sha = branch(fake, "feature")
    forge.create_pull(title="t", body="", head="feature", base="main")
    assert forge.merge_pull(1, sha=sha) is None
    forge.create_check_run(head_sha=sha, name="prbot/plan", status="completed", conclusion="success",
                           output=CheckRunOutput(title="ok", summary="ok"))
    assert forge.merge_pull(1, sha=sha) is not None


def test_auto_merge(fake: FakeGitHub, forge: GitHubForge) -> None:
    sha = branch(fake, "feature")
    pr = forge.create_pull(title="t", body="", head="feature", base="main")
    assert forge.enable_auto_merge(pr) is False            # nothing to wait for ("clean status"): merge via REST
    fake.protect_branch(REPO, "main", required_checks=["prbot/plan"])
    assert forge.enable_auto_merge(pr, method="squash") is True
    assert fake.pull(REPO, 1).auto_merge["merge_method"] == "squash"        # type: ignore[index]
    run = forge.create_check_run(head_sha=sha, name="prbot/plan", status="in_progress")
    assert not forge.get_pull(1).merged
    forge.update_check_run(run.id, status="completed", conclusion="success",
                           output=CheckRunOutput(title="Plan", summary="1 target changed"))
    merged = forge.get_pull(1)
    assert merged.merged and fake.branch_sha(REPO, "main") == merged.merge_commit_sha


def test_auto_merge_not_allowed_by_the_repository(fake: FakeGitHub, forge: GitHubForge) -> None:
    fake.repo(REPO).allow_auto_merge = False
    fake.protect_branch(REPO, "main", required_checks=["prbot/plan"])
    branch(fake, "feature")
    pr = forge.create_pull(title="t", body="", head="feature", base="main")
    start = len(fake.requests)
    assert forge.enable_auto_merge(pr) is False
    assert requests_since(fake, start) == [("POST", "/api/graphql")]       # the node id came with the PR


# ---------------------------------------------------------------------------------------------
# Comments and reactions
# ---------------------------------------------------------------------------------------------

def test_comments_listed_across_pages_edited_deleted_and_reacted_to(fake: FakeGitHub, forge: GitHubForge) -> None:
    branch(fake, "feature")
    forge.create_pull(title="t", body="", head="feature", base="main")
    for i in range(104):
        fake.comment(REPO, 1, f"comment {i}", user="alice")
    mine = forge.create_comment(1, "<!-- prbot:plan -->\nplan")
    assert mine.author == "prbot[bot]" and mine.author_is_bot
    start = len(fake.requests)
    comments = forge.list_comments(1)
    assert len(requests_since(fake, start)) == 2                             # two pages of 100
    assert [c.body for c in comments][:2] == ["comment 0", "comment 1"] and comments[-1] == mine
    assert not comments[0].author_is_bot and comments[0].author == "alice"
    forge.edit_comment(mine.id, "<!-- prbot:plan -->\nnew plan")
    forge.react(comments[0].id, "eyes")
    forge.react(comments[0].id, "eyes")                                     # a retried job: still one
    assert [r.content for r in fake.comments(REPO, 1)[0].reactions] == ["eyes"]
    forge.delete_comment(mine.id)
    forge.delete_comment(mine.id)                                           # already gone: fine
    assert [c.body for c in forge.list_comments(1)][-1] == "comment 103"
    with pytest.raises(NotFound):
        forge.edit_comment(mine.id, "x")


def test_a_comment_over_githubs_limit_is_refused_with_the_reason(fake: FakeGitHub, forge: GitHubForge) -> None:
    branch(fake, "feature")
    forge.create_pull(title="t", body="", head="feature", base="main")
    with pytest.raises(ForgeError, match="body is too long"):
        forge.create_comment(1, "x" * 70000)


# ---------------------------------------------------------------------------------------------
# Check runs
# ---------------------------------------------------------------------------------------------

def test_check_run_annotations_go_in_batches_of_50_and_texts_are_clipped(fake: FakeGitHub,
                                                                         forge: GitHubForge) -> None:
    sha = branch(fake, "feature")
    annotations = tuple(Annotation(path=f"apps/{i}.yaml", start_line=i + 1, end_line=i + 1, level="failure",
                                   message=f"error {i}", title="render") for i in range(120))
    output = CheckRunOutput(title="Plan failed", summary="s" * 70000, text="t" * 80000, annotations=annotations)
    start = len(fake.requests)
    run = forge.create_check_run(head_sha=sha, name="prbot/plan", status="completed", conclusion="failure",
                                 output=output, details_url="https://example.com/plan")
    assert [m for m, _ in requests_since(fake, start)] == ["POST", "PATCH", "PATCH"]
    stored = fake.check_runs(REPO, sha)[0]
    assert len(stored.annotations) == 120 and stored.annotations[119]["message"] == "error 119"
    assert len(stored.output["summary"]) == 65535 and stored.output["summary"].endswith("(truncated)")
    assert len(stored.output["text"]) == 65535
    assert (run.status, run.conclusion, stored.details_url) == ("completed", "failure", "https://example.com/plan")
    assert forge.find_check_run(sha, "prbot/plan") == run
    assert forge.find_check_run(sha, "other") is None


def test_find_check_run_gives_the_latest_and_update_changes_it(fake: FakeGitHub, forge: GitHubForge) -> None:
    sha = branch(fake, "feature")
    forge.create_check_run(head_sha=sha, name="prbot/plan", status="completed", conclusion="failure",
                           output=CheckRunOutput(title="old", summary="old"))
    second = forge.create_check_run(head_sha=sha, name="prbot/plan", status="in_progress")
    assert forge.find_check_run(sha, "prbot/plan") == second
    forge.update_check_run(second.id, conclusion="success", output=CheckRunOutput(
        title="ok", summary="fine", annotations=(Annotation("a.yaml", 3, 3, "warning", "careful"),)))
    got = forge.find_check_run(sha, "prbot/plan")
    assert got is not None and (got.status, got.conclusion) == ("completed", "success")
    assert fake.check_runs(REPO, sha)[1].annotations[0]["annotation_level"] == "warning"


# ---------------------------------------------------------------------------------------------
# Permissions and teams
# ---------------------------------------------------------------------------------------------

def test_permissions_use_the_role_name(fake: FakeGitHub, forge: GitHubForge) -> None:
    for user, role in (("wendy", "write"), ("mona", "maintain"), ("tina", "triage"), ("rita", "read"),
                       ("ada", "admin")):
        fake.set_permission(REPO, user, role)
    fake.add_user("nobody")
    assert [forge.permission(u) for u in ("wendy", "mona", "tina", "rita", "ada", "nobody", "acme")] == [
        "write", "maintain", "triage", "read", "admin", "none", "admin"]
    assert forge.permission("no-such-user") == "none"


def test_team_membership(fake: FakeGitHub, forge: GitHubForge) -> None:
    fake.add_team("acme", "sre", members=["alice"], maintainers=["bob"], pending=["carol"])
    assert forge.is_team_member("acme", "sre", "alice")
    assert forge.is_team_member("acme", "sre", "bob")
    assert not forge.is_team_member("acme", "sre", "carol")                # invited, not yet a member
    assert not forge.is_team_member("acme", "sre", "dave")
    assert not forge.is_team_member("acme", "no-team", "alice")


# ---------------------------------------------------------------------------------------------
# Deployments
# ---------------------------------------------------------------------------------------------

def test_deployments_with_their_latest_status(fake: FakeGitHub, forge: GitHubForge) -> None:
    main = fake.branch_sha(REPO, "main")
    assert main is not None
    first = forge.create_deployment(ref=main, environment="dev", description="d" * 300, payload={"app": "web"})
    assert (first.sha, first.environment, first.payload, first.state) == (main, "dev", {"app": "web"}, None)
    forge.set_deployment_status(first.id, state="in_progress", description="syncing")
    forge.set_deployment_status(first.id, state="success", description="healthy",
                                environment_url="https://dev.example.com", log_url="https://argo/app")
    second = forge.create_deployment(ref=main, environment="dev", description="again", payload={})
    forge.set_deployment_status(second.id, state="success", description="healthy")
    forge.create_deployment(ref=main, environment="prod", description="prod", payload={})
    got = forge.list_deployments(environment="dev")
    assert [(d.id, d.state) for d in got] == [(second.id, "success"), (first.id, "inactive")]
    assert [d.id for d in forge.list_deployments(environment="dev", limit=1)] == [second.id]
    assert [d.id for d in forge.list_deployments(environment="dev", sha=main)] == [second.id, first.id]
    assert forge.list_deployments(environment="dev", sha="0" * 40) == []
    stored = fake.deployments(REPO)[0]
    assert len(stored.description or "") == 140 and stored.statuses[1].environment_url == "https://dev.example.com"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

def test_server_errors_are_transient_and_reads_are_retried_once_quickly(fake: FakeGitHub,
                                                                        forge: GitHubForge) -> None:
    fake.fail(502, times=1, method="GET")
    assert forge.find_pull("x") is None                                     # retried by the client
    fake.fail(503, times=5, method="GET", path=r"/pulls$")
    with pytest.raises(TransientError, match="GitHub failed"):
        forge.find_pull("x")
    branch(fake, "feature")
    fake.fail(500, times=1, method="POST")
    with pytest.raises(TransientError):                                     # a write is never replayed
        forge.create_pull(title="t", body="", head="feature", base="main")
    assert fake.pulls(REPO) == []


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_is_transient_with_retry_after(fake: FakeGitHub, forge: GitHubForge,
                                                            status: int) -> None:
    fake.secondary_rate_limit(retry_after=37, status=status)
    with pytest.raises(TransientError, match="secondary rate limit") as err:
        forge.find_pull("x")
    assert err.value.retry_after == 37


def test_secondary_rate_limit_without_retry_after_waits_a_minute(fake: FakeGitHub, forge: GitHubForge) -> None:
    fake.secondary_rate_limit(retry_after=None)
    with pytest.raises(TransientError) as err:
        forge.find_pull("x")
    assert err.value.retry_after == 60


def test_primary_rate_limit_waits_for_the_reset(fake: FakeGitHub, forge: GitHubForge) -> None:
    fake.set_rate_limit(fake.installation, 0, reset_in=900)                # type: ignore[attr-defined]
    with pytest.raises(TransientError, match="rate limit is exhausted") as err:
        forge.find_pull("x")
    assert err.value.retry_after is not None and 800 < err.value.retry_after <= 900


def test_dropped_connections_and_an_unreachable_github_are_transient(fake: FakeGitHub, forge: GitHubForge) -> None:
    fake.drop_connections(times=3)
    with pytest.raises(TransientError, match="unreachable"):
        forge.find_pull("x")
    with fake.unreachable(), pytest.raises(TransientError, match="unreachable"):
        forge.get_pull(1)
    assert forge.find_pull("x") is None


def test_other_refusals_are_forge_errors_without_tokens(fake: FakeGitHub, forge: GitHubForge,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    token = forge.git_token()
    branch(fake, "feature")
    fake.fail(422, message="Validation Failed", method="POST")
    with caplog.at_level(logging.DEBUG), pytest.raises(ForgeError) as err:
        forge.create_pull(title="t", body="", head="feature", base="main")
    assert err.value.status == 422 and "Validation Failed" in str(err.value)
    assert not isinstance(err.value, NotFound)
    with pytest.raises(NotFound):
        forge.get_pull(41)
    with pytest.raises(NotFound):
        make_app(fake).forge(fake.installation, "acme/missing")             # type: ignore[attr-defined]
    assert token not in caplog.text and not re.search(r"ghs_\w+", caplog.text)

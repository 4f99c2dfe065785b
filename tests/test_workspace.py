"""prbot.workspace: the bare mirror, against the fake GitHub's smart-HTTP repositories."""

from __future__ import annotations

import base64
import logging
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fakegithub import FakeGitHub

from prbot.errors import ForgeError, NotFound, PrbotError, TransientError
from prbot.github import GitHubApp, GitHubForge
from prbot.workspace import Identity, Mirror

REPO = "acme/gitops"
FILES = {"README.md": "hello\n", "apps/web/dev/kustomization.yaml": "resources: []\n",
         "scripts/run.sh": "#!/bin/sh\n"}


@pytest.fixture
def fake(fake_github: FakeGitHub) -> FakeGitHub:
    fake_github.installation = fake_github.add_installation("acme")        # type: ignore[attr-defined]
    fake_github.create_repo(REPO, files=FILES)
    return fake_github


@pytest.fixture
def forge(fake: FakeGitHub) -> GitHubForge:
    app = GitHubApp(fake.app_id, fake.private_key, api_url=fake.api_url, clock=fake.now)
    return app.forge(fake.installation, REPO)                               # type: ignore[attr-defined]


@pytest.fixture
def mirror(tmp_path: Path, forge: GitHubForge) -> Mirror:
    return Mirror.for_forge(tmp_path / "data", forge)


def git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def files_below(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def assert_no_token(token: str, *texts: str) -> None:
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    for text in texts:
        assert token not in text and basic not in text


def object_count(git_dir: Path) -> int:
    stats = dict(line.split(": ") for line in git(git_dir, "count-objects", "-v").splitlines())
    return int(stats["count"]) + int(stats["in-pack"])


def test_first_fetch_creates_the_mirror_and_the_token_lands_nowhere(fake: FakeGitHub, forge: GitHubForge,
                                                                     mirror: Mirror, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    assert mirror.resolve("refs/heads/main") is None
    with caplog.at_level(logging.DEBUG):
        mirror.fetch("refs/heads/main")
    assert mirror.git_dir == tmp_path / "data" / "mirrors" / "acme" / "gitops.git"
    assert git(mirror.git_dir, "rev-parse", "--is-bare-repository") == "true"
    main = fake.branch_sha(REPO, "main")
    assert mirror.resolve("refs/heads/main") == main == mirror.resolve("main")
    assert mirror.read_file("main", "README.md") == b"hello\n"
    assert mirror.read_file("main", "missing") is None and mirror.read_file("nope", "README.md") is None
    token = forge.git_token()
    assert_no_token(token, caplog.text, *(data.decode(errors="replace")
                                         for data in files_below(tmp_path / "data").values()))
    assert not (mirror.git_dir / "FETCH_HEAD").exists()
    assert "extraheader" not in (mirror.git_dir / "config").read_text().lower()
    assert "Popen" in caplog.text or "git fetch" in caplog.text              # the command line was logged: no token


def test_missing_refs_are_not_errors_and_vanished_refs_go(fake: FakeGitHub, mirror: Mirror) -> None:
    fake.commit(REPO, "prbot/bump/dev/web", {"x": "1"})
    mirror.fetch("refs/heads/main", "refs/heads/prbot/bump/dev/web", "refs/heads/not-yet")
    assert mirror.resolve("refs/heads/prbot/bump/dev/web") == fake.branch_sha(REPO, "prbot/bump/dev/web")
    assert mirror.resolve("refs/heads/not-yet") is None
    fake.delete_branch(REPO, "prbot/bump/dev/web")
    mirror.fetch("refs/heads/prbot/bump/dev/web")
    assert mirror.resolve("refs/heads/prbot/bump/dev/web") is None
    mirror.fetch()                                                         # every branch
    assert git(mirror.git_dir, "for-each-ref", "--format=%(refname)") == "refs/heads/main"


def test_second_fetch_transfers_only_the_new_objects(fake: FakeGitHub, mirror: Mirror) -> None:
    for i in range(30):
        fake.commit(REPO, "main", {f"apps/app{i}/dev/kustomization.yaml": f"resources: [{i}]\n"})
    mirror.fetch("refs/heads/main")
    before = object_count(mirror.git_dir)
    old = fake.branch_sha(REPO, "main")
    new = fake.commit(REPO, "main", {"apps/app3/dev/kustomization.yaml": "resources: [changed]\n"})
    expected = len(git(fake.repo(REPO).path, "rev-list", "--objects", new, "--not", str(old)).splitlines())
    mirror.fetch("refs/heads/main")
    assert mirror.resolve("main") == new
    assert object_count(mirror.git_dir) - before == expected == 6          # commit, 4 trees, 1 blob


def test_pull_request_heads_from_forks_are_fetched_from_the_base_repository(fake: FakeGitHub,
                                                                            mirror: Mirror) -> None:
    fake.fork_repo(REPO, "mallory")
    head = fake.commit("mallory/gitops", "evil", {"README.md": "pwned\n"}, user="mallory")
    number = fake.open_pull(REPO, head="evil", head_repo="mallory/gitops", user="mallory")
    mirror.fetch("refs/heads/main", f"refs/pull/{number}/head")
    assert mirror.resolve(f"refs/pull/{number}/head") == head
    assert mirror.read_file(f"refs/pull/{number}/head", "README.md") == b"pwned\n"


def test_checkout_is_a_full_tree_in_a_temporary_directory(mirror: Mirror) -> None:
    mirror.fetch("main")
    with mirror.checkout("main") as tree:
        assert (tree / "apps/web/dev/kustomization.yaml").read_text() == "resources: []\n"
        assert (tree / "README.md").read_text() == "hello\n"
        kept = tree
    assert not kept.exists()
    assert git(mirror.git_dir, "worktree", "list").endswith("(bare)")
    assert not (mirror.git_dir / "index").exists()
    with pytest.raises(PrbotError, match="unknown revision"):
        with mirror.checkout("nope"):
            pass


def test_merge_base_equal_trees_and_a_tree_of_a_revision_come_from_the_mirror(fake: FakeGitHub,
                                                                               mirror: Mirror) -> None:
    fork_point = fake.branch_sha(REPO, "main")
    feature = fake.commit(REPO, "feature", {"apps/web/dev/kustomization.yaml": "resources: [x]\n"})
    main = fake.commit(REPO, "main", {"README.md": "moved on\n"})
    mirror.fetch("main", "feature")
    assert mirror.merge_base(main, feature) == fork_point
    assert mirror.merge_base("refs/heads/main", "refs/heads/feature") == fork_point
    assert mirror.merge_base("nope", feature) is None
    again = mirror.commit(parent=feature, files={"README.md": b"hello\n"}, message="same files")
    assert again != feature and mirror.same_tree(feature, again)
    assert not mirror.same_tree(main, feature)
    with mirror.materialize(feature) as tree:
        assert (tree / "apps/web/dev/kustomization.yaml").read_text() == "resources: [x]\n"
        assert (tree / "README.md").read_text() == "hello\n"
        kept = tree
    assert not kept.exists()
    assert not (mirror.git_dir / "index").exists()


def test_commit_writes_objects_only(fake: FakeGitHub, mirror: Mirror, tmp_path: Path) -> None:
    mirror.fetch("main")
    parent = mirror.resolve("main")
    assert parent is not None
    refs_before = git(mirror.git_dir, "for-each-ref")
    sha = Mirror(tmp_path / "data", REPO, "unused", lambda: "", author=Identity("Bot", "bot@example.com")).commit(
        parent=parent, files={"apps/web/dev/kustomization.yaml": b"resources: [new]\n", "new/file.yaml": b"a: 1\n"},
        message="Bump web to 1.2.3\n\nbody")
    assert git(mirror.git_dir, "for-each-ref") == refs_before                # no ref moved
    assert git(mirror.git_dir, "rev-parse", f"{sha}^") == parent
    assert git(mirror.git_dir, "log", "-1", "--format=%an <%ae>|%B", sha) == \
        "Bot <bot@example.com>|Bump web to 1.2.3\n\nbody"
    assert mirror.read_file(sha, "apps/web/dev/kustomization.yaml") == b"resources: [new]\n"
    assert mirror.read_file(sha, "new/file.yaml") == b"a: 1\n"
    assert mirror.read_file(sha, "README.md") == b"hello\n"
    assert git(mirror.git_dir, "diff", "--name-only", parent, sha).split() == ["apps/web/dev/kustomization.yaml",
                                                                                "new/file.yaml"]
    for bad in ("../x", "/etc/passwd", ".git/config", "a/../../b", ""):
        with pytest.raises(PrbotError, match="refusing"):
            mirror.commit(parent=parent, files={bad: b"x"}, message="m")


def test_commit_keeps_executable_files_executable(fake: FakeGitHub, mirror: Mirror) -> None:
    fake.commit(REPO, "main", {"scripts/run.sh": "#!/bin/sh\n"}, executable=["scripts/run.sh"])
    mirror.fetch("main")
    sha = mirror.commit(parent="main", files={"scripts/run.sh": b"#!/bin/sh\nexit 0\n", "other.sh": b"x"},
                        message="m")
    assert git(mirror.git_dir, "ls-tree", sha, "scripts/run.sh").split()[0] == "100755"
    assert git(mirror.git_dir, "ls-tree", sha, "other.sh").split()[0] == "100644"
    with mirror.checkout(sha) as tree_dir:
        assert os.stat(tree_dir / "scripts/run.sh").st_mode & stat.S_IXUSR


def test_push_new_branch_force_and_refusal(fake: FakeGitHub, mirror: Mirror) -> None:
    mirror.fetch("main")
    first = mirror.commit(parent="main", files={"a.txt": b"1"}, message="one")
    mirror.push("prbot/bump/dev/web", first)
    assert fake.branch_sha(REPO, "prbot/bump/dev/web") == first
    assert mirror.resolve("refs/heads/prbot/bump/dev/web") == first
    number = fake.open_pull(REPO, head="prbot/bump/dev/web")
    fake.drain_events()
    second = mirror.commit(parent="main", files={"a.txt": b"2"}, message="two")       # not on top of first
    with pytest.raises(ForgeError, match="refused the push") as err:
        mirror.push("prbot/bump/dev/web", second)
    assert "non-fast-forward" in str(err.value) or "fetch first" in str(err.value)
    mirror.push("prbot/bump/dev/web", second, force=True)
    assert fake.pull(REPO, number).head_sha == second
    events = [(e.event, e.action) for e in fake.drain_events()]
    assert ("pull_request", "synchronize") in events
    with pytest.raises(PrbotError):
        mirror.push("main", "not-a-sha")


def test_refused_token_unreachable_forge_and_missing_repository(fake: FakeGitHub, forge: GitHubForge,
                                                                  mirror: Mirror, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    mirror.fetch("main")
    token = forge.git_token()
    fake.expire_tokens()
    with caplog.at_level(logging.DEBUG), pytest.raises(TransientError, match="refused the installation token") as err:
        mirror.fetch("main")
    assert_no_token(token, str(err.value), caplog.text)
    mirror.fetch("main")                                    # forget_git_token: a fresh token now
    assert fake.tokens_issued == 2
    with fake.unreachable(), pytest.raises(TransientError):
        mirror.fetch("main")
    gone = Mirror(tmp_path / "data", "acme/gone", f"{fake.web_url}/acme/gone.git", forge.git_token)
    with pytest.raises(NotFound, match="repository not found"):
        gone.fetch("main")
    fake.fail(503, scope="git", times=1)
    with pytest.raises(TransientError, match="503"):
        mirror.fetch("main")


def test_names_that_would_leave_the_cache_are_refused(tmp_path: Path) -> None:
    for name in ("../x", "a/..", "a/b/c", "a", "a/.", "a/b c"):
        with pytest.raises(PrbotError, match="not a repository name"):
            Mirror(tmp_path, name, "https://example.com/x.git", lambda: "t")


def test_one_job_at_a_time_per_mirror_within_a_process(fake: FakeGitHub, forge: GitHubForge, mirror: Mirror,
                                                       tmp_path: Path) -> None:
    mirror.fetch("main")
    done = threading.Event()
    other = Mirror.for_forge(tmp_path / "data", forge)          # another job's object for the same mirror

    def job() -> None:
        other.fetch("main")
        done.set()
    with mirror.lock():
        mirror.fetch("main")                                    # re-entrant for the holder
        worker = threading.Thread(target=job)
        worker.start()
        assert not done.wait(0.3), "the other job fetched while the mirror was held"
    assert done.wait(30)
    worker.join()


def test_one_job_at_a_time_per_mirror_across_processes(fake: FakeGitHub, forge: GitHubForge, mirror: Mirror) -> None:
    mirror.fetch("main")
    lock_file = mirror.git_dir.with_name("gitops.git.lock")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
        "print('held', flush=True); sys.stdin.read()"), str(lock_file)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        mirror.lock_timeout = 0.3
        with pytest.raises(TransientError, match="busy"):
            mirror.fetch("main")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    mirror.fetch("main")


def test_concurrent_jobs_on_one_mirror(fake: FakeGitHub, forge: GitHubForge, tmp_path: Path) -> None:
    errors: list[BaseException] = []
    shas: dict[int, str] = {}

    def job(i: int) -> None:
        try:
            m = Mirror.for_forge(tmp_path / "data", forge)
            m.fetch("main")
            sha = m.commit(parent="main", files={f"f{i}.txt": str(i).encode()}, message=f"job {i}")
            m.push(f"prbot/job/{i}", sha)
            m.fetch("main", f"prbot/job/{i}")
            shas[i] = sha
        except BaseException as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)
    threads = [threading.Thread(target=job, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {i: fake.branch_sha(REPO, f"prbot/job/{i}") for i in range(5)} == shas

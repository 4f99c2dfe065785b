"""Git revisions for the plan engine, on real repositories."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from support import GIT_ENV, commit_all, git, init_repo, snapshot_files, write

from prbot import gitrepo
from prbot.errors import GitError, PrbotError


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = init_repo(tmp_path / "repo")
    write(r, "apps/shop/envs/dev/kustomization.yaml", "resources: [deploy.yaml]\n")
    write(r, "apps/shop/envs/dev/deploy.yaml", "kind: Deployment\n")
    write(r, "apps/shop/envs/prod/kustomization.yaml", "resources: []\n")
    write(r, "charts/billing/Chart.yaml", "name: billing\n")
    write(r, "README.md", "hello\n")
    write(r, ".gitignore", "*.log\nbuild/\n")
    commit_all(r, "initial")
    return r


def _state(repo: Path) -> tuple:
    """Everything a read-only operation must leave as it was."""
    git_dir = repo / ".git"
    return (snapshot_files(repo), git(repo, "status", "--porcelain", "--untracked-files=all"),
            git(repo, "rev-parse", "HEAD"), git(repo, "symbolic-ref", "-q", "HEAD"),
            git(repo, "worktree", "list", "--porcelain"), git(repo, "for-each-ref"),
            (git_dir / "index").read_bytes(),
            sorted(str(p.relative_to(git_dir)) for p in git_dir.rglob("*")))


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary-files directory of this test's own, so other processes' files do not interfere."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _temp_entries(tmp: Path) -> set[str]:
    return {p.name for p in tmp.iterdir()}


# -- resolve -------------------------------------------------------------------------------------------

def test_resolve_names_full_shas(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    write(repo, "README.md", "two\n")
    second = commit_all(repo, "second")
    git(repo, "tag", "v1", first)
    git(repo, "tag", "-a", "v2", "-m", "annotated", second)
    assert gitrepo.resolve(repo, "HEAD") == second == gitrepo.head_sha(repo)
    assert gitrepo.resolve(repo, "main") == second
    assert gitrepo.resolve(repo, "HEAD~1") == first
    assert gitrepo.resolve(repo, first[:8]) == first
    assert gitrepo.resolve(repo, "v1") == first
    assert gitrepo.resolve(repo, "v2") == second            # annotated tag peeled to its commit
    assert gitrepo.resolve(repo / "apps", "HEAD") == second   # from a sub-directory too


@pytest.mark.parametrize("rev", ["nope", "HEAD~5", "0" * 40, "main..HEAD", "HEAD:README.md", "-h",
                                 "--all", "a\nb"])
def test_resolve_unknown_revision(repo: Path, rev: str) -> None:
    with pytest.raises(GitError) as exc:
        gitrepo.resolve(repo, rev)
    message = str(exc.value)
    assert message.startswith("unknown revision '")
    assert "\n" not in message
    assert isinstance(exc.value, PrbotError)


def test_resolve_message_names_the_revision(repo: Path) -> None:
    with pytest.raises(GitError, match=r"^unknown revision 'nope' in "):
        gitrepo.resolve(repo, "nope")
    with pytest.raises(GitError, match="empty revision"):
        gitrepo.resolve(repo, "")


def test_errors_never_show_credentials(repo: Path) -> None:
    with pytest.raises(GitError) as exc:
        gitrepo.resolve(repo, "https://x-access-token:ghs_SECRET@github.com/acme/gitops")
    assert "ghs_SECRET" not in str(exc.value)
    assert "x-access-token" not in str(exc.value)


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match=r"is not a git repository$"):
        gitrepo.resolve(plain, "HEAD")
    with pytest.raises(GitError, match="is not a directory"):
        gitrepo.resolve(tmp_path / "missing", "HEAD")
    with pytest.raises(GitError, match="is not a git repository"):
        with gitrepo.materialize(plain, None):
            pass
    with pytest.raises(GitError, match="is not a git repository"):
        gitrepo.is_dirty(plain)


def test_repository_without_commits(tmp_path: Path) -> None:
    empty = init_repo(tmp_path / "empty")
    with pytest.raises(GitError, match="unknown revision 'HEAD'"):
        gitrepo.head_sha(empty)


def test_merge_base(repo: Path) -> None:
    fork = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    write(repo, "README.md", "feature\n")
    commit_all(repo, "feature")
    git(repo, "checkout", "-q", "main")
    write(repo, "charts/billing/Chart.yaml", "name: billing2\n")
    commit_all(repo, "main moves on")
    assert gitrepo.merge_base(repo, "main", "feature") == fork
    git(repo, "checkout", "-q", "--orphan", "lonely")
    commit_all(repo, "unrelated")
    with pytest.raises(GitError, match="no common history"):
        gitrepo.merge_base(repo, "main", "lonely")


def test_location_variables_of_a_calling_git_are_ignored(repo: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    other = init_repo(tmp_path / "other")
    write(other, "x", "x\n")
    commit_all(other)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    assert gitrepo.head_sha(repo) != git(other, "rev-parse", "HEAD")
    assert gitrepo.read_file(repo, "HEAD", "README.md") == b"hello\n"


# -- changed_paths -------------------------------------------------------------------------------------

def test_changed_paths_between_commits(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    write(repo, "apps/shop/envs/dev/deploy.yaml", "kind: Deployment\nspec: {}\n")    # modified
    write(repo, "apps/shop/envs/staging/kustomization.yaml", "resources: []\n")     # added
    (repo / "charts/billing/Chart.yaml").unlink()                                    # deleted
    (repo / "docs").mkdir()
    git(repo, "mv", "README.md", "docs/README.md")                                   # renamed
    os.chmod(repo / "apps/shop/envs/prod/kustomization.yaml", 0o755)                # mode change
    head = commit_all(repo, "changes")
    expected = {"apps/shop/envs/dev/deploy.yaml", "apps/shop/envs/staging/kustomization.yaml",
                "charts/billing/Chart.yaml", "README.md", "docs/README.md",
                "apps/shop/envs/prod/kustomization.yaml"}
    assert gitrepo.changed_paths(repo, base, head) == expected
    assert gitrepo.changed_paths(repo, "HEAD~1", "main") == expected
    assert gitrepo.changed_paths(repo, head, base) == expected      # same set the other way round
    assert gitrepo.changed_paths(repo, head, head) == set()


def test_rename_with_edit_lists_both_sides(repo: Path) -> None:
    body = "".join(f"line {i}\n" for i in range(50))
    write(repo, "apps/shop/envs/dev/big.yaml", body)
    base = commit_all(repo, "big file")
    (repo / "apps/shop/envs/dev/big.yaml").unlink()
    write(repo, "apps/shop/base/big.yaml", body + "one more\n")
    head = commit_all(repo, "move and edit")
    assert "R" in git(repo, "diff", "--name-status", "-M", base, head)   # git itself sees a rename
    assert gitrepo.changed_paths(repo, base, head) == {"apps/shop/envs/dev/big.yaml",
                                                       "apps/shop/base/big.yaml"}


def test_changed_paths_working_tree(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    write(repo, "apps/shop/envs/dev/deploy.yaml", "kind: Deployment\nspec: {}\n")    # unstaged edit
    write(repo, "apps/shop/envs/prod/kustomization.yaml", "resources: [x]\n")
    git(repo, "add", "apps/shop/envs/prod/kustomization.yaml")                       # staged edit
    write(repo, "apps/shop/envs/qa/kustomization.yaml", "resources: []\n")
    git(repo, "add", "apps/shop/envs/qa/kustomization.yaml")                         # staged new file
    write(repo, "notes/new dir/todo ü.txt", "untracked\n")                           # untracked
    write(repo, "debug.log", "ignored\n")                                            # ignored
    write(repo, "build/out.yaml", "ignored\n")                                       # ignored dir
    (repo / "charts/billing/Chart.yaml").unlink()                                    # unstaged delete
    git(repo, "mv", "README.md", "README2.md")                                       # staged rename
    before = _state(repo)
    assert gitrepo.changed_paths(repo, base, None) == {
        "apps/shop/envs/dev/deploy.yaml", "apps/shop/envs/prod/kustomization.yaml",
        "apps/shop/envs/qa/kustomization.yaml", "notes/new dir/todo ü.txt", "charts/billing/Chart.yaml",
        "README.md", "README2.md"}
    assert gitrepo.is_dirty(repo)
    assert _state(repo) == before                  # not even the index's stat data was rewritten


def test_working_tree_includes_commits_since_base(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    write(repo, "README.md", "committed\n")
    commit_all(repo)
    write(repo, "charts/billing/values.yaml", "image: {}\n")
    assert gitrepo.changed_paths(repo, base, None) == {"README.md", "charts/billing/values.yaml"}
    assert gitrepo.changed_paths(repo, "HEAD", None) == {"charts/billing/values.yaml"}


def test_working_tree_diff_never_writes_the_index(repo: Path) -> None:
    index = repo / ".git" / "index"
    os.utime(repo / "README.md", (1, 1))          # stat data differs, content does not
    before = index.read_bytes()
    assert gitrepo.changed_paths(repo, "HEAD", None) == set()
    assert not gitrepo.is_dirty(repo)
    assert index.read_bytes() == before
    git(repo, "diff", "HEAD")                      # plain git would have rewritten it
    assert index.read_bytes() != before


def test_edit_reverted_in_working_tree_is_no_change(repo: Path) -> None:
    write(repo, "README.md", "changed\n")
    git(repo, "add", "README.md")
    write(repo, "README.md", "hello\n")                     # staged change undone in the work tree
    assert gitrepo.changed_paths(repo, "HEAD", None) == set()


def test_clean_working_tree(repo: Path) -> None:
    assert gitrepo.changed_paths(repo, "HEAD", None) == set()
    assert not gitrepo.is_dirty(repo)
    write(repo, "ignored.log", "x\n")
    assert not gitrepo.is_dirty(repo)
    write(repo, "new.yaml", "x\n")
    assert gitrepo.is_dirty(repo)


def test_changed_paths_unknown_revision(repo: Path) -> None:
    with pytest.raises(GitError, match="unknown revision 'nope'"):
        gitrepo.changed_paths(repo, "nope", None)
    with pytest.raises(GitError, match="unknown revision 'later'"):
        gitrepo.changed_paths(repo, "HEAD", "later")


def test_paths_are_relative_to_a_subdirectory_repo(tmp_path: Path) -> None:
    mono = init_repo(tmp_path / "mono")
    write(mono, "src/main.go", "package main\n")
    write(mono, "deploy/gitops/apps/a/dev/cm.yaml", "kind: ConfigMap\n")
    base = commit_all(mono)
    write(mono, "src/main.go", "package main // edited\n")
    write(mono, "deploy/gitops/apps/a/dev/cm.yaml", "kind: ConfigMap\ndata: {}\n")
    write(mono, "deploy/gitops/apps/a/prod/cm.yaml", "kind: ConfigMap\n")
    write(mono, "deploy/other.txt", "outside\n")
    gitops = mono / "deploy" / "gitops"
    assert gitrepo.changed_paths(gitops, base, None) == {"apps/a/dev/cm.yaml", "apps/a/prod/cm.yaml"}
    head = commit_all(mono)
    assert gitrepo.changed_paths(gitops, base, head) == {"apps/a/dev/cm.yaml", "apps/a/prod/cm.yaml"}
    assert gitrepo.read_file(gitops, base, "apps/a/dev/cm.yaml") == b"kind: ConfigMap\n"
    assert gitrepo.read_file(gitops, base, "src/main.go") is None
    with gitrepo.materialize(gitops, base) as root:
        assert sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) == [
            "apps/a/dev/cm.yaml"]
    write(mono, "deploy/newplace/x.yaml", "kind: ConfigMap\n")
    commit_all(mono)
    with gitrepo.materialize(mono / "deploy" / "newplace", base) as root:   # did not exist at base
        assert root.is_dir() and list(root.iterdir()) == []


# -- read_file -----------------------------------------------------------------------------------------

def test_read_file(repo: Path) -> None:
    old = git(repo, "rev-parse", "HEAD")
    binary = bytes(range(256)) * 4
    (repo / "blob.bin").write_bytes(binary)
    write(repo, "README.md", "new\r\nline\n")
    new = commit_all(repo)
    assert gitrepo.read_file(repo, old, "README.md") == b"hello\n"
    assert gitrepo.read_file(repo, new, "README.md") == b"new\r\nline\n"
    assert gitrepo.read_file(repo, "HEAD", "blob.bin") == binary
    assert gitrepo.read_file(repo, old, "blob.bin") is None             # absent at that revision
    assert gitrepo.read_file(repo, new, "apps/shop") is None            # a directory is no file
    assert gitrepo.read_file(repo, new, "./apps/shop/envs/dev/../dev/deploy.yaml") == b"kind: Deployment\n"
    for outside in ["../repo/README.md", "/etc/passwd", "", ".", "a\nb"]:
        assert gitrepo.read_file(repo, new, outside) is None
    write(repo, "README.md", "uncommitted\n")
    assert gitrepo.read_file(repo, "HEAD", "README.md") == b"new\r\nline\n"
    with pytest.raises(GitError, match="unknown revision 'nope'"):
        gitrepo.read_file(repo, "nope", "README.md")
    with pytest.raises(GitError, match="unknown revision"):
        gitrepo.read_file(repo, "f" * 40, "README.md")


# -- materialize ---------------------------------------------------------------------------------------

def test_materialize_exports_the_revision_and_leaves_no_trace(repo: Path, private_tmp: Path) -> None:
    old = git(repo, "rev-parse", "HEAD")
    os.chmod(repo / "apps/shop/envs/dev/deploy.yaml", 0o755)
    os.symlink("../prod/kustomization.yaml", repo / "apps/shop/envs/dev/link.yaml")
    write(repo, "committed.log", "ignored by .gitignore but committed\n")
    git(repo, "add", "-f", "committed.log")
    write(repo, ".gitattributes", "README.md export-ignore\n")
    new = commit_all(repo)
    # the user's work in progress, which the export must neither see nor disturb
    write(repo, "README.md", "uncommitted edit\n")
    write(repo, "apps/shop/envs/dev/kustomization.yaml", "staged\n")
    git(repo, "add", "apps/shop/envs/dev/kustomization.yaml")
    write(repo, "scratch.txt", "untracked\n")
    before, temps = _state(repo), _temp_entries(private_tmp)

    with gitrepo.materialize(repo, "HEAD") as root:
        assert root != repo and root.is_dir() and private_tmp in root.parents
        files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}
        assert files == set(git(repo, "ls-tree", "-r", "--name-only", new).splitlines())
        for rel in files - {"apps/shop/envs/dev/link.yaml"}:
            assert (root / rel).read_bytes() == gitrepo.read_file(repo, new, rel), rel
        assert (root / "README.md").read_text() == "hello\n"             # export-ignore does not apply
        assert (root / "committed.log").exists()
        assert not (root / "scratch.txt").exists()
        assert (root / "apps/shop/envs/dev/kustomization.yaml").read_text() == "resources: [deploy.yaml]\n"
        assert os.stat(root / "apps/shop/envs/dev/deploy.yaml").st_mode & stat.S_IXUSR
        assert os.readlink(root / "apps/shop/envs/dev/link.yaml") == "../prod/kustomization.yaml"
        assert not (root / ".git").exists()
        assert _state(repo) == before
        exported = root

    with gitrepo.materialize(repo, old) as root:
        assert not (root / ".gitattributes").exists()
        assert not (root / "committed.log").exists()

    assert not exported.exists() and not exported.parent.exists()
    assert _temp_entries(private_tmp) == temps
    assert _state(repo) == before


def test_materialize_cleans_up_after_an_error(repo: Path, private_tmp: Path) -> None:
    temps = _temp_entries(private_tmp)
    with pytest.raises(RuntimeError):
        with gitrepo.materialize(repo, "HEAD") as root:
            (root / "apps/shop/envs/dev/made-by-renderer").mkdir()
            os.chmod(root / "apps/shop/envs/dev", 0o500)     # even read-only and unreadable
            os.chmod(root / "apps/shop/envs/prod", 0o000)     # directories go
            raise RuntimeError("renderer blew up")
    assert not root.exists()
    assert _temp_entries(private_tmp) == temps


def test_materialize_working_tree_exports_its_tracked_files(repo: Path) -> None:
    """The working tree as a plan reads it: tracked files with their uncommitted content; no .git,
    no ignored file; untracked files only when asked; the user's checkout untouched."""
    write(repo, "README.md", "uncommitted\n")
    write(repo, ".gitignore", ".env\n")
    write(repo, ".env", "TOKEN=x\n")
    write(repo, "new.txt", "untracked\n")
    before = _state(repo)
    with gitrepo.materialize(repo, None) as root:
        assert root != repo
        assert (root / "README.md").read_text() == "uncommitted\n"
        assert not (root / ".git").exists() and not (root / ".env").exists() and not (root / "new.txt").exists()
        exported = root
    assert not exported.exists()
    with gitrepo.materialize(repo, None, untracked=True) as root:
        assert (root / "new.txt").read_text() == "untracked\n" and not (root / ".env").exists()
    assert repo.exists() and _state(repo) == before


def test_materialize_unknown_revision_leaves_nothing(repo: Path, private_tmp: Path) -> None:
    temps = _temp_entries(private_tmp)
    with pytest.raises(GitError, match="unknown revision 'nope'"):
        with gitrepo.materialize(repo, "nope"):
            pass
    assert _temp_entries(private_tmp) == temps


def test_two_revisions_side_by_side(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    write(repo, "apps/shop/envs/dev/deploy.yaml", "kind: Deployment\nspec: {replicas: 2}\n")
    head = commit_all(repo)
    with gitrepo.materialize(repo, base) as b, gitrepo.materialize(repo, head) as h:
        assert b != h
        assert (b / "apps/shop/envs/dev/deploy.yaml").read_text() == "kind: Deployment\n"
        assert "replicas: 2" in (h / "apps/shop/envs/dev/deploy.yaml").read_text()


def test_materialize_a_bare_clone(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    sha = gitrepo.head_sha(bare)
    assert sha == git(repo, "rev-parse", "HEAD")
    assert gitrepo.read_file(bare, sha, "README.md") == b"hello\n"
    with gitrepo.materialize(bare, sha) as root:
        assert (root / "charts/billing/Chart.yaml").read_text() == "name: billing\n"


# -- partial exports -----------------------------------------------------------------------------------

def _tree_files(root: Path) -> dict[str, object]:
    """Every file, symbolic link and empty directory below root: bytes, link target or "dir"."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), )
            elif p.is_file():
                out[rel] = (p.read_bytes(), bool(os.stat(p).st_mode & stat.S_IXUSR))
            elif not any(p.iterdir()):
                out[rel] = "dir"
    return out


def test_materialize_only_the_paths_asked_for(repo: Path, private_tmp: Path) -> None:
    write(repo, "README.md", "uncommitted\n")
    before, temps = _state(repo), _temp_entries(private_tmp)
    asked = ["apps/shop/envs/dev", "README.md", "nope.txt", "apps/shop/envs/prod/kustomization.yaml/x",
             "../outside", "/etc/passwd", "charts/billing/"]
    with gitrepo.materialize(repo, "HEAD", paths=asked) as root:
        assert private_tmp in root.parents
        assert _tree_files(root) == {
            "apps/shop/envs/dev/kustomization.yaml": (b"resources: [deploy.yaml]\n", False),
            "apps/shop/envs/dev/deploy.yaml": (b"kind: Deployment\n", False),
            "charts/billing/Chart.yaml": (b"name: billing\n", False),
            "README.md": (b"hello\n", False)}
        assert _state(repo) == before
        exported = root
    assert not exported.exists() and _temp_entries(private_tmp) == temps
    with gitrepo.materialize(repo, None, paths=["README.md"]) as root:
        assert root != repo and (root / "README.md").read_text() == "uncommitted\n"   # paths: ignored


def test_partial_tree_grows_path_by_path_to_the_full_export(repo: Path) -> None:
    os.chmod(repo / "apps/shop/envs/dev/deploy.yaml", 0o755)
    write(repo, "shared/real/cm.yaml", "kind: ConfigMap\n")
    write(repo, "shared/real/deep/x.yaml", "kind: Secret\n")
    os.symlink("real", repo / "shared/current")                       # a link to a directory
    os.symlink("../../../shared/current/cm.yaml", repo / "apps/shop/envs/cm.yaml")
    os.symlink("../../etc/passwd", repo / "apps/out")                  # leaves the repository
    os.symlink("loop", repo / "apps/loop")                             # points at itself
    commit_all(repo)
    with gitrepo.materialize(repo, "HEAD") as full:
        everything = _tree_files(full)
    with gitrepo.partial_tree(repo, "HEAD") as tree:
        assert tree.add(["shared/current/deep/x.yaml"]) == ["shared/current", "shared/real/deep/x.yaml"]
        assert tree.add(["apps/shop/envs/cm.yaml", "apps/out", "apps/loop"]) == [
            "apps/loop", "apps/out", "apps/shop/envs/cm.yaml", "shared/real/cm.yaml"]
        assert (tree.root / "apps/shop/envs/cm.yaml").read_text() == "kind: ConfigMap\n"   # resolves
        assert tree.add(["shared"]) == []
        assert tree.add(["apps/shop/envs/dev/deploy.yaml/.."]) == [                 # = apps/shop/envs/dev
            "apps/shop/envs/dev/deploy.yaml", "apps/shop/envs/dev/kustomization.yaml"]
        assert tree.add(["."]) and tree.add([""]) == []
        assert _tree_files(tree.root) == everything
        assert tree.written == frozenset(p for p, v in everything.items() if v != "dir")


def test_partial_tree_resolves_links_as_the_system_does(repo: Path) -> None:
    write(repo, "shared/real/x.yaml", "kind: ConfigMap\n")
    write(repo, "shared/real/deep/y.yaml", "kind: Secret\n")
    os.symlink("real/deep", repo / "shared/current")
    os.symlink("current/../x.yaml", repo / "shared/odd")      # .. after a link: up from real/deep
    os.symlink("odd", repo / "shared/chain")
    commit_all(repo)
    with gitrepo.partial_tree(repo, "HEAD") as tree:
        assert tree.add(["shared/chain"]) == ["shared/chain", "shared/current", "shared/odd", "shared/real/x.yaml"]
        assert (tree.root / "shared/chain").read_text() == "kind: ConfigMap\n"


def test_partial_tree_converts_line_endings_like_a_full_export(repo: Path) -> None:
    write(repo, ".gitattributes", "*.txt text eol=crlf\n")
    write(repo, "docs/.gitattributes", "*.md text eol=crlf\n")
    write(repo, "docs/a.txt", "one\ntwo\n")
    write(repo, "docs/b.md", "three\n")
    commit_all(repo)
    with gitrepo.materialize(repo, "HEAD") as full, gitrepo.materialize(
            repo, "HEAD", paths=["docs/a.txt", "docs/b.md"]) as part:
        assert (full / "docs/a.txt").read_bytes() == b"one\r\ntwo\r\n"
        for rel in ("docs/a.txt", "docs/b.md"):
            assert (part / rel).read_bytes() == (full / rel).read_bytes()
        assert not (part / ".gitattributes").exists()     # applied, not written


def test_partial_tree_of_a_subdirectory_repo_and_of_a_submodule(tmp_path: Path) -> None:
    mono = init_repo(tmp_path / "mono")
    write(mono, "deploy/gitops/apps/a/dev/cm.yaml", "kind: ConfigMap\n")
    write(mono, "src/main.go", "package main\n")
    inner = git(mono, "rev-parse", commit_all(mono))
    git(mono, "update-index", "--add", "--cacheinfo", f"160000,{inner},deploy/gitops/vendor/lib")
    git(mono, "commit", "-q", "-m", "submodule")
    gitops = mono / "deploy" / "gitops"
    with gitrepo.materialize(gitops, "HEAD") as full, gitrepo.partial_tree(gitops, "HEAD") as tree:
        assert tree.add(["apps/a/dev", "src/main.go", "vendor/lib/x"]) == ["apps/a/dev/cm.yaml"]
        assert tree.add(["vendor"]) == ["vendor/lib"]
        assert _tree_files(tree.root) == _tree_files(full) == {"apps/a/dev/cm.yaml": (b"kind: ConfigMap\n", False),
                                                                "vendor/lib": "dir"}
    with gitrepo.partial_tree(mono / "deploy" / "gitops", inner) as tree:     # only the old layout
        write(mono, "deploy/later/x.yaml", "kind: ConfigMap\n")
        commit_all(mono)
    with gitrepo.partial_tree(mono / "deploy" / "later", inner) as tree:      # did not exist then
        assert tree.add([""]) == [] and list(tree.root.iterdir()) == []


def test_partial_tree_unknown_revision_leaves_nothing(repo: Path, private_tmp: Path) -> None:
    temps = _temp_entries(private_tmp)
    with pytest.raises(GitError, match="unknown revision 'nope'"):
        with gitrepo.partial_tree(repo, "nope"):
            pass
    assert _temp_entries(private_tmp) == temps


# -- the working tree against a base -------------------------------------------------------------------

def test_changed_paths_sees_a_same_size_edit_made_in_the_second_the_index_was_written(repo: Path) -> None:
    """git trusts file stat data unless the file may have changed after the index was written
    ("racy" entries): the private copy of the index must keep the index file's modification time."""
    git(repo, "config", "core.trustctime", "false")
    p = repo / "apps/shop/envs/dev/deploy.yaml"
    past = time.time_ns() - 100 * 10**9
    os.utime(p, ns=(past, past))
    commit_all(repo)                        # the index records that modification time
    p.write_text("kind: Deploymenx\n")      # same size
    os.utime(p, ns=(past, past))
    os.utime(repo / ".git/index", ns=(past, past))
    assert gitrepo.changed_paths(repo, "HEAD", None) == {"apps/shop/envs/dev/deploy.yaml"}
    assert gitrepo.worktree_changes(repo, "HEAD").changed == {"apps/shop/envs/dev/deploy.yaml"}


def _agrees(repo: Path, base: str = "HEAD") -> gitrepo.WorktreeChanges:
    """worktree_changes, checked against changed_paths and is_dirty; the repository left as it was."""
    top = Path(git(repo, "rev-parse", "--show-toplevel"))
    before = _state(top)
    got = gitrepo.worktree_changes(repo, base)
    assert got.changed == gitrepo.changed_paths(repo, base, None)
    assert got.dirty == gitrepo.is_dirty(repo)
    assert _state(top) == before
    return got


def test_worktree_changes(repo: Path, tmp_path: Path) -> None:
    assert _agrees(repo) == gitrepo.WorktreeChanges(changed=set(), dirty=False, uncertain=set())
    write(repo, "apps/shop/envs/dev/deploy.yaml", "kind: Deployment\nspec: {}\n")
    write(repo, "apps/new/dev/cm.yaml", "kind: ConfigMap\n")
    write(repo, "build/out.yaml", "ignored dir\n")
    write(repo, "apps/shop/debug.log", "ignored file\n")
    init_repo(repo / "nested")
    write(repo, "nested/x.yaml", "kind: ConfigMap\n")
    got = _agrees(repo)
    assert got.changed == {"apps/shop/envs/dev/deploy.yaml", "apps/new/dev/cm.yaml", "nested"}
    assert got.dirty and got.uncertain == {"build", "apps/shop/debug.log"}
    git(repo, "add", "apps/new")
    git(repo, "update-index", "--assume-unchanged", "README.md")
    git(repo, "update-index", "--skip-worktree", "charts/billing/Chart.yaml")
    got = _agrees(repo, git(repo, "rev-parse", "HEAD"))
    assert got.uncertain == {"build", "apps/shop/debug.log", "README.md", "charts/billing/Chart.yaml"}
    # a staged change undone in the working tree: dirty, yet no path differs from HEAD
    git(repo, "update-index", "--no-assume-unchanged", "README.md")
    git(repo, "reset", "-q", "--hard")
    git(repo, "clean", "-qffdx")
    write(repo, "README.md", "staged\n")
    git(repo, "add", "README.md")
    write(repo, "README.md", "hello\n")
    assert _agrees(repo) == gitrepo.WorktreeChanges(changed=set(), dirty=True,
                                                    uncertain={"charts/billing/Chart.yaml"})


def test_worktree_changes_when_the_index_and_the_working_tree_both_differ(repo: Path) -> None:
    first = git(repo, "rev-parse", "HEAD")
    write(repo, "README.md", "second\n")
    commit_all(repo)
    write(repo, "README.md", "staged\n")                                  # staged, then edited again
    git(repo, "add", "README.md")
    write(repo, "README.md", "edited\n")
    write(repo, "apps/shop/envs/prod/kustomization.yaml", "staged\n")     # staged, then undone
    git(repo, "add", "apps/shop/envs/prod/kustomization.yaml")
    write(repo, "apps/shop/envs/prod/kustomization.yaml", "resources: []\n")
    git(repo, "rm", "-q", "--cached", "charts/billing/Chart.yaml")        # untracked, same content
    write(repo, "apps/shop/envs/dev/new.yaml", "kind: ConfigMap\n")
    git(repo, "add", "-N", "apps/shop/envs/dev/new.yaml")                  # intent to add
    write(repo, "apps/shop/envs/dev/deploy.yaml", "kind: StatefulSet\n")  # only in the working tree
    (repo / "apps/shop/envs/dev/kustomization.yaml").unlink()              # deleted, not staged
    expected = {"README.md", "charts/billing/Chart.yaml", "apps/shop/envs/dev/new.yaml",
                "apps/shop/envs/dev/deploy.yaml", "apps/shop/envs/dev/kustomization.yaml"}
    assert _agrees(repo).changed == expected
    assert _agrees(repo, first).changed == expected                        # base is not HEAD
    # a conflict: unmerged entries
    git(repo, "reset", "-q", "--hard")
    git(repo, "checkout", "-q", "-b", "other", first)
    write(repo, "README.md", "theirs\n")
    commit_all(repo)
    git(repo, "checkout", "-q", "main")
    subprocess.run(["git", "merge", "-q", "other"], cwd=repo, capture_output=True,
                   env={**os.environ, **GIT_ENV})
    got = _agrees(repo)
    assert "README.md" in got.uncertain and got.dirty


def test_worktree_changes_of_a_subdirectory_repo(tmp_path: Path) -> None:
    mono = init_repo(tmp_path / "mono")
    write(mono, "deploy/gitops/apps/a/dev/cm.yaml", "kind: ConfigMap\n")
    write(mono, ".gitignore", "*.tmp\n")
    commit_all(mono)
    gitops = mono / "deploy" / "gitops"
    write(mono, "src/new.go", "package main\n")
    write(mono, "src/x.tmp", "ignored outside\n")
    assert _agrees(gitops) == gitrepo.WorktreeChanges(changed=set(), dirty=False, uncertain=set())
    write(gitops, "apps/a/prod/cm.yaml", "kind: ConfigMap\n")
    write(gitops, "apps/a/dev/x.tmp", "ignored inside\n")
    assert _agrees(gitops) == gitrepo.WorktreeChanges(changed={"apps/a/prod/cm.yaml"}, dirty=True,
                                                      uncertain={"apps/a/dev/x.tmp"})


@pytest.mark.parametrize("how", ["attributes-file", "info-attributes", "autocrlf"])
def test_worktree_changes_cannot_vouch_when_git_converts_contents(repo: Path, how: str) -> None:
    if how == "attributes-file":
        write(repo, "apps/.gitattributes", "*.yaml text\n")
        commit_all(repo)
    elif how == "info-attributes":
        write(repo, ".git/info/attributes", "*.yaml text\n")
    else:
        git(repo, "config", "core.autocrlf", "input")
    assert _agrees(repo).uncertain is None

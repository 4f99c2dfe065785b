"""Git revisions for the plan engine: resolve, diff, read and export trees without touching the user's
working tree, index or HEAD.

Every call runs ``git`` with an argv list (never a shell) in the directory given as ``repo``.  That
directory may be the top of a work tree or a sub-directory of one (a GitOps repo inside a monorepo):
paths are always relative to ``repo``, and exported trees hold only what lies below it.

Exporting a revision (`materialize`) reads the commit's tree into a throw-away index file and checks
it out with ``git checkout-index`` into a temporary directory: nothing is written to ``.git`` (unlike
``git worktree add``), and files are written by git itself (several times faster than extracting
``git archive`` in Python, which also drops ``export-ignore`` files).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from prbot.errors import PrbotError

GIT_TIMEOUT = 300           # seconds; local operations only
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
# Variables a calling git (e.g. a hook) may have set that would redirect our commands elsewhere.
_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR",
                  "GIT_NAMESPACE")


class GitError(PrbotError):
    """A git operation that failed: unknown revision, not a repository, git missing."""


def resolve(repo: Path, rev: str) -> str:
    """The full commit sha `rev` names in `repo`; GitError "unknown revision 'x'" when none."""
    return _locate(repo, rev)[1]


def head_sha(repo: Path) -> str:
    """The commit checked out in `repo`."""
    return resolve(repo, "HEAD")


def merge_base(repo: Path, a: str, b: str) -> str:
    """The best common ancestor of `a` and `b` (what a pull request's diff starts from)."""
    sa, sb = resolve(repo, a), resolve(repo, b)
    out = _git(repo, "merge-base", sa, sb, ok=(0, 1))
    sha = out.stdout.decode().strip()
    if out.returncode != 0 or not sha:
        raise GitError(f"{_show(a)} and {_show(b)} have no common history in {repo}")
    return sha


def is_dirty(repo: Path) -> bool:
    """True when `repo` has uncommitted changes or untracked files that are not ignored."""
    out = _git(repo, "status", "--porcelain", "-z", "--untracked-files=normal", "--", ".")
    return bool(out.stdout.strip(b"\0"))


def changed_paths(repo: Path, base: str, head: str | None) -> set[str]:
    """Paths (relative to `repo`, POSIX) whose content differs between `base` and `head`.

    `head` None means the working tree as it is: committed, staged and unstaged changes plus
    untracked files that are not ignored (what ``git diff BASE`` and ``git status`` show).  A rename
    counts as a deletion of the old path and an addition of the new one: both are listed.
    """
    base_sha = resolve(repo, base)
    diff = ("diff", "--name-only", "-z", "--no-renames", "--relative", "--no-color", "--no-ext-diff",
            "--no-textconv", base_sha)
    if head is not None:
        return _split_z(_git(repo, *diff, resolve(repo, head)).stdout)
    # `git diff` refreshes stat data in the index it reads and writes it back, taking index.lock:
    # give it a private copy so the user's index is never locked or rewritten.
    index = _git(repo, "rev-parse", "--git-path", "index").stdout.decode(errors="surrogateescape")
    index_path = Path(repo) / index.rstrip("\n")
    with tempfile.TemporaryDirectory(prefix="prbot-index-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        if index_path.is_file():
            shutil.copyfile(index_path, env["GIT_INDEX_FILE"])
        options = ("-c", "core.splitIndex=false")
        paths = _split_z(_git(repo, *diff, env=env, options=options).stdout)
        untracked = _git(repo, "ls-files", "-z", "--others", "--exclude-standard", env=env,
                         options=options).stdout
    return paths | {p.rstrip("/") for p in _split_z(untracked)}


def read_file(repo: Path, rev: str, path: str) -> bytes | None:
    """The bytes of `path` (relative to `repo`) at `rev`; None when no such file exists there."""
    rel = _clean_path(path)
    prefix, sha = _locate(repo, rev)
    if rel is None:
        return None
    out = _git(repo, "cat-file", "--batch", input=os.fsencode(f"{sha}:{prefix}{rel}\n"))
    header, _, rest = out.stdout.partition(b"\n")
    fields = header.split()
    if len(fields) == 3 and fields[1] == b"blob":
        return rest[:int(fields[2])]
    return None                           # missing, or a directory / submodule there


@contextmanager
def materialize(repo: Path, rev: str | None) -> Iterator[Path]:
    """A directory holding `repo` at `rev`; `rev` None yields `repo` itself (the working tree).

    A revision is exported into a fresh temporary directory, removed on exit whatever happens.  The
    user's working tree, index, HEAD and ``.git`` are left untouched.
    """
    if rev is None:
        _git(repo, "rev-parse", "--git-dir")          # a clear error when repo is no repository
        yield Path(repo)
        return
    prefix, sha = _locate(repo, rev)
    scratch = Path(tempfile.mkdtemp(prefix=f"prbot-{sha[:12]}-"))
    try:
        tree = scratch / "tree"
        tree.mkdir()
        env = {"GIT_INDEX_FILE": str(scratch / "index")}
        source = f"{sha}:{prefix}" if prefix else f"{sha}^{{tree}}"
        if not prefix or _git(repo, "cat-file", "-t", source, ok=(0, 128)).stdout.strip() == b"tree":
            _git(repo, "read-tree", source, env=env)
            _git(repo, "checkout-index", "--all", "--force", env=env,
                 options=("--work-tree", str(tree), "-c", "core.fsmonitor=false"))
        # else: repo's directory does not exist at that revision, so its tree is empty
        yield tree
    finally:
        _remove_tree(scratch)


# -- internals ---------------------------------------------------------------------------------------

class _Result:
    __slots__ = ("returncode", "stdout", "stderr")

    def __init__(self, returncode: int, stdout: bytes, stderr: bytes) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _git(repo: Path, command: str, *args: str, ok: Sequence[int] = (0,), env: dict[str, str] | None = None,
         input: bytes | None = None, options: Sequence[str] = ()) -> _Result:
    """Run ``git -C repo OPTIONS COMMAND ARGS``; GitError (one line, credentials masked) unless its
    exit status is in `ok`."""
    repo = Path(repo)
    if not repo.is_dir():
        raise GitError(f"{repo} is not a directory")
    full_env = {k: v for k, v in os.environ.items() if k not in _LOCATION_VARS}
    full_env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"})
    full_env.update(env or {})
    argv = ["git", "-C", str(repo), *options, command, *args]
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, env=full_env, timeout=GIT_TIMEOUT,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise GitError("git is not installed (not found on PATH)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {command} timed out after {GIT_TIMEOUT}s in {repo}") from None
    if proc.returncode not in ok:
        raise GitError(_failure(repo, command, proc.stderr))
    return _Result(proc.returncode, proc.stdout, proc.stderr)


def _failure(repo: Path, command: str, stderr: bytes) -> str:
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    fatal = next((ln for ln in lines if ln.startswith(("fatal:", "error:"))), lines[-1] if lines else "")
    reason = _CREDENTIALS.sub(r"\1***@", fatal.split(":", 1)[1].strip() if ":" in fatal else fatal)
    if "not a git repository" in reason:
        return f"{repo} is not a git repository"
    return f"git {command} failed in {repo}: {reason or 'no message'}"[:500]


def _locate(repo: Path, rev: str) -> tuple[str, str]:
    """(path of `repo` below the top of its work tree, "" or ending in "/"; commit sha of `rev`)."""
    _check_rev(rev)
    out = _git(repo, "rev-parse", "--show-prefix", "--verify", "--quiet", "--end-of-options",
               f"{rev}^{{commit}}", ok=(0, 1))
    lines = out.stdout.decode(errors="surrogateescape").split("\n")
    if out.returncode != 0 or len(lines) < 2 or not _SHA.fullmatch(lines[1]):
        raise GitError(f"unknown revision {_show(rev)} in {repo}")
    return lines[0], lines[1]


def _check_rev(rev: str) -> None:
    if not isinstance(rev, str) or not rev.strip():
        raise GitError("empty revision")
    if rev.startswith("-") or any(c in rev for c in "\0\n\r"):
        raise GitError(f"unknown revision {_show(rev)}")


def _show(rev: str) -> str:
    clipped = rev if len(rev) <= 80 else rev[:80] + "…"
    return "'" + _CREDENTIALS.sub(r"\1***@", clipped).replace("\n", " ") + "'"


def _split_z(data: bytes) -> set[str]:
    return {os.fsdecode(p) for p in data.split(b"\0") if p}


def _clean_path(path: str) -> str | None:
    """`path` as a clean repo-relative POSIX path, or None when it cannot name a file below repo."""
    if not isinstance(path, str) or not path or "\n" in path or "\0" in path or path.startswith("/"):
        return None
    norm = posixpath.normpath(path)
    if norm in (".", "") or norm == ".." or norm.startswith("../"):
        return None
    return norm


def _remove_tree(path: Path) -> None:
    """Remove a scratch directory, even one a renderer left read-only."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        for root, dirs, _files in os.walk(path):
            for d in dirs:
                with contextlib.suppress(OSError):
                    os.chmod(os.path.join(root, d), stat.S_IRWXU, follow_symlinks=False)
        with contextlib.suppress(OSError):
            os.chmod(path, stat.S_IRWXU)
        shutil.rmtree(path, ignore_errors=True)

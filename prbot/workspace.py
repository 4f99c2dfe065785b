"""The bare mirror of one repository (`prbot.ports.Workspace`), driven by GitPython.

Each repository is kept once under ``<data dir>/mirrors/<owner>/<name>.git``: created on first use
and fetched incrementally from the `clone_url` the API gives (never a fresh clone per job).  Plans
read base and head from it without a working tree (`plan`, through `prbot.plan.make_plan`); edits
get a full tree in a temporary directory (`checkout`) and come back as one commit written with
plumbing on a private index (`commit`), pushed by `push`.

The installation token travels per command in the environment (``GIT_CONFIG_COUNT`` …: an
``http.<clone_url>.extraHeader`` that only requests to that repository carry), so it is never in
``.git/config``, ``FETCH_HEAD`` (not written), the command line (which `ps` and GitPython's
`GitCommandError` show), a log line or an error message: failures are rewritten into one line with
the token scrubbed.  Network failures are `TransientError`; refusals `ForgeError`.

One lock per mirror (a `flock` on a file beside it, re-entrant within a thread) keeps two jobs of
one process, or of two processes, from fetching or pushing the same mirror at once.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import logging
import os
import posixpath
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import git

from prbot import gitrepo
from prbot.config import Config
from prbot.errors import ForgeError, GitError, NotFound, PrbotError, TransientError
from prbot.plan import DryRunner, Plan, make_plan
from prbot.render import RenderPool

log = logging.getLogger("prbot.workspace")

GIT_TIMEOUT = 600.0              # seconds for one network command
LOCK_TIMEOUT = 600.0             # seconds to wait for another job's fetch or push of the same mirror
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_TRANSIENT = re.compile(
    r"could not resolve host|failed to connect|connection (refused|reset|timed out)|timed out|early eof|"
    r"rpc failed|remote end hung up|the requested url returned error: (5\d\d|429)|empty reply|"
    r"gnutls|ssl|unexpected disconnect|operation too slow|transfer closed|timeout", re.I)
PULL_REF_TTL = 14 * 24 * 3600.0
"""A ``refs/pull/*`` ref of a mirror no job fetched for this long is deleted (its pull request is
most likely closed); the next job that needs it fetches it again."""
_ENVIRONMENT = re.compile(
    r"no space left on device|disk quota exceeded|cannot allocate memory|out of memory|too many open files|"
    r"read-only file system|unable to create temporary file|resource temporarily unavailable", re.I)
"""Failures of this machine, not of the repository: the job is retried once space or memory is back."""
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EROFS, errno.EAGAIN}
_AUTH = re.compile(r"authentication failed|could not read (username|password)|"
                   r"the requested url returned error: 40[13]|terminal prompts disabled|invalid credentials", re.I)
_MISSING_REPO = re.compile(r"repository ('.*' )?not found|the requested url returned error: 404", re.I)
_MISSING_REF = re.compile(r"couldn't find remote ref|no such remote ref|not our ref", re.I)


@dataclass(frozen=True)
class Identity:
    name: str
    email: str


BOT = Identity("prbot[bot]", "prbot[bot]@users.noreply.github.com")


class _TokenSource(Protocol):
    full_name: str
    clone_url: str

    def git_token(self) -> str: ...


class Mirror:
    """The bare mirror of `full_name` under `data_dir`, fetched from and pushed to `clone_url` with
    the token `token()` gives (called per command, so a refreshed installation token is used)."""

    def __init__(self, data_dir: Path, full_name: str, clone_url: str, token: Callable[[], str], *,
                 author: Identity = BOT, committer: Identity | None = None, lock_timeout: float = LOCK_TIMEOUT,
                 git_timeout: float = GIT_TIMEOUT, on_auth_failure: Callable[[], None] | None = None,
                 pull_ref_ttl: float = PULL_REF_TTL) -> None:
        owner, _, name = full_name.partition("/")
        if not all(_SAFE_NAME.fullmatch(p) and p not in (".", "..") for p in (owner, name)):
            raise PrbotError(f"not a repository name: {full_name!r}")
        self.full_name = full_name
        self.clone_url = clone_url
        self.git_dir = Path(data_dir) / "mirrors" / owner / f"{name}.git"
        self._token = token
        self._on_auth_failure = on_auth_failure
        self.author = author
        self.committer = committer or author
        self.lock_timeout = lock_timeout
        self.git_timeout = git_timeout
        self.pull_ref_ttl = pull_ref_ttl
        self._lock = _MirrorLock.at(self.git_dir.with_name(f"{name}.git.lock"))

    @classmethod
    def for_forge(cls, data_dir: Path, forge: _TokenSource, **kw: Any) -> Mirror:
        """The mirror of a forge's repository, authenticated with its installation token."""
        kw.setdefault("on_auth_failure", getattr(forge, "forget_git_token", None))
        return cls(data_dir, forge.full_name, forge.clone_url, forge.git_token, **kw)

    # ------------------------------------------------------------------ locking
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this mirror's lock (re-entrant within a thread): no other job fetches or pushes it."""
        with self._lock.hold(self.lock_timeout, self.full_name):
            yield

    # ------------------------------------------------------------------ fetch
    def fetch(self, *refs: str) -> None:
        """Bring these refs (``refs/heads/main``, ``refs/pull/7/head``; a bare name is a branch; none:
        every branch) up to date from the forge.  A ref the forge does not have is not an error:
        it is removed here too, so `resolve` says it does not exist."""
        wanted = [_full_ref(r) for r in refs] or ["refs/heads/*"]
        with self.lock():
            self._ensure()
            specs = [f"+{r}:{r}" for r in wanted]
            try:
                self._network("fetch", "--no-tags", "--no-write-fetch-head", "--quiet",
                              *(["--prune"] if "refs/heads/*" in wanted else []), self.clone_url, *specs)
            except _MissingRef:
                present = self._remote_refs([r for r in wanted if "*" not in r])
                for ref in wanted:
                    if "*" not in ref and ref not in present:
                        self._delete_ref(ref)
                specs = [f"+{r}:{r}" for r in wanted if "*" in r or r in present]
                if specs:
                    self._network("fetch", "--no-tags", "--no-write-fetch-head", "--quiet",
                                  self.clone_url, *specs)
            self._prune_pull_refs([r for r in wanted if r.startswith("refs/pull/")])

    def _prune_pull_refs(self, fetched: Sequence[str]) -> list[str]:
        """Delete the ``refs/pull/*`` refs no fetch asked for in `pull_ref_ttl` seconds (closed pull
        requests keep their objects alive otherwise); the last fetch of each is kept in
        ``<mirror>/prbot-pull-refs.json``.  A pruned ref of an open pull request is fetched again."""
        record = self.git_dir / "prbot-pull-refs.json"
        try:
            seen = json.loads(record.read_text()) if record.is_file() else {}
        except ValueError:
            seen = {}
        if not isinstance(seen, dict):
            seen = {}
        now = time.time()
        for ref in fetched:
            seen[ref] = now
        present = self._local("for-each-ref", "--format=%(refname)", "refs/pull/").split()
        pruned = []
        for ref in present:
            last = seen.setdefault(ref, now)            # first seen now: an older mirror's refs age from here
            if isinstance(last, int | float) and now - last > self.pull_ref_ttl:
                self._local("update-ref", "-d", ref)
                pruned.append(ref)
        kept = {ref: seen[ref] for ref in present if ref not in pruned}
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(kept))
        os.replace(tmp, record)
        if pruned:
            log.info("pruned %d pull request refs of %s not fetched for %ds", len(pruned), self.full_name,
                     int(self.pull_ref_ttl))
        return pruned

    def _remote_refs(self, refs: Sequence[str]) -> set[str]:
        out = self._network("ls-remote", "--refs", self.clone_url, *refs)
        return {line.split("\t", 1)[1] for line in out.splitlines() if "\t" in line}

    def _delete_ref(self, ref: str) -> None:
        if self.resolve(ref) is not None:
            self._local("update-ref", "-d", ref)

    def _ensure(self) -> None:
        if (self.git_dir / "HEAD").is_file():
            return
        self.git_dir.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.git_dir.name}-", dir=self.git_dir.parent))
        try:
            env = _base_env(scratch)
            self._execute(["git", "init", "--quiet", "--bare", str(scratch)], env, None)
            for key, value in (("core.logAllRefUpdates", "false"), ("gc.autoDetach", "false"),
                               ("fetch.writeCommitGraph", "false"), ("core.hooksPath", os.devnull)):
                self._execute(["git", "--git-dir", str(scratch), "config", key, value], env, None)
            os.replace(scratch, self.git_dir)         # atomic: a half-made mirror is never seen
        finally:
            gitrepo._remove_tree(scratch)
        log.info("created the mirror of %s", self.full_name)

    # ------------------------------------------------------------------ reading
    def resolve(self, rev: str) -> str | None:
        if not (self.git_dir / "HEAD").is_file():
            return None
        try:
            return gitrepo.resolve(self.git_dir, rev)
        except GitError:
            return None

    def read_file(self, rev: str, path: str) -> bytes | None:
        sha = self.resolve(rev)
        return gitrepo.read_file(self.git_dir, sha, path) if sha else None

    @contextmanager
    def checkout(self, rev: str) -> Iterator[Path]:
        """A full tree of `rev` in a temporary directory (a private index; no worktree is
        registered), removed on exit."""
        sha = self.resolve(rev)
        if sha is None:
            raise PrbotError(f"unknown revision {rev!r} in the mirror of {self.full_name}")
        with gitrepo.materialize(self.git_dir, sha) as tree:
            yield tree

    @contextmanager
    def materialize(self, rev: str) -> Iterator[Path]:
        """A directory tree of `rev` (a sha or a ref of the mirror), removed on exit; for reading."""
        with gitrepo.materialize(self.git_dir, rev) as tree:
            yield tree

    def merge_base(self, a: str, b: str) -> str | None:
        """The best common ancestor of `a` and `b`; None when either is unknown or they share no history."""
        try:
            return gitrepo.merge_base(self.git_dir, a, b)
        except gitrepo.GitError:
            return None

    def same_tree(self, a: str, b: str) -> bool:
        """Whether commits `a` and `b` hold the same tree (the same contents)."""
        return gitrepo.tree_of(self.git_dir, a) == gitrepo.tree_of(self.git_dir, b)

    def plan(self, config: Config, base: str, head: str, *, pool: RenderPool | None = None,
             dry_runner: DryRunner | None = None) -> Plan:
        """The plan of base...head (`prbot.plan.make_plan`), read from the mirror without a working tree."""
        return make_plan(self.git_dir, config, base, head, pool=pool, dry_runner=dry_runner,
                         repository_urls=self.repository_urls)

    @property
    def repository_urls(self) -> tuple[str, ...]:
        return (self.clone_url,)

    # ------------------------------------------------------------------ writing
    def commit(self, *, parent: str, files: Mapping[str, bytes], message: str) -> str:
        """A commit whose tree is `parent`'s with `files` (repo-relative paths, bytes stored as
        given) written; its sha.  Only objects are written: no ref moves, nothing is checked out."""
        parent_sha = self.resolve(parent)
        if parent_sha is None:
            raise PrbotError(f"unknown revision {parent!r} in the mirror of {self.full_name}")
        paths = {_repo_path(p): data for p, data in files.items()}
        with tempfile.TemporaryDirectory(prefix="prbot-commit-") as scratch:
            env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
            self._local("read-tree", parent_sha, env=env)
            modes = self._modes(parent_sha, list(paths))
            blobs = []
            for i, data in enumerate(paths.values()):
                blob = Path(scratch) / f"blob-{i}"
                blob.write_bytes(data)
                blobs.append(str(blob))
            shas = self._local("hash-object", "-w", "--no-filters", "--", *blobs).split() if blobs else []
            info = b"".join(f"{modes.get(p, '100644')} {sha}\t{p}".encode() + b"\0" for p, sha in zip(paths, shas,
                                                                                                      strict=True))
            if info:
                self._local("update-index", "-z", "--index-info", env=env, input=info)
            tree = self._local("write-tree", env=env).strip()
            ident = {"GIT_AUTHOR_NAME": self.author.name, "GIT_AUTHOR_EMAIL": self.author.email,
                     "GIT_COMMITTER_NAME": self.committer.name, "GIT_COMMITTER_EMAIL": self.committer.email}
            sha = self._local("commit-tree", tree, "-p", parent_sha, "-F", "-", env=ident,
                              input=message.encode()).strip()
        log.info("committed %s on %s in %s (%d file(s))", sha[:12], parent_sha[:12], self.full_name, len(paths))
        return sha

    def _modes(self, parent: str, paths: list[str]) -> dict[str, str]:
        """The modes of `paths` in `parent` that are executable files (kept as they are)."""
        if not paths:
            return {}
        out = self._local("ls-tree", "-z", "--full-tree", parent, "--", *paths, literal=True)
        modes = {}
        for record in out.split("\0"):
            info, _, name = record.partition("\t")
            if info.startswith("100755 "):
                modes[name] = "100755"
        return modes

    def push(self, branch: str, sha: str, *, force: bool = False) -> None:
        """Point ``refs/heads/<branch>`` on the forge at `sha` (a force-push when `force`), and
        the mirror's own ref with it.  A refused push (not a fast-forward, a protected branch) is a
        `ForgeError`."""
        if not _SHA.fullmatch(sha):
            raise PrbotError(f"not a commit sha: {sha!r}")
        ref = _full_ref(branch)
        if not ref.startswith("refs/heads/"):
            raise PrbotError(f"not a branch: {branch!r}")
        with self.lock():
            self._ensure()
            spec = f"{'+' if force else ''}{sha}:{ref}"
            self._network("push", "--porcelain", "--quiet", "--no-verify", self.clone_url, spec, what=f"push {ref}")
            self._local("update-ref", ref, sha)
        log.info("pushed %s to %s of %s%s", sha[:12], ref, self.full_name, " (forced)" if force else "")

    # ------------------------------------------------------------------ running git
    def _local(self, *args: str, env: Mapping[str, str] | None = None, input: bytes | None = None,
               literal: bool = False) -> str:
        """A local git command in the mirror; GitError (one line) on failure."""
        full_env = {**_base_env(self.git_dir), **(env or {})}
        if literal:
            full_env["GIT_LITERAL_PATHSPECS"] = "1"
        command = ["git", "--git-dir", str(self.git_dir), *args]
        try:
            return self._execute(command, full_env, input)
        except git.GitCommandError as e:
            if _ENVIRONMENT.search(_stderr(e)):
                raise TransientError(f"git {args[0]} in the mirror of {self.full_name}: "
                                     f"{_last_line(_stderr(e))}", retry_after=60.0) from None
            raise GitError(f"git {args[0]} failed in the mirror of {self.full_name}: "
                                   f"{_last_line(_stderr(e))}") from None

    def _network(self, command: str, *args: str, what: str | None = None) -> str:
        """A git command that talks to the forge, with the token in the environment only."""
        token = self._token()
        env = {**_base_env(self.git_dir), **_auth_env(self.clone_url, token)}
        argv = ["git", "--git-dir", str(self.git_dir), command, *args]
        what = what or f"{command} {self.full_name}"
        log.debug("git %s %s", command, " ".join(a for a in args if a != self.clone_url))
        try:
            return self._execute(argv, env, None, timeout=self.git_timeout)
        except git.GitCommandError as e:
            stderr = _scrub(_stderr(e), token)
            rejected = [ln.split("\t")[-1] for ln in _scrub(_stdout(e), token).splitlines() if ln.startswith("!")]
            line = rejected[0].strip() if rejected else _last_line(stderr) or f"exit status {e.status}"
            if _MISSING_REF.search(stderr):
                raise _MissingRef(line) from None
            if _AUTH.search(stderr):
                if self._on_auth_failure is not None:
                    self._on_auth_failure()
                raise TransientError(f"git {what}: the forge refused the installation token ({line})",
                                     retry_after=5.0) from None
            if _MISSING_REPO.search(stderr):
                raise NotFound(f"git {what}: repository not found at {_scrub(self.clone_url, token)}") from None
            if _ENVIRONMENT.search(stderr):
                raise TransientError(f"git {what}: {line}", retry_after=60.0) from None
            if _TRANSIENT.search(stderr) or e.status in (-9, -15):
                raise TransientError(f"git {what}: {line}") from None
            if command == "push":
                raise ForgeError(f"git {what}: the forge refused the push ({line})") from None
            raise ForgeError(f"git {what}: {line}") from None

    def _execute(self, argv: list[str], env: Mapping[str, str], input: bytes | None,
                 timeout: float | None = None) -> str:
        try:
            return self._run_git(argv, env, input, timeout)
        except OSError as exc:                         # git could not even start, or stdin not be written
            if exc.errno in _ENVIRONMENT_ERRNOS:
                raise TransientError(f"git could not run for the mirror of {self.full_name}: "
                                     f"{exc.strerror or exc}", retry_after=60.0) from None
            raise

    def _run_git(self, argv: list[str], env: Mapping[str, str], input: bytes | None,
                 timeout: float | None = None) -> str:
        runner = git.Git(str(self.git_dir.parent if not self.git_dir.exists() else self.git_dir))
        if input is None:
            return str(runner.execute(argv, env=dict(env), kill_after_timeout=timeout, strip_newline_in_stdout=False,
                                      stdout_as_string=True))
        with tempfile.TemporaryFile() as stdin:
            stdin.write(input)
            stdin.seek(0)
            return str(runner.execute(argv, env=dict(env), istream=stdin, kill_after_timeout=timeout,
                                      strip_newline_in_stdout=False, stdout_as_string=True))


class _MissingRef(Exception):
    pass


def _full_ref(ref: str) -> str:
    if not isinstance(ref, str) or not ref.strip() or ref.startswith("-") or any(c in ref for c in " \t\n\0:~^?[\\"):
        raise PrbotError(f"not a ref: {ref!r}")
    if ref.startswith("refs/"):
        return ref
    return f"refs/heads/{ref}"


def _repo_path(path: str) -> str:
    """`path` as a clean repo-relative path, or PrbotError (no absolute paths, no "..", no .git)."""
    norm = posixpath.normpath(path) if isinstance(path, str) and path else ""
    parts = norm.split("/")
    if (not norm or norm.startswith("/") or norm in (".", "..") or ".." in parts or "\0" in norm or "\n" in norm
            or any(p.lower() == ".git" for p in parts)):
        raise PrbotError(f"refusing to commit the path {path!r}")
    return norm


_NEUTRALISE = ("GIT_TRACE", "GIT_TRACE_CURL", "GIT_TRACE_PACKET", "GIT_TRACE_PERFORMANCE", "GIT_TRACE_SETUP",
               "GIT_CURL_VERBOSE", "GIT_CONFIG_PARAMETERS", "GIT_NAMESPACE", "GIT_LITERAL_PATHSPECS",
               "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CEILING_DIRECTORIES")


def _base_env(git_dir: Path) -> dict[str, str]:
    """Git's environment.  GitPython starts from os.environ, so outside settings that would redirect,
    trace or prompt are overridden here (only when present, to leave the normal case alone)."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true", "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_ALLOW_PROTOCOL": "https:http:file:ssh:git", "GIT_CONFIG_COUNT": "0",
           "LC_ALL": "C", "LANGUAGE": "C"}
    env.update({key: "" for key in _NEUTRALISE if key in os.environ})
    redirect = {"GIT_DIR": str(git_dir), "GIT_COMMON_DIR": str(git_dir),
                "GIT_OBJECT_DIRECTORY": str(git_dir / "objects")}
    env.update({key: value for key, value in redirect.items() if key in os.environ})
    return env


def _auth_env(url: str, token: str) -> dict[str, str]:
    """Configuration in the environment: the token as a basic-auth header sent only to `url`, and
    no credential helper from anywhere."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {"GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": f"http.{url}.extraHeader", "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
            "GIT_CONFIG_KEY_1": "credential.helper", "GIT_CONFIG_VALUE_1": ""}


def _stderr(e: git.GitCommandError) -> str:
    value = e.stderr
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value or "")


def _stdout(e: git.GitCommandError) -> str:
    value = e.stdout
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value or "").replace("stdout: ", "").strip("\n '")


def _scrub(text: str, token: str) -> str:
    """`text` without the token, its basic-auth form or credentials in URLs."""
    if token:
        text = text.replace(token, "***")
        text = text.replace(base64.b64encode(f"x-access-token:{token}".encode()).decode(), "***")
    text = re.sub(r"(Authorization:\s*\w+\s+)\S+", r"\1***", text, flags=re.I)
    return re.sub(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@", r"\1***@", text)


def _last_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.replace("stderr: ", "").splitlines() if ln.strip()]
    lines = [ln.strip("'") for ln in lines]
    chosen = next((ln for ln in reversed(lines) if ln.startswith(("fatal:", "error:", "!", "remote:"))),
                  lines[-1] if lines else "")
    return chosen[:300]


class _MirrorLock:
    """A thread lock plus a `flock` on `path`, held while any thread of this process holds it
    (re-entrant for the holding thread)."""

    _registry: dict[str, _MirrorLock] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @classmethod
    def at(cls, path: Path) -> _MirrorLock:
        key = os.path.abspath(path)
        with cls._registry_lock:
            lock = cls._registry.get(key)
            if lock is None:
                lock = cls._registry[key] = cls(Path(key))
            return lock

    @contextmanager
    def hold(self, timeout: float, what: str) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        if not self._thread_lock.acquire(timeout=max(0.0, timeout)):
            raise TransientError(f"the mirror of {what} is busy (another job holds it)", retry_after=30.0)
        try:
            if self._depth == 0:
                self._fd = self._flock(deadline, what)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                    os.close(self._fd)
                    self._fd = None
        finally:
            self._thread_lock.release()

    def _flock(self, deadline: float, what: str) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        wait = 0.01
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise TransientError(f"the mirror of {what} is busy (another process holds it)", retry_after=30.0)
            time.sleep(wait)                  # another process is fetching: poll with a growing pause
            wait = min(wait * 2, 0.2)

"""The fake's git side: one real bare repository per fake repository, written with git plumbing and
served over smart HTTP by `git http-backend` (a CGI program, run without a shell)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ZERO = "0" * 40
_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "HOME": os.devnull}


@dataclass(frozen=True)
class Person:
    name: str
    email: str


def run(git_dir: Path, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[bytes]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    full.update(_ENV)
    full.update(env or {})
    proc = subprocess.run(["git", "--git-dir", str(git_dir), *args], input=input, capture_output=True,
                          env=full, check=False)
    if proc.returncode not in ok:
        raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc


def out(git_dir: Path, *args: str, **kw: object) -> str:
    return run(git_dir, *args, **kw).stdout.decode().strip()  # type: ignore[arg-type]


def init_bare(path: Path, default_branch: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "--bare", "-b", default_branch, str(path)], check=True,
                   capture_output=True, env={**os.environ, **_ENV})
    run(path, "config", "http.receivepack", "true")
    run(path, "config", "uploadpack.allowAnySHA1InWant", "true")
    run(path, "config", "gc.auto", "0")
    run(path, "config", "receive.hideRefs", "refs/pull")        # GitHub refuses pushes to refs/pull/*


def _identity_env(author: Person, committer: Person | None = None) -> dict[str, str]:
    committer = committer or author
    return {"GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email,
            "GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email}


def commit_files(git_dir: Path, parent: str | None, files: Mapping[str, str | bytes | None], message: str,
                 author: Person, *, source: Path | None = None, executable: frozenset[str] = frozenset()) -> str:
    """A commit whose tree is `parent`'s (or `source`'s files) with `files` written (None deletes);
    nothing but objects is written."""
    with tempfile.TemporaryDirectory(prefix="fakegh-index-") as scratch:
        env = {"GIT_INDEX_FILE": str(Path(scratch) / "index")}
        if source is not None:
            run(git_dir, "--work-tree", str(source), "add", "-A", "--force", ".", env=env)
        elif parent:
            run(git_dir, "read-tree", parent, env=env)
        info = b""
        for path, content in files.items():
            if content is None:
                info += f"0 {ZERO}\t{path}".encode() + b"\0"
                continue
            data = content.encode() if isinstance(content, str) else content
            blob = out(git_dir, "hash-object", "-w", "--stdin", input=data)
            mode = "100755" if path in executable else "100644"
            info += f"{mode} {blob}\t{path}".encode() + b"\0"
        if info:
            run(git_dir, "update-index", "-z", "--index-info", input=info, env=env)
        tree = out(git_dir, "write-tree", env=env)
    parents = ["-p", parent] if parent else []
    return out(git_dir, "commit-tree", tree, *parents, "-m", message, env=_identity_env(author))


def commit_tree(git_dir: Path, tree: str, parents: list[str], message: str, author: Person,
                committer: Person | None = None) -> str:
    args = [a for p in parents for a in ("-p", p)]
    return out(git_dir, "commit-tree", tree, *args, "-m", message, env=_identity_env(author, committer))


def refs(git_dir: Path) -> dict[str, str]:
    text = out(git_dir, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split(" ", 1) for line in text.splitlines() if line)  # type: ignore[misc]


def ref_sha(git_dir: Path, ref: str) -> str | None:
    proc = run(git_dir, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", ok=(0, 1))
    return proc.stdout.decode().strip() or None


def update_ref(git_dir: Path, ref: str, new: str | None, old: str | None = None) -> bool:
    """Point `ref` at `new` (None deletes) when it is still at `old` (when given); False when it moved."""
    if new is None:
        args = ["update-ref", "-d", ref] + ([old] if old else [])
    else:
        args = ["update-ref", ref, new] + ([old or ZERO] if old is not None else [])
    return run(git_dir, *args, ok=(0, 128, 1)).returncode == 0


def is_ancestor(git_dir: Path, a: str, b: str) -> bool:
    return run(git_dir, "merge-base", "--is-ancestor", a, b, ok=(0, 1)).returncode == 0


def merge_tree(git_dir: Path, base: str, head: str) -> str | None:
    """The tree of merging `head` into `base`, None on conflicts."""
    proc = run(git_dir, "merge-tree", "--write-tree", "--no-messages", base, head, ok=(0, 1))
    return proc.stdout.decode().split("\n", 1)[0].strip() if proc.returncode == 0 else None


def fetch_local(git_dir: Path, source: Path, src_ref: str, dst_ref: str) -> None:
    """Bring `src_ref` of another bare repository here as `dst_ref` (forced)."""
    run(git_dir, "fetch", "-q", "--no-tags", str(source), f"+{src_ref}:{dst_ref}")


def read_blob(git_dir: Path, rev: str, path: str) -> bytes | None:
    proc = run(git_dir, "cat-file", "blob", f"{rev}:{path}", ok=(0, 128))
    return proc.stdout if proc.returncode == 0 else None


def tree_entries(git_dir: Path, rev: str, path: str) -> list[tuple[str, str, str, str]] | None:
    """(mode, type, sha, name) of a directory's entries, None when `path` is no directory at `rev`."""
    spec = f"{rev}:{path}" if path else f"{rev}^{{tree}}"
    if run(git_dir, "cat-file", "-t", spec, ok=(0, 128)).stdout.strip() != b"tree":
        return None
    entries = []
    for line in out(git_dir, "ls-tree", spec).splitlines():
        info, _, name = line.partition("\t")
        mode, kind, sha = info.split()
        entries.append((mode, kind, sha, name))
    return entries


def commit_info(git_dir: Path, sha: str) -> dict[str, str]:
    fmt = "%H%n%T%n%an%n%ae%n%aI%n%cn%n%ce%n%cI%n%B"
    lines = out(git_dir, "show", "-s", f"--format={fmt}", sha).split("\n")
    keys = ("sha", "tree", "author_name", "author_email", "author_date", "committer_name", "committer_email",
            "committer_date")
    info = dict(zip(keys, lines[:8], strict=True))
    info["message"] = "\n".join(lines[8:]).strip()
    return info


def changed_files(git_dir: Path, sha: str) -> dict[str, list[str]]:
    """{"added": [...], "removed": [...], "modified": [...]} of one commit against its first parent."""
    text = out(git_dir, "diff-tree", "--root", "-r", "--no-commit-id", "--name-status", "--no-renames", sha)
    got: dict[str, list[str]] = {"added": [], "removed": [], "modified": []}
    for line in text.splitlines():
        status, _, path = line.partition("\t")
        key = {"A": "added", "D": "removed"}.get(status[:1], "modified")
        got[key].append(path)
    return got


def rev_list(git_dir: Path, new: str, *exclude: str, limit: int = 20) -> list[str]:
    """Commits reachable from `new` but not from `exclude`, oldest first (at most `limit`, the newest)."""
    args = ["rev-list", f"--max-count={limit}", new]
    if exclude:
        args += ["--not", *exclude]
    return list(reversed(out(git_dir, *args).split()))


def http_backend(project_root: Path, path_info: str, method: str, query: str, body: bytes,
                 headers: Mapping[str, str], remote_user: str | None) -> tuple[int, list[tuple[str, str]], bytes]:
    """Run `git http-backend` for one request; (status, headers, body)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(_ENV)
    env.update({
        "GIT_PROJECT_ROOT": str(project_root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path_info,
        "REQUEST_METHOD": method, "QUERY_STRING": query, "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": headers.get("Content-Type", ""), "REMOTE_ADDR": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1",
    })
    if remote_user:
        env["REMOTE_USER"] = remote_user
    for name in ("Content-Encoding", "Git-Protocol", "Accept"):
        if headers.get(name):
            env["HTTP_" + name.upper().replace("-", "_")] = headers[name]
    proc = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env, check=False)
    raw = proc.stdout
    sep = raw.find(b"\r\n\r\n")
    cut = 4
    if sep < 0 or (raw.find(b"\n\n") >= 0 and raw.find(b"\n\n") < sep):
        sep, cut = raw.find(b"\n\n"), 2
    if sep < 0:
        message = proc.stderr.decode(errors="replace").strip() or "http-backend failed"
        return 500, [("Content-Type", "text/plain")], message.encode()
    status = 200
    out_headers = []
    for line in raw[:sep].decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        elif name:
            out_headers.append((name.strip(), value.strip()))
    return status, out_headers, raw[sep + cut:]

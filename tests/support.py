"""Shared test helpers: real git repositories on disk and the example GitOps repository."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
EXAMPLE = PROJECT / "examples" / "gitops"


def _tools_dir() -> Path:
    """Where the real kubectl/helm are: what prbot itself would use ($PRBOT_TOOLS_DIR, the pinned
    tools of `prbot tools install`), else an older checkout's .tools/bin."""
    from prbot.tools import tool_dirs

    found = tool_dirs()
    return Path(found[0]) if found else PROJECT / ".tools" / "bin"


TOOLS = _tools_dir()

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` and return its stdout (stripped)."""
    out = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True,
                         env={**os.environ, **GIT_ENV})
    return out.stdout.strip()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "Test")
    git(path, "config", "commit.gpgsign", "false")
    return path


def commit_all(repo: Path, message: str = "change") -> str:
    """Stage everything and commit; returns the new HEAD sha."""
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def write(repo: Path, rel: str, text: str) -> Path:
    p = repo / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def copy_example(dest: Path) -> Path:
    """A git repository holding a copy of examples/gitops, with one commit on main."""
    shutil.copytree(EXAMPLE, dest)
    init_repo(dest)
    commit_all(dest, "initial")
    return dest


def snapshot_files(root: Path) -> dict[str, bytes]:
    """Every file below root (outside .git) with its bytes, to prove nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and ".git" not in p.relative_to(root).parts}


@contextmanager
def recording_server(body: bytes) -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server answering every GET with `body` and recording each request path:
    (`http://127.0.0.1:PORT`, the list of paths asked for).  Attack tests assert it stays empty."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()

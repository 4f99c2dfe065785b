"""Remote inputs: which remote bases a plan may fetch, and fetching them safely.

A target whose closure reads something remote (a kustomize remote base or file, a Helm chart from a
repository) is rendered only when every such URL starts with a prefix in `render.remote` of
`.prbot.yml` — read from the default branch, never from the pull request (`allowed`).  Otherwise it
is *skipped*: neutral, with a note, and affected only when its local inputs change.

Allowed remotes are fetched by `Remotes`, never by kustomize or Helm (they run without a network):
- only the host of the URL, only `https` (the URL may carry no credentials, `..` or `%`-escapes);
- the host's DNS answers must all be public addresses — never loopback, link-local, private,
  multicast or reserved ones — and the connection is pinned to the address checked (curl's
  `--resolve` for git, the address itself for HTTP), so a DNS answer cannot change in between;
- redirects are not followed; sizes and times are bounded by the render limits;
- git runs without hooks, submodules, credentials, system or user configuration, and the fetched
  tree's own closure must stay inside it (symbolic links included);
- fetched trees are cached on disk by URL and *pinned* ref (a commit sha or a version tag);
  an unpinned ref (a branch, or none) is fetched again by every plan.

`PRBOT_REMOTE_STANDINS` (operator only, never a repository's file) maps URL prefixes to stand-in
locations, e.g. an internal mirror or a test server:
`https://github.com/=http://mirror.internal:8080/github/` — a stand-in is trusted as given (it may
be plain HTTP on a private address).
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import logging
import os
import posixpath
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prbot.errors import PrbotError, RemoteError
from prbot.limits import Limits, format_size
from prbot.paths import remote_cache_dir

log = logging.getLogger("prbot.remote")

_PINNED = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64}|v?\d+(?:\.\d+)+(?:[-+][0-9A-Za-z.-]+)?)$")
_FILE_SUFFIXES = (".yaml", ".yml", ".json")
_CHART = re.compile(r"^(?P<repo>\S+)/(?P<name>[^/\s]+) \((?:version (?P<version>[^)]+)|chart)\)$")
_GIT_TIMEOUT_FLOOR = 30.0


# --------------------------------------------------------------------------------------------
# What a reference is, and whether it is allowed
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RemoteRef:
    """A remote reference as kustomize reads it: a git repository (+ subdirectory and ref) or a file."""

    text: str                  # as written in the kustomization
    url: str                   # canonical: scheme://host/path[?query], what `render.remote` matches
    kind: str                  # "git" | "file" | "chart" | "unsupported"
    repo: str = ""             # git: the repository URL; chart: the chart repository
    path: str = ""             # git: the directory inside the repository; chart: its name
    ref: str = ""              # git: the ref (tag, branch, sha), "" for the default branch; chart: version
    why: str = ""              # unsupported: why not

    @property
    def pinned(self) -> bool:
        return self.kind == "file" or bool(_PINNED.match(self.ref))


def parse_ref(text: str) -> RemoteRef:
    """What kustomize would fetch for a reference found by a closure."""
    s = text.strip()
    if s.startswith("git::"):
        s = s[len("git::"):]
    if s.startswith(("git@", "ssh://", "ssh:")) or re.match(r"^[\w.-]+@[\w.-]+:", s):
        return RemoteRef(text, s, "unsupported", why="ssh remotes are not fetched (use https)")
    if "://" not in s:
        s = f"https://{s}"
    scheme = s.split("://", 1)[0].lower()
    if scheme == "oci" and not _CHART.match(s):
        return RemoteRef(text, s, "unsupported", why="OCI charts are not fetched yet")
    chart = _CHART.match(s)
    if chart:                       # a chart kustomize would pull: "REPO/NAME (version V)" or "(chart)"
        url = f"{chart['repo']}/{chart['name']}"
        if scheme == "oci":
            return RemoteRef(text, url, "unsupported", why="OCI charts are not fetched yet")
        return RemoteRef(text, url, "chart", repo=chart["repo"], path=chart["name"], ref=chart["version"] or "")
    if scheme not in ("https", "http"):
        return RemoteRef(text, s, "unsupported", why=f"{scheme}:// is not fetched")
    base, _, query = s.partition("?")
    params = urllib.parse.parse_qs(query)
    ref = (params.get("ref") or params.get("version") or [""])[0]
    rest = base.split("://", 1)[1]
    if "//" in rest:
        repo_part, sub = rest.split("//", 1)
    elif ".git/" in rest or rest.endswith(".git"):
        end = rest.index(".git") + len(".git")
        repo_part, sub = rest[:end], rest[end:]
    elif rest.lower().endswith(_FILE_SUFFIXES) and not ref:
        return RemoteRef(text, s, "file")
    else:
        parts = rest.split("/")
        repo_part, sub = "/".join(parts[:3]), "/".join(parts[3:])
    return RemoteRef(text, s, "git", repo=f"{scheme}://{repo_part.rstrip('/')}", path=sub.strip("/"), ref=ref)


def _clean_url(url: str) -> str | None:
    """`url` with its path normalised, or None when it hides something (credentials, `..`, escapes)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password or "%" in url or "\\" in url or not parts.hostname:
        return None
    segments = parts.path.split("/")
    if ".." in segments or "." in segments:
        return None
    return url


def allowed(text: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the remote reference `text` starts with one of the `render.remote` prefixes (whole
    path segments: `https://github.com/acme` does not allow `https://github.com/acme-evil/`)."""
    url = _clean_url(parse_ref(text).url)
    if url is None:
        return False
    for prefix in prefixes:
        if url == prefix or (url.startswith(prefix) and (prefix.endswith("/") or url[len(prefix)] in "/?#")):
            return True
    return False


def standins(environ: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """`PRBOT_REMOTE_STANDINS`: (URL prefix, stand-in prefix) pairs, longest prefix first."""
    raw = (os.environ if environ is None else environ).get("PRBOT_REMOTE_STANDINS", "")
    pairs = []
    for item in re.split(r"[\s,]+", raw.strip()):
        if not item:
            continue
        prefix, sep, target = item.partition("=")
        if not sep or "://" not in prefix or "://" not in target:
            raise PrbotError(f"PRBOT_REMOTE_STANDINS: {item!r} is not URL-PREFIX=STAND-IN-PREFIX")
        pairs.append((prefix, target))
    return sorted(pairs, key=lambda p: len(p[0]), reverse=True)


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------

def public_address(host: str, port: int) -> str:
    """The address to connect to for `host`: every DNS answer must be a public address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise RemoteError(f"{host}: cannot be resolved ({exc.strerror or exc})") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local \
                or ip.is_private or ip.is_unspecified:
            raise RemoteError(f"{host} resolves to {address}, which is not a public address: refused")
    if not addresses:
        raise RemoteError(f"{host}: no address")
    return addresses[0]


# --------------------------------------------------------------------------------------------
# Fetching
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fetched:
    """A fetched remote: a local directory (git: the checkout; file: a directory holding `file`)."""

    ref: RemoteRef
    root: Path                 # checkout (git) or the directory of the file
    ident: str                 # what the content is: "git:<commit>" / "sha256:<hex>"
    file: str = ""             # file: its name inside `root`


@dataclass
class Remotes:
    """Fetches the remote references a plan may render (see the module doc).  One per plan: an
    unpinned ref is fetched once per `Remotes`; pinned ones are kept in `cache_dir`."""

    prefixes: tuple[str, ...]
    limits: Limits = field(default_factory=Limits.from_env)
    cache_dir: Path | None = None
    _memo: dict[str, Fetched | RemoteError] = field(default_factory=dict)
    _scratch: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.cache_dir is None:
            self.cache_dir = remote_cache_dir()
        self._standins = standins()

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __enter__(self) -> Remotes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def allowed(self, text: str) -> bool:
        return allowed(text, self.prefixes)

    def fetch(self, text: str) -> Fetched:
        """The local copy of an allowed remote reference; RemoteError when refused or failing."""
        ref = parse_ref(text)
        if not self.allowed(text):
            raise RemoteError(f"remote {ref.url} is not allowed by render.remote")
        if ref.kind == "unsupported":
            raise RemoteError(f"remote {ref.url}: {ref.why}")
        key = f"{ref.kind}\0{ref.repo or ref.url}\0{ref.ref}"
        with self._lock:
            got = self._memo.get(key)
            if got is None:
                try:
                    fetch = {"git": self._fetch_git, "chart": self._fetch_chart}.get(ref.kind, self._fetch_file)
                    got = fetch(ref)
                except RemoteError as exc:
                    got = exc
                self._memo[key] = got
        if isinstance(got, RemoteError):
            raise got
        return got

    # ---------------------------------------------------------------- where and how to connect
    def _target(self, url: str) -> tuple[str, bool]:
        """(URL to connect to, whether it is an operator's stand-in)."""
        for prefix, standin in self._standins:
            if url.startswith(prefix):
                return standin + url[len(prefix):], True
        return url, False

    def _connect(self, url: str) -> tuple[urllib.parse.SplitResult, str | None, bool]:
        """(parsed URL, address to pin or None for a stand-in, stand-in?)."""
        target, standin = self._target(url)
        parts = urllib.parse.urlsplit(target)
        if not parts.hostname:
            raise RemoteError(f"{url}: no host")
        if standin:
            return parts, None, True
        if parts.scheme != "https":
            raise RemoteError(f"{url}: only https:// is fetched")
        port = parts.port or 443
        return parts, public_address(parts.hostname, port), False

    def _store(self, ref: RemoteRef, content_key: str) -> Path:
        """Where a fetched remote lives: the disk cache when its ref is pinned, else this plan's."""
        digest = hashlib.sha256(content_key.encode()).hexdigest()[:32]
        if ref.pinned:
            assert self.cache_dir is not None
            return self.cache_dir / digest
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="prbot-remote-"))
        return self._scratch / digest

    # ---------------------------------------------------------------- files (HTTP GET)
    def _fetch_file(self, ref: RemoteRef) -> Fetched:
        store = self._store(ref, f"file\0{ref.url}")
        name = posixpath.basename(urllib.parse.urlsplit(ref.url).path) or "resource.yaml"
        done = store / "IDENT"
        if done.is_file() and (store / "content" / name).is_file():
            return Fetched(ref, store / "content", done.read_text().strip(), name)
        body = self._get(ref.url)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_ensure(store.parent)))
        (tmp / "content").mkdir()
        (tmp / "content" / name).write_bytes(body)
        ident = "sha256:" + hashlib.sha256(body).hexdigest()
        (tmp / "IDENT").write_text(ident)
        _install(tmp, store)
        log.info("fetched %s (%s)", ref.url, format_size(len(body)))
        return Fetched(ref, store / "content", ident, name)

    def _get(self, url: str) -> bytes:
        import urllib3

        parts, address, _ = self._connect(url)
        host = parts.hostname or ""
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        timeout = urllib3.Timeout(connect=10.0, read=max(self.limits.timeout, 10.0))
        pool: Any
        if parts.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(address or host, parts.port or 443, timeout=timeout, retries=False,
                                               server_hostname=host, assert_hostname=host)
        else:
            pool = urllib3.HTTPConnectionPool(address or host, parts.port or 80, timeout=timeout, retries=False)
        try:
            response = pool.urlopen("GET", path, headers={"Host": parts.netloc, "User-Agent": "prbot"},
                                    redirect=False, preload_content=False)
            try:
                if 300 <= response.status < 400:
                    raise RemoteError(f"{url}: redirected ({response.status}); redirects are not followed")
                if response.status != 200:
                    raise RemoteError(f"{url}: HTTP {response.status}")
                chunks, size = [], 0
                for chunk in response.stream(1 << 16):
                    size += len(chunk)
                    if size > self.limits.output:
                        raise RemoteError(f"{url}: larger than {self.limits.describe('output')}")
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            raise RemoteError(f"{url}: {type(exc).__name__}") from exc
        finally:
            pool.close()

    # ---------------------------------------------------------------- Helm chart repositories
    def _fetch_chart(self, ref: RemoteRef) -> Fetched:
        """The chart archive the repository's index names for this name and version (the newest
        when no version is given), its digest checked, unpacked without links or devices."""
        from prbot.yamlio import YAML_ERRORS, load_yaml

        store = self._store(ref, f"chart\0{ref.repo}\0{ref.path}\0{ref.ref}")
        done = store / "IDENT"
        if done.is_file() and (store / "tree" / ref.path).is_dir():
            return Fetched(ref, store / "tree" / ref.path, done.read_text().strip())
        index_url = ref.repo.rstrip("/") + "/index.yaml"
        try:
            index = load_yaml(self._get(index_url).decode("utf-8"))
        except (*YAML_ERRORS, UnicodeDecodeError) as exc:  # type: ignore[misc]
            raise RemoteError(f"{index_url}: not a chart repository index ({exc})") from exc
        entries = index.get("entries", {}).get(ref.path) if isinstance(index, dict) and \
            isinstance(index.get("entries"), dict) else None
        chosen = [e for e in (entries or [])
                  if isinstance(e, dict) and (not ref.ref or str(e.get("version")) == ref.ref)]
        if not chosen or not isinstance(chosen[0].get("urls"), list) or not chosen[0]["urls"]:
            raise RemoteError(f"{index_url}: no chart {ref.path}" + (f" version {ref.ref}" if ref.ref else ""))
        entry = chosen[0]
        archive_url = urllib.parse.urljoin(ref.repo.rstrip("/") + "/", str(entry["urls"][0]))
        if not self.allowed(archive_url):
            raise RemoteError(f"chart {ref.path}: its archive {archive_url} is not allowed by render.remote")
        data = self._get(archive_url)
        digest = hashlib.sha256(data).hexdigest()
        if entry.get("digest") and str(entry["digest"]) != digest:
            raise RemoteError(f"{archive_url}: its sha256 is not the digest the index gives")
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_ensure(store.parent)))
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
                members = archive.getmembers()
                if any(m.name.split("/")[0] != ref.path or m.issym() or m.islnk() for m in members):
                    raise RemoteError(f"{archive_url}: not a chart archive of {ref.path} (or it holds links)")
                archive.extractall(tmp / "tree", filter="data")
            (tmp / "IDENT").write_text(f"chart:sha256:{digest}")
            _install(tmp, store)
        except (tarfile.TarError, OSError) as exc:
            raise RemoteError(f"{archive_url}: cannot be unpacked ({exc})") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("fetched chart %s %s from %s", ref.path, entry.get("version"), ref.repo)
        return Fetched(ref, store / "tree" / ref.path, f"chart:sha256:{digest}")

    # ---------------------------------------------------------------- git repositories
    def _fetch_git(self, ref: RemoteRef) -> Fetched:
        store = self._store(ref, f"git\0{ref.repo}\0{ref.ref}")
        done = store / "IDENT"
        if done.is_file() and (store / "tree").is_dir():
            return Fetched(ref, store / "tree", done.read_text().strip())
        parts, address, standin = self._connect(ref.repo)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_ensure(store.parent)))
        try:
            tree = tmp / "tree"
            tree.mkdir()
            url = urllib.parse.urlunsplit(parts)
            options = ["-c", "protocol.allow=never", "-c", f"protocol.{parts.scheme}.allow=always",
                       "-c", "http.followRedirects=false", "-c", "core.hooksPath=/dev/null",
                       "-c", "submodule.recurse=false", "-c", "credential.helper=", "-c", "core.symlinks=true",
                       "-c", "advice.detachedHead=false", "-c", "init.defaultBranch=main"]
            if address is not None:
                host_address = f"[{address}]" if ":" in address else address
                options += ["-c", f"http.curloptResolve={parts.hostname}:{parts.port or 443}:{host_address}"]
            self._git(tree, ["init", "-q"], options)
            wanted = ref.ref or "HEAD"
            try:
                self._git(tree, ["fetch", "-q", "--depth", "1", "--no-tags", url, wanted], options)
            except RemoteError:                       # a server without shallow fetches (dumb HTTP)
                self._git(tree, ["fetch", "-q", "--no-tags", url, wanted], options)
            self._git(tree, ["checkout", "-q", "--detach", "FETCH_HEAD"], options)
            commit = self._git(tree, ["rev-parse", "HEAD"], options).strip()
            shutil.rmtree(tree / ".git")
            size = _tree_size(tree)
            if size > self.limits.cache_size // 4:
                raise RemoteError(f"{ref.repo}: the checkout is {format_size(size)}, too large to render")
            (tmp / "IDENT").write_text(f"git:{commit}")
            _install(tmp, store)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("fetched %s at %s%s", ref.repo, ref.ref or "its default branch",
                 " (through a stand-in)" if standin else "")
        return Fetched(ref, store / "tree", (store / "IDENT").read_text().strip())

    def _git(self, cwd: Path, args: list[str], options: list[str]) -> str:
        git = shutil.which("git") or "git"
        home = cwd.parent
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false",
               "GIT_LFS_SKIP_SMUDGE": "1", "LANG": "C.UTF-8"}
        try:
            proc = subprocess.run([git, *options, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=max(self.limits.timeout, _GIT_TIMEOUT_FLOOR))
        except subprocess.TimeoutExpired as exc:
            raise RemoteError(f"git {args[0]} timed out after {exc.timeout:g}s") from exc
        except OSError as exc:
            raise RemoteError(f"git: {exc.strerror or exc}") from exc
        if proc.returncode != 0:
            message = " ".join(proc.stderr.decode("utf-8", "replace").split())[:300]
            raise RemoteError(f"git {args[0]}: {message or f'exit {proc.returncode}'}")
        return proc.stdout.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# What a render needs of a fetched remote: the files its closure reads, and its own remotes
# --------------------------------------------------------------------------------------------

MAX_NESTING = 4


@dataclass(frozen=True)
class Vendored:
    """A fetched remote ready to be copied next to a render: the files its own closure reads
    (relative to `fetched.root`) and the remotes it reads in turn."""

    fetched: Fetched
    files: frozenset[str]
    nested: dict[str, Vendored]

    @property
    def ident(self) -> str:
        """Everything the render depends on: this content and, in order, what it reads remotely."""
        inner = ",".join(f"{k}={v.ident}" for k, v in sorted(self.nested.items()))
        return f"{self.fetched.ident}[{inner}]" if inner else self.fetched.ident

    @property
    def slug(self) -> str:
        return hashlib.sha256(f"{self.fetched.ref.url}\0{self.ident}".encode()).hexdigest()[:16]


def vendor(remotes: Remotes, text: str, depth: int = 0) -> Vendored:
    """Fetch `text` and what its closure reads remotely; RemoteError when anything is refused."""
    from prbot.model import Target
    from prbot.renderers.closure import ClosureCache

    if depth >= MAX_NESTING:
        raise RemoteError(f"remote {text}: remote bases nested more than {MAX_NESTING} deep")
    fetched = remotes.fetch(text)
    if fetched.ref.kind == "file":
        return Vendored(fetched, frozenset({fetched.file}), {})
    if fetched.ref.kind == "chart":
        files = {os.path.relpath(os.path.join(d, n), fetched.root).replace(os.sep, "/")
                 for d, _, names in os.walk(fetched.root) for n in names
                 if not os.path.islink(os.path.join(d, n))}
        return Vendored(fetched, frozenset(files), {})
    root = fetched.root
    sub = fetched.ref.path
    cache = ClosureCache()
    if cache.kind(str(root), sub) != "dir":
        raise RemoteError(f"remote {fetched.ref.url}: {sub or '.'} is not a directory of {fetched.ref.repo}")
    closure = cache.closure(root, Target("remote", "remote", sub, "kustomize"))
    if closure.outside:
        raise RemoteError(f"remote {fetched.ref.url}: refused: {closure.outside[0]}")
    nested = {ref: vendor(remotes, ref, depth + 1) for ref in closure.remote}
    return Vendored(fetched, closure.files, nested)


def _ensure(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _install(tmp: Path, store: Path) -> None:
    """Move a finished fetch into place (another plan may have done it meanwhile: keep theirs)."""
    try:
        if store.exists() and not (store / "IDENT").is_file():
            shutil.rmtree(store, ignore_errors=True)        # a half-written one
        os.replace(tmp, store)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (store / "IDENT").is_file():
            raise


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total

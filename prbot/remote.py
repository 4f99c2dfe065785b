"""Remote inputs: which remote bases a plan may fetch, and fetching them safely.

A target whose closure reads something remote (a kustomize remote base or file, a Helm chart from a
repository) is rendered only when every such URL starts with a prefix in `render.remote` of
`.prbot.yml` — read from the default branch, never from the pull request (`allowed`).  Otherwise it
is *skipped* — not rendered, which fails the check with the way out (allow the prefix, or vendor the
input) — and affected only when its local inputs change.

Allowed remotes are fetched by `Remotes`, never by kustomize or Helm (they run without a network):
git bases, files, and Helm charts from chart repositories (`index.yaml`) and OCI registries
(`oci://…`, through the `oras` client held to these rules: see `_OciRegistry`):
- only the host of the URL, only `https` (the URL may carry no credentials, `..` or `%`-escapes);
- the host's DNS answers must all be public addresses — never loopback, link-local, private,
  multicast or reserved ones — and the connection is pinned to the address checked (curl's
  `--resolve` for git, the address itself for HTTP), so a DNS answer cannot change in between;
- redirects are not followed;
- one fetch (a git base, a file, a chart's index and archive) takes at most `PRBOT_REMOTE_TIMEOUT`
  in all, and never runs past the plan's deadline (`PRBOT_PLAN_BUDGET`); what it downloads and
  unpacks (a chart archive, a git checkout) is bounded in bytes (`PRBOT_REMOTE_SIZE`, and a quarter
  of `PRBOT_CACHE_SIZE`) and in files (`PRBOT_REMOTE_FILES`), checked while unpacking;
- git runs without hooks, submodules, credentials, system or user configuration, and the fetched
  tree's own closure must stay inside it (symbolic links included);
- fetched remotes are cached on disk only when *pinned* — a git ref or chart version that is a
  commit sha or a version tag, a file whose path holds one and whose URL has no query — keyed by
  what names the content (repository and ref; a file's whole URL), and counted with the render
  cache against `PRBOT_CACHE_SIZE`, least recently used evicted (`prbot.diskcache`); anything
  unpinned (a branch, no ref, a file on a branch or with a query) is fetched again by every plan
  into a scratch directory removed with the plan, and what one plan keeps there is bounded by
  `PRBOT_CACHE_SIZE` too.

`PRBOT_REMOTE_STANDINS` (operator only, never a repository's file) maps URL prefixes to stand-in
locations, e.g. an internal mirror or a test server:
`https://github.com/=http://mirror.internal:8080/github/` — a stand-in is trusted as given (it may
be plain HTTP on a private address; an `oci://` stand-in is spoken to in plain HTTP, an `https://`
one over TLS).  `PRBOT_REMOTE_CA` (a PEM file) is trusted for `https://` stand-ins only: a mirror
with its own CA; real hosts are checked against the system's trust store alone.

`Remotes.chart_dir(text)` is the one call for a fetched chart's directory, from the reference text
`chart_ref` makes (`REPO/NAME (version V)`, `oci://HOST/PATH/NAME:V` or `@sha256:…`).
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import ipaddress
import json
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
import time
import urllib.parse
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prbot.diskcache import IDENT_FILE, SIZE_FILE, DiskUsage, tree_stats
from prbot.errors import PrbotError, RemoteError
from prbot.limits import Limits, format_size
from prbot.paths import remote_cache_dir

log = logging.getLogger("prbot.remote")

_PINNED = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64}|v?\d+(?:\.\d+)+(?:[-+][0-9A-Za-z.-]+)?)$")
_FILE_SUFFIXES = (".yaml", ".yml", ".json")
_CHART = re.compile(r"^(?P<repo>\S+)/(?P<name>[^/\s]+) \((?:version (?P<version>[^)]+)|chart)\)$")
_CHART_SUFFIX = re.compile(r" \((?:version (?P<version>[^)]+)|chart)\)$")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CONNECT_TIMEOUT = 10.0
_SMALL_BODY = 4 << 20          # a manifest, a tag list, a token: never more than this
HELM_CHART_LAYER = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


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
                               # or version range ("" for the newest)
    why: str = ""              # unsupported: why not
    digest: str = ""           # OCI chart: the manifest digest it is pinned to ("sha256:<hex>"), if any

    @property
    def pinned(self) -> bool:
        """Whether what it names cannot change: a git ref or chart version that is a commit sha or a
        version tag, or a file whose path holds one (`…/raw/<sha>/x.yaml`) and whose URL has no query.
        A branch, no ref, or a file on a branch is not: it is fetched again by every plan."""
        if self.kind == "file":
            parts = urllib.parse.urlsplit(self.url)
            return not parts.query and not parts.fragment and \
                any(_PINNED.match(segment) for segment in parts.path.split("/")[:-1])
        return bool(self.digest) or bool(_PINNED.match(self.ref))

    @property
    def oci(self) -> bool:
        """A chart in an OCI registry (`oci://HOST/PATH/NAME`)."""
        return self.kind == "chart" and self.repo.startswith("oci://")


def chart_ref(repo: str, name: str = "", version: str = "", digest: str = "") -> str:
    """The reference text of a chart that `parse_ref` and `Remotes.chart_dir` read: `REPO/NAME
    (version V)` (`(chart)`: the newest), REPO a chart repository (`https://…`) or an OCI
    repository path (`oci://HOST/PATH`; with `name` empty, REPO is the chart's whole OCI
    address).  `version` may be a range (`^1.2`, `>=1.0.0 <2.0.0`); `digest` (`sha256:…`) pins an
    OCI chart to its manifest."""
    url = repo.rstrip("/") + (f"/{name}" if name else "")
    if digest:
        url += f"@{digest}"
    return f"{url} (version {version})" if version else f"{url} (chart)"


def _parse_oci(text: str, s: str) -> RemoteRef:
    """`oci://HOST/PATH/NAME` with `:TAG`, `@sha256:…` or a ` (version V)` / ` (chart)` suffix."""
    version = ""
    suffix = _CHART_SUFFIX.search(s)
    if suffix:
        version = (suffix["version"] or "").strip()
        s = s[:suffix.start()]
    rest = s[len("oci://"):]
    host, _, path = rest.partition("/")
    digest = ""
    if "@" in path:
        path, _, digest = path.rpartition("@")
    head, _, name = path.rpartition("/")
    if ":" in name:
        name, _, tag = name.partition(":")
        if version and tag and tag != version:
            return RemoteRef(text, s, "unsupported", why=f"two versions given ({tag} and {version})")
        version = version or tag
    if not host or not name or any(c.isspace() for c in s):
        return RemoteRef(text, s, "unsupported", why="not an OCI chart address (oci://HOST/PATH/NAME)")
    if digest and not _DIGEST.fullmatch(digest):
        return RemoteRef(text, s, "unsupported", why="a digest must be sha256:<64 hex digits>")
    repo = f"oci://{host}/{head}" if head else f"oci://{host}"
    return RemoteRef(text, f"{repo}/{name}", "chart", repo=repo, path=name, ref=version, digest=digest)


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
    if scheme == "oci":
        return _parse_oci(text, s)
    chart = _CHART.match(s)
    if chart:                       # a chart kustomize would pull: "REPO/NAME (version V)" or "(chart)"
        url = f"{chart['repo']}/{chart['name']}"
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


# --------------------------------------------------------------------------------------------
# Chart versions: an exact version, or a range picked from the versions a repository lists
# --------------------------------------------------------------------------------------------

_EXACT = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def exact_version(text: str) -> bool:
    """Whether a chart version names one version (`1.2.3`), not a range (`^1.2`, `1.x`, `>=1 <2`)."""
    return bool(_EXACT.match(text.strip()))


def pick_version(versions: list[str], constraint: str) -> str | None:
    """The highest of `versions` in the range `constraint` ("" or "*": the newest release); the
    ranges are read by `version_matches` below."""
    fits = [(v, _semver(v)) for v in versions if version_matches(v, constraint or "*")]
    best = max(fits, key=lambda vs: _order(vs[1]) if vs[1] else (0, 0, 0, 0, ()), default=None)
    return best[0] if best else None


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


@dataclass(frozen=True)
class _Clock:
    """When one fetch must be done (time.monotonic()), and which limit says so."""

    until: float
    limit: str                 # "remote_timeout" | "plan_budget"

    def left(self) -> float:
        return self.until - time.monotonic()


@dataclass
class Remotes:
    """Fetches the remote references a plan may render (see the module doc).  One per plan: an
    unpinned ref is fetched once per `Remotes`; pinned ones are kept in `cache_dir`, the `remote`
    directory of the render cache, and counted with it."""

    prefixes: tuple[str, ...]
    limits: Limits = field(default_factory=Limits.from_env)
    cache_dir: Path | None = None
    _memo: dict[str, Fetched | RemoteError] = field(default_factory=dict)
    _scratch: Path | None = None
    _plan_bytes: int = 0
    _held: set[Path] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.cache_dir is None:
            self.cache_dir = remote_cache_dir()
        self._standins = standins()
        self._ca = os.environ.get("PRBOT_REMOTE_CA") or None      # trusted for https stand-ins only
        if self._ca and not os.path.isfile(self._ca):
            raise PrbotError(f"PRBOT_REMOTE_CA: {self._ca} is not a file")
        self._usage = DiskUsage.of(self.cache_dir.parent)

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        for store in self._held:
            self._usage.release(store)
        self._held.clear()

    def __enter__(self) -> Remotes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def allowed(self, text: str) -> bool:
        return allowed(text, self.prefixes)

    def fetch(self, text: str, *, deadline: float | None = None) -> Fetched:
        """The local copy of an allowed remote reference; RemoteError when refused or failing.
        `deadline` (time.monotonic()) is when the plan's budget runs out: no fetch runs past it."""
        ref = parse_ref(text)
        if _shown(ref.url) != ref.url:
            raise RemoteError(f"remote {_shown(ref.url)}: refused: its address carries a user name, password, "
                              "`..` or %-escape")
        if not self.allowed(text):
            raise RemoteError(f"remote {ref.url} is not allowed by render.remote")
        if ref.kind == "unsupported":
            raise RemoteError(f"remote {ref.url}: {ref.why}")
        key = f"{ref.kind}\0{ref.repo or ref.url}\0{ref.path}\0{ref.ref}\0{ref.digest}"
        with self._lock:
            got = self._memo.get(key)
            if got is None:
                try:
                    fetch = {"git": self._fetch_git, "chart": self._fetch_oci if ref.oci else self._fetch_chart
                             }.get(ref.kind, self._fetch_file)
                    got = fetch(ref, self._clock(deadline))
                except RemoteError as exc:
                    got = exc
                self._memo[key] = got
        if isinstance(got, RemoteError):
            raise got
        return got

    def chart_dir(self, text: str, *, deadline: float | None = None) -> Path:
        """The directory of a fetched chart (holding its `Chart.yaml`) for a chart reference text
        (`chart_ref`: `https://REPO/NAME (version V)`, `oci://HOST/PATH/NAME (version V)`,
        `oci://…/NAME:V` or `@sha256:…`), fetched under every rule of this module when
        `render.remote` allows it; RemoteError (saying why) when not.  The directory is shared
        (the cache): copy from it, never write into it."""
        fetched = self.fetch(text, deadline=deadline)
        if fetched.ref.kind != "chart":
            raise RemoteError(f"remote {fetched.ref.url}: not a chart reference")
        return fetched.root

    # ---------------------------------------------------------------- bounds
    def _clock(self, deadline: float | None) -> _Clock:
        own = time.monotonic() + self.limits.remote_timeout
        if deadline is not None and deadline < own:
            return _Clock(deadline, "plan_budget")
        return _Clock(own, "remote_timeout")

    def _late(self, url: str, clock: _Clock) -> RemoteError:
        if clock.limit == "plan_budget":
            return RemoteError(f"{url}: not fetched: {self.limits.describe('plan_budget')} ran out")
        return RemoteError(f"{url}: not fetched within {self.limits.describe('remote_timeout')}")

    def _max_bytes(self) -> tuple[int, str]:
        """(bytes one remote may download or unpack to, how a message names that limit)."""
        quarter = self.limits.cache_size // 4
        if quarter < self.limits.remote_size:
            return quarter, f"a quarter of {self.limits.describe('cache_size')}"
        return self.limits.remote_size, self.limits.describe("remote_size")

    def _check_tree(self, what: str, root: Path) -> None:
        """RemoteError when `root` holds more bytes or files than a remote may."""
        size, count = tree_stats(root)
        most, named = self._max_bytes()
        if size > most:
            raise RemoteError(f"{what}: holds {format_size(size)}, more than {named}")
        if count > self.limits.remote_files:
            raise RemoteError(f"{what}: holds more than {self.limits.describe('remote_files')}")

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
            store = self.cache_dir / digest
            if store not in self._held:            # not evicted while this plan may read it
                self._held.add(store)
                self._usage.hold(store)
            return store
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="prbot-remote-"))
        return self._scratch / digest

    def _account(self, ref: RemoteRef, size: int) -> None:
        """Count `size` bytes to what this plan's remote inputs hold — in the cache, where they are
        held until the plan ends, or in its scratch directory: no more than the cache may hold."""
        if self._plan_bytes + size > self.limits.cache_size:
            raise RemoteError(f"{ref.url}: not kept: the remote inputs of this plan would hold more than "
                              f"{self.limits.describe('cache_size')}")
        self._plan_bytes += size

    def _cached(self, ref: RemoteRef, store: Path, inside: Path) -> str | None:
        """The ident of a finished fetch at `store` (its use refreshed), or None."""
        done = store / IDENT_FILE
        if not (done.is_file() and inside.exists()):
            return None
        try:
            size = int((store / SIZE_FILE).read_text().strip())
        except (OSError, ValueError):
            size = tree_stats(store)[0]
        self._account(ref, size)
        try:
            os.utime(done)                         # least recently used eviction goes by this time
        except OSError:
            pass
        return done.read_text().strip()

    def _keep(self, ref: RemoteRef, tmp: Path, store: Path, ident: str) -> None:
        """Install a finished fetch at `store`, counted against the cache (pinned) and this plan's
        share of it."""
        (tmp / IDENT_FILE).write_text(ident)
        size = tree_stats(tmp)[0] + 20                     # and the SIZE file itself
        self._account(ref, size)
        (tmp / SIZE_FILE).write_text(str(size))
        _install(tmp, store)
        if ref.pinned:
            self._usage.added(size, self.limits.cache_size)

    # ---------------------------------------------------------------- files (HTTP GET)
    def _fetch_file(self, ref: RemoteRef, clock: _Clock) -> Fetched:
        store = self._store(ref, f"file\0{ref.url}")
        name = posixpath.basename(urllib.parse.urlsplit(ref.url).path) or "resource.yaml"
        ident = self._cached(ref, store, store / "content" / name)
        if ident is not None:
            return Fetched(ref, store / "content", ident, name)
        body = self._get(ref.url, clock)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_ensure(store.parent)))
        try:
            (tmp / "content").mkdir()
            (tmp / "content" / name).write_bytes(body)
            ident = "sha256:" + hashlib.sha256(body).hexdigest()
            self._keep(ref, tmp, store, ident)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("fetched %s (%s)", ref.url, format_size(len(body)))
        return Fetched(ref, store / "content", ident, name)

    def _get(self, url: str, clock: _Clock) -> bytes:
        """The body of `url`: at most `_max_bytes()`, all of it before `clock` runs out (a host
        sending slowly is cut off then, however steadily it sends)."""
        most, named = self._max_bytes()
        status, _, body = self._exchange("GET", url, self._connect(url), clock, most=most, named=named)
        if 300 <= status < 400:
            raise RemoteError(f"{url}: redirected ({status}); redirects are not followed")
        if status != 200:
            raise RemoteError(f"{url}: HTTP {status}")
        return body

    def _exchange(self, method: str, url: str, connect: tuple[urllib.parse.SplitResult, str | None, bool],
                  clock: _Clock, *, most: int, named: str, headers: dict[str, str] | None = None,
                  body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request as `_connect` decided it (`connect`: the URL to reach, the address to
        pin or None for a stand-in, stand-in?): (status, headers, body).  The body is at most
        `most` bytes (`named` says which limit) and all of it arrives before `clock` runs out;
        redirects are answered, never followed."""
        import urllib3

        parts, address, standin = connect
        host = parts.hostname or ""
        path = parts.path or "/"
        if parts.query:
            path += f"?{parts.query}"
        left = clock.left()
        if left <= 0:
            raise self._late(url, clock)
        timeout = urllib3.Timeout(connect=min(_CONNECT_TIMEOUT, left), read=left)
        pool: Any
        if parts.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(address or host, parts.port or 443, timeout=timeout, retries=False,
                                               server_hostname=host, assert_hostname=host,
                                               ca_certs=self._ca if standin and self._ca else None)
        else:
            pool = urllib3.HTTPConnectionPool(address or host, parts.port or 80, timeout=timeout, retries=False)
        sent = {k: v for k, v in (headers or {}).items() if k.lower() not in ("host", "connection", "cookie")}
        sent.update({"Host": parts.netloc.rpartition("@")[2], "User-Agent": "prbot"})
        late = threading.Event()
        timer: threading.Timer | None = None
        try:
            response = pool.urlopen(method, path, headers=sent, body=body, redirect=False, preload_content=False)

            def cut_off() -> None:
                late.set()
                response.shutdown()            # a read waiting on the host returns now

            timer = threading.Timer(max(clock.left(), 0.0), cut_off)
            timer.daemon = True
            timer.start()
            try:
                chunks, size = [], 0
                if 200 <= response.status < 300 and method != "HEAD":
                    while chunk := response.read1(1 << 16):
                        if late.is_set() or clock.left() <= 0:
                            raise self._late(url, clock)
                        size += len(chunk)
                        if size > most:
                            raise RemoteError(f"{url}: larger than {named}")
                        chunks.append(chunk)
                elif response.status >= 400:           # an error's explanation: a little of it
                    chunks.append(response.read1(4096))
                if late.is_set():
                    raise self._late(url, clock)
                return response.status, dict(response.headers.items()), b"".join(chunks)
            finally:
                response.release_conn()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if late.is_set() or clock.left() <= 0:
                raise self._late(url, clock) from None
            raise RemoteError(f"{url}: {type(exc).__name__}") from exc
        finally:
            if timer is not None:
                timer.cancel()
            pool.close()

    # ---------------------------------------------------------------- OCI registries
    def _oci_connect(self, ref: RemoteRef) -> tuple[urllib.parse.SplitResult, str | None, bool]:
        """How to reach the registry of an OCI chart: a real host over https at its public address
        (pinned), or the operator's stand-in as given — `oci://` and `http://` stand-ins in plain
        HTTP (Helm's `--plain-http`), `https://` ones over TLS (`PRBOT_REMOTE_CA` trusted for them)."""
        target, standin = self._target(ref.url)
        parts = urllib.parse.urlsplit(target)
        if not parts.hostname:
            raise RemoteError(f"{ref.url}: no host")
        if standin:
            scheme = "https" if parts.scheme == "https" else "http"
            return parts._replace(scheme=scheme), None, True
        if parts.scheme != "oci":
            raise RemoteError(f"{ref.url}: not an OCI address")
        return parts._replace(scheme="https"), public_address(parts.hostname, parts.port or 443), False

    def _fetch_oci(self, ref: RemoteRef, clock: _Clock) -> Fetched:
        """A chart from an OCI registry, through the `oras` client with prbot's connection rules
        (`_OciRegistry`): the version (a tag, the highest tag in a range, or the manifest digest
        given), its manifest (digest checked when pinned), the one Helm chart layer it names
        (digest and size checked), unpacked like a chart repository's archive.  Kept in the cache
        by name, version and manifest digest: a tag moved to other content is fetched again, the
        same content never."""
        name = ref.path
        if ref.digest:
            store = self._store(ref, f"oci\0{ref.repo}\0{name}\0{ref.digest}")
            ident = self._cached(ref, store, store / "tree" / name)
            if ident is not None:
                return Fetched(ref, store / "tree" / name, ident)
        connect = self._oci_connect(ref)
        registry = _OciRegistry(self, connect, ref, clock)
        try:
            return self._pull_oci(ref, registry, clock)
        except ValueError as exc:           # oras: an answer that is not what the protocol says
            raise RemoteError(f"{ref.url}: {' '.join(str(exc).split())[:200]}") from exc
        finally:
            registry.session.close()

    def _pull_oci(self, ref: RemoteRef, registry: Any, clock: _Clock) -> Fetched:
        import oras.container

        name = ref.path
        parts = registry.connect[0]
        repository = f"{parts.path.strip('/')}"
        container = oras.container.Container(f"{parts.netloc}/{repository}", registry=parts.netloc)
        if f"{container.registry}/{container.api_prefix}" != f"{parts.netloc}/{repository}":
            raise RemoteError(f"{ref.url}: not an OCI repository address")
        version = ref.ref
        if not ref.digest and not exact_version(version):
            tags = registry.get_tags(container)
            listed = [str(t).replace("_", "+") for t in tags if isinstance(t, str)]
            picked = pick_version(listed, version)
            if picked is None:
                raise RemoteError(f"{ref.url}: no version " + (f"in {version}" if version else "") +
                                  f" among its {len(listed)} tags")
            version = picked
        wanted = ref.digest or version.replace("+", "_")
        manifest_url = f"{registry.prefix}://{container.manifest_url(wanted)}"
        response = registry.do_request(manifest_url, "GET", headers={"Accept": OCI_MANIFEST})
        if response.status_code != 200:
            raise RemoteError(f"{ref.url}: manifest {wanted}: HTTP {response.status_code}")
        body = response.content
        manifest_digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if ref.digest and manifest_digest != ref.digest:
            raise RemoteError(f"{ref.url}@{ref.digest}: the registry answered another manifest "
                              f"({manifest_digest}): refused")
        try:
            manifest = json.loads(body)
        except ValueError as exc:
            raise RemoteError(f"{ref.url}: manifest {wanted}: not JSON") from exc
        layers = [layer for layer in (manifest.get("layers") if isinstance(manifest, dict) else None) or []
                  if isinstance(layer, dict) and layer.get("mediaType") == HELM_CHART_LAYER]
        if len(layers) != 1:
            raise RemoteError(f"{ref.url}: manifest {wanted}: not a Helm chart (it names {len(layers)} chart layers)")
        layer_digest, layer_size = layers[0].get("digest"), layers[0].get("size")
        if not isinstance(layer_digest, str) or not _DIGEST.fullmatch(layer_digest) or \
                not isinstance(layer_size, int) or layer_size < 0:
            raise RemoteError(f"{ref.url}: manifest {wanted}: its chart layer has no sha256 digest and size")
        most, named = self._max_bytes()
        if layer_size > most:
            raise RemoteError(f"{ref.url}: its chart layer is {format_size(layer_size)}, more than {named}")
        pinned = dataclasses.replace(ref, ref=version if not ref.digest else ref.ref, digest=manifest_digest)
        store = self._store(pinned, f"oci\0{ref.repo}\0{name}\0{manifest_digest}" if ref.digest
                            else f"oci\0{ref.repo}\0{name}\0{version}\0{manifest_digest}")
        ident = self._cached(pinned, store, store / "tree" / name)
        if ident is not None:
            return Fetched(ref, store / "tree" / name, ident)
        blob = registry.get_blob(container, layer_digest)
        if blob.status_code != 200:
            raise RemoteError(f"{ref.url}: chart layer: HTTP {blob.status_code}")
        data = blob.content
        if "sha256:" + hashlib.sha256(data).hexdigest() != layer_digest or len(data) != layer_size:
            raise RemoteError(f"{ref.url}: its chart layer is not the digest the manifest gives: refused")
        ident = f"oci:{manifest_digest}"
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_ensure(store.parent)))
        try:
            self._unpack(ref.url, data, name, tmp / "tree", clock)
            self._check_tree(ref.url, tmp / "tree")
            if not (tmp / "tree" / name / "Chart.yaml").is_file():
                raise RemoteError(f"{ref.url}: its chart layer holds no {name}/Chart.yaml")
            self._keep(pinned, tmp, store, ident)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise RemoteError(f"{ref.url}: cannot be unpacked ({type(exc).__name__})") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("fetched chart %s %s (%s) from %s", name, version, manifest_digest, ref.repo)
        return Fetched(ref, store / "tree" / name, ident)

    # ---------------------------------------------------------------- Helm chart repositories
    def _fetch_chart(self, ref: RemoteRef, clock: _Clock) -> Fetched:
        """The chart archive the repository's index names for this name and version (the newest
        when no version is given), its digest checked, unpacked without links or devices and
        within the size and file limits."""
        from prbot.yamlio import YAML_ERRORS, load_yaml

        if any(c in ref.repo for c in "?#"):
            raise RemoteError(f"chart repository {ref.repo}: a query or fragment is not fetched")
        store = self._store(ref, f"chart\0{ref.repo}\0{ref.path}\0{ref.ref}")
        ident = self._cached(ref, store, store / "tree" / ref.path)
        if ident is not None:
            return Fetched(ref, store / "tree" / ref.path, ident)
        index_url = ref.repo.rstrip("/") + "/index.yaml"
        try:
            index = load_yaml(self._get(index_url, clock).decode("utf-8"))
        except (*YAML_ERRORS, UnicodeDecodeError) as exc:  # type: ignore[misc]
            raise RemoteError(f"{index_url}: not a chart repository index ({exc})") from exc
        entries = index.get("entries", {}).get(ref.path) if isinstance(index, dict) and \
            isinstance(index.get("entries"), dict) else None
        chosen = pick_chart_versions(entries or [], ref.ref)
        if not chosen or not isinstance(chosen[0].get("urls"), list) or not chosen[0]["urls"]:
            raise RemoteError(f"{index_url}: no chart {ref.path}" + (f" version {ref.ref}" if ref.ref else ""))
        entry = chosen[0]
        archive_url = urllib.parse.urljoin(ref.repo.rstrip("/") + "/", str(entry["urls"][0]))
        if not self.allowed(archive_url):
            raise RemoteError(f"chart {ref.path}: its archive {archive_url} is not allowed by render.remote")
        data = self._get(archive_url, clock)
        digest = hashlib.sha256(data).hexdigest()
        if entry.get("digest") and str(entry["digest"]) != digest:
            raise RemoteError(f"{archive_url}: its sha256 is not the digest the index gives")
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=_ensure(store.parent)))
        try:
            self._unpack(archive_url, data, ref.path, tmp / "tree", clock)
            self._check_tree(archive_url, tmp / "tree")
            self._keep(ref, tmp, store, f"chart:sha256:{digest}")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise RemoteError(f"{archive_url}: cannot be unpacked ({type(exc).__name__})") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("fetched chart %s %s from %s", ref.path, entry.get("version"), ref.repo)
        return Fetched(ref, store / "tree" / ref.path, f"chart:sha256:{digest}")

    def _unpack(self, url: str, data: bytes, name: str, into: Path, clock: _Clock) -> None:
        """Unpack the chart archive `data` into `into`, checking each member as it is read: no more
        bytes or files than a remote may hold, nothing outside `name/`, no links or devices.  The
        archive is decompressed only as far as those limits allow (a small archive expanding to
        gigabytes stops at the limit)."""
        most, named = self._max_bytes()
        files = self.limits.remote_files
        # the tar stream itself: the members' bytes plus a header block or two for each
        stream = _Inflated(data, most + (files + 2) * 2 * tarfile.BLOCKSIZE,
                           RemoteError(f"{url}: unpacks to more than {named}"))
        members: list[tarfile.TarInfo] = []
        total = 0
        with tarfile.open(fileobj=stream, mode="r:") as archive:    # type: ignore[call-overload]
            for member in archive:
                members.append(member)
                total += max(member.size, 0)
                if len(members) > files:
                    raise RemoteError(f"{url}: holds more than {self.limits.describe('remote_files')}")
                if total > most:
                    raise RemoteError(f"{url}: unpacks to more than {named}")
                if member.name.split("/")[0] != name or ".." in member.name.split("/") or member.issym() \
                        or member.islnk():
                    raise RemoteError(f"{url}: not a chart archive of {name} (or it holds links)")
                if clock.left() <= 0:
                    raise self._late(url, clock)
            archive.extractall(into, members=members, filter="data")

    # ---------------------------------------------------------------- git repositories
    def _fetch_git(self, ref: RemoteRef, clock: _Clock) -> Fetched:
        store = self._store(ref, f"git\0{ref.repo}\0{ref.ref}")
        ident = self._cached(ref, store, store / "tree")
        if ident is not None:
            return Fetched(ref, store / "tree", ident)
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
            if standin and self._ca and parts.scheme == "https":
                options += ["-c", f"http.sslCAInfo={self._ca}"]
            if address is not None:
                host_address = f"[{address}]" if ":" in address else address
                options += ["-c", f"http.curloptResolve={parts.hostname}:{parts.port or 443}:{host_address}"]

            def git(args: list[str]) -> str:
                return self._git(tree, args, options, ref.repo, clock)

            git(["init", "-q"])
            wanted = ref.ref or "HEAD"
            try:
                git(["fetch", "-q", "--depth", "1", "--no-tags", url, wanted])
            except RemoteError:                       # a server without shallow fetches (dumb HTTP)
                if clock.left() <= 0:
                    raise
                git(["fetch", "-q", "--no-tags", url, wanted])
            git(["checkout", "-q", "--detach", "FETCH_HEAD"])
            commit = git(["rev-parse", "HEAD"]).strip()
            shutil.rmtree(tree / ".git")
            self._check_tree(f"{ref.repo}: the checkout", tree)
            self._keep(ref, tmp, store, f"git:{commit}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("fetched %s at %s%s", ref.repo, ref.ref or "its default branch",
                 " (through a stand-in)" if standin else "")
        return Fetched(ref, store / "tree", (store / IDENT_FILE).read_text().strip())

    def _git(self, cwd: Path, args: list[str], options: list[str], url: str, clock: _Clock) -> str:
        git = shutil.which("git") or "git"
        home = cwd.parent
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false",
               "GIT_LFS_SKIP_SMUDGE": "1", "LANG": "C.UTF-8"}
        left = clock.left()
        if left <= 0:
            raise self._late(url, clock)
        try:
            proc = subprocess.run([git, *options, *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=left)
        except subprocess.TimeoutExpired:
            raise self._late(url, clock) from None
        except OSError as exc:
            raise RemoteError(f"git: {exc.strerror or exc}") from exc
        if proc.returncode != 0:
            message = " ".join(proc.stderr.decode("utf-8", "replace").split())[:300]
            raise RemoteError(f"git {args[0]}: {message or f'exit {proc.returncode}'}")
        return proc.stdout.decode("utf-8", "replace")


# --------------------------------------------------------------------------------------------
# The oras client, held to prbot's connection rules
# --------------------------------------------------------------------------------------------

def _shown(url: str) -> str:
    """A URL as messages show it: without a user name or password."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep else url


def _OciRegistry(remotes: Remotes, connect: tuple[urllib.parse.SplitResult, str | None, bool],
                 ref: RemoteRef, clock: _Clock) -> Any:
    """An `oras.provider.Registry` for one fetch whose HTTP goes through `Remotes._exchange` only.

    oras speaks the registry protocol (token authentication, tag lists and their pages, manifest
    and blob addresses); left to itself its `requests` session would follow redirects anywhere,
    resolve the host again at every connection (no pinning), read bodies without bound, retry a
    failing request for minutes and read the host's docker credentials.  Here its session has one
    transport (`_GuardedAdapter`): the registry's own origin at the address checked (or the
    operator's stand-in), any other host (a token service) https and public only, a redirect
    followed once and only to a URL `render.remote` allows, bodies bounded, all within the
    fetch's time; its retrying wrapper is bypassed and no credentials are loaded."""
    return _oci_classes()[0](remotes, connect, ref, clock)


@functools.cache
def _oci_classes() -> tuple[type, type]:
    import oras.provider
    import requests
    import requests.adapters
    import requests.structures

    unretried = getattr(oras.provider.Registry.do_request, "__wrapped__", oras.provider.Registry.do_request)

    class GuardedAdapter(requests.adapters.BaseAdapter):
        def __init__(self, remotes: Remotes, connect: tuple[urllib.parse.SplitResult, str | None, bool],
                     ref: RemoteRef, clock: _Clock) -> None:
            super().__init__()
            self.remotes, self.connect, self.ref, self.clock = remotes, connect, ref, clock
            self.origin = (connect[0].scheme, connect[0].netloc)

        def route(self, url: str) -> tuple[urllib.parse.SplitResult, str | None, bool]:
            parts = urllib.parse.urlsplit(url)
            if (parts.scheme, parts.netloc) == self.origin:
                return parts, self.connect[1], self.connect[2]
            bare = urllib.parse.urlunsplit(parts._replace(query="", fragment=""))     # a token query is escaped
            if parts.scheme != "https" or not parts.hostname or _clean_url(bare) is None:
                raise RemoteError(f"{self.ref.url}: the registry sent prbot to {_shown(url)}: "
                                  "only https:// is fetched")
            return parts, public_address(parts.hostname, parts.port or 443), False

        def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True,
                 cert: Any = None, proxies: Any = None) -> Any:
            url = str(request.url)
            most, named = self.remotes._max_bytes()
            if "/blobs/" not in urllib.parse.urlsplit(url).path and most > _SMALL_BODY:
                most, named = _SMALL_BODY, format_size(_SMALL_BODY)
            body = request.body.encode() if isinstance(request.body, str) else request.body
            headers = dict(request.headers)
            connect = self.route(url)
            status, answer, content = self.remotes._exchange(str(request.method), url, connect, self.clock,
                                                             most=most, named=named, headers=headers, body=body)
            if 300 <= status < 400:
                where = urllib.parse.urljoin(url, answer.get("Location") or answer.get("location") or "")
                parts = urllib.parse.urlsplit(where)
                if (parts.scheme, parts.netloc) == self.origin:
                    connect = self.route(where)
                elif self.remotes.allowed(urllib.parse.urlunsplit(parts._replace(query="", fragment=""))):
                    connect = self.remotes._connect(where)
                else:
                    raise RemoteError(f"{self.ref.url}: the registry redirected ({status}) to "
                                      f"{_shown(where).split('?')[0]}, which render.remote does not allow: refused")
                headers.pop("Authorization", None)            # never sent on to another host
                status, answer, content = self.remotes._exchange("GET", where, connect, self.clock,
                                                                 most=most, named=named, headers=headers)
                if 300 <= status < 400:
                    raise RemoteError(f"{self.ref.url}: redirected twice; not followed")
            response = requests.Response()
            response.status_code = status
            response.headers = requests.structures.CaseInsensitiveDict(answer)
            response._content = content
            response.url = url
            response.request = request
            response.reason = ""
            return response

        def close(self) -> None:
            pass

    class GuardedRegistry(oras.provider.Registry):          # type: ignore[misc]
        def __init__(self, remotes: Remotes, connect: tuple[urllib.parse.SplitResult, str | None, bool],
                     ref: RemoteRef, clock: _Clock) -> None:
            super().__init__(hostname=connect[0].netloc, insecure=connect[0].scheme == "http")
            self.connect = connect
            self.session.trust_env = False                    # no proxies, no .netrc
            self.session.max_redirects = 0
            adapter = GuardedAdapter(remotes, connect, ref, clock)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)
            self.auth._auth_config = {"auths": {}}            # never the host's docker credentials

        def do_request(self, url: str, method: str = "GET", data: Any = None, headers: Any = None,
                       json: Any = None, stream: bool = False) -> Any:
            return unretried(self, url, method, data, headers, json, stream)

    return GuardedRegistry, GuardedAdapter


class _Inflated:
    """A gzip stream read as a file, refusing to decompress past `limit` bytes (`too_much` raised)."""

    def __init__(self, data: bytes, limit: int, too_much: RemoteError) -> None:
        self._gz = gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb")
        self._limit = limit
        self._too_much = too_much

    def read(self, n: int = -1) -> bytes:
        room = self._limit + 1 - self._gz.tell()
        chunk = self._gz.read(room if n is None or n < 0 else min(n, room))
        if self._gz.tell() > self._limit:
            raise self._too_much
        return chunk

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self._gz.tell() + offset}.get(whence)
        if target is None:
            raise OSError("seeking from the end of a compressed stream")
        if target > self._limit:
            raise self._too_much
        return self._gz.seek(target)

    def tell(self) -> int:
        return self._gz.tell()

    def close(self) -> None:
        self._gz.close()


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


def vendor(remotes: Remotes, text: str, depth: int = 0, *, deadline: float | None = None) -> Vendored:
    """Fetch `text` and what its closure reads remotely; RemoteError when anything is refused.
    `deadline` (time.monotonic()) is when the plan's budget runs out."""
    from prbot.model import Target
    from prbot.renderers.closure import ClosureCache

    if depth >= MAX_NESTING:
        raise RemoteError(f"remote {text}: remote bases nested more than {MAX_NESTING} deep")
    fetched = remotes.fetch(text, deadline=deadline)
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
    kind = cache.kind(str(root), sub)
    if kind == "outside":
        raise RemoteError(f"remote {fetched.ref.url}: refused: {sub} resolves (through a symbolic link) outside "
                          f"{fetched.ref.repo}")
    if kind != "dir":
        raise RemoteError(f"remote {fetched.ref.url}: {sub or '.'} is not a directory of {fetched.ref.repo}")
    closure = cache.closure(root, Target("remote", "remote", sub, "kustomize"))
    if closure.outside:
        raise RemoteError(f"remote {fetched.ref.url}: refused: {closure.outside[0]}")
    nested = {ref: vendor(remotes, ref, depth + 1, deadline=deadline) for ref in closure.remote}
    return Vendored(fetched, closure.files, nested)


def _ensure(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _install(tmp: Path, store: Path) -> None:
    """Move a finished fetch into place (another plan may have done it meanwhile: keep theirs)."""
    try:
        if store.exists() and not (store / IDENT_FILE).is_file():
            shutil.rmtree(store, ignore_errors=True)        # a half-written one
        os.replace(tmp, store)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (store / IDENT_FILE).is_file():
            raise


# --------------------------------------------------------------------------------------------
# Chart versions: the semver constraints Flux and Helm read (Masterminds/semver)
# --------------------------------------------------------------------------------------------

_VERSION = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
_COMPARATOR = re.compile(r"(!=|>=|=>|<=|=<|>|<|=|~>|~|\^)?\s*(v?[0-9xX*][0-9A-Za-z.+*-]*)")
SemVer = tuple[int, int, int, tuple[Any, ...]]


def _semver(text: str) -> SemVer | None:
    """(major, minor, patch, pre-release parts) of a full version (`1.2.3`, `v1.2`, `1-rc.1`), or None."""
    m = _VERSION.match(text.strip())
    if not m or any(p is not None and not p.isdigit() for p in m.groups()[:3]):
        return None
    pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in m[4].split(".")) if m[4] else ()
    return int(m[1]), int(m[2] or 0), int(m[3] or 0), pre


def _order(v: SemVer) -> tuple[int, int, int, int, tuple[Any, ...]]:
    return v[0], v[1], v[2], 0 if v[3] else 1, v[3]         # a release is above its pre-releases


def _comparators(text: str) -> list[tuple[str, SemVer, SemVer | None]] | None:
    """One AND group as (op, lowest, exclusive upper bound for ranges) triples; None when unreadable."""
    text = re.sub(r"(\S+)\s+-\s+(\S+)", r">=\1 <=\2", text.strip())
    out: list[tuple[str, SemVer, SemVer | None]] = []
    rest = text
    while rest.strip(" ,"):
        m = _COMPARATOR.match(rest.strip(" ,"))
        if not m:
            return None
        rest = rest.strip(" ,")[m.end():]
        op, ver = m[1] or "=", m[2]
        v = _VERSION.match(ver)
        if not v:
            return None
        parts = [v[1], v[2], v[3]]
        wild = next((i for i, p in enumerate(parts) if p is None or not p.isdigit()), 3)
        nums = [int(p) if p is not None and p.isdigit() else 0 for p in parts]
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in v[4].split(".")) if v[4] else ()
        low: SemVer = (nums[0], nums[1], nums[2], pre if wild == 3 else ())
        if op in ("~", "~>"):
            wild = min(wild, 2) if wild > 1 else wild
            op = "="
        if op == "^":
            first = next((i for i, n in enumerate(nums[:wild]) if n), min(wild, 3) - 1 if wild else 0)
            wild = min(wild, first + 1)
            op = "="
        if wild == 0:
            zero: SemVer = (0, 0, 0, ())
            out.append((">=", zero, None) if op in ("=", ">=", "=>", "<=", "=<") else ("<", zero, None))
            continue
        upper: SemVer | None = None
        if wild < 3:
            bumped = nums[:wild]
            bumped[-1] += 1
            upper = (*(bumped + [0, 0, 0])[:3], ())  # type: ignore[assignment]
        if op == "=":
            out.append(("range", low, upper) if upper else ("=", low, None))
        elif op == "!=":
            out.append(("!range", low, upper) if upper else ("!=", low, None))
        elif op in (">", ) and upper:
            out.append((">=", upper, None))
        elif op in ("<=", "=<") and upper:
            out.append(("<", upper, None))
        else:
            out.append(({"=>": ">=", "=<": "<="}.get(op, op), low, None))
    return out or None


def _satisfies(v: SemVer, comparators: list[tuple[str, SemVer, SemVer | None]]) -> bool:
    if v[3] and not any(c[1][3] for c in comparators):
        return False                 # a pre-release only when the constraint names one
    o = _order(v)
    for op, low, upper in comparators:
        lo = _order(low)
        if op == "range":
            ok = o >= lo and (upper is None or o < _order(upper))
        elif op == "!range":
            ok = not (o >= lo and (upper is None or o < _order(upper)))
        else:
            ok = {"=": o == lo, "!=": o != lo, ">": o > lo, ">=": o >= lo, "<": o < lo, "<=": o <= lo}[op]
        if not ok:
            return False
    return True


def version_matches(version: str, constraint: str) -> bool:
    """Whether a chart `version` meets a semver `constraint` (`6.x`, `>=1.0 <2`, `^1.2`, `*`,
    `1.0 - 1.4`, `a || b`), as Flux's source controller reads it: pre-releases only when the
    constraint names one."""
    v = _semver(version)
    if v is None:
        return version == constraint
    for group in constraint.split("||"):
        comparators = _comparators(group)
        if comparators is not None and _satisfies(v, comparators):
            return True
    return False


def pick_chart_versions(entries: list[Any], constraint: str) -> list[dict[str, Any]]:
    """The index entries of one chart meeting `constraint`, the one Flux would install first: an
    exact version as written, else the highest version meeting it (no constraint: the index's first)."""
    listed = [e for e in entries if isinstance(e, dict)]
    if not constraint:
        return listed
    exact = [e for e in listed if str(e.get("version")) == constraint]
    if exact:
        return exact
    good = [(e, _semver(str(e.get("version")))) for e in listed if version_matches(str(e.get("version")), constraint)]
    return [e for e, v in sorted(good, key=lambda ev: _order(ev[1]) if ev[1] else (0, 0, 0, 0, ()), reverse=True)]

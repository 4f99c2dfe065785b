"""Running a renderer binary on untrusted input: no shell, nothing of ours, no network, bounded.

Every run (`run_tool`):
- starts the binary directly (an argv list, never a shell) in its own session, stdin closed;
- gets a scrubbed environment: `HOME`, the XDG and Helm directories point into the job's scratch
  directory (no user config, kubeconfig, registry or repository credentials), the caller's
  `KUBECONFIG` and proxies are not passed, HTTP(S) goes to a black-hole proxy;
- runs in a jail (bubblewrap, `jail_argv`): an empty root holding only the staged closure, a
  scratch home and the tool binary; no network, no host /etc, /home or /proc, as an unprivileged
  user.  Where the jail cannot be made, nothing is rendered and the error says what the host lacks
  (fail closed); `PRBOT_RENDER_ISOLATION=off` is the operator's explicit opt-out, which every plan
  states.  Remote references are refused before any run either way (the closures find them in
  every field that takes a URL);
- is bounded by `prbot.limits.Limits`: memory (RLIMIT_DATA per process, below the limit by room
  for the binary's own resident text — Go binaries only reserve address space, which RLIMIT_DATA
  does not count — and a watch on the resident memory of the whole session, several times a
  second), wall-clock time (the render timeout, or what is left of the plan's budget), CPU time,
  bytes printed, file size; `GOMEMLIMIT` asks Go's collector to stay below the limit;
- is killed with everything it started (its session) when it goes over a limit, and the error
  names that limit (`ToolError.limit`).

Messages are one line: the tool's own message, with the scratch directories removed so users see
repo-relative paths.

"""

from __future__ import annotations

import functools
import logging
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from prbot.errors import ToolError
from prbot.limits import Limits, format_duration
from prbot.tools import clean_output

log = logging.getLogger("prbot.sandbox")

BLACKHOLE_PROXY = "http://127.0.0.1:9"
MAX_STDERR = 256 * 1024
WATCH_INTERVAL = 0.2            # seconds between two looks at the session's memory
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_OOM_MARKERS = ("out of memory", "cannot allocate memory", "memoryerror", "std::bad_alloc")


# --------------------------------------------------------------------------------------------
# Isolation
# --------------------------------------------------------------------------------------------

ISOLATION_ENV = "PRBOT_RENDER_ISOLATION"
JAIL_UID = 65534                # "nobody" inside the jail's user namespace
_ISOLATION_LOCK = threading.Lock()
_SYSTEM_LIBRARIES = ("/usr", "/lib", "/lib64", "/lib32", "/bin")   # what a dynamically linked tool needs


def isolation() -> str:
    """``jail`` (the default: every renderer run in a bubblewrap jail, see `jail_argv`) or ``off``
    (`PRBOT_RENDER_ISOLATION=off`: the operator's explicit choice, said in every plan)."""
    value = os.environ.get(ISOLATION_ENV, "jail").strip().lower()
    if value in ("off", "0", "none", "false", "no"):
        with _ISOLATION_LOCK:                  # lru_cache alone lets two threads both say it
            _say_unisolated()
        return "off"
    return "jail"


@functools.lru_cache(maxsize=1)
def _say_unisolated() -> None:
    log.warning("renderers run unisolated (%s=off): they can read the host's files and reach its "
                "network; every plan says so", ISOLATION_ENV)


def jail_problem() -> str | None:
    """Why a jail cannot be made on this host (what it lacks, and the way out), None when it can.
    Asked once per process, however many renders ask at the same time."""
    with _ISOLATION_LOCK:
        return _jail_problem()


def reset_isolation() -> None:
    """Forget whether a jail can be made, and that running unisolated was said (both asked and said
    again next time)."""
    with _ISOLATION_LOCK:
        _jail_problem.cache_clear()
        _say_unisolated.cache_clear()


@functools.lru_cache(maxsize=1)
def _jail_problem() -> str | None:
    way_out = f"install bubblewrap and allow user namespaces, or set {ISOLATION_ENV}=off to render unisolated"
    if not sys.platform.startswith("linux"):
        return f"renders cannot be jailed on {sys.platform} ({way_out})"
    if shutil.which("bwrap") is None:
        return f"renders cannot be jailed: bubblewrap (bwrap) is not installed ({way_out})"
    true = shutil.which("true") or "/bin/true"
    with tempfile.TemporaryDirectory(prefix="prbot-jail-") as scratch:
        try:
            proc = subprocess.run(jail_argv([true], cwd=Path(scratch), home=Path(scratch)),
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"renders cannot be jailed: bwrap did not run: {exc} ({way_out})"
    if proc.returncode != 0:
        said = " ".join(proc.stderr.decode("utf-8", "replace").split())[:300] or f"exit {proc.returncode}"
        return f"renders cannot be jailed: bwrap said: {said} ({way_out})"
    log.debug("renderers run in a bubblewrap jail")
    return None


@functools.lru_cache(maxsize=64)
def _statically_linked(path: str, size: int, mtime_ns: int) -> bool:
    """Whether `path` is an ELF executable with no program interpreter (needs no shared library)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:     # 64-bit little-endian only
                return False
            phoff = int.from_bytes(head[32:40], "little")
            phentsize = int.from_bytes(head[54:56], "little")
            phnum = int.from_bytes(head[56:58], "little")
            fh.seek(phoff)
            table = fh.read(phentsize * phnum)
    except OSError:
        return False
    return not any(int.from_bytes(table[i:i + 4], "little") == 3         # PT_INTERP
                   for i in range(0, len(table), phentsize))


TOOL_OPTIONS = ("--helm-command",)     # options whose value is another binary the tool runs


def _executables(argv: Sequence[str]) -> list[str]:
    """The binaries the jail must hold: the tool itself and the ones it is told to run (kustomize's
    ``--helm-command``).  Only these: another absolute path in `argv` is an argument, not a binary."""
    found = [argv[0]]
    for option, value in zip(argv, argv[1:], strict=False):
        if option in TOOL_OPTIONS and value not in found:
            found.append(value)
    return [os.path.abspath(f) for f in found if os.path.isfile(f)]


def jail_argv(argv: Sequence[str], *, cwd: Path, home: Path) -> list[str]:
    """`argv` inside a bubblewrap jail: an empty root holding only `cwd` (the staged closure) and
    `home` (scratch), both at their own paths, the tool binaries read-only (and the system's
    libraries for a tool that is not statically linked), a private /dev; no /etc, /home, /proc,
    data directory or cache of the host; its own user, PID, IPC, UTS, cgroup and network
    namespaces, running as an unprivileged user with no capabilities."""
    dirs = [os.fspath(cwd), os.fspath(home)]
    prefix = ["bwrap", "--unshare-all", "--unshare-user", "--uid", str(JAIL_UID), "--gid", str(JAIL_UID),
              "--die-with-parent", "--cap-drop", "ALL", "--dev", "/dev"]
    tools = _executables(argv)
    dynamic = False
    for tool in tools:
        st = os.stat(tool)
        dynamic = dynamic or not _statically_linked(tool, st.st_size, st.st_mtime_ns)
        prefix += ["--ro-bind", tool, tool]
    if dynamic:
        for lib in _SYSTEM_LIBRARIES:
            if os.path.isdir(lib):
                prefix += ["--ro-bind", lib, lib]
    for d in dict.fromkeys(dirs):
        prefix += ["--bind", d, d]
    return [shutil.which("bwrap") or "bwrap", *prefix[1:], "--chdir", os.fspath(cwd), "--", *argv]


def scrubbed_env(home: str, limits: Limits) -> dict[str, str]:
    """A minimal environment: no user config, credentials, kubeconfig or proxies of ours."""
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "XDG_CONFIG_HOME": f"{home}/.config",
        "XDG_CACHE_HOME": f"{home}/.cache",
        "XDG_DATA_HOME": f"{home}/.local/share",
        "HELM_CONFIG_HOME": f"{home}/.config/helm",
        "HELM_CACHE_HOME": f"{home}/.cache/helm",
        "HELM_DATA_HOME": f"{home}/.local/share/helm",
        "HELM_PLUGINS": f"{home}/.local/share/helm/plugins",
        "KUSTOMIZE_PLUGIN_HOME": f"{home}/.config/kustomize/plugin",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GOMEMLIMIT": str(max(limits.memory * 4 // 5, 32 * 1024 * 1024)),
        # Go's collector only near GOMEMLIMIT: kubectl and helm allocate ~25 MB at start that they
        # keep, and collecting during that start is ~16 % of a small render's CPU (measured: 100 ms
        # -> 84 ms per `kubectl kustomize`).  Memory stays bounded by the render's own limit, which
        # the operator sized for one render anyway (RLIMIT_DATA and the RSS watch are unchanged)
        "GOGC": "off",
        "NO_PROXY": "",
        "no_proxy": "",
    }
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = BLACKHOLE_PROXY
    return env


def data_limit(memory: int) -> int:
    """RLIMIT_DATA for a memory limit: the heap (and thread stacks) of one process; its resident
    binary (kubectl and helm hold ~30-60 MB of text) comes on top, so leave room for it."""
    return max(memory * 3 // 4, memory - 96 * 1024 * 1024)


def _rlimits(limits: Limits, timeout: float) -> list[tuple[int, int]]:
    cpu = int(math.ceil(timeout * max(os.cpu_count() or 1, 1))) + 5
    return [(resource.RLIMIT_DATA, data_limit(limits.memory)), (resource.RLIMIT_CPU, cpu),
            (resource.RLIMIT_FSIZE, max(limits.output, 16 * 1024 * 1024)), (resource.RLIMIT_CORE, 0)]


@functools.lru_cache(maxsize=1)
def _prlimit() -> str | None:
    return shutil.which("prlimit")


def _prlimit_prefix(rlimits: list[tuple[int, int]]) -> tuple[str, ...]:
    binary = _prlimit()
    if binary is None:
        return ()
    names = {resource.RLIMIT_DATA: "--data", resource.RLIMIT_CPU: "--cpu",
             resource.RLIMIT_FSIZE: "--fsize", resource.RLIMIT_CORE: "--core"}
    return (binary, *(f"{names[which_]}={value}" for which_, value in rlimits), "--")


# --------------------------------------------------------------------------------------------
# The session: memory and cleanup
# --------------------------------------------------------------------------------------------

def session_processes(sid: int) -> list[tuple[int, int]]:
    """(pid, resident bytes) of every process in session `sid` (Linux /proc; empty elsewhere)."""
    found: list[tuple[int, int]] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        try:
            if int(fields[3]) == sid and fields[0] != b"Z":
                found.append((int(name), int(fields[21]) * _PAGE))
        except (IndexError, ValueError):
            continue
    return found


def kill_session(proc: subprocess.Popen[bytes]) -> None:
    """Kill the tool and everything it started (its session, even processes that left its process
    group), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    for pid, _ in session_processes(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:       # pragma: no cover - SIGKILL does not wait
        log.warning("process %d did not exit after SIGKILL", proc.pid)


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

def clean_message(label: str, raw: str, roots: Sequence[str]) -> str:
    """`label: message` on one line, the scratch directories and log prefixes (timestamps, PIDs)
    removed from it, so the same failure reads the same in every plan."""

    for r in roots:                             # the tree's own paths first: repo-relative
        raw = raw.replace(r + os.sep, "").replace(r, ".")
    lines = [ln.strip() for ln in clean_output(raw).splitlines() if ln.strip()]
    # helm/kubectl prefix each line with "Error: " / "error: "; keep the message itself
    lines = [ln.split(":", 1)[1].strip() if ln.lower().startswith("error:") else ln for ln in lines]
    message = " ".join(lines) or "failed without a message"
    return f"{label}: {message}"


def run_tool(argv: Sequence[str], *, cwd: Path, home: Path, label: str, limits: Limits,
             deadline: float | None = None, hide: Sequence[Path] = (), jail: bool = True) -> str:
    """Run `argv` in `cwd` sandboxed (see the module doc) and return what it printed.

    `deadline` (time.monotonic()) is when the plan's budget runs out; the run stops then if its own
    timeout has not come first.  `hide`: directories removed from messages (`cwd` and `home` always
    are).  `jail` False runs it bounded but outside the jail: only for prbot's own processes, which
    evaluate nothing of the repository (its YAML parser, `prbot.parse_worker`).  Raises ToolError with
    a one-line message.
    """
    start = time.monotonic()
    timeout = limits.timeout
    by_budget = False
    if deadline is not None and deadline - start < timeout:
        timeout, by_budget = max(deadline - start, 0.0), True
    if timeout <= 0:
        raise ToolError(f"{label} did not start: {limits.describe('plan_budget')} was used up",
                        limit="plan_budget", transient=True)
    roots = sorted({p for d in (cwd, home, *hide) for p in (os.fspath(d), os.path.realpath(d))},
                   key=len, reverse=True)
    rlimits = _rlimits(limits, timeout)
    prefix = _prlimit_prefix(rlimits)
    command = list(argv)
    if jail and isolation() == "jail":
        problem = jail_problem()
        if problem is not None:
            raise ToolError(f"{label} was not run: {problem}", transient=True)
        command = jail_argv(argv, cwd=cwd, home=home)
    try:
        proc = subprocess.Popen([*prefix, *command], cwd=cwd,
                                env=scrubbed_env(os.fspath(home), limits), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise ToolError(f"{label}: cannot run {argv[0]}: {exc.strerror or exc}", transient=True) from exc
    try:
        if not prefix:                         # no prlimit binary: set the limits from outside
            for which_, value in rlimits:
                try:
                    resource.prlimit(proc.pid, which_, (value, value))
                except (OSError, ValueError):
                    pass
        out, err, over = _pump(proc, start + timeout, limits)
    except BaseException:
        kill_session(proc)
        raise
    if over is None:
        try:                                   # output closed: the tool is exiting (or hiding)
            proc.wait(timeout=max(start + timeout - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            over = "timeout"
    if over is not None:
        kill_session(proc)
    else:
        try:                                   # children the tool left behind go with its group
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if over == "timeout":
        if by_budget:
            raise ToolError(f"{label} was stopped after {format_duration(round(timeout, 1))}: "
                            f"{limits.describe('plan_budget')} ran out", limit="plan_budget", transient=True)
        raise ToolError(f"{label} timed out: it ran longer than {limits.describe('timeout')}", limit="timeout")
    if over == "output":
        raise ToolError(f"{label} printed more than {limits.describe('output')}", limit="output")
    stderr = err.decode("utf-8", "replace")
    if over == "memory" or (proc.returncode != 0 and _out_of_memory(proc.returncode, stderr)):
        raise ToolError(f"{label} ran out of memory: it needed more than {limits.describe('memory')}",
                        limit="memory")
    if proc.returncode == -signal.SIGXCPU or (proc.returncode != 0 and "SIGXCPU" in stderr[:4096]):
        raise ToolError(f"{label} used more CPU time than {limits.describe('timeout')} allows", limit="timeout")
    if proc.returncode == -signal.SIGKILL:     # killed by the system: its memory is the usual reason
        raise ToolError(f"{label} was killed by the system (over {limits.describe('memory')}?)", limit="memory")
    if proc.returncode != 0:
        raw = stderr or out.decode("utf-8", "replace")
        raise ToolError(clean_message(label, raw, roots))
    return out.decode("utf-8", "replace")


def _out_of_memory(returncode: int, stderr: str) -> bool:
    head = stderr[:4096].lower()
    return any(marker in head for marker in _OOM_MARKERS)


def _pump(proc: subprocess.Popen[bytes], end: float, limits: Limits) -> tuple[bytes, bytes, str | None]:
    """Read the tool's output until it exits, watching time, output size and memory.

    Returns (stdout, stderr, the limit it went over or None)."""
    assert proc.stdout is not None and proc.stderr is not None
    out: list[bytes] = []
    err: list[bytes] = []
    out_size = err_size = 0
    next_watch = time.monotonic() + WATCH_INTERVAL
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        open_streams = 2
        while open_streams:
            now = time.monotonic()
            if now >= end:
                return b"".join(out), b"".join(err), "timeout"
            if now >= next_watch:
                if sum(rss for _, rss in session_processes(proc.pid)) > limits.memory:
                    return b"".join(out), b"".join(err), "memory"
                next_watch = now + WATCH_INTERVAL
            for key, _ in sel.select(timeout=max(0.0, min(end, next_watch) - now)):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                elif key.data == "out":
                    out_size += len(chunk)
                    if out_size > limits.output:
                        return b"".join(out), b"".join(err), "output"
                    out.append(chunk)
                elif err_size < MAX_STDERR:
                    err.append(chunk[:MAX_STDERR - err_size])
                    err_size += len(chunk)
    return b"".join(out), b"".join(err), None



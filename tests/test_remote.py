"""Remote inputs: skipped unless `render.remote` allows them; allowed ones
fetched by prbot through a guarded path — here from a local stand-in host that the operator maps in
with PRBOT_REMOTE_STANDINS (never the pull request) — and never from a loopback or private address."""

from __future__ import annotations

import functools
import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import commit_all, git, init_repo, write

from prbot.cli import main
from prbot.config import load_config
from prbot.errors import RemoteError
from prbot.remote import Remotes, allowed, parse_ref, public_address

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value}\n"
ENVS = "version: 1\nenvironments: [{name: dev}, {name: prod}]\napps:\n  - path: 'apps/{app}/envs/{env}'\n" \
       "    namespace: '{app}-{env}'\n"


class _Served(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []
    slow: dict[str, tuple[float, float, bytes]] = {}     # path -> (wait before answering, wait per byte, body)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        _Served.requests.append(self.path)
        slow = _Served.slow.get(self.path.split("?")[0])
        if slow is not None:
            self._trickle(*slow)
            return
        super().do_GET()

    def _trickle(self, before: float, pause: float, body: bytes) -> None:
        """A slow host: nothing for `before` seconds, then the headers and one byte every `pause`
        seconds — every single read gets something in time, only the whole takes long."""
        try:
            time.sleep(before)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(pause)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a directory: (its URL, the directory)."""
    root = tmp_path / "standin"
    root.mkdir()
    _Served.requests = []
    _Served.slow = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Served, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def remote_repo(root: Path, value: str, tag: str | None = "v1.0.0", files: dict[str, str] | None = None,
                links: dict[str, str] | None = None) -> str:
    """acme/infra: a git repository with a kustomize base (and `files`, path -> text, and symbolic
    `links`, path -> where it points), served over plain (dumb) HTTP."""
    work = init_repo(root.parent / f"work-{value}")
    write(work, "base/kustomization.yaml", "resources: [cm.yaml]\ncommonLabels: {from: remote}\n")
    write(work, "base/cm.yaml", CM.format(name="remote-config", value=value))
    write(work, "base/unused.yaml", "not read\n")
    for rel, text in (files or {}).items():
        write(work, rel, text)
    for rel, to in (links or {}).items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(to, work / rel)
    commit = commit_all(work, f"remote {value}")
    if tag:
        git(work, "tag", "-f", tag)
    bare = root / "acme" / "infra"
    if bare.exists():
        git(work, "push", "-q", "--force", "--tags", str(bare), "main")
    else:
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(work, "clone", "-q", "--bare", str(work), str(bare))
    git(bare, "update-server-info")
    return commit


def gitops(tmp_path: Path, remote_line: str, ref: str | None) -> tuple[Path, str]:
    repo = init_repo(tmp_path / "gitops")
    write(repo, ".prbot.yml", ENVS + remote_line)
    write(repo, "apps/web/envs/dev/kustomization.yaml", f"resources:\n  - cm.yaml\n  - {ref}\n" if ref
          else "resources:\n  - cm.yaml\n")
    write(repo, "apps/web/envs/dev/cm.yaml", CM.format(name="local", value="one"))
    write(repo, "apps/other/envs/dev/cm.yaml", CM.format(name="other", value="one"))
    return repo, commit_all(repo, "base")


def plan(repo: Path, base: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["plan", "--repo", str(repo), "--base", base, "--format", "json"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return code, json.loads(out)


def status(data: dict) -> dict[str, tuple[str, str | None]]:
    return {f"{t['app']}/{t['env']}": (t["status"], t["error"]) for t in data["targets"]}


REF = "https://github.com/acme/infra//base?ref=v1.0.0"


def test_a_remote_base_not_allowed_is_skipped_and_affected_only_by_local_inputs(
        tmp_path: Path, standin: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = gitops(tmp_path, "", REF)
    write(repo, "apps/other/envs/dev/cm.yaml", CM.format(name="other", value="two"))     # elsewhere
    code, data = plan(repo, base, capsys)
    assert code == 0 and list(status(data)) == ["other/dev"]         # not affected: its inputs did not change
    write(repo, "apps/web/envs/dev/cm.yaml", CM.format(name="local", value="two"))        # its own input
    code, data = plan(repo, base, capsys)
    got, note = status(data)["web/dev"]
    assert code == 1 and got == "skipped"                            # a blind spot fails the plan
    assert note is not None and REF in note and "render.remote" in note
    assert main(["plan", "--repo", str(repo), "--base", base]) == 1
    md = capsys.readouterr().out
    assert "❌ not rendered (remote input)" in md and "render.remote" in md and "vendor the input" in md
    assert _Served.requests == []


def test_an_allowed_remote_base_is_fetched_through_the_operators_stand_in(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://github.com/={url}/")
    remote_repo(served, "first")
    repo, base = gitops(tmp_path, 'render:\n  remote: ["https://github.com/acme/"]\n', None)
    write(repo, "apps/web/envs/dev/kustomization.yaml", f"resources:\n  - cm.yaml\n  - {REF}\n")
    code, data = plan(repo, base, capsys)
    [web] = [t for t in data["targets"] if t["app"] == "web"]
    assert code == 0 and web["status"] == "changed", web["error"]
    [added] = web["changes"]
    assert (added["name"], added["action"]) == ("remote-config", "added") and "from: remote" in added["diff"]
    assert _Served.requests                                          # fetched, from the stand-in
    fetched = len(_Served.requests)
    # a pinned ref is cached by URL and ref: the next plan fetches nothing
    code, again = plan(repo, base, capsys)
    assert again == data and len(_Served.requests) == fetched
    # a remote file too, and the objects of both reach the plan
    write(served, "acme/files/extra.yaml", CM.format(name="remote-file", value="x"))
    write(repo, "apps/web/envs/dev/kustomization.yaml",
          f"resources:\n  - cm.yaml\n  - {REF}\n  - https://github.com/acme/files/extra.yaml\n")
    code, data = plan(repo, base, capsys)
    [web] = [t for t in data["targets"] if t["app"] == "web"]
    assert web["status"] == "changed", web["error"]
    assert {"remote-file", "remote-config"} == {c["name"] for c in web["changes"]}
    assert "/acme/files/extra.yaml" in _Served.requests


def test_an_unpinned_remote_is_fetched_again_by_every_plan(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://github.com/={url}/")
    remote_repo(served, "first")
    ref = "https://github.com/acme/infra//base?ref=main"
    repo, base = gitops(tmp_path, 'render:\n  remote: ["https://github.com/acme/"]\n', None)
    write(repo, "apps/web/envs/dev/kustomization.yaml", f"resources:\n  - cm.yaml\n  - {ref}\n")
    code, data = plan(repo, base, capsys)
    [web] = [t for t in data["targets"] if t["app"] == "web"]
    assert web["status"] == "changed", web["error"]
    assert "key: first" in "\n".join(c["diff"] for c in web["changes"])
    remote_repo(served, "second", tag=None)                          # main moves upstream
    before = len(_Served.requests)
    code, data = plan(repo, base, capsys)
    [web] = [t for t in data["targets"] if t["app"] == "web"]
    assert len(_Served.requests) > before
    assert "key: second" in "\n".join(c["diff"] for c in web["changes"])    # not a stale cache entry


def test_a_loopback_or_private_remote_is_refused_even_when_listed(
        tmp_path: Path, standin: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, served = standin
    remote_repo(served, "first")
    port = url.rsplit(":", 1)[1]
    ref = f"https://localhost:{port}/acme/infra//base?ref=v1.0.0"
    repo, base = gitops(tmp_path, f'render:\n  remote: ["https://localhost:{port}/", "https://127.0.0.1:{port}/"]\n',
                        ref)
    write(repo, "apps/web/envs/dev/cm.yaml", CM.format(name="local", value="two"))
    code, data = plan(repo, base, capsys)
    got, message = status(data)["web/dev"]
    assert got == "error" and message is not None
    assert "not a public address: refused" in message                  # the DNS answer was checked
    write(repo, "apps/web/envs/dev/kustomization.yaml",
          f"resources:\n  - cm.yaml\n  - https://127.0.0.1:{port}/acme/infra//base?ref=v1.0.0\n")
    code, data = plan(repo, base, capsys)
    got, message = status(data)["web/dev"]
    assert got == "error" and message is not None and "127.0.0.1, which is not a public address" in message
    assert _Served.requests == []                                    # nothing reached it


def test_prefixes_match_whole_segments_and_hide_nothing() -> None:
    prefixes = ("https://github.com/acme/", "https://charts.example.com")
    assert allowed("https://github.com/acme/infra//base?ref=v1", prefixes)
    assert allowed("github.com/acme/infra/base?ref=v1", prefixes)              # kustomize's short form
    assert allowed("git::https://github.com/acme/infra.git//base", prefixes)
    assert allowed("https://charts.example.com/web-1.0.0.yaml", prefixes)
    for refused in ("https://github.com/acme-evil/x", "https://github.com/acme/../evil/x",
                    "https://github.com/acme/%2e%2e/evil", "https://charts.example.com.evil.io/x",
                    "https://charts.example.com@evil.io/x", "http://github.com/acme/x",
                    "git@github.com:acme/infra.git"):
        assert not allowed(refused, prefixes), refused
    assert parse_ref("https://github.com/acme/infra//base?ref=v1.2.3").pinned
    assert not parse_ref("https://github.com/acme/infra//base?ref=main").pinned
    assert parse_ref("git@github.com:acme/infra.git").kind == "unsupported"
    config = load_config(ENVS + 'render:\n  remote: ["https://github.com/acme/"]\n')
    assert config.render_remote == ("https://github.com/acme/",)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "10.0.0.1", "169.254.169.254", "192.168.1.1"])
def test_private_addresses_are_never_connected_to(host: str) -> None:
    with pytest.raises(RemoteError, match="not a public address"):
        public_address(host, 443)
    netloc = f"[{host}]" if ":" in host else host
    with pytest.raises(RemoteError, match="not a public address"):
        Remotes((f"https://{netloc}/",)).fetch(f"https://{netloc}/acme/x.yaml")


def chart_repository(served: Path, version: str = "1.2.0", links: bool = False) -> str:
    """charts/: a Helm chart repository (index.yaml + the packaged chart); returns the archive's sha256."""
    import hashlib
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, text in {"web/Chart.yaml": f"apiVersion: v2\nname: web\nversion: {version}\n",
                           "web/values.yaml": "greeting: hello\n",
                           "web/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
                                                    "  name: {{ .Release.Name }}-chart\n"
                                                    "data:\n  greeting: {{ .Values.greeting }}\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if links:
            info = tarfile.TarInfo("web/templates/leak.yaml")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            archive.addfile(info)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    write(served, f"charts/web-{version}.tgz", "")
    (served / f"charts/web-{version}.tgz").write_bytes(data)
    write(served, "charts/index.yaml", f"apiVersion: v1\nentries:\n  web:\n    - name: web\n      version: {version}\n"
                                       f"      digest: {digest}\n      urls: [web-{version}.tgz]\n")
    return digest


HELM = "helmCharts:\n  - name: web\n    repo: https://charts.example.com/charts\n    version: 1.2.0\n" \
       "    releaseName: site\n"


def test_an_allowed_chart_repository_is_fetched_and_checked(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from prbot.tools import which

    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://charts.example.com/={url}/")
    chart_repository(served)
    repo, base = gitops(tmp_path, 'render:\n  remote: ["https://charts.example.com/charts/"]\n', None)
    write(repo, "apps/web/envs/dev/kustomization.yaml", HELM)
    code, data = plan(repo, base, capsys)
    [web] = [t for t in data["targets"] if t["app"] == "web"]
    assert "/charts/index.yaml" in _Served.requests and "/charts/web-1.2.0.tgz" in _Served.requests
    if which("helm3"):              # kustomize's helmCharts need a Helm 3 (prbot tools install ships one)
        assert web["status"] == "added" or web["status"] == "changed", web["error"]
        assert any(c["name"] == "site-chart" and "greeting: hello" in c["diff"] for c in web["changes"])
    else:
        assert web["status"] == "error" and "helmCharts need Helm 3" in web["error"]
    # not listed: skipped; an archive whose digest is not the index's: refused
    write(repo, ".prbot.yml", ENVS)
    code, data = plan(repo, base, capsys)
    assert status(data)["web/dev"][0] == "skipped"
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "fresh-cache"))
    write(repo, ".prbot.yml", ENVS + 'render:\n  remote: ["https://charts.example.com/charts/"]\n')
    index = (served / "charts/index.yaml").read_text()
    (served / "charts/index.yaml").write_text(index.replace("digest: ", "digest: 00"))
    code, data = plan(repo, base, capsys)
    got, message = status(data)["web/dev"]
    assert got == "error" and message is not None and "not the digest the index gives" in message
    chart_repository(served, links=True)                             # a chart carrying a link out
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "fresh-cache-2"))
    code, data = plan(repo, base, capsys)
    got, message = status(data)["web/dev"]
    assert got == "error" and message is not None and "holds links" in message


# --------------------------------------------------------------------------------------------
# Remote inputs inside the operator's limits
# --------------------------------------------------------------------------------------------

ALLOW_FILES = 'render:\n  remote: ["https://github.com/acme/"]\n'
ALLOW_CHARTS = 'render:\n  remote: ["https://charts.example.com/charts/"]\n'


def one_line(message: str | None) -> str:
    assert message is not None and "\n" not in message and "Traceback" not in message, message
    return message


def serve_chart(served: Path, files: dict[str, bytes], version: str = "1.2.0") -> int:
    """charts/: a chart repository whose web-VERSION.tgz holds `files`; returns the archive's size."""
    import hashlib
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    write(served, f"charts/web-{version}.tgz", "")
    (served / f"charts/web-{version}.tgz").write_bytes(data)
    write(served, "charts/index.yaml", f"apiVersion: v1\nentries:\n  web:\n    - name: web\n      version: {version}\n"
                                       f"      digest: {hashlib.sha256(data).hexdigest()}\n"
                                       f"      urls: [web-{version}.tgz]\n")
    return len(data)


def cache_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_chart_archive_bomb_stops_at_the_remote_size_and_file_limits(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://charts.example.com/={url}/")
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PRBOT_REMOTE_SIZE", "1Mi")
    monkeypatch.setenv("PRBOT_REMOTE_FILES", "50")
    chart = {"web/Chart.yaml": b"apiVersion: v2\nname: web\nversion: 1.2.0\n"}
    # a small archive expanding to 64 MiB of zeros
    size = serve_chart(served, {**chart, "web/templates/bomb.yaml": bytes(64 * 1024 * 1024)})
    assert size < 200 * 1024
    repo, base = gitops(tmp_path, ALLOW_CHARTS, None)
    write(repo, "apps/web/envs/dev/kustomization.yaml", HELM)
    started = time.monotonic()
    code, data = plan(repo, base, capsys)
    got, message = status(data)["web/dev"]
    assert got == "error"
    assert "web-1.2.0.tgz: unpacks to more than the 1 MiB remote size limit (PRBOT_REMOTE_SIZE)" in one_line(message)
    assert cache_bytes(tmp_path / "cache") < 1024 * 1024                  # nothing of it was kept
    assert time.monotonic() - started < 30
    # too many files, each of them small
    serve_chart(served, {**chart, **{f"web/templates/cm-{i}.yaml": b"x: 1\n" for i in range(200)}})
    code, data = plan(repo, base, capsys)
    got, message = status(data)["web/dev"]
    assert got == "error"
    assert "web-1.2.0.tgz: holds more than the 50-file remote limit (PRBOT_REMOTE_FILES)" in one_line(message)
    assert not list((tmp_path / "cache" / "remote").glob("*/tree"))


def test_a_git_base_checking_out_too_many_files_is_refused(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The same bounds hold for a git checkout (a small pack can hold many files)."""
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://github.com/={url}/")
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PRBOT_REMOTE_FILES", "50")
    work = init_repo(tmp_path / "work-many")
    write(work, "base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(work, "base/cm.yaml", CM.format(name="remote-config", value="x"))
    for i in range(80):
        write(work, f"junk/{i}.txt", f"{i}\n")
    commit_all(work, "many files")
    git(work, "tag", "v1.0.0")
    bare = served / "acme" / "many"
    bare.parent.mkdir(parents=True)
    git(work, "clone", "-q", "--bare", str(work), str(bare))
    git(bare, "update-server-info")
    repo, base = gitops(tmp_path, ALLOW_FILES, None)
    write(repo, "apps/web/envs/dev/kustomization.yaml",
          "resources:\n  - cm.yaml\n  - https://github.com/acme/many//base?ref=v1.0.0\n")
    code, data = plan(repo, base, capsys)
    got, message = status(data)["web/dev"]
    assert got == "error"
    assert "the checkout: holds more than the 50-file remote limit (PRBOT_REMOTE_FILES)" in one_line(message)
    monkeypatch.setenv("PRBOT_REMOTE_FILES", "500")                   # the operator raises it: rendered
    code, data = plan(repo, base, capsys)
    got, message = status(data)["web/dev"]
    assert got == "changed", message


def test_a_slow_host_is_cut_off_after_the_total_fetch_time(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://github.com/={url}/")
    monkeypatch.setenv("PRBOT_REMOTE_TIMEOUT", "1s")
    # one byte every 50 ms: each read is answered at once, the whole would take ten minutes
    _Served.slow["/acme/files/slow.yaml"] = (0.0, 0.05, CM.format(name="slow", value="x").encode() * 300)
    repo, base = gitops(tmp_path, ALLOW_FILES, None)
    write(repo, "apps/web/envs/dev/kustomization.yaml",
          "resources:\n  - cm.yaml\n  - https://github.com/acme/files/slow.yaml\n")
    started = time.monotonic()
    code, data = plan(repo, base, capsys)
    took = time.monotonic() - started
    got, message = status(data)["web/dev"]
    assert got == "error"
    assert "slow.yaml: not fetched within the 1s remote fetch time limit (PRBOT_REMOTE_TIMEOUT)" in one_line(message)
    assert took < 15
    assert "/acme/files/slow.yaml" in _Served.requests


def test_a_host_that_does_not_answer_cannot_hold_the_plan_past_its_budget(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The fetch time is the plan's too: a chart index whose host waits before answering, a fetch
    time limit longer than the plan budget — the plan still ends on time, naming the budget."""
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://charts.example.com/={url}/")
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PRBOT_PLAN_BUDGET", "2s")
    monkeypatch.setenv("PRBOT_REMOTE_TIMEOUT", "10m")
    serve_chart(served, {"web/Chart.yaml": b"apiVersion: v2\nname: web\nversion: 1.2.0\n"})
    _Served.slow["/charts/index.yaml"] = (30.0, 0.0, (served / "charts/index.yaml").read_bytes())
    repo, base = gitops(tmp_path, ALLOW_CHARTS, None)
    write(repo, "apps/web/envs/dev/kustomization.yaml", HELM)
    started = time.monotonic()
    code, data = plan(repo, base, capsys)
    took = time.monotonic() - started
    got, message = status(data)["web/dev"]
    assert got == "error"
    assert "index.yaml: not fetched: the 2s plan time budget (PRBOT_PLAN_BUDGET) ran out" in one_line(message)
    assert took < 15


def test_query_string_variants_do_not_multiply_the_remote_cache(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://github.com/={url}/")
    monkeypatch.setenv("PRBOT_CACHE_SIZE", "64Ki")
    cache = tmp_path / "cache" / "remote"
    write(served, "acme/files/v1.0.0/extra.yaml", CM.format(name="remote-file", value="x" * 5000))
    pinned = "https://github.com/acme/files/v1.0.0/extra.yaml"
    for _ in range(2):                                   # two plans
        with Remotes(("https://github.com/acme/",), cache_dir=cache) as remotes:
            assert remotes.fetch(pinned).ident.startswith("sha256:")
            for i in range(10):
                got = remotes.fetch(f"{pinned}?a={i}")
                assert "x" * 5000 in (got.root / got.file).read_text()
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1   # only the URL without a query
    assert _Served.requests.count("/acme/files/v1.0.0/extra.yaml") == 1
    assert _Served.requests.count("/acme/files/v1.0.0/extra.yaml?a=3") == 2     # fetched by each plan, not kept
    # what one plan fetches outside the cache is bounded by the cache size as well
    with Remotes(("https://github.com/acme/",), cache_dir=cache) as remotes:
        with pytest.raises(RemoteError) as caught:
            for i in range(100):
                remotes.fetch(f"{pinned}?b={i}")
        scratch = remotes._scratch
        assert scratch is not None and cache_bytes(scratch) <= 64 * 1024
    assert "not kept: the remote inputs of this plan would hold more than the 64 KiB cache size limit " \
           "(PRBOT_CACHE_SIZE)" in one_line(str(caught.value))
    assert not scratch.exists()


def test_the_remote_cache_stays_inside_the_cache_size_least_recently_used_first(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinned remotes with different content (here: 30 versions) fill the cache: it stays inside
    PRBOT_CACHE_SIZE counted with the render entries beside it, the least recently used going first."""
    import os

    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://github.com/={url}/")
    monkeypatch.setenv("PRBOT_CACHE_SIZE", "64Ki")
    root = tmp_path / "cache"
    old_render = root / "ab" / ("ab" * 32 + ".json")
    write(root, old_render.relative_to(root).as_posix(), "{}" + " " * 20000)
    os.utime(old_render, (time.time() - 86400, time.time() - 86400))
    for i in range(30):
        write(served, f"acme/files/v1.0.{i}/extra.yaml", CM.format(name="remote-file", value=f"{i}" * 5000))
    first = "https://github.com/acme/files/v1.0.0/extra.yaml"
    for i in range(30):                                  # one plan after the other, each reading one version
        with Remotes(("https://github.com/acme/",), cache_dir=root / "remote") as remotes:
            remotes.fetch(f"https://github.com/acme/files/v1.0.{i}/extra.yaml")
            if i % 5 == 0:
                remotes.fetch(first)                     # used again and again: recently used
        assert cache_bytes(root) <= 64 * 1024
    assert not old_render.exists()                       # the render entry nobody used went first
    before = list(_Served.requests)
    with Remotes(("https://github.com/acme/",), cache_dir=root / "remote") as remotes:   # the next plan
        remotes.fetch(first)
        remotes.fetch("https://github.com/acme/files/v1.0.29/extra.yaml")
        assert _Served.requests == before                # both still cached
        remotes.fetch("https://github.com/acme/files/v1.0.1/extra.yaml")
        assert _Served.requests[len(before):] == ["/acme/files/v1.0.1/extra.yaml"]   # evicted: fetched again


def test_a_remote_file_on_a_branch_is_fetched_again_by_the_next_plan(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://github.com/={url}/")
    sha = "3" * 40
    write(served, "acme/files/raw/main/branch.yaml", CM.format(name="on-branch", value="first"))
    write(served, f"acme/files/raw/{sha}/pinned.yaml", CM.format(name="on-commit", value="first"))
    write(served, "acme/files/query.yaml", CM.format(name="pin-in-query", value="first"))
    repo, base = gitops(tmp_path, ALLOW_FILES, None)
    write(repo, "apps/web/envs/dev/kustomization.yaml",
          "resources:\n  - cm.yaml\n  - https://github.com/acme/files/raw/main/branch.yaml\n"
          f"  - https://github.com/acme/files/raw/{sha}/pinned.yaml\n"
          "  - https://github.com/acme/files/query.yaml?v=1.0.0\n")        # a version in the query pins nothing
    code, data = plan(repo, base, capsys)
    [web] = [t for t in data["targets"] if t["app"] == "web"]
    assert web["status"] == "changed", web["error"]
    diffs = {c["name"]: c["diff"] for c in web["changes"]}
    assert all("key: first" in diffs[n] for n in ("on-branch", "on-commit", "pin-in-query"))
    # upstream moves on
    for path in ("acme/files/raw/main/branch.yaml", f"acme/files/raw/{sha}/pinned.yaml", "acme/files/query.yaml"):
        (served / path).write_text((served / path).read_text().replace("first", "second"))
    _Served.requests.clear()
    code, data = plan(repo, base, capsys)
    [web] = [t for t in data["targets"] if t["app"] == "web"]
    diffs = {c["name"]: c["diff"] for c in web["changes"]}
    assert "key: second" in diffs["on-branch"] and "key: second" in diffs["pin-in-query"]   # not a stale copy
    assert "key: first" in diffs["on-commit"]                                               # pinned: kept
    assert sorted(_Served.requests) == ["/acme/files/query.yaml?v=1.0.0", "/acme/files/raw/main/branch.yaml"]
    assert not parse_ref("https://github.com/acme/files/raw/main/branch.yaml").pinned
    assert parse_ref(f"https://github.com/acme/files/raw/{sha}/pinned.yaml").pinned
    assert not parse_ref(f"https://github.com/acme/files/raw/{sha}/pinned.yaml?x=1").pinned


def test_bump_sees_through_an_allowed_remote_base_and_names_one_not_allowed(
        tmp_path: Path, standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://github.com/={url}/")
    work = init_repo(tmp_path / "work-app")
    write(work, "base/kustomization.yaml", "resources: [deployment.yaml]\n")
    write(work, "base/deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n"
          "  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n"
          "      containers: [{name: app, image: 'nginx:1.25'}]\n")
    commit_all(work, "remote app")
    git(work, "tag", "v1.0.0")
    bare = served / "acme" / "app"
    bare.parent.mkdir(parents=True)
    git(work, "clone", "-q", "--bare", str(work), str(bare))
    git(bare, "update-server-info")
    repo = init_repo(tmp_path / "gitops")
    write(repo, ".prbot.yml", ENVS + 'render:\n  remote: ["https://github.com/acme/app"]\n')
    write(repo, "apps/web/envs/dev/kustomization.yaml", "resources:\n  - https://github.com/acme/app//base?ref=v1.0.0\n")
    write(repo, "apps/other/envs/dev/kustomization.yaml", f"resources:\n  - {REF}\n")      # acme/infra: not allowed
    commit_all(repo, "gitops")
    code = main(["bump", "nginx:1.27", "--env", "dev", "--repo", str(repo)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == "web/dev: apps/web/envs/dev/kustomization.yaml 1.25 → 1.27\n"
    assert err == (f"prbot: not checked: other/dev: it reads {REF}, a remote input that render.remote in "
                   ".prbot.yml does not allow\n")
    assert (repo / "apps/web/envs/dev/kustomization.yaml").read_text().endswith(
        "images:\n  - name: nginx\n    newTag: \"1.27\"\n")
    assert not any("/acme/infra" in r for r in _Served.requests)        # the refused remote is never fetched

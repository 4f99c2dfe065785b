"""Remote inputs: skipped unless `render.remote` allows them; allowed ones
fetched by prbot through a guarded path — here from a local stand-in host that the operator maps in
with PRBOT_REMOTE_STANDINS (never the pull request) — and never from a loopback or private address."""

from __future__ import annotations

import functools
import http.server
import json
import threading
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

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        _Served.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a directory: (its URL, the directory)."""
    root = tmp_path / "standin"
    root.mkdir()
    _Served.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Served, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def remote_repo(root: Path, value: str, tag: str | None = "v1.0.0") -> str:
    """acme/infra: a git repository with a kustomize base, served over plain (dumb) HTTP."""
    work = init_repo(root.parent / f"work-{value}")
    write(work, "base/kustomization.yaml", "resources: [cm.yaml]\ncommonLabels: {from: remote}\n")
    write(work, "base/cm.yaml", CM.format(name="remote-config", value=value))
    write(work, "base/unused.yaml", "not read\n")
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

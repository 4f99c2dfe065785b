"""Remote charts fetched by prbot: from a real OCI registry (docker-registry, charts pushed with
`helm push`) and from a chart repository served over HTTPS with a self-signed certificate, both on
127.0.0.1 and reached only as the operator's stand-ins; for kustomize `helmCharts` and for Helm
targets whose chart is remote.  And what a hostile registry or chart cannot do."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import socket
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from stands import OciRegistry, helm_repository, https_chart_repository, make_chart, self_signed
from support import commit_all, init_repo, write

from prbot.cli import main
from prbot.errors import RemoteError
from prbot.remote import Remotes, chart_ref, parse_ref, pick_version, version_matches

ENVS = "version: 1\nenvironments: [{name: dev}, {name: prod}]\napps:\n  - path: 'apps/{app}/envs/{env}'\n" \
       "    namespace: '{app}-{env}'\n"


def plan(repo: Path, base: str, capsys: pytest.CaptureFixture[str]) -> dict:
    code = main(["plan", "--repo", str(repo), "--base", base, "--format", "json"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return json.loads(out)


def targets(data: dict) -> dict[str, dict]:
    return {f"{t['app']}/{t['env']}": t for t in data["targets"]}


def one_line(message: str | None) -> str:
    assert message is not None and "\n" not in message and "Traceback" not in message, message
    return message


# --------------------------------------------------------------------------------------------
# References and versions
# --------------------------------------------------------------------------------------------

def test_oci_chart_references_read_every_way_they_are_written() -> None:
    digest = "sha256:" + "ab" * 32
    for text in ("oci://registry.example.com/charts/web (version 1.2.0)", "oci://registry.example.com/charts/web:1.2.0",
                 chart_ref("oci://registry.example.com/charts", "web", "1.2.0")):
        ref = parse_ref(text)
        assert (ref.kind, ref.url, ref.path, ref.ref, ref.pinned) == \
            ("chart", "oci://registry.example.com/charts/web", "web", "1.2.0", True), text
    pinned = parse_ref(f"oci://registry.example.com/charts/web@{digest}")
    assert (pinned.kind, pinned.digest, pinned.pinned) == ("chart", digest, True)
    ranged = parse_ref("oci://registry.example.com/charts/web (version ^1.2)")
    assert (ranged.ref, ranged.pinned) == ("^1.2", False)
    assert parse_ref("oci://registry.example.com/charts/web@sha256:short").kind == "unsupported"
    assert parse_ref("oci://registry.example.com/charts/web:1.0.0 (version 2.0.0)").kind == "unsupported"


@pytest.mark.parametrize(("constraint", "want"), [
    ("", "2.1.0"), ("*", "2.1.0"), ("^1.2", "1.9.1"), ("~1.2.0", "1.2.5"), ("1.x", "1.9.1"),
    (">=1.0.0 <2.0.0", "1.9.1"), (">= 1.0, < 1.5", "1.2.5"), ("1.2.x || 2.x", "2.1.0"), (">=3", None),
    (">=2.2.0-0", "2.2.0-rc.1")])
def test_a_version_range_picks_the_highest_listed_version_in_it(constraint: str, want: str | None) -> None:
    assert pick_version(["1.0.0", "1.2.0", "1.2.5", "1.9.1", "2.1.0", "2.2.0-rc.1", "latest"], constraint) == want
    assert not version_matches("2.2.0-rc.1", "^2")          # a pre-release only when the range names one


# --------------------------------------------------------------------------------------------
# The real registry and the HTTPS chart repository, through a plan
# --------------------------------------------------------------------------------------------

def kustomize_chart(namespace: str, version: str) -> str:
    return (f"helmCharts:\n  - name: web\n    repo: oci://registry.example.com/{namespace}\n"
            f"    version: {version}\n    releaseName: site\n")


def helm_app(chart: str, version: str, repo: str = "") -> str:
    return (f"  - path: 'helm/{{env}}'\n    name: api\n    namespace: api\n    helm:\n      chart: '{chart}'\n"
            f"      version: '{version}'\n" + (f"      repo: '{repo}'\n" if repo else ""))


def test_charts_from_the_oci_registry_plan_for_helm_charts_and_helm_targets_and_are_cached(
        tmp_path: Path, registry: OciRegistry, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    ns = "plan-charts"
    registry.push(make_chart(tmp_path, "web", "1.0.0", "hello"), ns)
    registry.push(make_chart(tmp_path, "web", "1.1.0", "bonjour"), ns)
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"oci://registry.example.com/=oci://{registry.host}/")
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))
    allow = 'render:\n  remote: ["oci://registry.example.com/plan-charts/"]\n'
    repo = init_repo(tmp_path / "gitops")
    write(repo, ".prbot.yml", ENVS + helm_app(f"oci://registry.example.com/{ns}/web", "1.0.0") + allow)
    write(repo, "apps/web/envs/dev/kustomization.yaml", kustomize_chart(ns, "1.0.0"))
    write(repo, "helm/dev/values.yaml", "greeting: hi from values\n")
    base = commit_all(repo, "base")
    write(repo, ".prbot.yml", ENVS + helm_app(f"oci://registry.example.com/{ns}/web", "~1.1.0") + allow)
    write(repo, "apps/web/envs/dev/kustomization.yaml", kustomize_chart(ns, "1.1.0"))
    write(repo, "helm/dev/values.yaml", "greeting: hi again\n")
    head = commit_all(repo, "head: web 1.1.0")

    got = targets(plan(repo, base, capsys))
    web, api = got["web/dev"], got["api/dev"]
    assert web["status"] == "changed", web["error"]
    [change] = [c for c in web["changes"] if c["name"] == "site-chart"]
    assert "-  greeting: hello" in change["diff"] and "+  greeting: bonjour" in change["diff"]
    assert '+  version: 1.1.0' in change["diff"]
    # the Helm target: both sides render with the plan's one .prbot.yml (the head's here, ~1.1.0)
    assert api["status"] == "changed", api["error"]
    [change] = [c for c in api["changes"] if c["name"] == "api-dev-chart"]
    assert "-  greeting: hi from values" in change["diff"] and "+  greeting: hi again" in change["diff"]
    assert "   version: 1.1.0" in change["diff"]
    pulls = registry.requests(rf"GET /v2/{ns}/web/blobs/")
    assert len(pulls) == 2, pulls                # one layer per version: 1.0.0 and 1.1.0, each once
    assert registry.requests(rf"GET /v2/{ns}/web/tags/list")      # ~1.1.0 is a range: the tags were listed

    # a second plan (new renders: a fresh render cache) takes the charts from the remote cache
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache-2"))
    (tmp_path / "cache-2").mkdir()
    (tmp_path / "cache" / "remote").rename(tmp_path / "cache-2" / "remote")
    got = targets(plan(repo, base, capsys))
    assert (got["web/dev"]["status"], got["api/dev"]["status"]) == ("changed", "changed"), got
    assert len(registry.requests(rf"GET /v2/{ns}/web/blobs/")) == 2

    # a PR changing only the Helm target's values: that target alone is affected and planned
    write(repo, "helm/dev/values.yaml", "greeting: hi thrice\n")
    commit_all(repo, "values only")
    got = targets(plan(repo, head, capsys))
    assert got["api/dev"]["status"] == "changed", got["api/dev"]["error"]
    assert "+  greeting: hi thrice" in got["api/dev"]["changes"][0]["diff"]
    assert got.get("web/dev", {"status": "unaffected"})["status"] in ("unaffected", "unchanged")

    # a prefix render.remote does not list: named, not fetched
    write(repo, ".prbot.yml", ENVS + helm_app("oci://other.example.com/charts/web", "1.0.0") + allow)
    write(repo, "apps/web/envs/dev/kustomization.yaml",
          kustomize_chart(ns, "1.1.0").replace("registry.example.com", "other.example.com"))
    commit_all(repo, "not allowed")
    got = targets(plan(repo, base, capsys))
    for key in ("web/dev", "api/dev"):
        assert got[key]["status"] == "skipped", got[key]
        assert "oci://other.example.com/" in one_line(got[key]["error"])
        assert "render.remote" in got[key]["error"]


def test_charts_from_an_https_chart_repository_plan_trusting_its_certificate_only_as_a_stand_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    served = tmp_path / "served"
    helm_repository(served, [make_chart(tmp_path, "web", "1.0.0", "hello"),
                             make_chart(tmp_path, "web", "1.1.0", "bonjour")])
    cert, key = self_signed(tmp_path)
    with https_chart_repository(served, cert, key) as (url, hits):
        monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://charts.example.com/={url}/")
        monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))
        allow = 'render:\n  remote: ["https://charts.example.com/charts/"]\n'
        helm = ("helmCharts:\n  - name: web\n    repo: https://charts.example.com/charts\n"
                "    version: {v}\n    releaseName: site\n")
        repo = init_repo(tmp_path / "gitops")
        write(repo, ".prbot.yml", ENVS + helm_app("web", "1.0.0", "https://charts.example.com/charts") + allow)
        write(repo, "apps/web/envs/dev/kustomization.yaml", helm.format(v="1.0.0"))
        write(repo, "helm/dev/values.yaml", "greeting: hi from values\n")
        base = commit_all(repo, "base")
        write(repo, ".prbot.yml", ENVS + helm_app("https://charts.example.com/charts/web", "1.1.0") + allow)
        write(repo, "apps/web/envs/dev/kustomization.yaml", helm.format(v="1.1.0"))
        write(repo, "helm/dev/values.yaml", "greeting: hi again\n")
        commit_all(repo, "head")

        got = targets(plan(repo, base, capsys))        # the self-signed certificate is not trusted
        assert got["web/dev"]["status"] == "error" and "SSLError" in one_line(got["web/dev"]["error"])
        assert hits == []

        monkeypatch.setenv("PRBOT_REMOTE_CA", str(cert))
        got = targets(plan(repo, base, capsys))
        web, api = got["web/dev"], got["api/dev"]
        assert web["status"] == "changed", web["error"]
        [change] = [c for c in web["changes"] if c["name"] == "site-chart"]
        assert "-  greeting: hello" in change["diff"] and "+  greeting: bonjour" in change["diff"]
        assert api["status"] == "changed", api["error"]
        [change] = [c for c in api["changes"] if c["name"] == "api-dev-chart"]
        assert "+  greeting: hi again" in change["diff"] and "   version: 1.1.0" in change["diff"]
        assert sorted(h for h in hits if h.endswith(".tgz")) == ["/charts/web-1.0.0.tgz", "/charts/web-1.1.0.tgz"]


def test_a_chart_pinned_by_digest_is_fetched_once_and_checked(
        tmp_path: Path, registry: OciRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = registry.push(make_chart(tmp_path, "pinned", "2.0.0", "hello"), "pins")
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"oci://registry.example.com/=oci://{registry.host}/")
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))
    for _ in range(2):                              # the second time from the cache, asking nothing
        with Remotes(("oci://registry.example.com/pins/",)) as remotes:
            chart = remotes.chart_dir(f"oci://registry.example.com/pins/pinned@{digest}")
            assert "version: 2.0.0" in (chart / "Chart.yaml").read_text()
    assert len(registry.requests(r"GET /v2/pins/pinned/manifests/")) == 1
    other = "sha256:" + "0" * 64                    # a digest the registry does not hold
    with Remotes(("oci://registry.example.com/pins/",)) as remotes, pytest.raises(RemoteError, match="HTTP 404"):
        remotes.chart_dir(f"oci://registry.example.com/pins/pinned@{other}")


# --------------------------------------------------------------------------------------------
# A hostile registry
# --------------------------------------------------------------------------------------------

class Hostile:
    """A registry on 127.0.0.1 answering what a test tells it: path -> (status, headers, body)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, dict[str, str], bytes]] = {}
        self.hits: list[str] = []
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                hits.append(self.path)
                status, headers, body = routes.get(self.path.split("?")[0], (404, {}, b"{}"))
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def chart(self, layer: bytes, *, size: int | None = None, digest: str | None = None,
              blob: bytes | None = None, blob_answer: tuple[int, dict[str, str]] | None = None) -> None:
        """charts/web:1.0.0: a manifest naming `layer` (or the size/digest given), the blob `blob`."""
        digest = digest or "sha256:" + hashlib.sha256(layer).hexdigest()
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json",
                                          "digest": "sha256:" + "1" * 64, "size": 2},
                               "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                                           "digest": digest, "size": len(layer) if size is None else size}]}).encode()
        kind = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        self.routes["/v2/charts/web/manifests/1.0.0"] = (200, kind, manifest)
        status, headers = blob_answer or (200, {})
        self.routes[f"/v2/charts/web/blobs/{digest}"] = (status, headers, layer if blob is None else blob)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hostile]:
    server = Hostile()
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"oci://evil.example.com/=oci://{server.host}/")
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))
    try:
        yield server
    finally:
        server.close()


def archive(members: dict[str, bytes], *, link: tuple[str, str] | None = None, level: int = 6) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=level) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type = tarfile.SYMTYPE
            info.linkname = link[1]
            tar.addfile(info)
    return buf.getvalue()


GOOD = {"web/Chart.yaml": b"apiVersion: v2\nname: web\nversion: 1.0.0\n", "web/values.yaml": b"{}\n"}
EVIL = "oci://evil.example.com/charts/web (version 1.0.0)"


def fetch(text: str = EVIL, prefixes: tuple[str, ...] = ("oci://evil.example.com/charts/",)) -> str:
    with Remotes(prefixes) as remotes, pytest.raises(RemoteError) as caught:
        remotes.chart_dir(text)
    return one_line(str(caught.value))


def test_a_good_chart_from_the_hostile_stand_is_fetched(hostile: Hostile) -> None:
    hostile.chart(archive(GOOD))                    # the stand itself works: the refusals below are real
    with Remotes(("oci://evil.example.com/charts/",)) as remotes:
        assert (remotes.chart_dir(EVIL) / "Chart.yaml").is_file()


def test_a_chart_layer_whose_digest_is_not_the_manifests_is_refused(hostile: Hostile) -> None:
    layer = archive(GOOD)
    hostile.chart(layer, blob=archive({**GOOD, "web/templates/evil.yaml": b"kind: Secret\n"}))
    assert "not the digest the manifest gives: refused" in fetch()
    hostile.chart(layer, blob=layer + b"more")       # the right digest's bytes and then some
    assert "not the digest the manifest gives" in fetch()


def test_a_manifest_pinned_by_digest_must_be_that_manifest(hostile: Hostile) -> None:
    hostile.chart(archive(GOOD))
    hostile.routes[f"/v2/charts/web/manifests/sha256:{'e' * 64}"] = hostile.routes["/v2/charts/web/manifests/1.0.0"]
    message = fetch(f"oci://evil.example.com/charts/web@sha256:{'e' * 64}")
    assert "the registry answered another manifest" in message


def test_a_huge_layer_or_a_tar_bomb_stops_at_the_remote_limits(
        hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRBOT_REMOTE_SIZE", "1M")
    monkeypatch.setenv("PRBOT_REMOTE_FILES", "50")
    hostile.chart(archive(GOOD), size=10 << 30)    # a manifest naming a 10 GiB layer: not even asked for
    message = fetch()
    assert "its chart layer is 10 GiB, more than" in message and "(PRBOT_REMOTE_SIZE)" in message
    assert not any("/blobs/" in h for h in hostile.hits)
    bomb = archive({**GOOD, "web/zeros": b"\0" * (200 << 20)}, level=9)     # ~200 KB expanding to 200 MB
    hostile.chart(bomb)
    message = fetch()
    assert "unpacks to more than" in message and "(PRBOT_REMOTE_SIZE)" in message
    hostile.chart(archive({**GOOD, **{f"web/templates/f{i}.yaml": b"" for i in range(200)}}))
    message = fetch()
    assert "holds more than" in message and "(PRBOT_REMOTE_FILES)" in message
    small = archive(GOOD)                           # a small layer named, a big blob sent
    hostile.chart(small, blob=small + b"\0" * (3 << 20))
    message = fetch()
    assert "larger than" in message and "(PRBOT_REMOTE_SIZE)" in message


def test_a_registry_redirecting_the_blob_elsewhere_is_refused(hostile: Hostile) -> None:
    layer = archive(GOOD)
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    for where in ("http://10.0.0.1/blob", f"http://{hostile.host}.nip.io/blob", "https://cdn.example.net/blob",
                  "http://169.254.169.254/latest/meta-data/"):
        hostile.chart(layer, blob_answer=(307, {"Location": where}))
        message = fetch()
        assert "redirected (307)" in message and "render.remote does not allow: refused" in message
    assert [h for h in hostile.hits if "/blobs/" in h] == [f"/v2/charts/web/blobs/{digest}"] * 4
    # a redirect to a URL render.remote does allow, whose host is not public: refused all the same
    hostile.chart(layer, blob_answer=(307, {"Location": "https://localhost/blob"}))
    message = fetch(prefixes=("oci://evil.example.com/charts/", "https://localhost/"))
    assert "not a public address: refused" in message


def test_an_oci_reference_with_credentials_or_to_a_private_port_is_refused(hostile: Hostile) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    try:
        message = fetch(f"oci://admin:hunter2@127.0.0.1:{port}/charts/web:1.0.0",
                        prefixes=("oci://127.0.0.1/", f"oci://127.0.0.1:{port}/"))
        assert "refused" in message and "hunter2" not in message and "admin" not in message
        message = fetch(f"oci://evil.example.com@127.0.0.1:{port}/charts/web:1.0.0")
        assert "refused" in message
        message = fetch(f"oci://localhost:{port}/charts/web:1.0.0", prefixes=(f"oci://localhost:{port}/",))
        assert "not a public address: refused" in message
        with pytest.raises(TimeoutError):
            listener.accept()                       # nothing ever connected to the private port
    finally:
        listener.close()
    assert hostile.hits == []


@pytest.mark.parametrize(("members", "link"), [
    ({**GOOD, "web/../../escape.yaml": b"x\n"}, None),
    ({**GOOD, "/etc/cron.d/evil": b"x\n"}, None),
    (GOOD, ("web/templates/leak.yaml", "/etc/passwd")),
    (GOOD, ("web/templates/up.yaml", "../../../outside")),
])
def test_a_chart_with_paths_out_or_links_is_refused(
        hostile: Hostile, tmp_path: Path, members: dict[str, bytes], link: tuple[str, str] | None) -> None:
    hostile.chart(archive(members, link=link))
    assert "not a chart archive of web (or it holds links)" in fetch()
    assert not (tmp_path / "escape.yaml").exists() and not (tmp_path / "cache" / "escape.yaml").exists()


def test_a_layer_that_is_not_gzip_or_no_chart_is_refused(hostile: Hostile) -> None:
    hostile.chart(b"not a gzip stream at all")
    assert "cannot be unpacked" in fetch()
    hostile.chart(archive({"web/values.yaml": b"{}\n"}))
    assert "holds no web/Chart.yaml" in fetch()
    hostile.chart(gzip.compress(b"\0" * 1024))       # an empty tar
    assert "holds no web/Chart.yaml" in fetch()


def test_a_remote_chart_in_prbot_yml_is_checked_as_a_remote_chart(tmp_path: Path) -> None:
    from prbot.config import load_config
    from prbot.errors import ConfigError
    from prbot.targets import check_config, discover_targets

    base = "version: 1\nenvironments: [{name: dev}]\napps:\n  - path: 'helm/{env}'\n    name: api\n"
    ok = load_config(base + "    helm: {chart: 'oci://registry.example.com/charts/web', version: '1.0.0'}\n")
    assert ok.apps[0].helm is not None
    assert ok.apps[0].helm.reference == "oci://registry.example.com/charts/web (version 1.0.0)"
    for bad, says in [("{chart: charts/web, version: '1.0.0'}", "is for a remote chart"),
                      ("{repo: 'http://charts.example.com', chart: web}", "must be an https:// chart repository"),
                      ("{repo: 'https://charts.example.com'}", "repo: needs chart:"),
                      ("{repo: 'https://charts.example.com', chart: 'a/b'}", "a remote chart is oci://")]:
        with pytest.raises(ConfigError) as caught:
            load_config(base + f"    helm: {bad}\n")
        assert any(says in e for e in caught.value.errors), (bad, caught.value.errors)
    # check-config does not look for a chart directory; the target is a Helm target reading the chart
    repo = init_repo(tmp_path / "gitops")
    write(repo, ".prbot.yml", base + "    helm: {chart: 'oci://registry.example.com/charts/web'}\n")
    write(repo, "helm/dev/values.yaml", "greeting: hi\n")
    assert check_config(repo) == []
    [target] = discover_targets(load_config((repo / ".prbot.yml").read_text()), repo)
    assert (target.renderer, target.chart, target.values) == \
        ("helm", "oci://registry.example.com/charts/web (chart)", ("helm/dev/values.yaml",))


@pytest.mark.parametrize(("realm", "says"), [
    ("http://10.0.0.1/token", "only https:// is fetched"),
    ("https://localhost:1/token", "not a public address: refused"),
    ("https://169.254.169.254/latest/api/token", "not a public address: refused")])
def test_a_token_service_the_registry_names_is_held_to_the_same_rules(
        hostile: Hostile, realm: str, says: str) -> None:
    hostile.chart(archive(GOOD))
    challenge = {"Www-Authenticate": f'Bearer realm="{realm}",service="evil",scope="repository:charts/web:pull"'}
    hostile.routes["/v2/charts/web/manifests/1.0.0"] = (401, challenge, b'{"errors":[]}')
    assert says in fetch()
    assert hostile.hits == ["/v2/charts/web/manifests/1.0.0"]     # asked once, no retries

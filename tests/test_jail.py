"""The render jail: every renderer process sees only its staged closure, a scratch home and the
tool binary, has no network, runs as an unprivileged user, and nothing renders where the jail
cannot be made (unless the operator turns isolation off, which the log says).

Attacks are PR content a renderer evaluates (a chart's values schema with `$ref`s, kustomize
helmCharts) and, for the class as a whole, any process run in the jail looking around the host.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import commit_all, init_repo, recording_server, write

from prbot import sandbox, tools
from prbot.cli import main
from prbot.errors import ToolError
from prbot.limits import Limits

CANARY = "prbot-canary-7f3a9c"


@pytest.fixture(autouse=True)
def _jailed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PRBOT_RENDER_ISOLATION", raising=False)
    sandbox.reset_isolation()
    yield
    sandbox.reset_isolation()


@pytest.fixture
def host_secret(tmp_path: Path) -> Path:
    """A file on the host, outside any render, holding a JSON value a schema `$ref` could show."""
    secret = tmp_path / "host" / "secret.json"
    secret.parent.mkdir()
    secret.write_text(json.dumps({"type": "object", "properties": {CANARY: {"type": "string"}},
                                  "required": [CANARY]}))
    return secret


class _Hits:
    hits: list[str] = []         # the paths the server was asked for, this test


@pytest.fixture
def server() -> Iterator[str]:
    body = json.dumps({"type": "object", "required": [CANARY]}).encode()
    with recording_server(body) as (url, hits):
        _Hits.hits = hits
        yield url


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    tree, home = tmp_path / "render" / "tree", tmp_path / "render" / "home"
    tree.mkdir(parents=True)
    home.mkdir(parents=True)
    return tree, home


def _chart(directory: Path, schema: dict[str, object]) -> None:
    (directory / "templates").mkdir(parents=True)
    (directory / "Chart.yaml").write_text("apiVersion: v2\nname: c\nversion: 0.1.0\n")
    (directory / "values.yaml").write_text("replicas: 1\n")
    (directory / "values.schema.json").write_text(json.dumps(schema))
    (directory / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  replicas: {{ .Values.replicas | quote }}\n")


def _run(argv: list[str], tree: Path, home: Path) -> str:
    try:
        return sandbox.run_tool(argv, cwd=tree, home=home, label="tool", limits=Limits())
    except ToolError as exc:
        return f"ERROR {exc}"


# ------------------------------------------------------------------ what a jailed process sees

def test_a_jailed_process_sees_only_its_tree_home_and_binary(tmp_path: Path) -> None:
    """The class: whatever runs in the jail, the host's files are not there to be read."""
    tree, home = _dirs(tmp_path)
    (tree / "mine.yaml").write_text("kind: mine\n")
    ls = shutil.which("ls")
    assert ls is not None
    root = _run([ls, "-a", "/"], tree, home).split()
    assert "etc" not in root and "home" not in root and "proc" not in root and "root" not in root
    assert "mine.yaml" in _run([ls, os.fspath(tree)], tree, home)
    cat = shutil.which("cat")
    assert cat is not None
    for host_path in ("/etc/passwd", "/etc/hostname", "/proc/1/environ", os.path.expanduser("~/.gitconfig"),
                      os.fspath(Path(__file__).resolve())):
        out = _run([cat, host_path], tree, home)
        assert out.startswith("ERROR") and "No such file" in out, (host_path, out)


def test_the_jail_runs_as_an_unprivileged_user_without_a_network(tmp_path: Path, server: str) -> None:
    tree, home = _dirs(tmp_path)
    ident = shutil.which("id")
    assert ident is not None
    assert _run([ident, "-u"], tree, home).strip() == str(sandbox.JAIL_UID)
    kubectl = tools.which("kubectl")
    assert kubectl is not None
    (tree / "kustomization.yaml").write_text(f"resources:\n- {server}/remote.yaml\n")
    out = _run([kubectl, "kustomize", "."], tree, home)
    assert out.startswith("ERROR") and _Hits.hits == []


def test_the_process_cannot_reach_the_cache_or_data_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """A variant: prbot's own directories (render cache, data dir) are host files like any other."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "entry.json").write_text(CANARY)
    monkeypatch.setenv("PRBOT_CACHE_DIR", os.fspath(cache))
    tree, home = _dirs(tmp_path)
    cat = shutil.which("cat")
    assert cat is not None
    out = _run([cat, os.fspath(cache / "entry.json")], tree, home)
    assert CANARY not in out and "No such file" in out


# ------------------------------------------------------------------ the renderers' own vectors

def test_a_chart_schema_ref_to_a_host_file_reads_nothing(tmp_path: Path, host_secret: Path) -> None:
    """helm (Helm 4 targets) resolves `$ref` in values.schema.json: in the jail the file is not
    there, so its existence, first byte and fields stay unknown."""
    tree, home = _dirs(tmp_path)
    _chart(tree, {"$ref": f"file://{host_secret}"})
    helm = tools.which("helm")
    assert helm is not None
    out = _run([helm, "template", "r", "."], tree, home)
    assert out.startswith("ERROR") and CANARY not in out and "no such file" in out.lower()
    # and the same chart unjailed does read it: the attack is real
    os.environ["PRBOT_RENDER_ISOLATION"] = "off"
    try:
        sandbox.reset_isolation()
        unjailed = _run([helm, "template", "r", "."], tree, home)
    finally:
        del os.environ["PRBOT_RENDER_ISOLATION"]
        sandbox.reset_isolation()
    assert CANARY in unjailed


def test_kustomize_helm_charts_resolve_schema_refs_inside_the_jail(tmp_path: Path, host_secret: Path,
                                                                   server: str) -> None:
    """kustomize's helmCharts run Helm 3 (`--helm-command`): a schema `$ref` to a host file or to a
    loopback URL reaches neither."""
    tree, home = _dirs(tmp_path)
    for name, ref in (("filechart", f"file://{host_secret}"), ("netchart", f"{server}/schema.json")):
        _chart(tree / "charts" / name, {"$ref": ref})
    (tree / "kustomization.yaml").write_text(
        "helmCharts:\n- name: filechart\n  releaseName: a\n- name: netchart\n  releaseName: b\n")
    kubectl, helm3 = tools.which("kubectl"), tools.which("helm3") or tools.which("helm")
    assert kubectl is not None and helm3 is not None
    out = _run([kubectl, "kustomize", "--enable-helm", "--helm-command", helm3, "."], tree, home)
    assert out.startswith("ERROR") and CANARY not in out
    assert _Hits.hits == []


# ------------------------------------------------------------------ fail closed

def test_without_bubblewrap_nothing_renders_and_the_error_says_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubectl = tools.which("kubectl")
    assert kubectl is not None
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", os.fspath(empty))        # no bwrap on PATH
    sandbox.reset_isolation()
    tree, home = _dirs(tmp_path)
    (tree / "kustomization.yaml").write_text("resources: []\n")
    with pytest.raises(ToolError) as err:
        sandbox.run_tool([kubectl, "kustomize", "."], cwd=tree, home=home, label="kubectl kustomize",
                         limits=Limits())
    message = str(err.value)
    assert "bubblewrap (bwrap) is not installed" in message and "PRBOT_RENDER_ISOLATION=off" in message
    assert "\n" not in message and err.value.transient


def test_a_jail_the_kernel_refuses_is_named_with_bwraps_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A variant: bwrap is there but cannot make the jail (a container's seccomp profile, user
    namespaces off): its own message is passed on, and nothing renders."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    bwrap = fake / "bwrap"
    bwrap.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    bwrap.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    sandbox.reset_isolation()
    problem = sandbox.jail_problem()
    assert problem is not None and "No permissions to create new namespace" in problem


def test_isolation_off_is_the_operators_explicit_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRBOT_RENDER_ISOLATION", "off")
    monkeypatch.setenv("PATH", os.fspath(tmp_path))      # no bwrap needed
    sandbox.reset_isolation()
    assert sandbox.isolation() == "off"
    tree, home = _dirs(tmp_path)
    cat = shutil.which("cat", path="/usr/bin:/bin")
    assert cat is not None
    (tmp_path / "host.txt").write_text(CANARY)
    assert CANARY in _run([cat, os.fspath(tmp_path / "host.txt")], tree, home)


# ------------------------------------------------------------------ defence in depth: the closure

def _plan_json(repo: Path, base: str, head: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    code = main(["plan", "--repo", str(repo), "--base", base, "--head", head, "--format", "json"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("ref", ["file:///etc/passwd", "http://127.0.0.1:9/x.json", "/etc/passwd",
                                 "other.json#/x", "https://json-schema.org/draft-07/schema#/definitions/x"])
def test_schema_references_outside_the_schema_are_refused_before_rendering(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], ref: str) -> None:
    """A chart's values schema may refer only inside itself: a `$ref` to a file, a URL or another
    schema file is refused by the closure, for Helm targets and kustomize helmCharts alike — nothing
    runs; an inert `#/definitions/…` reference and the standard `$schema` URI render."""
    repo = init_repo(tmp_path / "gitops")
    write(repo, ".prbot.yml", "version: 1\nenvironments: [{name: dev}]\napps:\n"
                              "- path: charts/{app}/envs/{env}\n- path: kust/{app}/envs/{env}\n")
    for where in ("charts/h/envs/dev", "charts/ok/envs/dev", "kust/k/envs/dev/charts/c"):
        _chart(repo / where, {"$schema": "https://json-schema.org/draft-07/schema#",
                              "definitions": {"r": {"type": "integer"}},
                              "properties": {"replicas": {"$ref": "#/definitions/r"}}})
    write(repo, "kust/k/envs/dev/kustomization.yaml", "helmCharts:\n- name: c\n  releaseName: c\n")
    base = commit_all(repo, "base")
    bad = {"properties": {"replicas": {"$ref": ref}}}
    (repo / "charts/h/envs/dev/values.schema.json").write_text(json.dumps(bad))
    (repo / "kust/k/envs/dev/charts/c/values.schema.json").write_text(json.dumps({"allOf": [bad]}))
    (repo / "charts/ok/envs/dev/values.yaml").write_text("replicas: 2\n")
    head = commit_all(repo, "head")
    data = _plan_json(repo, base, head, capsys)
    by = {t["app"]: t for t in data["targets"]}
    for app in ("h", "k"):
        assert by[app]["status"] == "error" and "refers outside the schema" in by[app]["error"], by[app]
        assert ref[:40] in by[app]["error"]
    assert by["ok"]["status"] == "changed"


def test_a_plan_rendered_unisolated_says_so_in_its_footer_and_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    repo = init_repo(tmp_path / "gitops")
    write(repo, ".prbot.yml", "version: 1\nenvironments: [{name: dev}]\napps:\n- path: apps/{app}/envs/{env}\n")
    write(repo, "apps/a/envs/dev/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '1'}\n")
    base = commit_all(repo, "base")
    write(repo, "apps/a/envs/dev/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '2'}\n")
    head = commit_all(repo, "head")
    jailed = _plan_json(repo, base, head, capsys)
    assert "isolation" not in jailed
    assert main(["plan", "--repo", str(repo), "--base", base, "--head", head]) == 0
    assert "without isolation" not in capsys.readouterr().out
    monkeypatch.setenv("PRBOT_RENDER_ISOLATION", "off")
    sandbox.reset_isolation()
    assert _plan_json(repo, base, head, capsys)["isolation"] == "off"
    assert main(["plan", "--repo", str(repo), "--base", base, "--head", head]) == 0
    assert "Rendered without isolation" in capsys.readouterr().out


# ------------------------------------------------------------------ working-tree plans

def _worktree_repo(tmp_path: Path) -> tuple[Path, str]:
    repo = init_repo(tmp_path / "checkout")
    write(repo, ".prbot.yml", "version: 1\nenvironments: [{name: dev}]\napps:\n- path: apps/{app}/envs/{env}\n")
    write(repo, ".gitignore", ".env\n")
    for app in ("a", "b"):
        write(repo, f"apps/{app}/envs/dev/kustomization.yaml", "resources: [cm.yaml]\n")
        write(repo, f"apps/{app}/envs/dev/cm.yaml",
              f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {app}}}\ndata: {{x: '1'}}\n")
    base = commit_all(repo, "base")
    # where CI checkouts keep their credentials, and a developer's ignored secrets
    with open(repo / ".git" / "config", "a") as fh:
        fh.write(f'[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic {CANARY}\n')
    write(repo, ".env", f"TOKEN={CANARY}\n")
    return repo, base


def _worktree_plan(repo: Path, base: str, capsys: pytest.CaptureFixture[str],
                   *extra: str) -> tuple[dict[str, Any], str]:
    code = main(["plan", "--repo", str(repo), "--base", base, "--format", "json", *extra])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    main(["plan", "--repo", str(repo), "--base", base, *extra])
    md = capsys.readouterr()
    return json.loads(out), out + md.out + md.err + err


@pytest.mark.parametrize("leak", [".git/config", ".env", ".git/../.git/config"])
def test_a_working_tree_plan_never_reads_git_or_ignored_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], leak: str) -> None:
    """`prbot plan --base REV` on a PR checkout: a link the PR adds to `.git/config` (the CI token)
    or to an ignored `.env` renders nothing of them, with or without --untracked."""
    repo, base = _worktree_repo(tmp_path)
    (repo / "apps/a/envs/dev/leak.txt").symlink_to(Path("../../../..") / leak)
    write(repo, "apps/a/envs/dev/kustomization.yaml",
          "resources: [cm.yaml]\nconfigMapGenerator:\n- name: leak\n  files: [leak.txt]\n")
    write(repo, "apps/b/envs/dev/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {x: '2'}\n")
    commit_all(repo, "the PR's link")       # tracked, as a PR's files are
    for extra in ((), ("--untracked",)):
        data, text = _worktree_plan(repo, base, capsys, *extra)
        assert CANARY not in text
        by = {t["app"]: t for t in data["targets"]}
        assert by["a"]["status"] == "error" and by["b"]["status"] == "changed"


def test_untracked_files_are_planned_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = _worktree_repo(tmp_path)
    write(repo, "apps/a/envs/dev/kustomization.yaml", "resources: [cm.yaml, new.yaml]\n")   # tracked change
    write(repo, "apps/a/envs/dev/new.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: new}\n")  # untracked
    data, _ = _worktree_plan(repo, base, capsys)
    [a] = [t for t in data["targets"] if t["app"] == "a"]
    assert a["status"] == "error" and "new.yaml" in a["error"]
    data, _ = _worktree_plan(repo, base, capsys, "--untracked")
    [a] = [t for t in data["targets"] if t["app"] == "a"]
    assert a["status"] == "changed" and any(c["name"] == "new" for c in a["changes"])


def test_a_tracked_directory_replaced_by_a_link_out_of_the_checkout_is_not_exported(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A variant: on disk, a tracked directory became a link to a directory outside the checkout
    holding files of the same names; the plan reads none of them."""
    repo, base = _worktree_repo(tmp_path)
    outside = tmp_path / "outside"
    write(outside, "kustomization.yaml", "resources: [cm.yaml]\n")
    write(outside, "cm.yaml", f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: b}}\ndata: {{x: {CANARY}}}\n")
    shutil.rmtree(repo / "apps/b/envs/dev")
    (repo / "apps/b/envs/dev").symlink_to(outside)
    data, text = _worktree_plan(repo, base, capsys)
    assert CANARY not in text


# ------------------------------------------------------------------ as the container image runs it

def test_an_unprivileged_service_user_renders_in_the_jail(tmp_path: Path) -> None:
    """The image runs prbot as user 65534: the jail is made without root (an unprivileged user
    namespace), and a render in it works.  Run here as that user (through setpriv when the tests
    run as root), with the system's Python and prbot's sandbox module alone."""
    import subprocess
    import sys
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="prbot-uid-", dir="/tmp"))
    try:
        work.chmod(0o755)
        tree, home = work / "tree", work / "home"
        for d in (tree, home):
            d.mkdir()
        kubectl = tools.which("kubectl")
        assert kubectl is not None
        shutil.copy(kubectl, work / "kubectl")
        (tree / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
        (tree / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: jailed}\n")
        # the checkout may sit where user 65534 cannot read (a private temporary directory):
        # the package goes beside the tree, readable by that user
        shutil.copytree(Path(__file__).resolve().parent.parent / "prbot", work / "lib" / "prbot",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for path in [work / "lib", *(work / "lib").rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        project = work / "lib"
        code = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path; "
                "from prbot import sandbox; from prbot.limits import Limits; "
                "print(sandbox.isolation(), sandbox.jail_problem()); "
                "print(sandbox.run_tool([sys.argv[2], 'kustomize', '.'], cwd=Path(sys.argv[3]), "
                "home=Path(sys.argv[4]), label='kubectl', limits=Limits()))")
        argv = ["/usr/bin/python3", "-c", code, str(project), str(work / "kubectl"), str(tree), str(home)]
        if os.geteuid() == 0:
            for d in (tree, home):
                os.chown(d, 65534, 65534)
            argv = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *argv]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.startswith("jail None\n") and "name: jailed" in proc.stdout
        assert sys.platform.startswith("linux")
    finally:
        shutil.rmtree(work, ignore_errors=True)

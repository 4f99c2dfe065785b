"""Every stage of a plan is bounded (issue 14): objects per target, bytes parsed and where, the plan's
time budget through comparing and validating, symbolic link loops and chains, the exported tree.
Each test is an attack a pull request can make, run through `prbot plan` as a user runs it, with
real git repositories and real helm / kubectl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import PROJECT, commit_all, git, init_repo, write

from prbot.cli import main
from prbot.limits import Limits

CONFIG = ("version: 1\nenvironments:\n  - name: dev\napps:\n  - path: \"apps/{app}\"\n"
          "  - name: flood\n    path: \"charts/flood\"\n")
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value}\n"
FLOOD = ("{{- range $i := until (int .Values.count) }}\n---\napiVersion: v1\nkind: ConfigMap\n"
         "metadata:\n  name: c{{ $i }}\ndata:\n  k: v{{ $i }}\n{{- end }}\n")      # 140 bytes


def new_repo(tmp_path: Path, files: dict[str, str], *, chart: bool = False) -> Path:
    repo = init_repo(tmp_path / "gitops")
    write(repo, ".prbot.yml", CONFIG if chart else CONFIG.split("  - name: flood")[0])
    for rel, text in files.items():
        write(repo, rel, text)
    return repo


def plan(repo: Path, base: str, head: str | None, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    """(exit code, JSON plan, stderr) of `prbot plan --format json`."""
    code = main(["plan", "--repo", str(repo), "--base", base, *(["--head", head] if head else []),
                 "--format", "json"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return code, json.loads(out), err


def target(data: dict, app: str) -> dict:
    [found] = [t for t in data["targets"] if t["app"] == app]
    return found


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))      # every render really runs


def test_the_limits_are_read_and_named() -> None:
    limits = Limits.from_env({"PRBOT_RENDER_MAX_OBJECTS": "250", "PRBOT_TREE_SIZE": "10Mi"})
    assert limits.max_objects == 250 and limits.tree_size == 10 * 1024 * 1024
    assert limits.describe("max_objects") == "the 250-object limit (PRBOT_RENDER_MAX_OBJECTS)"
    assert limits.describe("tree_size") == "the 10 MiB tree size limit (PRBOT_TREE_SIZE)"
    assert Limits().max_objects == 5000


# ------------------------------------------------------------------------------------- objects

def test_a_tiny_chart_emitting_twenty_thousand_objects_fails_fast_naming_the_object_limit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = new_repo(tmp_path, {"charts/flood/Chart.yaml": "apiVersion: v2\nname: flood\nversion: 0.1.0\n",
                               "charts/flood/values.yaml": "count: 3\n",
                               "charts/flood/templates/cm.yaml": FLOOD,
                               "apps/fine/cm.yaml": CM.format(name="fine", value="base")}, chart=True)
    base = commit_all(repo, "base")
    write(repo, "charts/flood/values.yaml", "count: 20000\n")
    write(repo, "apps/fine/cm.yaml", CM.format(name="fine", value="head"))
    head = commit_all(repo, "flood")
    start = time.monotonic()
    code, data, _ = plan(repo, base, head, capsys)
    assert time.monotonic() - start < 30                  # was 25-33 s of parsing, diffing, validating
    flood = target(data, "flood")
    assert code == 1 and flood["status"] == "error"
    assert "more than 5,000 documents" in flood["error"], flood["error"]
    assert "the 5,000-object limit (PRBOT_RENDER_MAX_OBJECTS)" in flood["error"]
    assert target(data, "fine")["status"] == "changed"    # the other target keeps its plan


def test_a_list_flood_in_one_document_is_counted_by_its_items(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """One document marker, but a `kind: List` of 150 items: counted after parsing, as objects."""
    monkeypatch.setenv("PRBOT_RENDER_MAX_OBJECTS", "100")
    repo = new_repo(tmp_path, {"apps/list/cm.yaml": CM.format(name="one", value="base"),
                               "apps/fine/cm.yaml": CM.format(name="fine", value="base")})
    base = commit_all(repo, "base")
    items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}} for i in range(150)]
    write(repo, "apps/list/cm.yaml", json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    write(repo, "apps/fine/cm.yaml", CM.format(name="fine", value="head"))
    head = commit_all(repo, "flood")
    _, data, _ = plan(repo, base, head, capsys)
    flood = target(data, "list")
    assert flood["status"] == "error"
    assert "more than 100 objects (the 100-object limit (PRBOT_RENDER_MAX_OBJECTS))" in flood["error"]
    assert target(data, "fine")["status"] == "changed"


# ------------------------------------------------------------------------------------- parsing

MEASURE = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, file=sys.stderr)
sys.exit(code)
"""


def big_manifest(path: Path, size: int, tail: str = "") -> None:
    """One ConfigMap of `size` bytes of tiny entries: the most Python objects per byte of YAML."""
    with open(path, "w") as fh:
        fh.write("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n" + tail)
        i = 0
        while fh.tell() < size:
            fh.write(f"  k{i}: [a, b, c, d, e]\n")
            i += 1


def test_a_ten_megabyte_plain_manifest_fails_naming_the_memory_limit_quickly(tmp_path: Path) -> None:
    repo = new_repo(tmp_path, {"apps/big/cm.yaml": CM.format(name="big", value="base"),
                               "apps/fine/cm.yaml": CM.format(name="fine", value="base")})
    base = commit_all(repo, "base")
    big_manifest(repo / "apps/big/cm.yaml", 10_000_000)           # took 2.2 GB and 139 s in process
    write(repo, "apps/fine/cm.yaml", CM.format(name="fine", value="head"))
    head = commit_all(repo, "big")
    # the memory limit comes first (in ~2 s); the time limit leaves room for a loaded machine
    env = {**os.environ, "PRBOT_RENDER_MEMORY": "128Mi", "PRBOT_RENDER_TIMEOUT": "30s",
           "PRBOT_CACHE_DIR": str(tmp_path / "cache2")}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "prbot.cli", "plan", "--repo",
                           str(repo), "--base", base, "--head", head, "--format", "json"],
                          capture_output=True, text=True, timeout=120, cwd=PROJECT, env=env)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr[-2000:]
    peak = int(proc.stderr.strip().splitlines()[-1])
    data = json.loads(proc.stdout)
    big = target(data, "big")
    assert big["status"] == "error"
    assert big["error"].startswith("parsing apps/big/cm.yaml ran out of memory"), big["error"]
    assert "the 128 MiB memory limit (PRBOT_RENDER_MEMORY)" in big["error"]
    assert target(data, "fine")["status"] == "changed"
    assert elapsed < 45, elapsed
    assert peak < 256 * 1024 * 1024, peak               # no process of the plan went far over the limit


def test_a_big_manifest_keeps_the_in_process_messages_and_guards(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A variant: above the in-process threshold the worker parses, with the same one-line messages —
    an invalid line, a 5,000-digit integer — and a big valid file plans as before."""
    repo = new_repo(tmp_path, {f"apps/{a}/cm.yaml": CM.format(name=a, value="base") for a in ("bad", "int", "ok")})
    base = commit_all(repo, "base")
    big_manifest(repo / "apps/bad/cm.yaml", 400_000)
    with open(repo / "apps/bad/cm.yaml", "a") as fh:
        fh.write("  broken: [a\n")
    big_manifest(repo / "apps/int/cm.yaml", 400_000, tail=f"  n: {'7' * 5000}\n")
    big_manifest(repo / "apps/ok/cm.yaml", 400_000)
    head = commit_all(repo, "big")
    _, data, _ = plan(repo, base, head, capsys)
    bad, big_int, ok = (target(data, a) for a in ("bad", "int", "ok"))
    assert bad["status"] == "error" and bad["error"].startswith("apps/bad/cm.yaml:"), bad["error"]
    assert "invalid YAML" in bad["error"]
    assert big_int["status"] == "error"
    assert big_int["error"] == "apps/int/cm.yaml: refused: an integer of 5,000 characters (the limit is 100 digits)"
    assert ok["status"] == "changed" and ok["changes"][0]["name"] == "big"


def test_the_parser_process_does_not_import_the_repository(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A variant: modules named like the parser's own imports, planted beside a big manifest, are
    never run (the worker starts isolated from its working directory and the environment)."""
    marker = tmp_path / "pwned"
    payload = f"open({str(marker)!r}, 'w').write('x')\n"
    repo = new_repo(tmp_path, {"apps/big/cm.yaml": CM.format(name="big", value="base")})
    base = commit_all(repo, "base")
    for name in ("json.py", "yaml.py", "prbot/__init__.py", "sitecustomize.py"):
        write(repo, f"apps/big/{name}", payload)
    big_manifest(repo / "apps/big/cm.yaml", 400_000)
    head = commit_all(repo, "plant")
    _, data, _ = plan(repo, base, head, capsys)
    assert target(data, "big")["status"] == "changed"
    assert not marker.exists()


# ------------------------------------------------------------------------------------- time

def test_comparing_and_validating_stop_when_the_plan_budget_runs_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    budget = 4.0
    monkeypatch.setenv("PRBOT_PLAN_BUDGET", f"{budget:g}s")
    monkeypatch.setenv("PRBOT_RENDER_MAX_OBJECTS", "100000")
    repo = new_repo(tmp_path, {"apps/a-small/cm.yaml": CM.format(name="small", value="base"),
                               "apps/z-many/cm.yaml": CM.format(name="one", value="base")})
    base = commit_all(repo, "base")
    write(repo, "apps/a-small/cm.yaml", CM.format(name="small", value="head"))
    write(repo, "apps/z-many/cm.yaml", "".join("---\n" + CM.format(name=f"c{i}", value=i) for i in range(30_000)))
    head = commit_all(repo, "many")
    start = time.monotonic()
    code, data, _ = plan(repo, base, head, capsys)
    elapsed = time.monotonic() - start
    many = target(data, "z-many")
    assert code == 1 and many["status"] == "error"
    assert "plan time budget (PRBOT_PLAN_BUDGET)" in many["error"], many["error"]
    assert elapsed < budget + 8, elapsed                  # 30,000 objects compare and validate in ~60 s
    small = target(data, "a-small")                        # compared before the budget ran out
    assert small["status"] == "changed", small


# ------------------------------------------------------------------------------------- links

def chain(repo: Path, directory: str, name: str, length: int) -> None:
    """`name.N` -> `name.N-1` -> ... -> `name.0`, as symbolic links."""
    for i in range(1, length + 1):
        os.symlink(f"{name}{i - 1}.yaml", repo / directory / f"{name}{i}.yaml")


@pytest.mark.parametrize("committed", [True, False], ids=["committed head", "working tree"])
def test_link_chains_and_loops_fail_their_target_and_the_rest_is_planned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], committed: bool) -> None:
    files = {"apps/chain/l0.yaml": CM.format(name="chain", value="base"),
             "apps/loop/cm.yaml": CM.format(name="loop", value="base"),
             "apps/chart/Chart.yaml": "apiVersion: v2\nname: chart\nversion: 0.1.0\n",
             "apps/chart/values.yaml": "v: 1\n",
             "apps/chart/templates/cm.yaml": CM.format(name="chart", value="'{{ .Values.v }}'"),
             "apps/kust/kustomization.yaml": "resources: [cm.yaml]\n",
             "apps/kust/cm.yaml": CM.format(name="kust", value="base"),
             "apps/fine/cm.yaml": CM.format(name="fine", value="base")}
    repo = new_repo(tmp_path, files)
    base = commit_all(repo, "base")
    chain(repo, "apps/chain", "l", 45)                             # 45 links: more than Linux follows
    os.symlink("b.yaml", repo / "apps/loop/a.yaml")                # a -> b -> a
    os.symlink("a.yaml", repo / "apps/loop/b.yaml")
    (repo / "apps/chart/values.yaml").unlink()                     # the chart's values file: a loop
    os.symlink("v2.yaml", repo / "apps/chart/values.yaml")
    os.symlink("values.yaml", repo / "apps/chart/v2.yaml")
    os.symlink("r2.yaml", repo / "apps/kust/r1.yaml")              # a kustomize resource: a loop
    os.symlink("r1.yaml", repo / "apps/kust/r2.yaml")
    write(repo, "apps/kust/kustomization.yaml", "resources: [cm.yaml, r1.yaml]\n")
    os.symlink("d2", repo / "apps/d1")                             # an apps[].path directory: a loop
    os.symlink("d1", repo / "apps/d2")
    write(repo, "apps/fine/cm.yaml", CM.format(name="fine", value="head"))
    if committed:
        head: str | None = commit_all(repo, "links")
    else:                                                         # staged: a working-tree plan reads them
        git(repo, "add", "-A")
        head = None
    code, data, err = plan(repo, base, head, capsys)
    assert code == 1 and "internal error" not in err
    loop_words = "a symbolic link loop, or a chain of symbolic links too long to follow"
    assert target(data, "chain")["error"] == f"refused: apps/chain/l44.yaml: {loop_words}"
    assert target(data, "loop")["error"] in (f"refused: apps/loop/a.yaml: {loop_words}",
                                             f"refused: apps/loop/b.yaml: {loop_words}")
    assert target(data, "chart")["error"] in (f"refused: apps/chart/values.yaml: {loop_words}",
                                              f"refused: apps/chart/v2.yaml: {loop_words}")
    kust = target(data, "kust")
    assert kust["status"] == "error" and "r1.yaml" in kust["error"], kust
    assert target(data, "fine")["status"] == "changed"
    assert {t["app"] for t in data["targets"]} == {"chain", "loop", "chart", "kust", "fine"}


# ------------------------------------------------------------------------------------- export

def test_an_export_over_the_tree_size_limit_is_refused_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    repo = new_repo(tmp_path, {"apps/fine/cm.yaml": CM.format(name="fine", value="base")})
    base = commit_all(repo, "base")
    write(repo, "apps/fine/blob.yaml", "# " + "x" * 3_000_000 + "\n")        # 3 MB the plan must export
    write(repo, "apps/fine/cm.yaml", CM.format(name="fine", value="head"))
    head = commit_all(repo, "big")
    monkeypatch.setenv("PRBOT_TREE_SIZE", "2Mi")
    assert main(["plan", "--repo", str(repo), "--base", base, "--head", head]) == 2
    err = capsys.readouterr().err
    assert "more than the 2 MiB tree size limit (PRBOT_TREE_SIZE)" in err, err
    write(repo, ".prbot.yml", (repo / ".prbot.yml").read_text() + "# changed: both trees exported in full\n")
    head = commit_all(repo, "config")
    assert main(["plan", "--repo", str(repo), "--base", base, "--head", head]) == 2
    err = capsys.readouterr().err
    assert "more than the 2 MiB tree size limit (PRBOT_TREE_SIZE)" in err, err
    assert main(["plan", "--repo", str(repo), "--base", base]) == 2             # the working tree
    err = capsys.readouterr().err
    assert "the plan needs hold" in err, err          # the working tree is read as a snapshot commit
    assert "more than the 2 MiB tree size limit (PRBOT_TREE_SIZE)" in err
    monkeypatch.setenv("PRBOT_TREE_SIZE", "8Mi")                            # a fitting tree plans
    code, data, _ = plan(repo, base, head, capsys)
    assert target(data, "fine")["status"] == "changed"

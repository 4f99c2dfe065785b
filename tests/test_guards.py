"""The guards on their own: the one YAML loader, the one Secret rule, the operator's limits, the sandbox."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import write

from prbot import sandbox, secrets, tools
from prbot.errors import PrbotError, ToolError, YamlLimitError
from prbot.limits import GIB, MIB, Limits, format_duration, format_size, parse_duration, parse_size
from prbot.model import Target
from prbot.renderers.closure import ClosureCache, input_closure
from prbot.yamlio import MAX_DEPTH, check_tree, load_yaml, load_yaml_all

# ------------------------------------------------------------------------------------------ yamlio


def bomb(levels: int) -> str:
    text = 'a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]\n"
    return text


def test_an_alias_bomb_is_measured_without_being_expanded() -> None:
    start = time.monotonic()
    with pytest.raises(YamlLimitError, match="aliases expand to more than 5,000,000 nodes"):
        load_yaml_all(bomb(12))                       # 10^12 nodes once expanded, 400 bytes of text
    assert time.monotonic() - start < 1
    assert load_yaml(bomb(3))["a2"][0][0] == ["x"] * 10           # modest anchors are fine
    with pytest.raises(YamlLimitError, match="more than 50 nodes"):
        load_yaml_all(bomb(3), max_nodes=50)


def test_nesting_recursion_and_size_are_bounded() -> None:
    deep = "x"
    for _ in range(MAX_DEPTH):
        deep = f"[{deep}]"
    load_yaml(deep)                                     # at the limit: fine
    with pytest.raises(YamlLimitError, match=f"nested deeper than {MAX_DEPTH} levels"):
        load_yaml(f"[{deep}]")
    with pytest.raises(YamlLimitError, match="a recursive alias"):
        load_yaml("&a [*a]")
    with pytest.raises(YamlLimitError, match="larger than 1 KiB"):
        load_yaml_all("x: y\n" * 300, max_bytes=1024)
    nested: list = []
    tip = nested
    for _ in range(200):
        tip.append([])
        tip = tip[0]
    with pytest.raises(YamlLimitError):
        check_tree(nested)
    assert load_yaml("when: 2024-05-01\n") == {"when": "2024-05-01"}   # Kubernetes semantics kept


# ------------------------------------------------------------------------------------------ secrets

def test_secret_values_are_masked_at_any_depth_and_paired_by_place() -> None:
    secret = {"kind": "Secret", "metadata": {"name": "s", "annotations": {secrets.LAST_APPLIED: '{"data":1}'}},
              "data": {"a": "YWFh", "b": "YmJi"}, "stringData": "whole"}
    holder = {"kind": "List", "items": [{"kind": "List", "items": [secret]}], "other": {"deep": [secret]}}
    masked = secrets.mask(holder)
    inner = masked["items"][0]["items"][0]
    assert inner["data"] == {"a": "***", "b": "***"} and inner["stringData"] == "***"
    assert inner["metadata"]["annotations"][secrets.LAST_APPLIED] == "***"
    assert masked["other"]["deep"][0]["data"] == {"a": "***", "b": "***"}
    assert holder["items"][0]["items"][0]["data"]["a"] == "YWFh"          # a copy, the input untouched
    changed = {**secret, "data": {"a": "YWFh", "b": "Y2Nj"}}
    before, after = secrets.mask_pair({"kind": "List", "items": [secret]}, {"kind": "List", "items": [changed]})
    assert before["items"][0]["data"] == {"a": "***", "b": "*** (before)"}
    assert after["items"][0]["data"] == {"a": "***", "b": "*** (after)"}
    values = secrets.secret_values(holder)
    assert {"YWFh", "aaa", "bbb", "whole"} <= set(values) and secrets.contains_secret(holder)
    assert secrets.scrub("got aaa and whole", values) == "got *** and ***"
    assert not secrets.contains_secret({"kind": "ConfigMap", "data": {"a": "b"}})


# ------------------------------------------------------------------------------------------ limits

def test_limits_come_from_the_operators_environment() -> None:
    assert Limits.from_env({}) == Limits(memory=GIB, timeout=60, output=50_000_000, plan_budget=600,
                                         comment_parts=10, cache_size=GIB)
    got = Limits.from_env({"PRBOT_RENDER_MEMORY": "512Mi", "PRBOT_RENDER_TIMEOUT": "90s",
                           "PRBOT_RENDER_OUTPUT": "10MB", "PRBOT_PLAN_BUDGET": "15m",
                           "PRBOT_COMMENT_PARTS": "4", "PRBOT_CACHE_SIZE": "2G"})
    assert got == Limits(memory=512 * MIB, timeout=90, output=10_000_000, plan_budget=900,
                         comment_parts=4, cache_size=2_000_000_000)
    assert got.describe("memory") == "the 512 MiB memory limit (PRBOT_RENDER_MEMORY)"
    assert got.describe("plan_budget") == "the 15m plan time budget (PRBOT_PLAN_BUDGET)"
    remote = Limits.from_env({"PRBOT_REMOTE_TIMEOUT": "2m", "PRBOT_REMOTE_SIZE": "1Mi", "PRBOT_REMOTE_FILES": "500"})
    assert (remote.remote_timeout, remote.remote_size, remote.remote_files) == (120, MIB, 500)
    assert remote.describe("remote_files") == "the 500-file remote limit (PRBOT_REMOTE_FILES)"
    with pytest.raises(PrbotError, match="^PRBOT_REMOTE_FILES: must be more than zero"):
        Limits.from_env({"PRBOT_REMOTE_FILES": "0"})
    with pytest.raises(PrbotError, match="^PRBOT_RENDER_MEMORY: 'lots' is not a size"):
        Limits.from_env({"PRBOT_RENDER_MEMORY": "lots"})
    with pytest.raises(PrbotError, match="^PRBOT_COMMENT_PARTS: must be more than zero"):
        Limits.from_env({"PRBOT_COMMENT_PARTS": "0"})
    assert (parse_size("1Gi"), parse_size("1G"), parse_size("300")) == (GIB, 10 ** 9, 300)
    assert (parse_duration("500ms"), parse_duration("2h")) == (0.5, 7200)
    assert (format_size(256 * MIB), format_size(2_000_000), format_duration(90)) == ("256 MiB", "2 MB", "1m30s")


# ------------------------------------------------------------------------------------------ sandbox

def test_normal_renders_fit_the_default_memory_limit() -> None:
    """Go binaries reserve address space they never use: RLIMIT_DATA (what the sandbox sets) does not
    count it, so kubectl and helm run under the default limit (measured: they need ~80 MB)."""
    kubectl = tools.which("kubectl")
    assert kubectl is not None and sandbox.data_limit(GIB) > 512 * MIB
    home = Path(os.environ.get("TMPDIR", "/tmp"))
    out = sandbox.run_tool([kubectl, "version", "--client"], cwd=home, home=home, label="kubectl",
                           limits=Limits(memory=128 * MIB))
    assert "Client Version" in out


def test_running_unisolated_is_said_once(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PRBOT_RENDER_ISOLATION", "off")
    sandbox.reset_isolation()
    caplog.set_level(logging.WARNING, logger="prbot.sandbox")
    try:                                      # renders ask at once from the pool's threads
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert set(pool.map(lambda _: sandbox.isolation(), range(32))) == {"off"}
    finally:
        sandbox.reset_isolation()
    assert len([r for r in caplog.records if "renderers run unisolated" in r.getMessage()]) == 1


# ------------------------------------------------------------------------------------------ closures

def kustomize(path: str) -> Target:
    return Target("app", "dev", path, "kustomize")


def test_plugin_configurations_name_inputs_relative_to_the_kustomization_listing_them(tmp_path: Path) -> None:
    write(tmp_path, "k/kustomization.yaml", """\
generators:
  - gens/cm.yaml
  - "{apiVersion: builtin, kind: SecretGenerator, metadata: {name: f}, envs: [flow.env], files: [https://x.example/a]}"
  - |-
    apiVersion: builtin
    kind: HelmChartInflationGenerator
    metadata: {name: h}
    chartHome: charts
    name: web
    valuesFile: web-values.yaml
    additionalValuesFiles: [more.yaml]
transformers:
  - |-
    apiVersion: builtin
    kind: PatchStrategicMergeTransformer
    metadata: {name: p}
    paths: [psm.yaml]
    patches: |-
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: inline}
validators: [checks]
""")
    write(tmp_path, "k/gens/cm.yaml", "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: g}\n"
                                     "files: [data.txt, key=other/data.txt]\n")
    for rel in ("data.txt", "other/data.txt", "gens/data.txt", "flow.env", "web-values.yaml", "more.yaml",
                "psm.yaml", "charts/web/Chart.yaml", "charts/web/templates/cm.yaml", "unrelated.txt"):
        write(tmp_path, f"k/{rel}", "x: 1\n")
    write(tmp_path, "k/checks/kustomization.yaml", "resources: [v.yaml]\n")
    write(tmp_path, "k/checks/v.yaml", "apiVersion: builtin\nkind: ReplacementTransformer\nmetadata: {name: r}\n"
                                       "replacements: [{path: r.yaml}]\n")
    write(tmp_path, "k/r.yaml", "[]\n")
    closure = input_closure(tmp_path, kustomize("k"))
    assert closure.files == {f"k/{p}" for p in (
        "kustomization.yaml", "gens/cm.yaml", "data.txt", "other/data.txt", "flow.env", "web-values.yaml",
        "more.yaml", "psm.yaml", "charts/web/Chart.yaml", "charts/web/templates/cm.yaml",
        "checks/kustomization.yaml", "checks/v.yaml", "r.yaml")}          # not gens/data.txt: kustomize
    assert closure.remote == ("https://x.example/a",) and closure.helm_charts   # reads k/data.txt


@pytest.mark.parametrize("kustomization, refused", [
    ("helmCharts: [{name: ../../../../etc, version: '1'}]\n", "leaves the repository"),
    ("helmGlobals: {chartHome: /var/lib}\nhelmCharts: [{name: x}]\n", "absolute path outside the repository"),
    ("helmGlobals: {configHome: cfg}\nhelmCharts: [{name: x}]\n", "Helm's configuration directory is prbot's"),
    ("helmChartInflationGenerator: [{chartName: x, helmHome: /root/.config/helm}]\n", "configHome"),
    ("helmCharts: [{name: x, repo: https://c.example, version: ../../../../../tmp}]\n", "leaves the repository"),
])
def test_chart_locations_cannot_leave_the_repository(tmp_path: Path, kustomization: str, refused: str) -> None:
    write(tmp_path, "repo/k/kustomization.yaml", kustomization)
    closure = ClosureCache().closure(tmp_path / "repo", kustomize("k"))
    assert any(refused in o for o in closure.outside), closure.outside


@pytest.mark.parametrize("isolation", ["jail", "off"])
def test_a_tool_that_closes_its_output_and_lingers_is_stopped_in_time(
        tmp_path: Path, isolation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRBOT_RENDER_ISOLATION", isolation)
    sandbox.reset_isolation()
    marker = f"6{time.time_ns() % 10**6}.5"           # the child's sleep, found by its command line
    script = write(tmp_path, "linger.sh", f"#!/bin/sh\nexec >/dev/null 2>&1\nsleep {marker} &\nwait\n")
    script.chmod(0o755)
    start = time.monotonic()
    try:
        with pytest.raises(ToolError, match="timed out") as err:
            sandbox.run_tool([str(script)], cwd=tmp_path, home=tmp_path, label="linger",
                             limits=Limits(timeout=1.5))
    finally:
        sandbox.reset_isolation()
    assert time.monotonic() - start < 10 and err.value.limit == "timeout"
    deadline = time.monotonic() + 5
    while _sleeping(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sleeping(marker), "the tool's child survived"


def _sleeping(marker: str) -> bool:
    """Whether a process whose command line holds `marker` is alive (host PIDs: jailed processes
    have their own PID namespace, so the child cannot tell us its PID)."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        with open(f"/proc/{name}/stat", "rb") as st:
                            if st.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                                return True
            except OSError:
                continue
    return False


@pytest.mark.parametrize("number", ["9" * 5000, "-" + "1" * 4301, "0x" + "f" * 200, "1_000" * 60])
def test_an_integer_too_long_is_refused_naming_the_limit(number: str) -> None:
    """Python refuses to convert integers of more than 4,300 digits with an internal error that used
    to fail a whole plan; the loader refuses far shorter ones (Kubernetes integers have 19 digits)."""
    with pytest.raises(YamlLimitError, match="the limit is 100 digits"):
        load_yaml_all(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\nspec: {{n: {number}}}\n")
    assert load_yaml_all("n: 12345678901234567890\n") == [{"n": 12345678901234567890}]

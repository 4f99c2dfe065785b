"""Renderer binaries: the lookup order, `prbot tools install|list`, versions in the plan, and
renderer messages that do not change from run to run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from support import PROJECT, TOOLS, commit_all, write

from prbot import tools
from prbot.cli import main
from prbot.config import load_config_file
from prbot.errors import RenderError
from prbot.plan import make_plan
from prbot.render import render_target
from prbot.report import render_markdown
from prbot.targets import discover_targets


def fake_tool(directory: Path, name: str, version: str = "v0.0.1", stderr: str = "", code: int = 0) -> Path:
    """An executable that answers `version` like the real tool and otherwise fails with `stderr`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    kubectl_json = json.dumps({"clientVersion": {"gitVersion": version}, "kustomizeVersion": "v9.9.9"})
    path.write_text("#!/bin/sh\n"
                    f"if [ \"$1\" = version ]; then\n"
                    f"  case \"$*\" in *json*) echo '{kubectl_json}';; *) printf '%s' '{version}';; esac\n"
                    f"  exit 0\nfi\n"
                    f"cat >&2 <<'EOF'\n{stderr}\nEOF\nexit {code}\n")
    path.chmod(0o755)
    return path


def pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache home whose pinned-tools directory is `tools.pinned_dir()`."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tools.pinned_dir()


def mark_installed(directory: Path) -> None:
    (directory / tools.MARKER).write_text("{}\n")


# -- lookup order ------------------------------------------------------------------------------------------

def test_pinned_tools_come_before_path_and_the_tools_dir_before_both(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = fake_tool(tmp_path / "path-bin", "kubectl", "v1.32.4")
    monkeypatch.setenv("PATH", f"{on_path.parent}{os.pathsep}/usr/bin:/bin")
    monkeypatch.delenv("PRBOT_TOOLS_DIR", raising=False)
    pin = pinned(tmp_path, monkeypatch)
    assert tools.which("kubectl") == str(on_path)           # nothing pinned yet: PATH

    fake_tool(pin, "kubectl", "v1.35.2")
    assert tools.which("kubectl") == str(on_path), "a pinned directory counts once its install completed"
    mark_installed(pin)
    assert tools.which("kubectl") == str(pin / "kubectl")
    assert tools.versions("kubectl") == {"kubectl": "v1.35.2", "kustomize": "v9.9.9"}

    explicit = fake_tool(tmp_path / "explicit", "kubectl", "v1.36.0")
    monkeypatch.setenv("PRBOT_TOOLS_DIR", str(explicit.parent))
    assert tools.which("kubectl") == str(explicit)
    assert tools.source_of(str(explicit)) == "PRBOT_TOOLS_DIR"
    assert tools.source_of(str(pin / "kubectl")) == "pinned"
    assert tools.source_of(str(on_path)) == "PATH"


def test_a_kustomize_on_path_does_not_override_the_pinned_kubectl(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tool(tmp_path / "path-bin", "kustomize", "v4.5.7")
    monkeypatch.setenv("PATH", f"{tmp_path / 'path-bin'}{os.pathsep}/usr/bin:/bin")
    monkeypatch.delenv("PRBOT_TOOLS_DIR", raising=False)
    pin = pinned(tmp_path, monkeypatch)
    assert tools.which("kustomize") == str(tmp_path / "path-bin" / "kustomize")
    fake_tool(pin, "kubectl", "v1.35.2")
    mark_installed(pin)
    assert tools.which("kustomize") is None                 # render.py then runs `kubectl kustomize`
    fake_tool(pin, "kustomize", "v5.7.1")
    assert tools.which("kustomize") == str(pin / "kustomize")


def test_missing_tools_tell_the_user_to_install_them(example_repo: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    monkeypatch.delenv("PRBOT_TOOLS_DIR", raising=False)
    pinned(tmp_path, monkeypatch)
    shop = next(t for t in discover_targets(load_config_file(example_repo / ".prbot.yml"), example_repo)
                if t.key == "shop/dev")
    with pytest.raises(RenderError, match=r"^kubectl is not installed or not on PATH \(run `prbot tools install`\)$"):
        render_target(example_repo, shop)
    assert main(["tools", "list"]) == 2
    out, err = capsys.readouterr()
    assert [line.split() for line in out.splitlines()[1:]] == [
        ["kubectl", "?", "-", "not", "found"], ["helm", "?", "-", "not", "found"], ["helm3", "?", "-", "not", "found"]]
    assert err == "prbot: kubectl, helm not found: run `prbot tools install`\n"


def test_tools_list_names_version_source_and_path(capsys) -> None:
    assert main(["tools", "list"]) == 0
    out, _ = capsys.readouterr()
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    real = subprocess.run([str(TOOLS / "kubectl"), "version", "--client", "-o", "json"], capture_output=True,
                          text=True, check=True).stdout
    assert rows["kubectl"][1] == json.loads(real)["clientVersion"]["gitVersion"]
    assert rows["kubectl"][2] == "PATH" and rows["kubectl"][3] == str(TOOLS / "kubectl")
    assert {"helm", "helm3"} <= set(rows)


# -- install -----------------------------------------------------------------------------------------------

def _link_real_tools(directory: Path) -> None:
    directory.mkdir(parents=True)
    for binary in tools.BINARIES:
        (directory / binary.name).symlink_to(TOOLS / binary.name)


def test_install_over_verified_tools_downloads_nothing_and_verify_spots_a_bad_binary(tmp_path: Path) -> None:
    target = tmp_path / "bin"
    _link_real_tools(target)
    assert tools.verify(target) == []
    said: list[str] = []
    assert tools.install(target, say=said.append) == target
    assert said == [f"kubectl, helm and helm3 already installed in {target}"]
    assert json.loads((target / tools.MARKER).read_text())["toolset"] == tools.TOOLSET
    (target / "helm3").unlink()
    fake_tool(target, "helm3", "v3.17.3")
    assert tools.verify(target) == ["helm3: not the pinned build (SHA-256 differs)"]
    (target / "helm").unlink()
    assert tools.verify(target)[0] == "helm: missing"


def test_fetch_tools_is_prbot_tools_install_and_runs_without_prbot_installed(tmp_path: Path) -> None:
    target = tmp_path / "bin"
    _link_real_tools(target)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([str(PROJECT / "scripts" / "fetch-tools"), "--dir", str(target)], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"prbot: kubectl, helm and helm3 already installed in {target}\n"


def test_install_refuses_other_platforms_with_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert main(["tools", "install", "--dir", str(tmp_path / "bin")]) == 2
    _, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Linux x86-64 builds" in err and "install kubectl" in err
    assert not (tmp_path / "bin").exists()


def test_install_into_an_unwritable_place_is_one_line(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["tools", "install", "--dir", str(blocker / "bin")]) == 2
    _, err = capsys.readouterr()
    assert err.startswith("prbot: error: ") and err.count("\n") == 1 and "Traceback" not in err


# -- versions in the plan ----------------------------------------------------------------------------------

def test_plan_names_the_tool_versions_it_rendered_with(example_repo: Path) -> None:
    config = load_config_file(example_repo / ".prbot.yml")
    write(example_repo, "apps/shop/envs/dev/replicas.yaml",
          (example_repo / "apps/shop/envs/dev/replicas.yaml").read_text().replace("replicas: 1", "replicas: 2"))
    write(example_repo, "billing/dev/values.yaml",
          (example_repo / "billing/dev/values.yaml").read_text() + "# touched\n")
    plan = make_plan(example_repo, config, "HEAD")
    expected = tools.versions("kubectl") | tools.versions("helm")
    assert plan.tools == expected and set(expected) == {"kubectl", "kustomize", "helm"}
    assert json.loads(json.dumps(plan.to_json()))["tools"] == expected
    [body] = render_markdown(plan)
    assert body.rstrip().endswith(f"<sub>Rendered with kubectl {expected['kubectl']}, kustomize "
                                  f"{expected['kustomize']}, helm {expected['helm']}</sub>")
    commit_all(example_repo)
    write(example_repo, "apps/worker/envs/dev/extra.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n")
    assert make_plan(example_repo, config, "HEAD").tools == {}, "plain targets run no tool"


# -- messages without timestamps or PIDs -------------------------------------------------------------------

KUBECTL_132_STDERR = (
    'E1201 17:14:45.744957   17004 run.go:72] "command failed" err="accumulating resources: accumulation '
    "err='accumulating resources from 'missing.yaml': evalsymlink failure on '/tmp/kt/missing.yaml' : lstat "
    "/tmp/kt/missing.yaml: no such file or directory': must build at directory: not a valid directory\"\n"
    "error: accumulating resources: accumulation err='accumulating resources from 'missing.yaml': evalsymlink "
    "failure on '/tmp/kt/missing.yaml' : lstat /tmp/kt/missing.yaml: no such file or directory': must build "
    "at directory: not a valid directory")


def test_klog_prefixes_are_stripped_so_errors_are_stable() -> None:
    cleaned = tools.clean_output(KUBECTL_132_STDERR)     # the klog line and the "error:" line say one thing
    assert cleaned == ("accumulating resources: accumulation err='accumulating resources from 'missing.yaml': "
                       "evalsymlink failure on '/tmp/kt/missing.yaml' : lstat /tmp/kt/missing.yaml: no such file "
                       "or directory': must build at directory: not a valid directory")
    assert tools.clean_output("W0501 09:00:00.000001    4242 warnings.go:70] kustomize: deprecated field\n"
                              "2024/05/01 09:00:00 helm: warning\n"
                              "time=2025-01-01T00:00:00Z level=WARN msg=x\n") == \
        "kustomize: deprecated field\nhelm: warning\nlevel=WARN msg=x"
    assert tools.clean_output("open /tmp/prbot-render-k2j3_x/kustomize-helm-123456789/c: no such file") == \
        "open $TMPDIR/kustomize-helm-*/c: no such file"
    assert tools.clean_output("Failed to connect to github.com port 443 after 3 ms: Couldn't connect") == \
        tools.clean_output("Failed to connect to github.com port 443 after 0 ms: Couldn't connect")


def test_an_old_kubectl_on_path_gives_the_same_message_twice(example_repo: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The case a user hit: a system kubectl 1.32 that logs with klog; every run's message differs
    in its timestamp and PID unless prbot cleans it."""
    script = tmp_path / "old-bin" / "kubectl"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n"
                      "printf 'E%s   %s run.go:72] \"command failed\" err=\"boom: no such file\"\\n' "
                      "\"$(date +%m%d\\ %H:%M:%S.%N | cut -c1-20)\" \"$$\" >&2\n"
                      "echo 'error: boom: no such file' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}/usr/bin:/bin")
    shop = next(t for t in discover_targets(load_config_file(example_repo / ".prbot.yml"), example_repo)
                if t.key == "shop/dev")
    messages = set()
    for _ in range(2):
        with pytest.raises(RenderError) as err:
            render_target(example_repo, shop)
        messages.add(str(err.value))
    assert messages == {"kubectl kustomize: boom: no such file"}


def test_console_entry_point_lists_tools_without_a_checkout(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    proc = subprocess.run([sys.executable, "-m", "prbot.cli", "tools", "--help"], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "install" in proc.stdout and "list" in proc.stdout

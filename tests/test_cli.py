"""The `prbot` command as a user runs it: exit codes, one-line errors, files on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import snapshot_files, write

from prbot.cli import main

SHOP = "registry.cn-hangzhou.aliyuncs.com/demo/shop"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_bump_reports_each_change_and_is_idempotent(example_repo: Path, capsys) -> None:
    code, out, err = run(capsys, "bump", f"{SHOP}:2.0.0", "--env", "dev", "--repo", str(example_repo))
    assert (code, err) == (0, "")
    assert out == "shop/dev: apps/shop/envs/dev/kustomization.yaml 1.1.0 → 2.0.0\n"
    text = (example_repo / "apps/shop/envs/dev/kustomization.yaml").read_text()
    assert '    newTag: "2.0.0"   # bumped by prbot\n' in text
    after = snapshot_files(example_repo)
    code, out, err = run(capsys, "bump", f"{SHOP}:2.0.0", "--env", "dev", "--repo", str(example_repo))
    assert (code, err) == (0, "")
    assert out == "shop/dev: already current\n"
    assert snapshot_files(example_repo) == after


@pytest.mark.parametrize("image, needle", [
    (f"{SHOP}:bad tag", "tag"),
    (f"{SHOP}:-leading-dash", "tag"),
    ("registry.cn-hangzhou.aliyuncs.com/Demo/Shop:1.0.0", "uppercase"),
    (f"{SHOP}@sha256:abc", "digest"),
    (f"{SHOP}:1.0.0@md5:0123", "digest"),
    ("", "empty"),
])
def test_bad_image_references_change_nothing(example_repo: Path, capsys, image: str, needle: str) -> None:
    before = snapshot_files(example_repo)
    code, out, err = run(capsys, "bump", image, "--env", "dev", "--repo", str(example_repo))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("prbot: error:") and "Traceback" not in err
    assert needle in err.lower()
    assert snapshot_files(example_repo) == before


def test_unknown_environment_and_missing_config(example_repo: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "bump", f"{SHOP}:2.0.0", "--env", "qa", "--repo", str(example_repo))
    assert code == 2 and "qa" in err and err.count("\n") == 1
    code, _, err = run(capsys, "bump", f"{SHOP}:2.0.0", "--env", "dev", "--repo", str(tmp_path))
    assert code == 2 and ".prbot.yml" in err and err.count("\n") == 1


def test_broken_config_is_bad_input_for_every_command(example_repo: Path, capsys) -> None:
    write(example_repo, ".prbot.yml", "version: 1\nenvironments:\n  - name: dev\n    colour: blue\n")
    before = snapshot_files(example_repo)
    for argv in (["bump", f"{SHOP}:2.0.0", "--env", "dev"], ["promote", "dev", "staging"],
                 ["plan", "--base", "HEAD"]):
        code, _, err = run(capsys, *argv, "--repo", str(example_repo))
        assert code == 2 and err.count("\n") == 1 and ".prbot.yml:4:" in err, (argv, err)
    assert snapshot_files(example_repo) == before


def test_no_target_uses_the_repository_exits_1(example_repo: Path, capsys) -> None:
    before = snapshot_files(example_repo)
    code, out, err = run(capsys, "bump", "ghcr.io/acme/unknown:1.0.0", "--env", "dev", "--repo", str(example_repo))
    assert code == 1 and out == "" and "no target of dev uses" in err
    assert snapshot_files(example_repo) == before


def test_promote_and_nothing_left_to_promote(example_repo: Path, capsys) -> None:
    code, out, err = run(capsys, "promote", "dev", "staging", "--repo", str(example_repo))
    assert code == 0, err
    assert "shop/staging: apps/shop/envs/staging/kustomization.yaml 1.0.0 → 1.1.0" in out
    assert "billing/staging: billing/staging/values.yaml 2.3.0 → 2.4.0" in out
    assert "worker/staging: apps/worker/envs/staging/worker.yaml 0.4.0 → 0.5.0" in out
    code, out, err = run(capsys, "promote", "dev", "staging", "--repo", str(example_repo))
    assert code == 1 and "nothing to promote" in err


def test_check_config(example_repo: Path, capsys) -> None:
    code, out, err = run(capsys, "check-config", "--repo", str(example_repo))
    assert (code, out, err) == (0, ".prbot.yml: ok\n", "")
    write(example_repo, ".prbot.yml", "version: 1\nenvironments:\n  - name: dev\napps:\n"
          "  - path: ../outside/{env}\n    nmespace: x\n")
    code, out, err = run(capsys, "check-config", "--repo", str(example_repo))
    assert code == 2
    lines = err.splitlines()
    assert any(line.startswith(".prbot.yml:5:") for line in lines)
    assert any(line.startswith(".prbot.yml:6:") and "nmespace" in line for line in lines)


def test_console_script_runs_without_traceback(example_repo: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "prbot.cli", "bump", "nginx:??", "--env", "dev",
                           "--repo", str(example_repo)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_demo_runs_the_whole_flow(capsys) -> None:
    code, out, err = run(capsys, "demo")
    assert code == 0, err
    assert "prbot/bump/dev/registry-cn-hangzhou-aliyuncs-com-demo-shop" in out
    assert "<!-- prbot:plan -->" in out
    assert "1.1.0 → 1.2.0" in out
    assert "prbot/promote/staging/shop" in out
    assert "Demo finished" in out


def test_plan_dry_runs_against_the_clusters_named_by_prbot_clusters(example_repo: Path, tmp_path: Path,
                                                                     capsys, monkeypatch) -> None:
    import json

    from fakekube import FakeKube

    with FakeKube() as fake:
        fake.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-dev"}})
        kubeconfig = fake.write_kubeconfig(tmp_path / "dev.kubeconfig")
        write(tmp_path, "clusters.yaml", f"dev: {{kubeconfig: {kubeconfig}, context: fake}}\n")
        monkeypatch.setenv("PRBOT_CLUSTERS", str(tmp_path / "clusters.yaml"))
        p = example_repo / "apps/shop/envs/dev/kustomization.yaml"
        p.write_text(p.read_text().replace('newTag: "1.1.0"', 'newTag: "1.2.0"'))
        code, out, err = run(capsys, "plan", "--repo", str(example_repo), "--base", "HEAD", "--format", "json")
        assert code == 0, err
        [target] = json.loads(out)["targets"]
        assert target["dry_run"]["status"] == "ok" and target["dry_run"]["errors"] == []
        assert {c["kind"] for c in target["dry_run"]["changes"]} >= {"Deployment"}
        assert fake.applies("Deployment")
        code, out, err = run(capsys, "plan", "--repo", str(example_repo), "--base", "HEAD", "--format", "json",
                             "--no-cluster")
        assert code == 0 and json.loads(out)["targets"][0]["dry_run"] is None
    write(tmp_path, "clusters.yaml", "dev: {kubeconfg: /nope}\n")
    code, out, err = run(capsys, "plan", "--repo", str(example_repo), "--base", "HEAD")
    assert code == 2 and err.count("\n") == 1 and "clusters.yaml:1" in err

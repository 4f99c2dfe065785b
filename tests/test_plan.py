"""The plan engine end to end: real git repositories, real kubectl kustomize and helm template."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from support import commit_all, git, write

from prbot.cli import main

SECRET = "example-dev-password"


def plan_json(repo: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["plan", "--repo", str(repo), "--format", "json", *args])
    out = capsys.readouterr().out
    return code, json.loads(out)


def plan_md(repo: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["plan", "--repo", str(repo), *args])
    return code, capsys.readouterr().out


def keys(plan: dict) -> list[str]:
    return [f"{t['app']}/{t['env']}" for t in plan["targets"]]


def test_base_change_affects_every_overlay_using_it(example_repo: Path, capsys) -> None:
    p = example_repo / "apps/shop/base/deployment.yaml"
    p.write_text(p.read_text().replace("containerPort: 8080", "containerPort: 9090"))
    code, plan = plan_json(example_repo, "--base", "HEAD", capsys=capsys)
    assert code == 0
    assert keys(plan) == ["shop/dev", "shop/staging", "shop/prod"]
    for t in plan["targets"]:
        assert t["status"] == "changed" and t["renderer"] == "kustomize"
        [change] = t["changes"]
        assert (change["group"], change["kind"], change["name"], change["action"]) == (
            "apps", "Deployment", "shop", "changed")
        assert change["namespace"] == f"shop-{t['env']}"
        lines = change["diff"].splitlines()
        assert any(line.startswith("-") and "containerPort: 8080" in line for line in lines)
        assert any(line.startswith("+") and "containerPort: 9090" in line for line in lines)


def test_overlay_change_affects_only_that_overlay(example_repo: Path, capsys) -> None:
    write(example_repo, "apps/shop/envs/staging/replicas.yaml",
          "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  replicas: 5\n")
    code, plan = plan_json(example_repo, "--base", "HEAD", capsys=capsys)
    assert code == 0
    assert keys(plan) == ["shop/staging"]
    [change] = plan["targets"][0]["changes"]
    assert "-  replicas: 2" in change["diff"] and "+  replicas: 5" in change["diff"]


def test_helm_values_change(example_repo: Path, capsys) -> None:
    p = example_repo / "billing/prod/values.yaml"
    p.write_text(p.read_text().replace("replicaCount: 3", "replicaCount: 4"))
    code, plan = plan_json(example_repo, "--base", "HEAD", capsys=capsys)
    assert code == 0 and keys(plan) == ["billing/prod"]
    t = plan["targets"][0]
    assert t["renderer"] == "helm"
    [change] = t["changes"]
    assert (change["kind"], change["name"], change["namespace"]) == ("Deployment", "billing-prod", "billing-prod")
    assert "+  replicas: 4" in change["diff"]
    # the checksum/config annotation changed too, but it is default noise
    assert "checksum/" not in change["diff"]


def test_chart_change_affects_every_environment(example_repo: Path, capsys) -> None:
    p = example_repo / "charts/billing/templates/service.yaml"
    p.write_text(p.read_text().replace("targetPort: 8080", "targetPort: 8081"))
    code, plan = plan_json(example_repo, "--base", "HEAD", capsys=capsys)
    assert keys(plan) == ["billing/dev", "billing/staging", "billing/prod"]


def test_target_added_and_removed(example_repo: Path, capsys) -> None:
    git(example_repo, "rm", "-q", "-r", "apps/worker/envs/prod")
    write(example_repo, "apps/cache/envs/dev/redis.yaml",
          "apiVersion: v1\nkind: Service\nmetadata:\n  name: redis\nspec:\n  ports: [{port: 6379}]\n")
    head = commit_all(example_repo, "add cache, drop worker in prod")
    code, plan = plan_json(example_repo, "--base", "HEAD~1", "--head", head, capsys=capsys)
    assert code == 0
    by = {f"{t['app']}/{t['env']}": t for t in plan["targets"]}
    assert set(by) == {"cache/dev", "worker/prod"}
    assert by["cache/dev"]["status"] == "added"
    assert [c["action"] for c in by["cache/dev"]["changes"]] == ["added"]
    assert by["worker/prod"]["status"] == "removed"
    assert {c["action"] for c in by["worker/prod"]["changes"]} == {"removed"}
    assert plan["head"] == head and len(plan["base"]) == 40


def test_config_change_affects_every_target(example_repo: Path, capsys) -> None:
    p = example_repo / ".prbot.yml"
    p.write_text(p.read_text() + "# touched\n")
    code, plan = plan_json(example_repo, "--base", "HEAD", capsys=capsys)
    assert code == 0
    assert len(plan["targets"]) == 9
    assert {t["status"] for t in plan["targets"]} == {"unchanged"}


def test_secrets_masked_in_json_markdown_and_logs(example_repo: Path, capsys, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    p = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    p.write_text(p.read_text().replace("DATABASE_PASSWORD=example-dev-password",
                                       "DATABASE_PASSWORD=rotated-dev-password"))
    code, plan = plan_json(example_repo, "--base", "HEAD", "--env", "dev", capsys=capsys)
    text = json.dumps(plan)
    code_md, md = plan_md(example_repo, "--base", "HEAD", capsys=capsys)
    for out in (text, md, caplog.text):
        for value in (SECRET, "rotated-dev-password", "ZXhhbXBsZS1kZXYtcGFzc3dvcmQ=",
                      "cm90YXRlZC1kZXYtcGFzc3dvcmQ="):
            assert value not in out
    [t] = plan["targets"]
    secret = next(c for c in t["changes"] if c["kind"] == "Secret")
    assert "*** (before)" in secret["diff"] and "*** (after)" in secret["diff"]
    assert "DATABASE_PASSWORD" in secret["diff"]
    assert "*** (after)" in md


def test_one_broken_target_among_healthy_ones(example_repo: Path, capsys) -> None:
    for env in ("dev", "staging", "prod"):
        p = example_repo / f"apps/shop/envs/{env}/replicas.yaml"
        p.write_text(p.read_text().replace("replicas:", "replicas: 7\n  minReadySeconds:"))
    write(example_repo, "apps/shop/envs/staging/kustomization.yaml",
          "resources:\n  - ../../base\n  - missing.yaml\n")
    code, plan = plan_json(example_repo, "--base", "HEAD", capsys=capsys)
    assert code == 1
    by = {f"{t['app']}/{t['env']}": t for t in plan["targets"]}
    assert by["shop/staging"]["status"] == "error"
    assert "missing.yaml" in by["shop/staging"]["error"]
    assert by["shop/dev"]["status"] == "changed" and by["shop/prod"]["status"] == "changed"
    code_md, md = plan_md(example_repo, "--base", "HEAD", capsys=capsys)
    assert code_md == 1 and "missing.yaml" in md


def test_schema_violation_fails_the_plan(example_repo: Path, capsys) -> None:
    write(example_repo, "apps/shop/envs/prod/replicas.yaml",
          "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  replicas: two\n")
    code, plan = plan_json(example_repo, "--base", "HEAD", capsys=capsys)
    assert code == 1
    [t] = plan["targets"]
    errors = [v for v in t["validation"] if v["level"] == "error"]
    assert errors and errors[0]["kind"] == "Deployment" and errors[0]["name"] == "shop"
    assert "replicas" in errors[0]["path"] and "integer" in errors[0]["message"]


def test_plan_big_enough_to_split(example_repo: Path, capsys) -> None:
    objs = "".join(
        f"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big-{i}\ndata:\n"
        + "".join(f"  key{j}: value-{i}-{j}-{'x' * 40}\n" for j in range(60))
        for i in range(60))
    write(example_repo, "apps/worker/envs/dev/big.yaml", objs)
    code, md = plan_md(example_repo, "--base", "HEAD", capsys=capsys)
    assert code == 0
    parts = md.split("\n\n<!-- prbot:plan -->")
    assert len(parts) > 1
    assert md.count("<!-- prbot:plan part=1/") == 1


def test_empty_range(example_repo: Path, capsys) -> None:
    code, plan = plan_json(example_repo, "--base", "HEAD", "--head", "HEAD", capsys=capsys)
    assert code == 0 and plan["targets"] == []
    code, md = plan_md(example_repo, "--base", "HEAD", "--head", "HEAD", capsys=capsys)
    assert code == 0 and "No targets affected" in md


def test_unknown_revision_and_environment_are_bad_input(example_repo: Path, capsys) -> None:
    assert main(["plan", "--repo", str(example_repo), "--base", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "Traceback" not in err
    assert main(["plan", "--repo", str(example_repo), "--base", "HEAD", "--env", "qa"]) == 2
    assert "qa" in capsys.readouterr().err


def test_plan_does_not_touch_the_working_tree(example_repo: Path, capsys) -> None:
    p = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    p.write_text(p.read_text().replace('newTag: "1.1.0"', 'newTag: "1.2.0"'))
    before = git(example_repo, "status", "--porcelain")
    code, plan = plan_json(example_repo, "--base", "HEAD", capsys=capsys)
    assert code == 0 and keys(plan) == ["shop/dev"]
    assert plan["head"].endswith("-dirty")
    assert git(example_repo, "status", "--porcelain") == before
    assert git(example_repo, "worktree", "list").count("\n") == 0

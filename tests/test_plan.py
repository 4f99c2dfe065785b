"""The plan engine end to end: real git repositories, real kubectl kustomize and helm template."""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import random
import shutil
from pathlib import Path

import pytest
from support import EXAMPLE, commit_all, git, init_repo, write

from prbot import gitrepo
from prbot.cli import main
from prbot.config import Config, load_config_file
from prbot.errors import PrbotError
from prbot.plan import make_plan
from prbot.plan.build import _plan, _sides
from prbot.render import RenderPool

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
    code, md = plan_md(example_repo, "--base", "HEAD", "--untracked", capsys=capsys)
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


# -- the sparse way (only what the change reaches is exported at base) equals the full way -------------

def _pool(config: Config) -> RenderPool:
    return RenderPool(disk_cache=False, kube_versions={e.name: e.kubernetes_version for e in config.environments
                                                       if e.kubernetes_version})


def _sparse_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "prbot.plan" and "plan:" in r.getMessage()]


def plan_both_ways(repo: Path, base: str, head: str | None, caplog: pytest.LogCaptureFixture,
                   envs: list[str] | None = None, expect_sparse: bool = True) -> dict:
    """The plan made the sparse way, after checking it equals the one made from full exports.  A
    working-tree head includes untracked files (what `prbot plan --untracked` does): the scenarios
    add files without `git add`."""
    config = load_config_file(repo / ".prbot.yml")
    caplog.set_level(logging.DEBUG, logger="prbot.plan")
    caplog.clear()
    sparse = _plan(repo, config, base, head, envs=envs, pool=_pool(config), dry_runner=None, sparse=True,
                   untracked=True)
    taken = _sparse_log(caplog)
    assert len(taken) == 1 and taken[0].startswith("sparse plan:" if expect_sparse else "full plan:"), taken
    full = _plan(repo, config, base, head, envs=envs, pool=_pool(config), dry_runner=None, sparse=False,
                 untracked=True)
    assert sparse.to_json() == full.to_json()
    return sparse.to_json()


def _candidates(caplog: pytest.LogCaptureFixture) -> int:
    [message] = [m for m in _sparse_log(caplog) if m.startswith("sparse plan:")]
    return int(message.split()[2])


def _edit(repo: Path, rel: str, old: str, new: str) -> None:
    p = repo / rel
    text = p.read_text()
    assert old in text, (rel, old)
    p.write_text(text.replace(old, new))


def _commit_setup(repo: Path) -> str:
    """Commit the state prepared so far: the base of the change that follows."""
    return commit_all(repo, "set-up")


CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value}\n"


def _base_change(r: Path) -> str:
    _edit(r, "apps/shop/base/deployment.yaml", "containerPort: 8080", "containerPort: 9090")
    return "HEAD"


def _overlay_change(r: Path) -> str:
    _edit(r, "apps/shop/envs/prod/kustomization.yaml", 'newTag: "1.0.0"', 'newTag: "1.0.1"')
    return "HEAD"


def _component_change(r: Path) -> str:
    _edit(r, "components/monitoring/kustomization.yaml", '"true"', '"false"')
    return "HEAD"


def _chart_change(r: Path) -> str:
    _edit(r, "charts/billing/templates/service.yaml", "targetPort: 8080", "targetPort: 8081")
    return "HEAD"


def _chart_file_added(r: Path) -> str:
    write(r, "charts/billing/templates/extra/cm.yaml", CM.format(name="extra", value="v"))
    return "HEAD"


def _helm_values_change(r: Path) -> str:
    _edit(r, "billing/staging/values.yaml", "replicaCount:", "replicaCount: 6\nignored:")
    return "HEAD"


def _target_added(r: Path) -> str:
    write(r, "apps/cache/envs/dev/redis.yaml", CM.format(name="redis", value="6379"))
    return "HEAD"


def _target_removed(r: Path) -> str:
    git(r, "rm", "-q", "-r", "apps/worker/envs/prod")
    return "HEAD"


def _kustomize_target_removed(r: Path) -> str:
    git(r, "rm", "-q", "-r", "apps/shop/envs/staging")
    return "HEAD"


def _new_file_and_dir_referenced(r: Path) -> str:
    _edit(r, "apps/shop/envs/staging/kustomization.yaml", "  - ../../base\n",
          "  - ../../base\n  - extra.yaml\n  - ../../extras\n")
    write(r, "apps/shop/envs/staging/extra.yaml", CM.format(name="extra", value="x"))
    write(r, "apps/shop/extras/kustomization.yaml", "resources: [cm.yaml]\n")
    write(r, "apps/shop/extras/cm.yaml", CM.format(name="from-dir", value="y"))
    return "HEAD"


def _referenced_file_deleted(r: Path) -> str:
    _edit(r, "apps/shop/envs/prod/kustomization.yaml", "  - ../../base\n", "  - ../../base\n  - legacy.yaml\n")
    write(r, "apps/shop/envs/prod/legacy.yaml", CM.format(name="legacy", value="old"))
    base = _commit_setup(r)
    _edit(r, "apps/shop/envs/prod/kustomization.yaml", "  - legacy.yaml\n", "")
    (r / "apps/shop/envs/prod/legacy.yaml").unlink()
    return base


def _referenced_dir_deleted(r: Path) -> str:
    _edit(r, "apps/shop/envs/dev/kustomization.yaml", "  - ../../base\n", "  - ../../base\n  - ../../addons\n")
    write(r, "apps/shop/addons/kustomization.yaml", "resources: [cm.yaml]\n")
    write(r, "apps/shop/addons/cm.yaml", CM.format(name="addon", value="1"))
    base = _commit_setup(r)
    git(r, "rm", "-q", "-r", "apps/shop/addons")       # the reference stays: an error at head
    return base


def _base_broken_head_fixed(r: Path) -> str:
    _edit(r, "apps/shop/envs/staging/kustomization.yaml", "  - ../../base\n", "  - ../../base\n  - gone.yaml\n")
    base = _commit_setup(r)
    write(r, "apps/shop/envs/staging/gone.yaml", CM.format(name="back", value="again"))
    return base


def _plain_to_kustomize(r: Path) -> str:
    write(r, "apps/worker/envs/dev/kustomization.yaml",
          "resources: [worker.yaml]\ncommonLabels:\n  team: workers\n")
    return "HEAD"


def _kustomize_to_plain(r: Path) -> str:
    for name in ("kustomization.yaml", "replicas.yaml"):
        (r / "apps/shop/envs/dev" / name).unlink()
    write(r, "apps/shop/envs/dev/cm.yaml", CM.format(name="plain", value="now"))
    return "HEAD"


def _symlinked_manifest(r: Path) -> str:
    write(r, "shared/cm.yaml", CM.format(name="shared", value="one"))
    (r / "apps/worker/envs/staging/shared.yaml").symlink_to("../../../../shared/cm.yaml")
    (r / "apps/shop/linked").symlink_to("base")
    _edit(r, "apps/shop/envs/prod/kustomization.yaml", "../../base", "../../linked")
    base = _commit_setup(r)
    _edit(r, "shared/cm.yaml", "one", "two")
    _edit(r, "apps/shop/base/service.yaml", "port: 80", "port: 81")
    return base


def _symlink_retargeted(r: Path) -> str:
    write(r, "shared/a/cm.yaml", CM.format(name="shared", value="a"))
    write(r, "shared/b/cm.yaml", CM.format(name="shared", value="b"))
    (r / "shared/current").symlink_to("a")
    (r / "apps/worker/envs/dev/cm.yaml").symlink_to("../../../../shared/current/cm.yaml")
    base = _commit_setup(r)
    (r / "shared/current").unlink()
    (r / "shared/current").symlink_to("b")
    return base


def _unrelated_change(r: Path) -> str:
    write(r, "README.md", "docs\n")
    write(r, "apps/shop/envs/prod/notes.txt", "not read by kustomize\n")
    return "HEAD"


def _remote_base_at_head(r: Path) -> str:
    _edit(r, "apps/shop/envs/dev/kustomization.yaml", "  - ../../base\n",
          "  - ../../base\n  - github.com/example/repo//deploy?ref=v1\n")
    return "HEAD"


def _generator_file_change(r: Path) -> str:
    _edit(r, "apps/shop/envs/staging/kustomization.yaml", "patches:",
          "configMapGenerator:\n  - name: settings\n    files: [app=settings.properties]\npatches:")
    write(r, "apps/shop/envs/staging/settings.properties", "mode=one\n")
    base = _commit_setup(r)
    write(r, "apps/shop/envs/staging/settings.properties", "mode=two\n")
    return base


def _host_like_local_dir(r: Path, present_at_base: bool) -> str:
    _edit(r, "apps/shop/base/kustomization.yaml", "  - service.yaml\n", "  - service.yaml\n  - github.com/acme/lib\n")
    lib = "apps/shop/base/github.com/acme/lib"
    if present_at_base:
        write(r, f"{lib}/kustomization.yaml", "resources: [cm.yaml]\n")
        write(r, f"{lib}/cm.yaml", CM.format(name="lib", value="vendored"))
    base = _commit_setup(r)
    if present_at_base:
        git(r, "rm", "-q", "-r", lib)
    else:
        write(r, f"{lib}/kustomization.yaml", "resources: [cm.yaml]\n")
        write(r, f"{lib}/cm.yaml", CM.format(name="lib", value="vendored"))
    return base


def _target_dir_becomes_link(r: Path) -> str:
    git(r, "rm", "-q", "-r", "apps/worker/envs/staging")
    (r / "apps/worker/envs/staging").symlink_to("dev")
    return "HEAD"


def _kustomization_renamed(r: Path) -> str:
    git(r, "mv", "apps/shop/envs/dev/kustomization.yaml", "apps/shop/envs/dev/kustomization.yml")
    return "HEAD"


def _values_file_deleted(r: Path) -> str:
    git(r, "rm", "-q", "billing/prod/values.yaml")
    return "HEAD"


SCENARIOS = {
    "base-change": _base_change, "overlay-change": _overlay_change, "component-change": _component_change,
    "chart-change": _chart_change, "chart-file-added": _chart_file_added, "helm-values": _helm_values_change,
    "target-added": _target_added, "target-removed": _target_removed,
    "kustomize-target-removed": _kustomize_target_removed,
    "head-references-new-file-and-dir": _new_file_and_dir_referenced,
    "base-referenced-deleted-file": _referenced_file_deleted, "referenced-dir-deleted": _referenced_dir_deleted,
    "base-broken-head-fixed": _base_broken_head_fixed, "plain-to-kustomize": _plain_to_kustomize,
    "kustomize-to-plain": _kustomize_to_plain, "symlinked-inputs": _symlinked_manifest,
    "symlink-retargeted": _symlink_retargeted, "unrelated": _unrelated_change,
    "remote-base-at-head": _remote_base_at_head, "generator-file-change": _generator_file_change,
    "host-like-local-dir-removed": lambda r: _host_like_local_dir(r, True),
    "host-like-local-dir-added": lambda r: _host_like_local_dir(r, False),
    "target-dir-becomes-link": _target_dir_becomes_link, "kustomization-renamed": _kustomization_renamed,
    "values-file-deleted": _values_file_deleted,
}
EXPECTED = {       # key -> status, for a few scenarios: the comparison alone would accept "nothing"
    "base-change": {"shop/dev": "changed", "shop/staging": "changed", "shop/prod": "changed"},
    "overlay-change": {"shop/prod": "changed"},
    "component-change": {"shop/dev": "changed", "shop/staging": "changed", "shop/prod": "changed"},
    "chart-change": {"billing/dev": "changed", "billing/staging": "changed", "billing/prod": "changed"},
    "chart-file-added": {"billing/dev": "changed", "billing/staging": "changed", "billing/prod": "changed"},
    "helm-values": {"billing/staging": "changed"},
    "target-added": {"cache/dev": "added"},
    "target-removed": {"worker/prod": "removed"},
    "kustomize-target-removed": {"shop/staging": "removed"},
    "head-references-new-file-and-dir": {"shop/staging": "changed"},
    "base-referenced-deleted-file": {"shop/prod": "changed"},
    "referenced-dir-deleted": {"shop/dev": "error"},
    "base-broken-head-fixed": {"shop/staging": "changed"},
    "plain-to-kustomize": {"worker/dev": "changed"},
    "kustomize-to-plain": {"shop/dev": "changed"},
    "symlinked-inputs": {"worker/staging": "changed", "shop/dev": "changed", "shop/staging": "changed",
                         "shop/prod": "changed"},
    "symlink-retargeted": {"worker/dev": "changed"},
    "unrelated": {},
    "remote-base-at-head": {"shop/dev": "skipped"},
    "generator-file-change": {"shop/staging": "changed"},
    # kustomize clones `github.com/...` whatever exists locally: the local directory is never an input
    "host-like-local-dir-removed": {},
    "host-like-local-dir-added": {},
    "target-dir-becomes-link": {"worker/staging": "removed"},
    "kustomization-renamed": {"shop/dev": "unchanged"},
    "values-file-deleted": {"billing/prod": "removed"},
}


@pytest.mark.parametrize("head_kind", ["working-tree", "commit"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_sparse_plan_equals_full_plan(example_repo: Path, scenario: str, head_kind: str, caplog) -> None:
    base = git(example_repo, "rev-parse", SCENARIOS[scenario](example_repo))
    head = commit_all(example_repo, scenario) if head_kind == "commit" else None
    plan = plan_both_ways(example_repo, base, head, caplog)
    assert {f"{t['app']}/{t['env']}": t["status"] for t in plan["targets"]} == EXPECTED[scenario]
    if scenario == "base-referenced-deleted-file":
        [t] = plan["targets"]
        assert [(c["name"], c["action"]) for c in t["changes"]] == [("legacy", "removed")]
    if scenario == "base-broken-head-fixed":
        [t] = plan["targets"]
        assert "gone.yaml" in t["error"] and [c["action"] for c in t["changes"]] != []


def test_sparse_plan_looks_only_at_what_the_change_reaches(example_repo: Path, caplog) -> None:
    _overlay_change(example_repo)
    plan_both_ways(example_repo, "HEAD", None, caplog)
    assert _candidates(caplog) == 1                   # of nine targets: only shop/prod was vetted in full
    caplog.clear()
    _chart_change(example_repo)
    plan_both_ways(example_repo, "HEAD", None, caplog)
    assert _candidates(caplog) == 4


def test_sparse_plan_with_an_environment_filter(example_repo: Path, caplog) -> None:
    _component_change(example_repo)
    _target_removed(example_repo)
    plan = plan_both_ways(example_repo, "HEAD", None, caplog, envs=["prod"])
    assert [(t["app"], t["env"], t["status"]) for t in plan["targets"]] == [
        ("shop", "prod", "changed"), ("worker", "prod", "removed")]


def test_an_ignored_file_is_never_read_at_head(example_repo: Path, caplog) -> None:
    """The working tree holds an ignored file a kustomization reads (a developer's local secrets):
    a working-tree plan exports tracked (and, asked, untracked) files only, so the file is absent at
    head as it is at base, and its content reaches no plan."""
    write(example_repo, ".gitignore", "local-*.yaml\n")
    _edit(example_repo, "apps/shop/envs/dev/kustomization.yaml", "  - ../../base\n",
          "  - ../../base\n  - local-cm.yaml\n")
    base = _commit_setup(example_repo)
    write(example_repo, "apps/shop/envs/dev/local-cm.yaml", CM.format(name="local", value="mine"))
    plan = plan_both_ways(example_repo, base, None, caplog)
    assert plan["targets"] == [] and "mine" not in json.dumps(plan)


def test_empty_directory_in_the_working_tree_is_no_target(example_repo: Path, caplog) -> None:
    """A directory holding no manifest (only subdirectories, a .gitkeep) renders nothing: it is not
    a `+0` new target in every plan."""
    (example_repo / "apps/empty/envs/dev/sub").mkdir(parents=True)     # git does not see it
    write(example_repo, "apps/kept/envs/dev/.gitkeep", "")
    write(example_repo, "apps/worker/envs/dev/kustomization.yaml", "resources: [worker.yaml]\n")
    plan = plan_both_ways(example_repo, "HEAD", None, caplog)
    assert {(t["app"], t["status"]) for t in plan["targets"]} == {("worker", "unchanged")}


def test_target_matched_twice_at_base_only(example_repo: Path, caplog) -> None:
    """The same key matched by two app patterns at base, fixed by the PR: both ways plan it alike
    (a base's discovery problem does not fail the PR that fixes it); matched twice at head, both
    ways report the same error, naming the file and line."""
    _edit(example_repo, ".prbot.yml", 'apps:\n', 'apps:\n  - path: "legacy/{app}/{env}"\n')
    write(example_repo, "legacy/worker/dev/cm.yaml", CM.format(name="old", value="1"))
    base = _commit_setup(example_repo)
    git(example_repo, "rm", "-q", "-r", "legacy")
    config = load_config_file(example_repo / ".prbot.yml")
    plans = [_plan(example_repo, config, base, None, envs=None, pool=_pool(config), dry_runner=None,
                   sparse=sparse).to_json() for sparse in (True, False)]
    assert plans[0] == plans[1]
    worker = next(t for t in plans[0]["targets"] if (t["app"], t["env"]) == ("worker", "dev"))
    assert worker["path"] == "apps/worker/envs/dev" and worker["status"] == "changed"
    git(example_repo, "reset", "-q", "--hard", base)
    git(example_repo, "commit", "-q", "--allow-empty", "-m", "head")
    head = git(example_repo, "rev-parse", "HEAD")
    errors = []
    for sparse in (True, False):
        with pytest.raises(PrbotError) as exc:
            _plan(example_repo, config, base, head, envs=None, pool=_pool(config), dry_runner=None, sparse=sparse)
        errors.append(str(exc.value))
    assert errors[0] == errors[1] and errors[0].startswith(".prbot.yml:") and "matched twice" in errors[0]


def test_config_change_and_attributes_take_the_full_way(example_repo: Path, caplog) -> None:
    _overlay_change(example_repo)
    _edit(example_repo, ".prbot.yml", "# prbot configuration", "# prbot's configuration")
    plan = plan_both_ways(example_repo, "HEAD", None, caplog, expect_sparse=False)
    assert len(plan["targets"]) == 9
    git(example_repo, "checkout", "-q", "--", ".prbot.yml")
    write(example_repo, ".gitattributes", "*.yaml text eol=lf\n")
    plan = plan_both_ways(example_repo, "HEAD", None, caplog, expect_sparse=False)
    assert [(t["app"], t["env"]) for t in plan["targets"]] == [("shop", "prod")]


def test_subdirectory_repository(tmp_path: Path, caplog) -> None:
    mono = init_repo(tmp_path / "mono")
    shutil.copytree(EXAMPLE, mono / "deploy" / "gitops")
    write(mono, "src/main.go", "package main\n")
    base = commit_all(mono)
    gitops = mono / "deploy" / "gitops"
    _base_change(gitops)
    write(mono, "src/main.go", "package main // edited\n")
    plan = plan_both_ways(gitops, base, None, caplog)
    assert {t["app"] for t in plan["targets"]} == {"shop"}
    head = commit_all(mono)
    assert plan_both_ways(gitops, base, head, caplog)["targets"] == plan["targets"]


def test_own_pool_gets_each_environments_kubernetes_version(example_repo: Path) -> None:
    write(example_repo, "charts/billing/templates/version.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kube\ndata:\n"
          "  version: {{ .Capabilities.KubeVersion.Version | quote }}\n")
    config = load_config_file(example_repo / ".prbot.yml")
    plan = make_plan(example_repo, config, "HEAD", untracked=True)
    versions = {}
    for t in plan.targets:
        [cm] = [c for c in t.changes if c.name == "kube"]
        versions[t.env] = cm.to_json()["diff"]
    assert "v1.33" in versions["dev"]                 # kubernetes_version: "1.33" in .prbot.yml
    assert "v1.33" not in versions["prod"]


# -- many random changes: the sparse way picks the same affected targets with the same digests ----------

RANDOM_CONFIG = """version: 1
environments:
  - name: dev
  - name: prod
apps:
  - path: "apps/{app}/envs/{env}"
    namespace: "{app}-{env}"
  - name: h
    path: "helm/{env}"
    helm: {chart: "charts/c", values: ["values.yaml"]}
"""


def _random_repo(root: Path) -> Path:
    repo = init_repo(root)
    write(repo, ".prbot.yml", RANDOM_CONFIG)
    write(repo, ".gitignore", "*.ign.yaml\n")
    for c in range(2):
        write(repo, f"components/c{c}/kustomization.yaml", f"kind: Component\ncommonLabels: {{c: '{c}'}}\n")
    for a in range(3):
        write(repo, f"apps/a{a}/base/kustomization.yaml", "resources: [deploy.yaml]\n")
        write(repo, f"apps/a{a}/base/deploy.yaml", CM.format(name=f"a{a}", value="base"))
        for env in ("dev", "prod"):
            write(repo, f"apps/a{a}/envs/{env}/kustomization.yaml",
                  f"resources: [../../base]\ncomponents: [../../../../components/c{a % 2}]\n"
                  "patches:\n  - path: p.yaml\n")
            write(repo, f"apps/a{a}/envs/{env}/p.yaml", CM.format(name=f"a{a}", value=env))
    for env in ("dev", "prod"):
        write(repo, f"apps/plain/envs/{env}/cm.yaml", CM.format(name="plain", value=env))
        write(repo, f"helm/{env}/values.yaml", f"env: {env}\n")
    write(repo, "charts/c/Chart.yaml", "apiVersion: v2\nname: c\nversion: 0.1.0\n")
    write(repo, "charts/c/templates/cm.yaml", CM.format(name="h", value="{{ .Values.env }}"))
    write(repo, "shared/s.yaml", CM.format(name="shared", value="1"))
    commit_all(repo, "random base")
    return repo


def _files_and_dirs(repo: Path) -> tuple[list[str], list[str]]:
    files, dirs = [], []
    for p in sorted(repo.rglob("*")):
        rel = p.relative_to(repo).as_posix()
        if rel.split("/")[0] in (".git", ".prbot.yml", ".gitignore"):
            continue
        (dirs if p.is_dir() and not p.is_symlink() else files).append(rel)
    return files, dirs


def _mutate(repo: Path, rnd: random.Random, n: int) -> None:
    for i in range(n):
        files, dirs = _files_and_dirs(repo)
        kustomizations = [f for f in files if f.endswith("kustomization.yaml") and not (repo / f).is_symlink()]
        what = rnd.choice(["edit", "edit", "delete", "add", "ref", "ref", "rmdir", "symlink", "ignored",
                           "new-target", "kustomize-toggle", "staged-only", "generator", "dir-link",
                           "second-kustomization", "helm-charts"])
        if what == "edit" and files:
            p = repo / rnd.choice(files)
            if p.is_file() and not p.is_symlink():
                p.write_text(p.read_text() + f"# edit {i}\n")
        elif what == "delete" and files:
            (repo / rnd.choice(files)).unlink()
        elif what == "add" and dirs:
            write(repo, f"{rnd.choice(dirs)}/new{i}.yaml", CM.format(name=f"new{i}", value="x"))
        elif what == "ref" and kustomizations:
            k = rnd.choice(kustomizations)
            here = posixpath.dirname(k)
            target = rnd.choice([*files, *dirs, "missing.yaml", "gone/dir", "github.com/acme/lib"])
            ref = target if target.startswith(("missing", "gone", "github")) else posixpath.relpath(target, here)
            section = rnd.choice(["bases", "resources", "crds", "components"])
            (repo / k).write_text((repo / k).read_text() + f"{section}: [{json.dumps(ref)}]\n")
        elif what == "rmdir" and dirs:
            shutil.rmtree(repo / rnd.choice(dirs))
        elif what == "symlink" and dirs and (files or dirs):
            place = rnd.choice(dirs)
            target = rnd.choice([*files, *dirs])
            link = repo / place / f"link{i}{'.yaml' if rnd.random() < 0.5 else ''}"
            if not link.exists():
                link.symlink_to(posixpath.relpath(target, place))
        elif what == "ignored" and dirs:
            place = rnd.choice(dirs)
            write(repo, f"{place}/local.ign.yaml", CM.format(name="ignored", value=str(i)))
            kustomization = repo / place / "kustomization.yaml"
            if kustomization.is_file() and not kustomization.is_symlink() and rnd.random() < 0.5:
                kustomization.write_text(kustomization.read_text() + "resources: [local.ign.yaml]\n")
        elif what == "new-target":
            write(repo, f"apps/n{i}/envs/{rnd.choice(['dev', 'prod'])}/cm.yaml", CM.format(name=f"n{i}", value="1"))
        elif what == "kustomize-toggle":
            d = repo / "apps/plain/envs" / rnd.choice(["dev", "prod"])
            if d.is_dir():
                k = d / "kustomization.yaml"
                if k.exists():
                    k.unlink()
                else:
                    k.write_text("resources: [cm.yaml]\n")
        elif what == "generator" and kustomizations:
            k = rnd.choice(kustomizations)
            here = posixpath.dirname(k)
            target = posixpath.relpath(rnd.choice(files), here) if files else "none.txt"
            (repo / k).write_text((repo / k).read_text() + f"configMapGenerator:\n  - name: g{i}\n"
                                  f"    files: [key{i}={target}]\n    literals: [A=/x]\n")
        elif what == "dir-link" and dirs:
            victim, target = rnd.choice(dirs), rnd.choice(dirs)
            if not target.startswith(victim) and (repo / victim).exists():
                shutil.rmtree(repo / victim)
                (repo / victim).symlink_to(posixpath.relpath(target, posixpath.dirname(victim) or "."))
        elif what == "second-kustomization" and kustomizations:
            write(repo, f"{posixpath.dirname(rnd.choice(kustomizations))}/Kustomization", "resources: []\n")
        elif what == "helm-charts" and kustomizations:
            k = rnd.choice(kustomizations)
            home = posixpath.relpath("charts", posixpath.dirname(k))
            (repo / k).write_text((repo / k).read_text() + f"helmGlobals: {{chartHome: {home}}}\n"
                                  "helmCharts:\n  - name: c\n    releaseName: c\n")
        elif what == "staged-only" and files:
            p = repo / rnd.choice(files)
            if p.is_file() and not p.is_symlink():
                old = p.read_bytes()
                p.write_text("staged: true\n")
                git(repo, "add", "-A")
                p.write_bytes(old)


def _summary(repo: Path, config: Config, base: str, head: str | None, sparse: bool) -> object:
    try:
        with contextlib.ExitStack() as stack:
            if head is None:                      # the working tree, as make_plan reads it
                head, dirty = gitrepo.snapshot_worktree(repo, untracked=True)
            b, h, affected = _sides(stack, repo, config, base, head, None, sparse)
            return sorted((k, b.targets.get(k), h.targets.get(k), b.keys.get(k), h.keys.get(k),
                                  b.closure_errors.get(k), h.closure_errors.get(k)) for k in affected)
    except PrbotError as exc:
        return str(exc)


@pytest.mark.parametrize("seed", range(40))
def test_random_changes_affect_the_same_targets_both_ways(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    repo = _random_repo(tmp_path / "repo")
    _mutate(repo, rnd, rnd.randint(0, 3))
    base = commit_all(repo, "base")
    _mutate(repo, rnd, rnd.randint(1, 4))
    head = commit_all(repo, "head") if rnd.random() < 0.4 else None
    config = load_config_file(repo / ".prbot.yml")
    sparse = _summary(repo, config, base, head, True)
    assert sparse == _summary(repo, config, base, head, False)


def test_target_behind_a_linked_pattern_directory(example_repo: Path, caplog) -> None:
    """Discovery follows a link named by a pattern's literal segment (`envs`): a target removed
    behind it changes paths that are not below its directory, so both revisions are used in full."""
    r = example_repo
    shutil.move(r / "apps/worker/envs", r / "worker-envs")
    (r / "apps/worker/envs").symlink_to("../../worker-envs")
    base = _commit_setup(r)
    git(r, "rm", "-q", "-r", "worker-envs/prod")
    plan = plan_both_ways(r, base, None, caplog, expect_sparse=False)
    assert [(t["app"], t["env"], t["status"]) for t in plan["targets"]] == [("worker", "prod", "removed")]


def test_the_plan_types_load_without_the_engine() -> None:
    """The reports read a plan's data types (`prbot.plan.model`) without loading what builds plans:
    no renderer, git, render pool or validation module comes with them; `make_plan` still imports
    from `prbot.plan` and loads the engine when asked for."""
    import subprocess
    import sys

    engine = ("prbot.plan.build", "prbot.plan.sparse", "prbot.render", "prbot.renderers", "prbot.gitrepo",
              "prbot.validate", "prbot.diff")
    code = ("import sys, prbot.plan.model, prbot.report.markdown, prbot.report.jsonout;"
            f"print(sorted(m for m in sys.modules if m in {engine!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = ("import sys; from prbot.plan import make_plan;"
            f"print(make_plan.__name__, sorted(m for m in sys.modules if m in {engine!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"make_plan {sorted(engine)!r}"

"""Plans read from a bare mirror (the service's case): base and head are commits, no working tree,
and the head is exported as sparsely as the base.  The sparse way must equal the full way."""

from __future__ import annotations

import logging
import random
import re
import subprocess
from pathlib import Path

import pytest
from support import commit_all, git, init_repo, write
from test_plan import EXPECTED, SCENARIOS, _mutate, _pool, _random_repo, _summary

from prbot import gitrepo
from prbot.config import Config, load_config
from prbot.plan.build import _plan

SPARSE_HEAD = re.compile(r"sparse plan: (\d+) candidate.*; (\d+) head file\(s\) exported")


def mirror_of(repo: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "mirror.git"
    subprocess.run(["git", "clone", "-q", "--bare", "--no-local", str(repo), str(dest)], check=True,
                   capture_output=True)
    return dest


def config_at(mirror: Path, rev: str) -> Config:
    text = gitrepo.read_file(mirror, rev, ".prbot.yml")
    assert text is not None
    return load_config(text.decode())


def both_ways(mirror: Path, base: str, head: str, caplog: pytest.LogCaptureFixture) -> tuple[dict, list[str]]:
    """The plan the sparse way (checked equal to the full way) and what the sparse way logged."""
    config = config_at(mirror, base)
    caplog.set_level(logging.DEBUG, logger="prbot.plan")
    caplog.clear()
    sparse = _plan(mirror, config, base, head, envs=None, pool=_pool(config), dry_runner=None, sparse=True)
    logged = [r.getMessage() for r in caplog.records if r.name == "prbot.plan" and "plan:" in r.getMessage()
              or "head exported in full" in r.getMessage()]
    full = _plan(mirror, config, base, head, envs=None, pool=_pool(config), dry_runner=None, sparse=False)
    assert sparse.to_json() == full.to_json()
    return sparse.to_json(), logged


@pytest.mark.parametrize("scenario", ["base-change", "overlay-change", "chart-change", "helm-values", "target-added",
                                      "target-removed", "head-references-new-file-and-dir", "remote-base-at-head",
                                      "symlinked-inputs", "values-file-deleted"])
def test_pull_request_in_a_bare_mirror(example_repo: Path, tmp_path: Path, scenario: str,
                                       caplog: pytest.LogCaptureFixture) -> None:
    base = git(example_repo, "rev-parse", SCENARIOS[scenario](example_repo))
    head = commit_all(example_repo, scenario)
    mirror = mirror_of(example_repo, tmp_path)
    plan, logged = both_ways(mirror, base, head, caplog)
    assert {f"{t['app']}/{t['env']}": t["status"] for t in plan["targets"]} == EXPECTED[scenario]
    if scenario != "symlinked-inputs":         # links on the way: the head is exported in full (below)
        assert any(SPARSE_HEAD.match(m) for m in logged), logged


def test_the_head_export_follows_the_change_not_the_repository(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    repo = init_repo(tmp_path / "repo")
    write(repo, ".prbot.yml", "version: 1\nenvironments: [{name: dev}, {name: prod}]\n"
          "apps:\n  - path: \"apps/{app}/{env}\"\n")
    for i in range(40):
        write(repo, f"apps/a{i}/base/kustomization.yaml", "resources: [cm.yaml]\n")
        write(repo, f"apps/a{i}/base/cm.yaml", f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a{i}\n")
        for env in ("dev", "prod"):
            write(repo, f"apps/a{i}/{env}/kustomization.yaml", f"resources: [../base]\nnamespace: {env}\n")
    base = commit_all(repo, "base")
    write(repo, "apps/a7/prod/kustomization.yaml", "resources: [../base]\nnamespace: prod-2\n")
    head = commit_all(repo, "head")
    plan, logged = both_ways(mirror_of(repo, tmp_path), base, head, caplog)
    assert [(t["app"], t["env"], t["status"]) for t in plan["targets"]] == [("a7", "prod", "changed")]
    [match] = [m for m in map(SPARSE_HEAD.match, logged) if m]
    assert (int(match[1]), int(match[2])) == (1, 3)      # of 80 targets and 240 files: a7/prod and its base


def test_what_the_tree_view_cannot_vouch_for_exports_the_head_in_full(example_repo: Path, tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    write(example_repo, ".gitattributes", "*.yaml text eol=lf\n")
    base = commit_all(example_repo, "attributes")
    write(example_repo, "apps/shop/envs/prod/kustomization.yaml",
          (example_repo / "apps/shop/envs/prod/kustomization.yaml").read_text() + "nameSuffix: -x\n")
    head = commit_all(example_repo, "change")
    plan, logged = both_ways(mirror_of(example_repo, tmp_path), base, head, caplog)
    assert [(t["app"], t["env"]) for t in plan["targets"]] == [("shop", "prod")]
    assert any("head exported in full: an attribute file (.gitattributes)" in m for m in logged), logged
    assert not any(SPARSE_HEAD.match(m) for m in logged) and any(m.startswith("sparse plan:") for m in logged)


def test_a_link_on_discoverys_way_takes_the_full_way(example_repo: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    r = example_repo
    subprocess.run(["mv", str(r / "apps/worker/envs"), str(r / "worker-envs")], check=True)
    (r / "apps/worker/envs").symlink_to("../../worker-envs")
    base = commit_all(r, "linked envs")
    git(r, "rm", "-q", "-r", "worker-envs/prod")
    head = commit_all(r, "remove prod")
    plan, logged = both_ways(mirror_of(r, tmp_path), base, head, caplog)
    assert [(t["app"], t["env"], t["status"]) for t in plan["targets"]] == [("worker", "prod", "removed")]
    assert logged[-1].startswith("full plan:"), logged


@pytest.mark.parametrize("seed", range(24))
def test_random_pull_requests_in_a_bare_mirror(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(1000 + seed)
    repo = _random_repo(tmp_path / "repo")
    _mutate(repo, rnd, rnd.randint(0, 3))
    base = commit_all(repo, "base")
    _mutate(repo, rnd, rnd.randint(1, 4))
    head = commit_all(repo, "head")
    mirror = mirror_of(repo, tmp_path)
    config = config_at(mirror, base)
    assert _summary(mirror, config, base, head, True) == _summary(mirror, config, base, head, False)


def test_the_scan_in_a_mirror_never_vouches_for_a_target_holding_an_expandable_object(tmp_path: Path) -> None:
    """The head scan reads the resource files of every candidate in batches (`TreeProbe.prefetch_all`);
    a target reaching a file with an object the cluster expands, at any depth, is left to its
    closure, exactly as the scan of a working tree decides."""
    from prbot.plan.probe import ChangedPaths, TreeProbe

    repo = init_repo(tmp_path / "repo")
    release = ("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {name: r}\n"
               "spec: {chart: {spec: {chart: ./charts/r}}}\n")
    write(repo, "charts/r/Chart.yaml", "apiVersion: v2\nname: r\nversion: 1.0.0\n")
    write(repo, "lib/deep/kustomization.yaml", "resources: [release.yaml]\n")
    write(repo, "lib/deep/release.yaml", release)
    write(repo, "lib/mid/kustomization.yaml", "resources: [../deep, cm.yaml]\n")
    write(repo, "lib/mid/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: m}\n")
    for app, resources in (("plain", "[cm.yaml]"), ("helm", "[cm.yaml, release.yaml]"), ("nested", "[../../lib/mid]"),
                           ("argo", "[app.yaml]")):
        write(repo, f"apps/{app}/kustomization.yaml", f"resources: {resources}\n")
        write(repo, f"apps/{app}/cm.yaml", f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {app}}}\n")
    write(repo, "apps/helm/release.yaml", release)
    write(repo, "apps/argo/app.yaml", "# an object of argoproj.io, written in a comment only: still refused\n")
    head = commit_all(repo, "head")
    mirror = mirror_of(repo, tmp_path)
    apps = ["apps/plain", "apps/helm", "apps/nested", "apps/argo"]
    nothing = ChangedPaths([])
    with gitrepo.tree_view(mirror, head) as view:
        probe = TreeProbe(tmp_path / "unused", view)
        probe.prefetch_all(apps)
        in_mirror = {a: probe.kustomization_clean(a, nothing) for a in apps}
    on_disk = TreeProbe(repo)
    assert in_mirror == {a: on_disk.kustomization_clean(a, nothing) for a in apps} == {
        "apps/plain": True, "apps/helm": False, "apps/nested": False, "apps/argo": False}

"""A Flux HelmRelease whose chart comes from a GitRepository of ANOTHER repository: fetched by prbot
(over https, when render.remote allows it) at the ref the GitRepository names, from a git repository
served by a local stand-in (PRBOT_REMOTE_STANDINS, as the operator maps one in), and its chart
rendered like a local one.  Attacks beside: credentials in the URL, chart paths and links leaving
the fetched repository, ssh and semver refs, this repository never fetched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import commit_all, init_repo, write
from test_remote import _Served, remote_repo, standin

from prbot.cli import main

__all__ = ["standin"]          # the stand-in git host fixture of test_remote, used here

FROM = "HelmRelease apps/podinfo"
CHART = {
    "charts/podinfo/Chart.yaml": "apiVersion: v2\nname: podinfo\nversion: 1.0.0\n",
    "charts/podinfo/values.yaml": "replicaCount: 1\ncolor: {color}\n",
    "charts/podinfo/templates/deployment.yaml":
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{{{ .Release.Name }}}}\n"
        "spec:\n  replicas: {{{{ .Values.replicaCount }}}}\n  selector:\n    matchLabels: {{app: podinfo}}\n"
        "  template:\n    metadata:\n      labels: {{app: podinfo}}\n      annotations:\n"
        "        color: {{{{ .Values.color | quote }}}}\n    spec:\n      containers:\n"
        "        - name: podinfo\n          image: ghcr.io/stefanprodan/podinfo:6.5.0\n",
}
SOURCE = """apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: infra
spec:
  interval: 1m
  url: {url}
  ref:
{ref}
"""
RELEASE = """apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: podinfo
spec:
  interval: 5m
  chart:
    spec:
      chart: {chart}
      sourceRef:
        kind: GitRepository
        name: infra
  values:
    replicaCount: 2
"""
ALLOW = 'render:\n  remote: ["https://github.com/acme/"]\n  repository: ["https://github.com/acme/fleet"]\n'


def chart_files(color: str) -> dict[str, str]:
    return {path: text.format(color=color) for path, text in CHART.items()}


def fleet(tmp_path: Path, render: str = ALLOW, url: str = "https://github.com/acme/infra",
          ref: str = "    tag: v17.0.0", chart: str = "./charts/podinfo") -> tuple[Path, str]:
    """This repository: one target (apps/dev) rendering the GitRepository and the HelmRelease."""
    repo = init_repo(tmp_path / "fleet")
    write(repo, ".prbot.yml", "version: 1\nenvironments: [{name: dev}]\napps:\n  - name: podinfo\n"
          "    path: 'apps/{env}'\n" + render)
    base = commit_all(repo, "config")
    write(repo, "apps/dev/kustomization.yaml", "namespace: apps\nresources: [source.yaml, release.yaml]\n")
    write(repo, "apps/dev/source.yaml", SOURCE.format(url=url, ref=ref))
    write(repo, "apps/dev/release.yaml", RELEASE.format(chart=chart))
    commit_all(repo, "layout")
    return repo, base


def plan(repo: Path, base: str, capsys: pytest.CaptureFixture[str], fmt: str = "json") -> tuple[int, Any]:
    code = main(["plan", "--repo", str(repo), "--base", base, "--format", fmt])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    return code, json.loads(out) if fmt == "json" else out


def target(data: dict) -> dict:
    [t] = [t for t in data["targets"] if t["app"] == "podinfo"]
    return t  # type: ignore[no-any-return]


def changes(t: dict) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {(c["kind"], c["name"]): (c["action"], c.get("from")) for c in t["changes"]}


def diff_of(t: dict, kind: str, name: str) -> str:
    [got] = [c["diff"] for c in t["changes"] if (c["kind"], c["name"]) == (kind, name)]
    return str(got)


@pytest.fixture
def infra(standin: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """https://github.com/acme/infra on the stand-in: charts/podinfo at tag v17.0.0 (color blue).
    The remote cache is shared by every test of a run: a tag holds the same chart in every test."""
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://github.com/={url}/")
    remote_repo(served, "first", tag="v17.0.0", files=chart_files("blue"))
    return served


# --------------------------------------------------------------------------------------------
# What the release creates
# --------------------------------------------------------------------------------------------

def test_a_chart_of_another_allowed_repository_renders_at_its_tag_and_a_tag_bump_shows_the_change(
        tmp_path: Path, infra: Path, capsys: pytest.CaptureFixture[str]) -> None:
    remote_repo(infra, "second", tag="v17.1.0", files=chart_files("green"))
    repo, base = fleet(tmp_path)
    code, data = plan(repo, base, capsys)
    t = target(data)
    assert code == 0 and t["status"] == "added" and t.get("not_expanded") is None, t
    assert changes(t)[("Deployment", "podinfo")] == ("added", FROM)
    deployment = diff_of(t, "Deployment", "podinfo")
    assert "color: blue" in deployment and "replicas: 2" in deployment     # the chart at v17.0.0, the values
    assert _Served.requests
    # a tag is pinned: cached, the next plan fetches nothing
    fetched = len(_Served.requests)
    code, again = plan(repo, base, capsys)
    assert again == data and len(_Served.requests) == fetched
    # the GitRepository moves to v17.1.0: the chart's change is shown
    head = commit_all(repo, "the release at v17.0.0")
    write(repo, "apps/dev/source.yaml", SOURCE.format(url="https://github.com/acme/infra", ref="    tag: v17.1.0"))
    code, data = plan(repo, head, capsys)
    t = target(data)
    assert code == 0 and changes(t) == {("GitRepository", "infra"): ("changed", None),
                                        ("Deployment", "podinfo"): ("changed", FROM)}, t
    moved = diff_of(t, "Deployment", "podinfo")
    assert "-        color: blue" in moved and "+        color: green" in moved
    md = plan(repo, head, capsys, fmt="markdown")[1]
    assert "· from `HelmRelease apps/podinfo`" in md


def test_values_files_come_from_that_repository_and_an_overlay_may_patch_the_tag(
        tmp_path: Path, infra: Path, capsys: pytest.CaptureFixture[str]) -> None:
    remote_repo(infra, "second", tag="v17.2.0",
                files={**chart_files("green"), "values/prod.yaml": "color: purple\nreplicaCount: 5\n"})
    repo, base = fleet(tmp_path)
    write(repo, "apps/dev/kustomization.yaml", "namespace: apps\nresources: [source.yaml, release.yaml]\n"
          "patches: [{path: tag.yaml}]\n")
    write(repo, "apps/dev/tag.yaml", "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\n"
          "metadata: {name: infra}\nspec:\n  ref: {tag: v17.2.0}\n")
    write(repo, "apps/dev/release.yaml", RELEASE.format(chart="./charts/podinfo").replace(
        "        name: infra\n", "        name: infra\n      valuesFiles: [values/prod.yaml]\n"))
    commit_all(repo, "overlay")
    code, data = plan(repo, base, capsys)
    t = target(data)
    assert code == 0 and t.get("not_expanded") is None, (t.get("not_expanded"), t["error"], t["status"])
    deployment = diff_of(t, "Deployment", "podinfo")
    assert "color: purple" in deployment and "replicas: 2" in deployment      # the file, then spec.values
    # a values file leaving that repository is refused
    write(repo, "apps/dev/release.yaml", RELEASE.format(chart="./charts/podinfo").replace(
        "        name: infra\n", "        name: infra\n      valuesFiles: [../../../etc/passwd]\n"))
    commit_all(repo, "climbing")
    code, data = plan(repo, base, capsys)
    [reason] = target(data)["not_expanded"]
    assert code == 1 and "refused" in reason and "leaves the repository" in reason, reason
    assert "root:" not in json.dumps(data)


def test_a_commit_comes_before_the_tag(tmp_path: Path, infra: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = remote_repo(infra, "first", tag="v17.0.0", files=chart_files("blue"))
    remote_repo(infra, "second", tag="v17.1.0", files=chart_files("green"))
    repo, base = fleet(tmp_path, ref=f"    tag: v17.1.0\n    commit: {first}")
    code, data = plan(repo, base, capsys)
    t = target(data)
    assert code == 0 and t.get("not_expanded") is None, t.get("not_expanded")
    assert "color: blue" in diff_of(t, "Deployment", "podinfo")


def test_a_flux_kustomization_of_another_repository_is_named(tmp_path: Path, infra: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = fleet(tmp_path)
    write(repo, "apps/dev/release.yaml", "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
          "metadata: {name: infra}\nspec:\n  interval: 5m\n  path: ./base\n  prune: true\n"
          "  sourceRef: {kind: GitRepository, name: infra}\n")
    commit_all(repo, "a Kustomization")
    code, data = plan(repo, base, capsys)
    t = target(data)
    [reason] = t["not_expanded"]
    assert code == 1 and t["error"] is None and "Kustomization apps/infra" in reason
    assert "another repository (github.com/acme/infra)" in reason, reason


def test_a_branch_is_fetched_again_by_every_plan(tmp_path: Path, infra: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = fleet(tmp_path, ref="    branch: main")
    code, data = plan(repo, base, capsys)
    assert code == 0 and "color: blue" in diff_of(target(data), "Deployment", "podinfo"), target(data)
    remote_repo(infra, "second", tag=None, files=chart_files("green"))     # main moves upstream
    before = len(_Served.requests)
    code, data = plan(repo, base, capsys)
    assert len(_Served.requests) > before                                 # not cached
    assert "color: green" in diff_of(target(data), "Deployment", "podinfo")   # not a stale render


def test_a_repository_render_remote_does_not_allow_is_named_and_the_target_still_plans(
        tmp_path: Path, infra: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = fleet(tmp_path, render='render:\n  remote: ["https://github.com/other/"]\n')
    code, data = plan(repo, base, capsys)
    t = target(data)
    assert code == 1                                                      # a blind spot: not green
    assert t["status"] == "added" and t["error"] is None
    assert set(changes(t)) == {("GitRepository", "infra"), ("HelmRelease", "podinfo")}
    [reason] = t["not_expanded"]
    assert reason.startswith(f"{FROM}: its chart comes from GitRepository apps/infra (https://github.com/acme/infra)")
    assert "https://github.com/acme/infra//charts/podinfo?ref=v17.0.0 is not allowed by render.remote" in reason
    assert _Served.requests == []
    md = plan(repo, base, capsys, fmt="markdown")[1]
    assert "Not expanded" in md and "render.remote" in md


# --------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------

TOKEN = "ghp_S3cretT0kenNeverShown"


@pytest.mark.parametrize("url", [f"https://x-access-token:{TOKEN}@github.com/acme/infra",
                                 f"https://{TOKEN}@github.com/acme/infra.git"])
def test_credentials_in_the_url_are_never_shown_nor_sent(url: str, tmp_path: Path, infra: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = fleet(tmp_path, url=url)
    head_files = (repo / "apps/dev/source.yaml").read_text()
    write(repo, "apps/dev/release.yaml", RELEASE.format(chart="./charts/podinfo").replace("replicaCount: 2",
                                                                                         "replicaCount: 3"))
    code, data = plan(repo, base, capsys)
    t = target(data)
    [reason] = t["not_expanded"]
    assert "https://github.com/acme/infra" in reason and "carries credentials" in reason, reason
    assert TOKEN not in reason
    for c in t["changes"]:                    # the PR's own GitRepository is its own file; only its diff holds it
        if c["kind"] != "GitRepository":
            assert TOKEN not in json.dumps(c)
    assert TOKEN in head_files and _Served.requests == []                 # nothing fetched with or without it
    md = plan(repo, base, capsys, fmt="markdown")[1]
    [line] = [x for x in md.splitlines() if "carries credentials" in x]
    assert "github.com/acme/infra" in line and TOKEN not in line


@pytest.mark.parametrize("chart", ["../../etc", "charts/../../../etc", "/etc"])
def test_a_chart_path_climbing_out_of_the_fetched_repository_is_refused(
        chart: str, tmp_path: Path, infra: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = fleet(tmp_path, chart=chart)
    code, data = plan(repo, base, capsys)
    t = target(data)
    assert code == 1 and t["status"] == "added" and t["error"] is None
    [reason] = t["not_expanded"]
    assert "refused: chart path" in reason and "leaves the repository" in reason, reason
    assert "root:" not in json.dumps(t) and _Served.requests == []


@pytest.mark.parametrize("chart,links", [
    ("./charts/evil", {"charts/evil": "/etc"}),                                     # the chart is a link out
    ("./charts/leaky", {"charts/leaky/templates/passwd.yaml": "/etc/passwd"}),       # a file of it is
    ("./charts/sneaky", {"charts/sneaky/templates": "../../../../../../etc"}),        # a directory of it is
])
def test_a_link_in_the_fetched_repository_pointing_outside_it_is_refused(
        chart: str, links: dict[str, str], tmp_path: Path, standin: tuple[str, Path],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url, served = standin
    monkeypatch.setenv("PRBOT_REMOTE_STANDINS", f"https://github.com/={url}/")
    name = chart.rsplit("/", 1)[1]
    files = {p.replace("podinfo", name): t for p, t in chart_files("blue").items()
             if not any(p.replace("podinfo", name).startswith(link) for link in links)}
    tag = f"v17.9.{len(name)}"                # its own tag: the remote cache is shared by the tests
    remote_repo(served, "links", tag=tag, files=files, links=links)
    repo, base = fleet(tmp_path, chart=chart, ref=f"    tag: {tag}")
    code, data = plan(repo, base, capsys)
    t = target(data)
    assert code == 1 and t["status"] == "added" and t["error"] is None
    [reason] = t["not_expanded"]
    assert "refused" in reason and "outside" in reason, reason
    assert "root:" not in json.dumps(t)                                   # /etc/passwd never rendered
    assert ("Deployment", name) not in changes(t)


def test_an_ssh_url_is_named_with_its_https_form(tmp_path: Path, infra: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = fleet(tmp_path, url="ssh://git@github.com/acme/infra")
    code, data = plan(repo, base, capsys)
    [reason] = target(data)["not_expanded"]
    assert code == 1 and "ssh URL" in reason and "https://github.com/acme/infra" in reason, reason
    assert "render.remote" in reason and "vendor" in reason and "git@" not in reason
    assert _Served.requests == []


def test_a_semver_ref_is_named_not_guessed(tmp_path: Path, infra: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = fleet(tmp_path, ref="    semver: '>=1.0.0'")
    code, data = plan(repo, base, capsys)
    [reason] = target(data)["not_expanded"]
    assert code == 1 and "ref.semver" in reason and "pin ref.tag or ref.commit" in reason, reason
    assert _Served.requests == []


@pytest.mark.parametrize("ref", ["    tag: --upload-pack=touch /tmp/prbot-pwned", "    branch: ../../main",
                                 "    tag: 'v1 ; id'"])
def test_a_ref_that_is_not_a_plain_git_ref_is_refused(ref: str, tmp_path: Path, infra: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = fleet(tmp_path, ref=ref)
    code, data = plan(repo, base, capsys)
    [reason] = target(data)["not_expanded"]
    assert code == 1 and "refused: its ref" in reason, reason
    assert _Served.requests == [] and not Path("/tmp/prbot-pwned").exists()


def test_this_repository_is_read_from_the_tree_never_fetched_even_when_allowed(
        tmp_path: Path, infra: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, base = fleet(tmp_path, url="https://github.com/acme/fleet.git", ref="    branch: main")
    for rel, text in chart_files("local").items():
        write(repo, rel, text)
    commit_all(repo, "the chart")
    code, data = plan(repo, base, capsys)
    t = target(data)
    assert code == 0 and t.get("not_expanded") is None, t
    assert "color: local" in diff_of(t, "Deployment", "podinfo")
    assert _Served.requests == []                                         # render.remote allows acme/: not asked

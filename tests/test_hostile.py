"""Hostile pull requests (issue 8): each test is an attack — a base commit and a hostile head — and
asserts what the PR author must NOT get.  Real git repositories, real kubectl / helm."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from support import PROJECT, commit_all, init_repo, recording_server, write

from prbot import sandbox
from prbot.cli import main
from prbot.report import is_plan_comment, part_of, render_markdown
from prbot.report.markdown import MARKER

APPS = {                      # an `apps[]` entry per top directory a test repository may hold
    "apps/": '  - path: "apps/{app}/envs/{env}"\n    namespace: "{app}-{env}"\n',
    "clusters/": '  - name: infra\n    path: "clusters/{env}/infra"\n    namespace: "infra-{env}"\n',
    "web/": ('  - name: web\n    path: "web/{env}"\n    namespace: "web-{env}"\n'
             '    helm: {chart: "charts/web", values: ["values.yaml"]}\n'),
}


def config_for(files: Iterable[str]) -> str:
    """`.prbot.yml` with the apps whose directories the repository holds (a pattern matching nothing
    is a configuration error)."""
    names = list(files)
    blocks = [block for top, block in APPS.items() if any(n.startswith(top) for n in names)]
    return "version: 1\nenvironments:\n  - name: dev\n  - name: prod\napps:\n" + "".join(blocks or APPS.values())

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value}\n"
CHART = "apiVersion: v2\nname: {name}\nversion: 1.0.0\n"


def repo_with(tmp_path: Path, files: dict[str, str], name: str = "gitops") -> Path:
    repo = init_repo(tmp_path / name)
    write(repo, ".prbot.yml", config_for(files))
    for rel, text in files.items():
        write(repo, rel, text)
    return repo


def plan(repo: Path, base: str, head: str | None, capsys: pytest.CaptureFixture[str],
         *extra: str) -> tuple[int, dict, str, str]:
    """(exit code, JSON plan, markdown comment, stderr) of `prbot plan`, as a user runs it."""
    args = ["plan", "--repo", str(repo), "--base", base, *(["--head", head] if head else []), *extra]
    code = main([*args, "--format", "json"])
    out, err = capsys.readouterr()
    assert code in (0, 1), err
    data = json.loads(out)
    code_md = main(args)
    md, err_md = capsys.readouterr()
    assert code_md == code
    return code, data, md, err + err_md


def target(data: dict, app: str, env: str) -> dict:
    [found] = [t for t in data["targets"] if (t["app"], t["env"]) == (app, env)]
    return found


def diff_text(t: dict) -> str:
    return "\n".join(c["diff"] for c in t["changes"])


# ====================================================================================================
# 1. Hidden changes: files named inside generator / transformer / validator configurations
# ====================================================================================================

GEN = "apiVersion: builtin\nkind: {kind}\nmetadata:\n  name: {name}\n"
DEPLOY = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  replicas: 1\n"
          "  selector:\n    matchLabels: {app: app}\n  template:\n    metadata:\n      labels: {app: app}\n"
          "    spec:\n      containers:\n        - name: app\n          image: nginx:1.27\n")
K = "apps/app/envs/dev"

# name -> (files of the base, the one file the hostile head changes, text it changes to, text the diff shows)
HIDDEN: dict[str, tuple[dict[str, str], str, str, str]] = {
    "generator file: ConfigMapGenerator files": (
        {f"{K}/kustomization.yaml": "generators: [gen.yaml]\n",
         f"{K}/gen.yaml": GEN.format(kind="ConfigMapGenerator", name="cfg") + "files: [data.txt]\n",
         f"{K}/data.txt": "old\n"}, f"{K}/data.txt", "sneaky\n", "sneaky"),
    "inline generator (block)": (
        {f"{K}/kustomization.yaml": "generators:\n  - |-\n    apiVersion: builtin\n    kind: ConfigMapGenerator\n"
                                    "    metadata: {name: cfg}\n    files: [conf=settings/app.conf]\n",
         f"{K}/settings/app.conf": "old\n"}, f"{K}/settings/app.conf", "sneaky\n", "sneaky"),
    "inline generator (flow, one line)": (
        {f"{K}/kustomization.yaml": "generators:\n  - '{apiVersion: builtin, kind: ConfigMapGenerator, "
                                    "metadata: {name: cfg}, envs: [app.env]}'\n",
         f"{K}/app.env": "MODE=old\n"}, f"{K}/app.env", "MODE=sneaky\n", "sneaky"),
    "generator built by a kustomization directory": (
        {f"{K}/kustomization.yaml": "generators: [gens]\n",
         f"{K}/gens/kustomization.yaml": "resources: [cm.yaml]\n",
         f"{K}/gens/cm.yaml": GEN.format(kind="ConfigMapGenerator", name="cfg") + "files: [data.txt]\n",
         f"{K}/data.txt": "old\n"}, f"{K}/data.txt", "sneaky\n", "sneaky"),
    "generator configuration patched by its kustomization": (
        {f"{K}/kustomization.yaml": "generators: [gens]\n",
         f"{K}/gens/kustomization.yaml": "resources: [cm.yaml]\npatches: [{path: point.yaml}]\n",
         f"{K}/gens/cm.yaml": GEN.format(kind="ConfigMapGenerator", name="cfg") + "files: [decoy.txt]\n",
         f"{K}/gens/point.yaml": GEN.format(kind="ConfigMapGenerator", name="cfg") + "files: [real.txt]\n",
         f"{K}/decoy.txt": "decoy\n", f"{K}/real.txt": "old\n"}, f"{K}/real.txt", "sneaky\n", "sneaky"),
    "SecretGenerator envs (masked, still seen)": (
        {f"{K}/kustomization.yaml": "generators: [gen.yaml]\n",
         f"{K}/gen.yaml": GEN.format(kind="SecretGenerator", name="sec") + "envs: [secret.env]\n",
         f"{K}/secret.env": "PASSWORD=old-password\n"}, f"{K}/secret.env", "PASSWORD=new-password\n",
        "*** (after)"),
    "PatchTransformer path": (
        {f"{K}/kustomization.yaml": "resources: [deploy.yaml]\ntransformers: [patch.yaml]\n",
         f"{K}/deploy.yaml": DEPLOY,
         f"{K}/patch.yaml": GEN.format(kind="PatchTransformer", name="p") + "path: replicas.yaml\n"
                            "target: {kind: Deployment}\n",
         f"{K}/replicas.yaml": "- {op: replace, path: /spec/replicas, value: 2}\n"},
        f"{K}/replicas.yaml", "- {op: replace, path: /spec/replicas, value: 9}\n", "replicas: 9"),
    "PatchStrategicMergeTransformer paths": (
        {f"{K}/kustomization.yaml": "resources: [deploy.yaml]\ntransformers:\n  - |-\n    apiVersion: builtin\n"
                                    "    kind: PatchStrategicMergeTransformer\n    metadata: {name: p}\n"
                                    "    paths: [psm.yaml]\n",
         f"{K}/deploy.yaml": DEPLOY,
         f"{K}/psm.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec: {replicas: 2}\n"},
        f"{K}/psm.yaml", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec: {replicas: 7}\n",
        "replicas: 7"),
    "PatchJson6902Transformer path": (
        {f"{K}/kustomization.yaml": "resources: [deploy.yaml]\ntransformers: [json.yaml]\n",
         f"{K}/deploy.yaml": DEPLOY,
         f"{K}/json.yaml": GEN.format(kind="PatchJson6902Transformer", name="j") + "path: ops.yaml\n"
                           "target: {group: apps, version: v1, kind: Deployment, name: app}\n",
         f"{K}/ops.yaml": "- {op: replace, path: /spec/replicas, value: 3}\n"},
        f"{K}/ops.yaml", "- {op: replace, path: /spec/replicas, value: 5}\n", "replicas: 5"),
    "ReplacementTransformer replacements[].path": (
        {f"{K}/kustomization.yaml": "resources: [deploy.yaml, cm.yaml]\ntransformers: [repl.yaml]\n",
         f"{K}/deploy.yaml": DEPLOY, f"{K}/cm.yaml": CM.format(name="src", value="x"),
         f"{K}/repl.yaml": GEN.format(kind="ReplacementTransformer", name="r") + "replacements:\n  - path: r.yaml\n",
         f"{K}/r.yaml": "source: {kind: ConfigMap, name: src, fieldPath: data.key}\n"
                        "targets: [{select: {kind: Deployment}, fieldPaths: [metadata.annotations.from], "
                        "options: {create: true}}]\n"},
        f"{K}/r.yaml", "source: {kind: ConfigMap, name: src, fieldPath: metadata.name}\n"
                       "targets: [{select: {kind: Deployment}, fieldPaths: [metadata.annotations.from], "
                       "options: {create: true}}]\n",
        "from: src"),
}


@pytest.mark.parametrize("case", list(HIDDEN))
def test_a_change_hidden_in_a_plugin_configuration_is_planned(tmp_path: Path, case: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    files, changed, text, shown = HIDDEN[case]
    repo = repo_with(tmp_path, files)
    base = commit_all(repo, "base")
    write(repo, changed, text)                           # the hostile head touches only that file
    head = commit_all(repo, "head")
    _, data, md, _ = plan(repo, base, head, capsys)
    t = target(data, "app", "dev")
    assert t["status"] == "changed", t
    assert shown in diff_text(t)
    assert "No targets affected" not in md
    assert "old-password" not in json.dumps(data) and "new-password" not in md


def test_the_render_cache_never_serves_another_repositorys_output(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    files, changed, _, _ = HIDDEN["generator file: ConfigMapGenerator files"]
    outputs = []
    for name, value in (("first", "first-repo-data"), ("second", "second-repo-data")):
        repo = repo_with(tmp_path, {**files, changed: value + "\n"}, name=name)
        base = commit_all(repo, "base")
        write(repo, f"{K}/extra.yaml", CM.format(name="extra", value="x"))
        write(repo, f"{K}/kustomization.yaml", "generators: [gen.yaml]\nresources: [extra.yaml]\n")
        head = commit_all(repo, "head")
        outputs.append(json.dumps(plan(repo, base, head, capsys)[1]))   # one disk cache for both
    assert "first-repo-data" not in outputs[1] or "second-repo-data" in outputs[1]
    assert "second-repo-data" not in outputs[0]


# ====================================================================================================
# 2. URLs through every field that takes one: found, refused, never fetched
# ====================================================================================================

class _Recorder:
    hits: list[str] = []         # the paths the loopback server was asked for, this test


@pytest.fixture
def loopback() -> Iterator[str]:
    """A local HTTP server recording every request: `http://127.0.0.1:PORT`."""
    with recording_server(CM.format(name="fetched", value="FETCHED-FROM-LOOPBACK").encode()) as (url, hits):
        _Recorder.hits = hits
        yield url


def url_layouts(url: str) -> dict[str, str]:
    """kustomization.yaml texts, each reaching `url` through another field."""
    def gen(kind: str, field: str) -> str:
        return "{apiVersion: builtin, kind: " + kind + ", metadata: {name: g}, " + field + "}"

    inline = [gen("ConfigMapGenerator", f"files: [{url}/files.txt]"),
              gen("ConfigMapGenerator", f"envs: [{url}/envs.env]"),
              gen("SecretGenerator", f"env: {url}/env.env"),
              gen("PatchTransformer", f"path: {url}/pt.yaml"),
              gen("PatchJson6902Transformer", f"path: {url}/pj.yaml, target: {{kind: ConfigMap}}"),
              gen("PatchStrategicMergeTransformer", f"paths: [{url}/psm.yaml]"),
              gen("ReplacementTransformer", f"replacements: [{{path: {url}/r.yaml}}]"),
              gen("HelmChartInflationGenerator", f"name: web, repo: {url}/charts, version: 1.0.0"),
              gen("HelmChartInflationGenerator", f"name: web, valuesFile: {url}/values.yaml")]
    base = "resources: [cm.yaml]\n"
    out = {
        "resources": f"resources: [cm.yaml, {url}/resource.yaml]\n",
        "bases": f"{base}bases: [{url}/base]\n",
        "components": f"{base}components: [{url}/component]\n",
        "patches": f"{base}patches: [{{path: {url}/patch.yaml}}]\n",
        "patchesStrategicMerge": f"{base}patchesStrategicMerge: [{url}/psm.yaml]\n",
        "patchesJson6902": f"{base}patchesJson6902: [{{path: {url}/j.yaml, target: {{kind: ConfigMap}}}}]\n",
        "configMapGenerator files": f"{base}configMapGenerator: [{{name: c, files: [{url}/f.txt]}}]\n",
        "secretGenerator envs": f"{base}secretGenerator: [{{name: s, envs: [{url}/s.env]}}]\n",
        "crds": f"{base}crds: [{url}/crd.json]\n",
        "configurations": f"{base}configurations: [{url}/conf.yaml]\n",
        "openapi": f"{base}openapi: {{path: {url}/schema.json}}\n",
        "replacements": f"{base}replacements: [{{path: {url}/r.yaml}}]\n",
        "helmCharts repo": f"{base}helmCharts: [{{name: web, repo: {url}/charts, version: 1.0.0}}]\n",
        "helmCharts valuesFile": f"{base}helmCharts: [{{name: web, valuesFile: {url}/v.yaml}}]\n",
        "helmCharts additionalValuesFiles":
            f"{base}helmCharts: [{{name: web, additionalValuesFiles: [{url}/v.yaml]}}]\n",
        "generators (a URL as the configuration)": f"{base}generators: [{url}/gen.yaml]\n",
        "transformers (a URL as the configuration)": f"{base}transformers: [{url}/tr.yaml]\n",
        "validators (a URL as the configuration)": f"{base}validators: [{url}/val.yaml]\n",
    }
    for i, config in enumerate(inline):
        section = "generators" if "Generator" in config.split("kind: ")[1][:30] else "transformers"
        out[f"inline {section} #{i}"] = f"{base}{section}:\n  - \"{config}\"\n"
    return out


@pytest.mark.parametrize("isolation", ["jail", "off"])
def test_urls_in_any_field_are_refused_and_never_fetched(tmp_path: Path, loopback: str, isolation: str,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PRBOT_RENDER_ISOLATION", isolation)
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "cache"))     # renders that really run
    sandbox.reset_isolation()
    layouts = url_layouts(loopback)
    files = {}
    for i, _ in enumerate(layouts):
        files[f"apps/u{i}/envs/dev/kustomization.yaml"] = "resources: [cm.yaml]\n"
        files[f"apps/u{i}/envs/dev/cm.yaml"] = CM.format(name=f"u{i}", value="base")
    for i in range(3):                                       # renders that do run
        files[f"apps/fine{i}/envs/dev/kustomization.yaml"] = "resources: [cm.yaml]\n"
        files[f"apps/fine{i}/envs/dev/cm.yaml"] = CM.format(name=f"fine{i}", value="base")
    repo = repo_with(tmp_path, files)
    base = commit_all(repo, "base")
    for i, text in enumerate(layouts.values()):
        write(repo, f"apps/u{i}/envs/dev/kustomization.yaml", text)
    for i in range(3):
        write(repo, f"apps/fine{i}/envs/dev/cm.yaml", CM.format(name=f"fine{i}", value="head"))
    head = commit_all(repo, "head")
    caplog.set_level(logging.WARNING)
    try:
        code, data, md, err = plan(repo, base, head, capsys)
    finally:
        sandbox.reset_isolation()
    assert _Recorder.hits == []                           # nothing reached the server
    assert "FETCHED-FROM-LOOPBACK" not in json.dumps(data) + md + err
    for i, name in enumerate(layouts):
        t = target(data, f"u{i}", "dev")
        assert t["status"] == "skipped" and "render.remote" in t["error"] and loopback in t["error"], (
            name, t["error"])
    assert code == 1 and all(target(data, f"fine{i}", "dev")["status"] == "changed" for i in range(3))
    said = [r.getMessage() for r in caplog.records if "renderers run unisolated" in r.getMessage()]
    assert len(said) == (1 if isolation == "off" else 0)                   # said once, not per render


@pytest.mark.parametrize("isolation", ["jail", "off"])
def test_what_kustomize_would_clone_is_remote_whatever_exists_locally(
        tmp_path: Path, isolation: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """kustomize clones `github.com/...`, `file://…` and `user@host:…` bases even when a local
    directory of that name exists: they are remote inputs (skipped), never cloned by kustomize."""
    monkeypatch.setenv("PRBOT_RENDER_ISOLATION", isolation)
    sandbox.reset_isolation()
    outside = init_repo(tmp_path / "outside-repo")
    write(outside, "kustomization.yaml", "resources: [token.yaml]\n")
    write(outside, "token.yaml", CM.format(name="token", value=CANARY))
    commit_all(outside, "outside")
    repo = repo_with(tmp_path, {"apps/a/envs/dev/kustomization.yaml": "resources: [cm.yaml]\n",
                                "apps/a/envs/dev/cm.yaml": CM.format(name="a", value="x"),
                                "apps/b/envs/dev/kustomization.yaml": "resources: [cm.yaml]\n",
                                "apps/b/envs/dev/cm.yaml": CM.format(name="b", value="x")})
    base = commit_all(repo, "base")
    write(repo, "apps/a/envs/dev/kustomization.yaml", "resources: [cm.yaml, github.com/acme/lib]\n")
    write(repo, "apps/a/envs/dev/github.com/acme/lib/kustomization.yaml", "resources: [cm.yaml]\n")
    write(repo, "apps/a/envs/dev/github.com/acme/lib/cm.yaml", CM.format(name="lib", value="x"))
    write(repo, "apps/b/envs/dev/kustomization.yaml", f"resources: [cm.yaml, 'file://{outside}']\n")
    head = commit_all(repo, "head")
    try:
        code, data, md, err = plan(repo, base, head, capsys)
    finally:
        sandbox.reset_isolation()
    assert CANARY not in json.dumps(data) + md + err
    for app, ref in (("a", "github.com/acme/lib"), ("b", f"file://{outside}")):
        t = target(data, app, "dev")
        assert t["status"] == "skipped" and ref in t["error"], t


def test_unisolated_a_missed_url_could_be_fetched(tmp_path: Path, loopback: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """What the closure check guards: unisolated, kustomize itself does reach a loopback URL
    (so the test above, which sees no request, can fail)."""
    monkeypatch.setenv("PRBOT_RENDER_ISOLATION", "off")
    sandbox.reset_isolation()
    write(tmp_path, "app/kustomization.yaml", f"resources: [{loopback}/resource.yaml]\n")
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    try:
        home = tmp_path / "home"
        home.mkdir()
        from prbot.limits import Limits
        out = sandbox.run_tool([kubectl, "kustomize", "app"], cwd=tmp_path, home=home, label="kubectl",
                               limits=Limits())
    finally:
        sandbox.reset_isolation()
    assert "FETCHED-FROM-LOOPBACK" in out and _Recorder.hits


# ====================================================================================================
# 3. Symbolic links on every path: nothing outside the checkout is read
# ====================================================================================================

CANARY = "CANARY-kubeconfig-token-5f1e"


def _outside(tmp_path: Path) -> Path:
    """A directory on the server, outside the checkout, in every renderer's shape."""
    server = tmp_path / "server-secrets"
    write(server, "kustomization.yaml", "resources: [token.yaml]\n")
    write(server, "token.yaml", CM.format(name="token", value=CANARY))
    write(server, "Chart.yaml", CHART.format(name="stolen"))
    write(server, "templates/token.yaml", CM.format(name="token", value=CANARY))
    write(server, "values.yaml", f"token: {CANARY}\n")
    write(server, "plain/token.yaml", CM.format(name="token", value=CANARY))
    return server


INFRA = {
    "plain": {"clusters/dev/infra/cm.yaml": CM.format(name="infra", value="base")},
    "kustomize": {"clusters/dev/infra/kustomization.yaml": "resources: [cm.yaml]\n",
                  "clusters/dev/infra/cm.yaml": CM.format(name="infra", value="base")},
    "helm": {"clusters/dev/infra/Chart.yaml": CHART.format(name="infra"),
             "clusters/dev/infra/templates/cm.yaml": CM.format(name="infra", value="base")},
}


def _assert_no_canary(data: dict, md: str, err: str, caplog: pytest.LogCaptureFixture) -> None:
    everything = json.dumps(data) + md + err + "\n".join(r.getMessage() for r in caplog.records)
    assert CANARY not in everything


@pytest.mark.parametrize("renderer", ["plain", "kustomize", "helm"])
@pytest.mark.parametrize("link", ["absolute", "relative"])
@pytest.mark.parametrize("segment", ["clusters/dev/infra", "clusters/dev", "clusters"])
def test_a_pattern_directory_linked_out_of_the_checkout_is_not_rendered(
        tmp_path: Path, renderer: str, link: str, segment: str, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    server = _outside(tmp_path)
    repo = repo_with(tmp_path, INFRA[renderer])
    base = commit_all(repo, "base")
    # the hostile head: a literal directory of `clusters/{env}/infra` becomes a link leading out
    shutil.rmtree(repo / segment)
    dest = server if segment == "clusters/dev/infra" else tmp_path / "server-tree"
    if segment != "clusters/dev/infra":
        write(dest, "dev/infra/.keep" if segment == "clusters" else "infra/.keep", "")
        inner = dest / ("dev/infra" if segment == "clusters" else "infra")
        shutil.rmtree(inner)
        inner.symlink_to(server)
    # relative: climbs past the root of wherever the tree is exported, then down to the server's dir
    (repo / segment).symlink_to(dest if link == "absolute" else "../" * 30 + str(dest).lstrip("/"))
    head = commit_all(repo, "head")
    caplog.set_level(logging.DEBUG)
    code, data, md, err = plan(repo, base, head, capsys)
    _assert_no_canary(data, md, err, caplog)
    t = target(data, "infra", "dev")
    if segment == "clusters/dev/infra":           # the target itself: refused, and the plan fails
        assert t["status"] == "error" and "outside the repository" in t["error"], t
        assert code == 1
    else:                                         # nothing behind the link is even listed
        assert t["status"] == "removed"


@pytest.mark.parametrize("what", ["helm chart", "helm values", "kustomize resource", "kustomize base",
                                  "plain manifest", "chart template"])
def test_links_inside_the_checkout_leading_out_are_refused(tmp_path: Path, what: str,
                                                           capsys: pytest.CaptureFixture[str],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    server = _outside(tmp_path)
    files = {"charts/web/Chart.yaml": CHART.format(name="web"),
             "charts/web/templates/cm.yaml": CM.format(name="web", value="{{ .Values.token | default \"none\" }}"),
             "web/dev/values.yaml": "token: public\n",
             "apps/k/envs/dev/kustomization.yaml": "resources: [cm.yaml]\n",
             "apps/k/envs/dev/cm.yaml": CM.format(name="k", value="base"),
             "apps/p/envs/dev/cm.yaml": CM.format(name="p", value="base")}
    repo = repo_with(tmp_path, files)
    base = commit_all(repo, "base")
    if what == "helm chart":
        shutil.rmtree(repo / "charts/web")
        (repo / "charts/web").symlink_to(server)
        app = "web"
    elif what == "helm values":
        (repo / "web/dev/values.yaml").unlink()
        (repo / "web/dev/values.yaml").symlink_to(server / "values.yaml")
        app = "web"
    elif what == "chart template":
        (repo / "charts/web/templates/cm.yaml").unlink()
        (repo / "charts/web/templates/cm.yaml").symlink_to(server / "templates/token.yaml")
        app = "web"
    elif what == "kustomize resource":
        (repo / "apps/k/envs/dev/cm.yaml").unlink()
        (repo / "apps/k/envs/dev/cm.yaml").symlink_to("../" * 30 + str(server / "token.yaml").lstrip("/"))
        app = "k"
    elif what == "kustomize base":
        write(repo, "apps/k/envs/dev/kustomization.yaml", "resources: [cm.yaml, base]\n")
        (repo / "apps/k/envs/dev/base").symlink_to(server)
        app = "k"
    else:
        (repo / "apps/p/envs/dev/token.yaml").symlink_to(server / "plain/token.yaml")
        app = "p"
    head = commit_all(repo, "head")
    caplog.set_level(logging.DEBUG)
    code, data, md, err = plan(repo, base, head, capsys)
    _assert_no_canary(data, md, err, caplog)
    t = target(data, app, "dev")
    assert t["status"] == "error" and code == 1, t


# ====================================================================================================
# 4. Memory: the process tree stays under the limit, prbot survives
# ====================================================================================================

BOMB = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n"
        '  a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 9)))
LIMIT_MIB = 256

MEASURE = """
import json, os, resource, subprocess, sys, threading, time
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
peak = 0
def watch():
    global peak
    page = os.sysconf("SC_PAGE_SIZE")
    while proc.poll() is None:
        total = 0
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                fields = open(f"/proc/{name}/stat", "rb").read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == proc.pid:
                total += int(fields[21]) * page
        peak = max(peak, total)
        time.sleep(0.01)
t = threading.Thread(target=watch); t.start()
out, err = proc.communicate(); t.join()
print(json.dumps({"code": proc.returncode, "out": out.decode(), "err": err.decode(), "tree_peak": peak,
                  "max_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""


def _measured_plan(repo: Path, base: str, head: str, env: dict[str, str]) -> dict:
    """`prbot plan --format json` in a child process tree whose memory is measured: the peak RSS of
    any one process (getrusage) and the sampled peak of the whole tree (/proc)."""
    proc = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "prbot.cli", "plan", "--repo",
                           str(repo), "--base", base, "--head", head, "--format", "json"],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_memory_bombs_fail_their_target_within_the_limit(tmp_path: Path) -> None:
    files = {
        "charts/web/Chart.yaml": CHART.format(name="web"),
        "charts/web/templates/cm.yaml": CM.format(name="web", value="ok"),
        "web/dev/values.yaml": "x: 1\n",
        "apps/kbomb/envs/dev/kustomization.yaml": "resources: [cm.yaml]\n",
        "apps/kbomb/envs/dev/cm.yaml": CM.format(name="k", value="base"),
        "apps/pbomb/envs/dev/cm.yaml": CM.format(name="p", value="base"),
        "apps/fine/envs/dev/cm.yaml": CM.format(name="fine", value="base"),
    }
    repo = repo_with(tmp_path, files)
    base = commit_all(repo, "base")
    write(repo, "charts/web/templates/loop.yaml",                     # ~100 bytes of Helm template
          "{{- range $i := until 400000000 }}{{ $i }}{{- end }}\n")
    write(repo, "apps/kbomb/envs/dev/cm.yaml", BOMB)                  # ~500 bytes each
    write(repo, "apps/pbomb/envs/dev/cm.yaml", BOMB)
    write(repo, "apps/fine/envs/dev/cm.yaml", CM.format(name="fine", value="head"))
    head = commit_all(repo, "head")
    start = time.monotonic()
    got = _measured_plan(repo, base, head, {"PRBOT_RENDER_MEMORY": f"{LIMIT_MIB}Mi",
                                            "PRBOT_CACHE_DIR": str(tmp_path / "cache")})
    limit = LIMIT_MIB * 1024 * 1024
    assert got["max_rss"] < limit and got["tree_peak"] < limit, got     # measured, never over
    assert got["code"] == 1 and time.monotonic() - start < 120          # prbot survived: a plan, exit 1
    data = json.loads(got["out"])
    web, kbomb, pbomb = (target(data, app, "dev") for app in ("web", "kbomb", "pbomb"))
    assert web["status"] == kbomb["status"] == pbomb["status"] == "error"
    assert "memory limit (PRBOT_RENDER_MEMORY)" in web["error"] and "256 MiB" in web["error"], web["error"]
    assert "memory limit (PRBOT_RENDER_MEMORY)" in kbomb["error"], kbomb["error"]
    assert "aliases expand to more than" in pbomb["error"], pbomb["error"]
    assert target(data, "fine", "dev")["status"] == "changed"           # the others still plan


# ====================================================================================================
# 5. Size: output per render, comment parts per plan, a bounded render cache
# ====================================================================================================

def test_a_render_printing_too_much_fails_naming_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PRBOT_RENDER_OUTPUT", "2M")
    repo = repo_with(tmp_path, {"charts/web/Chart.yaml": CHART.format(name="web"),
                                "charts/web/templates/cm.yaml": CM.format(name="web", value="ok"),
                                "web/dev/values.yaml": "x: 1\n",
                                "apps/p/envs/dev/big.yaml": CM.format(name="p", value="small")})
    base = commit_all(repo, "base")
    write(repo, "charts/web/templates/big.yaml",
          "{{- range $i := until 100000 }}# {{ $i }} {{ repeat 100 \"x\" }}\n{{ end }}")
    write(repo, "apps/p/envs/dev/big.yaml", CM.format(name="p", value="x" * 3_000_000))
    head = commit_all(repo, "head")
    start = time.monotonic()
    code, data, md, _ = plan(repo, base, head, capsys)
    assert time.monotonic() - start < 60
    assert code == 1
    web, p = target(data, "web", "dev"), target(data, "p", "dev")
    assert web["status"] == "error" and "more than the 2 MB output limit (PRBOT_RENDER_OUTPUT)" in web["error"]
    assert p["status"] == "error" and "2 MB output limit (PRBOT_RENDER_OUTPUT)" in p["error"]


def test_a_plan_too_big_for_its_comments_is_summarised_with_every_target_listed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PRBOT_COMMENT_PARTS", "3")
    files = {f"apps/a{i:02d}/envs/dev/cm.yaml": CM.format(name=f"a{i}", value="base") for i in range(30)}
    repo = repo_with(tmp_path, files)
    base = commit_all(repo, "base")
    for i in range(30):
        lines = "".join(f"  k{j}: {'v' * 60}{i}{j}\n" for j in range(400))
        write(repo, f"apps/a{i:02d}/envs/dev/cm.yaml",
              f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a{i}\ndata:\n{lines}")
    write(repo, "apps/a17/envs/dev/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a17}\n"
                                             "data: {k: 1}\n")          # fails validation: shown first
    head = commit_all(repo, "head")
    code, data, md, _ = plan(repo, base, head, capsys)
    assert len(data["targets"]) == 30
    parts = md.split("\n\n<!-- prbot:plan -->")
    assert len(parts) == 3, len(parts)
    for i in range(30):                                                 # every target in the table
        assert re.search(rf"^\| dev \| a{i:02d} \|", md, re.MULTILINE), i
    assert "targets are summarised without their diffs" in md
    assert "`ConfigMap/a17` at `data.k`: 1 is not of type 'string'" in md     # the failure kept in full


def test_the_disk_render_cache_is_bounded_least_recently_used_first(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from prbot.model import Target
    from prbot.render import RenderPool
    from prbot.renderers.closure import ClosureCache, closure_digest

    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("PRBOT_CACHE_SIZE", "200K")
    root = tmp_path / "repo"
    targets = []
    for i in range(12):
        write(root, f"p{i}/cm.yaml", CM.format(name=f"p{i}", value="x" * 40_000))
        targets.append(Target(f"p{i}", "dev", f"p{i}", "plain"))
    closures = ClosureCache()

    def request(t: Target) -> tuple[Path, Target, str]:
        return root, t, closure_digest(root, closures.closure(root, t), t.path)

    pool = RenderPool(cache_dir=cache_dir)
    for i, t in enumerate(targets):
        pool.render_many([request(t)])
        if i >= 1:                                  # keep the first entry in use: read it again
            RenderPool(cache_dir=cache_dir).render_many([request(targets[0])])
        size = sum(p.stat().st_size for p in cache_dir.rglob("*.json"))
        assert size <= 200_000, (i, size)
    fresh = RenderPool(cache_dir=cache_dir)
    fresh.render_many([request(targets[0])])
    assert fresh.disk_hits == 1                     # the most recently used entry survived
    fresh.render_many([request(targets[1])])
    assert fresh.renders == 1                       # an old one was evicted


# ====================================================================================================
# 7. Mentions, references, links and HTML from the PR are inert in the comment
# ====================================================================================================

def _outside_code(md: str) -> str:
    """The comment without fenced blocks and inline code spans: where GitHub processes text."""
    text = re.sub(r"(?ms)^(`{3,}).*?^\1\s*$", "", md)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", text)


def test_mentions_references_and_html_from_the_pr_are_inert(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    repo = repo_with(tmp_path, {"apps/@octocat/envs/dev/cm.yaml": CM.format(name="a", value="x"),
                                "apps/team/envs/dev/kustomization.yaml": "resources: [cm.yaml]\n",
                                "apps/team/envs/dev/cm.yaml": CM.format(name="b", value="x"),
                                "apps/deploy/envs/dev/d.yaml": DEPLOY})
    base = commit_all(repo, "base")
    write(repo, "apps/@octocat/envs/dev/cm.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 'ping-@octocat-#1'\n"
          "data:\n  note: 'cc @acme/sre, fixes #12 and acme/infra#3, see https://evil.example/x <img src=x>'\n")
    write(repo, "apps/team/envs/dev/kustomization.yaml", "resources: [cm.yaml, '@octocat-#7.yaml']\n")
    write(repo, "apps/deploy/envs/dev/d.yaml", DEPLOY.replace("replicas: 1", "replicas: 'cc @octocat #5'"))
    head = commit_all(repo, "head")
    code, data, md, _ = plan(repo, base, head, capsys)
    assert code == 1
    text = _outside_code(md)
    assert "@octocat" in md                                  # shown: in code, or broken by a zero-width space
    assert not re.search(r"@[A-Za-z0-9]", text), re.findall(r".{20}@[A-Za-z0-9].{20}", text)
    assert not re.search(r"#\d", text), re.findall(r".{20}#\d.{10}", text)
    assert not re.search(r"https?://|www\.", text.replace("https://github.com", ""))
    assert "<img" not in text
    tags = set(re.findall(r"<(/?[a-z]+)", text))
    assert tags <= {"details", "/details", "summary", "/summary", "b", "/b", "code", "/code", "sub", "/sub", "br"}
    assert text.count("<!--") == 1                           # the marker on the first line, nothing else
    t = target(data, "deploy", "dev")
    assert any("cc @octocat #5" in v["message"] for v in t["validation"])   # JSON keeps the text


# ====================================================================================================
# 8. Forged markers
# ====================================================================================================

def test_a_resource_name_cannot_forge_a_comment_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    forged = "<!-- prbot:plan part=7/9 -->"
    repo = repo_with(tmp_path, {"apps/p/envs/dev/cm.yaml": CM.format(name="a", value="x")})
    base = commit_all(repo, "base")
    name = json.dumps(f"x\n{forged}\n{MARKER}")
    big = "".join(f"  k{j}: '{'v' * 80}'\n" for j in range(3000))
    write(repo, "apps/p/envs/dev/cm.yaml", f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
                                           f"data:\n{big}  forged: {json.dumps(forged)}\n")
    head = commit_all(repo, "head")
    _, data, md, _ = plan(repo, base, head, capsys)
    parts = md.split("\n\n" + MARKER)
    parts = [parts[0]] + [MARKER + p for p in parts[1:]]
    assert len(parts) > 1 and forged in md
    for i, part in enumerate(parts, 1):
        assert part_of(part) == (i, len(parts)) and is_plan_comment(part)
        assert part.split("\n", 1)[0] == f"{MARKER}<!-- prbot:plan part={i}/{len(parts)} -->"
    # a body carrying the forged line anywhere but the first line is no part, nor prbot's comment
    assert part_of(f"hello\n{forged}\n") is None and not is_plan_comment(f"hi\n{MARKER}\n{forged}")
    assert part_of(f"{MARKER}\n{forged}\n") is None
    assert part_of(f"{MARKER} {forged}") is None


# ====================================================================================================
# 9. Secrets at any depth
# ====================================================================================================

SECRET_VALUE = "s3cr3t-hunter2-value"


def test_a_secret_nested_in_lists_or_carried_by_another_object_is_masked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    import base64
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    repo = repo_with(tmp_path, {"apps/s/envs/dev/list.yaml": CM.format(name="a", value="x")})
    base = commit_all(repo, "base")
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
              "data": {"password": encoded}, "stringData": {"plain": SECRET_VALUE}}
    nested = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "List", "items": [secret]}]}]}
    carrier = {"apiVersion": "template.openshift.io/v1", "kind": "Template", "metadata": {"name": "t"},
               "objects": [{**secret, "metadata": {"name": "inner"}, "data": {"k": encoded, "bad": 7}}]}
    write(repo, "apps/s/envs/dev/list.yaml", json.dumps(nested))
    write(repo, "apps/s/envs/dev/template.yaml", json.dumps(carrier))
    head = commit_all(repo, "head")
    caplog.set_level(logging.DEBUG)
    _, data, md, err = plan(repo, base, head, capsys)
    everything = json.dumps(data) + md + err + "\n".join(r.getMessage() for r in caplog.records)
    assert SECRET_VALUE not in everything and encoded not in everything
    t = target(data, "s", "dev")
    kinds = {c["kind"] for c in t["changes"]}
    assert {"Secret", "Template"} <= kinds                 # Lists are flattened, the carrier is shown
    assert "'***'" in diff_text(t)


# ====================================================================================================
# 10. One target never sinks the plan
# ====================================================================================================

def test_a_deeply_nested_object_fails_its_target_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = repo_with(tmp_path, {"apps/deep/envs/dev/cm.yaml": CM.format(name="a", value="x"),
                                "apps/deepk/envs/dev/kustomization.yaml": "resources: [cm.yaml]\n",
                                "apps/deepk/envs/dev/cm.yaml": CM.format(name="k", value="x"),
                                "apps/fine/envs/dev/cm.yaml": CM.format(name="f", value="x")})
    base = commit_all(repo, "base")
    deep = "x"
    for _ in range(420):
        deep = {"k": deep}
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nextra: " + json.dumps(deep) + "\n"
    write(repo, "apps/deep/envs/dev/cm.yaml", text)
    write(repo, "apps/deepk/envs/dev/cm.yaml", text.replace("name: a", "name: k"))
    write(repo, "apps/fine/envs/dev/cm.yaml", CM.format(name="f", value="y"))
    head = commit_all(repo, "head")
    code, data, md, err = plan(repo, base, head, capsys)
    assert code == 1 and "Traceback" not in err
    for app in ("deep", "deepk"):
        t = target(data, app, "dev")
        assert t["status"] == "error" and ("nested deeper than" in t["error"] or "nesting" in t["error"]), t
    assert target(data, "fine", "dev")["status"] == "changed"


SLOW = "{{- range $i := until 100000 }}{{- range $j := until 100000 }}{{- end }}{{- end }}\n"


def _slow_charts(n: int) -> dict[str, str]:
    files = {}
    for i in range(n):
        files[f"apps/s{i}/envs/dev/Chart.yaml"] = CHART.format(name=f"s{i}")
        files[f"apps/s{i}/envs/dev/templates/cm.yaml"] = CM.format(name=f"s{i}", value="base")
    return files


def test_the_plan_has_a_time_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PRBOT_PLAN_BUDGET", "4s")
    monkeypatch.setenv("PRBOT_RENDER_TIMEOUT", "60s")
    repo = repo_with(tmp_path, {**_slow_charts(4), "apps/fine/envs/dev/cm.yaml": CM.format(name="f", value="x")})
    base = commit_all(repo, "base")
    for i in range(4):
        write(repo, f"apps/s{i}/envs/dev/templates/slow.yaml", SLOW)
    write(repo, "apps/fine/envs/dev/cm.yaml", CM.format(name="f", value="y"))
    head = commit_all(repo, "head")
    start = time.monotonic()
    code = main(["plan", "--repo", str(repo), "--base", base, "--head", head, "--format", "json"])
    elapsed = time.monotonic() - start
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and elapsed < 30, elapsed           # 4 x 60 s of renders cut at the 4 s budget
    for i in range(4):
        t = target(data, f"s{i}", "dev")
        assert t["status"] == "error" and "4s plan time budget (PRBOT_PLAN_BUDGET)" in t["error"], t["error"]
    fine = target(data, "fine", "dev")
    assert fine["status"] == "changed", fine["error"]


def test_a_target_over_its_limit_is_not_rendered_again_for_the_same_inputs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PRBOT_RENDER_TIMEOUT", "2s")
    repo = repo_with(tmp_path, _slow_charts(1))
    base = commit_all(repo, "base")
    write(repo, "apps/s0/envs/dev/templates/slow.yaml", SLOW)
    head = commit_all(repo, "head")
    args = ["plan", "--repo", str(repo), "--base", base, "--head", head, "--format", "json"]
    main(args)
    first = target(json.loads(capsys.readouterr().out), "s0", "dev")
    assert "2s time limit (PRBOT_RENDER_TIMEOUT)" in first["error"]
    start = time.monotonic()
    main(args)                                           # a re-plan: same inputs, same limit
    again = target(json.loads(capsys.readouterr().out), "s0", "dev")
    assert time.monotonic() - start < 1.5
    assert again["error"].startswith(first["error"]) and "remembered" in again["error"]
    monkeypatch.setenv("PRBOT_RENDER_TIMEOUT", "3s")      # a more generous limit tries again
    start = time.monotonic()
    main(args)
    third = target(json.loads(capsys.readouterr().out), "s0", "dev")
    assert time.monotonic() - start >= 3 and "3s time limit" in third["error"]


def test_two_objects_with_one_identity_are_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = repo_with(tmp_path, {"apps/d/envs/dev/a.yaml": CM.format(name="same", value="x")})
    base = commit_all(repo, "base")
    write(repo, "apps/d/envs/dev/b.yaml", CM.format(name="same", value="shadow"))
    head = commit_all(repo, "head")
    code, data, md, _ = plan(repo, base, head, capsys)
    t = target(data, "d", "dev")
    assert code == 1 and t["status"] == "error"
    assert "ConfigMap d-dev/same is rendered 2 times" in t["error"]


def test_render_markdown_default_follows_the_operators_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    from prbot.diff import ObjectChange
    from prbot.plan import Plan, TargetPlan
    targets = [TargetPlan(app=f"a{i}", env="dev", path=f"a{i}", renderer="plain", status="changed",
                          changes=[ObjectChange("", "ConfigMap", "ns", f"c{i}", "changed", "+x\n" * 3000)])
               for i in range(20)]
    monkeypatch.setenv("PRBOT_COMMENT_PARTS", "2")
    parts = render_markdown(Plan(base="a" * 40, head="b" * 40, targets=targets))
    assert len(parts) == 2 and all(len(p) <= 65_000 for p in parts)
    assert all(f"| dev | a{i} |" in "".join(parts) for i in range(20))
    assert len(render_markdown(Plan(base="a" * 40, head="b" * 40, targets=targets), max_parts=None)) > 2

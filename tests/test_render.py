"""Renderers against the real kubectl kustomize / helm template, and the render pool and its cache."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from support import write

from prbot.config import AppSpec, Config, Environment, HelmSpec
from prbot.errors import RenderError
from prbot.model import Target
from prbot.render import RenderPool, render_target
from prbot.renderers.base import parse_documents
from prbot.renderers.closure import ClosureCache, closure_digest
from prbot.targets import discover_targets
from prbot.tools import find_tool

ENVS = ("dev", "staging", "prod")


def example_targets(root: Path) -> dict[str, Target]:
    config = Config(
        version=1, environments=tuple(Environment(e) for e in ENVS),
        apps=(AppSpec(path="apps/{app}/envs/{env}", namespace="{app}-{env}"),
              AppSpec(path="billing/{env}", name="billing", namespace="billing-{env}",
                      helm=HelmSpec(chart="charts/billing", values=("values.yaml",)))))
    return {t.key: t for t in discover_targets(config, root)}


def kustomize(path: str, app: str = "app") -> Target:
    return Target(app=app, env="dev", path=path, renderer="kustomize")


def names(objects: list[dict]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def wrap_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, before: str = "") -> Path:
    """Put a `name` wrapper first on PATH that logs each call, runs `before`, then execs the real tool.

    Returns the log file: one line per invocation.  The wrapper writes to the host, which the render
    jail does not allow: renders in such a test run unisolated (the jail has its own tests).
    """
    monkeypatch.setenv("PRBOT_RENDER_ISOLATION", "off")
    real = shutil.which(name)
    assert real is not None
    bindir = tmp_path / "wrapped-bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / f"{name}.calls"
    log.touch()
    script = bindir / name
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n{before}\nexec "{real}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines()


Request = tuple[Path, Target, str]


def requests_for(root: Path, targets: list[Target], cache: ClosureCache | None = None) -> list[Request]:
    """(root, target, cache key) with the closure digest as key, as the plan builds them."""
    cache = cache or ClosureCache()
    return [(root, t, closure_digest(root, cache.closure(root, t),
                                     f"{t.renderer}|{t.app}-{t.env}|{t.namespace}"))
            for t in targets]


# ------------------------------------------------------------------------------------------ renderers

def test_example_targets_render(example_repo: Path) -> None:
    t = example_targets(example_repo)
    shop = render_target(example_repo, t["shop/dev"])
    assert {o["metadata"].get("namespace") for o in shop} == {"shop-dev"}
    assert ("Deployment", "shop") in names(shop)
    [deploy] = [o for o in shop if o["kind"] == "Deployment"]
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"].endswith("/demo/shop:1.1.0")
    assert deploy["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}      # the component

    billing = render_target(example_repo, t["billing/dev"], kube_version="1.33")
    assert names(billing) == [("Service", "billing-dev"), ("Deployment", "billing-dev")]
    [bdeploy] = [o for o in billing if o["kind"] == "Deployment"]
    assert bdeploy["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/billing:2.4.0"

    worker = render_target(example_repo, t["worker/prod"])
    assert names(worker) == [("Deployment", "worker"), ("CronJob", "worker-cleanup")]
    assert worker[1]["spec"]["schedule"] == "0 3 * * *"


def test_kustomize_errors_are_one_repo_relative_line(example_repo: Path) -> None:
    k = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    k.write_text(k.read_text().replace("path: replicas.yaml", "path: missing.yaml"))
    with pytest.raises(RenderError) as err:
        render_target(example_repo, example_targets(example_repo)["shop/dev"])
    msg = str(err.value)
    assert msg.startswith("kubectl kustomize: ") and "\n" not in msg
    assert "apps/shop/envs/dev/missing.yaml" in msg
    assert str(example_repo) not in msg and os.path.realpath(example_repo) not in msg


def test_the_load_restrictor_stays_on(example_repo: Path) -> None:
    k = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    k.write_text(k.read_text().replace("path: replicas.yaml", "path: ../prod/replicas.yaml"))
    with pytest.raises(RenderError, match=r"security; file 'apps/shop/envs/prod/replicas.yaml' "
                                          r"is not in or below 'apps/shop/envs/dev'"):
        render_target(example_repo, example_targets(example_repo)["shop/dev"])


def test_exec_plugins_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    write(tmp_path, "repo/app/evil.sh", f"#!/bin/sh\ntouch '{marker}'\ncat\n").chmod(0o755)
    function = "    config.kubernetes.io/function: |\n      exec:\n        path: ./evil.sh\n"
    write(tmp_path, "repo/app/generator.yaml",
          f"apiVersion: example.com/v1\nkind: Evil\nmetadata:\n  name: gen\n  annotations:\n{function}")
    write(tmp_path, "repo/app/transformer.yaml",
          f"apiVersion: example.com/v1\nkind: Evil\nmetadata:\n  name: tr\n  annotations:\n{function}")
    write(tmp_path, "repo/app/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    for field in ("generators", "transformers", "validators"):
        config = "generator.yaml" if field == "generators" else "transformer.yaml"
        write(tmp_path, "repo/app/kustomization.yaml", f"resources: [cm.yaml]\n{field}: [{config}]\n")
        with pytest.raises(RenderError, match="external plugins disabled"):
            render_target(tmp_path / "repo", kustomize("app"))
    # a legacy exec plugin in the user's plugin directory is not found either: HOME is a fresh dir
    assert not marker.exists()


def test_remote_bases_are_refused_before_running(example_repo: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    log = wrap_tool(tmp_path, monkeypatch, "kubectl")
    k = example_repo / "apps/shop/envs/dev/kustomization.yaml"
    k.write_text(k.read_text().replace("  - ../../base", "  - https://github.com/acme/infra//base?ref=v1"))
    with pytest.raises(RenderError) as err:
        render_target(example_repo, example_targets(example_repo)["shop/dev"])
    assert str(err.value) == ("remote base https://github.com/acme/infra//base?ref=v1 cannot be resolved "
                              "offline: vendor it into the repository")
    k.write_text(k.read_text().replace("https://github.com/acme/infra//base?ref=v1",
                                       "github.com/acme/infra/base?ref=v1"))
    with pytest.raises(RenderError, match="remote base github.com/acme/infra/base"):
        render_target(example_repo, example_targets(example_repo)["shop/dev"])
    assert calls(log) == []


def test_paths_outside_the_repository_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = wrap_tool(tmp_path, monkeypatch, "kubectl")
    write(tmp_path, "outside/kustomization.yaml", "resources: [secret.yaml]\n")
    write(tmp_path, "outside/secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata: {name: host}\n")
    write(tmp_path, "repo/app/kustomization.yaml", "resources: [../../outside]\n")
    with pytest.raises(RenderError, match=r"resources: \.\./\.\./outside leaves the repository"):
        render_target(tmp_path / "repo", kustomize("app"))
    write(tmp_path, "repo/plain/ok.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "repo/plain/leak.yaml").symlink_to(tmp_path / "outside/secret.yaml")
    with pytest.raises(RenderError, match="plain/leak.yaml: symbolic link to a path outside the repository"):
        render_target(tmp_path / "repo", Target("p", "dev", "plain", "plain"))
    assert calls(log) == []


def test_the_environment_is_scrubbed(example_repo: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dump = tmp_path / "env.txt"
    wrap_tool(tmp_path, monkeypatch, "kubectl", before=f'env > "{dump}"')
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp.example:3128")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    render_target(example_repo, example_targets(example_repo)["shop/dev"])
    env = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert "KUBECONFIG" not in env and "GITHUB_TOKEN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert "proxy.corp.example" not in dump.read_text()
    assert env["HTTPS_PROXY"] == env["HTTP_PROXY"] == "http://127.0.0.1:9"     # a black hole
    assert env["HOME"] != os.path.expanduser("~") and "prbot-render-" in env["HOME"]
    assert not Path(env["HOME"]).exists()                  # removed after the run
    assert env["HELM_CONFIG_HOME"].startswith(env["HOME"])


def test_helm_dependency_not_vendored(example_repo: Path) -> None:
    chart = example_repo / "charts/billing/Chart.yaml"
    chart.write_text(chart.read_text() + "dependencies:\n  - name: postgresql\n    version: 12.x.x\n"
                                          "    repository: https://charts.bitnami.com/bitnami\n")
    target = example_targets(example_repo)["billing/dev"]
    with pytest.raises(RenderError) as err:
        render_target(example_repo, target)
    assert str(err.value) == ("chart billing needs dependency postgresql from "
                              "https://charts.bitnami.com/bitnami: vendor it with helm dependency build")
    write(example_repo, "charts/billing/charts/postgresql/Chart.yaml",
          "apiVersion: v2\nname: postgresql\nversion: 12.1.0\n")
    write(example_repo, "charts/billing/charts/postgresql/templates/svc.yaml",
          "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}-postgresql\n")
    assert ("Service", "billing-dev-postgresql") in names(render_target(example_repo, target))


def test_helm_flags_crds_tests_kube_version_and_namespace(tmp_path: Path) -> None:
    write(tmp_path, "web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n")
    write(tmp_path, "web/crds/crd.yaml", """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]
""")
    write(tmp_path, "web/templates/cm.yaml", """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
data:
  kube: {{ .Capabilities.KubeVersion.Version | quote }}
  created: 2024-01-02
""")
    write(tmp_path, "web/templates/tests/test.yaml",
          "apiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\n")
    t = Target("web", "prod", "web", "helm", namespace="web-prod", chart="web")
    objects = render_target(tmp_path, t, kube_version="1.29")
    assert names(objects) == [("CustomResourceDefinition", "widgets.example.com"), ("ConfigMap", "web-prod")]
    cm = objects[1]
    assert cm["metadata"]["namespace"] == "web-prod"
    assert cm["data"]["kube"].startswith("v1.29")
    assert cm["data"]["created"] == "2024-01-02"          # timestamps stay strings


def test_helm_template_errors_are_repo_relative(example_repo: Path) -> None:
    (example_repo / "charts/billing/templates/broken.yaml").write_text("{{ .Values.nope.deeper }}\n")
    with pytest.raises(RenderError) as err:
        render_target(example_repo, example_targets(example_repo)["billing/dev"])
    msg = str(err.value)
    assert msg.startswith("helm template: ") and "billing/templates/broken.yaml" in msg
    assert str(example_repo) not in msg


def test_plain_files_sorted_lists_expanded_and_broken_yaml_named(tmp_path: Path) -> None:
    write(tmp_path, "p/b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n---\n---\n"
                                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b2}\n")
    write(tmp_path, "p/a.json", '{"apiVersion": "v1", "kind": "List", "items": ['
                                '{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a1"}},'
                                '{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a2"}}]}')
    write(tmp_path, "p/c.yml", "# only a comment\n")
    write(tmp_path, "p/notes.txt", "ignored")
    t = Target("p", "dev", "p", "plain")
    assert names(render_target(tmp_path, t)) == [("Secret", "a1"), ("Service", "a2"),
                                                 ("ConfigMap", "b"), ("ConfigMap", "b2")]

    write(tmp_path, "p/d.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n   bad: indent\n")
    with pytest.raises(RenderError, match=r"^p/d\.yaml:5: invalid YAML: mapping values are not allowed"):
        render_target(tmp_path, t)
    (tmp_path / "p/d.yaml").unlink()
    write(tmp_path, "p/e.json", '{"apiVersion": "v1",\n "kind": }')
    with pytest.raises(RenderError, match=r"^p/e\.json:2: invalid JSON: Expecting value"):
        render_target(tmp_path, t)
    (tmp_path / "p/e.json").unlink()
    write(tmp_path, "p/f.yaml", "replicaCount: 2\n")
    with pytest.raises(RenderError, match=r"^p/f\.yaml: document 1 is not a Kubernetes object"):
        render_target(tmp_path, t)


def test_parse_documents_keeps_kubernetes_semantics() -> None:
    objs = parse_documents("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"
                           "data: {date: 2024-05-01, 1: one, false: off}\n")
    assert objs[0]["data"]["date"] == "2024-05-01"
    assert set(objs[0]["data"]) == {"date", "1", "false"}
    json.dumps(objs)                                       # always JSON-able (the cache stores JSON)
    with pytest.raises(RenderError, match=r"^out:2: invalid YAML"):
        parse_documents("a: b\n- c\n", "out")


def test_missing_binaries_say_how_to_get_them(example_repo: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("PRBOT_TOOLS_DIR", str(empty))
    t = example_targets(example_repo)
    with pytest.raises(RenderError) as err:
        render_target(example_repo, t["shop/dev"])
    assert str(err.value) == "kubectl is not installed or not on PATH (run `prbot tools install`)"
    assert err.value.transient
    with pytest.raises(RenderError, match="^helm is not installed or not on PATH"):
        render_target(example_repo, t["billing/dev"])
    with pytest.raises(RenderError, match="^helm is not installed"):
        find_tool("helm")
    assert render_target(example_repo, t["worker/dev"])       # plain needs no binary


def test_a_hanging_renderer_is_killed_with_its_children(example_repo: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pidfile = tmp_path / "child.pid"
    wrap_tool(tmp_path, monkeypatch, "kubectl", before=f'sleep 60 &\necho $! > "{pidfile}"\nwait')
    start = time.monotonic()
    with pytest.raises(RenderError, match=r"^kubectl kustomize timed out: it ran longer than the 1\.5s time "
                                          r"limit \(PRBOT_RENDER_TIMEOUT\)$") as err:
        render_target(example_repo, example_targets(example_repo)["shop/dev"], timeout=1.5)
    assert time.monotonic() - start < 10 and err.value.limit == "timeout" and not err.value.transient
    pid = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(pid):
            break
        time.sleep(0.1)
    assert not _alive(pid), "the renderer's child process survived the timeout"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_kustomize_helm_charts(tmp_path: Path) -> None:
    write(tmp_path, "app/charts/web/Chart.yaml", "apiVersion: v2\nname: web\nversion: 1.0.0\n")
    write(tmp_path, "app/charts/web/values.yaml", "{}\n")     # kustomize reads the chart's values.yaml
    write(tmp_path, "app/charts/web/templates/cm.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n")
    write(tmp_path, "app/kustomization.yaml", "helmCharts:\n  - name: web\n    releaseName: site\n")
    helm_version = subprocess.run([find_tool("helm"), "version", "--short"], capture_output=True,
                                  text=True, check=True).stdout
    if helm_version.startswith("v3") or shutil.which("helm3"):
        assert names(render_target(tmp_path, kustomize("app"))) == [("ConfigMap", "site")]
    else:   # kustomize 5.7 runs `helm version -c`, which Helm 4 rejects: say so plainly
        with pytest.raises(RenderError, match="helmCharts need Helm 3"):
            render_target(tmp_path, kustomize("app"))
    write(tmp_path, "app/kustomization.yaml",
          "helmCharts:\n  - name: pg\n    repo: oci://registry-1.docker.io/bitnamicharts\n")
    with pytest.raises(RenderError, match=r"^remote base oci://registry-1.docker.io/bitnamicharts/pg \(chart\) cannot"):
        render_target(tmp_path, kustomize("app"))


# ------------------------------------------------------------------------------------------ the pool

def test_pool_renders_each_key_once_across_base_head_calls_and_processes(
        example_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = wrap_tool(tmp_path, monkeypatch, "kubectl")
    cache_dir = tmp_path / "render-cache"
    head = tmp_path / "head"
    shutil.copytree(example_repo, head, ignore=shutil.ignore_patterns(".git"))
    shop = [t for t in example_targets(example_repo).values() if t.app == "shop"]
    cache = ClosureCache()
    base_requests = requests_for(example_repo, shop, cache)
    head_requests = requests_for(head, shop, cache)
    assert [r[2] for r in base_requests] == [r[2] for r in head_requests]     # same content, same key

    pool = RenderPool(cache_dir=cache_dir)
    first = pool.render_many(base_requests + head_requests)
    assert len(calls(log)) == 3 and pool.renders == 3
    assert all(isinstance(v, list) and v for v in first.values())
    again = pool.render_many(head_requests)                 # in-memory memo
    assert again == {k: first[k] for k in again} and len(calls(log)) == 3
    fresh = RenderPool(cache_dir=cache_dir)                 # another plan/process: the disk cache
    assert fresh.render_many(base_requests) == first and len(calls(log)) == 3
    assert fresh.disk_hits == 3 and fresh.renders == 0

    entries = sorted(cache_dir.rglob("*.json"))
    assert len(entries) == 3
    for entry in entries:
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600          # rendered Secrets live here
        data = json.loads(entry.read_text())
        assert data["key"] in first and data["objects"] == first[data["key"]]
    assert not [p for p in cache_dir.rglob("*") if p.name.startswith(".tmp-")]

    # a different input is a different key: exactly one more render
    replicas = head / "apps/shop/envs/prod/replicas.yaml"
    replicas.write_text(replicas.read_text().replace("3", "4"))
    changed = requests_for(head, shop)
    fresh.render_many(changed)
    assert len(calls(log)) == 4


def test_results_are_fresh_objects(example_repo: Path) -> None:
    pool = RenderPool(disk_cache=False)
    reqs = requests_for(example_repo, [example_targets(example_repo)["worker/dev"]])
    one = pool.render_many(reqs)[reqs[0][2]]
    assert isinstance(one, list)
    one[0]["kind"] = "Mutated"
    two = pool.render_many(reqs)[reqs[0][2]]
    assert isinstance(two, list) and two[0]["kind"] == "Deployment"


def test_a_corrupt_cache_entry_is_rendered_again(example_repo: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    log = wrap_tool(tmp_path, monkeypatch, "kubectl")
    cache_dir = tmp_path / "c"
    reqs = requests_for(example_repo, [example_targets(example_repo)["shop/dev"]])
    RenderPool(cache_dir=cache_dir).render_many(reqs)
    [entry] = cache_dir.rglob("*.json")
    entry.write_text('{"format": "prbot-render-v1", "key": "trunc')
    got = RenderPool(cache_dir=cache_dir).render_many(reqs)
    assert isinstance(got[reqs[0][2]], list) and len(calls(log)) == 2
    assert json.loads(entry.read_text())["key"] == reqs[0][2]            # rewritten


def test_pool_runs_in_parallel_and_matches_serial_rendering(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "repo"
    targets = []
    for i in range(6):
        write(root, f"apps/a{i}/kustomization.yaml", f"namespace: ns{i}\nresources: [cm.yaml]\n"
              f"configMapGenerator: [{{name: gen, literals: [I={i}]}}]\n")
        write(root, f"apps/a{i}/cm.yaml", f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{i}}}\n")
        targets.append(kustomize(f"apps/a{i}", app=f"a{i}"))
    serial = {t.path: render_target(root, t) for t in targets}
    wrap_tool(tmp_path, monkeypatch, "kubectl", before="sleep 1")
    reqs = requests_for(root, targets)
    start = time.monotonic()
    got = RenderPool(workers=6, disk_cache=False).render_many(reqs)
    elapsed = time.monotonic() - start
    assert {t.path: got[key] for _, t, key in reqs} == serial
    assert elapsed < 4.0, f"6 renders of >= 1s each took {elapsed:.1f}s: not parallel"


def test_pool_isolates_failures_and_dedupes_keys_in_one_call(example_repo: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    log = wrap_tool(tmp_path, monkeypatch, "kubectl")
    t = example_targets(example_repo)
    (example_repo / "apps/shop/envs/prod/replicas.yaml").write_text("spec: [unclosed\n")
    keys = ("shop/dev", "shop/prod", "billing/prod", "worker/prod")
    reqs = requests_for(example_repo, [t[k] for k in keys])
    pool = RenderPool(disk_cache=False)
    got = pool.render_many(reqs + reqs)
    assert list(got) == [r[2] for r in reqs]
    dev, prod, billing, worker = (got[r[2]] for r in reqs)
    assert isinstance(prod, RenderError) and "replicas.yaml" in str(prod)
    assert isinstance(dev, list) and isinstance(billing, list) and isinstance(worker, list)
    assert len(calls(log)) == 2                              # shop/dev and shop/prod, once each
    pool.render_many(reqs)                                   # a deterministic error is memoised too
    assert len(calls(log)) == 2
    with pytest.raises(RenderError):
        pool.render(example_repo, t["shop/prod"], reqs[1][2])


def test_kube_version_is_part_of_the_cache_identity(example_repo: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    log = wrap_tool(tmp_path, monkeypatch, "helm")
    reqs = requests_for(example_repo, [example_targets(example_repo)["billing/dev"]])
    RenderPool(cache_dir=tmp_path / "c", kube_versions={"dev": "1.30"}).render_many(reqs)
    RenderPool(cache_dir=tmp_path / "c", kube_versions={"dev": "1.30"}).render_many(reqs)
    RenderPool(cache_dir=tmp_path / "c", kube_versions={"dev": "1.33"}).render_many(reqs)
    assert len(calls(log)) == 2 and "--kube-version 1.33" in calls(log)[1]


def test_render_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prbot.paths import render_cache_dir
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path / "x"))
    assert render_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("PRBOT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert render_cache_dir() == tmp_path / "xdg" / "prbot" / "render"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert render_cache_dir() == tmp_path / "home" / ".cache" / "prbot" / "render"


def test_renderers_get_no_network(example_repo: Path, tmp_path: Path) -> None:
    """A render that would connect (a resource URL the closure check did not see) reaches nothing:
    the jail has its own network namespace, loopback included."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    tree, home = tmp_path / "tree", tmp_path / "home"
    tree.mkdir()
    home.mkdir()
    write(tree, "kustomization.yaml", f"resources:\n- http://127.0.0.1:{port}/x.yaml\n")
    kubectl = shutil.which("kubectl")
    assert kubectl is not None
    from prbot import sandbox
    from prbot.errors import ToolError
    from prbot.limits import Limits
    try:
        with pytest.raises(ToolError):
            sandbox.run_tool([kubectl, "kustomize", "."], cwd=tree, home=home, label="kubectl", limits=Limits())
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


def test_a_standalone_kustomize_is_preferred(example_repo: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    kubectl = shutil.which("kubectl")
    bindir = tmp_path / "kbin"
    log = tmp_path / "kustomize.calls"
    # a `kustomize` that is really `kubectl kustomize` (same flags), logging its arguments
    write(bindir, "kustomize", f'#!/bin/sh\necho "$*" >> "{log}"\n[ "$1" = build ] && shift\n'
                               f'exec "{kubectl}" kustomize "$@"\n').chmod(0o755)
    monkeypatch.setenv("PRBOT_RENDER_ISOLATION", "off")      # the wrapper logs to the host
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    t = example_targets(example_repo)["shop/dev"]
    assert ("Deployment", "shop") in names(render_target(example_repo, t))
    assert log.read_text().splitlines() == ["build --load-restrictor LoadRestrictionsRootOnly apps/shop/envs/dev"]
    (example_repo / "apps/shop/envs/dev/replicas.yaml").unlink()
    with pytest.raises(RenderError, match="^kustomize build: "):
        render_target(example_repo, t)


def test_renders_stage_their_copy_in_the_scratch_directory_and_leave_nothing(
        example_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    where = tmp_path / "where.txt"
    wrap_tool(tmp_path, monkeypatch, "kubectl", before=f'pwd >> "{where}"')
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("PRBOT_SCRATCH_DIR", str(scratch))
    objects = render_target(example_repo, example_targets(example_repo)["shop/dev"])
    assert ("Deployment", "shop") in names(objects)
    assert where.read_text().startswith(f"{scratch}/prbot-render-")
    assert list(scratch.iterdir()) == []                     # the copy is removed after the run
    # a scratch directory that cannot be used is left for the system's temporary directory
    monkeypatch.setenv("PRBOT_SCRATCH_DIR", str(tmp_path / "missing"))
    assert render_target(example_repo, example_targets(example_repo)["shop/dev"]) == objects
    assert not where.read_text().splitlines()[-1].startswith(str(tmp_path / "missing"))

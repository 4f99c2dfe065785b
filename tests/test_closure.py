"""Input closures and digests: which targets a change affects."""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
from support import git, write

from prbot.config import AppSpec, Config, Environment, HelmSpec
from prbot.model import Target
from prbot.renderers.closure import Closure, ClosureCache, closure_digest, input_closure, is_remote_reference
from prbot.targets import discover_targets

ENVS = ("dev", "staging", "prod")


def example_config() -> Config:
    """The example repository's `.prbot.yml`, built by hand (the loader is tested elsewhere)."""
    return Config(
        version=1, environments=tuple(Environment(e) for e in ENVS),
        apps=(AppSpec(path="apps/{app}/envs/{env}", namespace="{app}-{env}"),
              AppSpec(path="billing/{env}", name="billing", namespace="billing-{env}",
                      helm=HelmSpec(chart="charts/billing", values=("values.yaml",)))))


def targets(root: Path) -> dict[str, Target]:
    return {t.key: t for t in discover_targets(example_config(), root)}


def digests(root: Path, extra: str = "") -> dict[str, str]:
    cache = ClosureCache()
    return {k: closure_digest(root, cache.closure(root, t), extra + k) for k, t in targets(root).items()}


def kustomize_target(path: str) -> Target:
    return Target(app="app", env="dev", path=path, renderer="kustomize")


# ------------------------------------------------------------------------------------------ closures

def test_example_overlay_closure_includes_base_component_and_patch(example_repo: Path) -> None:
    closure = input_closure(example_repo, targets(example_repo)["shop/dev"])
    assert closure.files == {
        "apps/shop/envs/dev/kustomization.yaml",
        "apps/shop/envs/dev/replicas.yaml",             # patches[].path
        "apps/shop/base/kustomization.yaml",            # resources: ../../base
        "apps/shop/base/deployment.yaml",
        "apps/shop/base/service.yaml",
        "components/monitoring/kustomization.yaml",     # components
    }                                                   # generator literals read no file
    assert (closure.remote, closure.errors, closure.outside) == ((), (), ())


def test_example_helm_and_plain_closures(example_repo: Path) -> None:
    t = targets(example_repo)
    helm = input_closure(example_repo, t["billing/dev"])
    assert helm.files == {"charts/billing/Chart.yaml", "charts/billing/values.yaml",
                          "charts/billing/templates/deployment.yaml", "charts/billing/templates/service.yaml",
                          "billing/dev/values.yaml"}
    plain = input_closure(example_repo, t["worker/staging"])
    assert plain.files == {"apps/worker/envs/staging/worker.yaml"}
    write(example_repo, "apps/worker/envs/staging/extra.json", "{}")
    write(example_repo, "apps/worker/envs/staging/README.md", "not a manifest")
    write(example_repo, "apps/worker/envs/staging/sub/ignored.yaml", "kind: X")
    assert input_closure(example_repo, t["worker/staging"]).files == {
        "apps/worker/envs/staging/worker.yaml", "apps/worker/envs/staging/extra.json"}


def test_every_kustomize_input_field_is_followed(tmp_path: Path) -> None:
    d = "app/overlay"
    write(tmp_path, f"{d}/kustomization.yaml", """\
resources:
  - ../base
  - extra.yaml
bases:
  - ../legacy
components:
  - ../component
patches:
  - path: patch.yaml
  - patch: |-
      - op: replace
        path: /spec/replicas
        value: 2
    target: {kind: Deployment}
patchesStrategicMerge:
  - psm.yaml
  - |-
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: inline}
patchesJson6902:
  - target: {kind: Deployment, name: x}
    path: json6902.yaml
configMapGenerator:
  - name: cfg
    files: [app.properties, renamed=data/raw.txt]
    envs: [vars.env]
    literals: [A=b]
secretGenerator:
  - name: sec
    env: secret.env
    files: [tls.crt]
crds: [crd.json]
configurations: [nameref.yaml]
openapi:
  path: schema.json
replacements:
  - path: replacement.yaml
  - source: {kind: ConfigMap, name: cfg}
    targets: []
generators:
  - gen.yaml
transformers:
  - ../transformers
helmGlobals:
  chartHome: ../charts
helmCharts:
  - name: web
    valuesFile: web-values.yaml
    additionalValuesFiles: [more-values.yaml]
""")
    for f in ("extra.yaml", "patch.yaml", "psm.yaml", "json6902.yaml", "app.properties", "data/raw.txt",
              "vars.env", "secret.env", "tls.crt", "crd.json", "nameref.yaml", "schema.json",
              "replacement.yaml", "gen.yaml", "web-values.yaml", "more-values.yaml"):
        write(tmp_path, f"{d}/{f}", "x: 1\n")
    write(tmp_path, "app/base/kustomization.yml", "resources: [cm.yaml]\n")
    write(tmp_path, "app/base/cm.yaml", "kind: ConfigMap\n")
    write(tmp_path, "app/legacy/Kustomization", "resources: []\n")
    write(tmp_path, "app/component/kustomization.yaml", "kind: Component\npatches: [{path: p.yaml}]\n")
    write(tmp_path, "app/component/p.yaml", "x: 1\n")
    write(tmp_path, "app/transformers/kustomization.yaml", "resources: [labels.yaml]\n")
    write(tmp_path, "app/transformers/labels.yaml", "kind: LabelTransformer\n")
    write(tmp_path, "app/charts/web/Chart.yaml", "name: web\n")
    write(tmp_path, "app/charts/web/templates/cm.yaml", "kind: ConfigMap\n")
    write(tmp_path, "app/unrelated.yaml", "not read\n")

    closure = input_closure(tmp_path, kustomize_target(d))
    assert closure.files == {
        f"{d}/kustomization.yaml", f"{d}/extra.yaml", f"{d}/patch.yaml", f"{d}/psm.yaml",
        f"{d}/json6902.yaml", f"{d}/app.properties", f"{d}/data/raw.txt", f"{d}/vars.env",
        f"{d}/secret.env", f"{d}/tls.crt", f"{d}/crd.json", f"{d}/nameref.yaml", f"{d}/schema.json",
        f"{d}/replacement.yaml", f"{d}/gen.yaml", f"{d}/web-values.yaml", f"{d}/more-values.yaml",
        "app/base/kustomization.yml", "app/base/cm.yaml", "app/legacy/Kustomization",
        "app/component/kustomization.yaml", "app/component/p.yaml",
        "app/transformers/kustomization.yaml", "app/transformers/labels.yaml",
        "app/charts/web/Chart.yaml", "app/charts/web/templates/cm.yaml",
    }
    assert (closure.remote, closure.errors, closure.outside) == ((), (), ())
    assert closure.helm_charts


def test_missing_and_broken_inputs_are_errors_not_crashes(tmp_path: Path) -> None:
    write(tmp_path, "a/kustomization.yaml", "resources: [../nope, gone.yaml]\npatches: [{path: p.yaml}]\n")
    write(tmp_path, "b/kustomization.yaml", "resources: [\n")
    write(tmp_path, "c/kustomization.yaml", "- just a list\n")
    a = input_closure(tmp_path, kustomize_target("a"))
    assert a.files == {"a/kustomization.yaml"}
    assert any("nope does not exist" in e for e in a.errors)
    assert any("a/gone.yaml does not exist" in e for e in a.errors)
    assert any("a/p.yaml does not exist" in e for e in a.errors)
    b = input_closure(tmp_path, kustomize_target("b"))
    assert b.files == {"b/kustomization.yaml"} and "b/kustomization.yaml: invalid YAML:2" in b.errors[0]
    c = input_closure(tmp_path, kustomize_target("c"))
    assert "not a kustomization" in c.errors[0]


def test_a_cycle_terminates(tmp_path: Path) -> None:
    write(tmp_path, "a/kustomization.yaml", "resources: [../b]\n")
    write(tmp_path, "b/kustomization.yaml", "resources: [../a]\n")
    closure = input_closure(tmp_path, kustomize_target("a"))
    assert closure.files == {"a/kustomization.yaml", "b/kustomization.yaml"}
    assert any("cycle" in e for e in closure.errors)


def test_remote_references_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "app/kustomization.yaml", """\
resources:
  - https://github.com/acme/infra//base?ref=v1.2.0
  - github.com/acme/other/deploy?ref=main
  - git::https://gitlab.example.com/team/repo.git//k8s
  - local.yaml
components:
  - git@github.com:acme/components.git/monitoring
patches:
  - path: https://example.com/patch.yaml
helmCharts:
  - name: postgresql
    repo: https://charts.bitnami.com/bitnami
    version: 12.1.0
""")
    write(tmp_path, "app/local.yaml", "kind: ConfigMap\n")
    closure = input_closure(tmp_path, kustomize_target("app"))
    assert closure.remote == (
        "https://github.com/acme/infra//base?ref=v1.2.0",
        "github.com/acme/other/deploy?ref=main",
        "git::https://gitlab.example.com/team/repo.git//k8s",
        "git@github.com:acme/components.git/monitoring",
        "https://example.com/patch.yaml",
        "https://charts.bitnami.com/bitnami/postgresql (version 12.1.0)",
    )
    assert closure.files == {"app/kustomization.yaml", "app/local.yaml"}


def test_a_local_directory_that_looks_like_a_host_is_local(tmp_path: Path) -> None:
    write(tmp_path, "app/kustomization.yaml", "resources: [config.d/cm.yaml]\n")
    write(tmp_path, "app/config.d/cm.yaml", "kind: ConfigMap\n")
    closure = input_closure(tmp_path, kustomize_target("app"))
    assert closure.files == {"app/kustomization.yaml", "app/config.d/cm.yaml"} and not closure.remote
    assert is_remote_reference("github.com/acme/x") and not is_remote_reference("../base")


def test_a_vendored_remote_helm_chart_is_local(tmp_path: Path) -> None:
    write(tmp_path, "app/kustomization.yaml",
          "helmCharts:\n  - name: pg\n    repo: https://charts.example.com\n    version: 1.0.0\n")
    write(tmp_path, "app/charts/pg-1.0.0/pg/Chart.yaml", "name: pg\n")
    closure = input_closure(tmp_path, kustomize_target("app"))
    assert closure.remote == () and "app/charts/pg-1.0.0/pg/Chart.yaml" in closure.files


def test_paths_leaving_the_repository_are_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write(tmp_path, "secret/kustomization.yaml", "resources: [key.yaml]\n")
    write(repo, "a/kustomization.yaml", "resources: [../../secret, /etc/hostname]\n")
    write(repo, "p/ok.yaml", "kind: ConfigMap\n")
    (repo / "p" / "leak.yaml").symlink_to(tmp_path / "secret" / "kustomization.yaml")
    write(repo, "charts/web/Chart.yaml", "name: web\n")
    (repo / "charts/web/templates").symlink_to(tmp_path / "secret")
    k = input_closure(repo, kustomize_target("a"))
    assert k.outside == (
        "a/kustomization.yaml: resources: ../../secret leaves the repository",
        "a/kustomization.yaml: resources: /etc/hostname is an absolute path outside the repository")
    assert k.files == {"a/kustomization.yaml"}
    plain = input_closure(repo, Target("p", "dev", "p", "plain"))
    assert plain.files == {"p/ok.yaml"} and "p/leak.yaml" in plain.outside[0]
    helm = input_closure(repo, Target("web", "dev", "x", "helm", chart="charts/web"))
    assert helm.files == {"charts/web/Chart.yaml"} and "charts/web/templates" in helm.outside[0]


def test_helm_closure_with_a_chart_in_the_target_directory_and_missing_values(tmp_path: Path) -> None:
    write(tmp_path, "web/dev/Chart.yaml", "name: web\n")
    write(tmp_path, "web/dev/templates/cm.yaml", "kind: ConfigMap\n")
    write(tmp_path, "web/dev/charts/redis/Chart.yaml", "name: redis\n")
    t = Target("web", "dev", "web/dev", "helm", chart="web/dev", values=("web/dev/values-extra.yaml",))
    closure = input_closure(tmp_path, t)
    assert closure.files == {"web/dev/Chart.yaml", "web/dev/templates/cm.yaml",
                             "web/dev/charts/redis/Chart.yaml"}
    assert closure.errors == ("web/dev: values: web/dev/values-extra.yaml does not exist",)
    remote = input_closure(tmp_path, Target("web", "dev", "web/dev", "helm", chart="oci://ghcr.io/acme/web"))
    assert remote.remote == ("oci://ghcr.io/acme/web",)


# ------------------------------------------------------------------------------------------ digests

def test_a_base_change_affects_every_overlay_and_an_overlay_change_only_itself(example_repo: Path) -> None:
    before = digests(example_repo)
    base = example_repo / "apps/shop/base/deployment.yaml"
    base.write_text(base.read_text().replace("containerPort: 8080", "containerPort: 8081"))
    after_base = digests(example_repo)
    changed = {k for k in before if before[k] != after_base[k]}
    assert changed == {"shop/dev", "shop/staging", "shop/prod"}

    replicas = example_repo / "apps/shop/envs/dev/replicas.yaml"
    replicas.write_text("# only a comment changed\n" + replicas.read_text())
    after_overlay = digests(example_repo)
    assert {k for k in before if after_base[k] != after_overlay[k]} == {"shop/dev"}

    comp = example_repo / "components/monitoring/kustomization.yaml"
    comp.write_text(comp.read_text() + "commonLabels: {team: sre}\n")
    after_comp = digests(example_repo)
    shop = {"shop/dev", "shop/staging", "shop/prod"}
    assert {k for k in before if after_overlay[k] != after_comp[k]} == shop

    chart = example_repo / "charts/billing/templates/service.yaml"
    chart.write_text(chart.read_text() + "\n")
    after_chart = digests(example_repo)
    assert {k for k in before if after_comp[k] != after_chart[k]} == {"billing/dev", "billing/staging",
                                                                        "billing/prod"}
    values = example_repo / "billing/prod/values.yaml"
    values.write_text(values.read_text() + "extra: 1\n")
    assert {k for k, v in digests(example_repo).items() if v != after_chart[k]} == {"billing/prod"}


def test_a_new_file_referenced_after_being_missing_changes_the_digest(tmp_path: Path) -> None:
    write(tmp_path, "a/kustomization.yaml", "resources: [cm.yaml]\n")
    t = kustomize_target("a")
    missing = closure_digest(tmp_path, input_closure(tmp_path, t))
    write(tmp_path, "a/cm.yaml", "kind: ConfigMap\n")
    assert closure_digest(tmp_path, input_closure(tmp_path, t)) != missing


def test_digest_is_path_relative_and_covers_extra(example_repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "deep" / "copy"
    shutil.copytree(example_repo, other, ignore=shutil.ignore_patterns(".git"))
    assert digests(example_repo) == digests(other)
    assert digests(example_repo, "release=x") != digests(example_repo, "release=y")
    t = targets(example_repo)["shop/dev"]
    cached = input_closure(example_repo, t)
    elsewhere = input_closure(other, t)
    own_cache = closure_digest(example_repo, cached, "e", cache=ClosureCache())
    assert own_cache == closure_digest(other, elsewhere, "e")


def test_closure_is_a_value() -> None:
    a = Closure(frozenset({"x"}), remote=("r",))
    b = Closure(frozenset({"y"}), errors=("e",), helm_charts=True)
    assert (a | b) == Closure(frozenset({"x", "y"}), ("r",), ("e",), (), True)
    assert hash(a) == hash(Closure(frozenset({"x"}), remote=("r",)))


# ------------------------------------------------------------------------------------------ speed

def _synthetic_repo(root: Path, apps: int) -> Config:
    write(root, "components/common/kustomization.yaml", "kind: Component\ncommonLabels: {team: platform}\n")
    for i in range(apps):
        app = f"app{i:03d}"
        write(root, f"apps/{app}/base/kustomization.yaml",
              "resources: [deployment.yaml, service.yaml]\n"
              "configMapGenerator: [{name: cfg, files: [app.properties]}]\n")
        write(root, f"apps/{app}/base/deployment.yaml", f"apiVersion: apps/v1\nkind: Deployment\n"
                                                         f"metadata: {{name: {app}}}\n")
        write(root, f"apps/{app}/base/service.yaml",
              f"apiVersion: v1\nkind: Service\nmetadata: {{name: {app}}}\n")
        write(root, f"apps/{app}/base/app.properties", "mode=base\n")
        for env in ENVS:
            write(root, f"apps/{app}/envs/{env}/kustomization.yaml",
                  f"namespace: {app}-{env}\nresources: [../../base]\n"
                  "components: [../../../../components/common]\n"
                  f"patches: [{{path: replicas.yaml}}]\n"
                  f"images: [{{name: registry.example.com/{app}, newTag: '1.0.0'}}]\n")
            write(root, f"apps/{app}/envs/{env}/replicas.yaml", "spec: {replicas: 2}\n")
    return Config(version=1, environments=tuple(Environment(e) for e in ENVS),
                  apps=(AppSpec(path="apps/{app}/envs/{env}", namespace="{app}-{env}"),))


def test_300_targets_at_base_and_head_read_each_file_a_few_times(tmp_path: Path) -> None:
    """The work of a wide plan's closures is a few reads of each file per tree, whatever the number of
    targets sharing it (counted with an audit hook on every file opened; the time it takes is
    measured by benchmarks/plan_bench.py, not asserted here).  The expansions' closure rule is on, as
    in every plan: it reads a file again to look for expandable objects and Helm templates."""
    import prbot.expand  # noqa: F401 - registers the expansions' closure rule, as rendering does
    config = _synthetic_repo(tmp_path / "base", 100)
    shutil.copytree(tmp_path / "base", tmp_path / "head")
    (tmp_path / "head/apps/app007/envs/prod/replicas.yaml").write_text("spec: {replicas: 5}\n")
    opened: list[str] = []
    counting = [True]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if counting[0] and event == "open" and isinstance(args[0], str | Path) and \
                str(args[0]).startswith(str(tmp_path)) and os.path.isfile(args[0]):
            opened.append(os.path.relpath(args[0], tmp_path))

    sys.addaudithook(hook)
    try:
        cache = ClosureCache()
        keys = []
        for side in ("base", "head"):
            root = tmp_path / side
            keys.append({t.key: closure_digest(root, cache.closure(root, t), t.renderer)
                         for t in discover_targets(config, root)})
    finally:
        counting[0] = False
    base, head = keys
    assert len(base) == 300 and [k for k in base if base[k] != head[k]] == ["app007/prod"]
    files = sum(1 for side in ("base", "head") for p in (tmp_path / side).rglob("*") if p.is_file())
    reads = Counter(opened)
    assert files // 2 <= len(reads) <= files                    # the hook sees the files read
    # shared by 3 targets or read by one, a file costs the same few reads: the cache is shared
    assert max(reads.values()) <= 3, reads.most_common(3)


@pytest.mark.parametrize("name", ["kustomization.yaml", "kustomization.yml", "Kustomization"])
def test_every_kustomization_file_name(tmp_path: Path, name: str) -> None:
    write(tmp_path, f"a/{name}", "resources: [cm.yaml]\n")
    write(tmp_path, "a/cm.yaml", "kind: ConfigMap\n")
    assert input_closure(tmp_path, kustomize_target("a")).files == {f"a/{name}", "a/cm.yaml"}


def test_two_kustomization_files_are_both_inputs(tmp_path: Path) -> None:
    write(tmp_path, "a/kustomization.yaml", "resources: []\n")
    write(tmp_path, "a/Kustomization", "resources: []\n")
    files = input_closure(tmp_path, kustomize_target("a")).files
    if os.path.samefile(tmp_path / "a/kustomization.yaml", tmp_path / "a/Kustomization"):
        pytest.fail("case-insensitive file system: this test needs a case-sensitive one")
    assert files == {"a/kustomization.yaml", "a/Kustomization"}


# ------------------------------------------------------------------------------------------ touched_by

def _changed(repo: Path) -> set[str]:
    git(repo, "add", "-A")
    return set(git(repo, "diff", "--cached", "--name-only", "--no-renames").splitlines())


@pytest.mark.parametrize("change", [
    "base", "overlay-patch", "overlay-unreferenced", "component-deleted", "second-kustomization",
    "plain-new-manifest", "plain-readme", "chart-new-template", "values", "base-dir-deleted",
])
def test_head_closures_and_changed_paths_agree_with_digests(example_repo: Path, change: str) -> None:
    before = digests(example_repo)
    r = example_repo
    if change == "base":
        write(r, "apps/shop/base/service.yaml", (r / "apps/shop/base/service.yaml").read_text() + "# x\n")
    elif change == "overlay-patch":
        write(r, "apps/shop/envs/prod/replicas.yaml", "spec: {replicas: 9}\n")
    elif change == "overlay-unreferenced":
        write(r, "apps/shop/envs/prod/notes.yaml", "not: referenced\n")
    elif change == "component-deleted":
        shutil.rmtree(r / "components/monitoring")
    elif change == "second-kustomization":
        write(r, "apps/shop/base/Kustomization", "resources: []\n")
    elif change == "plain-new-manifest":
        write(r, "apps/worker/envs/dev/extra.yml", "kind: ConfigMap\n")
    elif change == "plain-readme":
        write(r, "apps/worker/envs/dev/README.md", "docs\n")
    elif change == "chart-new-template":
        write(r, "charts/billing/templates/sub/cm.yaml", "kind: ConfigMap\n")
    elif change == "values":
        write(r, "billing/staging/values.yaml", "replicaCount: 4\n")
    elif change == "base-dir-deleted":
        shutil.rmtree(r / "apps/shop/base")
    changed = _changed(r)
    cache = ClosureCache()
    touched = {k for k, t in targets(r).items() if cache.closure(r, t).touched_by(changed)}
    by_digest = {k for k, d in digests(r).items() if before[k] != d}
    assert touched == by_digest
    if change in ("overlay-unreferenced", "plain-readme"):
        assert touched == set()


def test_symbolic_links_inside_the_repository_count_both_paths(tmp_path: Path) -> None:
    write(tmp_path, "shared/common.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    write(tmp_path, "shared/lib/base/kustomization.yaml", "resources: [cm.yaml]\n")
    write(tmp_path, "shared/lib/base/cm.yaml", "kind: ConfigMap\n")
    write(tmp_path, "p/own.yaml", "kind: ConfigMap\n")
    (tmp_path / "p/common.yaml").symlink_to("../shared/common.yaml")
    write(tmp_path, "k/kustomization.yaml", "resources: [../linked/base]\n")
    (tmp_path / "linked").symlink_to("shared/lib")
    plain = input_closure(tmp_path, Target("p", "dev", "p", "plain"))
    assert plain.files == {"p/own.yaml", "p/common.yaml", "shared/common.yaml"}
    assert plain.touched_by(["shared/common.yaml"]) and not plain.touched_by(["shared/other.yaml"])
    k = input_closure(tmp_path, kustomize_target("k"))
    assert k.files == {"k/kustomization.yaml", "linked/base/kustomization.yaml", "linked/base/cm.yaml",
                       "shared/lib/base/kustomization.yaml", "shared/lib/base/cm.yaml"}
    assert k.touched_by(["shared/lib/base/cm.yaml"])

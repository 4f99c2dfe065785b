"""Closures are complete, proven without knowing kustomize's fields: for the example repository, the
test fixtures and realistic layouts (fixed and generated), the real tool run on a tree holding ONLY a
target's closure prints byte for byte what it prints on the full tree.  A closure that misses a file
the tool reads makes the two differ, and this test fails.

Every renderer in `prbot.renderers.RENDERERS` must be exercised here (a new renderer without a
closure rule, or without layouts, fails `test_every_renderer_is_proven`)."""

from __future__ import annotations

import json
import re
import shutil
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import EXAMPLE, write
from test_hostile import HIDDEN

from prbot.config import load_config_file
from prbot.errors import RenderError, ToolError
from prbot.limits import Limits
from prbot.model import Target
from prbot.render import render_target
from prbot.renderers import RENDERERS, Renderer
from prbot.renderers.base import RenderJob, parse_documents
from prbot.renderers.closure import EMPTY, ClosureCache
from prbot.renderers.plain import PlainRenderer
from prbot.sandbox import run_tool
from prbot.targets import discover_targets
from prbot.tools import which

# --------------------------------------------------------------------------------------------------
# The tools, run directly on a tree (no closure, no staging): what the renderer binary reads there
# --------------------------------------------------------------------------------------------------


def _tool(root: Path, argv: list[str], home: Path) -> str:
    try:
        return run_tool(argv, cwd=root, home=home, label=argv[0].rpartition("/")[2], limits=Limits())
    except ToolError as exc:                       # errors count too: they must agree as well
        return "ERROR: " + re.sub(r"kustomize-helm-\d+", "kustomize-helm-N", str(exc))


def raw_kustomize(root: Path, target: Target, home: Path) -> str:
    kubectl = which("kubectl")
    assert kubectl is not None
    argv = [kubectl, "kustomize", "--load-restrictor", "LoadRestrictionsRootOnly"]
    if "helmCharts" in (root / target.path / "kustomization.yaml").read_text(errors="replace"):
        argv += ["--enable-helm", "--helm-command", which("helm3") or which("helm") or "helm"]
    return _tool(root, [*argv, target.path or "."], home)


def raw_helm(root: Path, target: Target, home: Path) -> str:
    helm = which("helm")
    assert helm is not None
    argv = [helm, "template", f"{target.app}-{target.env}", f"./{target.chart or target.path}",
            "--include-crds", "--skip-tests"]
    for values in target.values:
        argv += ["--values", f"./{values}"]
    return _tool(root, argv, home)


def raw_plain(root: Path, target: Target, home: Path) -> str:
    """The plain renderer lists the directory itself (it never asks the closure what to read)."""
    try:
        return json.dumps(PlainRenderer().render(RenderJob(root=root, target=target, closure=EMPTY,
                                                           limits=Limits())))
    except RenderError as exc:
        return f"ERROR: {exc}"


RAW: dict[str, Callable[[Path, Target, Path], str]] = {
    "kustomize": raw_kustomize, "helm": raw_helm, "plain": raw_plain}


def only_closure(root: Path, target: Target, dest: Path) -> Path:
    """A copy of the files of `target`'s closure, and nothing else (copied here, not by prbot)."""
    closure = ClosureCache().closure(root, target)
    assert not closure.outside and not closure.remote, closure
    dest.mkdir(parents=True)
    for rel in closure.files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / rel, dest / rel)
    return dest


def assert_closure_complete(root: Path, targets: list[Target], scratch: Path) -> list[str]:
    """Render each target on the full tree and on its closure alone: byte-identical output."""
    outputs = []
    for i, target in enumerate(targets):
        home = scratch / f"home{i}"
        home.mkdir(parents=True)
        full = RAW[target.renderer](root, target, home)
        alone = only_closure(root, target, scratch / f"closure{i}")
        got = RAW[target.renderer](alone, target, home)
        assert got == full, f"{target.key} ({target.renderer}): the closure misses something it reads"
        if not full.startswith("ERROR"):          # and prbot, which renders the closure alone, agrees
            expected = json.loads(full) if target.renderer == "plain" else parse_documents(full)
            assert render_target(root, target) == expected, target.key
        outputs.append(full)
    return outputs


# --------------------------------------------------------------------------------------------------
# The example repository and the fixtures of the attack tests
# --------------------------------------------------------------------------------------------------

def test_the_example_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLE, root)
    targets = discover_targets(load_config_file(root / ".prbot.yml"), root)
    assert {t.renderer for t in targets} == {"kustomize", "helm", "plain"}
    outputs = assert_closure_complete(root, targets, tmp_path / "scratch")
    assert not any(o.startswith("ERROR") for o in outputs)


@pytest.mark.parametrize("case", list(HIDDEN))
def test_the_attack_fixtures(tmp_path: Path, case: str) -> None:
    files, changed, text, _ = HIDDEN[case]
    root = tmp_path / "repo"
    for rel, content in {**files, changed: text}.items():
        write(root, rel, content)
    write(root, "apps/app/envs/dev/unrelated.yaml", "not: read\n")      # the closure leaves it out
    target = Target("app", "dev", "apps/app/envs/dev", "kustomize")
    [out] = assert_closure_complete(root, [target], tmp_path / "scratch")
    assert not out.startswith("ERROR"), out


# --------------------------------------------------------------------------------------------------
# Realistic layouts
# --------------------------------------------------------------------------------------------------

DEPLOY = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n"
          "  replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n"
          "      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n"
          "          image: nginx:1.27\n          env: [{name: MODE, value: base}]\n")
SERVICE = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: [{port: 80}]\n"
CHART = "apiVersion: v2\nname: {name}\nversion: 1.0.0\n"
CHART_CM = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\n"
            "data:\n  greeting: {{ .Values.greeting | quote }}\n  size: {{ .Values.size | quote }}\n"
            "  file: {{ .Files.Get \"files/extra.txt\" | quote }}\n")


def realistic_repo(root: Path) -> list[Target]:
    """A repository the way teams lay them out: bases, nested overlays, components, every kind of
    generator and transformer configuration, a local chart inflated by kustomize, a Helm target, plain
    manifests (YAML, JSON, Lists, several documents), a base reached through a link inside the repo."""
    files = {
        "apps/web/base/kustomization.yaml": "resources: [deployment.yaml, service.yaml]\n"
                                            "configMapGenerator:\n  - name: web-config\n"
                                            "    files: [app.properties, extra=conf/extra.ini]\n"
                                            "    envs: [defaults.env]\n",
        "apps/web/base/deployment.yaml": DEPLOY, "apps/web/base/service.yaml": SERVICE,
        "apps/web/base/app.properties": "a=1\n", "apps/web/base/conf/extra.ini": "[x]\ny=2\n",
        "apps/web/base/defaults.env": "LOG=info\n", "apps/web/base/README.md": "not read\n",
        "apps/web/base/unused.yaml": "kind: ConfigMap\n",
        "components/monitoring/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\n"
                                                    "kind: Component\npatches: [{path: annotate.yaml}]\n"
                                                    "secretGenerator: [{name: mon, envs: [mon.env]}]\n",
        "components/monitoring/annotate.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
                                               "  annotations: {prometheus.io/scrape: 'true'}\n",
        "components/monitoring/mon.env": "TOKEN=abc\n",
        "apps/web/region/kustomization.yaml": "resources: [../base]\nnamePrefix: eu-\n"
                                              "patchesStrategicMerge: [region.yaml]\n"
                                              "patchesJson6902:\n  - target: {group: apps, version: v1, "
                                              "kind: Deployment, name: web}\n    path: ops.yaml\n",
        "apps/web/region/region.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
                                       "spec: {replicas: 2}\n",
        "apps/web/region/ops.yaml": "- {op: add, path: /metadata/labels/region, value: eu}\n",
        "apps/web/envs/dev/kustomization.yaml": (
            "resources: [../../region, extra/]\ncomponents: [../../../../components/monitoring]\n"
            "generators:\n  - gen.yaml\n  - gens\n"
            "  - |-\n    apiVersion: builtin\n    kind: SecretGenerator\n    metadata: {name: inline-secret}\n"
            "    files: [tls.crt]\n"
            "  - '{apiVersion: builtin, kind: ConfigMapGenerator, metadata: {name: flow}, envs: [flow.env]}'\n"
            "transformers:\n  - patch-transformer.yaml\n"
            "  - |-\n    apiVersion: builtin\n    kind: PatchStrategicMergeTransformer\n    metadata: {name: smp}\n"
            "    paths: [smp.yaml]\n"
            "  - replace.yaml\n"
            "  - |-\n    apiVersion: builtin\n    kind: LabelTransformer\n    metadata: {name: lbl}\n"
            "    labels: {env: dev}\n    fieldSpecs: [{path: metadata/labels, create: true}]\n"
            "replacements: [{path: replacements.yaml}]\n"
            "configurations: [nameref.yaml]\n"
            "patches:\n  - path: env-patch.yaml\n  - patch: |-\n      - {op: replace, path: /spec/replicas, value: 3}\n"
            "    target: {kind: Deployment}\n"),
        "apps/web/envs/dev/extra/kustomization.yaml": "resources: [cm.yaml]\n",
        "apps/web/envs/dev/extra/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra}\n"
                                           "data: {k: v}\n",
        "apps/web/envs/dev/gen.yaml": "apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {name: gen}\n"
                                      "files: [data/one.txt]\n---\napiVersion: builtin\nkind: ConfigMapGenerator\n"
                                      "metadata: {name: gen2}\nliterals: [A=b]\nenvs: [data/two.env]\n",
        "apps/web/envs/dev/data/one.txt": "one\n", "apps/web/envs/dev/data/two.env": "TWO=2\n",
        "apps/web/envs/dev/data/ignored.txt": "not read\n",
        "apps/web/envs/dev/gens/kustomization.yaml": "resources: [cmg.yaml]\npatches: [{path: retarget.yaml}]\n",
        "apps/web/envs/dev/gens/cmg.yaml": "apiVersion: builtin\nkind: ConfigMapGenerator\n"
                                           "metadata: {name: from-dir}\nfiles: [decoy.txt]\n",
        "apps/web/envs/dev/gens/retarget.yaml": "apiVersion: builtin\nkind: ConfigMapGenerator\n"
                                                "metadata: {name: from-dir}\nfiles: [target.txt]\n",
        "apps/web/envs/dev/decoy.txt": "decoy\n", "apps/web/envs/dev/target.txt": "target\n",
        "apps/web/envs/dev/tls.crt": "CERT\n", "apps/web/envs/dev/flow.env": "F=1\n",
        "apps/web/envs/dev/patch-transformer.yaml": "apiVersion: builtin\nkind: PatchTransformer\n"
                                                    "metadata: {name: pt}\npath: pt-ops.yaml\n"
                                                    "target: {kind: Service}\n",
        "apps/web/envs/dev/pt-ops.yaml": "- {op: add, path: /metadata/annotations, value: {via: transformer}}\n",
        "apps/web/envs/dev/smp.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: eu-web}\n"
                                      "spec: {type: ClusterIP}\n",
        "apps/web/envs/dev/replace.yaml": "apiVersion: builtin\nkind: ReplacementTransformer\n"
                                          "metadata: {name: rt}\nreplacements: [{path: rt.yaml}]\n",
        "apps/web/envs/dev/rt.yaml": "source: {kind: ConfigMap, name: extra, fieldPath: data.k}\n"
                                     "targets: [{select: {kind: Service}, fieldPaths: [metadata.labels.k], "
                                     "options: {create: true}}]\n",
        "apps/web/envs/dev/replacements.yaml": "- source: {kind: Service, fieldPath: metadata.name}\n"
                                               "  targets: [{select: {kind: ConfigMap, name: extra}, "
                                               "fieldPaths: [data.service], options: {create: true}}]\n",
        "apps/web/envs/dev/nameref.yaml": "nameReference:\n  - kind: ConfigMap\n    fieldSpecs:\n"
                                          "      - {kind: Service, path: metadata/annotations/cfg}\n",
        "apps/web/envs/dev/env-patch.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n"
                                            "spec:\n  template:\n    spec:\n      containers:\n"
                                            "        - name: web\n          env: [{name: MODE, value: dev}]\n",
        # kustomize inflating a chart of the repository
        "apps/chart/envs/dev/kustomization.yaml": "helmGlobals: {chartHome: ../../../../charts}\nhelmCharts:\n"
                                                  "  - name: site\n    releaseName: site\n"
                                                  "    valuesFile: values-dev.yaml\n"
                                                  "    additionalValuesFiles: [more/values.yaml]\n",
        "apps/chart/envs/dev/values-dev.yaml": "greeting: hello\n",
        "apps/chart/envs/dev/more/values.yaml": "size: large\n",
        "charts/site/Chart.yaml": CHART.format(name="site"), "charts/site/values.yaml": "greeting: hi\nsize: s\n",
        "charts/site/templates/cm.yaml": CHART_CM, "charts/site/files/extra.txt": "packaged\n",
        "charts/site/.helmignore": "*.bak\n", "charts/site/templates/_helpers.tpl": "{{- define \"x\" }}x{{ end }}\n",
        # a Helm target with its values
        "helm/dev/values.yaml": "greeting: from-env\nsize: m\n",
        # plain manifests
        "plain/dev/a.yaml": DEPLOY + "---\n" + SERVICE,
        "plain/dev/b.json": json.dumps({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}, "data": {"x": "1"}}]}),
        "plain/dev/c.yml": "---\n# comment only\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        "plain/dev/notes.txt": "not read\n", "plain/dev/sub/deeper.yaml": "kind: ConfigMap\n",
        # a base shared through a link inside the repository
        "shared/lib/base/kustomization.yaml": "resources: [cm.yaml]\n",
        "shared/lib/base/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: linked}\n",
        "apps/linked/envs/dev/kustomization.yaml": "resources: [../../../../lib/base]\n",
    }
    for rel, text in files.items():
        write(root, rel, text)
    (root / "lib").symlink_to("shared/lib")
    return [Target("web", "dev", "apps/web/envs/dev", "kustomize"),
            Target("web", "prod", "apps/web/region", "kustomize"),
            Target("chart", "dev", "apps/chart/envs/dev", "kustomize"),
            Target("site", "dev", "helm/dev", "helm", namespace="site-dev", chart="charts/site",
                   values=("helm/dev/values.yaml",)),
            Target("site", "prod", "charts/site", "helm", chart="charts/site"),
            Target("plain", "dev", "plain/dev", "plain"),
            Target("linked", "dev", "apps/linked/envs/dev", "kustomize")]


def test_realistic_layouts(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    targets = realistic_repo(root)
    outputs = dict(zip((t.key for t in targets), assert_closure_complete(root, targets, tmp_path / "s"),
                       strict=True))
    for key, out in outputs.items():
        if key == "chart/dev" and not which("helm3"):     # kustomize's helmCharts need a Helm 3
            assert "helm version -c" in out or "ERROR" in out
            continue
        assert not out.startswith("ERROR"), (key, out)
    web = outputs["web/dev"]
    for seen in ("target", "one", "TWO", "via: transformer", "eu-web", "prometheus.io/scrape", "region: eu",
                 "env: dev", "MODE", "LOG: info"):
        assert seen in web, seen                          # every feature really took part
    assert "decoy" not in web


def test_the_comparison_catches_a_missed_file(tmp_path: Path) -> None:
    """The property has teeth: leave one file a generator reads out of the closure's copy and the
    tool's output is no longer the same."""
    root = tmp_path / "repo"
    targets = realistic_repo(root)
    web = targets[0]
    home = tmp_path / "home"
    home.mkdir()
    full = raw_kustomize(root, web, home)
    alone = only_closure(root, web, tmp_path / "closure")
    (alone / "apps/web/envs/dev/target.txt").unlink()      # read only through a patched configuration
    assert raw_kustomize(alone, web, home) != full


# --------------------------------------------------------------------------------------------------
# Generated layouts: any mix of features, in any place
# --------------------------------------------------------------------------------------------------

Feature = Callable[[dict[str, str], str, str, str], dict[str, list[Any]]]
_WORD = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=12)


def _gen_files(files: dict[str, str], kdir: str, uid: str, value: str) -> dict[str, list[Any]]:
    files[f"{kdir}/files-{uid}.txt"] = value + "\n"
    return {"configMapGenerator": [{"name": f"files-{uid}", "files": [f"k{uid}=files-{uid}.txt"]}]}


def _gen_envs(files: dict[str, str], kdir: str, uid: str, value: str) -> dict[str, list[Any]]:
    files[f"{kdir}/env-{uid}/vars.env"] = f"V{uid}={value}\n"
    return {"secretGenerator": [{"name": f"env-{uid}", "envs": [f"env-{uid}/vars.env"]}]}


def _plugin_file(files: dict[str, str], kdir: str, uid: str, value: str) -> dict[str, list[Any]]:
    files[f"{kdir}/plugin-{uid}.yaml"] = (f"apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata: {{name: p{uid}}}\n"
                                          f"files: [data-{uid}/x.txt]\n")
    files[f"{kdir}/data-{uid}/x.txt"] = value + "\n"
    return {"generators": [f"plugin-{uid}.yaml"]}


def _plugin_inline(files: dict[str, str], kdir: str, uid: str, value: str) -> dict[str, list[Any]]:
    files[f"{kdir}/inline-{uid}.env"] = f"I={value}\n"
    return {"generators": [f"apiVersion: builtin\nkind: ConfigMapGenerator\nmetadata:\n  name: i{uid}\n"
                           f"envs: [inline-{uid}.env]\n"]}


def _plugin_dir(files: dict[str, str], kdir: str, uid: str, value: str) -> dict[str, list[Any]]:
    files[f"{kdir}/gdir-{uid}/kustomization.yaml"] = "resources: [g.yaml]\n"
    files[f"{kdir}/gdir-{uid}/g.yaml"] = (f"apiVersion: builtin\nkind: SecretGenerator\nmetadata: {{name: d{uid}}}\n"
                                          f"files: [dir-{uid}.txt]\n")
    files[f"{kdir}/dir-{uid}.txt"] = value + "\n"
    return {"generators": [f"gdir-{uid}"]}


def _patch_transformer(files: dict[str, str], kdir: str, uid: str, value: str) -> dict[str, list[Any]]:
    files[f"{kdir}/pt-{uid}.yaml"] = (f"apiVersion: builtin\nkind: PatchTransformer\nmetadata: {{name: t{uid}}}\n"
                                      f"path: ops-{uid}.yaml\ntarget: {{kind: Deployment}}\n")
    files[f"{kdir}/ops-{uid}.yaml"] = f"- {{op: add, path: /metadata/annotations/t{uid}, value: '{value}'}}\n"
    return {"transformers": [f"pt-{uid}.yaml"]}


def _smp(files: dict[str, str], kdir: str, uid: str, value: str) -> dict[str, list[Any]]:
    files[f"{kdir}/smp-{uid}.yaml"] = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
                                       f"  annotations: {{s{uid}: '{value}'}}\n")
    return {"patches": [{"path": f"smp-{uid}.yaml"}]}


def _component(files: dict[str, str], kdir: str, uid: str, value: str) -> dict[str, list[Any]]:
    cdir = f"components/c{uid}"
    files[f"{cdir}/kustomization.yaml"] = ("apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
                                           f"configMapGenerator: [{{name: comp-{uid}, files: [c.txt]}}]\n")
    files[f"{cdir}/c.txt"] = value + "\n"
    depth = kdir.count("/") + 1
    return {"components": ["../" * depth + cdir]}


FEATURES: dict[str, Feature] = {"generator files": _gen_files, "generator envs": _gen_envs,
                                "plugin file": _plugin_file, "plugin inline": _plugin_inline,
                                "plugin directory": _plugin_dir, "PatchTransformer": _patch_transformer,
                                "patch": _smp, "component": _component}


@st.composite
def layouts(draw: st.DrawFn) -> tuple[dict[str, str], list[Target]]:
    """A base, 0-2 intermediate overlays and an environment overlay; features on any level."""
    depth = draw(st.integers(0, 2))
    levels = ["apps/app/base"] + [f"apps/app/mid{i}" for i in range(depth)] + ["apps/app/envs/dev"]
    files: dict[str, str] = {"apps/app/base/deployment.yaml": DEPLOY}
    fields: dict[str, dict[str, list[Any]]] = {lvl: {} for lvl in levels}
    fields["apps/app/base"]["resources"] = ["deployment.yaml"]
    for i, lvl in enumerate(levels[1:], 1):
        prev = levels[i - 1].rpartition("/")[2] if i - 1 else "base"
        up = "../../" if lvl.startswith("apps/app/envs/") else "../"
        fields[lvl]["resources"] = [f"{up}{prev}"]
    picked = draw(st.lists(st.tuples(st.sampled_from(sorted(FEATURES)), st.sampled_from(levels), _WORD),
                           min_size=1, max_size=6))
    for n, (name, lvl, value) in enumerate(picked):
        for key, entries in FEATURES[name](files, lvl, str(n), value).items():
            fields[lvl].setdefault(key, []).extend(entries)
    for lvl in levels:
        files[f"{lvl}/kustomization.yaml"] = json.dumps(fields[lvl])
        files[f"{lvl}/decoy.txt"] = "never read\n"
    return files, [Target("app", "dev", levels[-1], "kustomize")]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=layouts())
def test_generated_layouts(tmp_path_factory: pytest.TempPathFactory, layout: tuple[dict[str, str], list[Target]]
                           ) -> None:
    files, targets = layout
    tmp = tmp_path_factory.mktemp("layout")
    for rel, text in files.items():
        write(tmp / "repo", rel, text)
    [out] = assert_closure_complete(tmp / "repo", targets, tmp / "scratch")
    assert not out.startswith("ERROR"), (out, files)


# --------------------------------------------------------------------------------------------------
# Every renderer is proven
# --------------------------------------------------------------------------------------------------

def test_every_renderer_is_proven(tmp_path: Path) -> None:
    """A renderer added to the registry needs a closure rule (the interface requires it), a way to run
    it directly here (RAW) and layouts above that prove its closure complete."""
    assert set(RAW) == set(RENDERERS), "add the new renderer to RAW and give it layouts in this file"
    for renderer in RENDERERS.values():
        assert isinstance(renderer, Renderer)
        assert type(renderer).closure is not Renderer.closure
    root = tmp_path / "repo"
    targets = realistic_repo(root)
    assert {t.renderer for t in targets} == set(RENDERERS)
    with pytest.raises(TypeError):
        type("Forgetful", (Renderer,), {"name": "x", "detect": lambda *a: True,
                                        "render": lambda *a: []})()   # no closure rule: cannot exist

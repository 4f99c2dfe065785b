import sys
from pathlib import Path

from support import write

from prbot.config import AppSpec, Config, Environment, HelmSpec
from prbot.targets import discover_targets


def _config(*apps: AppSpec) -> Config:
    return Config(version=1, environments=(Environment("dev"), Environment("staging"), Environment("prod")),
                  apps=apps)


def test_pattern_expands_to_targets_with_renderers(tmp_path: Path) -> None:
    write(tmp_path, "apps/shop/envs/dev/kustomization.yaml", "resources: []\n")
    write(tmp_path, "apps/shop/envs/prod/kustomization.yml", "resources: []\n")
    write(tmp_path, "apps/web/envs/dev/Chart.yaml", "name: web\n")
    write(tmp_path, "apps/worker/envs/staging/a.yaml", "kind: ConfigMap\n")
    write(tmp_path, "apps/worker/envs/qa/a.yaml", "kind: ConfigMap\n")      # not an environment
    write(tmp_path, "apps/worker/other/dev/a.yaml", "kind: ConfigMap\n")    # not the pattern
    cfg = _config(AppSpec(path="apps/{app}/envs/{env}", namespace="{app}-{env}"))
    got = [(t.app, t.env, t.path, t.renderer, t.namespace) for t in discover_targets(cfg, tmp_path)]
    assert got == [
        ("shop", "dev", "apps/shop/envs/dev", "kustomize", "shop-dev"),
        ("web", "dev", "apps/web/envs/dev", "helm", "web-dev"),
        ("worker", "staging", "apps/worker/envs/staging", "plain", "worker-staging"),
        ("shop", "prod", "apps/shop/envs/prod", "kustomize", "shop-prod"),
    ]


def test_fixed_name_helm_app_with_chart_elsewhere(tmp_path: Path) -> None:
    write(tmp_path, "charts/billing/Chart.yaml", "name: billing\n")
    write(tmp_path, "billing/dev/values.yaml", "image: {}\n")
    cfg = _config(AppSpec(path="billing/{env}", name="billing",
                          helm=HelmSpec(chart="charts/billing", values=("values.yaml",))))
    [t] = discover_targets(cfg, tmp_path)
    assert (t.app, t.env, t.renderer, t.chart, t.values) == (
        "billing", "dev", "helm", "charts/billing", ("billing/dev/values.yaml",))


def test_example_repo_targets(example_repo: Path) -> None:
    from prbot.config import load_config_file
    cfg = load_config_file(example_repo / ".prbot.yml")
    keys = [(t.key, t.renderer) for t in discover_targets(cfg, example_repo)]
    assert keys == [("billing/dev", "helm"), ("shop/dev", "kustomize"), ("worker/dev", "plain"),
                    ("billing/staging", "helm"), ("shop/staging", "kustomize"), ("worker/staging", "plain"),
                    ("billing/prod", "helm"), ("shop/prod", "kustomize"), ("worker/prod", "plain")]


_SCANNED: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if event == "os.scandir" and _RECORDING:
        _SCANNED.append(str(args[0]))


_RECORDING = False
sys.addaudithook(_audit)


def test_discovery_does_not_walk_outside_patterns(tmp_path: Path) -> None:
    global _RECORDING
    for i in range(2000):
        write(tmp_path, f"noise/d{i}/envs/dev/x.yaml", "kind: ConfigMap\n")
    write(tmp_path, "apps/a/envs/dev/x.yaml", "kind: ConfigMap\n")
    write(tmp_path, "apps/b/other/dev/x.yaml", "kind: ConfigMap\n")
    cfg = _config(AppSpec(path="apps/{app}/envs/{env}"))
    _SCANNED.clear()
    _RECORDING = True
    try:
        targets = discover_targets(cfg, tmp_path)
    finally:
        _RECORDING = False
    assert [t.key for t in targets] == ["a/dev"]
    # only directories a pattern segment can match were listed: apps/ and apps/a/envs/
    assert _SCANNED and not any("noise" in p for p in _SCANNED)
    assert len(_SCANNED) <= 4, _SCANNED

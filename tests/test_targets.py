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


def test_discovery_does_not_walk_outside_patterns(tmp_path: Path) -> None:
    # thousands of directories elsewhere must not be visited: make them unreadable to prove it
    for i in range(2000):
        (tmp_path / "noise" / f"d{i}").mkdir(parents=True)
    write(tmp_path, "apps/a/envs/dev/x.yaml", "kind: ConfigMap\n")
    (tmp_path / "noise").chmod(0)
    try:
        cfg = _config(AppSpec(path="apps/{app}/envs/{env}"))
        assert [t.key for t in discover_targets(cfg, tmp_path)] == ["a/dev"]
    finally:
        (tmp_path / "noise").chmod(0o755)

"""`.prbot.yml`: loading into dataclasses, FILE:LINE errors, and the JSON Schema kept in step."""

from __future__ import annotations

import copy
import io
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from support import EXAMPLE, write

from prbot.config import (
    KNOWN_KEYS,
    AppSpec,
    Config,
    Environment,
    HelmSpec,
    ImageRule,
    PreviewSpec,
    SyncSpec,
    config_schema,
    load_config,
    load_config_file,
)
from prbot.errors import ConfigError, PrbotError
from prbot.targets import check_config


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(doc(text))
    return info.value.errors


def schema_errors(text: str) -> list[str]:
    data = YAML(typ="safe").load(doc(text))
    validator = jsonschema.Draft202012Validator(config_schema())
    return [e.message for e in validator.iter_errors(data)]


# A config that uses every key the file knows.
MAXIMAL = """
version: 1
environments:
  - name: dev
    cluster: dev-cluster
    auto_merge: true
    kubernetes_version: "1.33"
    deployers: []
  - name: staging
    cluster: staging
    kubernetes_version: "1.30"
  - name: prod
    cluster: prod
    auto_merge: false
    deployers: ["@acme/sre", "alice", "bob-2"]
apps:
  - path: "apps/{app}/envs/{env}"
    namespace: "{app}-{env}"
    sync:
      argocd: {application: "{app}-{env}", namespace: argocd}
  - name: billing
    path: "billing/{env}"
    namespace: "billing-{env}"
    helm: {chart: "charts/billing", values: ["values.yaml", "../common-values.yaml"]}
    sync:
      flux: {kind: HelmRelease, name: "billing-{env}", namespace: flux-system}
  - name: infra
    path: "clusters/{env}/infra"
    sync:
      apply: {prune: true}
  - path: "svc/{app}-{env}"
    sync:
      flux: {kind: Kustomization, name: "{app}-{env}"}
  - path: "plain/{env}/{app}"
    sync:
      apply:
  - name: api
    path: "charts/api"
    helm: {chart: "charts/api", values: ["values.yaml", "values-{env}.yaml"]}
    environments: [staging, prod]
images:
  - repository: registry.cn-hangzhou.aliyuncs.com/demo/app
    land_in: dev
    tags: '^[0-9a-f]{7,40}$'
    policy: pushed
    digest: false
  - repository: localhost:5000/team/tool
    land_in: staging
    policy: semver
    digest: true
  - repository: acme/worker
preview:
  environment: dev
  url: "https://pr-{number}.preview.example.com"
diff:
  ignore:
    - metadata.annotations.example\\.com/build-time
    - spec.replicas
render:
  remote: ["https://github.com/acme/", "oci://registry.example.com/charts/"]
  repository: ["git@github.com:acme/gitops-mirror.git"]
"""


# -- the example repository ---------------------------------------------------------------------------


def test_example_config_round_trips_into_dataclasses() -> None:
    config = load_config_file(EXAMPLE / ".prbot.yml")
    assert isinstance(config, Config)
    assert config.version == 1
    assert config.env_names == ["dev", "staging", "prod"]
    dev, staging, prod = config.environments
    assert dev == Environment(name="dev", cluster="dev", auto_merge=True, kubernetes_version="1.33")
    assert staging == Environment(name="staging", cluster="staging")
    assert prod.deployers == ("@acme/sre", "alice")
    assert prod.auto_merge is False and prod.kubernetes_version is None
    assert config.next_env("dev") == staging and config.next_env("prod") is None

    shop, billing = config.apps
    assert shop == AppSpec(path="apps/{app}/envs/{env}", namespace="{app}-{env}",
                           sync=SyncSpec("argocd", {"application": "{app}-{env}", "namespace": "argocd"}))
    assert billing.name == "billing" and billing.path == "billing/{env}"
    assert billing.namespace == "billing-{env}"
    assert billing.helm == HelmSpec(chart="charts/billing", values=("values.yaml",))
    assert billing.sync == SyncSpec("flux", {"kind": "HelmRelease", "name": "billing-{env}",
                                             "namespace": "flux-system"})

    assert [(i.repository, i.policy, i.digest) for i in config.images] == [
        ("registry.cn-hangzhou.aliyuncs.com/demo/shop", "semver", False),
        ("ghcr.io/acme/billing", "pushed", False),
        ("acme/worker", "pushed", True),
    ]
    assert config.images[0].tags == r"^v?[0-9]+\.[0-9]+\.[0-9]+$"
    assert all(i.land_in is None for i in config.images)
    assert config.preview is None
    assert config.diff_ignore == (r"metadata.annotations.example\.com/build-time",)
    # plain Python values, not ruamel scalar subclasses
    assert type(config.environments[0].kubernetes_version) is str
    assert type(config.images[0].tags) is str


def test_example_repository_passes_check_config(example_repo: Path) -> None:
    assert check_config(example_repo) == []


def test_maximal_config_loads_every_key() -> None:
    config = load_config(doc(MAXIMAL))
    assert config.environments[0].deployers == ()
    assert config.environments[2].deployers == ("@acme/sre", "alice", "bob-2")
    assert [a.sync.kind for a in config.apps if a.sync] == ["argocd", "flux", "apply", "flux", "apply"]
    assert config.apps[2].sync == SyncSpec("apply", {"prune": True})
    assert config.apps[4].sync == SyncSpec("apply", {"prune": False})     # `apply:` alone: defaults
    assert config.apps[3].sync == SyncSpec("flux", {"kind": "Kustomization", "name": "{app}-{env}",
                                                    "namespace": "flux-system"})
    assert config.apps[1].helm == HelmSpec("charts/billing", ("values.yaml", "../common-values.yaml"))
    assert config.images[0] == ImageRule("registry.cn-hangzhou.aliyuncs.com/demo/app", land_in="dev",
                                         tags="^[0-9a-f]{7,40}$", policy="pushed", digest=False)
    assert config.images[1] == ImageRule("localhost:5000/team/tool", land_in="staging", policy="semver",
                                         digest=True)
    assert config.preview == PreviewSpec("dev", "https://pr-{number}.preview.example.com")
    assert config.diff_ignore == (r"metadata.annotations.example\.com/build-time", "spec.replicas")


def test_explicit_str_tags_are_plain_strings() -> None:
    config = load_config("version: 1\nenvironments: [{name: !!str dev, deployers: [!!str alice]}]\n")
    assert config.environments[0] == Environment("dev", deployers=("alice",))


# -- one error each, with its line ----------------------------------------------------------------------

BASE_ENVS = """
# prbot configuration
version: 1
environments:
  - name: dev
  - name: prod
"""

# (document, [(line, "location: start of message"), ...])
CASES: list[tuple[str, list[tuple[int, str]]]] = [
    ("version: 2\nenvironments: [{name: dev}]\n",
     [(1, "version: unsupported version 2 (this prbot reads version 1)")]),
    ("version: '1'\nenvironments: [{name: dev}]\n", [(1, "version: expected an integer, got string")]),
    ("version: true\nenvironments: [{name: dev}]\n", [(1, "version: expected an integer, got boolean")]),
    ("environments: [{name: dev}]\n", [(1, 'missing required key "version"')]),
    ("version: 1\n", [(1, 'missing required key "environments"')]),
    ("version: 1\nenvironments: []\n", [(2, "environments: at least one environment is required")]),
    ("version: 1\nenvironments: {dev: {}}\n", [(2, "environments: expected a list, got map")]),
    ("version: 1\nenviroments: [{name: dev}]\n",
     [(1, 'missing required key "environments"'),
      (2, 'unknown key "enviroments" (did you mean "environments"?)')]),
    (BASE_ENVS + "colour: blue\n", [(6, 'unknown key "colour" (known keys: apps, diff, environments, ')]),
    ("version: 1\nenvironments:\n  - name: dev\n    auto_merg: true\n",
     [(4, 'environments[0]: unknown key "auto_merg" (did you mean "auto_merge"?)')]),
    ("version: 1\nenvironments:\n  - name: dev\n  - name: prod\n    auto_merge: \"yes\"\n",
     [(5, "environments[1].auto_merge: expected a boolean, got string")]),
    ("version: 1\nenvironments:\n  - name: dev\n    auto_merge: yes\n",
     [(4, "environments[0].auto_merge: expected a boolean, got string (write true or false)")]),
    ("version: 1\nenvironments:\n  - name: dev\n    kubernetes_version: 1.30\n",
     [(4, 'environments[0].kubernetes_version: expected a string, got number (quote it, e.g. "1.33"')]),
    ("version: 1\nenvironments:\n  - name: dev\n    kubernetes_version: \"v1.33.0\"\n",
     [(4, 'environments[0].kubernetes_version: "v1.33.0" is not a Kubernetes minor version like "1.33"')]),
    ("version: 1\nenvironments:\n  - name: dev\n    deployers: alice\n",
     [(4, "environments[0].deployers: expected a list, got string")]),
    ("version: 1\nenvironments:\n  - name: dev\n    deployers:\n      - alice\n      - two words\n",
     [(6, 'environments[0].deployers[1]: "two words" is neither a GitHub user (alice) nor a team')]),
    ("version: 1\nenvironments:\n  - cluster: dev\n", [(3, 'environments[0]: missing required key "name"')]),
    ("version: 1\nenvironments:\n  - dev\n", [(3, "environments[0]: expected a map, got string")]),
    ("version: 1\nenvironments:\n  - name: Dev_1\n",
     [(3, 'environments[0].name: "Dev_1" is not a valid environment name')]),
    ("version: 1\nenvironments:\n  - name: dev\n  - name: prod\n  - name: dev\n",
     [(5, 'environments[2].name: duplicate environment "dev" (also environments[0])')]),
    (BASE_ENVS + "apps:\n  - path: apps/{app}/{env}\n    environments: [dev, qa]\n",
     [(8, 'apps[0].environments[1]: "qa" names no environment (known: dev, prod)')]),
    (BASE_ENVS + "apps:\n  - path: apps/{app}\n    environments: []\n",
     [(8, "apps[0].environments: lists no environment (leave it out for all)")]),
    (BASE_ENVS + "apps:\n  - path: apps/{app}\n    environments: [prod, prod]\n",
     [(8, 'apps[0].environments: "prod" is listed twice')]),
    (BASE_ENVS + "apps:\n  - path: c/{app}\n    helm: {values: ['values-{stage}.yaml']}\n",
     [(8, 'apps[0].helm.values[0]: unknown placeholder {stage} in "values-{stage}.yaml"')]),
    (BASE_ENVS + "apps:\n  - path: /srv/{app}/{env}\n",
     [(7, 'apps[0].path: "/srv/{app}/{env}" is absolute; write it relative to the repository root')]),
    (BASE_ENVS + "apps:\n  - path: ../other/{app}/{env}\n",
     [(7, 'apps[0].path: "../other/{app}/{env}" escapes the repository')]),
    (BASE_ENVS + "apps:\n  - path: apps/../../{app}/{env}\n",
     [(7, 'apps[0].path: "apps/../../{app}/{env}" escapes the repository')]),
    (BASE_ENVS + "apps:\n  - path: apps/{app}/{stage}/{env}\n",
     [(7, 'apps[0].path: unknown placeholder {stage} in "apps/{app}/{stage}/{env}" (use {app} or {env})')]),
    (BASE_ENVS + "apps:\n  - path: apps/{app/{env}\n",
     [(7, 'apps[0].path: unbalanced brace in "apps/{app/{env}"'),
      (7, 'apps[0]: missing required key "name"')]),
    (BASE_ENVS + "apps:\n  - path: billing/{env}\n",
     [(7, 'apps[0]: missing required key "name" (path has no {app}')]),
    (BASE_ENVS + "apps:\n  - path: apps/{app}/{env}\n    name: shop\n",
     [(8, "apps[0].name: not allowed when path has {app}")]),
    (BASE_ENVS + "apps:\n  - name: shop\n", [(7, 'apps[0]: missing required key "path"')]),
    (BASE_ENVS + "apps:\n  - path: 3\n", [(7, "apps[0].path: expected a string, got integer")]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n  - path: a/{app}/{env}/\n",
     [(8, 'apps[1].path: same path as apps[0]')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    namespace: Team_{app}\n",
     [(8, 'apps[0].namespace: "Team_{app}" does not make a valid namespace name')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    namespace: \"{team}\"\n",
     [(8, "apps[0].namespace: unknown placeholder {team}")]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    snyc: {apply: {}}\n",
     [(8, 'apps[0]: unknown key "snyc" (did you mean "sync"?)')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    sync: {}\n",
     [(8, "apps[0].sync: expected exactly one of argocd, flux, apply (got none)")]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    sync:\n      apply: {}\n"
     "      argocd: {application: x}\n",
     [(8, "apps[0].sync: expected exactly one of argocd, flux, apply (got apply, argocd)")]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    sync:\n      argo: {application: x}\n",
     [(8, "apps[0].sync: expected exactly one of argocd, flux, apply (got none)"),
      (9, 'apps[0].sync: unknown key "argo" (did you mean "argocd"?)')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    sync:\n      argocd: {namespace: argocd}\n",
     [(9, 'apps[0].sync.argocd: missing required key "application"')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    sync:\n      argocd:\n        application: x\n"
     "        project: default\n",
     [(11, 'apps[0].sync.argocd: unknown key "project" (known keys: application, namespace)')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    sync:\n      flux: {kind: GitRepository, name: x}\n",
     [(9, 'apps[0].sync.flux.kind: "GitRepository" is not one of Kustomization, HelmRelease')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    sync:\n      flux: {kind: Kustomization, nmae: x}\n",
     [(9, 'apps[0].sync.flux: unknown key "nmae" (did you mean "name"?)'),
      (9, 'apps[0].sync.flux: missing required key "name"')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    sync:\n      apply:\n        prune: \"true\"\n",
     [(10, "apps[0].sync.apply.prune: expected a boolean, got string (write true or false)")]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    sync:\n      apply: {purne: true}\n",
     [(9, 'apps[0].sync.apply: unknown key "purne" (did you mean "prune"?)')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    sync: argocd\n",
     [(8, "apps[0].sync: expected a map, got string")]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    helm:\n      chart: ../charts/x\n",
     [(9, 'apps[0].helm.chart: "../charts/x" escapes the repository')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    helm:\n      chart: /charts/x\n",
     [(9, 'apps[0].helm.chart: "/charts/x" is absolute; write it relative to the repository root')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    helm:\n      chart: charts/{app}\n",
     [(9, 'apps[0].helm.chart: "charts/{app}": placeholders are not expanded here')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    helm:\n      values:\n        - values.yaml\n"
     "        - ../../../../secrets.yaml\n",
     [(11, 'apps[0].helm.values[1]: "../../../../secrets.yaml" escapes the repository')]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    helm:\n      values: values.yaml\n",
     [(9, "apps[0].helm.values: expected a list, got string")]),
    (BASE_ENVS + "apps:\n  - path: a/{app}/{env}\n    helm: {chrat: x}\n",
     [(8, 'apps[0].helm: unknown key "chrat" (did you mean "chart"?)')]),
    (BASE_ENVS + "apps:\n  path: a/{env}\n", [(6, "apps: expected a list, got map")]),
    (BASE_ENVS + "images:\n  - repository: nginx:1.27\n",
     [(7, 'images[0].repository: "nginx:1.27" carries a tag; write the repository alone')]),
    (BASE_ENVS + "images:\n  - repository: ghcr.io/acme/app@sha256:" + "a" * 64 + "\n",
     [(7, "images[0].repository: \"ghcr.io/acme/app@sha256:" + "a" * 64 + "\" carries a digest")]),
    (BASE_ENVS + "images:\n  - repository: ghcr.io/Acme/App\n",
     [(7, "images[0].repository: not a valid image repository: ")]),
    (BASE_ENVS + "images:\n  - land_in: dev\n", [(7, 'images[0]: missing required key "repository"')]),
    (BASE_ENVS + "images:\n  - repository: acme/app\n    land_in: qa\n",
     [(8, 'images[0].land_in: "qa" names no environment (known: dev, prod)')]),
    (BASE_ENVS + "images:\n  - repository: acme/app\n    tags: '^v[0-9+$'\n",
     [(8, "images[0].tags: \"^v[0-9+$\" is not a valid regular expression: unterminated character set")]),
    (BASE_ENVS + "images:\n  - repository: acme/app\n    policy: latest\n",
     [(8, 'images[0].policy: "latest" is not one of pushed, semver')]),
    (BASE_ENVS + "images:\n  - repository: acme/app\n    digest: 1\n",
     [(8, "images[0].digest: expected a boolean, got integer")]),
    (BASE_ENVS + "images:\n  - repository: acme/app\n    tag: v1\n",
     [(8, 'images[0]: unknown key "tag" (did you mean "tags"?)')]),
    (BASE_ENVS + "images:\n  - repository: nginx\n  - repository: docker.io/library/nginx\n",
     [(8, 'images[1].repository: "docker.io/library/nginx" is already listed (images[0])')]),
    (BASE_ENVS + "preview:\n  environment: qa\n  url: https://x\n",
     [(7, 'preview.environment: "qa" names no environment (known: dev, prod)')]),
    (BASE_ENVS + "preview:\n  url: ftp://x\n",
     [(7, 'preview.url: "ftp://x" is not an http:// or https:// URL')]),
    (BASE_ENVS + "preview:\n  env: dev\n",
     [(7, 'preview: unknown key "env" (known keys: environment, url)')]),
    (BASE_ENVS + "preview: [dev]\n", [(6, "preview: expected a map, got list")]),
    (BASE_ENVS + "diff:\n  ignore: metadata.labels\n", [(7, "diff.ignore: expected a list, got string")]),
    (BASE_ENVS + "diff:\n  ignore:\n    - a.b\n    - 3\n",
     [(9, "diff.ignore[1]: expected a string, got integer")]),
    (BASE_ENVS + "diff:\n  ignored: [a]\n", [(7, 'diff: unknown key "ignored" (did you mean "ignore"?)')]),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_each_error_names_its_line(text: str, expected: list[tuple[int, str]]) -> None:
    errors = errors_of(text)
    assert len(errors) == len(expected), errors
    for got, (line, message) in zip(errors, expected, strict=True):
        assert got.startswith(f".prbot.yml:{line}: {message}"), got


def test_several_errors_are_reported_at_once_in_line_order() -> None:
    errors = errors_of("""
        version: 1
        environments:
          - name: dev
            auto_merge: "no"
          - name: prod
            clustr: prod
        apps:
          - path: "/abs/{app}/{env}"
        images:
          - repository: acme/app:latest
            land_in: qa
            policy: newest
        diff:
          ignore: [1]
    """)
    assert [e.split(": ", 2)[:2] for e in errors] == [
        [".prbot.yml:4", "environments[0].auto_merge"],
        [".prbot.yml:6", "environments[1]"],
        [".prbot.yml:8", "apps[0].path"],
        [".prbot.yml:10", "images[0].repository"],
        [".prbot.yml:11", "images[0].land_in"],
        [".prbot.yml:12", "images[0].policy"],
        [".prbot.yml:14", "diff.ignore[0]"],
    ]


def test_config_error_is_one_line_prbot_error() -> None:
    with pytest.raises(PrbotError) as info:
        load_config("version: 3\nenvironments: []\nextra: 1\n")
    err = info.value
    assert isinstance(err, ConfigError) and len(err.errors) == 3
    assert str(err) == (".prbot.yml:1: version: unsupported version 3 (this prbot reads version 1)"
                        " (and 2 more)")
    assert "\n" not in str(err)


@pytest.mark.parametrize(("text", "line", "message"), [
    ("version: 1\nenvironments:\n  - name: dev\n   cluster: x\n", 4, "invalid YAML: "),
    ("version: 1\nenvironments: [{name: dev}\n", 3, "invalid YAML: "),
    ("version: 1\nversion: 1\nenvironments: [{name: dev}]\n", 2,
     'invalid YAML: found duplicate key "version"'),
    ("version: 1\nenvironments:\n\t- name: dev\n", 3, "invalid YAML: found character '\\t'"),
    ("---\nversion: 1\n---\nversion: 1\n", 3, "invalid YAML: "),
    ("", 1, "the file is empty"),
    ("# only a comment\n", 1, "the file is empty"),
    ("- version: 1\n", 1, "expected a map, got list"),
])
def test_broken_yaml_is_one_error_with_its_line(text: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert len(info.value.errors) == 1
    assert info.value.errors[0].startswith(f".prbot.yml:{line}: {message}"), info.value.errors


def test_python_tags_are_never_constructed(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-yaml"
    text = (f"version: !!python/object/apply:builtins.open [{str(marker)!r}, 'w']\n"
            "environments: [{name: dev}]\n")
    with pytest.raises(ConfigError) as info:
        load_config(text)
    assert not marker.exists()
    assert info.value.errors == [
        ".prbot.yml:1: version: expected an integer, got a value tagged !!python/object/apply:builtins.open"]


def test_custom_filename_is_used_in_messages() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("version: 1\n", filename="ops/prbot.yml")
    assert info.value.errors == ['ops/prbot.yml:1: missing required key "environments"']


# -- files on disk ------------------------------------------------------------------------------------


def test_load_config_file_names_the_file_relative_to_the_repo(tmp_path: Path) -> None:
    path = write(tmp_path / "deep" / "repo", ".prbot.yml", "version: 1\nenvironments:\n  - name: Prod\n")
    with pytest.raises(ConfigError) as info:
        load_config_file(path)
    assert info.value.errors == [
        '.prbot.yml:3: environments[0].name: "Prod" is not a valid environment name '
        "(lowercase letters, digits and '-', at most 63 characters)"]


def test_load_config_file_other_name_keeps_the_given_path(tmp_path: Path) -> None:
    path = write(tmp_path, "custom.yml", "version: 1\n")
    with pytest.raises(ConfigError, match=r"custom\.yml:1: missing required key"):
        load_config_file(path)


def test_load_config_file_missing_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_file(tmp_path / ".prbot.yml")
    assert info.value.errors == [
        ".prbot.yml: no such file (a GitOps repository needs a .prbot.yml at its root)"]


def test_check_config_missing_file_is_one_error_naming_the_path(tmp_path: Path) -> None:
    assert check_config(tmp_path) == [
        f"{tmp_path}/.prbot.yml: no such file (a GitOps repository needs a .prbot.yml at its root)"]
    assert check_config(tmp_path / "missing") == [
        f"{tmp_path}/missing: no such directory (--repo names the GitOps repository's working tree)"]


def test_check_config_unreadable_content(tmp_path: Path) -> None:
    (tmp_path / ".prbot.yml").write_bytes(b"version: 1\nenvironments: [{name: \xff}]\n")
    [error] = check_config(tmp_path)
    assert error.startswith(".prbot.yml: not UTF-8 text")
    (tmp_path / ".prbot.yml").unlink()
    (tmp_path / ".prbot.yml").mkdir()
    assert check_config(tmp_path) == [".prbot.yml: is a directory, not a file"]


def test_check_config_lists_every_error(tmp_path: Path) -> None:
    write(tmp_path, ".prbot.yml", "version: 1\nenvironments:\n  - name: dev\n    auto_merge: 1\n"
                                  "images:\n  - repository: a/b\n    land_in: prod\n")
    assert check_config(tmp_path) == [
        ".prbot.yml:4: environments[0].auto_merge: expected a boolean, got integer",
        '.prbot.yml:7: images[0].land_in: "prod" names no environment (known: dev)',
    ]


def test_check_config_finds_a_missing_chart(example_repo: Path) -> None:
    text = (example_repo / ".prbot.yml").read_text().replace("charts/billing", "charts/payments")
    write(example_repo, ".prbot.yml", text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "charts/payments" in t)
    assert check_config(example_repo) == [
        f".prbot.yml:{line}: apps[1].helm.chart: charts/payments: no such directory in the repository"]
    write(example_repo, "charts/payments/values.yaml", "{}\n")
    assert check_config(example_repo) == [
        f".prbot.yml:{line}: apps[1].helm.chart: charts/payments: no Chart.yaml in that directory"]


# -- the JSON Schema -----------------------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema_with_descriptions() -> None:
    schema = config_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    missing = [loc for loc, node in _schema_properties(schema) if "description" not in node]
    assert missing == []


@pytest.mark.parametrize("text", [(EXAMPLE / ".prbot.yml").read_text(), doc(MAXIMAL)],
                         ids=["example", "maximal"])
def test_valid_configs_pass_schema_and_loader(text: str) -> None:
    assert schema_errors(text) == []
    load_config(text)


INVALID: dict[str, str] = {
    "unknown top key": BASE_ENVS + "colour: blue\n",
    "unknown environment key": "version: 1\nenvironments: [{name: dev, clustr: x}]\n",
    "unknown app key": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', chart: x}]\n",
    "unknown sync key": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', sync: {argo: {application: x}}}]\n",
    "unknown argocd key": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', "
                                      "sync: {argocd: {application: x, p: 1}}}]\n",
    "unknown flux key": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', sync: {flux: {kind: Kustomization, "
                                    "name: x, interval: 1m}}}]\n",
    "unknown apply key": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', sync: {apply: {force: true}}}]\n",
    "unknown helm key": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', helm: {release: x}}]\n",
    "unknown image key": BASE_ENVS + "images: [{repository: a/b, tag: v1}]\n",
    "unknown preview key": BASE_ENVS + "preview: {env: dev}\n",
    "unknown diff key": BASE_ENVS + "diff: {ignored: [a]}\n",
    "unknown render key": BASE_ENVS + "render: {remotes: [https://github.com/]}\n",
    "render remote not a URL": BASE_ENVS + "render: {remote: [github.com/acme]}\n",
    "render remote http": BASE_ENVS + "render: {remote: ['http://github.com/']}\n",
    "render repository not a git URL": BASE_ENVS + "render: {repository: [acme/gitops]}\n",
    "version string": "version: '1'\nenvironments: [{name: dev}]\n",
    "version 2": "version: 2\nenvironments: [{name: dev}]\n",
    "no environments": "version: 1\n",
    "empty environments": "version: 1\nenvironments: []\n",
    "environment without name": "version: 1\nenvironments: [{cluster: x}]\n",
    "bad environment name": "version: 1\nenvironments: [{name: Prod}]\n",
    "auto_merge string": "version: 1\nenvironments: [{name: dev, auto_merge: 'yes'}]\n",
    "kubernetes_version number": "version: 1\nenvironments: [{name: dev, kubernetes_version: 1.33}]\n",
    "kubernetes_version shape": "version: 1\nenvironments: [{name: dev, kubernetes_version: 'v1.33'}]\n",
    "deployers string": "version: 1\nenvironments: [{name: dev, deployers: alice}]\n",
    "deployer with space": "version: 1\nenvironments: [{name: dev, deployers: ['a b']}]\n",
    "apps map": BASE_ENVS + "apps: {path: 'a/{env}'}\n",
    "path missing": BASE_ENVS + "apps: [{name: x}]\n",
    "path integer": BASE_ENVS + "apps: [{path: 3, name: x}]\n",
    "path absolute": BASE_ENVS + "apps: [{path: '/a/{app}/{env}'}]\n",
    "path escapes": BASE_ENVS + "apps: [{path: '../a/{app}/{env}'}]\n",
    "environments empty": BASE_ENVS + "apps: [{path: 'a/{app}', environments: []}]\n",
    "path unknown placeholder": BASE_ENVS + "apps: [{path: 'a/{app}/{stage}/{env}'}]\n",
    "name missing": BASE_ENVS + "apps: [{path: 'a/{env}'}]\n",
    "name with app": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', name: x}]\n",
    "namespace invalid": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', namespace: 'A_{env}'}]\n",
    "sync empty": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', sync: {}}]\n",
    "sync two kinds": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', "
                                  "sync: {apply: {}, argocd: {application: x}}}]\n",
    "argocd without application": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', sync: {argocd: {}}}]\n",
    "flux bad kind": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', sync: {flux: {kind: Helm, name: x}}}]\n",
    "flux without name": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', sync: {flux: {kind: Kustomization}}}]\n",
    "prune string": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', sync: {apply: {prune: 'yes'}}}]\n",
    "helm list": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', helm: [x]}]\n",
    "chart absolute": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', helm: {chart: /x}}]\n",
    "values string": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', helm: {values: v.yaml}}]\n",
    "values absolute": BASE_ENVS + "apps: [{path: 'a/{app}/{env}', helm: {values: [/v.yaml]}}]\n",
    "images map": BASE_ENVS + "images: {repository: a/b}\n",
    "repository missing": BASE_ENVS + "images: [{policy: semver}]\n",
    "repository with tag": BASE_ENVS + "images: [{repository: 'nginx:1.27'}]\n",
    "repository upper case": BASE_ENVS + "images: [{repository: 'ghcr.io/Acme/app'}]\n",
    "land_in invalid": BASE_ENVS + "images: [{repository: a/b, land_in: Dev}]\n",
    "tags empty": BASE_ENVS + "images: [{repository: a/b, tags: ''}]\n",
    "tags list": BASE_ENVS + "images: [{repository: a/b, tags: [v1]}]\n",
    "policy enum": BASE_ENVS + "images: [{repository: a/b, policy: latest}]\n",
    "digest integer": BASE_ENVS + "images: [{repository: a/b, digest: 1}]\n",
    "preview list": BASE_ENVS + "preview: [dev]\n",
    "preview url scheme": BASE_ENVS + "preview: {url: 'ftp://x'}\n",
    "diff list": BASE_ENVS + "diff: [a]\n",
    "ignore string": BASE_ENVS + "diff: {ignore: a.b}\n",
    "ignore item integer": BASE_ENVS + "diff: {ignore: [1]}\n",
    "ignore item empty": BASE_ENVS + "diff: {ignore: ['']}\n",
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_documents_fail_schema_and_loader(name: str) -> None:
    text = doc(INVALID[name])
    assert schema_errors(text), f"the schema accepts: {name}"
    with pytest.raises(ConfigError):
        load_config(text)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        target = schema["$defs"][ref.removeprefix("#/$defs/")]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _schema_properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every property of every object in the schema, as (location, resolved node)."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(node: dict[str, Any], loc: str) -> None:
        node = _resolve(schema, node)
        for key, sub in node.get("properties", {}).items():
            where = f"{loc}.{key}" if loc else key
            found.append((where, _resolve(schema, sub)))
            walk(sub, where)
        if "items" in node:
            walk(node["items"], f"{loc}[]")

    walk(schema, "")
    return found


def _schema_key_sets(schema: dict[str, Any]) -> dict[str, frozenset[str]]:
    keys: dict[str, frozenset[str]] = {}

    def walk(node: dict[str, Any], loc: str) -> None:
        node = _resolve(schema, node)
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{loc or 'top level'} allows unknown keys"
            keys[loc] = frozenset(node["properties"])
            for key, sub in node["properties"].items():
                walk(sub, f"{loc}.{key}" if loc else key)
        if "items" in node:
            walk(node["items"], f"{loc}[]")

    walk(schema, "")
    return keys


def test_schema_and_loader_know_the_same_keys_at_every_level() -> None:
    assert _schema_key_sets(config_schema()) == KNOWN_KEYS


def test_every_known_key_is_rejected_with_a_suggestion_when_misspelled() -> None:
    # Misspell each key of each level inside the maximal config: the loader names it and suggests
    # the right one, and the schema rejects it too.
    def maps_at(node: Any, loc: str) -> list[Any]:
        """Every map of `node` at location `loc` ("apps[].sync" -> the sync map of each app)."""
        found = [node]
        for part in filter(None, loc.replace("[]", ".[]").split(".")):
            if part == "[]":
                found = [item for seq in found for item in seq]
            else:
                found = [m[part] for m in found
                         if isinstance(m, dict) and isinstance(m.get(part), dict | list)]
        return found

    for loc, known in KNOWN_KEYS.items():
        for key in sorted(known):
            config = YAML(typ="rt").load(doc(MAXIMAL))
            node = next((m for m in maps_at(config, loc) if key in m), None)
            assert node is not None, f"MAXIMAL lacks {loc}.{key}"
            typo = key[:-1] + key[-1].upper()
            node[typo] = node.pop(key)
            text = _dump(config)
            with pytest.raises(ConfigError) as info:
                load_config(text)
            assert any(f'unknown key "{typo}" (did you mean "{key}"?)' in e for e in info.value.errors), \
                (loc, key, info.value.errors)
            assert schema_errors(text), (loc, key)


def _dump(data: Any) -> str:
    out = io.StringIO()
    YAML(typ="rt").dump(data, out)
    return out.getvalue()


# -- nothing but ConfigError, whatever the input ---------------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=20),
                    st.sampled_from(["dev", "a/{env}", "{app}", "../x", "1.33", "nginx"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_config_errors(text: str) -> None:
    try:
        load_config(text)
    except ConfigError as e:
        assert e.errors and all(line.startswith(".prbot.yml:") and "\n" not in line for line in e.errors)


_MAXIMAL_TREE = YAML(typ="rt").load(doc(MAXIMAL))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_value_anywhere_gives_a_config_or_config_errors(data: st.DataObject) -> None:
    config = copy.deepcopy(_MAXIMAL_TREE)
    # replace one value somewhere in the maximal config with an arbitrary one
    node: Any = config
    while True:
        keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = data.draw(st.sampled_from(keys))
        child = node[key]
        if not isinstance(child, dict | list) or data.draw(st.booleans()):
            node[key] = data.draw(VALUES)
            break
        node = child
    text = _dump(config)
    try:
        load_config(text)
    except ConfigError as e:
        assert e.errors and all(line.startswith(".prbot.yml:") and "\n" not in line for line in e.errors)

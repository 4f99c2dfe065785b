"""`.prbot.yml` layouts users have (issue 17): optional values files, environment names that differ
per app, excluded directories, one path for several environments, directories no renderer takes,
kustomize's load restrictor — each seen as the user sees it: the CLI's output and exit code, and the
comment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import commit_all, init_repo, write

from prbot.cli import main
from prbot.diff import ObjectChange
from prbot.plan import Plan, TargetPlan
from prbot.report import render_comment, render_json

ENVS = """version: 1
environments: [{name: dev}, {name: staging}, {name: prod}]
"""
CHART = "apiVersion: v2\nname: api\nversion: 0.1.0\n"
TEMPLATE = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: api\ndata:\n"
            "  replicas: {{ .Values.replicas | quote }}\n")
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: \"1\"\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def plan_json(capsys: pytest.CaptureFixture[str], repo: Path, base: str, head: str = "HEAD",
              *extra: str) -> tuple[int, dict[tuple[str, str], dict[str, object]], str]:
    code, out, err = run(capsys, "plan", "--repo", str(repo), "--base", base, "--head", head, "--no-cluster",
                         "--format", "json", *extra)
    data = json.loads(out) if out else {"targets": []}
    return code, {(t["app"], t["env"]): t for t in data["targets"]}, err


# -- optional values files ------------------------------------------------------------------------

OPTIONAL = ENVS + """apps:
  - name: api
    path: "charts/api"
    helm:
      chart: "charts/api"
      values: ["values.yaml", {file: "../../env-values/{env}.yaml", optional: true}]
"""


def chart_repo(root: Path, config: str) -> Path:
    repo = init_repo(root / "repo")
    write(repo, ".prbot.yml", config)
    write(repo, "charts/api/Chart.yaml", CHART)
    write(repo, "charts/api/templates/cm.yaml", TEMPLATE)
    write(repo, "charts/api/values.yaml", "replicas: 1\n")
    write(repo, "env-values/prod.yaml", "replicas: 5\n")              # only prod has its own file
    return repo


def test_an_optional_values_file_is_used_where_present_and_its_appearing_affects_the_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = chart_repo(tmp_path, OPTIONAL)
    code, out, err = run(capsys, "check-config", "--repo", str(repo))
    assert (code, out, err) == (0, ".prbot.yml: ok\n", "")
    code, out, err = run(capsys, "targets", "--repo", str(repo), "--format", "json")
    assert (code, err) == (0, "")
    assert [(t["env"], t["values"]) for t in json.loads(out)] == [
        ("dev", ["charts/api/values.yaml", "charts/api/../../env-values/dev.yaml"]),
        ("staging", ["charts/api/values.yaml", "charts/api/../../env-values/staging.yaml"]),
        ("prod", ["charts/api/values.yaml", "charts/api/../../env-values/prod.yaml"])]
    code, out, err = run(capsys, "targets", "--repo", str(repo), "--env", "dev")
    assert (code, err) == (0, "") and out.splitlines()[1].endswith(
        "(chart charts/api; values charts/api/values.yaml, charts/api/../../env-values/dev.yaml (if present))")
    base = commit_all(repo, "base")
    write(repo, "env-values/dev.yaml", "replicas: 2\n")               # dev gets its own file
    head = commit_all(repo, "dev values")
    code, targets, err = plan_json(capsys, repo, base, head)
    assert code == 0, err
    dev = targets[("api", "dev")]
    assert dev["status"] == "changed"
    assert "+  replicas: '2'" in dev["changes"][0]["diff"]
    assert ("api", "staging") not in targets and ("api", "prod") not in targets   # not affected
    # the file going away again renders dev without it
    (repo / "env-values/dev.yaml").unlink()
    back = commit_all(repo, "dev values gone")
    code, targets, err = plan_json(capsys, repo, head, back)
    assert code == 0 and targets[("api", "dev")]["status"] == "changed"
    assert "+  replicas: '1'" in targets[("api", "dev")]["changes"][0]["diff"]


def test_a_missing_values_file_not_marked_optional_still_fails_its_target(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = chart_repo(tmp_path, OPTIONAL.replace('{file: "../../env-values/{env}.yaml", optional: true}',
                                                 '"../../env-values/{env}.yaml"'))
    base = commit_all(repo, "base")
    write(repo, "charts/api/values.yaml", "replicas: 3\n")
    head = commit_all(repo, "head")
    code, targets, _ = plan_json(capsys, repo, base, head)
    assert code == 1
    assert targets[("api", "dev")]["status"] == "error"
    assert "env-values/dev.yaml: no such file" in str(targets[("api", "dev")]["error"])
    assert targets[("api", "prod")]["status"] == "unchanged"          # prod's own file sets replicas


def test_ignore_missing_values_makes_every_values_file_optional(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = chart_repo(tmp_path, OPTIONAL.replace('{file: "../../env-values/{env}.yaml", optional: true}]',
                                                 '"../../env-values/{env}.yaml"]\n      ignore_missing_values: true'))
    base = commit_all(repo, "base")
    write(repo, "charts/api/values.yaml", "replicas: 3\n")
    head = commit_all(repo, "head")
    code, targets, err = plan_json(capsys, repo, base, head)
    assert code == 0, err
    assert {k: t["status"] for k, t in targets.items()} == {
        ("api", "dev"): "changed", ("api", "staging"): "changed", ("api", "prod"): "unchanged"}


@pytest.mark.parametrize("file", ["../../../etc/passwd", "/etc/passwd", "link.yaml"])
def test_attack_an_optional_values_file_outside_the_repository_is_still_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], file: str) -> None:
    """Attack: optional never means "read it if you can": a values file leading out of the
    repository fails the target, whether it exists out there or not."""
    repo = chart_repo(tmp_path, OPTIONAL.replace('"../../env-values/{env}.yaml"', json.dumps(file)))
    secret = write(tmp_path, "secret.yaml", "replicas: 666\n")
    base = commit_all(repo, "base")
    if file == "link.yaml":
        (repo / "charts/api/link.yaml").symlink_to(secret)
    write(repo, "charts/api/values.yaml", "replicas: 3\n")
    head = commit_all(repo, "head")
    code, targets, _ = plan_json(capsys, repo, base, head)
    assert code == 2 if file.startswith(("/", "..")) else code == 1
    if code == 1:                   # the link: its target fails naming it, nothing is read
        t = targets[("api", "dev")]
        assert t["status"] == "error" and "outside the repository" in str(t["error"])
        assert "666" not in json.dumps(list(targets.values()))


# -- environment names per app, one path for several environments ---------------------------------

def test_env_names_map_an_environment_to_the_directory_word_of_one_app(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = init_repo(tmp_path / "repo")
    config = ENVS + """apps:
  - path: "overlays/{env}"
    name: web
    namespace: "web-{env}"
    env_names: {prod: production}
    sync:
      argocd: {application: "web-{env}"}
  - path: "billing/{env}"
    name: billing
"""
    write(repo, ".prbot.yml", config)
    for env in ("dev", "staging", "production", "prod"):
        write(repo, f"overlays/{env}/cm.yaml", CM.format(name=f"web-{env}"))
    for env in ("dev", "prod"):
        write(repo, f"billing/{env}/cm.yaml", CM.format(name=f"billing-{env}"))
    code, out, err = run(capsys, "targets", "--repo", str(repo), "--format", "json")
    assert (code, err) == (0, "")
    got = [(t["app"], t["env"], t["path"], t["namespace"]) for t in json.loads(out)]
    assert got == [("billing", "dev", "billing/dev", None), ("web", "dev", "overlays/dev", "web-dev"),
                   ("web", "staging", "overlays/staging", "web-staging"),
                   ("billing", "prod", "billing/prod", None),          # billing keeps the plain name
                   ("web", "prod", "overlays/production", "web-production")]
    # a typo in the map names the file and line
    write(repo, ".prbot.yml", config.replace("{prod: production}", "{prd: production}"))
    code, _, err = run(capsys, "check-config", "--repo", str(repo))
    assert code == 2
    assert err == (f'.prbot.yml:{line_of(config, "env_names")}: apps[0].env_names: "prd" names no environment '
                   "(known: dev, staging, prod)\n")
    # two environments standing for one directory is ambiguous
    write(repo, ".prbot.yml", config.replace("{prod: production}", "{prod: staging}"))
    code, _, err = run(capsys, "check-config", "--repo", str(repo))
    assert code == 2 and 'environments "staging" and "prod" both stand for "staging" in {env}' in err


def test_one_path_for_different_environments_is_allowed_when_their_environments_do_not_overlap(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = init_repo(tmp_path / "repo")
    config = ENVS + """apps:
  - path: "k8s"
    name: web-small
    environments: [dev, staging]
  - path: "k8s"
    name: web-big
    environments: [prod]
"""
    write(repo, ".prbot.yml", config)
    write(repo, "k8s/cm.yaml", CM.format(name="web"))
    code, out, err = run(capsys, "targets", "--repo", str(repo))
    assert (code, err) == (0, "")
    assert [ln.split()[:2] for ln in out.splitlines()[1:]] == [["dev", "web-small"], ["staging", "web-small"],
                                                              ["prod", "web-big"]]
    overlapping = config.replace("environments: [prod]", "environments: [staging, prod]")
    write(repo, ".prbot.yml", overlapping)
    code, out, err = run(capsys, "check-config", "--repo", str(repo))
    assert (code, out) == (2, "")
    second = [i for i, ln in enumerate(overlapping.splitlines(), 1) if 'path: "k8s"' in ln][1]
    assert err == (f".prbot.yml:{second}: apps[1].path: same path as apps[0] in environment(s) staging "
                   "(give each an `environments` list without overlap)\n")


# -- exclude ---------------------------------------------------------------------------------------

def test_exclude_globs_remove_directories_from_an_app_pattern(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    repo = init_repo(tmp_path / "repo")
    config = ENVS + """apps:
  - path: "apps/{app}/{env}"
    exclude: ["apps/legacy-*", "apps/*/staging", "apps/jsonnet"]
"""
    write(repo, ".prbot.yml", config)
    for app in ("web", "legacy-a", "legacy-b"):
        for env in ("dev", "staging"):
            write(repo, f"apps/{app}/{env}/cm.yaml", CM.format(name=app))
    write(repo, "apps/jsonnet/dev/main.jsonnet", "{}\n")        # excluded: no renderer needed
    code, out, err = run(capsys, "targets", "--repo", str(repo))
    assert (code, err) == (0, "")
    assert [ln.split()[:2] for ln in out.splitlines()[1:]] == [["dev", "web"]]
    # excluding everything is the same error as a pattern matching nothing, and says why
    write(repo, ".prbot.yml", config.replace('"apps/jsonnet"]', '"apps/jsonnet", "apps/**/dev"]'))
    code, _, err = run(capsys, "check-config", "--repo", str(repo))
    assert code == 2
    assert err.startswith(f'.prbot.yml:{line_of(config, "path:")}: apps[0].path: "apps/{{app}}/{{env}}" matches '
                          "no directory in any environment (the exclude globs leave none)")


# -- what no renderer takes; what check-config, targets and plan all refuse ------------------------

def jsonnet_repo(root: Path) -> tuple[Path, str]:
    repo = init_repo(root / "repo")
    config = ENVS + """apps:
  - path: "apps/{app}/{env}"
"""
    write(repo, ".prbot.yml", config)
    write(repo, "apps/web/dev/cm.yaml", CM.format(name="web"))
    write(repo, "apps/docs/dev/README.md", "only words\n")             # no target, no error
    write(repo, "apps/docs/dev/.gitkeep", "")
    return repo, config


def test_a_configured_directory_no_renderer_takes_is_an_error_in_check_config_targets_and_plan(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, config = jsonnet_repo(tmp_path)
    base = commit_all(repo, "base")
    code, out, err = run(capsys, "check-config", "--repo", str(repo))
    assert (code, out, err) == (0, ".prbot.yml: ok\n", "")
    write(repo, "apps/dash/dev/main.jsonnet", "{}\n")
    write(repo, "apps/dash/dev/lib.libsonnet", "{}\n")
    head = commit_all(repo, "jsonnet")
    line = line_of(config, "path:")
    expected = (f".prbot.yml:{line}: apps[0].path: apps/dash/dev: no renderer takes this directory (it holds "
                "lib.libsonnet, main.jsonnet; prbot renders kustomize, Helm and plain manifests): exclude it "
                "or render it to manifests")
    code, out, err = run(capsys, "check-config", "--repo", str(repo))
    assert (code, out, err) == (2, "", expected + "\n")
    code, out, err = run(capsys, "targets", "--repo", str(repo))
    assert code == 2 and err == expected + "\n" and out.splitlines()[1].split()[:2] == ["dev", "web"]
    code, out, err = run(capsys, "plan", "--repo", str(repo), "--base", base, "--head", head, "--no-cluster")
    assert (code, out) == (2, "") and err == f"prbot: error: {expected}\n"


def test_an_app_matched_twice_fails_check_config_as_targets_and_plan_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = init_repo(tmp_path / "repo")
    config = ENVS + """apps:
  - path: "apps/{app}/{env}"
  - path: "web/{env}"
    name: web
"""
    write(repo, ".prbot.yml", config)
    write(repo, "apps/web/dev/cm.yaml", CM.format(name="a"))
    write(repo, "web/dev/cm.yaml", CM.format(name="b"))
    base = commit_all(repo, "base")
    first, second = line_of(config, "apps/{app}"), line_of(config, '"web/{env}"')
    expected = (f".prbot.yml:{second}: apps[1].path: app 'web' in environment 'dev' is matched twice: apps/web/dev "
                f"(apps[0], line {first}) and web/dev (apps[1]); give one an `exclude` or a fixed `name`")
    code, out, err = run(capsys, "check-config", "--repo", str(repo))
    assert (code, out, err) == (2, "", expected + "\n")
    code, out, err = run(capsys, "targets", "--repo", str(repo))          # the first match is listed
    assert (code, err) == (2, expected + "\n") and out.splitlines()[1:] == ["dev  web  plain     apps/web/dev"]
    code, out, err = run(capsys, "plan", "--repo", str(repo), "--base", base, "--head", base, "--no-cluster")
    assert (code, out) == (2, "") and err == f"prbot: error: {expected}\n"


def test_config_given_with_config_is_named_in_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, config = jsonnet_repo(tmp_path)
    write(repo, "apps/dash/dev/main.jsonnet", "{}\n")
    base = commit_all(repo, "base")
    other = write(tmp_path, "reviewed/.prbot.yml", config)
    line = line_of(config, "path:")
    for argv in (("check-config",), ("targets",), ("plan", "--base", base, "--no-cluster")):
        code, _, err = run(capsys, *argv, "--repo", str(repo), "--config", str(other))
        assert code == 2 and err.replace("prbot: error: ", "").startswith(f"{other}:{line}: apps[0].path: "), argv
    write(other.parent, ".prbot.yml", config + "bogus: 1\n")
    for argv in (("check-config",), ("targets",), ("plan", "--base", base, "--no-cluster")):
        code, _, err = run(capsys, *argv, "--repo", str(repo), "--config", str(other))
        assert code == 2 and f'{other}:{len(config.splitlines()) + 1}: unknown key "bogus"' in err, (argv, err)
        assert ".prbot.yml:" not in err.replace(str(other), "")


# -- kustomize's load restrictor -------------------------------------------------------------------

def restrictor_repo(root: Path, restrictor: str | None, resource: str) -> Path:
    repo = init_repo(root / "repo")
    extra = f"\n    kustomize: {{load_restrictor: {restrictor}}}" if restrictor else ""
    write(repo, ".prbot.yml", ENVS + f'apps:\n  - path: "apps/{{app}}/{{env}}"{extra}\n')
    write(repo, "apps/web/dev/kustomization.yaml", f"resources:\n  - {resource}\n")
    write(repo, "common/cm.yaml", CM.format(name="shared"))
    return repo


@pytest.mark.parametrize("restrictor", [None, "root_only", "none"])
def test_load_restrictor_none_reads_files_above_the_kustomization_inside_the_repository(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], restrictor: str | None) -> None:
    repo = restrictor_repo(tmp_path, restrictor, "../../../common/cm.yaml")
    base = commit_all(repo, "base")
    write(repo, "common/cm.yaml", CM.format(name="shared").replace('"1"', '"2"'))
    head = commit_all(repo, "common changes")
    code, targets, _ = plan_json(capsys, repo, base, head)
    web = targets[("web", "dev")]          # the closure follows the file above the root: affected
    if restrictor == "none":
        assert code == 0 and web["status"] == "changed" and "+  a: '2'" in web["changes"][0]["diff"]
    else:
        assert code == 1 and web["status"] == "error" and "is not in or below" in str(web["error"])
    # a bad value is a FILE:LINE error
    write(repo, ".prbot.yml", ENVS + 'apps:\n  - path: "apps/{app}/{env}"\n    kustomize: {load_restrictor: off}\n')
    code, _, err = run(capsys, "check-config", "--repo", str(repo))
    assert code == 2 and err == ('.prbot.yml:5: apps[0].kustomize.load_restrictor: "off" is not one of '
                                 "root_only, none\n")


@pytest.mark.parametrize("resource", ["../../../../../../../../etc/passwd", "/etc/passwd", "link.yaml"])
def test_attack_load_restrictor_none_still_reads_nothing_outside_the_repository(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], resource: str) -> None:
    """Attack: with LoadRestrictionsNone a kustomization naming a file outside the repository — by
    `..`, by an absolute path, through a symbolic link — fails its target, nothing of it shown."""
    repo = restrictor_repo(tmp_path, "none", resource)
    secret = write(tmp_path, "host-secret.yaml", CM.format(name="host").replace('"1"', '"CANARY-7f3"'))
    if resource == "link.yaml":
        (repo / "apps/web/dev/link.yaml").symlink_to(secret)
    base = commit_all(repo, "base")
    write(repo, "apps/web/dev/kustomization.yaml", f"resources:\n  - {resource}\nnamePrefix: x-\n")
    head = commit_all(repo, "head")
    code, targets, err = plan_json(capsys, repo, base, head)
    web = targets[("web", "dev")]
    assert code == 1 and web["status"] == "error", web
    assert "outside the repository" in str(web["error"]) or "leaves the repository" in str(web["error"])
    assert "CANARY" not in json.dumps(web) and "root:" not in json.dumps(web) and "CANARY" not in err


# -- identical changes across environments shown once ----------------------------------------------

def same_change(env: str, diff: str = "-  v: 1\n+  v: 2\n", app: str = "api") -> TargetPlan:
    return TargetPlan(app=app, env=env, path=f"charts/{app}", renderer="helm", status="changed",
                      changes=[ObjectChange("", "ConfigMap", "shared", app, "changed", diff)])


def test_identical_changes_across_environments_are_shown_once_under_their_environments() -> None:
    plan = Plan(base="a" * 40, head="b" * 40, targets=[
        same_change("dev"), same_change("staging"), same_change("prod"),
        same_change("qa", "-  v: 1\n+  v: 3\n"), same_change("dev", app="web")])
    [body] = render_comment(plan, max_parts=None).parts
    assert "**4 environments change**" in body
    # every target keeps its row in the table
    assert sum(1 for ln in body.splitlines() if ln.startswith("| ") and " | api | " in ln) == 4
    # one section, one diff for the three identical ones; qa's own diff and web on their own
    assert body.count("+  v: 2") == 2          # api (dev, staging, prod) once, web/dev once
    assert body.count("+  v: 3") == 1
    assert ("<summary>✅ <b>dev, staging, prod</b> · api · <code>charts/api</code> · helm · +0 ~1 -0 · "
            "the same in 3 environments</summary>") in body
    assert "<summary>✅ <b>qa</b> · api · <code>charts/api</code>" in body
    # JSON stays per target
    data = json.loads(render_json(plan))
    assert [(t["app"], t["env"]) for t in data["targets"]] == [("api", "dev"), ("api", "staging"), ("api", "prod"),
                                                              ("api", "qa"), ("web", "dev")]


def test_failed_targets_are_never_grouped() -> None:
    failed = [TargetPlan(app="api", env=env, path="charts/api", renderer="helm", status="error", error="boom")
              for env in ("dev", "prod")]
    plan = Plan(base="a" * 40, head="b" * 40, targets=failed)
    [body] = render_comment(plan, max_parts=None).parts
    assert body.count("<summary>❌") == 2 and "the same in" not in body


def test_attack_grouped_environment_names_are_escaped_in_the_heading() -> None:
    """Attack: what reaches the group's heading is HTML-escaped like any summary."""
    plan = Plan(base="a" * 40, head="b" * 40, targets=[same_change("dev", app="<img src=x>"),
                                                       same_change("prod", app="<img src=x>")])
    [body] = render_comment(plan, max_parts=None).parts
    [summary] = [ln for ln in body.splitlines() if "the same in 2 environments" in ln]
    assert "<img" not in summary and "<b>dev, prod</b> · &lt;img src=x&gt; · " in summary


def test_a_grouped_plan_too_big_for_its_comments_hides_every_target_of_a_summarised_group() -> None:
    big = "".join(f"+  line{i}: {'x' * 80}\n" for i in range(3000))
    plan = Plan(base="a" * 40, head="b" * 40, targets=[
        same_change("dev", big), same_change("staging", big), same_change("prod", app="web")])
    comment = render_comment(plan, limit=20_000, max_parts=1)
    assert [(t.app, t.env) for t in comment.hidden] == [("api", "dev"), ("api", "staging")]
    assert "2 targets are summarised without their diffs" in comment.parts[0]




def test_the_readme_layouts_example_is_a_valid_configuration() -> None:
    import jsonschema
    import yaml

    from prbot.config import config_schema, load_config

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("### Layouts", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    config = load_config(ENVS + block)
    assert [a.path for a in config.apps] == ["apps/{app}/overlays/{env}", "charts/api", "k8s", "k8s"]
    assert list(jsonschema.Draft202012Validator(config_schema()).iter_errors(yaml.safe_load(ENVS + block))) == []


def test_a_pr_removing_a_directory_no_renderer_takes_is_planned(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The base's discovery problem does not fail the PR that fixes it."""
    repo, _ = jsonnet_repo(tmp_path)
    write(repo, "apps/dash/dev/main.jsonnet", "{}\n")
    base = commit_all(repo, "base")
    (repo / "apps/dash/dev/main.jsonnet").unlink()
    write(repo, "apps/web/dev/cm.yaml", CM.format(name="web").replace('"1"', '"2"'))
    head = commit_all(repo, "fix")
    code, targets, err = plan_json(capsys, repo, base, head)
    assert (code, err) == (0, "") and targets[("web", "dev")]["status"] == "changed"


def test_env_names_reach_the_sync_the_cluster_is_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`{env}` in `sync` stands for the app's word too: prod's Argo CD Application is web-production,
    and the RBAC prbot asks of the prod cluster names it."""
    repo = init_repo(tmp_path / "repo")
    write(repo, ".prbot.yml", """version: 1
environments: [{name: dev, cluster: dev}, {name: prod, cluster: prod}]
apps:
  - path: "overlays/{env}"
    name: web
    namespace: "web-{env}"
    env_names: {prod: production}
    sync:
      argocd: {application: "web-{env}"}
""")
    for env in ("dev", "production"):
        write(repo, f"overlays/{env}/cm.yaml", CM.format(name="web"))
    code, out, err = run(capsys, "rbac", "--repo", str(repo), "--env", "prod")
    assert (code, err) == (0, "")
    assert "resourceNames:\n  - web-production\n" in out and "namespace: web-production" in out
    assert "web-prod\n" not in out


@pytest.mark.parametrize(("snippet", "message"), [
    ('    exclude: ["../apps"]', 'apps[0].exclude[0]: "../apps": write the glob relative to the repository root, '
                               "as the matched directories are (e.g. apps/legacy-*)"),
    ("    helm: {values: [{file: a.yaml, optionl: true}]}",
     'apps[0].helm.values[0]: unknown key "optionl" (did you mean "optional"?)'),
    ("    helm: {values: [{optional: true}]}", 'apps[0].helm.values[0]: missing required key "file"'),
    ("    helm: {values: [{file: a.yaml, optional: maybe}]}",
     "apps[0].helm.values[0].optional: expected a boolean, got string"),
    ("    env_names: {prod: ../up}", 'apps[0].env_names.prod: "../up" is not a directory name {env} can stand for '
                                   "(letters, digits, '-', '_' and '.')"),
])
def test_layout_keys_are_checked_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    snippet: str, message: str) -> None:
    repo = init_repo(tmp_path / "repo")
    write(repo, "apps/web/dev/cm.yaml", CM.format(name="web"))
    config = ENVS + f'apps:\n  - path: "apps/{{app}}/{{env}}"\n{snippet}\n'
    write(repo, ".prbot.yml", config)
    code, out, err = run(capsys, "check-config", "--repo", str(repo))
    assert (code, out, err) == (2, "", f".prbot.yml:5: {message}\n")

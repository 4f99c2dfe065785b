"""The `prbot` command as a user runs it: exit codes, one-line errors, files on disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import git, snapshot_files, write

from prbot.cli import main

SHOP = "registry.cn-hangzhou.aliyuncs.com/demo/shop"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_bump_reports_each_change_and_is_idempotent(example_repo: Path, capsys) -> None:
    code, out, err = run(capsys, "bump", f"{SHOP}:2.0.0", "--env", "dev", "--repo", str(example_repo))
    assert (code, err) == (0, "")
    assert out == "shop/dev: apps/shop/envs/dev/kustomization.yaml 1.1.0 → 2.0.0\n"
    text = (example_repo / "apps/shop/envs/dev/kustomization.yaml").read_text()
    assert '    newTag: "2.0.0"   # bumped by prbot\n' in text
    after = snapshot_files(example_repo)
    code, out, err = run(capsys, "bump", f"{SHOP}:2.0.0", "--env", "dev", "--repo", str(example_repo))
    assert (code, err) == (0, "")
    assert out == "shop/dev: already current\n"
    assert snapshot_files(example_repo) == after


@pytest.mark.parametrize("image, needle", [
    (f"{SHOP}:bad tag", "tag"),
    (f"{SHOP}:-leading-dash", "tag"),
    ("registry.cn-hangzhou.aliyuncs.com/Demo/Shop:1.0.0", "uppercase"),
    (f"{SHOP}@sha256:abc", "digest"),
    (f"{SHOP}:1.0.0@md5:0123", "digest"),
    ("", "empty"),
])
def test_bad_image_references_change_nothing(example_repo: Path, capsys, image: str, needle: str) -> None:
    before = snapshot_files(example_repo)
    code, out, err = run(capsys, "bump", image, "--env", "dev", "--repo", str(example_repo))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("prbot: error:") and "Traceback" not in err
    assert needle in err.lower()
    assert snapshot_files(example_repo) == before


def test_unknown_environment_and_missing_config(example_repo: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "bump", f"{SHOP}:2.0.0", "--env", "qa", "--repo", str(example_repo))
    assert code == 2 and "qa" in err and err.count("\n") == 1
    code, _, err = run(capsys, "bump", f"{SHOP}:2.0.0", "--env", "dev", "--repo", str(tmp_path))
    assert code == 2 and ".prbot.yml" in err and err.count("\n") == 1


def test_broken_config_is_bad_input_for_every_command(example_repo: Path, capsys) -> None:
    write(example_repo, ".prbot.yml", "version: 1\nenvironments:\n  - name: dev\n    colour: blue\n")
    before = snapshot_files(example_repo)
    for argv in (["bump", f"{SHOP}:2.0.0", "--env", "dev"], ["promote", "dev", "staging"],
                 ["plan", "--base", "HEAD"]):
        code, _, err = run(capsys, *argv, "--repo", str(example_repo))
        assert code == 2 and err.count("\n") == 1 and ".prbot.yml:4:" in err, (argv, err)
    assert snapshot_files(example_repo) == before


def test_no_target_uses_the_repository_exits_1(example_repo: Path, capsys) -> None:
    before = snapshot_files(example_repo)
    code, out, err = run(capsys, "bump", "ghcr.io/acme/unknown:1.0.0", "--env", "dev", "--repo", str(example_repo))
    assert code == 1 and out == "" and "no target of dev uses" in err
    assert snapshot_files(example_repo) == before


def test_promote_and_nothing_left_to_promote(example_repo: Path, capsys) -> None:
    code, out, err = run(capsys, "promote", "dev", "staging", "--repo", str(example_repo))
    assert code == 0, err
    assert "shop/staging: apps/shop/envs/staging/kustomization.yaml 1.0.0 → 1.1.0" in out
    assert "billing/staging: billing/staging/values.yaml 2.3.0 → 2.4.0" in out
    assert "worker/staging: apps/worker/envs/staging/worker.yaml 0.4.0 → 0.5.0" in out
    code, out, err = run(capsys, "promote", "dev", "staging", "--repo", str(example_repo))
    assert code == 1 and "nothing to promote" in err


def test_check_config(example_repo: Path, capsys) -> None:
    code, out, err = run(capsys, "check-config", "--repo", str(example_repo))
    assert (code, out, err) == (0, ".prbot.yml: ok\n", "")
    write(example_repo, ".prbot.yml", "version: 1\nenvironments:\n  - name: dev\napps:\n"
          "  - path: ../outside/{env}\n    nmespace: x\n")
    code, out, err = run(capsys, "check-config", "--repo", str(example_repo))
    assert code == 2
    lines = err.splitlines()
    assert any(line.startswith(".prbot.yml:5:") for line in lines)
    assert any(line.startswith(".prbot.yml:6:") and "nmespace" in line for line in lines)


def test_console_script_runs_without_traceback(example_repo: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "prbot.cli", "bump", "nginx:??", "--env", "dev",
                           "--repo", str(example_repo)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def _in_order(text: str, needles: list[str]) -> None:
    """Each needle appears in `text`, after the one before it."""
    at = 0
    for needle in needles:
        found = text.find(needle, at)
        assert found >= 0, f"{needle!r} not found after position {at}"
        at = found + len(needle)


def test_demo_tells_the_whole_story(capsys) -> None:
    code, out, err = run(capsys, "demo")
    assert (code, err) == (0, "")
    bump = "prbot/bump/dev/registry-cn-hangzhou-aliyuncs-com-demo-shop"
    _in_order(out, [
        "▶ 1. The registry reports a push: registry.cn-hangzhou.aliyuncs.com/demo/shop:1.2.0",
        f"  → opened PR #1 {bump} → main: Bump registry.cn-hangzhou.aliyuncs.com/demo/shop to 1.2.0 in dev",
        "| `shop/dev` | `apps/shop/envs/dev/kustomization.yaml` | `1.1.0` | `1.2.0` |",
        "- digest: `sha256:",
        "  → labelled PR #1: prbot, bump, env:dev",
        "  → enabled auto-merge (squash) on PR #1",
        "▶ 2. prbot plans PR #1",
        "  → check run prbot/plan on ",
        "\n<!-- prbot:plan -->\n## prbot plan\n\n**1 environment changes** · dev ✅",
        "+        image: registry.cn-hangzhou.aliyuncs.com/demo/shop:1.2.0",
        "Rendered with kubectl v1.35.2, kustomize v5.7.1",
        ": success — 1 environment changes · dev ✅",
        "▶ 3. PR #1 is merged",
        "  → merged PR #1 into main as ",
        "— auto-merge: the required checks passed",
        "▶ 4. The merge deploys",
        ": in_progress — syncing ",
        "| dev | shop | ⏳ waiting | waiting for the running operation (sync to ",
        "· poll 1, 5s later:",
        "| dev | shop | 🔄 syncing | sync to ",
        "| dev | shop | 🔄 syncing | Argo CD is syncing ",
        "| dev | shop | 🔄 progressing | Synced, Progressing: Deployment shop: Progressing (0 of 1 updated replicas "
        "available) · 0 of 1 workload ready |",
        ": success — healthy at ",
        "  → opened PR #2 prbot/promote/staging/shop → main: Promote shop from dev to staging (1.2.0)",
        "| `shop/staging` | `apps/shop/envs/staging/kustomization.yaml` | `1.0.0` | `1.2.0` |",
        "- source: #1 by `prbot[bot]`",
        "- proved healthy by [deployment ",
        "- image: `registry.cn-hangzhou.aliyuncs.com/demo/shop@sha256:",
        "```mermaid\nflowchart LR\n  e0[\"dev<br/>shop 1.2.0<br/>✅ healthy\"]\n"
        "  e1[\"staging<br/>shop 1.0.0<br/>· not deployed by prbot\"]\n",
        "  → labelled PR #2: prbot, promote, env:staging",
        "✅ **Deployed**: every environment is healthy.",
        "| dev | shop | ✅ healthy | Synced and Healthy at ",
        "- ⏩ dev is healthy: promotion #2 (shop → staging)",
        "▶ 5. The promotion PR #2 (prbot/promote/staging/shop) is planned like any PR",
        "**1 environment changes** · staging ✅",
        "▶ 6. People talk to prbot on PR #2",
        "dave (read) comments: /prbot lock staging release freeze",
        "  → reacted eyes to dave's comment on PR #2",
        "  → reacted confused to dave's comment on PR #2",             # no reply: dave may not write
        "carol (write) comments: /prbot promote prod",
        "- `/prbot promote prod`: refused — only the deployers of this environment (`@acme/sre`, `alice`) may run "
        "`/prbot promote`",
        "▶ The end",
        f"PR #1 [merged] Bump registry.cn-hangzhou.aliyuncs.com/demo/shop to 1.2.0 in dev  ({bump})",
        "PR #2 [open] Promote shop from dev to staging (1.2.0)  (prbot/promote/staging/shop)",
        "— in_progress → success",
        "Demo finished in ",
    ])
    lines = out.splitlines()
    assert lines.count("<!-- prbot:plan -->") == 2 and lines.count("<!-- prbot:deploy -->") == 5
    first = lines[0]
    assert "(temporary, deleted at the end; prbot demo --keep DIR keeps it)" in first
    assert not Path(first.split(" at ", 1)[1].split("  (", 1)[0]).exists()


def test_plan_dry_runs_against_the_clusters_named_by_prbot_clusters(example_repo: Path, tmp_path: Path,
                                                                     capsys, monkeypatch) -> None:
    import json

    from fakekube import FakeKube

    with FakeKube() as fake:
        fake.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-dev"}})
        kubeconfig = fake.write_kubeconfig(tmp_path / "dev.kubeconfig")
        write(tmp_path, "clusters.yaml", f"dev: {{kubeconfig: {kubeconfig}, context: fake}}\n")
        monkeypatch.setenv("PRBOT_CLUSTERS", str(tmp_path / "clusters.yaml"))
        p = example_repo / "apps/shop/envs/dev/kustomization.yaml"
        p.write_text(p.read_text().replace('newTag: "1.1.0"', 'newTag: "1.2.0"'))
        code, out, err = run(capsys, "plan", "--repo", str(example_repo), "--base", "HEAD", "--format", "json")
        assert code == 0, err
        [target] = json.loads(out)["targets"]
        assert target["dry_run"]["status"] == "ok" and target["dry_run"]["errors"] == []
        assert {c["kind"] for c in target["dry_run"]["changes"]} >= {"Deployment"}
        assert fake.applies("Deployment")
        code, out, err = run(capsys, "plan", "--repo", str(example_repo), "--base", "HEAD", "--format", "json",
                             "--no-cluster")
        assert code == 0 and json.loads(out)["targets"][0]["dry_run"] is None
    write(tmp_path, "clusters.yaml", "dev: {kubeconfg: /nope}\n")
    code, out, err = run(capsys, "plan", "--repo", str(example_repo), "--base", "HEAD")
    assert code == 2 and err.count("\n") == 1 and "clusters.yaml:1" in err


# -- issue 9: what a user hit ------------------------------------------------------------------------------

def test_every_argument_of_every_command_has_help() -> None:
    import argparse

    from prbot.cli import _parser

    def parsers(p: argparse.ArgumentParser, name: str = "prbot"):
        yield name, p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from parsers(child, f"{name} {sub}")

    missing = [f"{name} {action.dest}" for name, p in parsers(_parser()) for action in p._actions
               if not isinstance(action, argparse._SubParsersAction) and not (action.help or "").strip()]
    assert missing == []


def test_help_text_names_what_each_argument_is(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["promote", "--help"])
    out = " ".join(capsys.readouterr().out.split())      # however the terminal wraps it
    assert exit_.value.code == 0
    assert "FROM_ENV the environment whose versions are carried" in out
    assert "TO_ENV the environment that receives them" in out
    assert "--repo DIR the GitOps repository's working tree (default: the current directory)" in out
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--format {markdown,json} markdown: the PR comment (default); json: the plan as data" in out


def _big_change(repo: Path) -> None:
    """A working-tree change whose plan prints far more than a pipe buffer holds."""
    write(repo, "apps/worker/envs/dev/big.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n"
          + "".join(f"  key{i}: {'x' * 60}\n" for i in range(3000)))


@pytest.mark.parametrize("fail", [False, True])
def test_a_closed_pipe_keeps_the_plans_exit_code(example_repo: Path, fail: bool) -> None:
    """`prbot plan | head`: the reader leaving is not a failure; the code is still the plan's."""
    _big_change(example_repo)
    if fail:
        write(example_repo, "apps/worker/envs/dev/broken.yaml", "kind: ConfigMap\nmetadata: [\n")
    proc = subprocess.Popen([sys.executable, "-m", "prbot.cli", "plan", "--base", "HEAD", "--no-cluster",
                             "--untracked", "--repo", str(example_repo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()                            # as `head -1` does
    err = proc.stderr.read().decode()
    code = proc.wait(timeout=120)
    assert first.startswith(b"<!-- prbot:plan")            # the marker (of part 1, when split)
    assert (code, err) == (1 if fail else 0, ""), err


def test_check_config_names_a_missing_repository_and_takes_config(tmp_path: Path, example_repo: Path,
                                                                   capsys) -> None:
    code, out, err = run(capsys, "check-config", "--repo", str(tmp_path / "missing"))
    assert (code, out) == (2, "")
    assert err == f"{tmp_path}/missing: no such directory (--repo names the GitOps repository's working tree)\n"
    code, _, err = run(capsys, "check-config", "--repo", str(tmp_path))
    assert code == 2 and err.startswith(f"{tmp_path}/.prbot.yml: no such file")
    other = write(tmp_path, "other.yml", (example_repo / ".prbot.yml").read_text())
    code, out, err = run(capsys, "check-config", "--repo", str(example_repo), "--config", str(other))
    assert (code, out, err) == (0, f"{other}: ok\n", "")
    code, _, err = run(capsys, "plan", "--repo", str(tmp_path / "missing"), "--base", "HEAD")
    assert code == 2 and err == (f"prbot: error: {tmp_path}/missing: no such directory (--repo names the "
                                 "GitOps repository's working tree)\n")


def test_a_path_that_matches_nothing_is_an_error_everywhere(example_repo: Path, capsys) -> None:
    text = (example_repo / ".prbot.yml").read_text()
    write(example_repo, ".prbot.yml", text.replace('path: "billing/{env}"', 'path: "biling/{env}"'))
    code, out, err = run(capsys, "check-config", "--repo", str(example_repo))
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if 'path: "billing/{env}"' in ln)
    assert (code, out) == (2, "")
    assert err == (f'.prbot.yml:{line}: apps[1].path: "biling/{{env}}" matches no directory in any environment: '
                   'nothing matches "biling" in the repository root; did you mean "billing"?\n')
    code, out, err = run(capsys, "targets", "--repo", str(example_repo))
    assert code == 2 and "shop" in out and "billing" not in out and err.startswith(f".prbot.yml:{line}: ")
    git(example_repo, "commit", "-qam", "typo")
    before = snapshot_files(example_repo)
    code, out, err = run(capsys, "plan", "--repo", str(example_repo), "--base", "HEAD~1", "--head", "HEAD")
    assert (code, out) == (2, "") and err.startswith(f"prbot: error: .prbot.yml:{line}: apps[1].path: ")
    assert snapshot_files(example_repo) == before


def test_targets_lists_what_the_patterns_find(example_repo: Path, capsys) -> None:
    code, out, err = run(capsys, "targets", "--repo", str(example_repo), "--env", "prod")
    assert (code, err) == (0, "")
    assert out.splitlines()[1] == ("prod  billing  helm       billing/prod  "
                                   "(chart charts/billing; values billing/prod/values.yaml)")
    rows = [line.split()[:4] for line in out.splitlines()[1:]]
    assert rows == [["prod", "billing", "helm", "billing/prod"], ["prod", "shop", "kustomize", "apps/shop/envs/prod"],
                    ["prod", "worker", "plain", "apps/worker/envs/prod"]]
    code, out, _ = run(capsys, "targets", "--repo", str(example_repo), "--format", "json")
    data = json.loads(out)
    assert code == 0 and len(data) == 9 and data[0] == {
        "app": "billing", "env": "dev", "path": "billing/dev", "renderer": "helm", "namespace": "billing-dev",
        "chart": "charts/billing", "values": ["billing/dev/values.yaml"]}
    code, _, err = run(capsys, "targets", "--repo", str(example_repo), "--env", "qa")
    assert code == 2 and "unknown environment 'qa'" in err


def test_header_counts_the_environments_it_names_after_a_config_change(example_repo: Path, capsys) -> None:
    """A `.prbot.yml` change plans every target: the header says one environment changes and lists
    only that one, the others as unchanged."""
    write(example_repo, ".prbot.yml", (example_repo / ".prbot.yml").read_text() + "# reviewed\n")
    write(example_repo, "apps/worker/envs/dev/worker.yaml",
          (example_repo / "apps/worker/envs/dev/worker.yaml").read_text().replace("0.5.0", "0.5.1"))
    code, out, _ = run(capsys, "plan", "--repo", str(example_repo), "--base", "HEAD", "--no-cluster")
    assert code == 0
    assert "**1 environment changes** · dev ✅ · unchanged: staging, prod" in out.splitlines()


def test_demo_keep_leaves_a_clone_of_the_sample_repository_as_the_story_leaves_it(tmp_path: Path, capsys) -> None:
    keep = tmp_path / "sample"
    keep.mkdir()
    code, out, err = run(capsys, "demo", "--keep", str(keep))
    assert (code, err) == (0, "")
    assert f"(a clone is kept in {keep} at the end)" in out.splitlines()[0]
    assert f"The sample repository is kept in {keep}: a clone of the stand-in GitHub repository" in out
    assert git(keep, "rev-parse", "--abbrev-ref", "HEAD") == "main" and git(keep, "remote") == ""
    assert git(keep, "status", "--porcelain") == ""
    assert set(git(keep, "branch", "--format=%(refname:short)").split()) == {
        "main", "prbot/bump/dev/registry-cn-hangzhou-aliyuncs-com-demo-shop", "prbot/promote/staging/shop"}
    assert 'newTag: "1.2.0"' in (keep / "apps/shop/envs/dev/kustomization.yaml").read_text()      # merged
    assert 'newTag: "1.0.0"' in (keep / "apps/shop/envs/staging/kustomization.yaml").read_text()  # proposed only
    proposed = git(keep, "show", "prbot/promote/staging/shop:apps/shop/envs/staging/kustomization.yaml")
    assert 'newTag: "1.2.0"' in proposed
    code, listed, err = run(capsys, "targets", "--repo", str(keep))
    assert code == 0 and "shop" in listed
    code, planned, err = run(capsys, "plan", "--repo", str(keep), "--base", "main", "--head",
                             "prbot/promote/staging/shop")
    assert code == 0 and "**1 environment changes** · staging ✅" in planned
    code, _, err = run(capsys, "demo", "--keep", str(keep))
    assert code == 2 and "not an empty directory" in err


def test_promote_to_a_lower_two_part_version_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    from support import commit_all, init_repo

    repo = init_repo(tmp_path / "r")
    write(repo, ".prbot.yml", "version: 1\nenvironments:\n  - name: dev\n  - name: prod\n"
          "apps:\n  - path: \"apps/{app}/{env}\"\nimages:\n  - repository: nginx\n    policy: semver\n")
    deploy = ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {a: b}}\n"
              "  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n"
              "        - {name: web, image: \"nginx:%s\"}\n")
    write(repo, "apps/web/dev/web.yaml", deploy % "2.0")
    write(repo, "apps/web/prod/web.yaml", deploy % "3.0")
    commit_all(repo, "two-part tags")
    before = snapshot_files(repo)
    code, out, err = run(capsys, "promote", "dev", "prod", "--repo", str(repo))
    assert code == 2 and out == ""
    assert "refused: web/prod: apps/web/prod/web.yaml: nginx 3.0 → 2.0: 2.0 is a lower version than 3.0" in err
    assert "nothing written" in err and "--force" in err
    assert snapshot_files(repo) == before
    code, out, err = run(capsys, "bump", "nginx:3.1", "--env", "prod", "--repo", str(repo))
    assert code == 0, err                          # 3.1 is a version under policy: semver
    assert "web/prod: apps/web/prod/web.yaml 3.0 → 3.1" in out

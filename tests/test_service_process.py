"""The service as it is deployed: `prbot serve` (the Dockerfile's CMD and HEALTHCHECK), the
Procfile's gunicorn and worker commands, the GitHub Action, settings checks and the logs."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from fakegithub import app_key_pair
from service_support import (
    REGISTRY_FIXTURES,
    REGISTRY_TOKEN,
    WEBHOOK_SECRET,
    fixture_bytes,
    free_port,
    github_headers,
    http,
    http_json,
    sign,
    wait_for,
    wait_http_ok,
)
from support import PROJECT

PRIVATE_KEY = app_key_pair()[0]            # a real key: the App signs its JWT with it (never logged)
PRBOT = str(Path(sys.executable).with_name("prbot"))


def service_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PRBOT_"))}
    env.update({"GITHUB_APP_ID": "12345", "GITHUB_PRIVATE_KEY": PRIVATE_KEY, "GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "PRBOT_REGISTRY_TOKEN": REGISTRY_TOKEN, "PRBOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(port),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    env.update(extra)
    return env


@contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(40)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def json_lines(log: Path) -> list[dict[str, Any]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"log line is not JSON: {line[:300]}") from None
    return out


def dockerfile_instruction(name: str) -> list[str]:
    text = (PROJECT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if line.startswith(name + " "):
            rest = line[len(name) + 1:]
            return list(json.loads(rest[rest.index("["):]))
    raise AssertionError(f"no {name} in the Dockerfile")


def procfile() -> dict[str, str]:
    return dict(line.split(": ", 1) for line in (PROJECT / "Procfile").read_text().splitlines() if line.strip())


def test_serve_as_the_dockerfile_runs_it_answers_and_logs_no_secret(tmp_path: Path) -> None:
    port = free_port()
    env = service_env(tmp_path, port, GITHUB_API_URL=f"http://127.0.0.1:{free_port()}/api/v3")   # unreachable
    log = tmp_path / "serve.log"
    cmd = dockerfile_instruction("CMD")
    assert cmd[:2] == ["prbot", "serve"]
    base = f"http://127.0.0.1:{port}"
    secrets = [WEBHOOK_SECRET, REGISTRY_TOKEN, *[ln for ln in PRIVATE_KEY.splitlines() if "-----" not in ln]]
    signatures: list[str] = []
    with running([PRBOT, *cmd[1:]], env, log) as proc:
        wait_http_ok(f"{base}/healthz", 60, proc)
        healthcheck = dockerfile_instruction("HEALTHCHECK")
        assert healthcheck[0] == "python"
        subprocess.run([sys.executable, *healthcheck[1:]], env=env, check=True, timeout=30)
        assert http_json("GET", f"{base}/readyz")[0] == 200

        body = fixture_bytes("pull_request.opened.json")
        delivery = str(uuid.uuid4())
        headers = github_headers(body, "pull_request", delivery)
        signatures.append(headers["X-Hub-Signature-256"])
        status, answer = http_json("POST", f"{base}/webhooks/github", body, headers)
        assert (status, answer["status"]) == (202, "queued")
        assert http_json("POST", f"{base}/webhooks/github", body, headers)[1]["status"] == "duplicate"
        bad = {**headers, "X-Hub-Signature-256": sign(body, "wrong-secret")}
        signatures.append(bad["X-Hub-Signature-256"])
        assert http("POST", f"{base}/webhooks/github", body, bad)[0] == 401
        assert http("POST", f"{base}/webhooks/github", b"{oops", github_headers(b"{oops", "push", "d-2"))[0] == 400
        acr = (REGISTRY_FIXTURES / "acr-aliyun.push.json").read_bytes()
        assert http("POST", f"{base}/webhooks/registry/acr?token={REGISTRY_TOKEN}", acr)[0] == 202
        assert http("POST", f"{base}/webhooks/registry/acr?token={REGISTRY_TOKEN}x", acr)[0] == 401
        assert http("POST", f"{base}/webhooks/registry/quay", b"[]",
                    {"Authorization": f"Bearer {REGISTRY_TOKEN}"})[0] == 400
        # the in-process worker routes the event into a plan job, and tries the push (GitHub is
        # unreachable here: both are retried later, nothing is lost)
        wait_for(lambda: {"plan", "registry_push"} <= {r.get("kind") for r in json_lines(log)
                                                        if r["msg"].startswith("transient error")},
                 90, "the in-process worker to run the jobs")
        assert http("GET", f"{base}/metrics")[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
    records = json_lines(log)
    text = log.read_text()
    for secret in secrets + signatures:
        assert secret not in text, "a secret value reached the log"
    queued = [r for r in records if r["msg"] == "webhook queued"]
    assert queued and queued[0]["delivery"] == delivery and queued[0]["repo"] == "Codertocat/Hello-World"
    assert queued[0]["pr"] == 2
    handled = [r for r in records if r["msg"] == "job done" and r.get("kind") == "github_event"]
    assert handled and handled[0]["delivery"] == delivery and handled[0]["pr"] == 2
    assert any(r["msg"] == "worker stopped" for r in records)


def test_procfile_web_and_worker(tmp_path: Path) -> None:
    port = free_port()
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    env = service_env(tmp_path, port, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), WEB_CONCURRENCY="2")
    procs = procfile()
    assert set(procs) == {"web", "worker"}
    web_argv = shlex.split(procs["web"])
    assert web_argv[0] == "gunicorn" and web_argv[-1] == "prbot.service:create_app()"
    base = f"http://127.0.0.1:{port}"
    with running([str(Path(sys.executable).with_name("gunicorn")), *web_argv[1:]], env, tmp_path / "web.log") as web:
        wait_http_ok(f"{base}/healthz", 60, web)
        body = fixture_bytes("push.json")
        for _ in range(4):                                   # spread over both gunicorn workers
            status, _answer = http_json("POST", f"{base}/webhooks/github", body,
                                        github_headers(body, "push", str(uuid.uuid4())))
            assert status == 202
        metrics = http("GET", f"{base}/metrics")[1].decode()
        assert 'prbot_webhooks_total{event="push",outcome="queued"} 4.0' in metrics, "added up across processes"
        assert 'prbot_queue_depth{kind="github_event"} 4.0' in metrics and "prbot_workers_live 0.0" in metrics
        status, idle = http_json("GET", f"{base}/readyz")
        assert status == 503 and set(idle["failed"]) == {"workers"}, "queued work and nobody to run it"
        worker_argv = shlex.split(procs["worker"])
        assert worker_argv == ["prbot", "worker"]
        wlog = tmp_path / "worker.log"
        with running([PRBOT, *worker_argv[1:]], env, wlog) as worker:
            wait_for(lambda: sum(r["msg"] == "job done" and r.get("kind") == "github_event"
                                 for r in json_lines(wlog)) >= 4, 60, "the worker to run the four queued jobs")
            assert http_json("GET", f"{base}/readyz")[0] == 200
            assert "prbot_workers_live 1.0" in http("GET", f"{base}/metrics")[1].decode()
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(40) == 0
        web.send_signal(signal.SIGTERM)
        assert web.wait(40) == 0
    json_lines(tmp_path / "web.log")
    json_lines(wlog)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_missing_settings_stop_at_once_naming_each(tmp_path: Path, command: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PRBOT_"))}
    env["PRBOT_ACR_HOSTS"] = "cn-hangzhou"
    proc = subprocess.run([PRBOT, command], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "GITHUB_APP_ID" in lines[0] and "GITHUB_PRIVATE_KEY" in lines[0] and "PRBOT_ACR_HOSTS" in lines[0]
    assert ("GITHUB_WEBHOOK_SECRET" in lines[0]) == (command == "serve")
    assert not (tmp_path / ".prbot-data").exists(), "nothing started"


def test_github_action_posts_to_the_generic_endpoint(tmp_path: Path) -> None:
    action = yaml.safe_load((PROJECT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    [step] = action["runs"]["steps"]
    port = free_port()
    env = service_env(tmp_path, port)
    base = f"http://127.0.0.1:{port}"
    digest = "sha256:" + "e" * 64

    def run_action(**inputs: str) -> subprocess.CompletedProcess[str]:
        values = {k: str(v.get("default", "")) for k, v in action["inputs"].items()}
        values.update(inputs)
        step_env = {**os.environ}
        for name, expr in step["env"].items():
            key = expr.removeprefix("${{ inputs.").removesuffix(" }}")
            step_env[name] = values[key]
        return subprocess.run(["bash", "-c", step["run"]], env=step_env, capture_output=True, text=True, timeout=120)

    with running([PRBOT, "serve", "--port", str(port)], env, tmp_path / "serve.log") as proc:
        wait_http_ok(f"{base}/healthz", 60, proc)
        ok = run_action(image="ghcr.io/acme/app:1.4.0", digest=digest, url=base + "/", token=REGISTRY_TOKEN,
                        repo="acme/gitops")
        assert ok.returncode == 0, ok.stderr
        answer = json.loads(ok.stdout)
        assert answer["images"] == [{"image": "ghcr.io/acme/app:1.4.0", "digest": digest}]
        assert answer["repo"] == "acme/gitops"
        sourced = run_action(image="ghcr.io/acme/app:3f9c2e1", url=base, token=REGISTRY_TOKEN,
                             source="https://github.com/acme/app")
        assert json.loads(sourced.stdout)["images"] == [{"image": "ghcr.io/acme/app:3f9c2e1", "digest": None,
                                                         "source": "https://github.com/acme/app"}]
        no_digest = run_action(image="ghcr.io/acme/app:1.4.1", url=base, token=REGISTRY_TOKEN)
        assert no_digest.returncode == 0 and json.loads(no_digest.stdout)["images"][0]["digest"] is None
        refused = run_action(image="ghcr.io/acme/app:1.4.0", url=base, token="wrong")
        assert refused.returncode != 0 and "wrong token" in refused.stdout + refused.stderr
        invalid = run_action(image="ghcr.io/Acme/app:1", url=base, token=REGISTRY_TOKEN)
        assert invalid.returncode != 0 and "uppercase" in invalid.stdout + invalid.stderr

        # the README's GitLab CI and Jenkins one-liners, run as those CIs would run them
        gitlab, jenkins = readme_one_liners()
        ci_env = {**os.environ, "PRBOT_URL": base, "PRBOT_REGISTRY_TOKEN": REGISTRY_TOKEN,
                  "CI_REGISTRY_IMAGE": "registry.gitlab.com/acme/app", "CI_COMMIT_SHORT_SHA": "3f9c2e1"}
        out = subprocess.run(["bash", "-c", gitlab], env=ci_env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["images"] == [{"image": "registry.gitlab.com/acme/app:3f9c2e1", "digest": None}]
        sha = "0123456789abcdef0123456789abcdef01234567"
        ci_env = {**os.environ, "PRBOT_URL": base, "PRBOT_TOKEN": REGISTRY_TOKEN, "GIT_COMMIT": sha}
        out = subprocess.run(["bash", "-c", jenkins], env=ci_env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["images"][0]["image"] == f"registry.example.com/acme/app:{sha}"


def readme_one_liners() -> tuple[str, str]:
    """The shell commands of the README's GitLab CI (YAML) and Jenkins (Groovy) examples."""
    import re

    readme = (PROJECT / "README.md").read_text()
    yaml_block = readme[readme.index("GitLab CI ("):].split("```yaml\n", 1)[1].split("```", 1)[0]
    gitlab = next(line for line in yaml.safe_load(yaml_block)["script"] if line.startswith("curl"))
    groovy = readme[readme.index("Jenkins ("):].split("```groovy\n", 1)[1].split("```", 1)[0]
    match = re.search(r"sh '(.*)'", groovy)
    assert match, "no sh '…' step in the Jenkins example"
    jenkins = match.group(1).replace("\\\\", "\\")       # Groovy single-quoted string: \\ is one \
    return gitlab, jenkins


def test_app_manifest_matches_the_spec() -> None:
    manifest = yaml.safe_load((PROJECT / "app.yml").read_text())
    assert sorted(manifest["default_events"]) == sorted(
        ["pull_request", "issue_comment", "push", "package", "registry_package", "check_run"])
    assert manifest["default_permissions"] == {
        "contents": "write", "pull_requests": "write", "issues": "write", "checks": "write", "deployments": "write",
        "metadata": "read", "packages": "read", "actions": "read", "members": "read"}
    assert manifest["hook_attributes"]["url"].endswith("/webhooks/github")


def test_a_worker_start_sweeps_the_temp_dirs_of_dead_workers_only(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**service_env(tmp_path, free_port()), "MARKS": str(marks), "PYTHONPATH": str(PROJECT)}
    root = tmp_path / "data" / "tmp"
    script = str(PROJECT / "tests" / "service_worker_main.py")

    def scratch_of(proc: subprocess.Popen[bytes]) -> Path:
        return wait_for(lambda: next(iter(root.glob(f"w-{proc.pid}-*")), None), 60, f"the temp dir of {proc.pid}")

    with running([sys.executable, script], env, tmp_path / "a.log") as killed, \
            running([sys.executable, script], env, tmp_path / "b.log") as live:
        dead_dir, live_dir = scratch_of(killed), scratch_of(live)
        (dead_dir / "prbot-partial-x1y2" / "tree").mkdir(parents=True)        # a render cut short
        (dead_dir / "prbot-partial-x1y2" / "tree" / "values.yaml").write_text("a: 1\n")
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        assert dead_dir.exists(), "nothing removes it while no worker starts"
        with running([sys.executable, script], env, tmp_path / "c.log") as started:
            own = scratch_of(started)
            assert not dead_dir.exists(), "the killed worker's temp dir is swept"
            assert live_dir.is_dir() and own.is_dir(), "a live worker's temp dir is left alone"

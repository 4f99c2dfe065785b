"""Settings from the environment and the JSON log lines (context fields, secrets scrubbed)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from prbot.errors import SettingsError
from prbot.service.logs import JsonFormatter, add_secret, log_context, redact
from prbot.service.settings import Secret, Settings, parse_acr_hosts


def _generated_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


KEY = _generated_key()


def full_env(tmp_path: Path) -> dict[str, str]:
    return {"GITHUB_APP_ID": "42", "GITHUB_PRIVATE_KEY": KEY, "GITHUB_WEBHOOK_SECRET": "hook-secret-value",
            "PRBOT_REGISTRY_TOKEN": "registry-token-value", "PRBOT_DATA_DIR": str(tmp_path),
            "GITHUB_API_URL": "https://ghe.example.com/api/v3/", "PRBOT_CLUSTERS": "/etc/prbot/clusters.yaml",
            "PRBOT_ACR_HOSTS": "cn-hangzhou=registry-vpc.cn-hangzhou.aliyuncs.com,"
                               "cri-x1=acme.cn-hangzhou.cr.aliyuncs.com"}


def test_settings_from_the_environment(tmp_path: Path) -> None:
    s = Settings.from_env(full_env(tmp_path)).require("serve")
    assert s.github_app_id == "42" and s.github_private_key == Secret(KEY)
    assert s.github_api_url == "https://ghe.example.com/api/v3"
    assert s.effective_queue_url == f"sqlite:///{tmp_path / 'queue.db'}" and s.queue_backend == "sqlite"
    assert s.sqlite_path == tmp_path / "queue.db"
    assert s.clusters_file == Path("/etc/prbot/clusters.yaml")
    assert s.acr_hosts == {"cn-hangzhou": "registry-vpc.cn-hangzhou.aliyuncs.com",
                           "cri-x1": "acme.cn-hangzhou.cr.aliyuncs.com"}
    defaults = Settings.from_env({})
    assert defaults.github_api_url == "https://api.github.com"
    assert defaults.data_dir == (Path.cwd() / ".prbot-data")
    redis = Settings.from_env({"PRBOT_QUEUE_URL": "redis://:pw@cache:6379/2"})
    assert redis.queue_backend == "redis"
    relative = Settings.from_env({"PRBOT_QUEUE_URL": "sqlite:///var/q.db"})
    assert relative.sqlite_path == Path("var/q.db")


def test_private_key_from_a_file_or_with_escaped_newlines(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text(KEY)
    from_file = Settings.from_env({"GITHUB_PRIVATE_KEY_PATH": str(tmp_path / "key.pem")})
    assert from_file.github_private_key == Secret(KEY)
    escaped = Settings.from_env({"GITHUB_PRIVATE_KEY": KEY.replace("\n", "\\n")})
    assert escaped.github_private_key == Secret(KEY)
    missing = Settings.from_env({"GITHUB_PRIVATE_KEY_PATH": str(tmp_path / "nope.pem"), "GITHUB_APP_ID": "1"})
    assert missing.missing("worker") == [
        f"GITHUB_PRIVATE_KEY_PATH ({tmp_path / 'nope.pem'}: No such file or directory)"]


def test_require_names_every_missing_setting() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"PRBOT_QUEUE_URL": "postgres://db/prbot"}).require("serve")
    message = str(err.value)
    for name in ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH", "GITHUB_WEBHOOK_SECRET",
                 "PRBOT_QUEUE_URL"):
        assert name in message
    assert "\n" not in message
    assert Settings.from_env({"GITHUB_WEBHOOK_SECRET": "x"}).missing("web") == []
    assert Settings.from_env({"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": KEY}).missing("worker") == []
    broken = Settings.from_env({"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\nk\n"})
    [problem] = broken.missing("worker")
    assert problem.startswith("GITHUB_PRIVATE_KEY (not a PEM private key") and "\nk" not in problem


def test_timing_tunables_from_the_environment(tmp_path: Path) -> None:
    env = {**full_env(tmp_path), "PRBOT_LEASE_SECONDS": "4", "PRBOT_HEARTBEAT_SECONDS": "0.5",
           "PRBOT_MAX_ATTEMPTS": "3", "PRBOT_STORE_TIMEOUT": "0.25", "PRBOT_DEAD_LETTER_RETRY": "20"}
    s = Settings.from_env(env)
    assert (s.lease_seconds, s.heartbeat_seconds, s.max_attempts, s.store_timeout, s.dead_letter_retry) == (
        4.0, 0.5, 3, 0.25, 20.0)
    bad = Settings.from_env({**env, "PRBOT_LEASE_SECONDS": "-1", "PRBOT_MAX_ATTEMPTS": "many"})
    with pytest.raises(SettingsError) as err:
        bad.require("worker")
    assert "PRBOT_LEASE_SECONDS" in str(err.value) and "PRBOT_MAX_ATTEMPTS" in str(err.value)
    assert bad.lease_seconds == 30.0, "a refused value keeps the default"


@pytest.mark.parametrize("text", ["cn-hangzhou", "a=b c d", "{\"x\": 1}", "{bad", "a=evil.com/x", "a b=c"])
def test_bad_acr_hosts_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_acr_hosts(text)
    assert any(p.startswith("PRBOT_ACR_HOSTS") for p in Settings.from_env({"PRBOT_ACR_HOSTS": text}).problems)


def test_disk_floor_and_registry_rate_limit_from_the_environment() -> None:
    tuned = Settings.from_env({"PRBOT_DISK_FLOOR_MB": "2048", "PRBOT_REGISTRY_RATE_LIMIT": "30"})
    assert (tuned.disk_floor_mb, tuned.registry_rate_limit) == (2048.0, 30)
    bad = Settings.from_env({"PRBOT_DISK_FLOOR_MB": "lots", "PRBOT_REGISTRY_RATE_LIMIT": "1.5"})
    assert [p.split(" ", 1)[0] for p in bad.problems] == ["PRBOT_DISK_FLOOR_MB", "PRBOT_REGISTRY_RATE_LIMIT"]


def test_acr_hosts_as_json() -> None:
    assert parse_acr_hosts('{"cn-shanghai": "registry.example.com:5000"}') == {
        "cn-shanghai": "registry.example.com:5000"}


def test_repr_never_shows_a_secret(tmp_path: Path) -> None:
    env = full_env(tmp_path)
    env["PRBOT_QUEUE_URL"] = "redis://:redis-password-value@cache:6379/0"
    s = Settings.from_env(env)
    shown = repr(s) + str(s) + repr(s.github_private_key) + f"{s.registry_token}"
    for secret in ("hook-secret-value", "registry-token-value", "MIIEowIBAAKCAQEA", "line-two-of-the-key"):
        assert secret not in shown
    assert "redis-password-value" in s.secrets()


def _log_line(record_fn: object, *secrets: str) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"prbot.test.{id(stream)}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    for s in secrets:
        add_secret(s)
    assert callable(record_fn)
    record_fn(logger)
    [line] = stream.getvalue().splitlines()
    return dict(json.loads(line))


def test_json_lines_carry_the_context() -> None:
    def emit(logger: logging.Logger) -> None:
        with log_context(delivery="d-7", repo="acme/gitops", pr=12), log_context(job="j1", kind="plan"):
            logger.info("planned %d targets", 3, extra={"targets": 3})

    line = _log_line(emit)
    assert line["msg"] == "planned 3 targets" and line["targets"] == 3
    assert (line["delivery"], line["repo"], line["pr"], line["job"], line["kind"]) == ("d-7", "acme/gitops", 12,
                                                                                       "j1", "plan")
    outside = _log_line(lambda logger: logger.warning("no context"))
    assert "delivery" not in outside and outside["level"] == "warning"


def test_secrets_are_scrubbed_from_messages_arguments_and_tracebacks() -> None:
    secret = "s3cr3t-value-for-the-redactor"

    def emit(logger: logging.Logger) -> None:
        try:
            raise RuntimeError(f"token {secret} refused; installation ghs_abcdefghijklmnopqrstuvwxyz0123")
        except RuntimeError:
            logger.exception("call failed with %s and %s", secret, "Authorization: Bearer abc.def.ghi",
                             extra={"url": "https://x/webhooks/registry/generic?token=tok123&repo=a/b",
                                    "sig": "sha256=" + "a" * 64})

    line = json.dumps(_log_line(emit, secret))
    for leaked in (secret, "ghs_abcdefghijklmnopqrstuvwxyz0123", "abc.def.ghi", "tok123", "a" * 64):
        assert leaked not in line
    assert "repo=a/b" in line and "Bearer ***" in line


def test_redact_keeps_ordinary_text() -> None:
    assert redact("the token is wrong for acme/gitops") == "the token is wrong for acme/gitops"
    assert redact("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----") == "***"
    assert redact("redis://user:pw@host:6379") == "redis://***@host:6379"

"""Service settings from the environment.

`Settings.from_env()` never fails on a missing value; `Settings.require(role)` raises one
`SettingsError` naming every missing or invalid setting the role ("web", "worker" or "serve"
= both) needs, so `prbot serve` / `prbot worker` stop at once with one line.  Secret values are
`Secret`s: their repr and str are ``'***'``, so a settings object can be logged.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from prbot.errors import SettingsError

Role = Literal["web", "worker", "serve"]

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_DATA_DIR = ".prbot-data"
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")
_KEY = re.compile(r"[A-Za-z0-9_.-]+")


class Secret:
    """A secret string: never shown by repr/str; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything the web app and the workers read from the environment.

    The tunables below the environment block have defaults fit for production; tests shorten them.
    """

    github_app_id: str | None = None
    github_private_key: Secret | None = None
    github_webhook_secret: Secret | None = None
    github_api_url: str = DEFAULT_API_URL
    registry_token: Secret | None = None
    queue_url: str = ""                          # "" → sqlite under data_dir
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    clusters_file: Path | None = None            # PRBOT_CLUSTERS
    acr_hosts: Mapping[str, str] = field(default_factory=dict)
    status_page: Literal["off", "token", "github"] = "off"      # PRBOT_STATUS_PAGE: who may see /status
    status_token: Secret | None = None           # PRBOT_STATUS_TOKEN (status_page=token)
    github_client_id: str | None = None          # GITHUB_CLIENT_ID: the App's OAuth client (status_page=github)
    github_client_secret: Secret | None = None   # GITHUB_CLIENT_SECRET
    github_web_url: str | None = None            # GITHUB_WEB_URL: sign-in pages; None: derived from the API URL
    public_url: str | None = None                # PRBOT_PUBLIC_URL: where users reach prbot (the OAuth callback)
    problems: tuple[str, ...] = ()               # invalid values found while reading the environment

    # tunables
    max_attempts: int = 8                        # runs of one job before it is recorded as failed
    retry_base: float = 2.0                      # first backoff (seconds), doubled per attempt
    retry_max: float = 600.0                     # cap of one backoff
    lease_seconds: float = 30.0                  # a worker whose heartbeat is older is dead
    heartbeat_seconds: float = 10.0              # heartbeat (and journal sweep) period
    store_timeout: float = 10.0                  # seconds one Redis request may take before it counts as failed
    dead_letter_retry: float = 60.0              # seconds between probes of the dead-letter set
    delivery_claim: float = 30.0                 # seconds a delivery being accepted stays claimed by its web process
    delivery_ttl: float = 7 * 24 * 3600.0        # how long a delivery id is remembered
    journal_ttl: float = 7 * 24 * 3600.0         # how long a finished job's id is remembered
    max_github_body: int = 25 * 1024 * 1024      # GitHub caps payloads at 25 MB
    max_registry_body: int = 1024 * 1024
    poll_max_delay: float = 1.0                  # longest idle pause of a SQLite queue worker
    deploy_timeout: float = 15 * 60.0            # PRBOT_DEPLOY_TIMEOUT: seconds an environment may take to be healthy
    deploy_poll: float | None = None             # PRBOT_DEPLOY_POLL: seconds between health polls (None: 5 s → 30 s)
    disk_floor_mb: float = 1024.0                # PRBOT_DISK_FLOOR_MB: /readyz fails below this free space
    registry_rate_limit: int = 120               # PRBOT_REGISTRY_RATE_LIMIT: registry calls per token per window
    registry_rate_window: float = 60.0           # the window of that limit (seconds)
    routing_ttl: float = 3600.0                  # how long a finished routing job's id is remembered
    warm_targets: int = 500                      # PRBOT_WARM_TARGETS: targets warmed per default-branch push (0: off)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value is not None and value.strip() else None

        key = get("GITHUB_PRIVATE_KEY")
        key_path = get("GITHUB_PRIVATE_KEY_PATH")
        private_key: Secret | None = None
        if key:
            private_key = Secret(key.replace("\\n", "\n") if "\n" not in key else key)
        elif key_path:
            try:
                private_key = Secret(Path(key_path).read_text())
            except OSError as exc:
                problems.append(f"GITHUB_PRIVATE_KEY_PATH ({key_path}: {exc.strerror or exc})")
        data_dir = Path(get("PRBOT_DATA_DIR") or DEFAULT_DATA_DIR).absolute()
        acr_hosts: dict[str, str] = {}
        if get("PRBOT_ACR_HOSTS"):
            try:
                acr_hosts = parse_acr_hosts(env["PRBOT_ACR_HOSTS"])
            except ValueError as exc:
                problems.append(f"PRBOT_ACR_HOSTS ({exc})")
        clusters = get("PRBOT_CLUSTERS")
        deploy: dict[str, float] = {}
        for name, field_name in (("PRBOT_DEPLOY_TIMEOUT", "deploy_timeout"), ("PRBOT_DEPLOY_POLL", "deploy_poll")):
            raw = get(name)
            if raw is None:
                continue
            try:
                deploy[field_name] = float(raw)
                if deploy[field_name] < 0:
                    raise ValueError
            except ValueError:
                problems.append(f"{name} (expected a number of seconds, got {raw[:40]!r})")
        deploy.update(_numbers(get, problems))
        tunables: dict[str, Any] = {}
        for name, (field_name, kind) in _TUNABLES.items():
            raw = get(name)
            if raw is None:
                continue
            try:
                tunables[field_name] = kind(raw)
                if tunables[field_name] <= 0:
                    raise ValueError
            except ValueError:
                tunables.pop(field_name, None)
                problems.append(f"{name} (expected a positive number, got {raw[:40]!r})")
        page = (get("PRBOT_STATUS_PAGE") or "off").strip().lower()
        if page not in ("off", "token", "github"):
            problems.append(f"PRBOT_STATUS_PAGE (expected off, token or github, got {page[:40]!r})")
            page = "off"
        values: dict[str, Any] = {
            "status_page": page,
            "status_token": Secret(v) if (v := get("PRBOT_STATUS_TOKEN")) else None,
            "github_client_id": get("GITHUB_CLIENT_ID"),
            "github_client_secret": Secret(v) if (v := get("GITHUB_CLIENT_SECRET")) else None,
            "github_web_url": (get("GITHUB_WEB_URL") or "").rstrip("/") or None,
            "public_url": (get("PRBOT_PUBLIC_URL") or "").rstrip("/") or None,
            "github_app_id": get("GITHUB_APP_ID"),
            "github_private_key": private_key,
            "github_webhook_secret": Secret(v) if (v := get("GITHUB_WEBHOOK_SECRET")) else None,
            "github_api_url": (get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/"),
            "registry_token": Secret(v) if (v := get("PRBOT_REGISTRY_TOKEN")) else None,
            "queue_url": get("PRBOT_QUEUE_URL") or "",
            "data_dir": data_dir,
            "clusters_file": Path(clusters) if clusters else None,
            "acr_hosts": acr_hosts,
            "problems": tuple(problems),
            **deploy,
            **tunables,
        }
        values.update(overrides)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        return replace(self, **overrides)

    # -- derived --------------------------------------------------------------------------------

    @property
    def queue_backend(self) -> Literal["sqlite", "redis"]:
        url = self.effective_queue_url
        return "redis" if url.startswith(("redis://", "rediss://", "unix://")) else "sqlite"

    @property
    def effective_queue_url(self) -> str:
        return self.queue_url or f"sqlite:///{self.data_dir / 'queue.db'}"

    @property
    def web_url(self) -> str:
        """GitHub's web pages (sign-in): `GITHUB_WEB_URL`, else github.com for the public API and the
        API URL without `/api/v3` for GitHub Enterprise Server."""
        if self.github_web_url:
            return self.github_web_url
        if self.github_api_url.rstrip("/") == DEFAULT_API_URL:
            return "https://github.com"
        return self.github_api_url.rstrip("/").removesuffix("/api/v3")

    @property
    def sqlite_path(self) -> Path:
        """The queue file of a ``sqlite:///path`` URL (``sqlite:////abs`` or ``sqlite:///rel``)."""
        url = self.effective_queue_url
        if not url.startswith("sqlite:///"):
            raise SettingsError(f"PRBOT_QUEUE_URL is not a sqlite:/// URL: {redact_url(url)}")
        return Path(url[len("sqlite:///"):])

    def missing(self, role: Role) -> list[str]:
        """The settings `role` needs that are absent or invalid (names, with a reason when invalid)."""
        out: list[str] = []
        if role in ("worker", "serve"):
            if not self.github_app_id:
                out.append("GITHUB_APP_ID")
            if self.github_private_key is None and not any(p.startswith("GITHUB_PRIVATE_KEY") for p in self.problems):
                out.append("GITHUB_PRIVATE_KEY or GITHUB_PRIVATE_KEY_PATH")
            elif self.github_private_key is not None and not signing_key_ok(self.github_private_key.reveal()):
                out.append("GITHUB_PRIVATE_KEY (not a PEM private key the App can sign its JWT with; "
                           "use the .pem GitHub generated for the App)")
        if role in ("web", "serve") and not self.github_webhook_secret:
            out.append("GITHUB_WEBHOOK_SECRET")
        if role in ("web", "serve") and self.status_page == "token" and \
                (self.status_token is None or len(self.status_token.reveal()) < 16):
            out.append("PRBOT_STATUS_TOKEN (PRBOT_STATUS_PAGE=token needs a token of 16 characters or more)")
        if role in ("web", "serve") and self.status_page == "github":
            out.extend(name for name, value in (("GITHUB_CLIENT_ID", self.github_client_id),
                                                ("GITHUB_CLIENT_SECRET", self.github_client_secret)) if not value)
        out.extend(self.problems)
        url = self.effective_queue_url
        if not url.startswith(("sqlite:///", "redis://", "rediss://", "unix://")):
            out.append(f"PRBOT_QUEUE_URL (expected sqlite:///PATH or redis://HOST:PORT/DB, got {redact_url(url)})")
        return out

    def require(self, role: Role) -> Settings:
        missing = self.missing(role)
        if missing:
            raise SettingsError("missing or invalid settings: " + "; ".join(missing))
        return self

    def secrets(self) -> list[str]:
        """Every secret value (for the log redactor)."""
        out = []
        for s in (self.github_private_key, self.github_webhook_secret, self.registry_token, self.status_token,
                  self.github_client_secret):
            if s:
                out.append(s.reveal())
        if (pw := _url_password(self.queue_url)) is not None:
            out.append(pw)
        return out


def _numbers(get: Any, problems: list[str]) -> dict[str, Any]:
    """The numeric service limits set in the environment (a bad value is a problem, not a crash)."""
    out: dict[str, Any] = {}
    for name, field_name, kind in (("PRBOT_DISK_FLOOR_MB", "disk_floor_mb", float),
                                   ("PRBOT_REGISTRY_RATE_LIMIT", "registry_rate_limit", int),
                                   ("PRBOT_WARM_TARGETS", "warm_targets", int)):
        raw = get(name)
        if raw is None:
            continue
        try:
            out[field_name] = kind(raw)
            if out[field_name] < 0:
                raise ValueError
        except ValueError:
            problems.append(f"{name} (expected a non-negative {kind.__name__}, got {raw[:40]!r})")
    return out
_TUNABLES: dict[str, tuple[str, type[int] | type[float]]] = {
    "PRBOT_MAX_ATTEMPTS": ("max_attempts", int),
    "PRBOT_RETRY_BASE": ("retry_base", float),
    "PRBOT_RETRY_MAX": ("retry_max", float),
    "PRBOT_LEASE_SECONDS": ("lease_seconds", float),
    "PRBOT_HEARTBEAT_SECONDS": ("heartbeat_seconds", float),
    "PRBOT_STORE_TIMEOUT": ("store_timeout", float),
    "PRBOT_DEAD_LETTER_RETRY": ("dead_letter_retry", float),
    "PRBOT_DELIVERY_CLAIM": ("delivery_claim", float),
}
"""Environment names of the timing tunables (operators rarely need them; tests shorten them)."""


def signing_key_ok(pem: str) -> bool:
    """Whether `pem` is a private key PyGithub can sign the App's JWT with (RS256)."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return False
    return isinstance(key, rsa.RSAPrivateKey)


def parse_acr_hosts(text: str) -> dict[str, str]:
    """``PRBOT_ACR_HOSTS``: a JSON object, or ``key=host`` pairs separated by commas or spaces."""
    text = text.strip()
    pairs: dict[str, str]
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg}") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, str) for v in loaded.values()):
            raise ValueError("expected a JSON object of strings")
        pairs = {str(k): v for k, v in loaded.items()}
    else:
        pairs = {}
        for item in re.split(r"[,\s]+", text):
            if not item:
                continue
            key, sep, host = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not REGION_OR_INSTANCE=HOST")
            pairs[key.strip()] = host.strip()
    for key, host in pairs.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"{key!r} is not a region or instance id")
        if not _HOST.fullmatch(host):
            raise ValueError(f"{host!r} is not a registry host")
    return pairs


def _url_password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***."""
    pw = _url_password(url)
    return url.replace(f":{pw}@", ":***@") if pw else url

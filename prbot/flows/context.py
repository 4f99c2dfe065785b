"""The repository a flow works on (`Repo`: forge, mirror, store) and its configuration, always
read from the default branch so that a pull request cannot loosen its own gate.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prbot.config import CONFIG_FILE, Config, load_config
from prbot.errors import ConfigError
from prbot.plan import DryRunner
from prbot.ports import (
    Deployer,
    Forge,
    Store,
    Workspace,
)

log = logging.getLogger("prbot.flows")


@dataclass
class Repo:
    """Everything a flow needs about one repository."""

    forge: Forge
    workspace: Workspace
    store: Store
    installation_id: int = 0
    bot_login: str | None = None                         # our own login ("prbot[bot]"), when known
    render_cache: Path | None = None                     # the render pool's disk cache
    dry_runner: Callable[[Config], DryRunner | None] | None = None   # None: no clusters configured
    deployer: Deployer | None = None                     # None: no clusters configured
    deploy_timeout: float = 15 * 60.0                    # seconds an environment may take to be healthy
    clock: Callable[[], float] = time.time

    @property
    def name(self) -> str:
        return self.forge.full_name

    def default_ref(self) -> str:
        return f"refs/heads/{self.forge.default_branch}"


# --------------------------------------------------------------------------------------------
# Configuration: always the default branch's (a PR cannot loosen its own gate)
# --------------------------------------------------------------------------------------------

def default_config(repo: Repo) -> Config | None:
    """`.prbot.yml` of the default branch as fetched into the mirror; None when there is none.

    Raises `ConfigError` when it is invalid.
    """
    data = repo.workspace.read_file(repo.default_ref(), CONFIG_FILE)
    if data is None:
        return None
    try:
        return load_config(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{CONFIG_FILE}: not UTF-8 text"]) from exc


def config_at(repo: Repo, rev: str) -> Config | None:
    """`.prbot.yml` at a commit of the mirror (a merge commit of the default branch); None: none."""
    data = repo.workspace.read_file(rev, CONFIG_FILE)
    if data is None:
        return None
    try:
        return load_config(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{CONFIG_FILE}: not UTF-8 text"]) from exc


# --------------------------------------------------------------------------------------------
# The last deployment outcome of each environment (written by the deploy flow)
# --------------------------------------------------------------------------------------------

def env_state_key(repo: Repo, env: str) -> str:
    return f"envstate:{repo.name}:{env}"


def env_state(repo: Repo, env: str) -> Mapping[str, Any] | None:
    """What the deploy flow last recorded for `env`: sha, state, PR, deployment id, time."""
    return stored_record(repo, env_state_key(repo, env))


def stored_record(repo: Repo, key: str) -> Mapping[str, Any] | None:
    """The JSON object a flow keeps in the store at `key`; None when absent or unreadable."""
    raw = repo.store.get(key)
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None

"""`.prbot.yml`: typed configuration, loading and validation with FILE:LINE errors.

The data classes below are the contract the rest of prbot relies on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from prbot.errors import PrbotError

CONFIG_FILE = ".prbot.yml"


class ConfigError(PrbotError):
    """`.prbot.yml` is invalid.  ``errors`` holds every problem as ``FILE:LINE: message``."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__(self.errors[0] if len(self.errors) == 1 else
                         f"{self.errors[0]} (and {len(self.errors) - 1} more)")


@dataclass(frozen=True)
class Environment:
    name: str
    cluster: str | None = None
    auto_merge: bool = False
    kubernetes_version: str | None = None   # None: the newest schema version known
    deployers: tuple[str, ...] = ()


@dataclass(frozen=True)
class HelmSpec:
    chart: str | None = None                # repo-relative chart directory; None: the target dir
    values: tuple[str, ...] = ()            # values files relative to the target directory


@dataclass(frozen=True)
class SyncSpec:
    kind: Literal["argocd", "flux", "apply"]
    options: dict[str, Any] = field(default_factory=dict)   # e.g. {"application": "{app}-{env}"}


@dataclass(frozen=True)
class AppSpec:
    path: str                               # pattern with {app} and/or {env}
    name: str | None = None                 # fixed app name when the pattern has no {app}
    namespace: str | None = None            # pattern, e.g. "{app}-{env}"
    sync: SyncSpec | None = None
    helm: HelmSpec | None = None


@dataclass(frozen=True)
class ImageRule:
    repository: str                         # as written in the config (no tag)
    land_in: str | None = None              # None: the first environment
    tags: str | None = None                 # full-match regex; None: any valid tag
    policy: Literal["pushed", "semver"] = "pushed"
    digest: bool = False


@dataclass(frozen=True)
class PreviewSpec:
    environment: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Config:
    version: int
    environments: tuple[Environment, ...]
    apps: tuple[AppSpec, ...] = ()
    images: tuple[ImageRule, ...] = ()
    preview: PreviewSpec | None = None
    diff_ignore: tuple[str, ...] = ()

    @property
    def env_names(self) -> list[str]:
        return [e.name for e in self.environments]

    def env(self, name: str) -> Environment:
        for e in self.environments:
            if e.name == name:
                return e
        raise PrbotError(f"unknown environment {name!r} (known: {', '.join(self.env_names)})")

    def next_env(self, name: str) -> Environment | None:
        names = self.env_names
        i = names.index(self.env(name).name)
        return self.environments[i + 1] if i + 1 < len(names) else None

"""The index of installed GitOps repositories: which repository a registry push is routed to.

For every repository an installation of the App can see, the index keeps its installation, clone
URL, default branch and the `.prbot.yml` of its default branch (or why there is none).  A registry
push is routed to the repositories whose configuration lists the pushed image repository.

The index lives in the `Store` (one key per repository, so updates of different repositories never
race) and is refreshed on `installation` / `installation_repositories` events and on pushes that
change `.prbot.yml` on a default branch.  Reading it costs no GitHub call, which keeps the registry
webhook's answer cheap.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from prbot.config import Config, load_config
from prbot.errors import ConfigError, PrbotError
from prbot.image_rules import PushDecision, decide
from prbot.images import ImageRef, normalize_repository, same_repository
from prbot.ports import Store

PREFIX = "repo:"


@dataclass(frozen=True)
class IndexEntry:
    repo: str                           # "owner/name"
    installation_id: int
    default_branch: str
    clone_url: str
    config: str | None = None           # `.prbot.yml` text of the default branch; None: no file
    error: str | None = None            # why the configuration cannot be used (first problem)
    images: tuple[str, ...] = ()        # normalised image repositories its `images[]` lists

    def parsed(self) -> Config | None:
        if self.config is None or self.error:
            return None
        try:
            return load_config(self.config)
        except PrbotError:
            return None


@dataclass(frozen=True)
class Route:
    entry: IndexEntry
    config: Config
    decision: PushDecision

    def describe(self) -> dict[str, object]:
        """What the registry webhook answers for this repository."""
        return {"repo": self.entry.repo, "accepted": self.decision.accepted, "env": self.decision.env,
                "reason": self.decision.reason}


class RepoIndex:
    def __init__(self, store: Store) -> None:
        self.store = store

    def update(self, repo: str, installation_id: int, *, default_branch: str, clone_url: str,
               config_text: str | None) -> IndexEntry:
        """Record a repository and the `.prbot.yml` of its default branch (None: it has none)."""
        error = None
        images: tuple[str, ...] = ()
        if config_text is not None:
            try:
                images = tuple(_normal(r.repository) for r in load_config(config_text).images)
            except ConfigError as exc:
                error = exc.errors[0]
            except PrbotError as exc:
                error = str(exc)
        entry = IndexEntry(repo, installation_id, default_branch, clone_url, config_text, error, images)
        self.store.put(PREFIX + repo, json.dumps(asdict(entry)))
        return entry

    def get(self, repo: str) -> IndexEntry | None:
        raw = self.store.get(PREFIX + repo)
        return _entry(raw) if raw else None

    def remove(self, repo: str) -> None:
        self.store.delete(PREFIX + repo)

    def remove_installation(self, installation_id: int) -> list[str]:
        gone = [e.repo for e in self.entries() if e.installation_id == installation_id]
        for repo in gone:
            self.remove(repo)
        return gone

    def entries(self) -> list[IndexEntry]:
        out = []
        for _, raw in self.store.items(PREFIX):
            entry = _entry(raw)
            if entry is not None:
                out.append(entry)
        return sorted(out, key=lambda e: e.repo)

    def empty(self) -> bool:
        return next(iter(self.store.items(PREFIX)), None) is None

    def routes(self, image: ImageRef, repo: str | None = None) -> list[Route]:
        """The repositories whose configuration lists `image`'s repository, each with the decision
        its `images[]` rule makes about the push (tag filter; the semver check against the version in
        use happens in the bump flow, which knows it).  `repo` narrows to one repository."""
        out = []
        for entry in self.entries():
            if repo is not None and entry.repo.lower() != repo.lower():
                continue
            if image.repository not in entry.images:      # cheap: no YAML parsed for other repositories
                continue
            config = entry.parsed()
            if config is None or not any(same_repository(r.repository, image.name) for r in config.images):
                continue
            out.append(Route(entry, config, decide(config, image)))
        return out


def _normal(repository: str) -> str:
    try:
        return normalize_repository(repository)
    except PrbotError:
        return repository


def _entry(raw: str) -> IndexEntry | None:
    try:
        data = json.loads(raw)
        data["images"] = tuple(data.get("images") or ())
        return IndexEntry(**data)
    except (ValueError, TypeError):
        return None

"""Fixtures of the flow tests (`flowkit` builds the repository and says what it holds)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from flowkit import GITOPS_FILES, GitOps, Make, make_gitops, registered_bundles


@pytest.fixture(scope="session")
def render_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One render cache for every flow test (renders of the same files are the same)."""
    return tmp_path_factory.mktemp("flows-render-cache")


@pytest.fixture
def gitops(tmp_path: Path, render_cache: Path) -> GitOps:
    """A fresh `acme/gitops` on the stand-ins: shop at 1.0.0 in dev, staging and prod."""
    return make_gitops(tmp_path / "gitops", render_cache=render_cache)


@pytest.fixture
def make(tmp_path: Path, render_cache: Path) -> Make:
    """`make(files, fail=..., required_checks=...)`: another repository, built otherwise."""
    count = iter(range(1000))

    def build(files: Mapping[str, str] = GITOPS_FILES, *, fail: frozenset[str] = frozenset(),
              required_checks: tuple[str, ...] = ()) -> GitOps:
        return make_gitops(tmp_path / f"repo{next(count)}", files, fail=fail, required_checks=required_checks,
                           render_cache=render_cache)

    return build


@pytest.fixture
def bundles() -> Iterator[None]:
    """The test kind Bundle (flowkit's `_Bundles`) has an expander while the test runs."""
    yield from registered_bundles()

"""Fixtures of the flow tests (`flowkit` builds the repository and says what it holds)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flowkit import GitOps, make_gitops

Make = Callable[..., GitOps]


@pytest.fixture
def gitops(tmp_path: Path) -> GitOps:
    """A fresh `acme/gitops` on the stand-ins: shop at 1.0.0 in dev, staging and prod."""
    return make_gitops(tmp_path / "gitops")


@pytest.fixture
def make(tmp_path: Path) -> Make:
    """`make(files, fail=..., required_checks=...)`: another repository, built otherwise."""
    count = iter(range(1000))

    def build(*args: object, **kw: object) -> GitOps:
        return make_gitops(tmp_path / f"repo{next(count)}", *args, **kw)  # type: ignore[arg-type]

    return build

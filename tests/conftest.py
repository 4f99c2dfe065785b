"""pytest set-up: the real kubectl/helm (`prbot tools install`) first on PATH.

Tests see the tools through PATH only: $PRBOT_TOOLS_DIR is unset and $XDG_CACHE_HOME points at an
empty directory, so prbot's own lookup falls through to PATH, where a test may put a wrapper
first.  Tests of the lookup itself (tests/test_tools.py) set these up as they need.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakegithub import FakeGitHub
from fakekube import FakeKube
from stands import OciRegistry, oci_registry
from support import TOOLS, copy_example

from prbot.cluster.clusters import ClusterRef

if TOOLS.is_dir():
    os.environ["PATH"] = f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ.pop("PRBOT_TOOLS_DIR", None)
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="prbot-test-xdg-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    missing = [b for b in ("kubectl", "helm", "helm3", "git") if shutil.which(b) is None]
    if missing:
        raise pytest.UsageError(f"missing {', '.join(missing)} on PATH: run `prbot tools install` "
                                "(or scripts/fetch-tools) first")


@pytest.fixture
def example_repo(tmp_path: Path) -> Path:
    """A fresh git repository holding examples/gitops (one commit on main)."""
    return copy_example(tmp_path / "gitops")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the render cache of each test session away from the user's ~/.cache."""
    monkeypatch.setenv("PRBOT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def registry() -> Iterator[OciRegistry]:
    """A real OCI registry (Debian's docker-registry) on 127.0.0.1 for the whole session (tests/stands.py);
    charts are pushed to it with `helm push`.  Without the binary the tests using it fail, saying so."""
    with oci_registry() as running:
        yield running


@pytest.fixture
def fake_kube() -> Iterator[FakeKube]:
    """The Kubernetes API stand-in (tests/fakekube.py), running on 127.0.0.1."""
    with FakeKube() as fake:
        yield fake


@pytest.fixture
def cluster(fake_kube: FakeKube, tmp_path: Path) -> ClusterRef:
    """A PRBOT_CLUSTERS entry named "dev" for `fake_kube`."""
    return ClusterRef("dev", fake_kube.write_kubeconfig(tmp_path / "kube" / "config"))


@pytest.fixture
def fake_github(tmp_path: Path) -> Iterator[FakeGitHub]:
    """A fresh fake GitHub on 127.0.0.1 (see tests/fakegithub); fails the test if the fake crashed."""
    with FakeGitHub(tmp_path / "fake-github") as fake:
        yield fake
        fake.assert_healthy()

"""The flow tests' GitOps repository on the in-memory stand-ins (`prbot.standins`).

The repository (`GITOPS_FILES`) is one kustomize app, `shop`, with a base and dev / staging / prod
overlays that pin `ghcr.io/acme/shop` by `newTag`; its `.prbot.yml` puts each environment on a
cluster (Argo CD syncs), lets only alice deploy prod, and accepts semantic-version tags of the
image, landing in dev.

`GitOps` holds what a flow sees — `repo` (a `flows.Repo` over a `MemoryForge`, the real
`Mirror` and a `MemoryStore`), the `StandinClusters` and a clock moved by hand — plus what the
test does as a person would: push a branch and open a PR with a change, merge it, comment.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prbot import flows
from prbot.expand import EXPANDERS, ExpandContext, Expander, Inputs, InputsContext
from prbot.ports import Comment, Permission, PullRequest
from prbot.standins import MemoryForge, MemoryStore, StandinClusters
from prbot.workspace import Mirror

REPO = "acme/gitops"
IMAGE = "ghcr.io/acme/shop"
ENVS = ("dev", "staging", "prod")
VERSIONS = {"dev": "1.0.0", "staging": "1.0.0", "prod": "1.0.0"}

CONFIG = """\
version: 1
environments:
  - name: dev
    cluster: dev
  - name: staging
    cluster: staging
  - name: prod
    cluster: prod
    deployers: ["alice"]
apps:
  - path: "apps/{app}/envs/{env}"
    namespace: "{app}-{env}"
    sync:
      argocd: {application: "{app}-{env}", namespace: argocd}
images:
  - repository: ghcr.io/acme/shop
    tags: '^[0-9]+\\.[0-9]+\\.[0-9]+$'
    policy: semver
"""

BASE_KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  replicas: 1
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
    spec:
      containers:
        - name: shop
          image: ghcr.io/acme/shop:0.0.0
"""


def overlay(env: str, tag: str) -> str:
    """The kustomization of `shop` in `env`, running `tag`."""
    return f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: shop-{env}
resources:
  - ../../base
images:
  - name: ghcr.io/acme/shop
    newTag: "{tag}"
"""


def overlay_path(env: str) -> str:
    return f"apps/shop/envs/{env}/kustomization.yaml"


GITOPS_FILES: dict[str, str] = {
    ".prbot.yml": CONFIG,
    "apps/shop/base/kustomization.yaml": BASE_KUSTOMIZATION,
    "apps/shop/base/deployment.yaml": DEPLOYMENT,
    **{overlay_path(env): overlay(env, tag) for env, tag in VERSIONS.items()},
}

# A target holding a HelmRelease (its chart in this repository) and a Bundle: objects the cluster's
# Flux (or a controller) expands; prbot shows their expansions in a plan but never applies them.
RELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: web}
spec:
  chart:
    spec:
      chart: ./charts/web
      sourceRef: {kind: GitRepository, name: fleet}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: fleet}
spec:
  url: https://github.com/acme/gitops
  ref: {branch: main}
---
apiVersion: example.prbot.dev/v1
kind: Bundle
metadata: {name: extras}
spec: {path: bundled}
"""

CHART = {
    "charts/web/Chart.yaml": "apiVersion: v2\nname: web\nversion: 1.0.0\n",
    "charts/web/templates/deployment.yaml": DEPLOYMENT.replace("shop", "web-chart"),
    "bundled/kustomization.yaml": "resources: [deployment.yaml]\n",
    "bundled/deployment.yaml": DEPLOYMENT.replace("shop", "from-bundle"),
}


class _Bundles(Expander):
    """A kind whose expansion needs no source (`spec.path` built with kustomize), registered the way
    every expander is: it expands in any render, so a preview that applied expansions would show it."""

    kinds = (("example.prbot.dev", "Bundle"),)

    def inputs(self, doc: dict[str, Any], ctx: InputsContext) -> Inputs:
        return Inputs(local=[(str(doc.get("spec", {}).get("path", "")), "kustomize")])

    def expand(self, obj: dict[str, Any], ctx: ExpandContext) -> list[dict[str, Any]]:
        return ctx.render_path(ctx.local_path(obj["spec"]["path"], "path"), "kustomize")


def registered_bundles() -> Iterator[None]:
    """The Bundle expander registered while a test runs (the `bundles` fixture)."""
    EXPANDERS[_Bundles.kinds[0]] = _Bundles()
    try:
        yield
    finally:
        del EXPANDERS[_Bundles.kinds[0]]


PEOPLE: dict[str, Permission] = {"carol": "write", "dave": "read", "alice": "admin"}


def _git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Carol", "GIT_AUTHOR_EMAIL": "carol@example.com",
           "GIT_COMMITTER_NAME": "Carol", "GIT_COMMITTER_EMAIL": "carol@example.com",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


class Clock:
    """The flows' clock, moved by the test."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class GitOps:
    """The repository on the stand-ins, and what people do to it."""

    work: Path                  # a person's clone (pushes go to the forge's bare repository)
    forge: MemoryForge
    clusters: StandinClusters
    clock: Clock
    repo: flows.Repo

    # -- git, as a person ----------------------------------------------------------------------------
    def push_branch(self, branch: str, files: Mapping[str, str | bytes | None], *, start: str = "main",
                    message: str = "change") -> str:
        """Commit `files` (None: delete) on `branch`, started from `start` of the forge, and push it."""
        _git(self.work, "fetch", "-q", "origin")
        _git(self.work, "checkout", "-q", "-B", branch, f"origin/{start}")
        for path, content in files.items():
            target = self.work / path
            if content is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content.encode() if isinstance(content, str) else content)
        _git(self.work, "add", "-A")
        _git(self.work, "commit", "-q", "-m", message)
        _git(self.work, "push", "-q", "-f", "origin", f"{branch}:{branch}")
        return _git(self.work, "rev-parse", "HEAD")

    def open_pr(self, branch: str, files: Mapping[str, str | bytes | None], *,
                title: str = "A change") -> PullRequest:
        """Push `files` on `branch` from main and open a PR of it into main."""
        self.push_branch(branch, files, message=title)
        return self.forge.create_pull(title=title, body="", head=branch, base="main")

    def merge(self, number: int) -> str:
        """Merge the PR (its required checks, if any, must pass); the merge commit."""
        sha = self.forge.merge_pull(number, sha=self.forge.get_pull(number).head_sha, method="merge")
        assert sha is not None, f"PR #{number} did not merge"
        return sha

    def file(self, ref: str, path: str) -> str | None:
        """A file of the forge's repository at `ref` (a branch or a commit); None when absent."""
        proc = subprocess.run(["git", "--git-dir", str(self.forge.origin), "show", f"{ref}:{path}"],
                              capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else None

    def sha(self, ref: str) -> str:
        return _git(self.forge.origin, "rev-parse", ref)

    # -- GitHub, as a person sees it -----------------------------------------------------------------
    def comment(self, number: int, user: str, body: str) -> Comment:
        return self.forge.add_user_comment(number, user, body)

    def bot_comments(self, number: int) -> list[str]:
        return [c.body for c in self.forge.list_comments(number) if c.author == self.forge.bot_login]

    def open_pulls(self) -> list[PullRequest]:
        return [p for _, p in sorted(self.forge.pulls.items()) if p.state == "open"]


def make_gitops(base: Path, files: Mapping[str, str] = GITOPS_FILES, *, fail: frozenset[str] = frozenset(),
                required_checks: tuple[str, ...] = (), render_cache: Path | None = None) -> GitOps:
    """`files` as the one commit of main of `acme/gitops` on a stand-in GitHub, with the mirror,
    store and stand-in clusters a flow takes.  `render_cache`: the render pool's disk cache (the
    tests share one: a render depends only on the files rendered)."""
    seed = base / "seed"
    seed.mkdir(parents=True)
    for path, content in files.items():
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        (seed / path).write_text(content)
    _git(seed, "init", "-q", "-b", "main")
    _git(seed, "add", "-A")
    _git(seed, "commit", "-q", "-m", "Initial GitOps repository")
    origin = base / "github" / "acme" / "gitops.git"
    origin.parent.mkdir(parents=True)
    _git(base, "clone", "-q", "--bare", str(seed), str(origin))
    work = base / "work"
    _git(base, "clone", "-q", str(origin), str(work))
    forge = MemoryForge(REPO, origin, permissions=dict(PEOPLE), required_checks=required_checks)
    clusters = StandinClusters(source=origin, fail=fail, busy=False)
    clock = Clock()
    repo = flows.Repo(forge=forge, workspace=Mirror.for_forge(base / "prbot-data", forge), store=MemoryStore(),
                      bot_login=forge.bot_login, render_cache=render_cache or base / "render-cache",
                      deployer=clusters, clock=clock)
    return GitOps(work, forge, clusters, clock, repo)


Promoter = Callable[[flows.Repo, flows.DeployState, Any], str | None]


def follow(gitops: GitOps, sha: str, promote: Promoter | None = None) -> int:
    """Poll the deployment at `sha` until it is done, moving the clock by each delay; the polls made."""
    for polls in range(1, 41):
        delay = flows.poll_deploy(gitops.repo, gitops.clusters, sha, promote=promote)
        if delay is None:
            return polls
        assert delay > 0
        gitops.clock.advance(delay)
    raise AssertionError("the deployment was not done after 40 polls")


def result_comment(gitops: GitOps, number: int) -> str:
    """The deployment result comment on a merged PR (there is exactly one)."""
    [body] = [b for b in gitops.bot_comments(number) if b.startswith("<!-- prbot:deploy -->")]
    return body


Make = Callable[..., GitOps]
"""The `make` fixture: `make(files, fail=..., required_checks=...)` builds another repository."""

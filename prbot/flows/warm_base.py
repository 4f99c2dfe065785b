"""The default branch moved → its targets rendered in the background, so that a PR's plan against it
finds its base side in the render cache and renders only its head.

The render cache is keyed by each target's closure digest (`prbot.render.RenderPool`, on disk in
`Repo.render_cache`, shared by every job of the worker), and a PR's base side has the digests of
the default branch it forked from: once warmed, those renders are disk hits.  The warm job is the
queue's lowest priority, bounded (at most `max_targets` targets, half the cores, the plan time
budget) and superseded: each push records a fresh token (`warm:<repo>` in the store, `want`) and
a job whose token is no longer the newest stops before it starts and between two batches of
renders.  A job warms the default branch's head as fetched when it runs, never the sha its push
named, so pushes delivered out of order still end on the newest head.  Targets reading remote
inputs are left to the plans (they fetch them).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass

from prbot.errors import ConfigError, PrbotError
from prbot.flows.context import Repo, default_config
from prbot.plan.build import repository_identity
from prbot.plan.sides import plan_side
from prbot.ports import Store
from prbot.render import RenderPool
from prbot.renderers.closure import ClosureCache
from prbot.targets import discover_targets

log = logging.getLogger("prbot.flows")

MAX_TARGETS = 500           # the targets one warm job renders at most (PRBOT_WARM_TARGETS)
BATCH = 8                   # renders between two looks at whether the job is still wanted


@dataclass
class WarmOutcome:
    status: str             # "warmed" | "superseded" | "no-config" | "bad-config" | "off"
    targets: int = 0        # targets asked for (both renders and cache hits)
    rendered: int = 0       # renderer processes run (the rest were in the cache already)
    left: int = 0           # targets not warmed: over the bound, remote inputs, or the job superseded


def wanted_key(repo_name: str) -> str:
    """The store key holding the default-branch sha the newest push asked to warm."""
    return f"warm:{repo_name}"


def want(store: Store, repo_name: str, sha: str) -> str:
    """Record a push of `sha` to the default branch: the token of the warm job to run (older jobs
    stop)."""
    token = uuid.uuid4().hex
    store.put(wanted_key(repo_name), json.dumps({"token": token, "sha": sha, "at": time.time()}))
    return token


def _still_wanted(repo: Repo, token: str) -> bool:
    raw = repo.store.get(wanted_key(repo.name))
    try:
        got = json.loads(raw) if raw is not None else None
    except ValueError:
        got = None
    return not isinstance(got, dict) or hmac.compare_digest(str(got.get("token")), token)


def warm_base(repo: Repo, token: str, *, max_targets: int = MAX_TARGETS) -> WarmOutcome:
    """Render the targets of the default branch's head into the render cache, unless a newer push
    than the one `token` came from (`want`) asked since (see the module doc)."""
    if max_targets <= 0:
        return WarmOutcome("off")
    ws = repo.workspace
    if not _still_wanted(repo, token):
        return WarmOutcome("superseded")
    ws.fetch(repo.default_ref())
    sha = ws.resolve(repo.default_ref())
    if sha is None:
        return WarmOutcome("no-config")
    try:
        config = default_config(repo)
    except ConfigError:
        return WarmOutcome("bad-config")
    if config is None:
        return WarmOutcome("no-config")
    # the plans' own pool settings: the same Kubernetes versions make the same cache keys
    pool = RenderPool(cache_dir=repo.render_cache, workers=max(1, (os.cpu_count() or 1) // 2),
                      kube_versions={e.name: e.kubernetes_version for e in config.environments
                                     if e.kubernetes_version})
    deadline = time.monotonic() + pool.limits.plan_budget
    with ws.materialize(sha) as root:
        try:
            found = discover_targets(config, root)
        except PrbotError as exc:
            log.info("warm base of %s at %s: no targets (%s)", repo.name, sha[:7], exc)
            return WarmOutcome("bad-config")
        chosen = {(t.app, t.env): t for t in found[:max_targets]}
        urls = repository_identity(config, ws.repository_urls)     # the plans' cache keys
        side = plan_side(root, chosen, ClosureCache())
        requests = [(root, t, side.keys[k]) for k, t in chosen.items() if k not in side.remote]
        outcome = WarmOutcome("warmed", targets=len(requests), left=len(found) - len(requests))
        before = pool.renders
        for start in range(0, len(requests), BATCH):
            if not _still_wanted(repo, token) or time.monotonic() >= deadline:
                outcome.status = "superseded" if time.monotonic() < deadline else "warmed"
                outcome.left += len(requests) - start
                break
            pool.render_many(requests[start:start + BATCH], deadline=deadline, repository_urls=urls)
        outcome.rendered = pool.renders - before
    log.info("warm base of %s at %s: %s, %d target(s), %d rendered, %d left", repo.name, sha[:7],
             outcome.status, outcome.targets, outcome.rendered, outcome.left)
    return outcome

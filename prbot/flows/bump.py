"""A registry push → the image-bump PR: one PR per (environment, image repository),
rewritten in place by newer pushes (as Renovate does), never downgraded under `policy: semver`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from prbot.branches import bump_branch
from prbot.config import CONFIG_FILE, Config
from prbot.edit import bump as edit_bump
from prbot.errors import ForgeError, PrbotError
from prbot.flows.context import Repo, default_config
from prbot.image_rules import decide
from prbot.images import ImageRef, is_newer
from prbot.ports import PullRequest, Store, Workspace
from prbot.render import RenderPool
from prbot.report.markdown import code, md
from prbot.report.texts import text

log = logging.getLogger("prbot.flows")

LABELS = ("prbot", "bump")


# --------------------------------------------------------------------------------------------
# Registry push → bump PR
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Push:
    """One image push as a registry reported it."""

    image: ImageRef                 # with tag (and digest when the registry gave one)
    source: str | None = None       # a commit URL when the pushing CI gave its repository
    at: float = 0.0


@dataclass
class BumpOutcome:
    status: str                     # "opened" | "updated" | "unchanged" | "ignored"
    reason: str = ""
    pull: PullRequest | None = None
    writes: int = 0


SEEN_TTL = 3600.0
"""Seconds a push (repository, tag, digest) is remembered after it was recorded: the same push
reported again within it — the `package` and `registry_package` events of one ghcr.io push, a
registry's redelivery — changes nothing, even after its bump went through."""


def _push_key(repo: str, repository: str) -> str:
    return f"push:{repo}:{repository}:"


def _push_ident(image: ImageRef) -> str:
    return f"{image.tag or ''}@{image.digest or ''}"


def _seen_key(repo: str, repository: str) -> str:
    return f"pushseen:{repo}:{repository}:"


def record_push(store: Store, repo: str, push: Push) -> bool:
    """Remember a push for `repo`'s next bump job; False when the same push (tag and digest) was
    recorded less than `SEEN_TTL` seconds before (the several events of one push, a redelivery).

    `push.at` is when the webhook was received: it orders the pushes of one image (`policy:
    pushed` takes the latest)."""
    image = push.image
    ident = _push_ident(image)
    seen = _seen_key(repo, image.repository) + ident
    if _number(store.get(seen)) > push.at - SEEN_TTL:
        return False
    value = json.dumps({"image": str(image), "source": push.source, "at": push.at})
    fresh = store.put_if_absent(_push_key(repo, image.repository) + ident, value)
    store.put(seen, repr(push.at))                   # after the push itself: a crash in between loses nothing
    return fresh


def _forget_seen(store: Store, repo: str, repository: str, now: float) -> None:
    for key, value in list(store.items(_seen_key(repo, repository))):
        if _number(value) <= now - SEEN_TTL:
            store.delete(key)


def _number(raw: str | None) -> float:
    try:
        return float(raw) if raw is not None else float("-inf")
    except ValueError:
        return float("-inf")


def take_pushes(store: Store, repo: str, repository: str) -> list[tuple[str, Push]]:
    """Every push recorded for (repo, repository) not yet bumped, oldest first, with its key."""
    from prbot.images import parse_image

    out: list[tuple[str, Push]] = []
    for key, raw in store.items(_push_key(repo, repository)):
        try:
            data = json.loads(raw)
            out.append((key, Push(parse_image(data["image"]), data.get("source"), float(data.get("at", 0)))))
        except (ValueError, KeyError, TypeError, PrbotError):
            store.delete(key)
    return sorted(out, key=lambda kp: kp[1].at)


def best_push(pushes: Sequence[Push], policy: str) -> Push | None:
    """The push a bump PR should carry (`pushes` oldest first): the latest, or under `semver` the
    highest version (of equal versions, the latest: a rebuild pushed under the same tag)."""
    if not pushes:
        return None
    if policy != "semver":
        return pushes[-1]
    best = pushes[0]
    for p in pushes[1:]:
        if is_newer(best.image.tag or "", p.image.tag or "") is not True:
            best = p
    return best


def bump_pending(repo: Repo, repository: str) -> BumpOutcome | None:
    """Bump to the best push recorded for `repository` (see `record_push`), then forget every push
    it makes obsolete.  Pushes are forgotten only after the bump went through, so a job that fails
    half-way and runs again sees them all again."""
    pending = take_pushes(repo.store, repo.name, repository)
    if not pending:
        return None
    repo.workspace.fetch(repo.default_ref())
    config = default_config(repo)
    policy = next((r.policy for r in (config.images if config else ()) if _same(r.repository, repository)), "pushed")
    best = best_push([p for _, p in pending], policy)
    assert best is not None
    outcome = _bump(repo, best, config)
    for key, _ in pending:
        repo.store.delete(key)
    _forget_seen(repo.store, repo.name, repository, repo.clock())
    return outcome


def _same(a: str, b: str) -> bool:
    from prbot.images import same_repository

    return same_repository(a, b)


def _bump_record_key(repo: str, branch: str) -> str:
    return f"bump:{repo}:{branch}"


def bump_pull_request(repo: Repo, push: Push) -> BumpOutcome:
    """Open — or update — the ONE bump PR of (environment, image repository) for `push`.

    The branch `prbot/bump/<env>/<repository-slug>` is rewritten as one fresh commit on the default
    branch; the PR's title and body follow.  Under `policy: semver` a lower version than the open
    PR's or the default branch's never replaces it; under `policy: pushed` a push received before
    the one the open PR carries does not either.  API writes: create + labels (+ auto-merge) for a
    new PR, one update for an existing one, none when nothing changed; a run that failed half-way
    and runs again makes only the writes still missing.
    """
    repo.workspace.fetch(repo.default_ref())
    return _bump(repo, push, default_config(repo))


def _bump(repo: Repo, push: Push, config: Config | None) -> BumpOutcome:
    """`bump_pull_request` with the default branch fetched and its configuration read."""
    forge, ws = repo.forge, repo.workspace
    if config is None:
        return BumpOutcome("ignored", f"{repo.name} has no {CONFIG_FILE} on {forge.default_branch}")
    decision = decide(config, push.image)
    if not decision.accepted or decision.env is None or decision.rule is None:
        return BumpOutcome("ignored", decision.reason)
    env, rule, image = decision.env, decision.rule, decision.image
    branch = bump_branch(env, image.repository)
    ws.fetch(f"refs/heads/{branch}")
    existing = forge.find_pull(branch, state="open")
    record = _read_json(repo.store.get(_bump_record_key(repo.name, branch)))
    if existing is not None and record is not None and record.get("pr") != existing.number:
        record = None                                 # the record of an earlier PR of this branch
    pool = RenderPool(cache_dir=repo.render_cache,          # a burst bumps one base: each target renders once
                      kube_versions={e.name: e.kubernetes_version for e in config.environments if e.kubernetes_version})
    if existing is not None:
        stale = _older_than_pull(ws, config, env, rule.policy, image, push, record, branch, existing, pool)
        if stale:
            return BumpOutcome("ignored", stale, existing)
    base_sha = ws.resolve(repo.default_ref())
    if base_sha is None:
        raise ForgeError(f"{repo.name}: default branch {forge.default_branch} not found")
    with ws.checkout(base_sha) as root:
        result = edit_bump(root, config, str(image), env, lower=rule.policy != "semver", pool=pool)
        if result.errors:
            raise PrbotError(f"cannot bump {image.repository} in {env}: {result.errors[0]}")
        if not result.matched:
            return BumpOutcome("ignored", f"no target of {env} uses {image.repository}")
        if result.refused:                            # policy: semver, and env runs a higher version
            return BumpOutcome("ignored", result.refused[0], existing)
        files = {e.path: (root / e.path).read_bytes() for e in result.edits}
    if not files:
        return BumpOutcome("unchanged", f"{env} already runs {image.version}", existing)
    title = text("bump_title", repository=image.repository, version=image.version, env=env)
    commit = ws.commit(parent=base_sha, files=files, message=text("bump_commit", repository=image.repository,
                                                                 version=image.version, env=env))
    body = _bump_body(config, env, image, result.edits, push, result.unchecked)
    writes = 0
    head = ws.resolve(f"refs/heads/{branch}")
    if head is None or not ws.same_tree(head, commit) or ws.resolve(f"{head}^") != base_sha:
        ws.push(branch, commit, force=True)
        head = commit
    labels = [*LABELS, f"env:{env}"]
    if existing is not None:
        if existing.title != title or existing.body != body:
            forge.update_pull(existing.number, title=title, body=body)
            writes += 1
        missing = [name for name in labels if name not in existing.labels]
        if missing:                                   # a run that opened the PR and failed before labelling it
            forge.add_labels(existing.number, missing)
            writes += 1
        pull, status = replace(existing, title=title, body=body, head_sha=head), "updated"
    else:
        pull = forge.create_pull(title=title, body=body, head=branch, base=forge.default_branch)
        forge.add_labels(pull.number, labels)
        writes += 2
        status = "opened"
    auto_merge = config.env(env).auto_merge
    if auto_merge and not (record and record.get("auto_merge")):     # once per PR, also when a run failed before
        writes += 1
        if not forge.enable_auto_merge(pull):
            repo.store.put(f"automerge:{repo.name}#{pull.number}", pull.head_sha)
    repo.store.put(_bump_record_key(repo.name, branch),
                   json.dumps({"repository": image.repository, "tag": image.tag, "digest": push.image.digest,
                               "version": image.version, "pr": pull.number, "sha": head, "at": push.at,
                               "auto_merge": auto_merge}))
    log.info("%s bump PR %s#%d: %s → %s in %s", status, repo.name, pull.number, image.repository, image.version, env)
    return BumpOutcome(status, pull=pull, writes=writes)


def _older_than_pull(ws: Workspace, config: Config, env: str, policy: str, image: ImageRef, push: Push,
                     record: dict[str, object] | None, branch: str, pull: PullRequest,
                     pool: RenderPool) -> str | None:
    """Why `push` must not replace what the open bump PR carries, or None.

    `record` (what the last bump of this PR wrote) answers; without one (the store was lost, the PR
    predates it) under `semver` the PR's branch itself does: a bump of it that `policy: semver`
    refuses means it carries a higher version."""
    if record is not None:
        if policy == "semver" and is_newer(str(record.get("tag")), image.tag or "") is True:
            return (f"tag {image.tag} is not a higher version than {record.get('tag')}, which PR #{pull.number} "
                    "carries (policy: semver)")
        at = record.get("at")
        if policy != "semver" and isinstance(at, int | float) and at > push.at:
            return f"tag {image.tag} was pushed before the one PR #{pull.number} carries ({record.get('tag')})"
        return None
    head = ws.resolve(f"refs/heads/{branch}")
    if policy != "semver" or head is None:
        return None
    with ws.checkout(head) as root:
        refused = edit_bump(root, config, str(image), env, pool=pool).refused
    return f"PR #{pull.number} carries a higher version: {refused[0]}" if refused else None


_SHA_TAG = re.compile(r"[0-9a-f]{7,40}")


def _bump_body(config: Config, env: str, image: ImageRef, edits: Sequence[object], push: Push,
               unchecked: Sequence[tuple[str, str]] = ()) -> str:
    rows = "\n".join(text("bump_row", target=code(getattr(e, "target", "")), path=code(getattr(e, "path", "")),
                          old=code(getattr(e, "old", "")), new=code(getattr(e, "new", ""))) for e in edits)
    details = []
    digest = image.digest or push.image.digest       # shown even when the rule does not pin it
    if digest:
        details.append(text("bump_digest", digest=code(digest)))
    if push.source and image.tag and _SHA_TAG.fullmatch(image.tag) and re.fullmatch(r"https://[^\s<>()]+", push.source):
        details.append(text("bump_source", link=f"[{image.tag[:7]}]({push.source.rstrip('/')}/commit/{image.tag})"))
    for key, why in unchecked:                      # targets whose use of the image prbot could not see
        details.append(text("bump_not_checked", target=code(key), why=md(why)))
    note = text("bump_auto_merge", env=env) if config.env(env).auto_merge else text("bump_manual_merge", env=env)
    return text("bump_body", repository=code(image.repository), version=code(image.version), env=md(env),
                rows=rows, details="".join(f"{d}\n" for d in details), merge_note=note)


def _read_json(raw: str | None) -> dict[str, object] | None:
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None

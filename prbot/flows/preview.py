"""Preview environments (`/prbot preview`, the `preview` label).

The PR head's targets of the preview environment are rendered and applied into namespace
`pr-<number>` on that environment's cluster, labelled with the PR.  The apply is *confined*: only
objects the live cluster's API discovery says are namespaced go in, each forced into `pr-<number>`
whatever namespace it names; everything else — cluster-scoped kinds (built-in or CRDs such as a
`ClusterSecretStore` or `GatewayClass`), kinds the cluster does not serve — is left out and listed,
with its reason, in the preview comment (a preview must not touch what other namespaces share).
Only someone with write permission starts one or has a push re-applied (the callers check; the head
applied is the one that person saw or pushed, `head_sha`).  New pushes by such a person re-apply
(pruning what the PR no longer renders); closing the PR or `/prbot preview stop` deletes
everything, namespace included.  The preview's URL
(`preview.url`, `{number}` filled in) is posted in one sticky comment.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prbot.config import Config, SyncSpec
from prbot.errors import HeadMoved, PrbotError, RenderError
from prbot.flows.context import Repo, stored_record
from prbot.flows.heads import MOVED
from prbot.flows.sticky import sticky_comment
from prbot.model import Target
from prbot.ports import Deployer, Progress, PullRequest
from prbot.render import render_target
from prbot.report.markdown import code, md, short_sha
from prbot.report.texts import text
from prbot.targets import discover_targets

log = logging.getLogger("prbot.flows")

PREVIEW_MARKER = "<!-- prbot:preview -->"
PR_LABEL = "prbot.dev/pr"
LABEL = "preview"
LEFT_OUT_SHOWN = 30                      # objects left out listed by name in the comment
# The preview's apply, pruning what the PR no longer renders: confined to the preview's namespace.
CONFINED = SyncSpec("apply", {"prune": True, "confine": True})


@dataclass
class PreviewOutcome:
    status: str                          # "deployed" | "updated" | "stopped" | "off"
    namespace: str = ""
    url: str | None = None
    progress: Progress | None = None


def _key(repo: Repo, number: int) -> str:
    return state_key(repo.name, number)


def state_key(repo: str, number: int) -> str:
    """Where a PR's preview is recorded while it is up (the handler asks before any GitHub call)."""
    return f"preview:{repo}#{number}"


def active(repo: Repo, number: int) -> Mapping[str, Any] | None:
    return stored_record(repo, _key(repo, number))


def preview_env(config: Config) -> str:
    env = (config.preview.environment if config.preview else None) or config.environments[0].name
    if config.env(env).cluster is None:
        raise PrbotError(f"previews need a cluster: environment {env!r} has no `cluster` in .prbot.yml")
    return env


def namespace_for(number: int) -> str:
    return f"pr-{number}"


def _synthetic(number: int, env: str) -> Target:
    """What the apply machinery labels and prunes the preview as (one per PR)."""
    return Target(app=f"pr-{number}", env=env, path="", renderer="plain", namespace=namespace_for(number))


def preview_objects(config: Config, root: Any, env: str, number: int) -> list[dict[str, Any]]:
    """The preview's Namespace, then the PR's targets of `env`, rendered, moved into `pr-<number>`
    and labelled with the PR.  Which of them are sent is the cluster's to say (the confined apply)."""
    namespace = namespace_for(number)
    labels = {PR_LABEL: str(number)}
    out: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": namespace, "labels": dict(labels)}}]
    for target in discover_targets(config, root):
        if target.env != env:
            continue
        try:
            objects = render_target(root, target, kube_version=config.env(env).kubernetes_version,
                                    expand=False)   # the cluster's Flux / Argo CD expands them
        except RenderError as exc:
            raise PrbotError(f"{target.path} does not render: {exc}") from exc
        for obj in objects:
            moved = copy.deepcopy(obj)
            meta = moved.get("metadata")
            meta = moved["metadata"] = dict(meta) if isinstance(meta, dict) else {}
            meta["namespace"] = namespace
            labels_of = meta.get("labels")
            meta["labels"] = {**(labels_of if isinstance(labels_of, dict) else {}), **labels}
            out.append(moved)
    return out


def preview_up(repo: Repo, deployer: Deployer, config: Config, pr: PullRequest, *,
               head_sha: str | None = None) -> PreviewOutcome:
    """Deploy (or update) the PR's preview at its current head.

    `head_sha`: the head a person with write permission asked for (or pushed); when the PR's head
    is another one (GitHub's answer or the fetched head ref), nothing is applied: `HeadMoved`.
    """
    env = preview_env(config)
    cluster = config.env(env).cluster
    assert cluster is not None
    ws = repo.workspace
    if head_sha is not None and pr.head_sha != head_sha:
        raise HeadMoved(MOVED)
    ws.fetch(f"refs/pull/{pr.number}/head")
    head = ws.resolve(f"refs/pull/{pr.number}/head") or pr.head_sha
    if head_sha is not None and head != head_sha:
        raise HeadMoved(MOVED)
    with ws.materialize(head) as root:
        objects = preview_objects(config, root, env, pr.number)
    was = active(repo, pr.number)
    ticket, progress = deployer.start(cluster, _synthetic(pr.number, env), CONFINED, head, objects=objects)
    url = preview_url(config, pr.number)
    repo.store.put(_key(repo, pr.number), json.dumps({"env": env, "cluster": cluster, "sha": head,
                                                      "namespace": namespace_for(pr.number), "ticket": ticket,
                                                      "progress": progress.to_json()}))
    _comment(repo, pr.number, text("preview_up", namespace=code(namespace_for(pr.number)), env=md(env),
                                   sha=code(short_sha(head)), url=_link(url), state=md(str(progress), 300),
                                   count=str(len(objects) - 1 - len(progress.left_out)),
                                   left_out=_left_out(progress.left_out)))
    return PreviewOutcome("updated" if was else "deployed", namespace_for(pr.number), url, progress)


def preview_down(repo: Repo, deployer: Deployer, config: Config | None, pr: PullRequest) -> PreviewOutcome:
    """Delete everything the preview applied (the namespace last), if it is up."""
    was = active(repo, pr.number)
    if was is None:
        return PreviewOutcome("off")
    env, cluster = str(was["env"]), str(was["cluster"])
    deployer.start(cluster, _synthetic(pr.number, env), CONFINED, str(was["sha"]), objects=[])
    repo.store.delete(_key(repo, pr.number))
    _comment(repo, pr.number, text("preview_down", namespace=code(namespace_for(pr.number)), env=md(env)))
    return PreviewOutcome("stopped", namespace_for(pr.number))


def preview_url(config: Config, number: int) -> str | None:
    template = config.preview.url if config.preview else None
    return template.replace("{number}", str(number)) if template else None


def _left_out(left_out: Sequence[tuple[str, str]]) -> str:
    """The objects the cluster did not take, one bullet each (the first `LEFT_OUT_SHOWN`)."""
    if not left_out:
        return ""
    rows = [f"- {code(what)}: {md(reason, 200)}" for what, reason in left_out[:LEFT_OUT_SHOWN]]
    if len(left_out) > LEFT_OUT_SHOWN:
        rows.append(text("preview_left_out_more", count=str(len(left_out) - LEFT_OUT_SHOWN)))
    return "\n" + text("preview_left_out", count=str(len(left_out)), rows="\n".join(rows))


def _link(url: str | None) -> str:
    return f"<{url}>" if url else text("preview_no_url")


def _comment(repo: Repo, number: int, body: str) -> None:
    sticky_comment(repo.forge, number, [f"{PREVIEW_MARKER}\n{body}"], bot_login=repo.bot_login,
                   is_mine=lambda b: b.startswith(PREVIEW_MARKER))

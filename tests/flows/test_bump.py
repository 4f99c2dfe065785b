"""Registry push → the image-bump PR (`prbot.flows.bump`): one PR per environment and image,
rewritten in place by later pushes, nothing for a tag the image rule refuses."""

from __future__ import annotations

from flowkit import CONFIG, GITOPS_FILES, IMAGE, GitOps, Make, overlay, overlay_path

from prbot import flows
from prbot.images import parse_image

BRANCH = "prbot/bump/dev/ghcr-io-acme-shop"
DIGEST = "sha256:" + "ab" * 32


def push(tag: str, at: float = 1.0, digest: str | None = None) -> flows.Push:
    return flows.Push(parse_image(f"{IMAGE}:{tag}" + (f"@{digest}" if digest else "")), at=at)


def test_a_push_opens_one_pr_into_the_first_environment_with_the_edited_file(gitops: GitOps) -> None:
    outcome = flows.bump_pull_request(gitops.repo, push("1.1.0", digest=DIGEST))
    assert outcome.status == "opened"
    [pr] = gitops.open_pulls()
    assert outcome.pull is not None and outcome.pull.number == pr.number
    assert (pr.head_ref, pr.base_ref) == (BRANCH, "main")
    assert pr.title == "Bump ghcr.io/acme/shop to 1.1.0 in dev"
    assert set(pr.labels) == {"prbot", "bump", "env:dev"}
    assert "| `shop/dev` | `apps/shop/envs/dev/kustomization.yaml` | `1.0.0` | `1.1.0` |" in pr.body
    assert f"- digest: `{DIGEST}`" in pr.body
    assert gitops.file(BRANCH, overlay_path("dev")) == overlay("dev", "1.1.0")
    for env in ("staging", "prod"):                                   # only the first environment moves
        assert gitops.file(BRANCH, overlay_path(env)) == overlay(env, "1.0.0")
    assert gitops.sha(f"{BRANCH}^") == gitops.sha("main")             # one commit on the default branch
    assert gitops.file("main", overlay_path("dev")) == overlay("dev", "1.0.0")


def test_a_second_push_rewrites_the_same_branch_and_never_opens_a_second_pr(gitops: GitOps) -> None:
    first = flows.bump_pull_request(gitops.repo, push("1.1.0", at=1.0))
    second = flows.bump_pull_request(gitops.repo, push("1.2.0", at=2.0))
    assert (first.status, second.status) == ("opened", "updated")
    assert len(gitops.forge.pulls) == 1
    [pr] = gitops.open_pulls()
    assert second.pull is not None and second.pull.number == pr.number
    assert pr.title == "Bump ghcr.io/acme/shop to 1.2.0 in dev"
    assert "| `1.0.0` | `1.2.0` |" in pr.body
    assert gitops.file(BRANCH, overlay_path("dev")) == overlay("dev", "1.2.0")
    assert gitops.sha(f"{BRANCH}^") == gitops.sha("main")             # rewritten, not stacked
    again = flows.bump_pull_request(gitops.repo, push("1.2.0", at=2.0))    # a redelivery writes nothing
    assert again.writes == 0 and len(gitops.forge.pulls) == 1


def test_a_lower_version_never_replaces_the_open_prs_under_semver(gitops: GitOps) -> None:
    flows.bump_pull_request(gitops.repo, push("1.2.0", at=1.0))
    outcome = flows.bump_pull_request(gitops.repo, push("1.1.0", at=2.0))
    assert outcome.status == "ignored" and "not a higher version than 1.2.0" in outcome.reason
    [pr] = gitops.open_pulls()
    assert pr.title.endswith("1.2.0 in dev")
    assert gitops.file(BRANCH, overlay_path("dev")) == overlay("dev", "1.2.0")


def test_a_tag_the_image_rule_refuses_opens_nothing(gitops: GitOps) -> None:
    for tag in ("latest", "1.1.0-rc.1"):
        outcome = flows.bump_pull_request(gitops.repo, push(tag))
        assert outcome.status == "ignored" and outcome.pull is None
        assert tag in outcome.reason
    unknown = flows.bump_pull_request(gitops.repo, flows.Push(parse_image("ghcr.io/acme/other:1.1.0")))
    assert unknown.status == "ignored"
    assert gitops.forge.pulls == {}
    assert gitops.file(BRANCH, overlay_path("dev")) is None            # no branch either


def test_the_version_dev_already_runs_changes_nothing(gitops: GitOps) -> None:
    outcome = flows.bump_pull_request(gitops.repo, push("1.0.0"))
    assert outcome.status == "unchanged" and outcome.reason == "dev already runs 1.0.0"
    assert gitops.forge.pulls == {}


def test_recorded_pushes_are_taken_oldest_first_and_a_redelivery_is_recorded_once(gitops: GitOps) -> None:
    store, name = gitops.repo.store, gitops.repo.name
    assert flows.record_push(store, name, push("1.3.0", at=10.0))
    assert flows.record_push(store, name, push("1.1.0", at=20.0))
    assert not flows.record_push(store, name, push("1.3.0", at=30.0))     # the same push again
    taken = [p for _, p in flows.take_pushes(store, name, IMAGE)]
    assert [(p.image.tag, p.at) for p in taken] == [("1.3.0", 10.0), ("1.1.0", 20.0)]
    assert flows.take_pushes(store, name, "ghcr.io/acme/other") == []


def test_best_push_is_the_highest_version_under_semver_and_the_latest_otherwise() -> None:
    pushes = [push("1.3.0", at=1.0), push("1.10.0", at=2.0), push("1.2.0", at=3.0)]
    semver = flows.best_push(pushes, "semver")
    pushed = flows.best_push(pushes, "pushed")
    assert semver is not None and semver.image.tag == "1.10.0"
    assert pushed is not None and pushed.image.tag == "1.2.0"
    assert flows.best_push([], "semver") is None


def test_bump_pending_carries_the_best_recorded_push_and_forgets_them_all(gitops: GitOps) -> None:
    store, name = gitops.repo.store, gitops.repo.name
    flows.record_push(store, name, push("1.3.0", at=10.0))
    flows.record_push(store, name, push("1.1.0", at=20.0))
    outcome = flows.bump_pending(gitops.repo, IMAGE)
    assert outcome is not None and outcome.status == "opened"
    [pr] = gitops.open_pulls()
    assert pr.title == "Bump ghcr.io/acme/shop to 1.3.0 in dev"
    assert gitops.file(BRANCH, overlay_path("dev")) == overlay("dev", "1.3.0")
    assert flows.take_pushes(store, name, IMAGE) == []
    assert flows.bump_pending(gitops.repo, IMAGE) is None


def test_a_target_reading_a_remote_base_not_allowed_is_named_and_the_bump_proceeds(make: Make) -> None:
    remote = "https://github.com/acme/infra//base?ref=v1.0.0"
    repo = make({**GITOPS_FILES,
                 "apps/vendor/envs/dev/kustomization.yaml": f"resources:\n  - {remote}\n"})
    outcome = flows.bump_pull_request(repo.repo, push("1.1.0"))
    assert outcome.status == "opened", outcome.reason
    [pr] = repo.open_pulls()
    assert "| `shop/dev` | `apps/shop/envs/dev/kustomization.yaml` | `1.0.0` | `1.1.0` |" in pr.body
    assert "- not checked: `vendor/dev` — it reads https" in pr.body and "render.remote" in pr.body
    assert repo.file(BRANCH, overlay_path("dev")) == overlay("dev", "1.1.0")


def test_under_policy_pushed_the_latest_push_wins_even_when_lower(make: Make) -> None:
    repo = make({**GITOPS_FILES, ".prbot.yml": CONFIG.replace("policy: semver", "policy: pushed")})
    outcome = flows.bump_pull_request(repo.repo, push("0.9.0"))       # dev runs 1.0.0: a rollback by push
    assert outcome.status == "opened", outcome.reason
    assert repo.file(BRANCH, overlay_path("dev")) == overlay("dev", "0.9.0")

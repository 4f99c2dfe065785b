"""A burst of registry pushes (issue 7): dozens at once, repeated, out of order, for several images
of one GitOps repository, ends with ONE open bump PR per image at its highest version (`policy:
semver`) or its last pushed tag (`policy: pushed`), the branch holding exactly the one-line change,
and at most 3 API writes per PR — also while GitHub answers secondary rate limits (403 and 429 with
`Retry-After`) and 5xx to writes.  Out-of-order semver pushes never downgrade an open PR or the
default branch.

Everything real but GitHub: the Flask app, the huey queue on SQLite with a worker, the bare mirror
fetched and pushed over smart HTTP; GitHub is the stateful fake on 127.0.0.1.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from appkit import Bot
from fakegithub import FakeGitHub, Pull
from gitops import acr_push
from service_support import GITHUB_FIXTURES

from prbot.branches import bump_branch
from prbot.images import parse_semver

REPO = "acme/gitops"
ENVS = ("dev", "staging", "prod")

ACR = "registry.cn-hangzhou.aliyuncs.com/demo/app"        # the ACR sample's image: commit-sha tags
API = "registry.example.com/acme/api"                     # semver, v-prefixed
WEB = "registry.example.com/acme/web"                     # semver, bare
WORKER = "registry.example.com/acme/worker"               # pushed: the last pushed tag wins
GHCR = "ghcr.io/codertocat/hello-world"                   # the package-event sample's image, semver

# image → (app, policy, tags rule, tag on the default branch)
IMAGES: dict[str, tuple[str, str, str, str]] = {
    ACR: ("app", "pushed", "^[0-9a-f]{7,40}$", "1111111"),
    API: ("api", "semver", r"^v[0-9]+\.[0-9]+\.[0-9]+$", "v1.1.0"),
    WEB: ("web", "semver", "", "2.0.0"),
    WORKER: ("worker", "pushed", "^main-[0-9]+$", "main-1"),
    GHCR: ("hello", "semver", "", "v0.9.0"),
}


# --------------------------------------------------------------------------------------------
# The GitOps repository
# --------------------------------------------------------------------------------------------

def overlay(image: str, tag: str) -> str:
    return f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base
images:
  - name: {image}
    newTag: "{tag}"   # the version this environment runs
"""


def deployment(app: str, image: str) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
spec:
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}}}
    spec:
      containers:
        - name: {app}
          image: {image}:0.0.0
"""


def config(*, auto_merge: bool = False) -> str:
    rules = ""
    for image, (_app, policy, tags, _tag) in IMAGES.items():
        rules += f"  - repository: {image}\n    policy: {policy}\n"
        if tags:
            rules += f"    tags: '{tags}'\n"
    merge = "    auto_merge: true\n" if auto_merge else ""
    return ("version: 1\nenvironments:\n" + "".join(f"  - name: {env}\n" + (merge if env == "dev" else "")
                                                    for env in ENVS)
            + 'apps:\n  - path: "apps/{app}/envs/{env}"\nimages:\n' + rules)


def repo_files(*, auto_merge: bool = False) -> dict[str, str]:
    files = {".prbot.yml": config(auto_merge=auto_merge)}
    for image, (app, _policy, _tags, tag) in IMAGES.items():
        files[f"apps/{app}/base/kustomization.yaml"] = "resources:\n  - deployment.yaml\n"
        files[f"apps/{app}/base/deployment.yaml"] = deployment(app, image)
        for env in ENVS:
            files[f"apps/{app}/envs/{env}/kustomization.yaml"] = overlay(image, tag)
    return files


def dev_overlay(image: str) -> str:
    return f"apps/{IMAGES[image][0]}/envs/dev/kustomization.yaml"


# --------------------------------------------------------------------------------------------
# Pushes as the registries send them
# --------------------------------------------------------------------------------------------

def digest_of(image: str, tag: str, build: int = 0) -> str:
    return "sha256:" + hashlib.sha256(f"{image}:{tag}#{build}".encode()).hexdigest()


def generic(image: str, tag: str, build: int = 0) -> dict[str, Any]:
    return {"image": f"{image}:{tag}", "digest": digest_of(image, tag, build)}


def ghcr_events(tag: str, platforms: int = 2) -> list[tuple[str, dict[str, Any]]]:
    """One multi-arch push to ghcr.io as GitHub reports it: for the index and for each platform's
    manifest a `package` and a `registry_package` event; only the index's carry the tag."""
    events = []
    for event in ("package", "registry_package"):
        sample = json.loads((GITHUB_FIXTURES / f"{event}.published.docker.json").read_text())
        for i in range(platforms + 1):
            body = copy.deepcopy(sample)
            meta = body[event]["package_version"]["container_metadata"]["tag"]
            meta["name"] = tag if i == 0 else ""
            meta["digest"] = digest_of(GHCR, tag, i)
            events.append((event, body))
    return events


class Burst:
    """Sends pushes to the bot and remembers what each image should end at."""

    def __init__(self, bot: Bot) -> None:
        self.bot = bot
        self.sent = 0
        self.accepted: dict[str, list[str]] = {image: [] for image in IMAGES}

    def push(self, image: str, tag: str) -> None:
        _, policy, rule, _ = IMAGES[image]
        # what prbot accepts: the tags rule, and under policy semver a tag that is a version at all
        accepted = (not rule or re.fullmatch(rule, tag)) and (policy != "semver" or parse_semver(tag) is not None)
        if image == GHCR:
            for event, body in ghcr_events(tag):
                assert self.bot.post_github(event, body).status_code == 202
        else:
            resp = self.bot.registry_push("acr", acr_push(tag)) if image == ACR \
                else self.bot.registry_push("generic", generic(image, tag))
            # a tag every repository refuses routes nowhere: answered, not queued (once the index exists)
            answer = (resp.status_code, resp.get_json()["status"])
            assert answer == (202, "queued") or (not accepted and answer == (200, "unrouted")), resp.get_json()
        self.sent += 1
        if accepted:
            self.accepted[image].append(tag)

    def expected(self, image: str) -> str:
        """The tag the image's PR should carry: the highest version (semver), or the last pushed
        (pushed) — where the same push again (same tag, same digest: a redelivery) is no new push."""
        tags = self.accepted[image]
        if IMAGES[image][1] == "semver":
            return max(tags, key=lambda t: parse_semver(t) or (0, 0, 0, 0, ()))
        return list(dict.fromkeys(tags))[-1]


# Dozens of pushes: repeated tags, out of order, some refused by `tags`, interleaved across images.
SEQUENCE: list[tuple[str, str]] = [
    (API, "v1.2.0"), (WEB, "2.1.0"), (ACR, "3f9c2e1"), (WORKER, "main-7"), (GHCR, "v1.0.0"),
    (API, "v1.10.0"), (API, "latest"), (WEB, "2.10.1"), (API, "v1.9.3"), (WORKER, "main-8"),
    (ACR, "4a5b6c7"), (WEB, "2.2.0"), (API, "v1.10.0"), (GHCR, "v1.2.0"), (WORKER, "feature-x"),
    (API, "v1.3.0"), (WEB, "2.10.1"), (ACR, "latest"), (WEB, "2.10.1-rc.1"), (API, "v1.10.0-rc.2"),
    (WORKER, "main-9"), (GHCR, "v1.1.5"), (ACR, "3f9c2e1"), (WEB, "2.9.9"), (API, "v1.4.4"),
    (WORKER, "main-9"), (ACR, "9d8e7f6"), (WEB, "nightly"), (API, "v1.10.0"), (GHCR, "v1.2.0"),
    (WEB, "2.10.0"), (WORKER, "main-10"), (API, "v0.9.9"), (ACR, "9d8e7f6"), (WEB, "1.0.0"),
    (GHCR, "latest"), (API, "v1.9.9"), (WORKER, "main-10"), (WEB, "2.10.1"), (ACR, "abcdef0"),
]


@pytest.fixture
def make_bot(tmp_path: Path, fake_github: FakeGitHub) -> Iterator[Callable[[str], Bot]]:
    """Start bots on the fake (each with its own data directory: store, queue and mirror)."""
    fake_github.add_installation("acme")
    fake_github.create_repo(REPO, files=repo_files())
    fake_github.drain_events()
    bots: list[Bot] = []

    def start(name: str = "bot") -> Bot:
        bots.append(Bot(tmp_path / name, fake_github, threads=2))
        return bots[-1]

    yield start
    for b in bots:
        b.stop()


@pytest.fixture
def bot(make_bot: Callable[[str], Bot]) -> Bot:
    return make_bot("bot")


def changed_files(fake: FakeGitHub, base: str, head: str) -> dict[str, bytes | None]:
    from support import git

    path = fake.repo(REPO).path
    names = git(path, "diff", "--name-only", base, head).splitlines()
    return {n: fake.read_file(REPO, head, n) for n in names}


def writes_per_pull(fake: FakeGitHub) -> dict[int, int]:
    """Successful REST writes of each bump PR: its creation, edits and labels."""
    counts: Counter[int] = Counter()
    created = iter(sorted(p.number for p in fake.pulls(REPO, state="all")))
    for w in fake.api_writes():
        if w.method == "POST" and w.path == f"/repos/{REPO}/pulls":
            counts[next(created)] += 1
            continue
        if w.kind == "graphql":                    # enablePullRequestAutoMerge: counted by the caller
            continue
        m = re.fullmatch(rf"/repos/{REPO}/(?:pulls|issues)/(\d+)(?:/labels)?", w.path)
        assert m, f"an unexpected write: {w.method} {w.path}"
        counts[int(m.group(1))] += 1
    return dict(counts)


def assert_final_state(fake: FakeGitHub, burst: Burst) -> None:
    pulls = fake.pulls(REPO, state="all")
    assert sorted(p.head_ref for p in pulls) == sorted(bump_branch("dev", image) for image in IMAGES)
    assert all(p.state == "open" for p in pulls)
    for image in IMAGES:
        branch = bump_branch("dev", image)
        pr = next(p for p in pulls if p.head_ref == branch)
        tag = burst.expected(image)
        assert pr.title == f"Bump {image} to {tag} in dev", (image, burst.accepted[image])
        assert changed_files(fake, "main", branch) == {dev_overlay(image): overlay(image, tag).encode()}
        assert sorted(fake.labels(REPO, pr.number)) == ["bump", "env:dev", "prbot"]
    writes = writes_per_pull(fake)
    assert all(n <= 3 for n in writes.values()), writes


def test_a_burst_ends_with_one_pr_per_image_at_its_highest_version(bot: Bot, fake_github: FakeGitHub) -> None:
    burst = Burst(bot)
    for image, tag in SEQUENCE:
        burst.push(image, tag)
    assert burst.sent >= 40
    bot.settle()
    assert_final_state(fake_github, burst)



def test_the_same_burst_rides_out_secondary_rate_limits_and_server_errors(bot: Bot, fake_github: FakeGitHub) -> None:
    fake = fake_github
    fake.secondary_rate_limit(times=3, retry_after=1, status=403, method="POST", path=r"/pulls$")
    fake.secondary_rate_limit(times=2, retry_after=1, status=429, method="POST", path=r"/labels$")
    fake.secondary_rate_limit(times=1, retry_after=None, status=403, method="POST", path=r"/labels$")
    fake.fail(502, times=2, method="POST", path=r"/pulls$")
    fake.fail(500, times=2, method="POST", path=r"/labels$")
    fake.fail(500, times=1, method="POST", path=r"git-receive-pack$", scope="git")
    burst = Burst(bot)
    for image, tag in SEQUENCE:
        burst.push(image, tag)
    bot.settle()
    refused = Counter(r.status for r in fake.requests if r.status in (403, 429, 500, 502))
    assert refused == {403: 4, 429: 2, 500: 3, 502: 2}
    assert_final_state(fake, burst)


def pull_of(fake: FakeGitHub, image: str) -> Pull:
    branch = bump_branch("dev", image)
    found = [p for p in fake.pulls(REPO, state="all") if p.head_ref == branch]
    assert len(found) == 1, [(p.number, p.title) for p in found]
    return found[0]


def test_out_of_order_semver_pushes_never_downgrade_the_pr_or_the_default_branch(
        make_bot: Callable[[str], Bot], fake_github: FakeGitHub) -> None:
    fake = fake_github
    bot = make_bot("bot")
    burst = Burst(bot)
    burst.push(API, "v1.8.0")
    bot.settle()
    pr = pull_of(fake, API)
    assert pr.title == f"Bump {API} to v1.8.0 in dev"
    head, writes = fake.branch_sha(REPO, pr.head_ref), len(fake.api_writes())

    # lower versions (and the same one again) arriving late move nothing and write nothing
    for tag in ("v1.7.9", "v1.2.0", "v1.8.0", "v0.1.0"):
        burst.push(API, tag)
    bot.settle()
    assert fake.branch_sha(REPO, pr.head_ref) == head and len(fake.api_writes()) == writes
    assert fake.pull(REPO, pr.number).title == f"Bump {API} to v1.8.0 in dev"

    # the default branch runs a higher version than a late push: no PR at all
    fake.commit(REPO, "main", {dev_overlay(WEB): overlay(WEB, "2.5.0")}, message="web 2.5.0 by hand")
    for tag in ("2.4.9", "2.5.0", "1.0.0"):
        burst.push(WEB, tag)
    bot.settle()
    assert [p.head_ref for p in fake.pulls(REPO, state="all")] == [pr.head_ref]
    assert len(fake.api_writes()) == writes

    # a bot that lost its store and mirror (redeployed without a volume) reads the PR's branch
    bot.stop()
    fresh = make_bot("fresh")
    Burst(fresh).push(API, "v1.7.0")
    fresh.settle()
    assert fake.branch_sha(REPO, pr.head_ref) == head and len(fake.api_writes()) == writes

    # merged: the default branch runs v1.8.0, a late v1.7.5 opens nothing; v1.9.0 opens the next PR
    fake.merge(REPO, pr.number)
    Burst(fresh).push(API, "v1.7.5")
    fresh.settle()
    assert fake.pulls(REPO, state="open") == []
    Burst(fresh).push(API, "v1.9.0")
    fresh.settle()
    [new] = fake.pulls(REPO, state="open")
    assert new.title == f"Bump {API} to v1.9.0 in dev" and new.number != pr.number
    assert changed_files(fake, "main", new.head_ref) == {dev_overlay(API): overlay(API, "v1.9.0").encode()}


def test_policy_pushed_takes_the_last_push_and_a_redelivery_is_no_push(bot: Bot, fake_github: FakeGitHub) -> None:
    fake = fake_github
    for tag in ("main-3", "main-4"):
        assert bot.registry_push("generic", generic(WORKER, tag)).status_code == 202
    bot.settle()
    pr = pull_of(fake, WORKER)
    assert pr.title == f"Bump {WORKER} to main-4 in dev"
    writes = len(fake.api_writes())

    # the registry delivers the main-3 push again: the PR stays at main-4
    assert bot.registry_push("generic", generic(WORKER, "main-3")).status_code == 202
    bot.settle()
    assert fake.pull(REPO, pr.number).title == f"Bump {WORKER} to main-4 in dev"
    assert len(fake.api_writes()) == writes

    # main-3 rebuilt and pushed again (a new digest) is a new push: the PR follows it, in place
    assert bot.registry_push("generic", generic(WORKER, "main-3", build=1)).status_code == 202
    bot.settle()
    assert pull_of(fake, WORKER).title == f"Bump {WORKER} to main-3 in dev"
    assert changed_files(fake, "main", pr.head_ref) == {dev_overlay(WORKER): overlay(WORKER, "main-3").encode()}
    assert len(fake.api_writes()) == writes + 1                       # the PR's title and body


def test_auto_merge_is_enabled_once_per_pr_through_rate_limits(tmp_path: Path, fake_github: FakeGitHub) -> None:
    fake = fake_github
    fake.add_installation("acme")
    fake.create_repo(REPO, files=repo_files(auto_merge=True))
    fake.protect_branch(REPO, "main", required_checks=["prbot/plan"])       # so GitHub's auto-merge applies
    fake.drain_events()
    fake.secondary_rate_limit(times=2, retry_after=1, status=403, path="graphql")
    fake.fail(502, times=1, path="graphql")
    bot = Bot(tmp_path / "bot", fake, threads=2)
    try:
        burst = Burst(bot)
        for image, tag in [(API, "v1.3.0"), (WORKER, "main-5"), (API, "v1.2.0"), (WORKER, "main-6"),
                           (API, "v1.4.0"), (WEB, "2.0.1")]:
            burst.push(image, tag)
        bot.settle()
    finally:
        bot.stop()
    pulls = fake.pulls(REPO, state="open")
    assert sorted(p.title for p in pulls) == sorted(f"Bump {image} to {tag} in dev" for image, tag in
                                                    [(API, "v1.4.0"), (WORKER, "main-6"), (WEB, "2.0.1")])
    assert all(p.auto_merge is not None and p.auto_merge["enabled_by"]["login"] == "prbot[bot]" for p in pulls)
    assert Counter(r.status for r in fake.requests if r.kind == "graphql") == {403: 2, 502: 1, 200: len(pulls)}
    assert writes_per_pull(fake) == {p.number: 2 for p in pulls}               # + 1 mutation each: 3 writes

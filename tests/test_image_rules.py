from prbot.branches import bump_branch, promote_branch, slug
from prbot.config import Config, Environment, ImageRule
from prbot.image_rules import decide
from prbot.images import parse_image

DIGEST = "sha256:" + "ab" * 32


def _config(*rules: ImageRule) -> Config:
    return Config(version=1, environments=(Environment("dev"), Environment("staging")), images=rules)


def test_push_lands_in_first_environment_by_default_and_drops_digest_unless_pinned() -> None:
    d = decide(_config(ImageRule("ghcr.io/acme/app")), parse_image(f"ghcr.io/acme/app:1.2.0@{DIGEST}"))
    assert d.accepted and d.env == "dev" and str(d.image) == "ghcr.io/acme/app:1.2.0"
    d = decide(_config(ImageRule("ghcr.io/acme/app", land_in="staging", digest=True)),
               parse_image(f"ghcr.io/acme/app:1.2.0@{DIGEST}"))
    assert d.env == "staging" and d.image.digest == DIGEST


def test_push_of_an_unlisted_repository_or_rejected_tag_is_ignored_with_a_reason() -> None:
    cfg = _config(ImageRule("acme/app", tags=r"^[0-9a-f]{7,40}$"))
    d = decide(cfg, parse_image("ghcr.io/acme/app:3f9c2e1"))
    assert not d.accepted and "not listed" in d.reason
    d = decide(cfg, parse_image("docker.io/acme/app:latest"))       # same repository as acme/app
    assert not d.accepted and "does not match" in d.reason
    assert decide(cfg, parse_image("acme/app:3f9c2e1")).accepted


def test_semver_policy_never_moves_backwards() -> None:
    cfg = _config(ImageRule("acme/app", policy="semver"))
    assert decide(cfg, parse_image("acme/app:1.3.0"), current_tag="1.2.9").accepted
    older = decide(cfg, parse_image("acme/app:1.2.0"), current_tag="1.2.9")
    assert not older.accepted and "not a higher version than 1.2.9" in older.reason
    assert not decide(cfg, parse_image("acme/app:latest"), current_tag="1.2.9").accepted


def test_branch_names_are_one_per_update() -> None:
    assert slug("registry.cn-hangzhou.aliyuncs.com/Demo/app") == "registry-cn-hangzhou-aliyuncs-com-demo-app"
    assert bump_branch("dev", "docker.io/library/nginx") == "prbot/bump/dev/docker-io-library-nginx"
    assert promote_branch("staging", "shop") == "prbot/promote/staging/shop"


def test_semver_policy_reads_versions_as_flux_does() -> None:
    cfg = _config(ImageRule("acme/app", policy="semver"))
    assert decide(cfg, parse_image("acme/app:3.0"), current_tag="2.0").accepted
    assert decide(cfg, parse_image("acme/app:v2"), current_tag="1.25").accepted
    assert decide(cfg, parse_image("acme/app:1.25"), current_tag="1.9").accepted
    for tag, current in (("2.0", "3.0"), ("v2.0", "v3.0"), ("1.9", "1.25"), ("v2.0.0-rc.1", "v2.0.0"),
                         ("2.0.0", "2.0"), ("v2", "2.0.0")):       # lower, or the same version again
        d = decide(cfg, parse_image(f"acme/app:{tag}"), current_tag=current)
        assert not d.accepted and f"not a higher version than {current}" in d.reason, (tag, current)
    d = decide(cfg, parse_image("acme/app:1.02"), current_tag="1.1")    # a leading zero: no version
    assert not d.accepted and "not a semantic version" in d.reason

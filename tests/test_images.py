"""OCI image references: grammar, docker.io normalisation, semantic-version ordering."""

from __future__ import annotations

import random

import pytest

from prbot.errors import ImageError, PrbotError
from prbot.images import (
    ImageRef,
    is_newer,
    normalize_repository,
    parse_image,
    parse_semver,
    same_repository,
)

D = "sha256:" + "0123456789abcdef" * 4
D2 = "sha256:" + "f" * 64

# text -> (name, tag, digest, registry, path, repository, version)
VALID = [
    ("nginx", ("nginx", None, None, "docker.io", "library/nginx", "docker.io/library/nginx", "")),
    ("nginx:1.25", ("nginx", "1.25", None, "docker.io", "library/nginx", "docker.io/library/nginx", "1.25")),
    ("nginx:latest", ("nginx", "latest", None, "docker.io", "library/nginx", "docker.io/library/nginx",
                      "latest")),
    (f"nginx@{D}", ("nginx", None, D, "docker.io", "library/nginx", "docker.io/library/nginx", f"@{D}")),
    (f"nginx:1.2.3@{D}", ("nginx", "1.2.3", D, "docker.io", "library/nginx", "docker.io/library/nginx",
                          f"1.2.3@{D}")),
    ("acme/app:v2", ("acme/app", "v2", None, "docker.io", "acme/app", "docker.io/acme/app", "v2")),
    ("docker.io/nginx", ("docker.io/nginx", None, None, "docker.io", "library/nginx",
                         "docker.io/library/nginx", "")),
    ("index.docker.io/library/nginx:1", ("index.docker.io/library/nginx", "1", None, "docker.io",
                                         "library/nginx", "docker.io/library/nginx", "1")),
    ("registry.cn-hangzhou.aliyuncs.com/demo/app:abc1234",
     ("registry.cn-hangzhou.aliyuncs.com/demo/app", "abc1234", None, "registry.cn-hangzhou.aliyuncs.com",
      "demo/app", "registry.cn-hangzhou.aliyuncs.com/demo/app", "abc1234")),
    ("ghcr.io/acme/team/service:1.0.0-rc.1",
     ("ghcr.io/acme/team/service", "1.0.0-rc.1", None, "ghcr.io", "acme/team/service",
      "ghcr.io/acme/team/service", "1.0.0-rc.1")),
    ("localhost/app", ("localhost/app", None, None, "localhost", "app", "localhost/app", "")),
    ("localhost:5000/app:dev", ("localhost:5000/app", "dev", None, "localhost:5000", "app",
                                "localhost:5000/app", "dev")),
    ("127.0.0.1:5000/a/b", ("127.0.0.1:5000/a/b", None, None, "127.0.0.1:5000", "a/b",
                            "127.0.0.1:5000/a/b", "")),
    ("[::1]:5000/app:1", ("[::1]:5000/app", "1", None, "[::1]:5000", "app", "[::1]:5000/app", "1")),
    ("myreg:443/app", ("myreg:443/app", None, None, "myreg:443", "app", "myreg:443/app", "")),
    ("Registry.Example.COM/team/app", ("Registry.Example.COM/team/app", None, None, "registry.example.com",
                                       "team/app", "registry.example.com/team/app", "")),
    ("quay.io/a_b/c__d/e-f/g.h/i---j:_x", ("quay.io/a_b/c__d/e-f/g.h/i---j", "_x", None, "quay.io",
                                          "a_b/c__d/e-f/g.h/i---j", "quay.io/a_b/c__d/e-f/g.h/i---j", "_x")),
    ("app:" + "a" * 128, ("app", "a" * 128, None, "docker.io", "library/app", "docker.io/library/app",
                          "a" * 128)),
    ("a/b:A_b.c-D", ("a/b", "A_b.c-D", None, "docker.io", "a/b", "docker.io/a/b", "A_b.c-D")),
    ("localhost:5000", ("localhost", "5000", None, "docker.io", "library/localhost",
                        "docker.io/library/localhost", "5000")),   # docker reads this as a tag too
]


@pytest.mark.parametrize(("text", "expected"), VALID, ids=[t for t, _ in VALID])
def test_valid_references(text: str, expected: tuple) -> None:
    ref = parse_image(text)
    assert (ref.name, ref.tag, ref.digest, ref.registry, ref.path, ref.repository, ref.version) == expected
    assert str(ref) == text
    assert parse_image(str(ref)) == ref


# text -> fragment the one-line message must contain
INVALID = [
    ("", "empty"),
    (" nginx", "whitespace"),
    ("nginx ", "whitespace"),
    ("ng inx:1", "whitespace"),
    ("nginx:1\n", "whitespace"),
    ("Nginx", "uppercase"),
    ("acme/App:1", "uppercase"),
    ("registry.example.com/Team/app", "uppercase"),
    ("nginx:", "empty tag"),
    ("nginx:-1", "invalid tag"),
    ("nginx:.x", "invalid tag"),
    ("nginx:a+b", "invalid tag"),
    ("nginx:" + "a" * 129, "longer than 128"),
    ("nginx:1:2", "unexpected ':'"),
    ("nginx:" + "a" * 300, "longer than 128"),
    ("nginx@", "empty digest"),
    ("nginx@sha256:abc", "malformed digest"),
    ("nginx@sha256:" + "A" * 64, "malformed digest"),
    ("nginx@sha512:" + "a" * 128, "malformed digest"),
    ("nginx@md5:" + "a" * 32, "malformed digest"),
    (f"nginx@{D}0", "malformed digest"),
    (f"nginx@{D}@{D}", "more than one '@'"),
    ("nginx:1@" + D + ":x", "malformed digest"),
    ("-bad.host/app", "registry host"),
    ("bad-.host/app", "registry host"),
    ("a..b/app", "registry host"),
    ("host.io:port/app", "registry port"),
    ("host.io:99999/app", "registry port"),
    ("host.io:/app", "registry port"),
    ("[::1/app", "registry host"),
    ("[zz]:5000/app", "registry host"),
    ("ghcr.io/", "no repository path"),
    ("ghcr.io//app", "empty path component"),
    ("acme//app", "empty path component"),
    ("acme/app/", "empty path component"),
    ("/app", "empty path component"),
    (":1.0", "empty repository name"),
    ("@" + D, "empty repository name"),
    ("ghcr.io/../app", "'..' is not allowed"),
    ("acme/./app", "'.' is not allowed"),
    ("acme/-app", "invalid path component"),
    ("acme/app-", "invalid path component"),
    ("acme/a___b", "invalid path component"),
    ("acme/a..b", "invalid path component"),
    ("acme/a$b", "invalid path component"),
    ("ghcr.io/" + "a" * 250, "longer than 255"),
]


@pytest.mark.parametrize(("text", "fragment"), INVALID, ids=[repr(t[:40]) for t, _ in INVALID])
def test_invalid_references(text: str, fragment: str) -> None:
    with pytest.raises(ImageError) as exc:
        parse_image(text)
    message = str(exc.value)
    assert fragment in message
    assert "\n" not in message
    assert len(message) < 300
    assert isinstance(exc.value, PrbotError)


@pytest.mark.parametrize(("text", "normalised"), [
    ("nginx", "docker.io/library/nginx"),
    ("nginx:1.25", "docker.io/library/nginx"),
    ("docker.io/nginx", "docker.io/library/nginx"),
    ("docker.io/library/nginx", "docker.io/library/nginx"),
    ("index.docker.io/library/nginx", "docker.io/library/nginx"),
    ("index.docker.io/nginx", "docker.io/library/nginx"),
    ("docker.io/library/nginx:latest", "docker.io/library/nginx"),
    (f"library/nginx@{D}", "docker.io/library/nginx"),
    ("acme/app", "docker.io/acme/app"),
    ("docker.io/acme/app:1", "docker.io/acme/app"),
    ("ghcr.io/acme/app", "ghcr.io/acme/app"),
    ("GHCR.io/acme/app", "ghcr.io/acme/app"),
    ("localhost:5000/app", "localhost:5000/app"),
    ("registry-1.docker.io/acme/app", "registry-1.docker.io/acme/app"),   # not an alias docker knows
])
def test_normalize_repository(text: str, normalised: str) -> None:
    assert normalize_repository(text) == normalised


def test_normalize_repository_refuses_invalid() -> None:
    with pytest.raises(ImageError):
        normalize_repository("Nope/App")


@pytest.mark.parametrize(("a", "b", "same"), [
    ("nginx", "docker.io/library/nginx:1", True),
    ("nginx:1", "index.docker.io/nginx@" + D, True),
    ("acme/app", "docker.io/acme/app", True),
    ("acme/app", "library/app", False),
    ("nginx", "ghcr.io/nginx", False),
    ("ghcr.io/acme/app:1", "ghcr.io/acme/app:2", True),
    ("ghcr.io/acme/app", "ghcr.io/acme/app2", False),
    ("localhost:5000/app", "localhost/app", False),
    ("registry.example.com/team/app", "REGISTRY.example.com/team/app", True),
    ("nginx", "Nginx", False),          # invalid references name no repository
    ("", "", False),
])
def test_same_repository(a: str, b: str, same: bool) -> None:
    assert same_repository(a, b) is same
    assert same_repository(b, a) is same
    if a and not any(c.isupper() for c in a):
        assert parse_image(a).same_repository(b) is same
        if same:
            assert parse_image(a).same_repository(parse_image(b)) is True


def test_with_version_keeps_name_as_written() -> None:
    ref = parse_image("index.docker.io/nginx:1.0")
    assert str(ref.with_version("1.1", None)) == "index.docker.io/nginx:1.1"
    assert str(ref.with_version("1.1", D)) == f"index.docker.io/nginx:1.1@{D}"
    assert str(ref.with_version(None, D2)) == f"index.docker.io/nginx@{D2}"
    assert str(ref.with_version(None, None)) == "index.docker.io/nginx"
    assert ref.with_version("1.1", None).repository == ref.repository
    assert ref.tag == "1.0"                                   # frozen: the original is unchanged
    with pytest.raises(ImageError, match="invalid tag"):
        ref.with_version("bad tag!", None)
    with pytest.raises(ImageError, match="malformed digest"):
        ref.with_version("1", "sha256:xyz")


def test_imageref_is_frozen_hashable_and_validated() -> None:
    a, b = parse_image("acme/app:1"), ImageRef("acme/app", "1", None)
    assert a == b and hash(a) == hash(b) and {a, b} == {a}
    with pytest.raises(AttributeError):
        a.tag = "2"  # type: ignore[misc]
    with pytest.raises(ImageError):
        ImageRef("Acme/app")
    with pytest.raises(ImageError):
        ImageRef("acme/app", "", None)


# -- semver --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tag", [
    "0.0.0", "1.2.3", "v1.2.3", "10.20.30", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-0.3.7",
    "1.0.0-x.7.z.92", "1.0.0-x-y-z.--", "1.0.0+20130313144700", "1.0.0-beta+exp.sha.5114f85",
    "1.0.0+21AF26D3----117B344092BD", "v1.0.0-rc.1+build.5", "99999999999999999999.0.0",
    # as Flux reads versions: minor and patch may be left out, with or without the v
    "1", "v2", "1.2", "v2.0", "1.25", "2.0-rc.1", "v3-beta.2", "1.2+build.7",
])
def test_semver_accepted(tag: str) -> None:
    assert parse_semver(tag) is not None


@pytest.mark.parametrize("tag", [
    "", "1.2.3.4", "01.2.3", "01", "1.02", "v", "1.", ".1", "1..2", "2.0-", "v2.0.01",
    "1.02.3", "1.2.03", "1.2.3-", "1.2.3-01", "1.2.3-a..b",
    "1.2.3+", "1.2.3+a..b", "V1.2.3", "vv1.2.3", "latest", "abc1234", "1.2.3 ", " 1.2.3", "1.2.3-α",
    "-1.2.3", "1.2.3_4",
])
def test_semver_refused(tag: str) -> None:
    assert parse_semver(tag) is None


# From semver.org §11, lowest first, plus a few around releases and build metadata.
ORDERED = [
    "0.0.1", "0.1.0", "0.9.9", "0.10.0",
    "1.0.0-0", "1.0.0-1", "1.0.0-2", "1.0.0-10", "1.0.0-1a", "1.0.0-A", "1.0.0-Z", "1.0.0-a",
    "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
    "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0-rc.1", "1.1.0", "1.2.0", "1.10.0", "2.0.0-alpha", "2.0.0",
    "2.1.1", "10.0.0",
]


def test_short_versions_read_as_flux_reads_them() -> None:
    assert parse_semver("1.25") == parse_semver("1.25.0") == parse_semver("v1.25.0")
    assert parse_semver("v2") == parse_semver("2.0.0") == parse_semver("2.0")
    assert parse_semver("2.0-rc.1") == parse_semver("v2.0.0-rc.1")
    tags = ["v2", "1.9", "1.25", "2.0.1", "1.25.1", "v2.0.0-rc.1", "1", "10"]
    assert sorted(tags, key=parse_semver) == ["1", "1.9", "1.25", "1.25.1", "v2.0.0-rc.1", "v2", "2.0.1", "10"]


def test_semver_precedence_matches_the_spec() -> None:
    shuffled = ORDERED[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=parse_semver) == ORDERED
    for lower, higher in zip(ORDERED, ORDERED[1:], strict=False):
        assert is_newer(higher, lower) is True, (higher, lower)
        assert is_newer(lower, higher) is False, (lower, higher)


@pytest.mark.parametrize(("candidate", "current", "expected"), [
    ("1.2.4", "1.2.3", True),
    ("v1.2.4", "1.2.3", True),
    ("1.2.3", "v1.2.3", False),                # equal versions are not newer
    ("1.2.3+build.2", "1.2.3+build.1", False),  # build metadata has no precedence
    ("1.2.3", "1.2.3-rc.9", True),
    ("1.2.3-rc.10", "1.2.3-rc.9", True),
    ("1.2.3-rc.9", "1.2.3-rc.10", False),
    ("2.0.0", "10.0.0", False),
    ("latest", "1.2.3", None),
    ("1.2.3", "abc1234", None),
    ("1.2", "1.1", True),
    ("3.0", "2.0", True),
    ("v2.0", "v3.0", False),
    ("1.25", "1.9", True),                     # numeric, not text: 25 > 9
    ("1.9", "1.25", False),
    ("2.0", "2.0.0", False),                   # the same version written two ways
    ("v2", "2.0.0", False),
    ("2.0.1", "v2", True),
    ("v2.0.0", "v2.0.0-rc.1", True),           # a release follows its pre-releases
    ("v2.0.0-rc.1", "v2.0.0", False),
    ("2.0-rc.1", "1.9", True),
    ("latest", "3.0", None),
    ("1.02", "1.1", None),                     # a leading zero is no version: no order
])
def test_is_newer(candidate: str, current: str, expected: bool | None) -> None:
    assert is_newer(candidate, current) is expected

"""Registry push parsers, driven by the registries' own sample payloads (shared/fixtures/registry)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from service_support import GITHUB_FIXTURES, REGISTRY_FIXTURES

from prbot.registries import PARSERS, Context, ImageRecord, PayloadError, parse_push
from prbot.registries.github_packages import parse_package_event


def sample(name: str) -> Any:
    return json.loads((REGISTRY_FIXTURES / name).read_text())


@pytest.mark.parametrize(("provider", "fixture", "expected"), [
    ("acr", "acr-aliyun.push.json", [ImageRecord(
        "registry.cn-hangzhou.aliyuncs.com/demo/app:3f9c2e1",
        "sha256:457f4aa83fc9a6663ab9d1b0a6e2dce25a12a943ed5bf2c1747c58d48bbb4917")]),
    ("azure", "azure-acr.push.json", [ImageRecord(
        "myregistry.azurecr.io/demo/app:v1.4.0",
        "sha256:80f0d5c8786bb9e621a45ece0db56d11cdc624ad20da9fe62e9d25490f331d7d")]),
    ("dockerhub", "dockerhub.push.json", [ImageRecord("docker.io/acme/app:v1.4.0", None)]),
    ("harbor", "harbor.push.json", [ImageRecord(
        "harbor.example.com/library/app:v1.4.0",
        "sha256:5a2c6b0e3ba53bbe1a0f09ef1bd0b77d1ee8a1a0d6d7d3e0b0a4c5d6e7f8a9b0")]),
    ("quay", "quay.push.json", [ImageRecord("quay.io/acme/app:v1.4.0", None)]),
])
def test_each_registry_sample_gives_its_image(provider: str, fixture: str, expected: list[ImageRecord]) -> None:
    report = parse_push(provider, sample(fixture))
    assert report.records == expected
    assert report.ignored is None


def test_every_fixture_has_a_parser() -> None:
    names = {p.name for p in REGISTRY_FIXTURES.glob("*.json")}
    assert names == {"acr-aliyun.push.json", "azure-acr.push.json", "dockerhub.push.json", "harbor.push.json",
                     "quay.push.json"}
    assert set(PARSERS) == {"acr", "azure", "dockerhub", "generic", "harbor", "quay"}


def test_acr_host_from_configured_region_or_instance() -> None:
    payload = sample("acr-aliyun.push.json")
    by_region = parse_push("acr", payload, Context(acr_hosts={"cn-hangzhou": "registry-vpc.cn-hangzhou.aliyuncs.com"}))
    assert by_region.records[0].image == "registry-vpc.cn-hangzhou.aliyuncs.com/demo/app:3f9c2e1"
    payload["repository"]["instance_id"] = "cri-abc123"
    ee = parse_push("acr", payload, Context(acr_hosts={"cri-abc123": "acme-registry.cn-hangzhou.cr.aliyuncs.com",
                                                       "cn-hangzhou": "other.example.com"}))
    assert ee.records[0].image == "acme-registry.cn-hangzhou.cr.aliyuncs.com/demo/app:3f9c2e1"
    other_region = sample("acr-aliyun.push.json")
    other_region["repository"]["region"] = "ap-southeast-1"
    assert parse_push("acr", other_region).records[0].image == \
        "registry.ap-southeast-1.aliyuncs.com/demo/app:3f9c2e1"


def test_acr_region_cannot_inject_a_host() -> None:
    payload = sample("acr-aliyun.push.json")
    payload["repository"]["region"] = "evil.com/x"
    with pytest.raises(PayloadError, match="repository.region"):
        parse_push("acr", payload)


def test_harbor_push_of_several_resources_gives_several_records() -> None:
    payload = sample("harbor.push.json")
    first = payload["event_data"]["resources"][0]
    payload["event_data"]["resources"] = [
        first,
        {**first, "tag": "latest", "resource_url": "harbor.example.com/library/app:latest"},
        {**first, "tag": "", "resource_url": "harbor.example.com/library/app@" + first["digest"]},  # by digest
        {**first, "tag": "v2.0.0", "digest": "sha256:" + "b" * 64,
         "resource_url": "harbor.example.com:8443/library/app:v2.0.0"},
    ]
    assert parse_push("harbor", payload).records == [
        ImageRecord("harbor.example.com/library/app:v1.4.0", first["digest"]),
        ImageRecord("harbor.example.com/library/app:latest", first["digest"]),
        ImageRecord("harbor.example.com:8443/library/app:v2.0.0", "sha256:" + "b" * 64),
    ]


def test_quay_push_of_several_tags_gives_several_records() -> None:
    payload = sample("quay.push.json")
    payload["updated_tags"] = ["v1.4.0", "latest", "v1.4.0"]
    assert parse_push("quay", payload).records == [ImageRecord("quay.io/acme/app:v1.4.0"),
                                                   ImageRecord("quay.io/acme/app:latest")]


def test_generic_payloads() -> None:
    digest = "sha256:" + "a" * 64
    assert parse_push("generic", {"image": "ghcr.io/acme/app:1.2.3", "digest": digest}).records == [
        ImageRecord("ghcr.io/acme/app:1.2.3", digest)]
    assert parse_push("generic", {"image": f"ghcr.io/acme/app:1.2.3@{digest}"}).records == [
        ImageRecord("ghcr.io/acme/app:1.2.3", digest)]
    assert parse_push("generic", {"image": "nginx:1.27"}).records == [ImageRecord("nginx:1.27")]
    sourced = {"image": "ghcr.io/acme/app:3f9c2e1", "source": "https://github.com/acme/app/"}
    assert parse_push("generic", sourced).records == [
        ImageRecord("ghcr.io/acme/app:3f9c2e1", None, "https://github.com/acme/app")]
    many = {"images": [{"image": "ghcr.io/acme/a:1"}, {"image": "ghcr.io/acme/b:2", "digest": digest}]}
    assert parse_push("generic", many).records == [ImageRecord("ghcr.io/acme/a:1"),
                                                   ImageRecord("ghcr.io/acme/b:2", digest)]


def test_not_a_push_is_reported_not_an_error() -> None:
    azure = sample("azure-acr.push.json")
    azure["action"] = "delete"
    report = parse_push("azure", azure)
    assert report.records == [] and report.ignored is not None and "delete" in report.ignored
    harbor = sample("harbor.push.json")
    harbor["type"] = "DELETE_ARTIFACT"
    assert "DELETE_ARTIFACT" in (parse_push("harbor", harbor).ignored or "")
    dockerhub = sample("dockerhub.push.json")
    dockerhub["push_data"]["tag"] = ""
    assert parse_push("dockerhub", dockerhub).records == []


def _set(payload: Any, path: str, value: Any) -> Any:
    out = copy.deepcopy(payload)
    cur = out
    parts = path.split(".")
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    if value is _DELETE:
        del cur[parts[-1]]
    else:
        cur[parts[-1]] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(("provider", "fixture", "path", "value", "reason"), [
    ("acr", "acr-aliyun.push.json", "push_data.tag", _DELETE, "missing field push_data.tag"),
    ("acr", "acr-aliyun.push.json", "push_data.tag", 3, "push_data.tag: expected a string, got a number"),
    ("acr", "acr-aliyun.push.json", "push_data.digest", "md5:abc", "digest"),
    ("acr", "acr-aliyun.push.json", "repository", "demo/app", "repository: expected a JSON object"),
    ("acr", "acr-aliyun.push.json", "repository.repo_full_name", "Demo/App", "uppercase"),
    ("azure", "azure-acr.push.json", "target.repository", ["x"], "target.repository: expected a string"),
    ("azure", "azure-acr.push.json", "request.host", _DELETE, "missing field request.host"),
    ("azure", "azure-acr.push.json", "target.tag", "bad tag!", "whitespace"),
    ("dockerhub", "dockerhub.push.json", "repository", None, "missing field repository.repo_name"),
    ("dockerhub", "dockerhub.push.json", "push_data.tag", True, "push_data.tag: expected a string, got true or false"),
    ("harbor", "harbor.push.json", "event_data.resources", {}, "event_data.resources: expected a list"),
    ("harbor", "harbor.push.json", "event_data.resources.0.resource_url", _DELETE, "resource_url"),
    ("harbor", "harbor.push.json", "event_data.resources.0.resource_url", "library/app:v1", "names no registry host"),
    ("quay", "quay.push.json", "updated_tags", "v1.4.0", "updated_tags: expected a list"),
    ("quay", "quay.push.json", "updated_tags", [1], "updated_tags[0]"),
    ("quay", "quay.push.json", "docker_url", "quay.io/Acme/App", "uppercase"),
])
def test_bad_payloads_give_one_line_reasons(provider: str, fixture: str, path: str, value: Any, reason: str) -> None:
    with pytest.raises(PayloadError) as err:
        parse_push(provider, _set(sample(fixture), path, value))
    assert reason in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("payload", [[], "x", 1, None, {"image": ""}, {"image": "nginx"}, {"image": 5},
                                     {"image": "nginx:1", "digest": "sha256:123"}, {"images": "x"},
                                     {"images": [{"image": "a:1"}] * 101},
                                     {"image": "a:1@sha256:" + "a" * 64, "digest": "sha256:" + "b" * 64},
                                     {"image": "a:1", "source": "javascript:alert(1)"},
                                     {"image": "a:1", "source": "http://127.0.0.1/x"},
                                     {"image": "a:1", "source": "https://x.example/a b"},
                                     {"image": "a:1", "source": 3}])
def test_generic_refuses_what_it_cannot_read(payload: Any) -> None:
    with pytest.raises(PayloadError):
        parse_push("generic", payload)


@pytest.mark.parametrize("provider", sorted(PARSERS))
@pytest.mark.parametrize("payload", [None, [], "push", 3.5, {"x": {"y": []}}])
def test_no_parser_crashes_on_garbage(provider: str, payload: Any) -> None:
    with pytest.raises(PayloadError):
        parse_push(provider, payload)


# -- GitHub packages (ghcr.io) -----------------------------------------------------------------------

def _package_event(name: str) -> Any:
    return json.loads((GITHUB_FIXTURES / name).read_text())


@pytest.mark.parametrize(("event", "fixture"), [("package", "package.published.docker.json"),
                                                ("registry_package", "registry_package.published.docker.json")])
def test_github_package_events(event: str, fixture: str) -> None:
    body = _package_event(fixture)
    # the sample is one per-platform manifest of a multi-arch push: no tag, no record
    assert parse_package_event(event, body) == []
    tagged = copy.deepcopy(body)
    meta = tagged[event]["package_version"]["container_metadata"]["tag"]
    meta["name"] = "v1.2.3"
    meta["digest"] = "sha256:" + "c" * 64
    assert parse_package_event(event, tagged) == [
        ImageRecord("ghcr.io/codertocat/hello-world:v1.2.3", "sha256:" + "c" * 64)]
    meta["digest"] = "sha256:6c62fb45fe66bfb1ea9a66abc38f6a0cc974292b"     # the sample's (not a sha256) digest
    assert parse_package_event(event, tagged) == [ImageRecord("ghcr.io/codertocat/hello-world:v1.2.3", None)]


def test_github_package_events_that_are_not_container_pushes() -> None:
    body = _package_event("package.published.docker.json")
    body["package"]["package_version"]["container_metadata"]["tag"]["name"] = "v1"
    npm = copy.deepcopy(body)
    npm["package"]["package_type"] = "npm"
    npm["package"]["ecosystem"] = "npm"
    assert parse_package_event("package", npm) == []
    deleted = copy.deepcopy(body)
    deleted["action"] = "deleted"
    assert parse_package_event("package", deleted) == []
    with pytest.raises(PayloadError):
        parse_package_event("push", body)
    broken = copy.deepcopy(body)
    broken["package"]["package_version"] = "x"
    with pytest.raises(PayloadError, match="package_version"):
        parse_package_event("package", broken)
    ghes = copy.deepcopy(body)
    ghes["package"]["package_version"]["package_url"] = "containers.github.example.com/acme/app:"
    assert parse_package_event("package", ghes)[0].image == "containers.github.example.com/acme/app:v1"

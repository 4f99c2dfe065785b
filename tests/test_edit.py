"""prbot.edit: bump and promote on real repositories, checked by rendering with kubectl and helm."""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path
from typing import Any

import pytest
from support import commit_all, init_repo, snapshot_files, write

from prbot.config import CONFIG_FILE, Config, load_config_file
from prbot.edit import EDITORS, EditResult, FileEdit, bump, container_images, promote, rendered_images
from prbot.errors import ImageError, PrbotError
from prbot.images import parse_image
from prbot.model import Target
from prbot.render import render_target
from prbot.targets import discover_targets

SHOP = "registry.cn-hangzhou.aliyuncs.com/demo/shop"
DIGEST = "sha256:" + "0123456789abcdef" * 4
DIGEST2 = "sha256:" + "fedcba9876543210" * 4


def load(repo: Path) -> Config:
    return load_config_file(repo / CONFIG_FILE)


def changed(before: dict[str, bytes], after: dict[str, bytes]) -> dict[str, tuple[bytes, bytes]]:
    assert before.keys() == after.keys(), "files were added or removed"
    return {k: (before[k], after[k]) for k in before if before[k] != after[k]}


def render_all(repo: Path, config: Config) -> dict[str, list[dict[str, Any]]]:
    return {t.key: render_target(repo, t) for t in discover_targets(config, repo)}


def images_of(objects: list[dict[str, Any]]) -> set[str]:
    return {str(r) for refs in container_images(objects).values() for r in refs}


def target(repo: Path, config: Config, key: str) -> Target:
    return next(t for t in discover_targets(config, repo) if t.key == key)


# -- the example repository --------------------------------------------------------------------------------

def test_bump_into_dev_changes_only_what_dev_renders(example_repo: Path) -> None:
    config = load(example_repo)
    before_files = snapshot_files(example_repo)
    before = render_all(example_repo, config)

    result = bump(example_repo, config, f"{SHOP}:1.2.0", "dev")

    assert result == EditResult(
        edits=[FileEdit("apps/shop/envs/dev/kustomization.yaml", "shop/dev", "1.1.0", "1.2.0", SHOP)],
        current=[], errors=[], matched=True)
    diff = changed(before_files, snapshot_files(example_repo))
    assert diff == {"apps/shop/envs/dev/kustomization.yaml": (
        before_files["apps/shop/envs/dev/kustomization.yaml"],
        before_files["apps/shop/envs/dev/kustomization.yaml"].replace(
            b'newTag: "1.1.0"   # bumped by prbot', b'newTag: "1.2.0"   # bumped by prbot'))}

    after = render_all(example_repo, config)
    assert after.keys() == before.keys()
    differ = {key for key in before if before[key] != after[key]}
    assert differ == {"shop/dev"}
    assert f"{SHOP}:1.2.0" in images_of(after["shop/dev"])
    assert f"{SHOP}:1.1.0" not in images_of(after["shop/dev"])


def test_bump_twice_changes_nothing_the_second_time(example_repo: Path) -> None:
    config = load(example_repo)
    bump(example_repo, config, f"{SHOP}:1.2.0", "dev")
    snap = snapshot_files(example_repo)
    again = bump(example_repo, config, f"{SHOP}:1.2.0", "dev")
    assert again == EditResult(edits=[], current=["shop/dev"], errors=[], matched=True)
    assert snapshot_files(example_repo) == snap


def test_promote_dev_to_staging_carries_what_dev_renders(example_repo: Path) -> None:
    config = load(example_repo)
    bump(example_repo, config, f"{SHOP}:1.2.0", "dev")
    bump(example_repo, config, f"acme/worker:0.6.0@{DIGEST}", "dev")
    before_files = snapshot_files(example_repo)
    before = render_all(example_repo, config)

    result = promote(example_repo, config, "dev", "staging")

    assert result.errors == [] and result.matched
    assert sorted((e.target, e.path, e.image, e.old, e.new) for e in result.edits) == [
        ("billing/staging", "billing/staging/values.yaml", "ghcr.io/acme/billing", "2.3.0", "2.4.0"),
        ("shop/staging", "apps/shop/envs/staging/kustomization.yaml", SHOP, "1.0.0", "1.2.0"),
        ("worker/staging", "apps/worker/envs/staging/worker.yaml", "acme/worker", "0.4.0", f"0.6.0@{DIGEST}"),
    ]
    diff = changed(before_files, snapshot_files(example_repo))
    assert set(diff) == {"billing/staging/values.yaml", "apps/shop/envs/staging/kustomization.yaml",
                         "apps/worker/envs/staging/worker.yaml"}
    old, new = diff["billing/staging/values.yaml"]
    assert new == old.replace(b'tag: "2.3.0"', b'tag: "2.4.0"')
    old, new = diff["apps/shop/envs/staging/kustomization.yaml"]
    assert new == old.replace(b'newTag: "1.0.0"', b'newTag: "1.2.0"')
    old, new = diff["apps/worker/envs/staging/worker.yaml"]
    assert new == old.replace(b"acme/worker:0.4.0", f"acme/worker:0.6.0@{DIGEST}".encode())
    assert new.count(b"'acme/worker:0.6.0@") == 2 and new.count(b'"acme/worker:0.6.0@') == 1

    after = render_all(example_repo, config)
    assert {key for key in before if before[key] != after[key]} == {
        "shop/staging", "billing/staging", "worker/staging"}
    for app in ("shop", "billing", "worker"):
        assert images_of(after[f"{app}/staging"]) == images_of(after[f"{app}/dev"])

    again = promote(example_repo, config, "dev", "staging")
    assert again.edits == [] and sorted(again.current) == ["billing/staging", "shop/staging", "worker/staging"]


def test_promote_with_nothing_to_promote(example_repo: Path) -> None:
    config = load(example_repo)
    promote(example_repo, config, "staging", "prod")     # staging and prod hold the same versions
    snap = snapshot_files(example_repo)
    result = promote(example_repo, config, "staging", "prod", app="billing")
    assert result.edits == [] and result.current == ["billing/prod"] and result.errors == []
    assert snapshot_files(example_repo) == snap


def test_plain_multi_document_keeps_each_quoting(example_repo: Path) -> None:
    config = load(example_repo)
    rel = "apps/worker/envs/dev/worker.yaml"
    original = (example_repo / rel).read_bytes()
    result = bump(example_repo, config, "docker.io/acme/worker:0.7.0", "dev")
    assert [(e.path, e.image, e.old, e.new) for e in result.edits] == [(rel, "acme/worker", "0.5.0", "0.7.0")]
    assert (example_repo / rel).read_bytes() == original.replace(b"acme/worker:0.5.0", b"acme/worker:0.7.0")
    objects = render_target(example_repo, target(example_repo, config, "worker/dev"))
    assert images_of(objects) == {"acme/worker:0.7.0"}


def test_app_filter_and_unmatched_image(example_repo: Path) -> None:
    config = load(example_repo)
    snap = snapshot_files(example_repo)
    result = bump(example_repo, config, f"{SHOP}:1.5.0", "dev", app="billing")
    assert result == EditResult(edits=[], current=[], errors=[], matched=False)
    result = bump(example_repo, config, "busybox:1.36", "dev")
    assert result == EditResult(edits=[], current=[], errors=[], matched=False)
    assert snapshot_files(example_repo) == snap


@pytest.mark.parametrize("image", [
    "", "nginx", "Shop:1.0", "nginx:", "nginx:-bad", "nginx:1.0 ", "a b:1", "nginx@sha256:abc",
    f"{SHOP}:1.0@md5:{'0' * 32}", "nginx:" + "x" * 129, "-nginx:1", "nginx::1", "ghcr.io//x:1",
])
def test_bad_image_reference_is_refused_before_anything(example_repo: Path, image: str) -> None:
    config = load(example_repo)
    snap = snapshot_files(example_repo)
    with pytest.raises(ImageError) as info:
        bump(example_repo, config, image, "dev")
    assert isinstance(info.value, PrbotError) and "\n" not in str(info.value)
    assert snapshot_files(example_repo) == snap


def test_unknown_environment_and_app(example_repo: Path) -> None:
    config = load(example_repo)
    snap = snapshot_files(example_repo)
    with pytest.raises(PrbotError, match="qa"):
        bump(example_repo, config, f"{SHOP}:2.0.0", "qa")
    with pytest.raises(PrbotError, match="nope"):
        bump(example_repo, config, f"{SHOP}:2.0.0", "dev", app="nope")
    with pytest.raises(PrbotError, match="qa"):
        promote(example_repo, config, "dev", "qa")
    with pytest.raises(PrbotError):
        promote(example_repo, config, "dev", "dev")
    assert snapshot_files(example_repo) == snap


def test_broken_target_is_reported_and_nothing_is_written(example_repo: Path) -> None:
    config = load(example_repo)
    write(example_repo, "apps/worker/envs/dev/worker.yaml", "kind: Deployment\nspec: [\n")
    snap = snapshot_files(example_repo)
    result = bump(example_repo, config, f"{SHOP}:1.3.0", "dev")
    assert [e.target for e in result.edits] == ["shop/dev"] and not result.written   # what it would do
    assert len(result.errors) == 1 and result.errors[0].startswith("apps/worker/envs/dev/worker.yaml:3: ")
    assert "invalid YAML" in result.errors[0] and result.errors[0].endswith(" (worker/dev)")
    assert snapshot_files(example_repo) == snap, "all or nothing: shop/dev is not edited either"


def test_renderer_without_an_editor_is_a_target_error_and_nothing_is_written(
        example_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load(example_repo)
    monkeypatch.delitem(EDITORS, "plain")            # as if a renderer were added without its editor
    snap = snapshot_files(example_repo)
    result = bump(example_repo, config, f"{SHOP}:1.3.0", "dev")
    assert result.errors == ["worker/dev: prbot cannot move images in plain targets "
                             "(no image editor for the 'plain' renderer)"]
    assert [e.target for e in result.edits] == ["shop/dev"] and not result.written   # what it would do
    assert snapshot_files(example_repo) == snap, "all or nothing: shop/dev is not edited either"


def test_render_failure_is_a_target_error_and_nothing_is_written(example_repo: Path) -> None:
    config = load(example_repo)
    write(example_repo, "apps/shop/envs/dev/kustomization.yaml",
          "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - missing.yaml\n")
    snap = snapshot_files(example_repo)
    result = promote(example_repo, config, "dev", "staging")
    assert any(e.startswith("shop/dev: ") for e in result.errors)
    assert {e.target for e in result.edits} == {"billing/staging", "worker/staging"} and not result.written
    assert snapshot_files(example_repo) == snap


def test_rendered_images_per_repository(example_repo: Path) -> None:
    config = load(example_repo)
    got = rendered_images(example_repo, target(example_repo, config, "worker/prod"))
    assert got == {"docker.io/acme/worker": parse_image("acme/worker:0.4.0")}
    got = rendered_images(example_repo, target(example_repo, config, "billing/dev"))
    assert got == {"ghcr.io/acme/billing": parse_image("ghcr.io/acme/billing:2.4.0")}


# -- kustomize, purpose-built ------------------------------------------------------------------------------

KCONFIG = """version: 1
environments:
  - name: dev
  - name: staging
  - name: prod
apps:
  - path: "apps/{app}/envs/{env}"
"""

BASE_DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx
        - name: helper
          image: busybox:1.36
"""


@pytest.fixture
def kustomize_repo(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "k")
    write(repo, CONFIG_FILE, KCONFIG)
    write(repo, "apps/web/base/deployment.yaml", BASE_DEPLOYMENT)
    write(repo, "apps/web/base/kustomization.yaml",
          "resources:\n  - deployment.yaml\nimages:\n  - name: nginx\n    newTag: \"1.25\"\n")
    # dev: no images entry at all, sequences not indented, no final newline
    write(repo, "apps/web/envs/dev/kustomization.yaml", "# dev overlay\nresources:\n- ../../base")
    # staging: a flow-style entry renaming the image to a mirror
    write(repo, "apps/web/envs/staging/kustomization.yaml",
          "resources: [../../base]\r\nimages:\r\n  - {name: nginx, newName: registry.example.com/mirror/nginx, "
          "newTag: \"1.25\"}  # mirrored\r\n")
    # prod: an entry for another image only, CRLF
    write(repo, "apps/web/envs/prod/kustomization.yaml",
          "resources:\r\n  - ../../base\r\nimages:\r\n  - name: busybox\r\n    newTag: '1.36'\r\n")
    commit_all(repo, "kustomize repo")
    return repo


def test_kustomize_entry_added_when_missing(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    config = load(repo)
    snap = snapshot_files(repo)
    result = bump(repo, config, "docker.io/library/nginx:1.27", "dev")
    assert result.errors == [] and result.matched
    assert [(e.path, e.image, e.old, e.new) for e in result.edits] == [
        ("apps/web/envs/dev/kustomization.yaml", "nginx", "1.25", "1.27")]
    assert changed(snap, snapshot_files(repo)) == {"apps/web/envs/dev/kustomization.yaml": (
        b"# dev overlay\nresources:\n- ../../base",
        b"# dev overlay\nresources:\n- ../../base\nimages:\n- name: nginx\n  newTag: \"1.27\"")}
    dev = render_target(repo, target(repo, config, "web/dev"))
    assert images_of(dev) == {"nginx:1.27", "busybox:1.36"}
    # the shared base is untouched, so staging and prod render as before
    assert bump(repo, config, "nginx:1.27", "dev").current == ["web/dev"]


def test_kustomize_entry_appended_to_existing_list(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    config = load(repo)
    rel = "apps/web/envs/prod/kustomization.yaml"
    original = (repo / rel).read_bytes()
    result = bump(repo, config, f"nginx:1.27.1@{DIGEST}", "prod")
    assert [(e.path, e.image, e.old, e.new) for e in result.edits] == [(rel, "nginx", "1.25", f"1.27.1@{DIGEST}")]
    assert (repo / rel).read_bytes() == original + (
        f"  - name: nginx\r\n    newTag: 1.27.1\r\n    digest: {DIGEST}\r\n").encode()
    assert images_of(render_target(repo, target(repo, config, "web/prod"))) == {
        f"nginx:1.27.1@{DIGEST}", "busybox:1.36"}


def test_kustomize_entry_matched_by_new_name_in_flow_style(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    config = load(repo)
    rel = "apps/web/envs/staging/kustomization.yaml"
    original = (repo / rel).read_bytes()
    snap = snapshot_files(repo)
    # the manifests' name `nginx` is renamed away in staging: docker.io nginx is not used there
    assert bump(repo, config, "nginx:1.27", "staging") == EditResult(matched=False)
    assert snapshot_files(repo) == snap
    result = bump(repo, config, "registry.example.com/mirror/nginx:1.30", "staging")
    assert [(e.image, e.old, e.new) for e in result.edits] == [
        ("registry.example.com/mirror/nginx", "1.25", "1.30")]
    assert (repo / rel).read_bytes() == original.replace(b'newTag: "1.25"}', b'newTag: "1.30"}')
    assert "registry.example.com/mirror/nginx:1.30" in images_of(
        render_target(repo, target(repo, config, "web/staging")))


def test_kustomize_rename_only_entry_gets_a_new_tag(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    rel = "apps/web/envs/staging/kustomization.yaml"
    mirror = "registry.example.com/mirror/nginx"
    write(repo, rel, f"resources: [../../base]\nimages:\n  - {{name: nginx, newName: {mirror}}}\n")
    config = load(repo)
    result = bump(repo, config, f"{mirror}:1.27", "staging")
    assert [(e.image, e.old, e.new) for e in result.edits] == [(mirror, "1.25", "1.27")]
    assert (repo / rel).read_text() == (
        f'resources: [../../base]\nimages:\n  - {{name: nginx, newName: {mirror}, newTag: "1.27"}}\n')
    assert f"{mirror}:1.27" in images_of(render_target(repo, target(repo, config, "web/staging")))


def test_kustomize_entry_matched_by_name_digest_pin_and_unpin(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    config = load(repo)
    rel = "apps/web/envs/prod/kustomization.yaml"
    original = (repo / rel).read_bytes()
    bump(repo, config, f"docker.io/library/busybox:1.37@{DIGEST}", "prod")
    pinned = original.replace(b"newTag: '1.36'\r\n", f"newTag: '1.37'\r\n    digest: {DIGEST}\r\n".encode())
    assert (repo / rel).read_bytes() == pinned
    assert f"busybox:1.37@{DIGEST}" in images_of(render_target(repo, target(repo, config, "web/prod")))
    bump(repo, config, f"busybox:1.37@{DIGEST2}", "prod")
    assert (repo / rel).read_bytes() == pinned.replace(DIGEST.encode(), DIGEST2.encode())
    result = bump(repo, config, "busybox:1.38", "prod")
    assert [(e.image, e.old, e.new) for e in result.edits] == [("busybox", f"1.37@{DIGEST2}", "1.38")]
    assert (repo / rel).read_bytes() == original.replace(b"'1.36'", b"'1.38'")
    assert "busybox:1.38" in images_of(render_target(repo, target(repo, config, "web/prod")))


def test_kustomize_base_is_never_edited(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    config = load(repo)
    before = render_all(repo, config)
    snap = snapshot_files(repo)
    for env in ("dev", "prod"):
        bump(repo, config, "nginx:1.28", env)
    diff = changed(snap, snapshot_files(repo))
    assert set(diff) == {"apps/web/envs/dev/kustomization.yaml", "apps/web/envs/prod/kustomization.yaml"}
    after = render_all(repo, config)
    assert after["web/staging"] == before["web/staging"]
    assert "nginx:1.28" in images_of(after["web/dev"]) and "nginx:1.28" in images_of(after["web/prod"])


def test_overlay_read_by_another_target_is_not_edited(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    # staging now builds on top of the dev overlay: editing dev's kustomization would move staging too
    write(repo, "apps/web/envs/staging/kustomization.yaml", "resources:\n- ../dev\n")
    config = load(repo)
    snap = snapshot_files(repo)
    result = bump(repo, config, "nginx:1.28", "dev")
    assert result.edits == []
    assert result.errors == ["apps/web/envs/dev/kustomization.yaml:2: also read by web/staging; "
                             "prbot does not edit shared files (web/dev)"]
    assert snapshot_files(repo) == snap


# -- helm, purpose-built ---------------------------------------------------------------------------------

HCONFIG = """version: 1
environments:
  - name: dev
  - name: staging
apps:
  - name: multi
    path: "multi/{env}"
    helm: {chart: "charts/multi", values: ["values.yaml"]}
"""

HTEMPLATE = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  selector:
    matchLabels: {app: multi}
  template:
    metadata:
      labels: {app: multi}
    spec:
      containers:
        - name: api
          image: "{{ .Values.api.image.repository }}:{{ .Values.api.image.tag }}"
        - name: sidecar
          image: {{ .Values.sidecar.image | quote }}
        - name: proxy
          image: "{{ .Values.proxy.image.registry }}/{{ .Values.proxy.image.repository }}:\
{{- .Values.proxy.image.tag }}{{ if .Values.proxy.image.digest }}@{{ .Values.proxy.image.digest }}{{ end }}"
        - name: web
          image: "{{ .Values.web.image.repository }}:{{ .Values.web.image.tag }}"
"""

HDEFAULTS = """api:
  image:
    repository: ghcr.io/acme/api
    tag: "0.0.1"
sidecar:
  image: ghcr.io/acme/sidecar:0.0.1
proxy:
  image:
    registry: quay.io
    repository: acme/proxy
    tag: "0.0.1"
    digest: ""
web:
  image:
    repository: ghcr.io/acme/web
    tag: "0.1"
"""

HDEV = """# dev values
api:
  replicas: 1
  image:   # nested one level down
    repository: ghcr.io/acme/api
    tag: "1.0"
sidecar:
  image: 'ghcr.io/acme/sidecar:2.0'   # a string
proxy:
  image:
    registry: quay.io
    repository: acme/proxy
    tag: 3.0.0
web:
  image:
    tag: "0.2"       # repository from the chart
"""

HSTAGING = """# staging values: only what differs
api:
  image: {repository: ghcr.io/acme/api, tag: "0.9"}
"""


@pytest.fixture
def helm_repo(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "h")
    write(repo, CONFIG_FILE, HCONFIG)
    write(repo, "charts/multi/Chart.yaml", "apiVersion: v2\nname: multi\nversion: 0.1.0\n")
    write(repo, "charts/multi/values.yaml", HDEFAULTS)
    write(repo, "charts/multi/templates/deployment.yaml", HTEMPLATE)
    write(repo, "multi/dev/values.yaml", HDEV)
    write(repo, "multi/staging/values.yaml", HSTAGING)
    commit_all(repo, "helm repo")
    return repo


def helm_images(repo: Path, config: Config, env: str) -> set[str]:
    return images_of(render_target(repo, target(repo, config, f"multi/{env}")))


def test_helm_nested_string_split_and_tag_only_forms(helm_repo: Path) -> None:
    repo = helm_repo
    config = load(repo)
    assert helm_images(repo, config, "dev") == {
        "ghcr.io/acme/api:1.0", "ghcr.io/acme/sidecar:2.0", "quay.io/acme/proxy:3.0.0", "ghcr.io/acme/web:0.2"}
    snap = snapshot_files(repo)
    for image in ("ghcr.io/acme/api:1.1", "ghcr.io/acme/sidecar:2.1", "quay.io/acme/proxy:3.1.0",
                  "ghcr.io/acme/web:0.3"):
        result = bump(repo, config, image, "dev")
        assert result.errors == [] and result.matched and len(result.edits) == 1, image
    diff = changed(snap, snapshot_files(repo))
    assert diff == {"multi/dev/values.yaml": (HDEV.encode(), HDEV.replace(
        'tag: "1.0"', 'tag: "1.1"').replace("sidecar:2.0'", "sidecar:2.1'").replace(
        "tag: 3.0.0", "tag: 3.1.0").replace('tag: "0.2"', 'tag: "0.3"').encode())}
    assert helm_images(repo, config, "dev") == {
        "ghcr.io/acme/api:1.1", "ghcr.io/acme/sidecar:2.1", "quay.io/acme/proxy:3.1.0", "ghcr.io/acme/web:0.3"}


def test_helm_digest_field_and_tag_that_needs_quoting(helm_repo: Path) -> None:
    repo = helm_repo
    config = load(repo)
    bump(repo, config, f"quay.io/acme/proxy:3.10@{DIGEST}", "dev")
    text = (repo / "multi/dev/values.yaml").read_text()
    assert text == HDEV.replace("    tag: 3.0.0\n", f'    tag: "3.10"\n    digest: {DIGEST}\n')
    assert f"quay.io/acme/proxy:3.10@{DIGEST}" in helm_images(repo, config, "dev")
    bump(repo, config, "quay.io/acme/proxy:3.11", "dev")
    assert (repo / "multi/dev/values.yaml").read_text() == HDEV.replace(
        "    tag: 3.0.0\n", '    tag: "3.11"\n    digest: ""\n')
    assert "quay.io/acme/proxy:3.11" in helm_images(repo, config, "dev")


def test_helm_digest_without_digest_field_goes_into_the_tag(helm_repo: Path) -> None:
    repo = helm_repo
    config = load(repo)
    bump(repo, config, f"ghcr.io/acme/api:1.2@{DIGEST}", "dev")
    assert (repo / "multi/dev/values.yaml").read_text() == HDEV.replace('tag: "1.0"', f'tag: "1.2@{DIGEST}"')
    assert f"ghcr.io/acme/api:1.2@{DIGEST}" in helm_images(repo, config, "dev")


def test_helm_flow_map_and_tag_added_from_chart_defaults(helm_repo: Path) -> None:
    repo = helm_repo
    config = load(repo)
    snap = snapshot_files(repo)
    result = promote(repo, config, "dev", "staging")
    assert result.errors == []
    assert sorted((e.image, e.old, e.new) for e in result.edits) == [
        ("ghcr.io/acme/api", "0.9", "1.0"),
        ("ghcr.io/acme/sidecar", "0.0.1", "2.0"),
        ("ghcr.io/acme/web", "0.1", "0.2"),
        ("quay.io/acme/proxy", "0.0.1", "3.0.0"),
    ]
    diff = changed(snap, snapshot_files(repo))
    assert set(diff) == {"multi/staging/values.yaml"}, "the chart's shared values.yaml is never edited"
    assert diff["multi/staging/values.yaml"][1].decode() == (
        '# staging values: only what differs\n'
        'api:\n  image: {repository: ghcr.io/acme/api, tag: "1.0"}\n'
        'sidecar:\n  image: ghcr.io/acme/sidecar:2.0\n'
        'web:\n  image:\n    tag: "0.2"\n'
        'proxy:\n  image:\n    tag: 3.0.0\n')
    assert helm_images(repo, config, "staging") == helm_images(repo, config, "dev")
    again = promote(repo, config, "dev", "staging")
    assert again.edits == [] and again.current == ["multi/staging"]


def test_helm_chart_values_are_the_targets_own_when_the_chart_lives_in_the_target(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "own")
    write(repo, CONFIG_FILE,
          "version: 1\nenvironments:\n  - name: dev\napps:\n  - name: solo\n    path: \"solo/{env}\"\n")
    write(repo, "solo/dev/Chart.yaml", "apiVersion: v2\nname: solo\nversion: 0.1.0\n")
    write(repo, "solo/dev/values.yaml", "image:\n  repository: ghcr.io/acme/solo\n  tag: v1\n")
    write(repo, "solo/dev/templates/pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: solo\nspec:\n"
          "  containers:\n    - name: solo\n      image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n")
    config = load(repo)
    result = bump(repo, config, "ghcr.io/acme/solo:v2", "dev")
    assert [(e.path, e.old, e.new) for e in result.edits] == [("solo/dev/values.yaml", "v1", "v2")]
    assert (repo / "solo/dev/values.yaml").read_text() == "image:\n  repository: ghcr.io/acme/solo\n  tag: v2\n"
    assert images_of(render_target(repo, target(repo, config, "solo/dev"))) == {"ghcr.io/acme/solo:v2"}


def test_helm_shared_values_file_is_never_edited(helm_repo: Path) -> None:
    repo = helm_repo
    write(repo, CONFIG_FILE, HCONFIG.replace('values: ["values.yaml"]', 'values: ["../common.yaml", "values.yaml"]'))
    write(repo, "multi/common.yaml", "# read by every environment\napi:\n  image:\n    repository: ghcr.io/acme/api\n"
          "    tag: '0.5'\nsidecar:\n  image: ghcr.io/acme/sidecar:0.5\n")
    write(repo, "multi/staging/values.yaml", "api:\n  replicas: 2\n")
    # the chart's own default names another api repository: common.yaml takes precedence over it
    write(repo, "charts/multi/values.yaml", HDEFAULTS.replace("ghcr.io/acme/api", "example.com/unused/api"))
    config = load(repo)
    snap = snapshot_files(repo)
    # dev overrides the api image in its own values file: that one is edited, common.yaml is not
    result = bump(repo, config, "ghcr.io/acme/api:1.1", "dev")
    assert result.errors == [] and [e.path for e in result.edits] == ["multi/dev/values.yaml"]
    assert set(changed(snap, snapshot_files(repo))) == {"multi/dev/values.yaml"}
    # staging takes the api image from common.yaml alone: its own values file gets the tag
    result = bump(repo, config, "ghcr.io/acme/api:1.1", "staging")
    assert result.errors == [] and [e.path for e in result.edits] == ["multi/staging/values.yaml"]
    assert (repo / "multi/staging/values.yaml").read_text() == 'api:\n  replicas: 2\n  image:\n    tag: "1.1"\n'
    assert "ghcr.io/acme/api:1.1" in helm_images(repo, config, "staging")
    assert bump(repo, config, "ghcr.io/acme/api:1.1", "staging").current == ["multi/staging"]
    # from now on the tag-only override (its repository set in common.yaml) is what moves
    result = bump(repo, config, "ghcr.io/acme/api:1.2", "staging")
    assert [(e.path, e.image, e.old, e.new) for e in result.edits] == [
        ("multi/staging/values.yaml", "ghcr.io/acme/api", "1.1", "1.2")]
    assert (repo / "multi/staging/values.yaml").read_text() == 'api:\n  replicas: 2\n  image:\n    tag: "1.2"\n'
    assert "ghcr.io/acme/api:1.2" in helm_images(repo, config, "staging")
    # an image set only in the shared file, with no own values file to override it in: refused
    write(repo, CONFIG_FILE, HCONFIG.replace('values: ["values.yaml"]', 'values: ["../common.yaml"]'))
    result = bump(repo, load(repo), "ghcr.io/acme/sidecar:0.6", "dev")
    assert result.edits == [] and result.errors == [
        "multi/common.yaml:7: also read by multi/staging; prbot does not edit shared files (multi/dev)"]
    assert (repo / "multi/common.yaml").read_bytes() == snap["multi/common.yaml"]


# -- plain, purpose-built --------------------------------------------------------------------------------

WORKLOADS = """# every workload kind
apiVersion: v1
kind: Pod
metadata: {name: debug}
spec:
  containers:
    - name: main
      image: ghcr.io/acme/tool:1.0
  ephemeralContainers:
    - name: dbg
      image: ghcr.io/acme/tool:1.0
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      initContainers: [{name: init, image: "ghcr.io/acme/tool:1.0"}]
      containers:
        - {name: db, image: postgres:16}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
        - name: agent
          image: ghcr.io/acme/tool:0.9   # older
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs}
spec:
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers:
        - name: rs
          image: ghcr.io/acme/tool:1.0
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: once
          image: ghcr.io/acme/tool:1.0
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 1 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - name: nightly
              image: ghcr.io/acme/tool:1.0
---
apiVersion: v1
kind: ConfigMap
metadata: {name: not-a-container}
data:
  image: ghcr.io/acme/tool:1.0
"""

POD_JSON = """{
  "apiVersion": "v1",
  "kind": "Pod",
  "metadata": {"name": "json-pod"},
  "spec": {"containers": [{"name": "c", "image": "ghcr.io/acme/tool:1.0"}]}
}
"""


@pytest.fixture
def plain_repo(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "p")
    write(repo, CONFIG_FILE, KCONFIG)
    write(repo, "apps/jobs/envs/dev/workloads.yml", WORKLOADS)
    write(repo, "apps/jobs/envs/dev/pod.json", POD_JSON)
    write(repo, "apps/jobs/envs/dev/notes.txt", "image: ghcr.io/acme/tool:1.0\n")
    commit_all(repo, "plain repo")
    return repo


def test_plain_every_workload_kind_and_json(plain_repo: Path) -> None:
    repo = plain_repo
    config = load(repo)
    snap = snapshot_files(repo)
    result = bump(repo, config, "ghcr.io/acme/tool:1.1", "dev")
    assert result.errors == []
    assert sorted((e.path, e.image, e.old, e.new) for e in result.edits) == [
        ("apps/jobs/envs/dev/pod.json", "ghcr.io/acme/tool", "1.0", "1.1"),
        ("apps/jobs/envs/dev/workloads.yml", "ghcr.io/acme/tool", "0.9", "1.1"),
        ("apps/jobs/envs/dev/workloads.yml", "ghcr.io/acme/tool", "1.0", "1.1"),
    ]
    diff = changed(snap, snapshot_files(repo))
    expected = WORKLOADS.replace("image: ghcr.io/acme/tool:1.0", "image: ghcr.io/acme/tool:1.1").replace(
        'image: "ghcr.io/acme/tool:1.0"', 'image: "ghcr.io/acme/tool:1.1"').replace(
        "ghcr.io/acme/tool:0.9   # older", "ghcr.io/acme/tool:1.1   # older")
    # the ConfigMap's `image:` is data, not a container: left alone
    expected = expected.replace("data:\n  image: ghcr.io/acme/tool:1.1", "data:\n  image: ghcr.io/acme/tool:1.0")
    assert diff == {
        "apps/jobs/envs/dev/workloads.yml": (WORKLOADS.encode(), expected.encode()),
        "apps/jobs/envs/dev/pod.json": (POD_JSON.encode(), POD_JSON.replace("tool:1.0", "tool:1.1").encode()),
    }
    objects = render_target(repo, target(repo, config, "jobs/dev"))
    assert images_of(objects) == {"ghcr.io/acme/tool:1.1", "postgres:16"}
    assert bump(repo, config, "ghcr.io/acme/tool:1.1", "dev").current == ["jobs/dev"]


def test_write_failure_leaves_every_file_untouched(plain_repo: Path) -> None:
    repo = plain_repo
    config = load(repo)
    # pod.json (small) is staged first, then workloads.yml (large) cannot be written: neither may change
    write(repo, "apps/jobs/envs/dev/workloads.yml", WORKLOADS + "# padding\n" * 400)
    snap = snapshot_files(repo)
    limit = (len(POD_JSON) + len(WORKLOADS) + 4000) // 2
    assert len(POD_JSON) < limit < len(snap["apps/jobs/envs/dev/workloads.yml"])
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(PrbotError, match="could not write"):
            bump(repo, config, "ghcr.io/acme/tool:1.1", "dev")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    assert snapshot_files(repo) == snap
    assert not [p for p in os.listdir(repo / "apps/jobs/envs/dev") if p.endswith(".prbot-tmp")]


# -- GitOps objects: the shapes Argo CD and Flux users write ----------------------------------------------

GITOPS_CONFIG = ("version: 1\nenvironments:\n  - name: dev\n  - name: prod\n"
                 "apps:\n  - name: apps\n    path: 'argocd/{env}'\n")


def gitops_repo(tmp_path: Path, files: dict[str, str]) -> Path:
    repo = init_repo(tmp_path / "gitops")
    write(repo, CONFIG_FILE, GITOPS_CONFIG)
    for rel, text in files.items():
        write(repo, rel, text)
    commit_all(repo)
    return repo


APPSET = """apiVersion: argoproj.io/v1alpha1
kind: ApplicationSet
metadata:
  name: guestbook
spec:
  generators:
  - list:
      elements:
      - cluster: engineering-dev
  template:
    metadata:
      name: '{{cluster}}-guestbook'
    spec:
      project: default
      source:
        repoURL: https://github.com/acme/apps
        targetRevision: HEAD
        path: guestbook
        kustomize:
          images:
          - gb-frontend=ghcr.io/acme/gb-frontend:v5   # renamed
          - "ghcr.io/acme/other@sha256:%s"
      destination:
        server: https://kubernetes.default.svc
""" % ("ab" * 32)

PARAMS = """apiVersion: argoproj.io/v1alpha1
kind: Application
metadata:
  name: api
spec:
  project: default
  destination: {server: https://kubernetes.default.svc, namespace: api}
  source:
    repoURL: https://charts.example.com
    chart: api
    targetRevision: 1.0.0
    helm:
      parameters:
        - name: image.registry
          value: ghcr.io
        - name: image.repository
          value: acme/api
        - name: sidecar.image
          value: docker.io/library/nginx:1.27
"""


def test_applicationset_template_kustomize_images_keep_the_rename(tmp_path: Path) -> None:
    repo = gitops_repo(tmp_path, {"argocd/dev/appset.yaml": APPSET, "argocd/prod/appset.yaml": APPSET})
    result = bump(repo, load(repo), "ghcr.io/acme/gb-frontend:v6", "dev")
    assert result.errors == [] and [(e.path, e.old, e.new) for e in result.edits] == [
        ("argocd/dev/appset.yaml", "v5", "v6")]
    text = (repo / "argocd/dev/appset.yaml").read_text()
    assert text == APPSET.replace("gb-frontend=ghcr.io/acme/gb-frontend:v5", "gb-frontend=ghcr.io/acme/gb-frontend:v6")
    result = bump(repo, load(repo), f"ghcr.io/acme/other@{DIGEST}", "dev")
    assert (repo / "argocd/dev/appset.yaml").read_text() == text.replace("ab" * 32, DIGEST[7:])


def test_helm_parameters_registry_pair_without_a_tag_gets_one_and_image_parameters(tmp_path: Path) -> None:
    repo = gitops_repo(tmp_path, {"argocd/dev/api.yaml": PARAMS, "argocd/prod/api.yaml": PARAMS})
    result = bump(repo, load(repo), "ghcr.io/acme/api:2.0.0", "dev")
    assert result.errors == [] and [(e.path, e.old, e.new) for e in result.edits] == [
        ("argocd/dev/api.yaml", "", "2.0.0")]
    assert (repo / "argocd/dev/api.yaml").read_text() == PARAMS + (
        "        - name: image.tag\n          value: 2.0.0\n")
    result = bump(repo, load(repo), "nginx:1.28", "dev")
    assert [(e.old, e.new) for e in result.edits] == [("1.27", "1.28")]
    assert "value: docker.io/library/nginx:1.28\n" in (repo / "argocd/dev/api.yaml").read_text()
    snap = snapshot_files(repo)
    result = bump(repo, load(repo), f"ghcr.io/acme/api@{DIGEST}", "dev")
    assert not result.written and "a digest-only reference has no tag to write" in result.errors[0]
    assert snapshot_files(repo) == snap
    promoted = promote(repo, load(repo), "dev", "prod")
    assert promoted.errors == [] and {(e.old, e.new) for e in promoted.edits} == {("", "2.0.0"), ("1.27", "1.28")}


# -- one version rule for bump and promote ----------------------------------------------------------------

def versions_repo(tmp_path: Path, dev: str, prod: str, policy: str | None = None) -> Path:
    """web in dev and prod: each overlay sets nginx's tag in its own images: entry."""
    repo = init_repo(tmp_path / "v")
    rules = f"images:\n  - repository: nginx\n    policy: {policy}\n" if policy else ""
    write(repo, CONFIG_FILE, "version: 1\nenvironments:\n  - name: dev\n  - name: prod\n"
          "apps:\n  - path: \"apps/{app}/envs/{env}\"\n" + rules)
    write(repo, "apps/web/base/deployment.yaml", BASE_DEPLOYMENT)
    write(repo, "apps/web/base/kustomization.yaml", "resources:\n  - deployment.yaml\n")
    for env, tag in (("dev", dev), ("prod", prod)):
        write(repo, f"apps/web/envs/{env}/kustomization.yaml",
              f"resources:\n  - ../../base\nimages:\n  - name: nginx\n    newTag: \"{tag}\"\n")
    commit_all(repo, "versions")
    return repo


@pytest.mark.parametrize(("dev", "prod"), [
    ("2.0", "3.0"), ("v2.0", "v3.0"), ("v2", "v3"), ("1.9", "1.25"), ("v2.0.0-rc.1", "v2.0.0"),
    ("2.0.0", "v2.0.1"), ("2", "2.0.1"),
])
def test_promote_refuses_a_downgrade_however_the_versions_are_written(tmp_path: Path, dev: str, prod: str) -> None:
    repo = versions_repo(tmp_path, dev, prod)
    snap = snapshot_files(repo)
    result = promote(repo, load(repo), "dev", "prod")
    assert not result.written and result.errors == []
    assert result.refused == [f"web/prod: apps/web/envs/prod/kustomization.yaml: nginx {prod} → {dev}: "
                              f"{dev} is a lower version than {prod}"]
    assert snapshot_files(repo) == snap                    # nothing written
    forced = promote(repo, load(repo), "dev", "prod", force=True)
    assert forced.written and [(e.old, e.new) for e in forced.edits] == [(prod, dev)]


@pytest.mark.parametrize(("dev", "prod"), [("3.0", "2.0"), ("1.25", "1.9"), ("v2.0.0", "v2.0.0-rc.1"), ("v3", "2.9.9")])
def test_promote_moves_up_however_the_versions_are_written(tmp_path: Path, dev: str, prod: str) -> None:
    repo = versions_repo(tmp_path, dev, prod, policy="semver")
    result = promote(repo, load(repo), "dev", "prod")
    assert result.written and [(e.old, e.new) for e in result.edits] == [(prod, dev)]
    assert f'newTag: "{dev}"' in (repo / "apps/web/envs/prod/kustomization.yaml").read_text()


def test_promote_between_the_same_version_written_two_ways_is_no_downgrade(tmp_path: Path) -> None:
    repo = versions_repo(tmp_path, "2.0", "2.0.0")
    result = promote(repo, load(repo), "dev", "prod")
    assert result.refused == [] and result.written            # same version: carried, never refused


@pytest.mark.parametrize("policy", [None, "semver"])
def test_bump_reads_versions_as_promote_does(tmp_path: Path, policy: str | None) -> None:
    repo = versions_repo(tmp_path, "1.9", "2.0", policy=policy)
    config = load(repo)
    up = bump(repo, config, "nginx:1.25", "dev")                # 1.25 is above 1.9 (not text order)
    assert up.written and [(e.old, e.new) for e in up.edits] == [("1.9", "1.25")]
    up = bump(repo, config, "nginx:v3", "prod")                 # two-part and one-part tags are versions
    assert up.written and [(e.old, e.new) for e in up.edits] == [("2.0", "v3")]
    snap = snapshot_files(repo)
    for image, env, current in (("nginx:1.9", "dev", "1.25"), ("nginx:3.0.0-rc.1", "prod", "v3"),
                                ("nginx:v2.9", "prod", "v3")):
        down = bump(repo, config, image, env)
        assert not down.written and down.refused and f"is a lower version than {current}" in down.refused[0]
    assert snapshot_files(repo) == snap
    assert bump(repo, config, "nginx:1.9", "dev", force=True).written


def test_bump_under_semver_refuses_a_tag_that_is_no_version(tmp_path: Path) -> None:
    repo = versions_repo(tmp_path, "2.0", "3.0", policy="semver")
    snap = snapshot_files(repo)
    for tag in ("latest", "1.02", "3.0.0.1", "V4"):
        result = bump(repo, load(repo), f"nginx:{tag}", "dev")
        assert result.refused and f"{tag} is not a semantic version" in result.refused[0]
    assert snapshot_files(repo) == snap
    # without the policy, a tag that is no version has no order: a move to it is no downgrade
    repo2 = versions_repo(tmp_path / "2", "2.0", "3.0")
    assert bump(repo2, load(repo2), "nginx:latest", "dev").written


# -- targets that cannot be checked for the image ----------------------------------------------------------

REMOTE_BASE = "https://github.com/acme/infra//base?ref=v1.0.0"


def test_a_target_reading_a_remote_base_not_allowed_is_named_and_the_bump_proceeds(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    write(repo, "apps/vendor/envs/dev/kustomization.yaml", f"resources:\n  - {REMOTE_BASE}\n")
    # a target with a remote base that sets the image in its own images: entry needs no render
    write(repo, "apps/mirror/envs/dev/kustomization.yaml",
          f"resources:\n  - {REMOTE_BASE}\nimages:\n  - name: nginx\n    newTag: \"1.25\"\n")
    config = load(repo)
    snap = snapshot_files(repo)
    result = bump(repo, config, "nginx:1.27", "dev")
    assert result.errors == [] and result.refused == [] and result.written
    assert result.unchecked == [("vendor/dev", f"it reads {REMOTE_BASE}, a remote input that render.remote "
                                 "in .prbot.yml does not allow")]
    assert sorted((e.target, e.path) for e in result.edits) == [
        ("mirror/dev", "apps/mirror/envs/dev/kustomization.yaml"),
        ("web/dev", "apps/web/envs/dev/kustomization.yaml")]
    assert set(changed(snap, snapshot_files(repo))) == {"apps/mirror/envs/dev/kustomization.yaml",
                                                       "apps/web/envs/dev/kustomization.yaml"}


def test_a_not_checked_target_never_shows_the_credentials_of_its_remote(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    secret_url = "https://deploy:ghp_s3cr3tT0ken@github.com/acme/infra//base?ref=v1.0.0"
    write(repo, "apps/vendor/envs/dev/kustomization.yaml", f"resources:\n  - {secret_url}\n")
    write(repo, "apps/vendor/envs/prod/kustomization.yaml",
          "resources:\n  - git@github.com:acme/infra.git//base?ref=v1\n")
    config = load(repo)
    result = bump(repo, config, "nginx:1.27", "dev")
    [(key, why)] = result.unchecked
    assert key == "vendor/dev" and "ghp_s3cr3tT0ken" not in why and "deploy" not in why
    assert "https://github.com/acme/infra//base?ref=v1.0.0" in why
    # a remote the configuration allows is not a way around it: the ssh form is not fetched either
    prod = bump(repo, config, "nginx:1.27", "prod")
    assert prod.written and [k for k, _ in prod.unchecked] == ["vendor/prod"]


def test_promote_names_a_source_it_cannot_read_and_carries_the_others(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    for env in ("dev", "prod"):
        write(repo, f"apps/vendor/envs/{env}/kustomization.yaml", f"resources:\n  - {REMOTE_BASE}\n")
    bump(repo, load(repo), "nginx:1.27", "dev")
    result = promote(repo, load(repo), "dev", "prod")
    assert result.written and [k for k, _ in result.unchecked] == ["vendor/dev"]
    assert [(e.target, e.old, e.new) for e in result.edits] == [("web/prod", "1.25", "1.27")]


# -- files shared within one environment -------------------------------------------------------------------

SHARED_CONFIG = """version: 1
environments:
  - name: dev
  - name: staging
apps:
  - name: one
    path: "one/{env}"
    helm: {chart: "charts/multi", values: ["../../shared/{env}.yaml", "values.yaml"]}
  - name: two
    path: "two/{env}"
    helm: {chart: "charts/multi", values: ["../../shared/{env}.yaml", "values.yaml"]}
"""


@pytest.fixture
def shared_repo(tmp_path: Path) -> Path:
    """Two apps of one chart; each environment's shared/{env}.yaml sets the api image for both."""
    repo = init_repo(tmp_path / "s")
    write(repo, CONFIG_FILE, SHARED_CONFIG)
    write(repo, "charts/multi/Chart.yaml", "apiVersion: v2\nname: multi\nversion: 0.1.0\n")
    write(repo, "charts/multi/values.yaml", HDEFAULTS)
    write(repo, "charts/multi/templates/deployment.yaml", HTEMPLATE)
    for env, tag in (("dev", "1.0"), ("staging", "0.9")):
        write(repo, f"shared/{env}.yaml", f"# {env}: every app\napi:\n  image:\n    repository: ghcr.io/acme/api\n"
              f"    tag: \"{tag}\"\n")
        for app in ("one", "two"):
            write(repo, f"{app}/{env}/values.yaml", "api:\n  replicas: 1\n")
    commit_all(repo, "shared within an environment")
    return repo


def test_a_file_shared_within_one_environment_is_edited_once(shared_repo: Path) -> None:
    repo = shared_repo
    config = load(repo)
    snap = snapshot_files(repo)
    result = bump(repo, config, "ghcr.io/acme/api:1.1", "dev")
    assert result.errors == [] and result.refused == [] and result.written
    assert [(e.target, e.path, e.old, e.new) for e in result.edits] == [("one/dev", "shared/dev.yaml", "1.0", "1.1")]
    assert result.current == []                         # two/dev moved with one/dev: not "already current"
    diff = changed(snap, snapshot_files(repo))
    assert diff == {"shared/dev.yaml": (snap["shared/dev.yaml"],
                                        snap["shared/dev.yaml"].replace(b'tag: "1.0"', b'tag: "1.1"'))}
    for app in ("one", "two"):
        assert "ghcr.io/acme/api:1.1" in images_of(render_target(repo, target(repo, config, f"{app}/dev")))
        assert "ghcr.io/acme/api:0.9" in images_of(render_target(repo, target(repo, config, f"{app}/staging")))
    assert sorted(bump(repo, config, "ghcr.io/acme/api:1.1", "dev").current) == ["one/dev", "two/dev"]


def test_a_file_shared_with_an_app_not_asked_for_is_not_edited(shared_repo: Path) -> None:
    repo = shared_repo
    config = load(repo)
    # --app one: two/dev reads shared/dev.yaml too and was not asked to move: one's own file overrides it
    result = bump(repo, config, "ghcr.io/acme/api:1.1", "dev", app="one")
    assert [(e.target, e.path) for e in result.edits] == [("one/dev", "one/dev/values.yaml")]
    assert (repo / "shared/dev.yaml").read_text().endswith('tag: "1.0"\n')
    assert "ghcr.io/acme/api:1.0" in images_of(render_target(repo, target(repo, config, "two/dev")))


def test_promote_refuses_two_versions_for_one_shared_file(shared_repo: Path) -> None:
    repo = shared_repo
    config = load(repo)
    bump(repo, config, "ghcr.io/acme/api:1.1", "dev", app="one")      # one/dev runs 1.1, two/dev 1.0
    snap = snapshot_files(repo)
    result = promote(repo, config, "dev", "staging")
    assert not result.written and result.errors == [
        "shared/staging.yaml: one/staging and two/staging read it and would set ghcr.io/acme/api to 1.1 and "
        "1.0; one file holds one version (--app moves one app)"]
    assert snapshot_files(repo) == snap
    one = promote(repo, config, "dev", "staging", app="one")            # one app: its own file overrides
    assert one.written and [(e.target, e.path) for e in one.edits] == [("one/staging", "one/staging/values.yaml")]


# -- the image is edited where the target sets it ----------------------------------------------------------

def test_helm_only_the_values_file_that_decides_is_edited(helm_repo: Path) -> None:
    repo = helm_repo
    write(repo, CONFIG_FILE, HCONFIG.replace('values: ["values.yaml"]', 'values: ["values.yaml", "pin.yaml"]'))
    write(repo, "multi/dev/pin.yaml", "# what dev runs\napi:\n  image:\n    tag: \"1.5\"\n")
    write(repo, "multi/staging/pin.yaml", "{}\n")
    config = load(repo)
    snap = snapshot_files(repo)
    result = bump(repo, config, "ghcr.io/acme/api:1.6", "dev")
    assert [(e.path, e.old, e.new) for e in result.edits] == [("multi/dev/pin.yaml", "1.5", "1.6")]
    assert set(changed(snap, snapshot_files(repo))) == {"multi/dev/pin.yaml"}      # values.yaml's 1.0 decides nothing
    assert "ghcr.io/acme/api:1.6" in helm_images(repo, config, "dev")
    # the other images of values.yaml, set nowhere later, are still edited there
    result = bump(repo, config, "ghcr.io/acme/sidecar:2.1", "dev")
    assert [e.path for e in result.edits] == ["multi/dev/values.yaml"]


def test_kustomize_patch_of_the_overlay_that_sets_the_image_is_edited(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    rel = "apps/web/envs/dev/version.yml"
    write(repo, "apps/web/envs/dev/kustomization.yaml", "resources:\n- ../../base\npatches:\n- path: version.yml\n")
    write(repo, rel, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n"
          "    spec:\n      containers:\n        - name: web\n          image: nginx:1.26   # dev runs\n")
    config = load(repo)
    snap = snapshot_files(repo)
    result = bump(repo, config, "nginx:1.27", "dev")
    assert result.errors == [] and [(e.path, e.old, e.new) for e in result.edits] == [(rel, "1.26", "1.27")]
    assert changed(snap, snapshot_files(repo)) == {rel: (snap[rel], snap[rel].replace(b"nginx:1.26", b"nginx:1.27"))}
    assert images_of(render_target(repo, target(repo, config, "web/dev"))) == {"nginx:1.27", "busybox:1.36"}


def test_kustomize_patch_shared_or_not_deciding_gets_an_images_entry_instead(kustomize_repo: Path) -> None:
    repo = kustomize_repo
    patch = ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n"
             "    spec:\n      containers:\n        - name: web\n          image: nginx:1.26\n")
    # a patch every environment reads: never edited, the overlay's own images: entry overrides it
    write(repo, "apps/web/version/version.yml", patch)
    write(repo, "apps/web/version/kustomization.yaml", "apiVersion: kustomize.config.k8s.io/v1alpha1\n"
          "kind: Component\npatches:\n- path: version.yml\n")
    for env in ("dev", "prod"):
        write(repo, f"apps/web/envs/{env}/kustomization.yaml",
              "resources:\n- ../../base\ncomponents:\n- ../../version\n")
    config = load(repo)
    result = bump(repo, config, "nginx:1.27", "dev")
    assert result.errors == [] and [e.path for e in result.edits] == ["apps/web/envs/dev/kustomization.yaml"]
    assert (repo / "apps/web/version/version.yml").read_text() == patch
    assert "nginx:1.27" in images_of(render_target(repo, target(repo, config, "web/dev")))
    # an own file naming another version than the one rendered does not decide: left alone
    write(repo, "apps/web/envs/prod/kustomization.yaml", "resources:\n- ../../base\n- extra.yaml\n"
          "images:\n- name: nginx\n  newTag: \"1.26\"\n")
    write(repo, "apps/web/envs/prod/extra.yaml", patch.replace("name: web\n", "name: extra\n", 1)
          .replace("nginx:1.26", "nginx:1.0"))
    result = bump(repo, config, "nginx:1.27", "prod")
    assert [e.path for e in result.edits] == ["apps/web/envs/prod/kustomization.yaml"]
    assert "nginx:1.0" in (repo / "apps/web/envs/prod/extra.yaml").read_text()


def test_helm_an_override_that_would_not_win_is_refused(helm_repo: Path) -> None:
    repo = helm_repo
    # common.yaml comes last: it decides, and every environment reads it
    write(repo, CONFIG_FILE, HCONFIG.replace('values: ["values.yaml"]', 'values: ["values.yaml", "../common.yaml"]'))
    write(repo, "multi/common.yaml", "api:\n  image:\n    repository: ghcr.io/acme/api\n    tag: '0.5'\n")
    config = load(repo)
    snap = snapshot_files(repo)
    result = bump(repo, config, "ghcr.io/acme/api:1.1", "dev")
    assert result.edits == [] and result.errors == [
        "multi/common.yaml:3: also read by multi/staging; prbot does not edit shared files (multi/dev)"]
    assert snapshot_files(repo) == snap
    assert "ghcr.io/acme/api:0.5" in helm_images(repo, config, "dev")

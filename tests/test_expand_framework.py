"""The expansion framework itself, through an expander registered the way every expander is (one
entry in `EXPANDERS`): a path an object names is in its target's closure and rendered by
`ExpandContext.render_path` in the jail; a path the closure does not hold is refused; URLs of this
repository are recognised in any spelling and nothing else is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import commit_all, init_repo, write

from prbot.config import load_config
from prbot.expand import EXPANDERS, ExpandContext, Expander, Inputs, InputsContext, normalise_repository_url
from prbot.plan import make_plan

KIND = ("example.prbot.dev", "Bundle")


class BundleExpander(Expander):
    """`spec.path` rendered with kustomize, like a Flux Kustomization."""

    kinds = (KIND,)

    def inputs(self, doc: dict[str, Any], ctx: InputsContext) -> Inputs:
        return Inputs(local=[(str(doc.get("spec", {}).get("path", "")), "kustomize")])

    def expand(self, obj: dict[str, Any], ctx: ExpandContext) -> list[dict[str, Any]]:
        rel = ctx.local_path(obj["spec"]["path"], "path")
        return ctx.render_path(rel, "kustomize")


@pytest.fixture
def bundles() -> Iterator[None]:
    EXPANDERS[KIND] = BundleExpander()
    try:
        yield
    finally:
        del EXPANDERS[KIND]


CONFIG = "version: 1\nenvironments: [{name: dev}]\napps:\n  - name: app\n    path: 'deploy/{env}'\n"
CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value}\n"


def repo_with_bundle(tmp_path: Path, path: str) -> tuple[Path, str]:
    repo = init_repo(tmp_path / "repo")
    write(repo, ".prbot.yml", CONFIG)
    write(repo, "deploy/dev/bundle.yaml",
          f"apiVersion: example.prbot.dev/v1\nkind: Bundle\nmetadata:\n  name: b\nspec:\n  path: {path}\n")
    write(repo, "bundled/kustomization.yaml", "resources: [cm.yaml]\n")
    write(repo, "bundled/cm.yaml", CM.format(name="from-bundle", value="one"))
    return repo, commit_all(repo)


def test_a_path_an_object_names_is_in_the_closure_and_rendered(tmp_path: Path, bundles: None) -> None:
    repo, base = repo_with_bundle(tmp_path, "bundled")
    write(repo, "bundled/cm.yaml", CM.format(name="from-bundle", value="two"))     # only the bundled path
    head = commit_all(repo)
    plan = make_plan(repo, load_config(CONFIG), base, head)
    [target] = plan.targets
    assert target.status == "changed" and target.not_expanded == []
    [change] = target.changes
    assert (change.kind, change.namespace, change.name, change.origin) == ("ConfigMap", None, "from-bundle",
                                                                           "Bundle b")
    assert "+  key: two" in change.diff


@pytest.mark.parametrize("path", ["../outside", "/etc", "bundled/../../x"])
def test_a_path_leaving_the_repository_is_named_not_expanded(path: str, tmp_path: Path, bundles: None) -> None:
    repo, base = repo_with_bundle(tmp_path, "bundled")
    write(repo, "deploy/dev/bundle.yaml", (repo / "deploy/dev/bundle.yaml").read_text().replace("bundled", path))
    head = commit_all(repo)
    [target] = make_plan(repo, load_config(CONFIG), base, head).targets
    assert target.status == "changed" and target.error is None
    [reason] = target.not_expanded
    assert reason.startswith("Bundle b: refused: path ")


@pytest.mark.parametrize(("url", "same"), [
    ("https://github.com/acme/gitops", True), ("https://github.com/acme/gitops.git/", True),
    ("git@github.com:acme/gitops.git", True), ("ssh://git@GitHub.com/acme/gitops", True),
    ("https://token:x@github.com/acme/gitops", True), ("https://github.com/acme/gitops-evil", False),
    ("https://github.com/acme/gitops/../evil", False), ("https://github.com.evil.example/acme/gitops", False),
    ("file:///srv/acme/gitops", False), ("", False)])
def test_this_repository_in_any_spelling_and_nothing_else(url: str, same: bool) -> None:
    assert (normalise_repository_url(url) == "github.com/acme/gitops") is same

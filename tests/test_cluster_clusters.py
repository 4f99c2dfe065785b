"""`PRBOT_CLUSTERS`: the operator's cluster map, and the cluster of an environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import write

from prbot.cluster.clusters import ClusterMap, ClusterRef, MissingCluster, cluster_for, clusters_from_env, load_clusters
from prbot.config import load_config
from prbot.errors import PrbotError


def two_context_kubeconfig(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("apiVersion: v1\nkind: Config\n"
                    "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:1'}}]\n"
                    "users: [{name: u, user: {token: s3cr3t-token}}]\n"
                    "contexts:\n- {name: dev-admin, context: {cluster: c, user: u}}\n"
                    "- {name: prod-admin, context: {cluster: c, user: u}}\n"
                    "current-context: dev-admin\n")
    return path


def test_load_clusters(tmp_path: Path) -> None:
    kubeconfig = two_context_kubeconfig(tmp_path / "kube" / "dev.kubeconfig")
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(f"# cluster map\ndev: {{kubeconfig: kube/dev.kubeconfig}}\n"
                        f"prod:\n  kubeconfig: {kubeconfig}\n  context: prod-admin\n")
    assert load_clusters(clusters) == {
        "dev": ClusterRef("dev", kubeconfig, None),
        "prod": ClusterRef("prod", kubeconfig, "prod-admin"),
    }
    json_file = tmp_path / "clusters.json"
    json_file.write_text(json.dumps({"dev": {"kubeconfig": str(kubeconfig), "context": "dev-admin"}}))
    assert load_clusters(json_file) == {"dev": ClusterRef("dev", kubeconfig, "dev-admin")}
    assert clusters_from_env({"PRBOT_CLUSTERS": str(json_file)}) == load_clusters(json_file)
    assert clusters_from_env({}) == {}
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert load_clusters(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize(("text", "expected"), [
    ("- dev\n", ":1: expected a mapping of cluster names"),
    ("dev: kube/dev.kubeconfig\n", ":1: dev: expected {kubeconfig: PATH, context: NAME}"),
    ("dev:\n  context: dev-admin\n", ":1: dev.kubeconfig is required"),
    ("dev:\n  kubeconfig: kube/dev.kubeconfig\n  contxt: dev-admin\n",
     ":3: dev: unknown key 'contxt' (did you mean 'context'?)"),
    ("dev:\n  kubeconfig: [a]\n", ":2: dev.kubeconfig must be a path"),
    ("dev:\n  kubeconfig: kube/missing\n", ":2: dev.kubeconfig: "),
    ("dev:\n  kubeconfig: kube/dev.kubeconfig\n  context: staging-admin\n",
     ":3: dev.context: 'staging-admin' is not a context of "),
    ("dev: {kubeconfig: kube/dev.kubeconfig\n", ":2: "),
    ("dev: {kubeconfig: kube/dev.kubeconfig}\ndev: {kubeconfig: kube/dev.kubeconfig}\n", ":2: "),
    ("dev:\n  kubeconfig: kube/broken\n", ":2: dev.kubeconfig: "),
    ("dev:\n  kubeconfig: kube/nocurrent\n", ":2: dev: "),
])
def test_load_clusters_errors(tmp_path: Path, text: str, expected: str) -> None:
    two_context_kubeconfig(tmp_path / "kube" / "dev.kubeconfig")
    write(tmp_path, "kube/broken", "users: [{name: u, user: {token: s3cr3t-token}}\n  - oops: [\n")
    write(tmp_path, "kube/nocurrent", "contexts: [{name: a, context: {}}]\n")
    clusters = write(tmp_path, "clusters.yaml", text)
    with pytest.raises(PrbotError) as err:
        load_clusters(clusters)
    message = str(err.value)
    assert message.startswith(f"{clusters}{expected}")
    assert "\n" not in message and "s3cr3t" not in message


def test_load_clusters_reports_every_problem_count(tmp_path: Path) -> None:
    clusters = write(tmp_path, "clusters.yaml", "dev: {}\nprod: {kubeconfig: nope}\n")
    with pytest.raises(PrbotError, match=r"clusters.yaml:1: dev.kubeconfig is required \(and 1 more\)$"):
        load_clusters(clusters)
    with pytest.raises(PrbotError, match="cannot read the cluster map"):
        load_clusters(tmp_path / "absent.yaml")


def test_cluster_for_an_environment(tmp_path: Path) -> None:
    config = load_config("""\
version: 1
environments:
  - name: dev
    cluster: dev
  - name: staging
    cluster: staging-eu
  - name: prod
apps:
  - path: "apps/{app}/envs/{env}"
""")
    ref = ClusterRef("dev", tmp_path / "dev.kubeconfig")
    clusters = ClusterMap({"dev": ref, "staging-us": ref}, source=tmp_path / "clusters.yaml")
    assert cluster_for(config, "dev", clusters) == ref
    assert cluster_for(config, "prod", clusters) is None                # names no cluster
    with pytest.raises(MissingCluster) as err:
        cluster_for(config, "staging", clusters)
    assert str(err.value) == (f"environment 'staging' uses cluster 'staging-eu', which is not in PRBOT_CLUSTERS "
                              f"({tmp_path / 'clusters.yaml'}) (known: dev, staging-us; did you mean 'staging-us'?)")
    assert isinstance(err.value, PrbotError) and (err.value.env, err.value.cluster) == ("staging", "staging-eu")
    with pytest.raises(PrbotError, match="unknown environment 'qa'"):
        cluster_for(config, "qa", clusters)
    # a plain dict (no file known) still names the setting
    with pytest.raises(MissingCluster, match=r"not in PRBOT_CLUSTERS \(known: none\)$"):
        cluster_for(config, "dev", {})


def test_the_loaded_map_knows_its_file(tmp_path: Path) -> None:
    two_context_kubeconfig(tmp_path / "kube" / "dev.kubeconfig")
    clusters = write(tmp_path, "clusters.yaml", "dev: {kubeconfig: kube/dev.kubeconfig}\n")
    loaded = load_clusters(clusters)
    assert loaded.source == clusters
    assert clusters_from_env({"PRBOT_CLUSTERS": str(clusters)}).source == clusters

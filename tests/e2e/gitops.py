"""Small GitOps repositories for the end-to-end tests (as files, for `FakeGitHub.create_repo`)."""

from __future__ import annotations

import copy
import json
from typing import Any

from service_support import REGISTRY_FIXTURES

APP_IMAGE = "registry.cn-hangzhou.aliyuncs.com/demo/app"
OLD_TAG = "1111111"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  labels: {app: app}
spec:
  replicas: 1
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      containers:
        - name: app
          image: registry.cn-hangzhou.aliyuncs.com/demo/app:0000000
          ports:
            - containerPort: 8080
"""


def overlay(tag: str = OLD_TAG, replicas: int | None = None) -> str:
    text = f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../base
images:
  - name: {APP_IMAGE}
    newTag: "{tag}"   # the version this environment runs
"""
    if replicas is not None:
        text += f"replicas:\n  - name: app\n    count: {replicas}\n"
    return text


def config(*, sync: str | None = None, clusters: bool = False, extra_env: str = "", auto_merge: bool = False,
           prod_deployers: str | None = None, preview: bool = False) -> str:
    cluster = (lambda env: f"\n    cluster: {env}") if clusters else (lambda env: "")
    sync_block = f"\n    sync:\n      {sync}" if sync else ""
    deployers = f"\n    deployers: {prod_deployers}" if prod_deployers else ""
    merge = "\n    auto_merge: true" if auto_merge else ""
    text = f"""\
version: 1
environments:
  - name: dev{cluster('dev')}{merge}
  - name: staging{cluster('staging')}
  - name: prod{cluster('prod')}{deployers}{extra_env}
apps:
  - path: "apps/{{app}}/envs/{{env}}"
    namespace: "{{app}}-{{env}}"{sync_block}
images:
  - repository: {APP_IMAGE}
    tags: '^[0-9a-f]{{7,40}}$'
"""
    if preview:
        text += 'preview:\n  environment: dev\n  url: "https://pr-{number}.preview.example.com"\n'
    return text


def repo_files(**config_options: Any) -> dict[str, str]:
    return {
        ".prbot.yml": config(**config_options),
        "apps/app/base/kustomization.yaml": "resources:\n  - deployment.yaml\n",
        "apps/app/base/deployment.yaml": DEPLOYMENT,
        **{f"apps/app/envs/{env}/kustomization.yaml": overlay() for env in ("dev", "staging", "prod")},
    }


def acr_push(tag: str) -> dict[str, Any]:
    """The Alibaba Cloud ACR sample push, for `tag`."""
    payload = json.loads((REGISTRY_FIXTURES / "acr-aliyun.push.json").read_text())
    payload = copy.deepcopy(payload)
    payload["push_data"]["tag"] = tag
    return payload

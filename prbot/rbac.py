"""The least-privilege RBAC one environment's cluster must grant prbot (`prbot rbac --env ENV`).

prbot's calls to a cluster are few and known (`prbot.cluster.deploy`, `prbot.cluster.dryrun`):

- **Argo CD** sync: GET and a merge PATCH of the Application, in the Argo CD namespace, by name.
- **Flux** sync: GET and PATCH (the `reconcile.fluxcd.io/requestedAt` annotation) of the
  Kustomization or HelmRelease by name, and of the sources it names (GitRepository, OCIRepository,
  HelmRepository, Bucket, HelmChart) in the same namespace; then GETs of the Deployments,
  StatefulSets and DaemonSets it rolled out, in the target's namespace.
- **apply** sync: server-side apply (PATCH; CREATE when the object is new) and GET of every kind the
  target renders, in the namespaces it renders into; the record ConfigMap in its namespace; with
  `prune`, LIST and DELETE of those kinds.
- **dry-run** (every target of an environment with a cluster): server-side apply with
  ``dryRun=All`` and GET of the kinds the target renders, in the namespaces it owns — what
  expansions add (a HelmRelease's chart, …) included, as the plan's dry-run sends it; the apply sync
  and previews send the target's own objects only (the cluster's Flux or Argo CD expands them), so
  their grants cover those alone.  Kubernetes
  has no dry-run verb: the grant is `patch`/`create`, and prbot only ever sends them dry.
  Cluster-scoped objects: GET and PATCH by name only.
- **previews** (the preview environment): CREATE/GET/LIST/PATCH/DELETE of `pr-*` Namespaces and of
  the namespaced kinds the environment's targets render.  RBAC cannot name a namespace prefix, so
  these grants are cluster-wide (ClusterRoleBinding): give previews their own cluster.  Secrets in
  previews are written and deleted, never read (no get/list/watch).

Never granted, whatever a `.prbot.yml` or a target renders: any subresource (`pods/exec`,
`services/proxy`, `pods/attach`, `pods/portforward`, ...), the verbs `impersonate`, `escalate`,
`bind`, `*`, and a Secret read outside a namespace the target owns.  Kind, name and namespace
strings are checked against Kubernetes' rules first: a name that could widen a rule is left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prbot.cluster.names import check_namespace
from prbot.cluster.sync import APPLICATION, FLUX_GROUPS, SOURCE_GROUP, record_ref
from prbot.config import Config
from prbot.diff import CLUSTER_SCOPED
from prbot.errors import InvalidName, PrbotError, RenderError
from prbot.model import Target, expand

__all__ = ["FORBIDDEN_VERBS", "Grant", "RbacPlan", "rbac_for_env", "rbac_manifests", "resource_of"]

FORBIDDEN_VERBS = frozenset({"impersonate", "escalate", "bind", "*", "proxy"})
FLUX_SOURCES = ("gitrepositories", "ocirepositories", "helmrepositories", "buckets", "helmcharts")
WORKLOADS = ("deployments", "statefulsets", "daemonsets")
PREVIEW_PREFIX = "pr-"
_KIND = re.compile(r"^[A-Z][A-Za-z0-9]{0,62}$")
_GROUP = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
READS = ("get", "list", "watch")



def resource_of(kind: str) -> str:
    """The resource (plural) of a kind, as Kubernetes guesses it when discovery is not at hand."""
    singular = kind.lower()
    if singular == "endpoints":
        return singular
    if singular.endswith("s"):
        return singular + "es"
    if singular.endswith("y"):
        return singular[:-1] + "ies"
    return singular + "s"


@dataclass(frozen=True)
class Grant:
    """Verbs on one resource of one API group, in a namespace (None: cluster-wide)."""

    purpose: str                                # argocd, flux, apply, dry-run, preview
    namespace: str | None
    group: str
    resource: str
    verbs: tuple[str, ...]
    names: tuple[str, ...] = ()                 # resourceNames; () = every object


@dataclass
class RbacPlan:
    env: str
    cluster: str | None
    grants: list[Grant] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, grant: Grant) -> None:
        verbs = tuple(v for v in grant.verbs if v not in FORBIDDEN_VERBS)
        if not verbs or "/" in grant.resource or not _valid_group(grant.group):
            return
        if grant.resource == "secrets" and grant.group == "" and grant.namespace is None:
            verbs = tuple(v for v in verbs if v not in READS)    # never read Secrets cluster-wide
            if not verbs:
                return
        if grant.namespace is not None and not _valid_namespace(grant.namespace):
            self.notes.append(f"namespace {grant.namespace[:80]!r} is not a valid namespace: no grant")
            return
        names = tuple(n for n in grant.names if _NAME.match(n))
        if grant.names and not names:
            return
        self.grants.append(Grant(grant.purpose, grant.namespace, grant.group, grant.resource,
                                 tuple(sorted(set(verbs))), tuple(sorted(set(names)))))


def _valid_group(group: str) -> bool:
    return group == "" or bool(_GROUP.match(group))


def _valid_namespace(namespace: str) -> bool:
    try:
        check_namespace(namespace)
    except InvalidName:
        return False
    return True


def _kinds(objects: Iterable[dict[str, Any]], default_namespace: str
           ) -> list[tuple[str, str, str | None, str]]:
    """(group, kind, namespace or None when cluster-scoped, name) of each well-formed object."""
    crd_scope: dict[tuple[str, str], bool] = {}
    for obj in objects:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        if obj.get("kind") == "CustomResourceDefinition" and isinstance(spec, dict):
            names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
            group = str(spec.get("group"))
            if "." in group and not group.endswith(".k8s.io"):     # a CRD cannot redefine a built-in kind
                crd_scope[(group, str((names or {}).get("kind")))] = spec.get("scope") == "Cluster"
    out = []
    for obj in objects:
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        if not isinstance(api_version, str) or not isinstance(kind, str) or not _KIND.match(kind):
            continue
        group = api_version.rpartition("/")[0]
        if not _valid_group(group):
            continue
        name = str((meta or {}).get("name") or "")
        cluster_scoped = (group, kind) in CLUSTER_SCOPED or crd_scope.get((group, kind), False)
        namespace = None if cluster_scoped else str((meta or {}).get("namespace") or default_namespace)
        out.append((group, kind, namespace, name))
    return out


def own_objects(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The target's own objects, without those expanded from a HelmRelease, Kustomization or
    Application (`prbot.expand.Rendered.origins`)."""
    origin_of = getattr(objects, "origin_of", None)
    if origin_of is None:
        return objects
    return [obj for index, obj in enumerate(objects) if origin_of(index) is None]


def _render(root: Path, config: Config, target: Target) -> list[dict[str, Any]]:
    """The target rendered as a plan's dry-run sends it: expanded, "this repository" being its
    origin and `render.repository` (no remote is fetched: expansions of remote charts are left out)."""
    from prbot.expand import normalise_repository_url
    from prbot.gitrepo import origin_url
    from prbot.render import render_target

    urls = {normalise_repository_url(u) for u in (origin_url(root), *config.render_repository)}
    try:
        return render_target(root, target, kube_version=config.env(target.env).kubernetes_version,
                             repository_urls=sorted(u for u in urls if u))
    except RenderError as exc:
        raise PrbotError(f"{target.path} does not render: {exc}") from exc


def rbac_for_env(root: Path, config: Config, env: str) -> RbacPlan:
    """Every grant prbot needs on `env`'s cluster: its syncs, dry-runs and (when `env` is the
    preview environment) previews, from the targets of `env` rendered at `root`."""
    from prbot.targets import discover_targets

    environment = config.env(env)
    plan = RbacPlan(env=env, cluster=environment.cluster)
    if environment.cluster is None:
        plan.notes.append(f"environment {env!r} has no cluster: prbot calls no Kubernetes API for it")
        return plan
    preview_env = (config.preview.environment if config.preview else None) or config.environments[0].name
    preview_namespaced: set[tuple[str, str]] = set()
    for target in discover_targets(config, root):
        if target.env != env:
            continue
        objects = _render(root, config, target)
        default_ns = target.namespace or "default"
        found = _kinds(objects, default_ns)
        # what prbot applies itself (a direct-apply sync, a preview) is the target's own objects: the
        # cluster's Flux / Argo CD creates what a HelmRelease, Kustomization or Application expands to
        # (with its own rights); the dry-run sends the expanded objects too, so it needs them all
        applied = _kinds(own_objects(objects), default_ns)
        owned = {default_ns} | {ns for _, _, ns, _ in found if ns} | \
            {name for group, kind, ns, name in found if (group, kind) == ("", "Namespace")}
        # dry-run: within what the target owns
        for group, kind, ns, name in found:
            if ns is not None and ns in owned:
                plan.add(Grant("dry-run", ns, group, resource_of(kind), ("get", "create", "patch")))
                if (group, kind, ns, name) in applied:
                    preview_namespaced.add((group, kind))
            elif ns is None:
                plan.add(Grant("dry-run", None, group, resource_of(kind), ("get", "patch"), (name,)))
        spec = config.apps[target.app_index].sync
        if spec is None:
            continue
        if spec.kind == "argocd":
            ns = expand(str(spec.options["namespace"]), target.app, target.env_word)
            app = expand(str(spec.options["application"]), target.app, target.env_word)
            plan.add(Grant("argocd", ns, APPLICATION[0], resource_of(APPLICATION[1]), ("get", "patch"), (app,)))
        elif spec.kind == "flux":
            kind = str(spec.options["kind"])
            ns = expand(str(spec.options["namespace"]), target.app, target.env_word)
            name = expand(str(spec.options["name"]), target.app, target.env_word)
            plan.add(Grant("flux", ns, FLUX_GROUPS[kind], resource_of(kind), ("get", "patch"), (name,)))
            for source in FLUX_SOURCES:
                plan.add(Grant("flux", ns, SOURCE_GROUP, source, ("get", "patch")))
            for workload_ns in sorted({ns for _, _, ns, _ in found if ns} | {default_ns}):
                for workload in WORKLOADS:
                    plan.add(Grant("flux", workload_ns, "apps", workload, ("get",)))
        else:
            prune = bool(spec.options.get("prune"))
            verbs = ("get", "create", "patch") + (("list", "delete") if prune else ())
            for group, kind, ns, _ in applied:
                plan.add(Grant("apply", ns, group, resource_of(kind), verbs))
            if prune:       # pruning lists every applied namespaced kind in every namespace the target owns
                namespaced = {(group, kind) for group, kind, ns, _ in applied if ns is not None}
                for ns in sorted({ns for _, _, ns, _ in applied if ns} | {default_ns}):
                    for group, kind in sorted(namespaced):
                        plan.add(Grant("apply", ns, group, resource_of(kind), ("list", "delete")))
            record = record_ref(target, default_ns)
            plan.add(Grant("apply", default_ns, "", "configmaps", ("create",)))
            plan.add(Grant("apply", default_ns, "", "configmaps", ("get", "patch"), (record.name,)))
    if env == preview_env:
        plan.add(Grant("preview", None, "", "namespaces", ("create", "get", "list", "patch", "delete")))
        plan.add(Grant("preview", None, "", "configmaps", ("create", "get", "list", "patch", "delete")))
        for group, kind in sorted(preview_namespaced):
            plan.add(Grant("preview", None, group, resource_of(kind), ("create", "get", "list", "patch", "delete")))
        if ("", "Secret") in preview_namespaced:
            plan.notes.append("previews: these targets render Secrets; pruning them lists Secrets, which is "
                              "not granted cluster-wide, so a preview's update or removal fails with 403 Forbidden "
                              "until you grant `list` on secrets on a preview cluster of its own")
        plan.notes.append(f"previews: RBAC cannot limit a grant to {PREVIEW_PREFIX}* namespaces, so the "
                          "preview grants are cluster-wide; run previews on a cluster of their own. "
                          "Secrets in previews are written, never read.")
    return plan


def rbac_manifests(plan: RbacPlan, *, service_account: str = "prbot", sa_namespace: str = "prbot"
                   ) -> list[dict[str, Any]]:
    """Roles (per namespace), one ClusterRole, and their bindings to the ServiceAccount."""
    if not _valid_namespace(sa_namespace) or not _NAME.match(service_account):
        raise PrbotError("--service-account must be NAMESPACE/NAME with valid Kubernetes names")
    by_scope: dict[str | None, dict[tuple[str, tuple[str, ...], tuple[str, ...]], set[str]]] = {}
    purposes: dict[str | None, set[str]] = {}
    merged: dict[tuple[str | None, str, str, tuple[str, ...]], set[str]] = {}
    for grant in plan.grants:                   # one rule per resource and verbs, its names together
        if grant.names:
            merged.setdefault((grant.namespace, grant.group, grant.resource, grant.verbs), set()).update(grant.names)
    grants = [g for g in plan.grants if not g.names] + [
        Grant("", namespace, group, resource, verbs, tuple(sorted(names)))
        for (namespace, group, resource, verbs), names in merged.items()]
    for grant in plan.grants:
        purposes.setdefault(grant.namespace, set()).add(grant.purpose)
    for grant in grants:
        rules = by_scope.setdefault(grant.namespace, {})
        rules.setdefault((grant.group, grant.verbs, grant.names), set()).add(grant.resource)
    base = re.sub(r"[^a-z0-9-]+", "-", f"prbot-{plan.env}".lower()).strip("-")[:60]
    labels = {"app.kubernetes.io/managed-by": "prbot", "prbot.dev/environment": base[6:] or "env"}
    subject = [{"kind": "ServiceAccount", "name": service_account, "namespace": sa_namespace}]
    out: list[dict[str, Any]] = []
    for scope in sorted(by_scope, key=lambda s: (s is not None, s or "")):
        role_rules: list[dict[str, Any]] = []
        for (group, verbs, names), resources in sorted(by_scope[scope].items()):
            rule: dict[str, Any] = {"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
            if names:
                rule["resourceNames"] = list(names)
            role_rules.append(rule)
        meta: dict[str, Any] = {"name": base, "labels": dict(labels),
                                "annotations": {"prbot.dev/purpose": ",".join(sorted(purposes[scope]))}}
        if scope is None:
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": meta, "rules": role_rules})
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                        "metadata": {"name": base, "labels": dict(labels)}, "subjects": subject,
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": base}})
        else:
            meta["namespace"] = scope
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
                        "rules": role_rules})
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                        "metadata": {"name": base, "namespace": scope, "labels": dict(labels)},
                        "subjects": subject,
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": base}})
    return out

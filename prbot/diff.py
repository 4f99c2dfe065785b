"""Semantic diff of rendered objects: identity keys, noise, Secret masking, per-object diffs.

Pipeline for one target (`diff_objects`): every object is keyed by (API group, kind, namespace,
name), default noise and `diff.ignore` paths are dropped (`strip_noise`), objects equal on both
sides are left out, and each remaining one gets a unified diff of its normalised YAML (keys sorted,
block style).  Secret values are masked (`mask_secrets`, `mask_secret_pair`) *before* any text is
produced, so no value can reach a diff, a comment, JSON output or a log line.  Kustomize
hash-suffixed ConfigMaps/Secrets (`shop-config-hf678c7m2b`) whose suffix alone changed are paired
and reported as one `changed` object with `renamed_from`.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from prbot import secrets
from prbot.limits import in_time
from prbot.secrets import LAST_APPLIED, MASK, MASK_AFTER, MASK_BEFORE, is_secret  # noqa: F401 - re-exported


@dataclass(frozen=True)
class ObjectChange:
    group: str            # "" for the core group
    kind: str
    namespace: str | None
    name: str
    action: str           # "added" | "removed" | "changed"
    diff: str             # unified diff of the normalised YAML ("--- a\n+++ b\n@@ ...")
    renamed_from: str | None = None   # previous name when a kustomize hash-suffix rename was detected
    origin: str | None = None         # the object it was expanded from ("HelmRelease apps/podinfo")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if data.get("renamed_from") is None:
            data.pop("renamed_from")
        origin = data.pop("origin")
        if origin is not None:
            data["from"] = origin
        return data


ObjectKey = tuple[str, str, str | None, str]
"""(API group, kind, namespace, name); namespace is None for cluster-scoped objects."""

CONTEXT_LINES = 3
MAX_DIFF_LINES = 20_000

# (group, kind) of the cluster-scoped kinds: built-in ones, plus common add-ons' custom resources.
CLUSTER_SCOPED: frozenset[tuple[str, str]] = frozenset({
    ("", "Namespace"), ("", "Node"), ("", "PersistentVolume"), ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"), ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("storage.k8s.io", "StorageClass"), ("storage.k8s.io", "CSIDriver"), ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"), ("storage.k8s.io", "VolumeAttributesClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("networking.k8s.io", "IngressClass"), ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
    ("apiregistration.k8s.io", "APIService"),
    ("node.k8s.io", "RuntimeClass"),
    ("certificates.k8s.io", "CertificateSigningRequest"), ("certificates.k8s.io", "ClusterTrustBundle"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("resource.k8s.io", "DeviceClass"), ("resource.k8s.io", "ResourceSlice"),
    ("policy", "PodSecurityPolicy"),
    # common add-ons
    ("cert-manager.io", "ClusterIssuer"),
    ("external-secrets.io", "ClusterSecretStore"), ("external-secrets.io", "ClusterExternalSecret"),
    ("kyverno.io", "ClusterPolicy"), ("wgpolicyk8s.io", "ClusterPolicyReport"),
    ("monitoring.coreos.com", "ClusterMonitoring"),
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("snapshot.storage.k8s.io", "VolumeSnapshotClass"),
    ("snapshot.storage.k8s.io", "VolumeSnapshotContent"),
})

# Review order: what the rest depends on first, workloads after their config, the rest at the end.
KIND_ORDER: tuple[str, ...] = (
    "Namespace", "CustomResourceDefinition", "ResourceQuota", "LimitRange", "PriorityClass",
    "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "ConfigMap", "Secret", "ServiceAccount",
    "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
    "NetworkPolicy", "Service",
    "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Pod",
    "Job", "CronJob", "HorizontalPodAutoscaler", "PodDisruptionBudget",
    "IngressClass", "Ingress",
)
_KIND_RANK = {kind: i for i, kind in enumerate(KIND_ORDER)}
# Webhooks and API services go last: they can block everything else while their backend rolls.
_LAST_KINDS = {"ValidatingWebhookConfiguration": 1, "MutatingWebhookConfiguration": 1, "APIService": 2}

# Default noise: chart version labels and checksum annotations change on every chart bump.
NOISE_LABELS = ("helm.sh/chart",)
NOISE_ANNOTATION_PREFIXES = ("checksum/",)
# Paths holding the metadata of a pod template, besides the object's own `metadata`.
_TEMPLATE_METADATA_PATHS = (("spec", "template", "metadata"),
                            ("spec", "jobTemplate", "spec", "template", "metadata"))

# Extra noise for a live object compared with a server-side dry-run result (as `kubectl diff`).
LIVE_NOISE: tuple[str, ...] = (
    "metadata.managedFields", "metadata.resourceVersion", "metadata.uid", "metadata.generation",
    "metadata.creationTimestamp", r"metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration",
    "status",
)

# kustomize name suffix: 10 characters of a sha256 hex digest with 0,1,3,a,e replaced by g,h,k,m,t.
_HASH_SUFFIX = re.compile(r"^(?P<stem>.+)-(?P<hash>[2456789bcdfghkmt]{10})$")
_HASHED_KINDS = {("", "ConfigMap"), ("", "Secret")}


# --------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------

def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def api_group(api_version: Any) -> str:
    """API group of an apiVersion: "apps/v1" -> "apps", "v1" -> "" (core)."""
    text = _str(api_version)
    return text.rsplit("/", 1)[0] if "/" in text else ""


def object_key(obj: dict, default_namespace: str | None,
               cluster_scoped: Collection[tuple[str, str]] = CLUSTER_SCOPED) -> ObjectKey:
    """(API group, kind, namespace, name) identifying `obj` in a cluster.

    Namespaced objects that name no namespace get `default_namespace` (None if there is none);
    cluster-scoped kinds (`cluster_scoped`, by (group, kind)) always get None.
    """
    group = api_group(obj.get("apiVersion"))
    kind = _str(obj.get("kind"))
    meta = _metadata(obj)
    name = _str(meta.get("name")) or _str(meta.get("generateName"))
    if (group, kind) in cluster_scoped:
        namespace: str | None = None
    else:
        namespace = _str(meta.get("namespace")) or default_namespace
    return group, kind, namespace, name


def describe_key(key: ObjectKey) -> str:
    """`apps/Deployment shop-dev/shop`, `Secret shop-dev/x`, `rbac.authorization.k8s.io/ClusterRole r`."""
    group, kind, namespace, name = key
    kind_text = f"{group}/{kind}" if group else kind
    return f"{kind_text} {namespace}/{name}" if namespace else f"{kind_text} {name}"


def describe(obj: dict, default_namespace: str | None = None) -> str:
    """Log-safe one-line identity of an object (never any of its content)."""
    return describe_key(object_key(obj, default_namespace))


def _path_key(key: ObjectKey) -> str:
    """`apps/Deployment/shop-dev/shop`: the object's name in diff headers."""
    group, kind, namespace, name = key
    return "/".join(p for p in (group, kind, namespace, name) if p)


# --------------------------------------------------------------------------------------------
# Secrets: the rule lives in prbot.secrets; these names stay for the modules that used them here
# --------------------------------------------------------------------------------------------

def mask_secrets(obj: dict) -> dict:
    """A copy of `obj` with every Secret value (nested Secrets too) `***`; see `prbot.secrets.mask`."""
    return secrets.mask(obj)  # type: ignore[no-any-return]


def mask_secret_pair(before: dict, after: dict) -> tuple[dict, dict]:
    """Masked copies of two versions of one object; see `prbot.secrets.mask_pair`."""
    return secrets.mask_pair(before, after)


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------

def split_path(path: str) -> list[str]:
    """Split a dotted `diff.ignore` path; `\\.` is a literal dot inside a key, `\\\\` a backslash."""
    segments: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path) and path[i + 1] in ".\\":
            current.append(path[i + 1])
            i += 2
            continue
        if ch == ".":
            segments.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    segments.append("".join(current))
    return segments


def _drop_path(node: Any, segments: Sequence[str]) -> bool:
    """Remove what `segments` addresses inside `node` (in place); True when something was removed.

    A segment matches a map key exactly; `*` matches every key of a map or item of a list; a number
    indexes a list.  When no key matches, consecutive segments are tried joined by dots, so an
    unescaped `metadata.labels.helm.sh/chart` still finds the key `helm.sh/chart`.  A map or list
    left empty by a removal is removed too, so ignoring the only annotation leaves no `annotations: {}`.
    """
    if not segments:
        return False
    head, rest = segments[0], segments[1:]
    if isinstance(node, dict):
        if head == "*":
            if not rest:
                removed = bool(node)
                node.clear()
                return removed
            return _drop_children(node, list(node), rest)
        for j in range(1, len(segments) + 1):
            key = ".".join(segments[:j])
            if key in node:
                if j == len(segments):
                    del node[key]
                    return True
                return _drop_children(node, [key], segments[j:])
    elif isinstance(node, list):
        if head == "*":
            if not rest:
                removed = bool(node)
                node.clear()
                return removed
            return _drop_children(node, list(range(len(node))), rest)
        if head.lstrip("-").isdigit() and -len(node) <= int(head) < len(node):
            if not rest:
                del node[int(head)]
                return True
            return _drop_children(node, [int(head) % len(node)], rest)
    return False


def _drop_children(node: Any, keys: list[Any], rest: Sequence[str]) -> bool:
    removed = False
    emptied = []
    for key in keys:
        child = node[key]
        if _drop_path(child, rest):
            removed = True
            if isinstance(child, (dict, list)) and not child:
                emptied.append(key)
    for key in reversed(emptied):          # reversed: list indexes stay valid
        del node[key]
    return removed


def _get_path(node: Any, path: Sequence[str]) -> Any:
    for part in path:
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _drop_noise_metadata(meta: Any) -> None:
    if not isinstance(meta, dict):
        return
    labels = meta.get("labels")
    if isinstance(labels, dict):
        for label in NOISE_LABELS:
            labels.pop(label, None)
        if not labels:
            del meta["labels"]
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        for key in [k for k in annotations if isinstance(k, str) and k.startswith(NOISE_ANNOTATION_PREFIXES)]:
            del annotations[key]
        if not annotations:
            del meta["annotations"]


def strip_noise(obj: dict, ignore: Iterable[str] = ()) -> dict:
    """A copy of `obj` without the default noise and the `ignore` paths.

    Default noise: the `helm.sh/chart` label and `checksum/*` annotations, on the object and on its
    pod template (`spec.template`, `spec.jobTemplate.spec.template`).  `ignore` holds dotted paths
    (see `split_path` / `_drop_path`), e.g. ``metadata.annotations.example\\.com/build-time``.
    """
    out = copy.deepcopy(obj)
    _drop_noise_metadata(out.get("metadata"))
    for path in _TEMPLATE_METADATA_PATHS:
        _drop_noise_metadata(_get_path(out, path))
    for dotted in ignore:
        if dotted:
            _drop_path(out, split_path(dotted))
    return out


# --------------------------------------------------------------------------------------------
# YAML and unified diffs
# --------------------------------------------------------------------------------------------

class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Block style, sorted keys, `|` blocks for multi-line strings (ConfigMap files read as files)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value and not any(line != line.rstrip() for line in value.split("\n")):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _represent_str)


def _sorted(node: Any) -> Any:
    """Maps rebuilt with keys in order (by their text, so mixed int/str keys cannot break sorting)."""
    if isinstance(node, dict):
        return {k: _sorted(node[k]) for k in sorted(node, key=lambda k: (str(k), type(k).__name__))}
    if isinstance(node, list):
        return [_sorted(v) for v in node]
    return node


def to_yaml(obj: Any) -> str:
    """Normalised YAML: keys sorted, block style, no line folding; stable across runs."""
    return yaml.dump(_sorted(obj), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=1 << 20)


def unified_diff(before: str, after: str, from_name: str, to_name: str,
                 context: int = CONTEXT_LINES) -> str:
    """Unified diff of two texts; `""` when they are equal.

    Texts of more than `MAX_DIFF_LINES` lines are not diffed line by line (difflib's cost grows
    faster than their size): the diff says how big they are instead."""
    old, new = before.splitlines(), after.splitlines()
    if max(len(old), len(new)) > MAX_DIFF_LINES:
        if old == new:
            return ""
        return (f"--- {from_name}\n+++ {to_name}\n# too large to diff: {len(old):,} lines before, "
                f"{len(new):,} after (at most {MAX_DIFF_LINES:,} lines are compared)")
    lines = difflib.unified_diff(old, new, from_name, to_name, n=context, lineterm="")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# diff_objects
# --------------------------------------------------------------------------------------------

def _crd_scopes(objects: Iterable[dict]) -> set[tuple[str, str]]:
    """(group, kind) of custom resources that CRDs in the rendering declare as cluster-scoped."""
    found: set[tuple[str, str]] = set()
    for obj in objects:
        if obj.get("kind") != "CustomResourceDefinition" or not isinstance(obj.get("spec"), dict):
            continue
        spec = obj["spec"]
        names = spec.get("names") if isinstance(spec.get("names"), dict) else {}
        if spec.get("scope") == "Cluster" and isinstance(names.get("kind"), str):
            found.add((_str(spec.get("group")), names["kind"]))
    return found


def _index(objects: Iterable[dict], default_namespace: str | None,
           scoped: Collection[tuple[str, str]]) -> dict[ObjectKey, dict]:
    out: dict[ObjectKey, dict] = {}
    for obj in objects:
        if isinstance(obj, dict):
            out[object_key(obj, default_namespace, scoped)] = obj     # duplicates: the last one wins
    return out


def duplicate_identities(objects: Iterable[dict], default_namespace: str | None) -> list[str]:
    """One message per identity (API group, kind, namespace, name) held by more than one of
    `objects` — the cluster would keep only one of them, so a target rendering them is broken."""
    objects = [o for o in objects if isinstance(o, dict)]
    scoped = CLUSTER_SCOPED | _crd_scopes(objects)
    seen: dict[ObjectKey, list[int]] = {}
    for index, obj in enumerate(objects, 1):
        seen.setdefault(object_key(obj, default_namespace, scoped), []).append(index)
    return [f"{describe_key(key)} is rendered {len(where)} times (objects {', '.join(map(str, where))})"
            for key, where in seen.items() if len(where) > 1]


def sort_key(key: ObjectKey) -> tuple[int, int, str, str, str, str]:
    """Reviewer order: KIND_ORDER, then other kinds by name, webhooks/APIServices last."""
    group, kind, namespace, name = key
    last = _LAST_KINDS.get(kind, 0)
    return last, _KIND_RANK.get(kind, len(KIND_ORDER)), kind, group, namespace or "", name


def _normalise(key: ObjectKey, obj: dict, ignore: Sequence[str]) -> dict:
    """Noise stripped, and the default namespace written in, as the cluster will store it."""
    out = strip_noise(obj, ignore)
    namespace = key[2]
    if namespace is not None:
        meta = out.get("metadata")
        if isinstance(meta, dict) and not meta.get("namespace"):
            meta["namespace"] = namespace
        elif meta is None:
            out["metadata"] = {"namespace": namespace}
    return out


def _pair_renames(removed: list[ObjectKey], added: list[ObjectKey]) -> dict[ObjectKey, ObjectKey]:
    """new key -> old key for kustomize hash-suffix renames (one old and one new per stem)."""

    def stems(keys: list[ObjectKey]) -> dict[tuple[str, str, str | None, str], list[ObjectKey]]:
        out: dict[tuple[str, str, str | None, str], list[ObjectKey]] = {}
        for key in keys:
            group, kind, namespace, name = key
            m = _HASH_SUFFIX.match(name)
            if (group, kind) in _HASHED_KINDS and m:
                out.setdefault((group, kind, namespace, m["stem"]), []).append(key)
        return out

    olds, news = stems(removed), stems(added)
    return {news[s][0]: olds[s][0] for s in news
            if s in olds and len(news[s]) == 1 and len(olds[s]) == 1}


def _change(key: ObjectKey, before: dict | None, after: dict | None,
            old_key: ObjectKey | None = None) -> ObjectChange:
    group, kind, namespace, name = key
    if before is not None and after is not None:
        a, b = mask_secret_pair(before, after)
        text = unified_diff(to_yaml(a), to_yaml(b), f"a/{_path_key(old_key or key)}", f"b/{_path_key(key)}")
        action = "changed"
    elif after is not None:
        text = unified_diff("", to_yaml(mask_secrets(after)), "/dev/null", f"b/{_path_key(key)}")
        action = "added"
    else:
        assert before is not None
        text = unified_diff(to_yaml(mask_secrets(before)), "", f"a/{_path_key(key)}", "/dev/null")
        action = "removed"
    return ObjectChange(group=group, kind=kind, namespace=namespace, name=name, action=action, diff=text,
                        renamed_from=old_key[3] if old_key is not None and old_key != key else None)


def diff_objects(before: list[dict], after: list[dict], *, default_namespace: str | None = None,
                 ignore: Sequence[str] = (), deadline: float | None = None) -> list[ObjectChange]:
    """What changes from the objects `before` to the objects `after`, in reviewer order.

    Objects are keyed by `object_key`; a namespaced object that names no namespace is compared (and
    shown) with `default_namespace` filled in.  Objects equal after `strip_noise` are not listed.
    Secret values are masked in every diff.  When one side holds the same key twice, the last wins.
    Past `deadline` (time.monotonic(): the plan's budget) PlanBudgetError is raised.
    """
    scoped = CLUSTER_SCOPED | _crd_scopes(before) | _crd_scopes(after)
    old = {k: _normalise(k, v, ignore)
           for k, v in in_time(_index(before, default_namespace, scoped).items(), deadline, "comparing")}
    new = {k: _normalise(k, v, ignore)
           for k, v in in_time(_index(after, default_namespace, scoped).items(), deadline, "comparing")}
    removed = [k for k in old if k not in new]
    added = [k for k in new if k not in old]
    renames = _pair_renames(removed, added)
    renamed_old = set(renames.values())

    changes: list[ObjectChange] = []
    for key, obj in in_time(new.items(), deadline, "comparing", every=10):
        if key in renames:
            changes.append(_change(key, old[renames[key]], obj, renames[key]))
        elif key not in old:
            changes.append(_change(key, None, obj))
        elif old[key] != obj:
            changes.append(_change(key, old[key], obj))
    for key in in_time(removed, deadline, "comparing", every=10):
        if key not in renamed_old:
            changes.append(_change(key, old[key], None))
    changes.sort(key=lambda c: sort_key((c.group, c.kind, c.namespace, c.name)))
    return changes

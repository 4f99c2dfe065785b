"""Kubernetes' own rules for the names that go into a request path, checked before anything is sent.

An object's name and namespace become segments of the request path
(``/apis/<group>/<version>/namespaces/<namespace>/<plural>/<name>``), so a rendered object named
``../../kube-system/configmaps/x``, ``web/proxy/admin`` or ``x?dryRun=`` would name another object,
a subresource or a query.  Every name is therefore checked against the rule the API server applies
to its kind (apimachinery's validation), and prbot never sends one that breaks it:

- *Namespaces* (the `namespace` of any object, and the name of a `Namespace`): an RFC 1123 label —
  lowercase alphanumerics and ``-``, at most 63 characters.
- *Service* names: an RFC 1035 label — as above, starting with a letter.
- *RBAC* names (Role, ClusterRole, RoleBinding, ClusterRoleBinding): a path segment — not ``.`` nor
  ``..``, no ``/`` and no ``%`` (``system:controller:x`` is valid); prbot also refuses control
  characters and names over 253 characters.
- *Every other kind* (built-in or custom): an RFC 1123 subdomain — lowercase alphanumerics, ``-``
  and ``.``, at most 253 characters.

The apiVersion's group (an RFC 1123 subdomain), its version (an RFC 1123 label) and the kind (letters
and digits) are checked too, since they decide the rest of the path.  A refusal is an
`InvalidName` naming the object, the rule and why, in one line; it is raised before any request.
"""

from __future__ import annotations

import json
import re

from prbot.errors import InvalidName

__all__ = ["DNS1035_LABEL", "DNS1123_LABEL", "DNS1123_SUBDOMAIN", "PATH_SEGMENT", "check_api_version",
           "check_name", "check_namespace", "check_plural", "name_rule"]

DNS1123_LABEL = "RFC 1123 label"
DNS1123_SUBDOMAIN = "RFC 1123 subdomain"
DNS1035_LABEL = "RFC 1035 label"
PATH_SEGMENT = "path segment name"

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_RULES: dict[str, tuple[re.Pattern[str], int, str]] = {
    DNS1123_LABEL: (re.compile(rf"{_LABEL}\Z"), 63,
                    "lowercase letters, digits and '-', starting and ending with a letter or digit"),
    DNS1123_SUBDOMAIN: (re.compile(rf"{_LABEL}(\.{_LABEL})*\Z"), 253,
                        "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"),
    DNS1035_LABEL: (re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z"), 63,
                    "lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"),
    PATH_SEGMENT: (re.compile(r"[^/%\x00-\x1f\x7f]+\Z"), 253, "no '/', '%' or control characters, not '.' or '..'"),
}

_RBAC_GROUP = "rbac.authorization.k8s.io"
_BY_KIND: dict[tuple[str, str], str] = {
    ("", "Namespace"): DNS1123_LABEL,
    ("", "Service"): DNS1035_LABEL,
    (_RBAC_GROUP, "Role"): PATH_SEGMENT,
    (_RBAC_GROUP, "ClusterRole"): PATH_SEGMENT,
    (_RBAC_GROUP, "RoleBinding"): PATH_SEGMENT,
    (_RBAC_GROUP, "ClusterRoleBinding"): PATH_SEGMENT,
}
_KIND = re.compile(r"[A-Za-z]([-A-Za-z0-9]*[A-Za-z0-9])?\Z")
_SHOWN = 80


def _shown(value: str) -> str:
    """`value` quoted for a message, escaped (no newline or control character gets through) and cut."""
    text = json.dumps(value[:_SHOWN], ensure_ascii=True)
    return text if len(value) <= _SHOWN else f"{text[:-1]}…\" ({len(value)} characters)"


def _a(rule: str) -> str:
    return f"an {rule}" if rule.startswith("R") else f"a {rule}"


def _broken(value: str, rule: str) -> str | None:
    """Why `value` breaks `rule`, or None when it follows it."""
    pattern, limit, words = _RULES[rule]
    if not value:
        return "it is empty"
    if len(value) > limit:
        return f"it is {len(value)} characters long, at most {limit} are allowed"
    if value in (".", "..") or not pattern.match(value):
        return f"{_a(rule)} has {words}"
    return None


def name_rule(group: str, kind: str) -> str:
    """The rule the API server checks the names of `kind` in API `group` against."""
    return _BY_KIND.get((group, kind), DNS1123_SUBDOMAIN)


def _group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def check_api_version(api_version: str, kind: str) -> None:
    """Raise `InvalidName` unless `api_version` is ``<version>`` or ``<group>/<version>`` (an RFC
    1123 subdomain and an RFC 1123 label) and `kind` is letters and digits (as CRDs allow, with '-')."""
    group, _, version = api_version.rpartition("/")
    why = (_broken(version, DNS1123_LABEL)
           or (_broken(group, DNS1123_SUBDOMAIN) if "/" in api_version else None))
    if why is not None:
        raise InvalidName(f"apiVersion {_shown(api_version)} is not valid: {why}: not sent to the cluster")
    if not _KIND.match(kind) or len(kind) > 63:
        raise InvalidName(f"kind {_shown(kind)} is not valid: a kind has letters and digits: not sent to the cluster")


def check_namespace(namespace: str) -> None:
    """Raise `InvalidName` unless `namespace` is a valid namespace name (an RFC 1123 label)."""
    why = _broken(namespace, DNS1123_LABEL)
    if why is not None:
        raise InvalidName(f"namespace {_shown(namespace)} is not valid (a namespace name is an {DNS1123_LABEL}): "
                          f"{why}: not sent to the cluster")


def check_name(api_version: str, kind: str, name: str) -> None:
    """Raise `InvalidName` unless `name` follows the rule of `kind` (see the module's docstring)."""
    rule = name_rule(_group(api_version), kind)
    why = _broken(name, rule) or (_broken(name, PATH_SEGMENT) if rule != PATH_SEGMENT else None)
    if why is not None:
        raise InvalidName(f"{kind} name {_shown(name)} is not valid (a {kind} name is {_a(rule)}): "
                          f"{why}: not sent to the cluster")


def check_plural(plural: str) -> None:
    """Raise `InvalidName` unless `plural` (from discovery) is one resource, never a subresource."""
    why = _broken(plural, DNS1123_LABEL)
    if why is not None:
        raise InvalidName(f"resource {_shown(plural)} is not a plain resource: not sent to the cluster")

"""OCI image references: parsing, docker.io normalisation and semantic-version ordering.

Grammar (github.com/distribution/reference)::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ registry "/" ] path
    registry   := host [ ":" port ]          host: DNS name, IPv4 or [IPv6]
    path       := component ( "/" component )*
    component  := [a-z0-9]+ ( ( [._] | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
    digest     := "sha256:" 64 lowercase hex digits   (the only algorithm prbot accepts)

The first component of the name is a registry when it contains ``.`` or ``:`` or is ``localhost``
(docker's rule); otherwise the image lives on Docker Hub, where ``nginx`` means
``docker.io/library/nginx`` and ``index.docker.io`` is an old alias of ``docker.io``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from prbot.errors import ImageError

DOCKER_HUB = "docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io"})
NAME_MAX = 255

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# Versions as Flux (Masterminds semver) reads them: ``v`` optional, minor and patch optional
# (``1.25`` is 1.25.0, ``v2`` is 2.0.0), no leading zeros, SemVer 2.0 pre-releases and build metadata.
_SEMVER = re.compile(
    r"v?(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*))?(?:\.(0|[1-9][0-9]*))?"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?")


@dataclass(frozen=True)
class ImageRef:
    """One image reference.  ``name`` is the repository as written (no tag, no digest)."""

    name: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, self.name)
        if self.tag is not None:
            _check_tag(self.tag, str(self))
        if self.digest is not None:
            _check_digest(self.digest, str(self))

    @property
    def registry(self) -> str:
        """The registry host (lower case, with its port), ``docker.io`` for Docker Hub."""
        registry, _ = _split(self.name)
        return registry

    @property
    def path(self) -> str:
        """The repository path on its registry, e.g. ``library/nginx``."""
        _, path = _split(self.name)
        return path

    @property
    def repository(self) -> str:
        """The normalised full repository, e.g. ``docker.io/library/nginx``."""
        registry, path = _split(self.name)
        return f"{registry}/{path}"

    @property
    def version(self) -> str:
        """What follows the name: ``1.2.3``, ``1.2.3@sha256:…``, ``@sha256:…`` or ``""``."""
        return (self.tag or "") + (f"@{self.digest}" if self.digest else "")

    def with_version(self, tag: str | None, digest: str | None) -> ImageRef:
        """The same repository, written the same way, at another tag and/or digest."""
        return ImageRef(self.name, tag, digest)

    def same_repository(self, other: ImageRef | str) -> bool:
        """True when `other` (a reference or repository, tag and digest ignored) names this repository."""
        if isinstance(other, ImageRef):
            return other.repository == self.repository
        try:
            return parse_image(other).repository == self.repository
        except ImageError:
            return False

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def parse_image(text: str) -> ImageRef:
    """Parse ``[registry/]path[:tag][@digest]``; raise ImageError naming the bad part."""
    if not isinstance(text, str):
        raise ImageError(f"image reference must be a string, not {type(text).__name__}")
    if not text:
        raise ImageError("image reference is empty")
    if any(c.isspace() for c in text):
        raise ImageError(f"image reference {_clip(text)!r} contains whitespace")
    rest, digest = text, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if "@" in digest:
            raise ImageError(f"image reference {_clip(text)!r} has more than one '@'")
        _check_digest(digest, text)
    name, tag = rest, None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:                       # a ':' after the last '/' starts the tag, not a port
        name, tag = rest[:colon], rest[colon + 1:]
        _check_tag(tag, text)
    _check_name(name, text)
    return ImageRef(name, tag, digest)


def normalize_repository(name: str) -> str:
    """The full repository a reference names: ``nginx:1`` → ``docker.io/library/nginx``."""
    return parse_image(name).repository


def same_repository(a: str, b: str) -> bool:
    """True when both references name the same repository (tags and digests ignored).

    An invalid reference names no repository: the answer is then False, not an error.
    """
    try:
        return parse_image(a).repository == parse_image(b).repository
    except ImageError:
        return False


# -- semantic versions -------------------------------------------------------------------------------

@total_ordering
@dataclass(frozen=True)
class _PreId:
    """One pre-release identifier: numeric ones sort numerically and before alphanumeric ones."""

    number: int | None
    text: str

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, _PreId):
            return NotImplemented
        if self.number is not None and other.number is not None:
            return self.number < other.number
        if (self.number is None) != (other.number is None):
            return self.number is not None
        return self.text < other.text


SemverKey = tuple[int, int, int, int, tuple[_PreId, ...]]


def parse_semver(tag: str) -> SemverKey | None:
    """A sortable key for a semantic version, or None when `tag` is not one.

    Versions are read as Flux's image policies read them: a ``v`` prefix is allowed and minor and
    patch may be left out (``1.25`` = ``1.25.0``, ``v2`` = ``2.0.0``, ``2.0-rc.1`` = ``2.0.0-rc.1``);
    leading zeros (``1.02``), four parts, ``V1.2.3`` and words (``latest``) are not versions.
    The key orders by SemVer 2.0 precedence: a release sorts after its pre-releases, pre-release
    identifiers compare numerically or in ASCII order, a longer identifier list wins a tie, and
    build metadata (``+…``) is ignored.
    """
    if not isinstance(tag, str):
        return None
    m = _SEMVER.fullmatch(tag)
    if not m:
        return None
    major, minor, patch, pre, _build = m.groups()
    minor, patch = minor or "0", patch or "0"
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    ids = tuple(_PreId(int(p), p) if p.isdigit() else _PreId(None, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), 0, ids)


def is_newer(candidate: str, current: str) -> bool | None:
    """True when `candidate` is a higher semantic version than `current`; None if either is not one."""
    a, b = parse_semver(candidate), parse_semver(current)
    if a is None or b is None:
        return None
    return a > b


# -- internals ---------------------------------------------------------------------------------------

def _split(name: str) -> tuple[str, str]:
    """(normalised registry, normalised path) of a name already checked by _check_name."""
    first, sep, rest = name.partition("/")
    if sep and _is_registry(first):
        registry, path = first.lower(), rest
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
    else:
        registry, path = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return registry, path


def _is_registry(first: str) -> bool:
    return "." in first or ":" in first or first == "localhost"


def _check_name(name: str, text: str) -> None:
    if not isinstance(name, str) or not name:
        raise ImageError(f"image reference {_clip(text)!r} has an empty repository name")
    if any(c.isspace() for c in name):
        raise ImageError(f"image reference {_clip(text)!r} contains whitespace")
    if len(name) > NAME_MAX:
        raise ImageError(f"image reference {_clip(text)!r}: repository name is longer than "
                         f"{NAME_MAX} characters")
    first, sep, rest = name.partition("/")
    if sep and _is_registry(first):
        _check_registry(first, text)
        path = rest
    else:
        path = name
    if not path:
        raise ImageError(f"image reference {_clip(text)!r} has no repository path after the registry")
    for component in path.split("/"):
        if not component:
            raise ImageError(f"image reference {_clip(text)!r} has an empty path component")
        if component in (".", ".."):
            raise ImageError(f"image reference {_clip(text)!r}: path component {component!r} is not allowed")
        if _COMPONENT.fullmatch(component):
            continue
        if ":" in component:
            raise ImageError(f"image reference {_clip(text)!r}: unexpected ':' in repository path "
                             f"{_clip(path)!r} (only one ':tag' is allowed, after the path)")
        if component.lower() != component and _COMPONENT.fullmatch(component.lower()):
            raise ImageError(f"image reference {_clip(text)!r}: uppercase in the repository path "
                             f"({component!r}); repository paths are lowercase")
        raise ImageError(f"image reference {_clip(text)!r}: invalid path component {component!r} (lower-case "
                         "letters and digits, separated by '.', '_', '__' or '-')")


def _check_registry(registry: str, text: str) -> None:
    host, port = registry, None
    if registry.startswith("["):
        end = registry.find("]")
        host, tail = registry[:end + 1], registry[end + 1:]
        if end < 0 or not _IPV6.fullmatch(host) or (tail and not tail.startswith(":")):
            raise ImageError(f"image reference {_clip(text)!r}: invalid registry host {registry!r}")
        port = tail[1:] if tail else None
    elif ":" in registry:
        host, _, port = registry.partition(":")
    if port is not None and (not _PORT.fullmatch(port) or not 0 < int(port) < 65536):
        raise ImageError(f"image reference {_clip(text)!r}: invalid registry port {port!r} in {registry!r}")
    if host.startswith("["):
        return
    if not host or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise ImageError(f"image reference {_clip(text)!r}: invalid registry host {host!r}")


def _check_tag(tag: str, text: str) -> None:
    if not isinstance(tag, str) or not tag:
        raise ImageError(f"image reference {_clip(text)!r} has an empty tag")
    if not _TAG.fullmatch(tag):
        why = "is longer than 128 characters" if len(tag) > 128 else \
            "must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}"
        raise ImageError(f"image reference {_clip(text)!r}: invalid tag {_clip(tag)!r} ({why})")


def _check_digest(digest: str, text: str) -> None:
    if not isinstance(digest, str) or not digest:
        raise ImageError(f"image reference {_clip(text)!r} has an empty digest after '@'")
    if not _DIGEST.fullmatch(digest):
        raise ImageError(f"image reference {_clip(text)!r}: malformed digest {_clip(digest)!r} "
                         "(expected sha256: followed by 64 lower-case hex digits)")


def _clip(s: str, n: int = 80) -> str:
    return s if len(s) <= n else s[:n] + "…"

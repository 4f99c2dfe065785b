"""`.prbot.yml`: typed configuration, loading and validation with FILE:LINE errors.

The data classes below are the contract the rest of prbot relies on.

`load_config` parses with ruamel.yaml's round-trip loader (safe: it never builds Python objects
from tags) so that every problem can name the line of the offending key or value.  It collects
every problem before giving up and raises one `ConfigError` holding all of them.

The JSON Schema shipped in ``prbot/schema/prbot.schema.json`` describes the same file for
editors; `KNOWN_KEYS` exposes the loader's key sets so tests keep the two in step.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from prbot.errors import ConfigError, ImageError, PrbotError
from prbot.images import parse_image, same_repository

CONFIG_FILE = ".prbot.yml"
SCHEMA_FILE = "prbot.schema.json"
SUPPORTED_VERSION = 1


@dataclass(frozen=True)
class Environment:
    name: str
    cluster: str | None = None
    auto_merge: bool = False
    kubernetes_version: str | None = None   # None: the newest schema version known
    deployers: tuple[str, ...] = ()


@dataclass(frozen=True)
class HelmSpec:
    chart: str | None = None                # repo-relative chart directory; None: the target dir
    values: tuple[str, ...] = ()            # values files relative to the target directory


@dataclass(frozen=True)
class SyncSpec:
    kind: Literal["argocd", "flux", "apply"]
    options: dict[str, Any] = field(default_factory=dict)   # e.g. {"application": "{app}-{env}"}


@dataclass(frozen=True)
class AppSpec:
    path: str                               # pattern with {app} and/or {env}; without {env} the
                                            # directory is a target in every environment
    name: str | None = None                 # fixed app name when the pattern has no {app}
    namespace: str | None = None            # pattern, e.g. "{app}-{env}"
    sync: SyncSpec | None = None
    helm: HelmSpec | None = None            # values may hold {app} and {env}
    environments: tuple[str, ...] | None = None   # the environments the app exists in; None: all
    line: int = field(default=0, compare=False)    # line of `path` in the file, for messages

    def in_env(self, env: str) -> bool:
        return self.environments is None or env in self.environments


@dataclass(frozen=True)
class ImageRule:
    repository: str                         # as written in the config (no tag)
    land_in: str | None = None              # None: the first environment
    tags: str | None = None                 # full-match regex; None: any valid tag
    policy: Literal["pushed", "semver"] = "pushed"
    digest: bool = False


@dataclass(frozen=True)
class PreviewSpec:
    environment: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class Config:
    version: int
    environments: tuple[Environment, ...]
    apps: tuple[AppSpec, ...] = ()
    images: tuple[ImageRule, ...] = ()
    preview: PreviewSpec | None = None
    diff_ignore: tuple[str, ...] = ()
    render_remote: tuple[str, ...] = ()     # URL prefixes of remote bases/charts rendered
    render_repository: tuple[str, ...] = ()  # more URLs of this repository (mirrors) to expansions

    @property
    def env_names(self) -> list[str]:
        return [e.name for e in self.environments]

    def env(self, name: str) -> Environment:
        for e in self.environments:
            if e.name == name:
                return e
        raise PrbotError(f"unknown environment {name!r} (known: {', '.join(self.env_names)})")

    def next_env(self, name: str) -> Environment | None:
        names = self.env_names
        i = names.index(self.env(name).name)
        return self.environments[i + 1] if i + 1 < len(names) else None


# --------------------------------------------------------------------------------------------
# The keys the loader knows, per level.  The JSON Schema must list exactly these (tests check).

TOP_KEYS = frozenset({"version", "environments", "apps", "images", "preview", "diff", "render"})
ENVIRONMENT_KEYS = frozenset({"name", "cluster", "auto_merge", "kubernetes_version", "deployers"})
APP_KEYS = frozenset({"path", "name", "namespace", "sync", "helm", "environments"})
SYNC_KEYS = frozenset({"argocd", "flux", "apply"})
ARGOCD_KEYS = frozenset({"application", "namespace"})
FLUX_KEYS = frozenset({"kind", "name", "namespace"})
APPLY_KEYS = frozenset({"prune"})
HELM_KEYS = frozenset({"chart", "values"})
IMAGE_KEYS = frozenset({"repository", "land_in", "tags", "policy", "digest"})
PREVIEW_KEYS = frozenset({"environment", "url"})
DIFF_KEYS = frozenset({"ignore"})
RENDER_KEYS = frozenset({"remote", "repository"})

#: Every map of the file, by location ("[]" stands for "each item of the list").
KNOWN_KEYS: dict[str, frozenset[str]] = {
    "": TOP_KEYS,
    "environments[]": ENVIRONMENT_KEYS,
    "apps[]": APP_KEYS,
    "apps[].sync": SYNC_KEYS,
    "apps[].sync.argocd": ARGOCD_KEYS,
    "apps[].sync.flux": FLUX_KEYS,
    "apps[].sync.apply": APPLY_KEYS,
    "apps[].helm": HELM_KEYS,
    "images[]": IMAGE_KEYS,
    "preview": PREVIEW_KEYS,
    "diff": DIFF_KEYS,
    "render": RENDER_KEYS,
}

POLICIES = ("pushed", "semver")
FLUX_KINDS = ("Kustomization", "HelmRelease")
SYNC_DEFAULTS: dict[str, dict[str, Any]] = {
    "argocd": {"namespace": "argocd"},
    "flux": {"namespace": "flux-system"},
    "apply": {"prune": False},
}

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_K8S_VERSION = re.compile(r"[0-9]+\.[0-9]+")
_DEPLOYER = re.compile(r"@?[A-Za-z0-9][A-Za-z0-9-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")
_APP_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_URL = re.compile(r"https?://\S+")
_REPOSITORY_URL = re.compile(r"(?:(?:https|ssh)://(?:[\w.-]+@)?[A-Za-z0-9.-]+(?::\d+)?/|[\w.-]+@[A-Za-z0-9.-]+:)\S+")
_REMOTE_PREFIX = re.compile(r"(?:https|oci)://[A-Za-z0-9.-]+(?::\d+)?(?:/\S*)?")
# OCI distribution reference without tag or digest: [host[:port]/]component(/component)*
_BOOL_WORDS = {"yes", "no", "on", "off", "true", "false", "y", "n"}


# --------------------------------------------------------------------------------------------
# Public API


def config_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `.prbot.yml`, as shipped in ``prbot/schema/``."""
    path = Path(__file__).resolve().parent / "schema" / SCHEMA_FILE
    try:
        schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PrbotError(f"{path}: cannot load the configuration schema shipped with prbot: {e}") from e
    return schema


def load_config(text: str, filename: str = CONFIG_FILE) -> Config:
    """Parse and validate `.prbot.yml` text; raise `ConfigError` listing every problem."""
    config, errors, _ = _check_text(text, filename)
    if errors or config is None:
        raise ConfigError(errors or [f"{filename}:1: invalid configuration"])
    return config


def load_config_file(path: Path) -> Config:
    """Load `.prbot.yml` from disk; errors name the file as the user knows it (``.prbot.yml``)."""
    path = Path(path)
    filename = _display_name(path)
    text, error = _read(path, filename)
    if error:
        raise ConfigError([error])
    return load_config(text, filename)


@dataclass(frozen=True)
class CheckedFile:
    """A configuration file read and validated.  `config` is None when `errors` holds problems;
    `lines` maps a place in the file ("apps[0].helm.chart") to its line, for later checks."""

    filename: str
    config: Config | None
    errors: list[str]
    lines: dict[str, int]


def check_file(repo: Path, config_file: Path | None = None) -> CheckedFile:
    """``<repo>/.prbot.yml`` (or `config_file`) read and validated on its own; what only the
    repository can tell (charts, path patterns) is `prbot.targets.check_config`'s."""
    repo = Path(repo)
    if not repo.is_dir():
        return CheckedFile(str(repo), None, [f"{repo}: no such directory (--repo names the GitOps "
                                             "repository's working tree)"], {})
    path = Path(config_file) if config_file is not None else repo / CONFIG_FILE
    filename = _display_name(path) if config_file is None else str(path)
    text, error = _read(path, filename)
    if error:
        if not path.exists():           # name the file the user would look for
            error = f"{path}: no such file (a GitOps repository needs a {CONFIG_FILE} at its root)"
        return CheckedFile(filename, None, [error], {})
    config, errors, lines = _check_text(text, filename)
    return CheckedFile(filename, None if errors else config, errors, lines)


# --------------------------------------------------------------------------------------------
# Reading and parsing


def _display_name(path: Path) -> str:
    return CONFIG_FILE if path.name == CONFIG_FILE else str(path)


def _read(path: Path, filename: str) -> tuple[str, str | None]:
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return "", f"{filename}: no such file (a GitOps repository needs a {CONFIG_FILE} at its root)"
    except IsADirectoryError:
        return "", f"{filename}: is a directory, not a file"
    except UnicodeDecodeError as e:
        return "", f"{filename}: not UTF-8 text ({e.reason} at byte {e.start})"
    except OSError as e:
        return "", f"{filename}: cannot be read: {e.strerror or e}"


def _parse(text: str, filename: str) -> tuple[Any, str | None]:
    """The YAML document (ruamel round-trip nodes, which carry line numbers) or one error line."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    try:
        return yaml.load(text), None
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(str(e.problem or e.context or "syntax error").split())
        return None, f"{filename}:{line}: invalid YAML: {problem}"
    except YAMLError as e:
        return None, f"{filename}:1: invalid YAML: {' '.join(str(e).split())}"
    except RecursionError:
        return None, f"{filename}:1: invalid YAML: nested too deeply"
    except Exception as e:  # noqa: BLE001 - a parser crash must still be one line for the user
        return None, f"{filename}:1: invalid YAML: {type(e).__name__}: {' '.join(str(e).split())}"


def _check_text(text: str, filename: str) -> tuple[Config | None, list[str], dict[str, int]]:
    doc, error = _parse(text, filename)
    if error:
        return None, [error], {}
    checker = _Checker()
    config = checker.document(doc)
    return (config if not checker.problems else None), checker.format(filename), checker.lines


# --------------------------------------------------------------------------------------------
# Validation

_MISSING: Any = object()


_CORE_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq",
                                                   "omap", "set", "timestamp", "binary")}


def _tag(value: Any) -> str | None:
    tag = getattr(getattr(value, "tag", None), "value", None)
    return tag if isinstance(tag, str) and tag else None


def _plain(value: Any) -> Any:
    """Unwrap an explicit ``!!str`` scalar, which the round-trip loader keeps as a TaggedScalar."""
    if _tag(value) == "tag:yaml.org,2002:str" and isinstance(getattr(value, "value", None), str):
        return str(value.value)
    return value


def _kind(value: Any) -> str:
    tag = _tag(value)
    if tag is not None and tag not in _CORE_TAGS:
        return f"a value tagged {tag.replace('tag:yaml.org,2002:', '!!')}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


_IS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
    "map": lambda v: isinstance(v, dict),
}


def _key_line(node: Any, key: Any, default: int) -> int:
    try:
        return int(node.lc.key(key)[0]) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return default


def _item_line(node: Any, index: int, default: int) -> int:
    try:
        return int(node.lc.item(index)[0]) + 1
    except (AttributeError, KeyError, TypeError, IndexError):
        return default


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _q(value: Any) -> str:
    return json.dumps(str(value), ensure_ascii=False)


def _placeholders(text: str) -> tuple[list[str], bool]:
    """The `{name}` placeholders of a pattern and whether stray braces remain."""
    names = _PLACEHOLDER.findall(text)
    rest = _PLACEHOLDER.sub("", text)
    return names, ("{" in rest or "}" in rest)


def _escapes(rel: str, depth: int = 0) -> bool:
    """Whether relative path `rel`, resolved from a directory `depth` levels below the repository
    root, leaves the repository at any point."""
    level = depth
    for part in PurePosixPath(rel).parts:
        if part == "..":
            level -= 1
            if level < 0:
                return True
        elif part != ".":
            level += 1
    return False


def _tagged(reference: str) -> str | None:
    """What follows the repository in an image reference (":tag", "@digest"), if anything."""
    if "@" in reference:
        return "a digest"
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        return "a tag"
    return None


class _Checker:
    def __init__(self) -> None:
        self.problems: list[tuple[int, str]] = []
        self.lines: dict[str, int] = {}       # dotted location -> line, for later checks
        self.env_names: list[str] | None = []  # None: environments unusable for cross references

    # -- reporting ---------------------------------------------------------------------------

    def error(self, line: int, where: str, message: str) -> None:
        self.problems.append((line, f"{where}: {message}" if where else message))

    def format(self, filename: str) -> list[str]:
        ordered = sorted(enumerate(self.problems), key=lambda p: (p[1][0], p[0]))
        return [f"{filename}:{line}: {msg}" for _, (line, msg) in ordered]

    # -- generic shapes ----------------------------------------------------------------------

    def mapping(self, node: Any, where: str, line: int, known: frozenset[str],
                required: tuple[str, ...] = ()) -> dict[Any, Any] | None:
        """`node` if it is a map (unknown and missing keys reported), else None (reported)."""
        if not isinstance(node, dict):
            self.error(line, where, f"expected a map, got {_kind(node)}")
            return None
        for key in node:
            if isinstance(key, str) and key in known:
                continue
            close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
            hint = f"did you mean {_q(close[0])}?" if close else f"known keys: {', '.join(sorted(known))}"
            self.error(_key_line(node, key, line), where, f"unknown key {_q(key)} ({hint})")
        for key in required:
            if key not in node:
                self.error(line, where, f"missing required key {_q(key)}")
        return node

    def value(self, node: dict[Any, Any], key: str, where: str, line: int, kind: str,
              required: bool = False, number_hint: str = "") -> Any:
        """node[key] when it has the expected kind; _MISSING when absent or wrong (reported)."""
        if key not in node:
            if required:
                self.error(line, where, f"missing required key {_q(key)}")
            return _MISSING
        value = _plain(node[key])
        path = _join(where, key)
        kline = _key_line(node, key, line)
        self.lines[path] = kline
        if not _IS[kind](value):
            article = "an" if kind[0] in "aeiou" else "a"
            got = _kind(value)
            extra = ""
            if number_hint and got in ("integer", "number"):
                extra = number_hint
            elif kind == "boolean" and isinstance(value, str) and value.lower() in _BOOL_WORDS:
                extra = "write true or false"
            message = f"expected {article} {kind}, got {got}"
            self.error(kline, path, f"{message} ({extra})" if extra else message)
            return _MISSING
        return value

    def items(self, seq: list[Any], where: str, line: int) -> Iterator[tuple[int, Any, str, int]]:
        for i, item in enumerate(seq):
            yield i, item, f"{where}[{i}]", _item_line(seq, i, line)

    def strings(self, node: dict[Any, Any], key: str, where: str, line: int,
                check: Callable[[str, str, int], bool] | None = None) -> tuple[str, ...] | None:
        """A list of non-empty strings, each also passing `check(text, location, line)` if given."""
        seq = self.value(node, key, where, line, "list")
        if seq is _MISSING:
            return None
        out: list[str] = []
        ok = True
        for _, item, path, iline in self.items(seq, _join(where, key), _key_line(node, key, line)):
            item = _plain(item)
            if not isinstance(item, str):
                self.error(iline, path, f"expected a string, got {_kind(item)}")
                ok = False
            elif not item.strip():
                self.error(iline, path, "must not be empty")
                ok = False
            elif check is not None and not check(str(item), path, iline):
                ok = False
            else:
                out.append(str(item))
        return tuple(out) if ok else None

    def pattern(self, text: str, path: str, line: int) -> bool:
        """Only `{app}` and `{env}` placeholders, braces balanced."""
        names, stray = _placeholders(text)
        ok = True
        for name in names:
            if name not in ("app", "env"):
                self.error(line, path,
                           f"unknown placeholder {{{name}}} in {_q(text)} (use {{app}} or {{env}})")
                ok = False
        if stray:
            self.error(line, path, f"unbalanced brace in {_q(text)} (placeholders are {{app}} and {{env}})")
            ok = False
        return ok

    def env_ref(self, node: dict[Any, Any], key: str, where: str, line: int) -> str | None:
        name = self.value(node, key, where, line, "string")
        if name is _MISSING:
            return None
        path = _join(where, key)
        if self.env_names is not None and name not in self.env_names:
            known = ", ".join(dict.fromkeys(self.env_names)) or "none"
            self.error(self.lines[path], path, f"{_q(name)} names no environment (known: {known})")
            return None
        return str(name)

    # -- the document --------------------------------------------------------------------------

    def document(self, doc: Any) -> Config | None:
        if doc is None:
            self.error(1, "", "the file is empty (expected a map with version and environments)")
            return None
        top = self.mapping(doc, "", 1, TOP_KEYS)
        if top is None:
            return None
        version = self.value(top, "version", "", 1, "integer", required=True)
        if version is not _MISSING and version != SUPPORTED_VERSION:
            self.error(self.lines["version"], "version",
                       f"unsupported version {version} (this prbot reads version {SUPPORTED_VERSION})")
        envs = self.environments(top)
        apps = self.apps(top)
        images = self.images(top)
        preview = self.preview(top)
        diff_ignore = self.diff(top)
        render_remote = self.render(top)
        render_repository = self.render_repository(top)
        if self.problems or envs is None:
            return None
        return Config(version=SUPPORTED_VERSION, environments=envs, apps=apps or (), images=images or (),
                      preview=preview, diff_ignore=diff_ignore or (), render_remote=render_remote or (),
                      render_repository=render_repository or ())

    def environments(self, top: dict[Any, Any]) -> tuple[Environment, ...] | None:
        seq = self.value(top, "environments", "", 1, "list", required=True)
        if seq is _MISSING:
            self.env_names = None
            return None
        line = self.lines["environments"]
        if not seq:
            self.error(line, "environments", "at least one environment is required")
            self.env_names = None
            return None
        out: list[Environment] = []
        seen: dict[str, str] = {}
        names: list[str] = []
        for _, item, where, iline in self.items(seq, "environments", line):
            env = self.mapping(item, where, iline, ENVIRONMENT_KEYS)
            if env is None:
                self.env_names = None
                continue
            name = self.value(env, "name", where, iline, "string", required=True)
            if name is _MISSING:
                self.env_names = None
            else:
                names.append(str(name))
                nline = self.lines[f"{where}.name"]
                if not _DNS_LABEL.fullmatch(name) or len(name) > 63:
                    self.error(nline, f"{where}.name", f"{_q(name)} is not a valid environment name "
                               "(lowercase letters, digits and '-', at most 63 characters)")
                elif name in seen:
                    self.error(nline, f"{where}.name", f"duplicate environment {_q(name)} "
                               f"(also {seen[name]})")
                else:
                    seen[name] = where
            cluster = self.value(env, "cluster", where, iline, "string")
            auto_merge = self.value(env, "auto_merge", where, iline, "boolean")
            version = self.value(env, "kubernetes_version", where, iline, "string",
                                 number_hint='quote it, e.g. "1.33": unquoted, 1.30 reads as 1.3')
            if version is not _MISSING and not _K8S_VERSION.fullmatch(version):
                path = f"{where}.kubernetes_version"
                self.error(self.lines[path], path, f"{_q(version)} is not a Kubernetes minor version "
                           'like "1.33"')
            deployers = self.strings(env, "deployers", where, iline, self.deployer)
            if name is not _MISSING:
                out.append(Environment(
                    name=str(name),
                    cluster=None if cluster is _MISSING else str(cluster),
                    auto_merge=False if auto_merge is _MISSING else bool(auto_merge),
                    kubernetes_version=None if version is _MISSING else str(version),
                    deployers=deployers or ()))
        if self.env_names is not None:
            self.env_names = names
        return tuple(out)

    def deployer(self, who: str, where: str, line: int) -> bool:
        if _DEPLOYER.fullmatch(who):
            return True
        self.error(line, where, f"{_q(who)} is neither a GitHub user (alice) nor a team (@org/team)")
        return False

    def apps(self, top: dict[Any, Any]) -> tuple[AppSpec, ...] | None:
        seq = self.value(top, "apps", "", 1, "list")
        if seq is _MISSING:
            return None
        out: list[AppSpec] = []
        paths: dict[str, str] = {}
        for _, item, where, iline in self.items(seq, "apps", self.lines["apps"]):
            app = self.mapping(item, where, iline, APP_KEYS)
            if app is None:
                continue
            path = self.value(app, "path", where, iline, "string", required=True)
            depth: int | None = None
            has_app = False
            if path is not _MISSING:
                ploc = f"{where}.path"
                depth, has_app = self.app_path(str(path), ploc, self.lines[ploc])
                norm = str(PurePosixPath(path))
                if norm in paths:
                    self.error(self.lines[ploc], ploc, f"same path as {paths[norm]}")
                paths.setdefault(norm, where)
            name = self.value(app, "name", where, iline, "string")
            if name is not _MISSING:
                nloc = f"{where}.name"
                if path is not _MISSING and has_app:
                    self.error(self.lines[nloc], nloc, "not allowed when path has {app} "
                               "(the app name is the directory that {app} matches)")
                elif not _APP_NAME.fullmatch(name):
                    self.error(self.lines[nloc], nloc, f"{_q(name)} is not a valid app name "
                               "(letters, digits, '-', '_' and '.')")
            elif path is not _MISSING and not has_app and "name" not in app:
                self.error(iline, where, "missing required key \"name\" (path has no {app}, "
                           "so name gives the app its name)")
            namespace = self.value(app, "namespace", where, iline, "string")
            if namespace is not _MISSING:
                self.k8s_name_pattern(str(namespace), f"{where}.namespace", label=True)
            sync = self.sync(app, where, iline)
            helm = self.helm(app, where, iline, depth)
            environments = self.strings(app, "environments", where, iline, self.env_name)
            if environments is not None:
                eloc = f"{where}.environments"
                if not environments:
                    self.error(self.lines[eloc], eloc, "lists no environment (leave it out for all)")
                for dup in sorted({e for e in environments if environments.count(e) > 1}):
                    self.error(self.lines[eloc], eloc, f"{_q(dup)} is listed twice")
            if path is not _MISSING:
                out.append(AppSpec(path=str(path), name=None if name is _MISSING else str(name),
                                   namespace=None if namespace is _MISSING else str(namespace),
                                   sync=sync, helm=helm, environments=environments,
                                   line=self.lines.get(f"{where}.path", iline)))
        return tuple(out)

    def app_path(self, path: str, where: str, line: int) -> tuple[int | None, bool]:
        """Check an `apps[].path` pattern; returns (depth below the root or None, has {app})."""
        names, _ = _placeholders(path)
        ok = self.pattern(path, where, line)
        if not path.strip():
            self.error(line, where, "must not be empty")
            return None, False
        if path.startswith("/") or re.match(r"[A-Za-z]:[\\/]", path):
            self.error(line, where, f"{_q(path)} is absolute; write it relative to the repository root")
            ok = False
        elif _escapes(path):
            self.error(line, where, f"{_q(path)} escapes the repository")
            ok = False
        depth = len([p for p in PurePosixPath(path).parts if p not in (".", "/")]) if ok else None
        return depth, "app" in names

    def env_name(self, name: str, where: str, line: int) -> bool:
        """An item naming an environment."""
        if self.env_names is not None and name not in self.env_names:
            known = ", ".join(dict.fromkeys(self.env_names)) or "none"
            self.error(line, where, f"{_q(name)} names no environment (known: {known})")
            return False
        return True

    def k8s_name_pattern(self, text: str, where: str, label: bool) -> bool:
        """A pattern that must expand to a Kubernetes name (a DNS label when `label`)."""
        line = self.lines.get(where, 1)
        if not self.pattern(text, where, line):
            return False
        sample = _PLACEHOLDER.sub("x", text)
        valid = (_DNS_LABEL.fullmatch(sample) is not None and len(sample) <= 63) if label else \
            re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", sample) is not None and len(sample) <= 253
        if not valid:
            what = "namespace name (lowercase letters, digits and '-')" if label else \
                "Kubernetes object name (lowercase letters, digits, '-' and '.')"
            self.error(line, where, f"{_q(text)} does not make a valid {what}")
        return valid

    def sync(self, app: dict[Any, Any], where: str, line: int) -> SyncSpec | None:
        node = self.value(app, "sync", where, line, "map")
        if node is _MISSING:
            return None
        where = f"{where}.sync"
        line = self.lines[where]
        if self.mapping(node, where, line, SYNC_KEYS) is None:
            return None
        kinds = [k for k in node if k in SYNC_KEYS]
        if len(kinds) != 1:
            got = "none" if not kinds else ", ".join(kinds)
            self.error(line, where, f"expected exactly one of argocd, flux, apply (got {got})")
            return None
        kind = kinds[0]
        loc = f"{where}.{kind}"
        kline = _key_line(node, kind, line)
        self.lines[loc] = kline
        block = node[kind]
        if kind == "apply" and block is None:
            block = {}
        options: dict[str, Any] = dict(SYNC_DEFAULTS[kind])
        known = {"argocd": ARGOCD_KEYS, "flux": FLUX_KEYS, "apply": APPLY_KEYS}[kind]
        if self.mapping(block, loc, kline, known) is None:
            return None
        before = len(self.problems)
        if kind == "argocd":
            application = self.value(block, "application", loc, kline, "string", required=True)
            if application is not _MISSING:
                self.k8s_name_pattern(str(application), f"{loc}.application", label=False)
                options["application"] = str(application)
        elif kind == "flux":
            flux_kind = self.value(block, "kind", loc, kline, "string", required=True)
            if flux_kind is not _MISSING:
                if flux_kind not in FLUX_KINDS:
                    self.error(self.lines[f"{loc}.kind"], f"{loc}.kind",
                               f"{_q(flux_kind)} is not one of {', '.join(FLUX_KINDS)}")
                options["kind"] = str(flux_kind)
            name = self.value(block, "name", loc, kline, "string", required=True)
            if name is not _MISSING:
                self.k8s_name_pattern(str(name), f"{loc}.name", label=False)
                options["name"] = str(name)
        else:
            prune = self.value(block, "prune", loc, kline, "boolean")
            if prune is not _MISSING:
                options["prune"] = bool(prune)
        if kind in ("argocd", "flux"):
            namespace = self.value(block, "namespace", loc, kline, "string")
            if namespace is not _MISSING:
                self.k8s_name_pattern(str(namespace), f"{loc}.namespace", label=True)
                options["namespace"] = str(namespace)
        if len(self.problems) != before:
            return None
        return SyncSpec(kind=kind, options=options)

    def helm(self, app: dict[Any, Any], where: str, line: int, depth: int | None) -> HelmSpec | None:
        node = self.value(app, "helm", where, line, "map")
        if node is _MISSING:
            return None
        where = f"{where}.helm"
        line = self.lines[where]
        if self.mapping(node, where, line, HELM_KEYS) is None:
            return None
        chart = self.value(node, "chart", where, line, "string")
        if chart is not _MISSING:
            self.relative(str(chart), f"{where}.chart", self.lines[f"{where}.chart"], 0,
                          "relative to the repository root")
        values = self.strings(node, "values", where, line)
        for i, rel in enumerate(values or ()):
            vloc, vline = f"{where}.values[{i}]", _item_line(node["values"], i, line)
            if self.pattern(rel, vloc, vline):      # {app} and {env} expand per target
                self.relative(_PLACEHOLDER.sub("x", rel), vloc, vline, depth, "relative to the target directory",
                              shown=rel)
        return HelmSpec(chart=None if chart is _MISSING else str(chart), values=values or ())

    def relative(self, rel: str, where: str, line: int, depth: int | None, relative_to: str,
                 shown: str | None = None) -> None:
        """A fixed path (no placeholders) that stays inside the repository."""
        shown = rel if shown is None else shown
        if not rel.strip():
            self.error(line, where, "must not be empty")
        elif rel.startswith("/") or re.match(r"[A-Za-z]:[\\/]", rel):
            self.error(line, where, f"{_q(shown)} is absolute; write it {relative_to}")
        elif depth is not None and _escapes(rel, depth):
            self.error(line, where, f"{_q(shown)} escapes the repository")
        elif _PLACEHOLDER.search(rel):
            self.error(line, where, f"{_q(rel)}: placeholders are not expanded here; name a fixed path")

    def images(self, top: dict[Any, Any]) -> tuple[ImageRule, ...] | None:
        seq = self.value(top, "images", "", 1, "list")
        if seq is _MISSING:
            return None
        out: list[ImageRule] = []
        seen: list[tuple[str, str]] = []
        for _, item, where, iline in self.items(seq, "images", self.lines["images"]):
            rule = self.mapping(item, where, iline, IMAGE_KEYS)
            if rule is None:
                continue
            repository = self.value(rule, "repository", where, iline, "string", required=True)
            if repository is not _MISSING:
                rloc = f"{where}.repository"
                if self.repository(str(repository), rloc, self.lines[rloc]):
                    other = next((w for r, w in seen if same_repository(r, repository)), None)
                    if other is not None:
                        self.error(self.lines[rloc], rloc, f"{_q(repository)} is already listed ({other})")
                    seen.append((str(repository), where))
            land_in = self.env_ref(rule, "land_in", where, iline)
            tags = self.value(rule, "tags", where, iline, "string")
            if tags is not _MISSING:
                try:
                    re.compile(tags)
                except re.error as e:
                    self.error(self.lines[f"{where}.tags"], f"{where}.tags",
                               f"{_q(tags)} is not a valid regular expression: {e}")
                else:
                    if not tags:
                        self.error(self.lines[f"{where}.tags"], f"{where}.tags",
                                   "an empty pattern accepts no tag (leave tags out to accept any)")
            policy = self.value(rule, "policy", where, iline, "string")
            if policy is not _MISSING and policy not in POLICIES:
                self.error(self.lines[f"{where}.policy"], f"{where}.policy",
                           f"{_q(policy)} is not one of {', '.join(POLICIES)}")
            digest = self.value(rule, "digest", where, iline, "boolean")
            if repository is not _MISSING:
                out.append(ImageRule(
                    repository=str(repository), land_in=land_in,
                    tags=None if tags is _MISSING else str(tags),
                    policy="pushed" if policy is _MISSING or policy not in POLICIES else policy,
                    digest=False if digest is _MISSING else bool(digest)))
        return tuple(out)

    def repository(self, text: str, where: str, line: int) -> bool:
        extra = _tagged(text)
        if extra:
            self.error(line, where, f"{_q(text)} carries {extra}; write the repository alone "
                       "(tags are chosen by `tags` and `policy`)")
            return False
        problem = _image_problem(text)
        if problem:
            self.error(line, where, f"not a valid image repository: {problem}")
            return False
        return True

    def preview(self, top: dict[Any, Any]) -> PreviewSpec | None:
        node = self.value(top, "preview", "", 1, "map")
        if node is _MISSING:
            return None
        line = self.lines["preview"]
        if self.mapping(node, "preview", line, PREVIEW_KEYS) is None:
            return None
        environment = self.env_ref(node, "environment", "preview", line)
        url = self.value(node, "url", "preview", line, "string")
        if url is not _MISSING and not _URL.fullmatch(url):
            self.error(self.lines["preview.url"], "preview.url",
                       f"{_q(url)} is not an http:// or https:// URL")
        return PreviewSpec(environment=environment, url=None if url is _MISSING else str(url))

    def diff(self, top: dict[Any, Any]) -> tuple[str, ...] | None:
        node = self.value(top, "diff", "", 1, "map")
        if node is _MISSING:
            return None
        line = self.lines["diff"]
        if self.mapping(node, "diff", line, DIFF_KEYS) is None:
            return None
        return self.strings(node, "ignore", "diff", line)

    def render(self, top: dict[Any, Any]) -> tuple[str, ...] | None:
        node = self.value(top, "render", "", 1, "map")
        if node is _MISSING:
            return None
        line = self.lines["render"]
        if self.mapping(node, "render", line, RENDER_KEYS) is None:
            return None
        return self.strings(node, "remote", "render", line, self.remote_prefix)

    def render_repository(self, top: dict[Any, Any]) -> tuple[str, ...] | None:
        """`render.repository`: git URLs that also name this repository (a mirror, a fork)."""
        node = top.get("render") if isinstance(top, dict) else None
        if not isinstance(node, dict):
            return None
        return self.strings(node, "repository", "render", self.lines["render"], self.repository_url)

    def repository_url(self, text: str, path: str, line: int) -> bool:
        if not _REPOSITORY_URL.fullmatch(text):
            self.error(line, path, f"{_q(text)} is not a git URL (https://host/owner/name, ssh://git@host/owner/name "
                                   "or git@host:owner/name)")
            return False
        return True

    def remote_prefix(self, text: str, path: str, line: int) -> bool:
        """An https:// or oci:// URL naming at least a host: the start of what may be fetched."""
        if not _REMOTE_PREFIX.fullmatch(text):
            self.error(line, path, f"{_q(text)} is not an https:// or oci:// URL prefix with a host "
                                   "(e.g. https://github.com/acme/)")
            return False
        return True


def _image_problem(text: str) -> str | None:
    """Why `text` is not a valid image repository, or None."""
    try:
        parse_image(text)
    except ImageError as e:
        return str(e)
    return None

"""Every exception type a caller catches, in one place, as a tree:

    PrbotError                 a problem the user can fix; str() is one line meant for them
    ├── ConfigError            .prbot.yml is invalid (every problem, with its line)
    ├── ImageError             not a valid OCI image reference
    ├── YamlEditError          a YAML edit that cannot be made without corrupting the file
    ├── GitError               a git operation failed
    ├── RemoteError            a remote input that may not or could not be fetched
    ├── RenderError            a target could not be rendered (transient / over a limit)
    ├── PlanBudgetError        the plan's time budget ran out while comparing or validating a target
    ├── ToolsError             the pinned renderer binaries could not be installed
    ├── PayloadError           a registry payload that cannot be read
    ├── HeadMoved              a command bound to a PR head that is no longer its head
    └── SettingsError          the service's settings are missing or invalid
    YamlLimitError (ValueError) a document over a guard (size, depth, alias expansion)
    ToolError                  a renderer process failed or ran into a limit
    NotAPush                   a well-formed registry notification that reports no push
    ClusterError · ApiError · NotServed   what the Kubernetes client's failures become
    RequestBudgetSpent         the plan's dry-run sent all the requests it may send

This module imports nothing from prbot.
"""

from __future__ import annotations


class PrbotError(Exception):
    """A problem the user can fix.  ``str(err)`` is one line meant for them.

    The CLI prints it and exits 2, the web app turns it into a 4xx, a job into a PR comment.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()) if "\n" in str(message) else str(message))


class ConfigError(PrbotError):
    """`.prbot.yml` is invalid.  ``errors`` holds every problem as ``FILE:LINE: message``."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__(self.errors[0] if len(self.errors) == 1 else
                         f"{self.errors[0]} (and {len(self.errors) - 1} more)")


class ImageError(PrbotError):
    """An image reference or repository that is not a valid OCI reference."""


class YamlEditError(PrbotError):
    """A YAML file cannot be parsed, or the requested edit cannot be made without corrupting it."""


class YamlLimitError(ValueError):
    """A document over a guard: too big, too deep, or aliases expanding too far."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.problem = message
        self.problem_mark = None


class GitError(PrbotError):
    """A git operation that failed: unknown revision, not a repository, git missing."""


class RemoteError(PrbotError):
    """A remote input that may not or could not be fetched; the message says which and why."""


class PayloadError(PrbotError):
    """The payload cannot be read: one line naming the field and what is wrong with it."""


class NotAPush(Exception):
    """A well-formed notification that reports no image push (a delete, a ping, a chart push)."""


class ToolError(Exception):
    """A tool run failed.  `limit` names the `Limits` field it ran into, if any; `transient` marks a
    failure that is not the input's (a missing binary, the plan's budget running out)."""

    def __init__(self, message: str, *, limit: str | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.limit = limit
        self.transient = transient


class ToolsError(PrbotError):
    """`prbot tools install` could not install the pinned tools."""


MAX_MESSAGE = 2000


class RenderError(PrbotError):
    """A target could not be rendered; the message is the renderer's, cleaned to one line.

    ``transient`` marks failures that may go away on retry (a missing binary, the plan's time budget
    running out); they are never memoised.  ``limit`` names the `Limits` field a render ran into
    ("memory", "timeout", "output", "plan_budget"); a render over its own limit is remembered for its
    inputs (see `prbot.render.RenderPool`).
    """

    def __init__(self, message: str, *, transient: bool = False, limit: str | None = None) -> None:
        text = " ".join(str(message).split())
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE - 1] + "…"
        super().__init__(text)
        self.transient = transient
        self.limit = limit


class ExpandError(PrbotError):
    """An object the cluster would expand (a Flux HelmRelease or Kustomization, an Argo CD
    Application) could not be expanded: the message says why, in one line, and is shown as
    "not expanded: …" beside the target, which keeps its own objects (`prbot.expand`)."""

    def __init__(self, message: str) -> None:
        text = " ".join(str(message).split())
        if len(text) > MAX_MESSAGE:
            text = text[:MAX_MESSAGE - 1] + "…"
        super().__init__(text)


class PlanBudgetError(PrbotError):
    """The plan's time budget (`PRBOT_PLAN_BUDGET`) ran out during `stage` ("comparing",
    "validating"); the plan says so for that target and keeps the others."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"the plan time budget ran out while {stage}")
        self.stage = stage


TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


class ClusterError(Exception):
    """The cluster as a whole cannot be used.  `transient`: worth trying again later (a connection
    failure, a 5xx during discovery) rather than a problem of the kubeconfig or credentials."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


class ApiError(Exception):
    """The API server refused a request.  `message` is the Status message, one line; `kind` and
    `name` are the Status `details` (e.g. "namespaces", "demo" for a missing namespace)."""

    def __init__(self, status: int, reason: str, message: str, *, kind: str | None = None,
                 name: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.kind = kind
        self.name = name

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT_STATUS


class InvalidName(ApiError):
    """A name, namespace, apiVersion or kind that breaks Kubernetes' rules for it (it would name
    another path, a subresource or a query): refused by prbot itself before any request, so nothing
    was sent.  An `ApiError` (status 0, reason "Invalid") so that it fails its object as a refusal does."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "Invalid", message)


class NotServed(Exception):
    """The cluster serves no resource for this apiVersion and kind (is its CRD installed?)."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f'no matches for kind "{kind}" in version "{api_version}"')
        self.api_version = api_version
        self.kind = kind


class RequestBudgetSpent(Exception):
    """The plan's dry-run sent every request its budget allows (`PRBOT_DRYRUN_REQUESTS`): raised
    before a request, never after, so nothing beyond the budget reaches the cluster."""


class HeadMoved(PrbotError):
    """A command (or label) asked for one head of a pull request and the PR's head is another one
    now, or prbot cannot tell which head its author saw: nothing runs; they ask again."""


class SettingsError(PrbotError):
    """Missing or invalid settings (one line naming each of them)."""


class TransientError(Exception):
    """A failure that may go away: retry the job later.  The message never holds a token."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ForgeError(PrbotError):
    """The forge refused a request (the message says what and why, one line, no token)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFound(ForgeError):
    """The object asked for does not exist (or the installation cannot see it)."""


class PolicyError(PrbotError):
    """The image's `images[]` rule refuses the move (``--force`` overrides)."""


class NotAvailable(PrbotError):
    """A command this deployment of prbot cannot run; its message is the whole reply line."""


class NotChecked(PrbotError):
    """An edit command cannot tell whether a target uses the image: rendering it would read a
    remote input `render.remote` does not allow (or one prbot never fetches).  The target is named
    as not checked and the rest of the command proceeds."""

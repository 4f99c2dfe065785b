"""The one exception type for problems the user can fix."""

from __future__ import annotations


class PrbotError(Exception):
    """A problem the user can fix.  ``str(err)`` is one line meant for them.

    The CLI prints it and exits 2, the web app turns it into a 4xx, a job into a PR comment.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()) if "\n" in str(message) else str(message))

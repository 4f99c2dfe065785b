"""The sticky comment: one set of bot comments per PR, found again by their marker and edited in place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from prbot.ports import (
    Comment,
    Forge,
)
from prbot.report import is_plan_comment

log = logging.getLogger("prbot.flows")


# --------------------------------------------------------------------------------------------
# The sticky comment
# --------------------------------------------------------------------------------------------

def is_ours(comment: Comment, bot_login: str | None) -> bool:
    if bot_login is not None:
        return comment.author.lower() == bot_login.lower()
    return comment.author_is_bot


def sticky_comment(forge: Forge, number: int, parts: Sequence[str], *, bot_login: str | None,
                   is_mine: Callable[[str], bool] = is_plan_comment) -> list[int]:
    """Make the PR's bot comments recognised by `is_mine` exactly `parts`, in order: edit in place,
    create what is missing, delete the surplus.  Returns the comment ids, part order.

    Our comments are taken in creation order (part 1 is the oldest), so a re-run after a lost
    response finds the comment the first run created instead of adding another.
    """
    ours = sorted((c for c in forge.list_comments(number) if is_ours(c, bot_login) and is_mine(c.body)),
                  key=lambda c: c.id)
    ids: list[int] = []
    for index, body in enumerate(parts):
        if index < len(ours):
            if ours[index].body != body:
                forge.edit_comment(ours[index].id, body)
            ids.append(ours[index].id)
        else:
            ids.append(forge.create_comment(number, body).id)
    for surplus in ours[len(parts):]:
        forge.delete_comment(surplus.id)
    return ids

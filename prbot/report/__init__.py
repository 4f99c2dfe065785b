"""What prbot says about a plan: the sticky PR comment (markdown) and the JSON output."""

from prbot.report.jsonout import render_json
from prbot.report.markdown import (
    DEFAULT_LIMIT,
    MARKER,
    Comment,
    blind_spots,
    is_plan_comment,
    part_of,
    render_comment,
    render_markdown,
)

__all__ = ["DEFAULT_LIMIT", "MARKER", "Comment", "blind_spots", "is_plan_comment", "part_of", "render_comment",
           "render_json", "render_markdown"]

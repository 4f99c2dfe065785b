"""`prbot plan --format json`: the plan as one JSON document, keys in a fixed order."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prbot.plan.model import Plan


def render_json(plan: Plan) -> str:
    """The plan as indented JSON: `base`, `head`, `targets[]` in the documented order.

    Key order is the order of the data classes' `to_json` (never sorted), so the output is stable
    from run to run and diffs cleanly.  Non-ASCII text is escaped, so the output is plain ASCII
    whatever the terminal's encoding.
    """
    return json.dumps(plan.to_json(), indent=2)

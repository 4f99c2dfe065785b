"""The bot's wording, kept in TOML templates beside this module: `templates/comment.toml` for the
plan comment (`prbot.report.markdown`), `templates/bot.toml` for everything else it posts."""

from __future__ import annotations

import string
import tomllib
from functools import cache
from importlib import resources


@cache
def templates(name: str) -> dict[str, string.Template]:
    """Every template of `templates/<name>.toml`, read once."""
    text = resources.files("prbot.report").joinpath(f"templates/{name}.toml").read_text("utf-8")
    return {key: string.Template(value) for key, value in tomllib.loads(text).items()}


def text(key: str, **values: object) -> str:
    """The bot template `key` with `values` substituted (already escaped by the caller)."""
    return templates("bot")[key].substitute(values)

"""The wording of what the bot posts besides the plan comment (`templates/bot.toml`)."""

from __future__ import annotations

import string
import tomllib
from functools import cache
from importlib import resources


@cache
def _templates() -> dict[str, string.Template]:
    text = resources.files("prbot.report").joinpath("templates/bot.toml").read_text("utf-8")
    return {key: string.Template(value) for key, value in tomllib.loads(text).items()}


def text(key: str, **values: object) -> str:
    """The template `key` with `values` substituted (already escaped by the caller)."""
    return _templates()[key].substitute(values)

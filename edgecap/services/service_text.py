"""Small helpers every codec needs to read a service's untrusted JSON and quote it safely."""

from __future__ import annotations

import math
from typing import Any

MESSAGE_MAX = 200  # characters of a service's error text or close reason kept


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None for anything else (bools, NaN, 1e400, 10**400)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def json_type(value: Any) -> str:
    """What a JSON value is, for a message about it ("a string", "an object" …)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def shorten(text: str, limit: int = MESSAGE_MAX) -> str:
    """One line of at most ``limit`` characters, control characters replaced."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"

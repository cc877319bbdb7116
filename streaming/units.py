"""Constants and literals shared across the service (one definition each)."""

from __future__ import annotations

#: microseconds per second: event times and window bounds are epoch microseconds
US = 1_000_000


def sql_str(text: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + text.replace("'", "''") + "'"

"""A query's parameters as a user gives them (CLI flags, URL parameters), checked.

Each bad value is a :class:`~streaming.errors.ConfigError` naming the parameter: one
line for the CLI (exit 2), a 400 for ``serve``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from streaming.errors import ConfigError
from streaming.spec.windows import WindowSpec

#: the range of a 64-bit count of nanoseconds since 1970 (the query engines' timestamps),
#: in whole years inside it
_FIRST = dt.datetime(1678, 1, 1, tzinfo=dt.UTC)
_LAST = dt.datetime(2262, 1, 1, tzinfo=dt.UTC)


def parse_time(text: str | None, what: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what}: not an ISO-8601 time: {text!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    try:
        t = t.astimezone(dt.UTC)
    except OverflowError:
        raise ConfigError(f"{what}: {text!r} is out of range") from None
    if not _FIRST <= t < _LAST:
        raise ConfigError(f"{what}: {t.isoformat()} is outside the times a query ranges over "
                          f"({_FIRST.year} to {_LAST.year - 1}: nanoseconds since 1970 in "
                          "64 bits, as the query engines count them)")
    return t


def parse_groups(items: list[str] | None, window: WindowSpec) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--group wants key=value, got {item!r}")
        if key not in window.group_by:
            raise ConfigError(f"--group {key}: window {window.name!r} groups by "
                              f"{list(window.group_by) or 'nothing'}")
        out[key] = value
    return out


@dataclass(frozen=True)
class Selection:
    window: WindowSpec
    start: dt.datetime | None
    end: dt.datetime | None
    groups: dict[str, str]


def parse_quantiles(text: str | None) -> tuple[float, ...]:
    """``"0.5,0.95,0.99"`` -> (0.5, 0.95, 0.99); each in [0, 1]."""
    if text is None or not text.strip():
        return (0.5, 0.95, 0.99)
    out = []
    for part in text.split(","):
        try:
            q = float(part)
        except ValueError:
            raise ConfigError(f"--q: not a number: {part.strip()!r}") from None
        if not 0.0 <= q <= 1.0:
            raise ConfigError(f"--q: {q:g} is not a quantile in [0, 1]")
        out.append(q)
    return tuple(out)

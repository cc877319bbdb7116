"""Keys of the result tables' cells, and their times as read back.

``aggregates`` holds rows per window x group, ``sketches`` per window x group x
sketch. A closed window has exactly one row per cell (``final``); an open one has a
row per batch that touched the cell, which readers merge (docs/architecture.md).
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple


class WindowKey(NamedTuple):
    """A cell of ``aggregates``: one window of one group."""

    window: str  #: the window's name in the spec
    start_us: int  #: window start, epoch microseconds
    group: str  #: the group key (canonical JSON of the group-by values)


class SketchKey(NamedTuple):
    """A cell of ``sketches``: one sketch of one window of one group."""

    window: str
    start_us: int
    group: str
    sketch: str  #: the sketch's name in the spec


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US = dt.timedelta(microseconds=1)


def epoch_us(value: dt.datetime) -> int:
    """A timestamp read back from a table (aware, or naive in UTC) as epoch microseconds."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - _EPOCH) // _ONE_US

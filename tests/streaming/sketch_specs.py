"""One sketch of a spec, as the merge stage's bulk cell builders take it."""

from __future__ import annotations

from typing import Any

from streaming.spec.model import parse_spec


def one_sketch(kind: str, field: str, **params: Any) -> Any:
    """The ``SketchSpec`` of a one-window spec holding one sketch ``kind`` of the string
    field ``field`` with ``params`` (TOML values)."""
    lines = "\n".join(f"  {k} = {v!r}" for k, v in params.items())
    text = f"""
[source]
topic = "t"
bootstrap_servers = "127.0.0.1:9"
[events]
time_field = "ts"
[events.fields]
{field} = "string"
[[windows]]
name = "w"
size = "1 minute"
  [[windows.sketches]]
  name = "s"
  kind = "{kind}"
  field = "{field}"
{lines}
[sink]
path = "unused/delta"
checkpoint = "unused/ck"
"""
    return parse_spec(text).windows[0].sketches[0]

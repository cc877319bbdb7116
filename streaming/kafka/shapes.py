"""The generated clickstream in another shape: its fields one level down, in objects.

``streamsketch produce --shape nested`` sends the same events as the flat shape with
their fields nested as most real streams nest them (``{"ts": ..., "user": {"id": ...,
"session": ..., "country": ..., "device": ...}, "page": {"path": ..., "action": ...,
"amount": ...}, ...}``); ``streaming/specs/clickstream-nested.toml`` is the bundled spec
with its fields declared at those paths (:func:`nested_spec_text`). A record that is not
a JSON object (the malformed ones: cut, not UTF-8, empty, null) goes as it is.
"""

from __future__ import annotations

import re
from typing import Any

#: where each flat field of the clickstream goes in the nested shape
NESTED_PATHS = {"user_id": "user.id", "session_id": "user.session", "country": "user.country",
                "device": "user.device", "page": "page.path", "action": "page.action",
                "amount": "page.amount", "referrer": "page.referrer"}

SHAPES = ("flat", "nested")


def nest_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its fields at their :data:`NESTED_PATHS` (others where they were).

    Example:
        >>> nest_event({"ts": "t", "user_id": "u1", "page": "/a", "amount": None})
        {'ts': 't', 'user': {'id': 'u1'}, 'page': {'path': '/a', 'amount': None}}
    """
    out: dict[str, Any] = {}
    for key, value in event.items():
        *parents, leaf = NESTED_PATHS.get(key, key).split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def nested_values(values: Any) -> Any:
    """An Arrow binary array of flat clickstream records, each nested (:func:`nest_event`)."""
    import orjson
    import pyarrow as pa

    out: list[bytes | None] = []
    for value in values.to_pylist():
        try:
            event = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            event = None
        out.append(orjson.dumps(nest_event(event)) if isinstance(event, dict) else value)
    return pa.array(out, pa.binary())


def nested_spec_text(text: str) -> str:
    """A spec over the flat clickstream, its fields declared at their nested paths."""
    for flat, path in NESTED_PATHS.items():
        text = re.sub(rf"^{flat} = ", f'"{path}" = ', text, flags=re.M)
        text = re.sub(rf'(field = "){flat}"', rf'\g<1>{path}"', text)
        text = re.sub(rf'([(\["]){flat}([)\]"])', rf"\g<1>{path}\g<2>", text)
    return text

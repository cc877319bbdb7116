"""Fields named by their path through JSON objects (``actor.login``), for the decoder.

:func:`struct_tree` builds the nested msgspec struct that decodes just the declared
paths (the fast path); :func:`path_value` walks a decoded object the same way (the slow
path, which also finds the reason a record is refused).
"""

from __future__ import annotations

from typing import Any

import msgspec


class NotObject(Exception):
    """A path's intermediate value is not a JSON object (``wrong_type``)."""

    def __init__(self, at: str) -> None:
        self.at = at


def path_value(doc: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a decoded JSON object: None where an object on the way is
    missing or null; raises :class:`NotObject` where one is another value."""
    for i, key in enumerate(path[:-1]):
        doc = doc.get(key)
        if doc is None:
            return None
        if not isinstance(doc, dict):
            raise NotObject(".".join(path[:i + 1]))
    return doc.get(path[-1])


def struct_tree(leaves: list[tuple[tuple[str, ...], Any]]) -> tuple[type, list[str]]:
    """A msgspec struct type holding the ``leaves`` (each a key path and its type), nested
    as the paths nest, and for each leaf the dotted attribute path that reaches it.

    An object on the way defaults to an empty instance (a missing object holds nulls);
    attribute names are positional (``a0``, ``a1``...), renamed to the JSON keys.
    """
    tree: dict[str, Any] = {}
    for path, typ in leaves:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = typ
    counter = iter(range(1 << 30))

    def build(node: dict[str, Any]) -> tuple[type, dict[str, str]]:
        fields, rename, attrs = [], {}, {}
        for i, (key, child) in enumerate(node.items()):
            attr = f"a{i}"
            rename[attr] = key
            if isinstance(child, dict):
                sub, sub_attrs = build(child)
                fields.append((attr, sub, msgspec.field(default_factory=sub)))
                attrs.update({f"{key}.{k}": f"{attr}.{v}" for k, v in sub_attrs.items()})
            else:
                fields.append((attr, child, None))
                attrs[key] = attr
        # gc=False: records of strings and numbers hold no cycles, and 100,000s of them
        # would otherwise set off the cycle collector again and again
        return (msgspec.defstruct(f"Event{next(counter)}", fields, rename=rename, gc=False),
                attrs)

    root, attrs = build(tree)
    return root, [attrs[".".join(path)] for path, _ in leaves]

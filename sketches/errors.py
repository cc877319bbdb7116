"""The one error hierarchy of the :mod:`sketches` package.

Every error raised on purpose by this package derives from :class:`SketchError`,
so a caller can catch all of them at once. Two subclasses also derive from the
matching built-in exception, so code that expects ``ValueError`` or ``TypeError``
for bad arguments keeps working.

Example:
    >>> from sketches.errors import SketchError, SketchFormatError
    >>> issubclass(SketchFormatError, SketchError)
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "SketchError",
    "IncompatibleSketchError",
    "SketchFormatError",
    "InvalidParameterError",
    "UnsupportedInputError",
]


class SketchError(Exception):
    """Base class of every error raised on purpose by :mod:`sketches`."""


def _describe(kind: str, params: Mapping[str, Any]) -> str:
    inner = ", ".join(f"{key}={value!r}" for key, value in params.items())
    return f"{kind}({inner})"


class IncompatibleSketchError(SketchError):
    """Two sketches cannot be merged (or compared) because kind or parameters differ.

    Attributes:
        left_kind: Class name of the sketch being merged into.
        left_params: Its parameter set.
        right_kind: Class name of the other sketch.
        right_params: Its parameter set.

    Example:
        >>> err = IncompatibleSketchError("HyperLogLog", {"precision": 12, "seed": 0},
        ...                               "HyperLogLog", {"precision": 14, "seed": 0})
        >>> str(err)
        'cannot merge HyperLogLog(precision=12, seed=0) with HyperLogLog(precision=14, seed=0)'
    """

    def __init__(
        self,
        left_kind: str,
        left_params: Mapping[str, Any],
        right_kind: str,
        right_params: Mapping[str, Any],
    ) -> None:
        self.left_kind = left_kind
        self.left_params = dict(left_params)
        self.right_kind = right_kind
        self.right_params = dict(right_params)
        super().__init__(
            f"cannot merge {_describe(left_kind, left_params)} "
            f"with {_describe(right_kind, right_params)}"
        )


class SketchFormatError(SketchError):
    """Bytes that are not a valid serialised sketch of the expected kind and version."""


class InvalidParameterError(SketchError, ValueError):
    """A sketch parameter (precision, width, error rate, seed, ...) is out of range."""


class UnsupportedInputError(SketchError, TypeError):
    """Values of a type the shared hash does not define (e.g. decimals, nested lists)."""

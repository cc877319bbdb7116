"""QuantileSketch bytes across mappings: the log mapping's version 2 bytes, fixed.

``data/quantiles_v2.json`` holds bytes written by the log mapping before the cells
mapping existed, with the values they summarise (``float.hex``, each repeated
``repeat[i]`` times when given): the same values must still give the same bytes, and
the bytes must still read back to an equal sketch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sketches
from sketches import QuantileSketch


def _v2_cases() -> list[dict[str, Any]]:
    with open(Path(__file__).parent / "data" / "quantiles_v2.json", encoding="utf-8") as fh:
        return json.load(fh)["cases"]


def _values(case: dict[str, Any]) -> np.ndarray:
    values = np.array([float.fromhex(v) for v in case["values"]], dtype=np.float64)
    return np.repeat(values, case["repeat"]) if "repeat" in case else values


@pytest.mark.parametrize("case", _v2_cases(), ids=lambda c: c["name"])
def test_log_mapping_bytes_are_unchanged(case: dict[str, Any]) -> None:
    blob = bytes.fromhex(case["hex"])
    assert blob[3] == 2
    fresh = QuantileSketch(**case["params"]).update(_values(case))
    assert fresh.to_bytes().hex() == case["hex"]
    old = QuantileSketch.from_bytes(blob)
    assert old == fresh and old.to_bytes() == blob
    assert sketches.from_bytes(blob) == fresh

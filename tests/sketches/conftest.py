"""Fixtures for the sketch tests; the factories live in ``sketch_helpers``."""

from __future__ import annotations

import pytest
from sketch_helpers import KINDS, LAW_KINDS, KindSpec


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> KindSpec:
    """Each sketch kind in turn (small parameters, see ``sketch_helpers.KINDS``)."""
    return request.param


@pytest.fixture(params=LAW_KINDS, ids=[k.name for k in LAW_KINDS])
def law_kind(request: pytest.FixtureRequest) -> KindSpec:
    """Each kind of ``kind``, and the quantile sketches (numbers only) of each mapping."""
    return request.param

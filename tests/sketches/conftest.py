"""Fixtures for the sketch tests; the factories live in ``sketch_helpers``."""

from __future__ import annotations

import pytest
from sketch_helpers import KINDS, KindSpec


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> KindSpec:
    """Each sketch kind in turn (small parameters, see ``sketch_helpers.KINDS``)."""
    return request.param

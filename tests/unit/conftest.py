"""Unit tests run under a time limit: a decoder or a wait that loops forever fails its test
instead of hanging the suite (the property-based tests included)."""
from __future__ import annotations

import pytest

from helpers import time_limited

LIMIT_SECONDS = 60


@pytest.fixture(autouse=True)
def time_limit():
    with time_limited(LIMIT_SECONDS):
        yield

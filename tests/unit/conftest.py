"""Unit tests run under a time limit: a decoder or a wait that loops forever fails its test
instead of hanging the suite (the property-based tests included)."""
from __future__ import annotations

import signal

import pytest

LIMIT_SECONDS = 60


@pytest.fixture(autouse=True)
def time_limit():
    def expired(*_):
        raise TimeoutError(f"the test ran past its {LIMIT_SECONDS} s limit")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(LIMIT_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)

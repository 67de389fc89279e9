"""The suite itself: plain `pytest` from the clone collects every test (no two test files share
a module name, every import resolves), as scripts/test runs it folder by folder."""
from __future__ import annotations

import subprocess
import sys

from helpers import ROOT


def test_plain_pytest_collects_the_whole_suite():
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " error" not in done.stdout.splitlines()[-1]


def test_a_test_that_hangs_fails_on_its_time_limit():
    """The limit the unit and adversary suites put on every test (helpers.time_limited)."""
    import time

    import pytest

    from helpers import TookTooLong, time_limited

    started = time.monotonic()
    with pytest.raises(TookTooLong), time_limited(1):
        while True:
            time.sleep(0.05)
    assert time.monotonic() - started < 3

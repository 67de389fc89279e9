"""The suite itself: plain `pytest` from the clone collects every test (no two test files share
a module name, every import resolves), and so do its folders named together in any order, as
scripts/test runs them folder by folder."""
from __future__ import annotations

import subprocess
import sys

from helpers import ROOT


def test_plain_pytest_collects_the_whole_suite():
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " error" not in done.stdout.splitlines()[-1]


def test_folders_collect_together_in_any_order():
    """No test imports a conftest by name: pytest loads each folder's conftest.py as module
    `conftest`, so with two folders in one run such an import found the other folder's (the
    adversary suite failed to collect beside the molecule checks)."""
    folders = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").iterdir()
                     if path.is_dir() and (path / "conftest.py").exists())
    for order in (folders, folders[::-1]):
        done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               *order], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (order, done.stdout[-3000:] + done.stderr[-2000:])


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

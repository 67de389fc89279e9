"""Every benchmark script BENCHMARKS.md tells a reader to run starts: `--help` answers. A script
that imported a test helper without what the test suite puts on the path (the collection) broke
while every test passed (bench/fleet.py). The *_harness.py files run on lab hosts with their
arguments, not from a shell, and are left out."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent.parent / "bench"
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if not p.name.endswith("_harness.py"))


def test_every_script_is_found():
    assert "fleet.py" in SCRIPTS and len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_script_starts(script):
    done = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                          timeout=60, check=False, cwd=BENCH.parent)
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stderr[-2000:]

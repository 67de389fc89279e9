"""The dashboard's and the alert rules' unit matchers (units.unit_matcher) as the real
VictoriaMetrics reads them: for globs with odd brackets, ranges and backslashes, the series a
matcher selects are the units fnmatch (and the heartbeat's glob_matches) matches, or glibc's
fnmatch(3) where CPython reads a `!` after a reversed range as a negation (tests/glob_oracle.py)."""
from __future__ import annotations

import time
import urllib.request

import pytest

from glob_oracle import cpython_negates_a_literal_bang, fnmatch_oracle, glibc_fnmatch
from helpers import load_heartbeat

hb = load_heartbeat()
NAMES = ["foo[.service", "a].service", "ab.service", "a-.service", "a\\x2db.service", "b.service",
         "^x.timer", "ax.timer", "-x.timer", "\\x.timer", "!x.timer"]
GLOBS = ["foo[.service", "a[]b].service", "x[z-a].service", "[!z-a].service", "[a\\-]x.timer", "a\\x2d*",
         "[^a]x.timer", "[!a]x.timer", "a?.service", "*[.]service", "[c-a!]x.timer"]


@pytest.fixture(scope="module")
def stored(victoria):
    """One series per name, with a label of its own (host) so no other test's series match."""
    host = f"matchers-{time.time_ns()}"
    lines = "".join(f'matcher_probe{{host="{host}",unit="{name.replace(chr(92), chr(92) * 2)}"}} 1\n'
                    for name in NAMES)
    request = urllib.request.Request(f"{victoria.url}/api/v1/import/prometheus", data=lines.encode())
    urllib.request.urlopen(request, timeout=10).read()
    victoria.wait_for(f'count(matcher_probe{{host="{host}"}}) == {len(NAMES)}')
    return victoria, host


@pytest.mark.parametrize("glob", GLOBS)
def test_a_globs_matcher_selects_in_victoriametrics_what_fnmatch_matches(stored, glob):
    victoria, host = stored
    matcher = hb.unit_matcher(glob)
    selected = {labels["unit"] for labels, _ in victoria.query(f'matcher_probe{{host="{host}",{matcher}}}')}
    unit = hb.normalise_unit_pattern(glob)
    oracle = glibc_fnmatch if cpython_negates_a_literal_bang(unit) else fnmatch_oracle
    assert selected == {name for name in NAMES if oracle(name, unit)}, matcher
    assert selected == {name for name in NAMES if hb.glob_matches(name, hb.glob_tokens(unit))}

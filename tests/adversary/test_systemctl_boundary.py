"""The systemctl path against a hostile `systemctl`: garbage in its answers is one clean line, never a crash."""
from __future__ import annotations

import pytest

from blackbox import UNIT_ARGS, assert_bus_values, assert_clean, assert_within

T = 3.0

GARBAGE_LINES = {  # raw bytes of a line of `systemctl list-units` (it prints them for failed units too)
    "nul-in-name": b"bad\x00name.service loaded failed failed Bad",
    "invalid-utf8": b"caf\xe9\xff.service loaded failed failed Bad",
    "looks-like-an-option": b"--help loaded failed failed Bad",
    "double-dash": b"-- loaded failed failed Bad",
    "carriage-return": b"cr\rname.service loaded failed failed Bad",
    "tab-inside": b"tab\tname.service loaded failed failed Bad",
    "escape-sequence": b"\x1b[31mred.service loaded failed failed Bad",
    "only-a-name": b"lonely.service",
    "two-fields": b"half.service loaded",
    "huge-name": b"x" * 200_000 + b".service loaded failed failed Bad",
    "non-ascii-utf8": "ünïcödé.service loaded failed failed Bad".encode(),
    "bullet-marker": "\u25cf dot.service loaded failed failed Bad".encode(),
}


@pytest.mark.parametrize("source", ["systemctl", "fallback"])
@pytest.mark.parametrize("garbage", GARBAGE_LINES)
def test_garbage_unit_name_from_systemctl_is_clean(run, make_tools, garbage, source):
    """source fallback: the same answer, reached because the bus socket is missing."""
    tools = make_tools(extra_lines=[GARBAGE_LINES[garbage].decode("latin-1")])
    extra = ("--source", "systemctl") if source == "systemctl" else ()
    res = run(*UNIT_ARGS, *extra, "--dry-run", "--timeout", T, tools=tools)
    assert_within(res, T)
    assert_clean(res)
    if res.rc == 0:
        assert "\x00" not in res.stdout, "a NUL byte made it into the output"
        assert_bus_values(res)
        for s in res.samples:
            assert all("\n" not in v and "\r" not in v for v in s.labels.values()), s


def test_systemctl_missing_and_no_bus_is_one_line(run):
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T)
    assert_within(res, T)
    assert_clean(res, ok=False)


def test_systemctl_failing_is_one_line(run, make_tools):
    tools = make_tools(behaviour={"list-units": {"mode": "fail"}})
    res = run(*UNIT_ARGS, "--source", "systemctl", "--dry-run", "--timeout", T, tools=tools)
    assert_within(res, T)
    assert_clean(res, ok=False)


def test_fallback_gives_the_same_values_with_one_warning(run, make_tools):
    tools = make_tools()
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, tools=tools)
    assert_clean(res, ok=True)
    assert len(res.warnings) == 1 and "systemctl" in res.warnings[0], res
    assert_bus_values(res)

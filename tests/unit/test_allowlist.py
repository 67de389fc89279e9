"""The allowlist: what it accepts, and the one-line error naming the bad entry and line."""
from __future__ import annotations

import pytest
from glob_oracle import cpython_negates_a_literal_bang, fnmatch_oracle, glibc_fnmatch
from hypothesis import assume, given, settings
from hypothesis import strategies as st


def test_comments_blanks_globs_templates_and_bare_names(heartbeat):
    text = """# load-bearing units
k3s                      # a bare name means k3s.service, as for systemctl
coily-audit-dashboard.timer
*-server.service
getty@*.service
getty@tty1.service

foo\\x2dbar.service
"""
    assert heartbeat.parse_allowlist(text, "allow.txt") == [
        "k3s.service", "coily-audit-dashboard.timer", "*-server.service", "getty@*.service",
        "getty@tty1.service", "foo\\x2dbar.service"]


@pytest.mark.parametrize("line, reason", [
    ("foo bar.service", "character ' ' is not allowed"),
    ("foo/bar.service", "character '/' is not allowed"),
    ("foo.servcie", "unknown unit type '.servcie'"),
    ("@foo.service", "cannot start with"),
    (".hidden.service", "cannot start with"),
    ("x" * 300 + ".service", "longer than 255"),
])
def test_bad_entry_names_file_line_and_entry(heartbeat, line, reason):
    text = f"good.service\n# comment\n{line}\n"
    with pytest.raises(heartbeat.HeartbeatError) as caught:
        heartbeat.parse_allowlist(text, "/etc/systemd-heartbeat/allowlist")
    message = str(caught.value)
    assert message.startswith(f"/etc/systemd-heartbeat/allowlist:3: bad allowlist entry {line!r}")
    assert reason in message and "\n" not in message


def test_unit_flag_is_checked_the_same_way(heartbeat):
    with pytest.raises(heartbeat.HeartbeatError, match=r"--unit: bad unit 'a;b.service'"):
        heartbeat.check_unit_patterns(["ok.service", "a;b.service"], "--unit")


def test_root_slice_name_is_valid(heartbeat):
    assert heartbeat.unit_pattern_problem("-.slice") is None
    assert heartbeat.unit_pattern_problem("-.mount") is None


def test_the_roles_filters_are_the_heartbeats_reading_of_a_name(heartbeat):
    """plugins/filter/systemd_units.py (the alert rules' overrides, preflight) is units.py."""
    from ansible_collections.coilysiren.systemd_monitoring.plugins.filter import systemd_units

    filters = systemd_units.FilterModule().filters()
    for entry in ("k3s", "getty@tty1", "*-backup.timer", "foo\\x2dbar.timer", "a[!b]?.timer"):
        assert filters["systemd_unit_name"](entry) == heartbeat.normalise_unit_pattern(entry)
        assert filters["systemd_unit_matcher"](entry) == heartbeat.unit_matcher(entry)
        assert filters["systemd_unit_problem"](entry) == ""
    assert filters["systemd_unit_problem"]("bad name.timer").startswith("character ' '")
    assert filters["systemd_unit_matcher"]("k3s") == 'unit="k3s.service"'
    assert filters["systemd_unit_matcher"]("*-backup.timer") == 'unit=~".*-backup[.]timer"'


GLOB_ALPHABET = "ab.-*?[]!\\@"


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=GLOB_ALPHABET, max_size=10), st.text(alphabet="ab.-]![\\@", max_size=10))
def test_globs_match_what_fnmatch_matches(pattern, name):
    """The heartbeat's own glob matcher (fnmatch would cost a tick 5 ms of imports) against
    Python's fnmatch.fnmatchcase, the oracle, on patterns made of every glob character."""
    assume(not cpython_negates_a_literal_bang(pattern))

    from systemd_heartbeat.units import glob_matches, glob_tokens

    assert glob_matches(name, glob_tokens(pattern)) == fnmatch_oracle(name, pattern), (pattern, name)


@pytest.mark.parametrize("pattern,name,expected", [
    ("k3s*", "k3s.service", True), ("game-*.service", "game-minecraft.service", True),
    ("game-*.service", "game-.timer", False), ("*@*.service", "getty@tty1.service", True),
    ("[!a]*", "a.service", False), ("[]a]x", "]x", True), ("[a-c]", "b", True), ("[c-a]", "b", False),
    ("[a", "[a", True), ("*a*a*a*a*a*b", "a" * 60, False),
])
def test_globs_in_allowlists(pattern, name, expected):
    from systemd_heartbeat.units import glob_matches, glob_tokens

    assert glob_matches(name, glob_tokens(pattern)) is expected


@pytest.mark.parametrize("pattern", ["[?-.!]", "[z-a!]", "[z-a!x]", "[b-a!]*.timer", "x[c-a!-]"])
def test_a_bang_after_a_reversed_range_is_itself_as_in_glibc(pattern):
    """Where CPython's fnmatch reads a `!` left first by a dropped reversed range as a negation
    (tests/glob_oracle.py), the heartbeat and the dashboard's matcher read it as glibc's
    fnmatch(3) does (a CI run's hypothesis found `[?-.!]*.timer`)."""
    from systemd_heartbeat.units import glob_matches, glob_tokens, unit_matcher

    assert cpython_negates_a_literal_bang(pattern)
    for name in ("!", "x", "-", "a", "z", "?", ".", "!.timer", "x.timer", "x!", "x-", "xa"):
        expected = glibc_fnmatch(name, pattern)
        assert glob_matches(name, glob_tokens(pattern)) is expected, (pattern, name)
        assert bool(matcher_regex(unit_matcher(pattern)).fullmatch(name)) is expected, (pattern, name)


def matcher_regex(matcher: str):
    """The regex of a `unit=~"..."` matcher, as VictoriaMetrics reads it: the double-quoted
    string unescaped, anchored at both ends (Python's re stands in for RE2 on these constructs)."""
    import re

    assert matcher.startswith('unit=~"') and matcher.endswith('"')
    return re.compile(matcher[7:-1].replace("\\\\", "\\"))


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=GLOB_ALPHABET, min_size=1, max_size=10).map(lambda p: p + "*.timer"),
       st.text(alphabet="ab.-]![\\@", max_size=10))
def test_a_globs_matcher_selects_what_the_heartbeat_matched(pattern, stem):
    """The dashboard's and the alert rules' regex for a glob (units.unit_matcher) against
    fnmatch.fnmatchcase, the oracle: a row or a rule means the units the heartbeat reported,
    also for globs with unclosed brackets, reversed ranges and backslashes."""
    from systemd_heartbeat.units import unit_matcher

    assume(not cpython_negates_a_literal_bang(pattern))

    name = stem + "x.timer"
    assert bool(matcher_regex(unit_matcher(pattern)).fullmatch(name)) == fnmatch_oracle(name, pattern), \
        (pattern, name, unit_matcher(pattern))


@pytest.mark.parametrize("pattern", ["foo[.service", "a[]b].service", "x[z-a].service", "x[!z-a].service",
                                     "[a\\-]x.timer", "a\\*.timer", "[^a]*.timer"])
def test_matchers_of_odd_globs_are_valid_regexes(pattern):
    from systemd_heartbeat.units import unit_matcher

    matcher_regex(unit_matcher(pattern))  # compiles

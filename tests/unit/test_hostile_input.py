"""Hostile and odd input: arbitrary text is parsed or rejected with a clean one-line message,
never a traceback (property-based, hypothesis); extreme sizes; units that come and go."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import load_heartbeat

hb = load_heartbeat()

ANY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=2000)


@given(ANY_TEXT)
def test_parse_show_never_raises(text):
    for block in hb.parse_show(text):
        assert isinstance(block, dict)


@given(ANY_TEXT)
def test_parse_list_units_never_raises(text):
    rows, warnings = hb.parse_list_units(text)
    assert all(len(row) == 4 and hb.is_unit_name(row[0]) for row in rows)
    assert all("\n" not in warning for warning in warnings)


@given(ANY_TEXT)
def test_value_parsers_never_raise(text):
    assert hb.parse_timestamp(text) is None or isinstance(hb.parse_timestamp(text), float)
    assert hb.parse_timespan(text) is None or isinstance(hb.parse_timespan(text), float)
    hb.parse_timer_settings([text])


@given(ANY_TEXT)
def test_allowlist_is_parsed_or_rejected_with_one_line(text):
    try:
        patterns = hb.parse_allowlist(text, "allowlist")
    except hb.HeartbeatError as error:
        message = str(error)
        assert message.startswith("allowlist:") and "\n" not in message
    else:
        assert all(hb.unit_pattern_problem(p) is None for p in patterns)


# what a property can hold: systemctl's text, or D-Bus's raw numbers (uint64 and int32)
ANY_VALUE = st.one_of(ANY_TEXT, st.integers(min_value=-2**31, max_value=2**64 - 1))
# a timer setting: systemctl's "{ base=value ; ... }" text, or D-Bus's (base, value, next) struct
ANY_TIMER_SETTING = st.one_of(ANY_TEXT, st.tuples(ANY_TEXT, st.one_of(ANY_TEXT, st.integers(0, 2**64 - 1)),
                                                  st.integers(0, 2**64 - 1)))


@given(st.lists(st.tuples(st.sampled_from(["Unit", "LoadState", "ActiveState", "SubState", "Type",
                                           *hb.SHOW_PROPERTIES]), ANY_VALUE), max_size=30),
       st.sampled_from(["a.service", "b.timer", "c.socket", "d"]), st.lists(ANY_TIMER_SETTING, max_size=3))
@settings(max_examples=300)
def test_shaping_any_property_values_never_raises(pairs, name, settings_):
    unit = dict(pairs)
    unit["Unit"] = name
    for key in ("TimersMonotonic", "TimersCalendar"):
        if key in unit:
            unit[key] = [unit[key], *settings_]
    snapshot = hb.Snapshot([unit], None, 0.01, 1795807843.0, 500.0)
    samples = hb.shape(snapshot, "h")
    body = hb.encode_request(samples, {"host": "h"}, 1)
    assert isinstance(body, bytes)


# Names as systemd-escape writes them: '/' becomes '-', any byte outside [A-Za-z0-9:_.] (and a
# leading '.') becomes \xNN.
def systemd_escape(raw: str) -> str:
    out = []
    for index, char in enumerate(raw):
        if char.isascii() and (char.isalnum() or char in ":_" or (char == "." and index > 0)):
            out.append(char)
        elif char == "/":
            out.append("-")
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode("utf-8"))
    return "".join(out)


@given(st.text(min_size=1, max_size=60), st.sampled_from(hb.UNIT_SUFFIXES))
def test_every_escaped_name_is_accepted_and_round_trips(raw, suffix):
    name = systemd_escape(raw) + suffix
    if len(name) > hb.UNIT_NAME_MAX:
        return
    assert hb.unit_pattern_problem(name) is None, name
    assert hb.parse_allowlist(name + "\n", "a") == [name]
    show = f"Id={name}\nLoadState=loaded\nActiveState=active\nSubState=running\n"
    assert hb.parse_show(show)[0]["Id"] == name


def test_five_thousand_entry_allowlist():
    names = [f"unit-{i:05d}.service" for i in range(5000)]
    patterns = hb.parse_allowlist("\n".join(names) + "\n", "big")
    assert len(patterns) == 5000
    calls = []

    def fake_run(argv, deadline):
        calls.append(argv[1])
        if argv[1] == "list-units":
            return ""
        units = argv[argv.index("--") + 1:]
        return "\n".join(f"Id={u}\nLoadState=loaded\nActiveState=active\nSubState=running\nNRestarts=0\n"
                         for u in units)

    snapshot = hb.collect(patterns, hb.Deadline(5), run=fake_run)
    assert calls == ["list-units", "show"] and len(snapshot.units) == 5000
    samples = hb.shape(snapshot, "h")
    assert len(hb.encode_request(samples, {"host": "h"}, 1)) > 5000 * 50


def test_a_one_megabyte_systemctl_answer():
    block = "Id=x.service\nLoadState=loaded\nActiveState=active\nSubState=running\nJunk=" + "y" * 200 + "\n"
    text = "\n".join([block] * (1_048_576 // len(block) + 1))
    assert len(text) > 1_048_576
    assert len(hb.parse_show(text)) == 1_048_576 // len(block) + 1


def test_a_unit_that_disappears_between_two_ticks_gets_its_series_ended(tmp_path):
    def run_with(units):
        def fake_run(argv, deadline):
            if argv[1] == "list-units":
                return "".join(f"{u} loaded failed failed {u}\n" for u in units)
            return "\n".join(f"Id={u}\nLoadState=loaded\nActiveState=failed\nSubState=failed\nNRestarts=2\n"
                             f"ExecMainStatus=1\nExecMainCode=1\n" for u in argv[argv.index("--") + 1:])
        return fake_run

    first, _, memory = hb.tick([], "h", str(tmp_path), hb.Deadline(5), "systemctl", run_with(["gone.service", "stays.service"]))
    hb.remember(str(tmp_path), hb.pushed_memory(first, {}, {}))
    hb.unlock_state(str(tmp_path))  # as main() does at the end of every tick
    second, _, memory = hb.tick([], "h", str(tmp_path), hb.Deadline(5), "systemctl", run_with(["stays.service"]))
    second += hb.staleness_markers(memory, second)
    ended = sorted(name for name, _, labels, value in second
                   if value is None and dict(labels).get("unit") == "gone.service")
    assert ended == ["systemd_unit_active", "systemd_unit_info", "systemd_unit_last_exit_code",
                     "systemd_unit_last_exit_status", "systemd_unit_restart_count_total"]
    assert not any(value is None and dict(labels).get("unit") == "stays.service" for _, _, labels, value in second)


def test_unreadable_or_corrupt_memory_is_ignored(tmp_path):
    import marshal

    import zlib

    def with_checksum(data: bytes) -> bytes:
        return zlib.crc32(data).to_bytes(4, "little") + data

    empty = {"series": [], "intervals": {}, "calendar": {}, "spool_dropped": {}, "units": {}}
    (tmp_path / hb.MEMORY_FILE).write_bytes(b"{not marshal")
    assert hb.load_memory(str(tmp_path)) == empty
    (tmp_path / hb.MEMORY_FILE).write_bytes(with_checksum(b"{not marshal"))
    assert hb.load_memory(str(tmp_path)) == empty
    odd = marshal.dumps({"series": [["x"], 5, None, ["a", "gauge", 7]], "intervals": 3})
    (tmp_path / hb.MEMORY_FILE).write_bytes(with_checksum(odd))
    assert hb.staleness_markers(hb.load_memory(str(tmp_path)), []) == []
    assert hb.load_memory(str(tmp_path))["intervals"] == {}  # wrong type: dropped
    (tmp_path / hb.MEMORY_FILE).write_bytes(with_checksum(marshal.dumps([1, 2]))[:-1])  # truncated
    assert hb.load_memory(str(tmp_path)) == empty
    # a length that would make marshal allocate for a minute, caught by the checksum
    (tmp_path / hb.MEMORY_FILE).write_bytes(b"\0\0\0\0(\xff\xff\xff\x7f")
    assert hb.load_memory(str(tmp_path)) == empty


def test_memory_written_by_an_older_version_is_read_once_then_replaced(tmp_path):
    (tmp_path / hb.LEGACY_MEMORY_FILE).write_text('{"series": [["systemd_unit_active", "gauge", '
                                                  '[["unit", "a.service"], ["host", "h"]]]]}')
    memory = hb.load_memory(str(tmp_path))
    assert hb.staleness_markers(memory, []) == [
        ("systemd_unit_active", "gauge", (("unit", "a.service"), ("host", "h")), None)]
    hb.remember(str(tmp_path), hb.pushed_memory([("systemd_unit_active", "gauge", (("unit", "b.service"),), 1.0)],
                                                {}, {}))
    assert sorted(p.name for p in tmp_path.iterdir()) == [hb.MEMORY_FILE]
    assert hb.load_memory(str(tmp_path))["series"] == [("systemd_unit_active", "gauge", (("unit", "b.service"),))]


@given(st.binary(max_size=300))
def test_any_bytes_in_the_memory_file_load_or_are_ignored(data):
    import tempfile

    with tempfile.TemporaryDirectory() as state:
        with open(os.path.join(state, hb.MEMORY_FILE), "wb") as handle:
            handle.write(data)
        memory = hb.load_memory(state)
        assert isinstance(memory, dict)
        hb.staleness_markers(memory, [])


def crc_framed(body: bytes) -> bytes:
    import zlib

    return zlib.crc32(body).to_bytes(4, "little") + body


HUGE = (2 ** 31 - 1).to_bytes(4, "little")


def test_under_the_services_cap_a_crafted_count_fails_at_once_and_sets_no_cap(tmp_path):
    """The service runs under LimitAS= (the role's unit file): the heartbeat sees it, sets no cap
    of its own (no `resource` import), and a list or tuple that claims 2**31 elements behind a
    valid CRC is a MemoryError at once, not seconds of allocating."""
    import subprocess
    import sys

    from helpers import ROOT

    script = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({hb.ADDRESS_SPACE_CAPPED}, {hb.ADDRESS_SPACE_CAPPED}))
del sys.modules["resource"]
sys.path.insert(0, {str(ROOT / "plugins/module_utils")!r})
from systemd_heartbeat.state import load_memory
for case in sys.argv[1:]:
    assert load_memory(case)["series"] == [], case
print("resource" in sys.modules)
"""
    cases = []
    for name, code in (("list", b"["), ("tuple", b"("), ("list-ref", b"\xdb"), ("tuple-ref", b"\xa8")):
        (tmp_path / name).mkdir()
        (tmp_path / name / hb.MEMORY_FILE).write_bytes(crc_framed(code + HUGE + b"N"))
        cases.append(str(tmp_path / name))
    done = subprocess.run([sys.executable, "-I", "-c", script, *cases], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_the_services_cap_is_the_one_the_heartbeat_trusts():
    from helpers import ROOT

    unit = (ROOT / "roles/systemd_monitoring/templates/systemd-heartbeat.service.j2").read_text()
    (line,) = [line for line in unit.splitlines() if line.startswith("LimitAS=")]
    assert line == f"LimitAS={hb.ADDRESS_SPACE_CAPPED >> 20}M"


def test_marshal_allocates_ahead_only_for_lists_and_tuples():
    """Why state.CONTAINER_CODES holds list and tuple codes only: a set, a frozenset, a string or
    a long that claims 2**31 elements costs marshal nothing (it reads those element by element,
    or checks the length against the data left). If a Python changes that, this fails."""
    import marshal

    for code in b"<>\xbc\xbeuastAl":
        with pytest.raises((EOFError, ValueError)):
            marshal.loads(bytes([code]) + HUGE + b"N")
    assert hb.may_overallocate(b"[" + HUGE) and hb.may_overallocate(b"(" + HUGE)
    assert not hb.may_overallocate(b"<" + HUGE)


def test_one_variable_reads_as_the_whole_environment_does(monkeypatch):
    """syscalls.getenv (the bus address) and syscalls.environment (the flags' defaults) agree
    with os.environ, set or unset, non-ASCII included."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/run/dbus/ä")
    monkeypatch.delenv("SYSTEMD_HEARTBEAT_NOT_SET", raising=False)
    for name in ("DBUS_SYSTEM_BUS_ADDRESS", "SYSTEMD_HEARTBEAT_NOT_SET", "PATH"):
        assert hb.getenv(name) == hb.environment().get(name, "") == os.environ.get(name, "")

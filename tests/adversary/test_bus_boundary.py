"""The D-Bus client against a hostile system bus: odd but legal traffic is read, bad traffic is one clean line.

Each test gives the heartbeat a fake systemctl on PATH too: whether the tick fell back to it is
visible in its call log (assert_no_fallback), and a fallback must still give the right values.
"""
from __future__ import annotations

import math
import os

import pytest

from blackbox import (
    UNIT_ARGS,
    assert_bus_values,
    assert_clean,
    assert_no_fallback,
    assert_within,
)
from fakebus import (
    LISTING_CALLS,
    SERVICE_IFACE,
    TIMER_IFACE,
    UNIT_IFACE,
    UNIT_LIST_SIG,
    body_bytes,
    method_call_bytes,
    member_of,
    raw_message,
    reply_fields,
    signal_bytes,
    stray_reply_bytes,
)

T = 2.0

UNSOLICITED = {
    "signal": lambda endian: lambda serial: signal_bytes(serial, endian),
    "signal-with-struct-body": lambda endian: lambda serial: signal_bytes(
        serial, endian, "a(ssssssouso)u",
        ([("x.service", "", "loaded", "active", "running", "", "/org/x", 0, "", "/")], 7),
        member="Whatever"),
    "method-call": lambda endian: lambda serial: method_call_bytes(serial, endian),
    "reply-to-unsent-serial": lambda endian: lambda serial: stray_reply_bytes(serial, 0x7FFFFFF0, endian),
    "error-to-unsent-serial": lambda endian: lambda serial: stray_reply_bytes(
        serial, 0x7FFFFFF1, endian, error=True),
}


def dbus_tick(run, bus, tools, *extra, timeout=T):
    return run(*UNIT_ARGS, "--dry-run", "--timeout", timeout, *extra, bus=bus, tools=tools)


def assert_clean_tick(run, bus, tools):
    """In time, one clean line or success; on success (a fallback, maybe) the right values."""
    res = dbus_tick(run, bus, tools)
    assert_within(res, T)
    assert_clean(res)
    if res.rc == 0:
        assert_bus_values(res)
    return res


def test_plain_tick_over_the_bus(run, bus, make_tools):
    tools = make_tools()
    res = dbus_tick(run, bus, tools)
    assert_clean(res, ok=True)
    assert_no_fallback(res, tools)
    assert_bus_values(res, bus)
    uid_hex = str(os.getuid()).encode().hex().encode()
    assert bus.auth_lines[0] == b"AUTH EXTERNAL " + uid_hex, bus.auth_lines


@pytest.mark.parametrize("endian", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("where", ["before_hello", "after_hello", "between"])
@pytest.mark.parametrize("kind", UNSOLICITED)
def test_unsolicited_messages_are_skipped(run, bus, make_tools, kind, where, endian):
    setattr(bus, where, [UNSOLICITED[kind](endian)])
    tools = make_tools()
    res = dbus_tick(run, bus, tools)
    assert_clean(res, ok=True)
    assert_no_fallback(res, tools)
    assert_bus_values(res, bus)
    assert "ghost.service" not in res.stdout, "a reply to a call never made was taken as an answer"


def test_big_endian_replies_are_read(run, bus, make_tools):
    """The D-Bus spec lets a peer send either byte order; the values must be right either way."""
    bus.endian = ">"
    tools = make_tools()
    res = dbus_tick(run, bus, tools)
    assert_clean(res, ok=True)
    assert_bus_values(res)


def test_unknown_header_fields_are_ignored(run, bus, make_tools):
    """The D-Bus spec: header fields an implementation does not know must be ignored."""
    def hook(bus, call, replies):
        out = []
        for m in bus.systemd(call):
            sig = m.header.fields.get(8)
            fields = reply_fields(call.header.serial, sig) + [(200, "s", "future field"), (11, "u", 7)]
            if m.header.message_type.value == 3:
                fields.insert(0, (4, "s", m.header.fields[4]))
            out.append(raw_message(m.header.message_type.value, bus.next_serial(), fields,
                                   body_bytes(sig, m.body) if sig else b""))
        return out

    bus.hook = hook
    tools = make_tools()
    res = dbus_tick(run, bus, tools)
    assert_clean(res, ok=True)
    assert_no_fallback(res, tools)
    assert_bus_values(res, bus)


# --- replies of unexpected shape --------------------------------------------------------------

def listing_reply(fields_fn, body_fn=lambda sig: b""):
    """A hook replacing the reply to the first listing call."""
    done = []

    def hook(bus, call, replies):
        if member_of(call) in LISTING_CALLS and not done:
            done.append(call)
            return [raw_message(2, bus.next_serial(), fields_fn(call.header.serial), body_fn(call))]
        return None
    return hook


def wrong_listing(sig, value):
    return listing_reply(lambda rs: reply_fields(rs, sig), lambda call: body_bytes(sig, (value,)))


ROW = ("alpha.service", "d", "loaded", "active", "running", "", "/org/freedesktop/systemd1/unit/alpha_2eservice", 0, "", "/")

SHAPES = {
    "empty-reply-body": listing_reply(lambda rs: reply_fields(rs, None)),
    "empty-body-with-signature": listing_reply(lambda rs: reply_fields(rs, UNIT_LIST_SIG)),
    "reply-serial-as-string": listing_reply(
        lambda rs: [(5, "s", str(rs)), (6, "s", ":1.4242"), (8, "g", UNIT_LIST_SIG)],
        lambda call: body_bytes(UNIT_LIST_SIG, ([ROW],))),
    "reply-serial-as-uint64": listing_reply(
        lambda rs: [(5, "t", rs), (6, "s", ":1.4242"), (8, "g", UNIT_LIST_SIG)],
        lambda call: body_bytes(UNIT_LIST_SIG, ([ROW],))),
    "signature-as-string": listing_reply(
        lambda rs: [(5, "u", rs), (8, "s", UNIT_LIST_SIG)],
        lambda call: body_bytes(UNIT_LIST_SIG, ([ROW],))),
    "signature-as-uint32": listing_reply(
        lambda rs: [(5, "u", rs), (8, "u", 12)], lambda call: body_bytes(UNIT_LIST_SIG, ([ROW],))),
    "sender-as-array": listing_reply(
        lambda rs: [(5, "u", rs), (7, "as", ["a", "b"]), (8, "g", UNIT_LIST_SIG)],
        lambda call: body_bytes(UNIT_LIST_SIG, ([ROW],))),
    "error-name-as-uint32": listing_reply(
        lambda rs: [(4, "u", 3), (5, "u", rs), (8, "g", "s")], lambda call: body_bytes("s", ("x",))),
    "listing-as(ss)": wrong_listing("a(ss)", [("alpha.service", "loaded")]),
    "listing-as-strings": wrong_listing("as", ["alpha.service"]),
    "listing-one-field-short": wrong_listing("a(ssssssous)", [ROW[:9]]),
    "listing-one-field-more": wrong_listing("a(ssssssousou)", [ROW + (5,)]),
    "listing-as-one-string": wrong_listing("s", "alpha.service"),
    "listing-as-variant": wrong_listing("v", ("s", "alpha.service")),
    "listing-empty-struct-strings": wrong_listing(UNIT_LIST_SIG, [("",) * 6 + ("/",) + (0, "", "/")]),
}


def duplicate_replies(bus, call, replies):
    return replies + [r[:8] + (bus.next_serial()).to_bytes(4, "little" if r[:1] == b"l" else "big")
                      + r[12:] for r in replies]


@pytest.mark.parametrize("shape", list(SHAPES) + ["duplicate-replies"])
def test_reply_of_unexpected_shape_is_one_clean_line(run, bus, make_tools, shape):
    bus.hook = duplicate_replies if shape == "duplicate-replies" else SHAPES[shape]
    assert_clean_tick(run, bus, make_tools())


WRONG_PROPERTIES = {
    "NRestarts-as-string": ("alpha.service", SERVICE_IFACE, "NRestarts", ("s", "two")),
    "NRestarts-as-uint64": ("alpha.service", SERVICE_IFACE, "NRestarts", ("t", 2 ** 64 - 1)),
    "NRestarts-as-variant": ("alpha.service", SERVICE_IFACE, "NRestarts", ("v", ("u", 2))),
    "ExecMainStatus-as-array": ("alpha.service", SERVICE_IFACE, "ExecMainStatus", ("as", ["x"])),
    "ExecMainCode-as-double-nan": ("alpha.service", SERVICE_IFACE, "ExecMainCode", ("d", math.nan)),
    "StateChangeTimestamp-as-string": ("alpha.service", UNIT_IFACE, "StateChangeTimestamp", ("s", "yesterday")),
    "StateChangeTimestamp-as-bool": ("alpha.service", UNIT_IFACE, "StateChangeTimestamp", ("b", True)),
    "Type-as-uint32": ("alpha.service", SERVICE_IFACE, "Type", ("u", 1)),
    "LastTriggerUSec-as-string": ("tick.timer", TIMER_IFACE, "LastTriggerUSec", ("s", "now")),
    "TimersMonotonic-as-string": ("tick.timer", TIMER_IFACE, "TimersMonotonic", ("s", "1min")),
    "TimersMonotonic-wrong-struct": ("tick.timer", TIMER_IFACE, "TimersMonotonic", ("a(ss)", [("a", "b")])),
    "TimersCalendar-wrong-struct": ("tick.timer", TIMER_IFACE, "TimersCalendar", ("a(stt)", [("a", 1, 2)])),
    "NextElapseUSecMonotonic-huge": ("tick.timer", TIMER_IFACE, "NextElapseUSecMonotonic", ("t", 2 ** 64 - 1)),
    # properties of a unit that is not active (asked in a later round)
    "failed-Type-as-uint32": ("broken.service", SERVICE_IFACE, "Type", ("u", 1)),
    "failed-Type-as-array": ("broken.service", SERVICE_IFACE, "Type", ("as", ["oneshot"])),
    "failed-ActiveExitTimestamp-as-string": ("broken.service", UNIT_IFACE, "ActiveExitTimestamp", ("s", "x")),
    "failed-ActiveExitTimestamp-as-int32": ("broken.service", UNIT_IFACE, "ActiveExitTimestamp", ("i", -5)),
    "failed-ExecMainExitTimestamp-as-string": ("broken.service", SERVICE_IFACE, "ExecMainExitTimestamp", ("s", "x")),
    "failed-ExecMainStartTimestamp-as-double": ("broken.service", SERVICE_IFACE, "ExecMainStartTimestamp", ("d", 1.5)),
    "failed-ExecMainStatus-as-string": ("broken.service", SERVICE_IFACE, "ExecMainStatus", ("s", "3")),
}


@pytest.mark.parametrize("allowlisted", [True, False], ids=["allowlisted", "found-by-listing"])
@pytest.mark.parametrize("case", WRONG_PROPERTIES)
def test_property_of_the_wrong_type_is_one_clean_line(run, bus, make_tools, case, allowlisted):
    unit, iface, prop, value = WRONG_PROPERTIES[case]
    bus.units[unit].props[iface][prop] = value
    tools = make_tools()
    units = UNIT_ARGS if allowlisted else ("--host", "advhost", "--unit", "other", "--unit", "*.timer")
    res = run(*units, "--dry-run", "--timeout", T, bus=bus, tools=tools)
    assert_within(res, T)
    assert_clean(res)
    if res.rc == 0:  # a unit whose properties are fine keeps its values
        if unit == "broken.service":
            assert res.value("systemd_unit_active", unit="tick.timer", sub_state="waiting") == 1, res
        else:
            assert res.value("systemd_unit_last_exit_status", unit="broken.service") == 3, res
            assert res.value("systemd_unit_active", unit="broken.service", sub_state="failed") == 0, res


def test_truncated_reply_then_hang_up(run, bus, make_tools):
    def hook(bus, call, replies):
        if member_of(call) in LISTING_CALLS:
            return [replies[0][:len(replies[0]) // 2]]
        return None

    bus.hook = hook
    assert_clean_tick(run, bus, make_tools())


@pytest.mark.parametrize("hello", ["uint32", "empty"])
def test_hello_reply_of_the_wrong_shape(run, bus, make_tools, hello):
    original = bus.respond

    def respond(call):
        if member_of(call) == "Hello":
            sig, body = ("u", body_bytes("u", (7,))) if hello == "uint32" else (None, b"")
            return [raw_message(2, bus.next_serial(), reply_fields(call.header.serial, sig,
                                                                   sender="org.freedesktop.DBus"), body)]
        return original(call)

    bus.respond = respond
    assert_clean_tick(run, bus, make_tools())


# --- the bus address --------------------------------------------------------------------------

BAD_ADDRESSES = ["unix:path=/tmp/%zz", "unix:path=/tmp/%", "unix:path=/tmp/%4", "unix:path=/tmp/%00sock",
                 "unix:path=/tmp/%ff%fe", "unix:path=", "unix:", "", "tcp:host=127.0.0.1,port=1",
                 "garbage", "unix:path=/tmp/\udcff"]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_bad_bus_address_is_one_clean_line(run, make_tools, address):
    tools = make_tools()
    try:
        res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, tools=tools, bus_address=address)
    except (UnicodeEncodeError, ValueError):
        pytest.skip("address cannot be put in the environment")
    assert_within(res, T)
    assert_clean(res)
    if res.rc == 0:
        assert_bus_values(res)
        assert len(res.warnings) == 1, f"one warning line for the unusable bus\n{res}"


def test_percent_escaped_socket_path_is_used(run, short_dir, make_tools):
    from fakebus import FakeBus
    weird = short_dir / "b u%s,=;x"
    weird.mkdir()
    bus = FakeBus(str(weird / "s"))
    try:
        escaped = "".join(c if c.isalnum() or c in "/-_." else "%%%02x" % ord(c) for c in str(weird / "s"))
        tools = make_tools()
        res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, tools=tools, bus_address="unix:path=" + escaped)
        assert_clean(res, ok=True)
        assert_no_fallback(res, tools)
        assert_bus_values(res, bus)
    finally:
        bus.stop()


def test_refused_authentication_falls_back_with_one_warning(run, bus, make_tools):
    bus.auth = "reject"
    tools = make_tools()
    res = dbus_tick(run, bus, tools)
    assert_clean(res, ok=True)
    assert len(res.warnings) == 1, res
    assert tools.calls(), "systemctl was not asked"
    assert_bus_values(res)

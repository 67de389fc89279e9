"""The hand-written D-Bus wire format (bus_wire.py, read_bus.py), checked against jeepney, an
independent implementation of the protocol: what the heartbeat writes, jeepney parses to what
it meant; what jeepney writes (either byte order), the heartbeat decodes to the same values,
and anything that breaks the format is refused within a time limit. Exact values against a
real systemd are proven in tests/lab (D-Bus and systemctl read the same, on systemd 252 with
dbus-daemon and 257 with dbus-broker); the misbehaving-bus cases over a real socket are in
tests/adversary."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jeepney.low_level import Endianness, Header, HeaderFields, Message, MessageType, Parser

from helpers import load_heartbeat

hb = load_heartbeat()
ORDERS = [Endianness.little, Endianness.big]


def jeepney_message(kind: MessageType, signature: str, body: tuple, order=Endianness.little, serial: int = 7,
                    reply_to: int | None = None, error: str | None = None) -> bytes:
    fields = {}
    if reply_to is not None:
        fields[HeaderFields.reply_serial] = reply_to
    if error:
        fields[HeaderFields.error_name] = error
    if kind == MessageType.signal:
        fields.update({HeaderFields.path: "/org/freedesktop/systemd1", HeaderFields.interface: "a.b",
                       HeaderFields.member: "Changed"})
    if signature:
        fields[HeaderFields.signature] = signature
    return Message(Header(order, kind, 0, 1, 0, serial, fields), body).serialise(serial)


def heartbeat_decode(message: bytes, deadline=None):
    """(type, reply serial, values) as the heartbeat's reader gets them."""
    order, kind, body_start, end = hb.fixed_header(message, 0)
    assert end == len(message)
    fields = hb.header_fields(message[:body_start], order)
    return kind, fields.get(5), hb.decode_body(message, order, body_start, fields.get(8, ""), deadline)


def test_a_method_call_parses_in_jeepney_to_what_it_meant():
    message = hb.method_call(7, "/org/freedesktop/systemd1/unit/k3s_2eservice", hb.PROPERTIES_INTERFACE, "Get",
                             "ss", hb.marshal_strings(hb.SERVICE_INTERFACE, "NRestarts"))
    parser = Parser()
    parser.add_data(message)
    parsed = parser.get_next_message()
    assert parsed.header.serial == 7 and parsed.header.message_type == MessageType.method_call
    assert parsed.header.fields == {
        HeaderFields.path: "/org/freedesktop/systemd1/unit/k3s_2eservice",
        HeaderFields.interface: hb.PROPERTIES_INTERFACE, HeaderFields.member: "Get",
        HeaderFields.destination: "org.freedesktop.systemd1", HeaderFields.signature: "ss"}
    assert parsed.body == (hb.SERVICE_INTERFACE, "NRestarts")


def test_a_string_array_body_parses_in_jeepney():
    message = hb.method_call(3, hb.MANAGER_PATH, hb.MANAGER_INTERFACE, "ListUnitsByNames", "as",
                             hb.marshal_string_array(["failed", "a.service", "é.service"]))
    parser = Parser()
    parser.add_data(message)
    assert parser.get_next_message().body == (["failed", "a.service", "é.service"],)


LISTING_ROW = ("k3s.service", "k3s", "loaded", "active", "running", "", "/org/freedesktop/systemd1/unit/k3s_2eservice",
               0, "", "/")


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("signature, body", [
    ("a(ssssssouso)", ([LISTING_ROW, LISTING_ROW[:2] + ("not-found", "inactive", "dead") + LISTING_ROW[5:]],)),
    ("v", (("t", 1795818103059968),)),
    ("v", (("i", -1),)),
    ("v", (("u", 4),)),
    ("v", (("s", "oneshot"),)),
    ("v", (("a(stt)", [("OnUnitActiveUSec", 30_000_000, 99)]),)),
    ("v", (("a(sst)", [("OnCalendar", "*-*-* 06:00:00", 2**64 - 1)]),)),
    ("s", ("Unknown property",)),
    ("", ()),
])
def test_replies_jeepney_writes_decode_to_the_same_values(order, signature, body):
    message = jeepney_message(MessageType.method_return, signature, body, order, reply_to=5)
    expected = tuple(value[1] if signature == "v" else value for value in body)
    assert heartbeat_decode(message) == (2, 5, expected)


def test_an_error_reply_becomes_a_call_error():
    message = jeepney_message(MessageType.error, "s", ("Unknown property NRestarts",), reply_to=9,
                              error="org.freedesktop.DBus.Error.UnknownProperty")
    order, kind, body_start, _ = hb.fixed_header(message, 0)
    fields = hb.header_fields(message[:body_start], order)
    error = hb.reply_values(kind, order, message, body_start, fields, "v", None)
    assert (error.name, error.message) == ("org.freedesktop.DBus.Error.UnknownProperty", "Unknown property NRestarts")


def test_a_reply_of_another_signature_than_asked_is_an_error_not_a_value():
    message = jeepney_message(MessageType.method_return, "s", ("surprise",), reply_to=9)
    order, kind, body_start, _ = hb.fixed_header(message, 0)
    fields = hb.header_fields(message[:body_start], order)
    answer = hb.reply_values(kind, order, message, body_start, fields, "a(ssssssouso)", None)
    assert isinstance(answer, hb.BusCallError) and answer.name == "unexpected-signature"


# values of the types systemd's replies use, for jeepney to serialise
VALUES = {
    "s": st.text(max_size=30), "o": st.just("/org/freedesktop/systemd1/unit/a_2eservice"),
    "u": st.integers(0, 2**32 - 1), "i": st.integers(-2**31, 2**31 - 1), "t": st.integers(0, 2**64 - 1),
    "x": st.integers(-2**63, 2**63 - 1), "y": st.integers(0, 255), "b": st.booleans(),
}
SIGNATURES = ["a(ssssssouso)", "a(stt)", "a(sst)", "asu", "a(ybx)", "(sa(yt))"]


def values_of(signature: str):
    if signature in VALUES:
        return VALUES[signature]
    members = hb.complete_types(signature)
    if len(members) > 1:
        return st.tuples(*(values_of(m) for m in members))
    if signature.startswith("a"):
        return st.lists(values_of(signature[1:]), max_size=5)
    return st.tuples(*(values_of(m) for m in hb.complete_types(signature[1:-1])))


@settings(deadline=2000, max_examples=150)
@given(st.sampled_from(SIGNATURES).flatmap(lambda s: st.tuples(st.just(s), values_of(s))),
       st.sampled_from(ORDERS))
def test_any_value_jeepney_serialises_decodes_back(signature_and_value, order):
    signature, value = signature_and_value
    body = value if len(hb.complete_types(signature)) > 1 else (value,)
    message = jeepney_message(MessageType.method_return, signature, body, order, reply_to=3)
    assert heartbeat_decode(message) == (2, 3, tuple(body))


MALFORMED = (hb.Malformed, struct.error, IndexError, ValueError, RecursionError)


@settings(deadline=2000, max_examples=300)
@given(st.binary(min_size=16, max_size=300))
def test_garbage_is_refused_quickly(data):
    try:
        heartbeat_decode(data, hb.Deadline(1))
    except MALFORMED:
        pass
    except AssertionError:
        pass  # framing said the message is longer than the garbage


@settings(deadline=2000, max_examples=300)
@given(st.sampled_from(SIGNATURES), st.integers(0, 400), st.binary(min_size=1, max_size=8))
def test_a_corrupted_reply_is_refused_or_decoded_never_hangs(signature, where, garbage):
    message = bytearray(jeepney_message(MessageType.method_return, "a(ssssssouso)", ([LISTING_ROW] * 3,), reply_to=3))
    where %= len(message)
    message[where:where + len(garbage)] = garbage
    try:
        heartbeat_decode(bytes(message[:len(message)]), hb.Deadline(1))
    except MALFORMED:
        pass
    except AssertionError:
        pass


@pytest.mark.parametrize("signature", ["a()", "()", "a", "(s", "s)", "a{vs}", "a{s}", "a{sss}", "{ss}", "z",
                                       "a" * 40 + "s", "(" * 40 + "s" + ")" * 40])
def test_invalid_signatures_are_refused(signature):
    with pytest.raises(hb.Malformed):
        hb.complete_types(signature)


def test_an_empty_struct_array_cannot_loop():
    # a(): jeepney will not write it; by hand: a 16-byte array of structs of nothing
    body = b"\x03a()\0" + b"\0" * 3 + struct.pack("<I", 16) + b"\0" * 16
    message = jeepney_message(MessageType.method_return, "v", (("u", 1),), reply_to=3)
    order, kind, body_start, _ = hb.fixed_header(message, 0)
    forged = message[:4] + struct.pack("<I", len(body)) + message[8:body_start] + body
    with pytest.raises(MALFORMED):
        heartbeat_decode(forged)


def test_a_huge_array_is_cut_off_by_the_deadline():
    message = jeepney_message(MessageType.method_return, "a(y)", ([(0,)] * 300_000,), reply_to=3)
    with pytest.raises(hb.DeadlineExceeded):
        heartbeat_decode(message, hb.Deadline(0.05))


@pytest.mark.parametrize("field, value_signature, value", [(5, "s", "7"), (8, "s", "u"), (4, "u", 3)])
def test_header_fields_of_the_wrong_type_are_refused(field, value_signature, value):
    message = jeepney_message(MessageType.method_return, "", (), reply_to=3)
    order, kind, body_start, _ = hb.fixed_header(message, 0)
    encoded = (bytes((field, 1, ord(value_signature), 0)) + (
        struct.pack("<I", value) if value_signature == "u" else hb.marshal_strings(value)))
    forged = message[:12] + struct.pack("<I", len(encoded)) + encoded + b"\0" * (-len(encoded) % 8)
    with pytest.raises(hb.Malformed, match=f"header field {field} is not of type"):
        hb.header_fields(forged, "<")


def test_raw_microseconds_parse_like_systemctl_text():
    assert hb.parse_timestamp(1795818103_059968) == pytest.approx(1795818103.059968)
    assert hb.parse_timestamp(0) is None and hb.parse_timestamp(2**64 - 1) is None
    assert hb.parse_timespan(0) == 0.0 and hb.parse_timespan(2**64 - 1) is None


@pytest.mark.parametrize("address, path", [
    ("", "/run/dbus/system_bus_socket"),
    ("unix:path=/run/dbus/system_bus_socket", "/run/dbus/system_bus_socket"),
    ("tcp:host=127.0.0.1,port=1;unix:path=/srv/my%20bus", "/srv/my bus"),
    ("unix:abstract=foo", "/run/dbus/system_bus_socket"),
])
def test_system_bus_path(address, path):
    assert hb.system_bus_path({"DBUS_SYSTEM_BUS_ADDRESS": address}) == path


@pytest.mark.parametrize("address", ["unix:path=/tmp/%zz", "unix:path=/tmp/%4", "unix:path=/tmp/%00x"])
def test_a_bad_escape_in_the_bus_address_is_a_bus_failure(address):
    with pytest.raises(hb.BusFailure, match="DBUS_SYSTEM_BUS_ADDRESS has a bad %-escape"):
        hb.system_bus_path({"DBUS_SYSTEM_BUS_ADDRESS": address})


def test_unreachable_bus_is_a_bus_failure(tmp_path):
    with pytest.raises(hb.BusFailure, match=r"cannot use the system bus at .*/none: No such file"):
        hb.SystemBus(str(tmp_path / "none"), hb.Deadline(1))


@pytest.mark.parametrize("name, path", [
    ("init.scope", "init_2escope"),
    ("lab-foo\\x2dbar.service", "lab_2dfoo_5cx2dbar_2eservice"),
    ("lab-worker@one.service", "lab_2dworker_40one_2eservice"),
    ("-.mount", "_2d_2emount"),
    ("0abc.service", "_30abc_2eservice"),  # a leading digit is escaped too
])
def test_unit_object_path_escapes_like_systemd(name, path):
    assert hb.unit_path(name) == "/org/freedesktop/systemd1/unit/" + path


class SilentBus:
    """A unix socket that answers the authentication line with `greeting`, then reads forever
    and answers nothing: a bus whose systemd hangs, or one that refuses us."""

    def __init__(self, path, greeting: bytes):
        import socket
        import threading

        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.greeting = greeting
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        connection, _ = self.server.accept()
        connection.recv(4096)
        connection.sendall(self.greeting)
        while connection.recv(4096):
            pass


def test_a_bus_that_never_answers_ends_the_read_at_the_deadline(tmp_path):
    SilentBus(tmp_path / "bus", b"OK 0123456789abcdef0123456789abcdef\r\n")
    with pytest.raises(hb.DeadlineExceeded, match=r"^systemd did not answer on the system bus within 0.5 s$"):
        hb.collect(["a.service"], hb.Deadline(0.5), bus=str(tmp_path / "bus"))


def test_a_bus_that_refuses_us_falls_back_to_systemctl(tmp_path):
    SilentBus(tmp_path / "bus", b"REJECTED EXTERNAL\r\n")
    calls = []

    def fake_run(argv, deadline):
        calls.append(argv[1])
        return "" if argv[1] == "list-units" else "Id=init.scope\n\nId=a.service\nActiveState=active\n"

    snapshot = hb.collect(["a.service"], hb.Deadline(2), bus=str(tmp_path / "bus"), run=fake_run)
    assert calls == ["list-units", "show"] and snapshot.source == "systemctl"
    assert snapshot.warnings == [f"the system bus at {tmp_path / 'bus'} refused us: REJECTED EXTERNAL; "
                                 "reading through systemctl instead"]
    assert snapshot.units[0]["ActiveState"] == "active"

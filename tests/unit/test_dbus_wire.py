"""The hand-written D-Bus wire format: what the heartbeat writes decodes to what it meant,
and the reply shapes systemd sends decode to plain values. Exact values against a real
systemd are proven in tests/lab (D-Bus and systemctl read the same)."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import load_heartbeat

hb = load_heartbeat()


def reply(serial: int, reply_to: int, signature: str, body: bytes, kind: int = 2, error: str = "") -> bytes:
    """A METHOD_RETURN (or ERROR) as systemd would send it, built with the heartbeat's own fields."""
    fields = [hb._header_field(5, "u", "")[:4] + struct.pack("<I", reply_to)]
    if error:
        fields.append(hb._header_field(4, "s", error))
    if signature:
        fields.append(hb._header_field(8, "g", signature))
    array = b"".join(f + b"\0" * (-len(f) % 8) for f in fields[:-1]) + fields[-1]
    header = b"l" + bytes((kind, 0, 1)) + struct.pack("<III", len(body), serial, len(array)) + array
    return header + b"\0" * (-len(header) % 8) + body


def test_method_call_header_fields_and_body_decode_back():
    message = hb.method_call(7, "/org/freedesktop/systemd1/unit/k3s_2eservice", hb.PROPERTIES_INTERFACE, "Get",
                             "ss", hb.marshal_strings(hb.SERVICE_INTERFACE, "NRestarts"))
    assert message[:4] == b"l\1\0\1" and struct.unpack_from("<I", message, 8)[0] == 7
    fields = dict(hb.decode_value(message, 12, "a(yv)")[0])
    assert fields == {1: "/org/freedesktop/systemd1/unit/k3s_2eservice", 2: hb.PROPERTIES_INTERFACE,
                      3: "Get", 6: "org.freedesktop.systemd1", 8: "ss"}
    assert hb.parse_message(message) == (1, None, (hb.SERVICE_INTERFACE, "NRestarts"))
    # the body starts 8-aligned and the length in the header is the body's
    body_length, _, fields_length = struct.unpack_from("<III", message, 4)
    assert (16 + fields_length + (-fields_length % 8)) % 8 == 0
    assert len(message) == 16 + fields_length + (-fields_length % 8) + body_length


def test_string_array_body():
    body = hb.marshal_string_array(["failed", "a.service"])
    assert hb.decode_values(body, 0, "as") == ((["failed", "a.service"],), len(body))


def test_variant_of_timer_structs():
    # Properties.Get of TimersMonotonic answers v -> a(stt): one setting with 30 s and its next elapse
    element = struct.pack("<I", 16) + b"OnUnitActiveUSec\0" + b"\0" * 3 + struct.pack("<QQ", 30_000_000, 99)
    # signature (8 bytes), array length, padding to the 8-aligned first struct, the struct
    body = b"\x06a(stt)\0" + struct.pack("<I", len(element)) + b"\0" * 4 + element
    message = reply(3, 2, "v", body)
    kind, reply_to, values = hb.parse_message(message)
    assert (kind, reply_to) == (2, 2)
    assert values == ([("OnUnitActiveUSec", 30_000_000, 99)],)
    assert hb.parse_timer_settings(values[0]) == [("OnUnitActiveUSec", 30_000_000)]
    assert hb.parse_timespan(values[0][0][1]) == 30.0


def test_error_reply_becomes_a_call_error():
    message = reply(4, 9, "s", hb.marshal_strings("Unknown property NRestarts"), kind=3,
                    error="org.freedesktop.DBus.Error.UnknownProperty")
    kind, reply_to, error = hb.parse_message(message)
    assert (kind, reply_to) == (3, 9)
    assert (error.name, error.message) == ("org.freedesktop.DBus.Error.UnknownProperty", "Unknown property NRestarts")


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


@given(st.binary(max_size=200))
def test_garbage_never_escapes_as_anything_but_a_decode_error(data):
    try:
        hb.parse_message(data.ljust(16, b"\0"))
    except (struct.error, IndexError, KeyError, ValueError, RecursionError, hb.HeartbeatError):
        pass


def test_unreachable_bus_is_reported_as_unavailable(tmp_path):
    with pytest.raises(hb.BusUnavailable, match=r"cannot use the system bus at .*/none: No such file"):
        hb.SystemBus(str(tmp_path / "none"), 1)


@pytest.mark.parametrize("name, path", [
    ("init.scope", "init_2escope"),
    ("lab-foo\\x2dbar.service", "lab_2dfoo_5cx2dbar_2eservice"),
    ("lab-worker@one.service", "lab_2dworker_40one_2eservice"),
    ("-.mount", "_2d_2emount"),
    ("0abc.service", "_30abc_2eservice"),  # a leading digit is escaped too
])
def test_unit_object_path_escapes_like_systemd(name, path):
    assert hb.unit_path(name) == "/org/freedesktop/systemd1/unit/" + path


@pytest.mark.parametrize("signature, value, encoded", [
    ("t", 1795818103059968, struct.pack("<Q", 1795818103059968)),
    ("i", -1, struct.pack("<i", -1)),
    ("s", "oneshot", hb.marshal_strings("oneshot")),
])
def test_one_value_variants_take_the_short_path_to_the_same_value(signature, value, encoded):
    body = bytes((1, ord(signature), 0)) + b"\0" * (-3 % (8 if signature == "t" else 4)) + encoded
    assert hb.parse_message(reply(5, 4, "v", body)) == (2, 4, (value,))
    assert hb.decode_values(body, 0, "v")[0] == (value,)


class FakeBus:
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


def test_a_bus_that_never_answers_ends_the_tick_at_the_timeout(tmp_path):
    FakeBus(tmp_path / "bus", b"OK 0123456789abcdef0123456789abcdef\r\n")
    with pytest.raises(hb.HeartbeatError, match=r"^systemd did not answer on the system bus within 0.5 s$"):
        hb.collect(["a.service"], timeout=0.5, bus=str(tmp_path / "bus"))


def test_a_bus_that_refuses_us_falls_back_to_systemctl(tmp_path):
    FakeBus(tmp_path / "bus", b"REJECTED EXTERNAL\r\n")
    calls = []

    def fake_run(argv, timeout):
        calls.append(argv[1])
        return "" if argv[1] == "list-units" else "Id=init.scope\n\nId=a.service\nActiveState=active\n"

    snapshot = hb.collect(["a.service"], fake_run, 2, bus=str(tmp_path / "bus"))
    assert calls == ["list-units", "show"] and snapshot.source == "systemctl"
    assert snapshot.warning == (f"the system bus at {tmp_path / 'bus'} refused us: REJECTED EXTERNAL; "
                                "reading through systemctl instead")
    assert snapshot.units[0]["ActiveState"] == "active"


def test_a_big_endian_host_reads_through_systemctl(monkeypatch):
    monkeypatch.setattr(hb.sys, "byteorder", "big")
    with pytest.raises(hb.BusUnavailable, match="little-endian messages only"):
        hb.SystemBus("/run/dbus/system_bus_socket", 1)

"""A miniature systemd on a fake D-Bus system bus, built on jeepney (an independent D-Bus implementation).

The bus listens on a real unix socket, accepts the EXTERNAL authentication, answers Hello and
answers the org.freedesktop.systemd1 calls the heartbeat documents from a table of units.
Misbehaviour is injected with attributes and hooks (see FakeBus).
"""
from __future__ import annotations

import copy
import fnmatch
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from fakenet import LoopbackServer
from jeepney import DBusAddress, MessageType, new_error, new_method_return, new_signal
from jeepney.low_level import (
    Array,
    Endianness,
    HeaderFields,
    Message,
    Parser,
    Struct,
    Variant,
    padding,
    parse_signature,
    simple_types,
)

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
UNIT_IFACE = "org.freedesktop.systemd1.Unit"
SERVICE_IFACE = "org.freedesktop.systemd1.Service"
TIMER_IFACE = "org.freedesktop.systemd1.Timer"
MANAGER_IFACE = "org.freedesktop.systemd1.Manager"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
CLIENT_NAME = ":1.4242"
SYSTEMD_SENDER = ":1.1"
LISTING_CALLS = ("ListUnits", "ListUnitsFiltered", "ListUnitsByNames", "ListUnitsByPatterns")
UNIT_LIST_SIG = "a(ssssssouso)"

ENDIAN = {"<": Endianness.little, ">": Endianness.big}


def bus_label_escape(name: str) -> str:
    """systemd's bus_label_escape: bytes outside [A-Za-z0-9] (and a leading digit) become _xx."""
    raw = name.encode()
    if not raw:
        return "_"
    out = []
    for i, b in enumerate(raw):
        c = chr(b)
        if (c.isascii() and c.isalpha()) or (c.isascii() and c.isdigit() and i > 0):
            out.append(c)
        else:
            out.append("_%02x" % b)
    return "".join(out)


def unit_path(name: str) -> str:
    return "/org/freedesktop/systemd1/unit/" + bus_label_escape(name)


def usec(seconds: float) -> int:
    return int(seconds * 1_000_000)


@dataclass
class Unit:
    name: str
    load: str
    active: str
    sub: str
    props: dict = field(default_factory=dict)  # interface -> {property: (signature, value)}
    description: str = ""

    def row(self):
        return (self.name, self.description or self.name, self.load, self.active, self.sub, "",
                unit_path(self.name), 0, "", "/")


def default_units(now: float | None = None) -> dict[str, Unit]:
    """A running service, a failed service, a timer, an unlisted running service, a template instance."""
    now = time.time() if now is None else now
    mono = time.monotonic()

    def unit_props(changed, entered, exited):
        return {
            "StateChangeTimestamp": ("t", usec(changed)),
            "StateChangeTimestampMonotonic": ("t", usec(max(mono - (now - changed), 1))),
            "ActiveEnterTimestamp": ("t", usec(entered) if entered else 0),
            "ActiveEnterTimestampMonotonic": ("t", usec(max(mono - (now - entered), 1)) if entered else 0),
            "ActiveExitTimestamp": ("t", usec(exited) if exited else 0),
            "ActiveExitTimestampMonotonic": ("t", usec(max(mono - (now - exited), 1)) if exited else 0),
            "InactiveEnterTimestamp": ("t", usec(exited) if exited else 0),
            "InactiveExitTimestamp": ("t", usec(entered) if entered else 0),
            "Id": ("s", ""),
        }

    def service(type_, restarts, code, status, started, exited):
        return {
            "Type": ("s", type_),
            "NRestarts": ("u", restarts),
            "ExecMainCode": ("i", code),
            "ExecMainStatus": ("i", status),
            "ExecMainStartTimestamp": ("t", usec(started) if started else 0),
            "ExecMainExitTimestamp": ("t", usec(exited) if exited else 0),
            "Result": ("s", "success" if code in (0, 1) and status == 0 else "exit-code"),
        }

    units = {
        "alpha.service": Unit("alpha.service", "loaded", "active", "running", {
            UNIT_IFACE: unit_props(now - 3600, now - 3600, 0),
            SERVICE_IFACE: service("simple", 2, 0, 0, now - 3600, 0),
        }, "Alpha daemon"),
        "broken.service": Unit("broken.service", "loaded", "failed", "failed", {
            UNIT_IFACE: unit_props(now - 600, now - 700, now - 600),
            SERVICE_IFACE: service("simple", 0, 1, 3, now - 700, now - 600),
        }, "Broken daemon"),
        "tick.timer": Unit("tick.timer", "loaded", "active", "waiting", {
            UNIT_IFACE: unit_props(now - 30, now - 7200, 0),
            TIMER_IFACE: {
                "LastTriggerUSec": ("t", usec(now - 30)),
                "LastTriggerUSecMonotonic": ("t", usec(max(mono - 30, 1))),
                "NextElapseUSecRealtime": ("t", 0),
                "NextElapseUSecMonotonic": ("t", usec(mono + 30)),
                "TimersMonotonic": ("a(stt)", [("OnUnitActiveUSec", 60_000_000, usec(mono + 30))]),
                "TimersCalendar": ("a(sst)", []),
                "Result": ("s", "success"),
                "Unit": ("s", "tick.service"),
                "Persistent": ("b", False),
            },
        }, "Tick timer"),
        "other.service": Unit("other.service", "loaded", "active", "running", {
            UNIT_IFACE: unit_props(now - 100, now - 100, 0),
            SERVICE_IFACE: service("simple", 0, 0, 0, now - 100, 0),
        }, "Other daemon"),
        "getty@tty1.service": Unit("getty@tty1.service", "loaded", "active", "running", {
            UNIT_IFACE: unit_props(now - 100, now - 100, 0),
            SERVICE_IFACE: service("idle", 0, 0, 0, now - 100, 0),
        }, "Getty on tty1"),
    }
    for u in units.values():
        u.props[UNIT_IFACE]["Id"] = ("s", u.name)
    return units


def manager_props(now: float) -> dict:
    boot = now - 86400
    mono = time.monotonic()
    return {
        "Version": ("s", "252"),
        "Architecture": ("s", "x86-64"),
        "SystemState": ("s", "degraded"),
        "UserspaceTimestamp": ("t", usec(boot)),
        "UserspaceTimestampMonotonic": ("t", usec(max(mono - 86400, 1))),
        "FinishTimestamp": ("t", usec(boot + 5)),
        "FinishTimestampMonotonic": ("t", usec(max(mono - 86395, 1))),
        "KernelTimestamp": ("t", usec(boot - 2)),
        "KernelTimestampMonotonic": ("t", 0),
        "InitRDTimestamp": ("t", 0),
        "InitRDTimestampMonotonic": ("t", 0),
        "NFailedUnits": ("u", 1),
    }


# --- raw message building (for what jeepney refuses to build) -----------------------------------

_FIELDS = Array(Struct([simple_types["y"], Variant()]))
_ENDIAN_CODE = {"<": b"l", ">": b"B"}


def raw_message(msg_type: int, serial: int, fields: list[tuple[int, str, object]], body: bytes,
                endian: str = "<", flags: int = 1, body_length: int | None = None) -> bytes:
    """A D-Bus message with header fields given as (code, signature, value), any types at all."""
    e = ENDIAN[endian]
    head = struct.pack(endian + "cBBBII", _ENDIAN_CODE[endian], msg_type, flags, 1,
                       len(body) if body_length is None else body_length, serial)
    head += _FIELDS.serialise([(code, (sig, value)) for code, sig, value in fields], 12, e)
    head += b"\0" * padding(len(head), 8)
    return head + body


def body_bytes(signature: str, values: tuple, endian: str = "<") -> bytes:
    return parse_signature(list("(%s)" % signature)).serialise(values, 0, ENDIAN[endian])


def reply_fields(reply_serial: int, signature: str | None, sender=SYSTEMD_SENDER):
    fields = [(5, "u", reply_serial), (6, "s", CLIENT_NAME), (7, "s", sender)]
    if signature is not None:
        fields.append((8, "g", signature))
    return fields


def serialise(msg: Message, serial: int, endian: str = "<") -> bytes:
    msg.header.endianness = ENDIAN[endian]
    return msg.serialise(serial=serial)


def signal_bytes(serial: int, endian: str = "<", signature="s", body=("hello",),
                 member="UnitNew", path=MANAGER_PATH, iface=MANAGER_IFACE) -> bytes:
    msg = new_signal(DBusAddress(path, interface=iface), member, signature, body)
    msg.header.fields[HeaderFields.sender] = SYSTEMD_SENDER
    return serialise(msg, serial, endian)


def method_call_bytes(serial: int, endian: str = "<") -> bytes:
    """A method call aimed at the client (a peer pinging it)."""
    fields = [(1, "o", "/org/freedesktop/DBus"), (2, "s", "org.freedesktop.DBus.Peer"),
              (3, "s", "Ping"), (6, "s", CLIENT_NAME), (7, "s", ":1.77")]
    return raw_message(1, serial, fields, b"", endian, flags=0)


def stray_reply_bytes(serial: int, reply_to: int, endian: str = "<", error=False) -> bytes:
    """A reply (or error) to a serial the client never sent."""
    if error:
        fields = [(4, "s", "org.freedesktop.DBus.Error.Failed")] + reply_fields(reply_to, "s")
        return raw_message(3, serial, fields, body_bytes("s", ("stray",), endian), endian)
    rows = [("ghost.service", "", "loaded", "active", "running", "", unit_path("ghost.service"),
             0, "", "/")]
    return raw_message(2, serial, reply_fields(reply_to, UNIT_LIST_SIG),
                       body_bytes(UNIT_LIST_SIG, (rows,), endian), endian)


# --- the bus ----------------------------------------------------------------------------------

class FakeBus(LoopbackServer):
    """A fake system bus with a miniature systemd behind it.

    Knobs (set before the heartbeat runs):
      endian         '<' or '>' for every message the bus sends
      auth           'ok', 'reject' or 'silent' (never answers the AUTH line)
      silent         True: authenticate, then never send a message
      trickle        seconds between single bytes of everything sent after the auth line
      before_hello / after_hello / between: lists of callables serial -> bytes of unsolicited
                     messages, sent before the Hello reply, right after it, before every other reply
      refuse_names   names that make any ListUnitsByNames containing them an InvalidArgs error
      hook           callable(bus, call, default_replies: list[bytes]) -> list[bytes] | None
    """

    def __init__(self, path: str, units: dict[str, Unit] | None = None):
        self.path = path
        self.now = time.time()
        self.units = units if units is not None else default_units(self.now)
        self.manager = manager_props(self.now)
        self.endian = "<"
        self.auth = "ok"
        self.silent = False
        self.trickle: float | None = None
        self.before_hello: list = []
        self.after_hello: list = []
        self.between: list = []
        self.refuse_names: set[str] = set()
        self.hook = None
        self.calls: list[Message] = []
        self.auth_lines: list[bytes] = []
        self.errors: list[str] = []
        self._serial = 0
        self._lock = threading.Lock()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o777)
        super().__init__(sock)

    # -- plumbing
    def next_serial(self) -> int:
        with self._lock:
            self._serial += 1
            return self._serial

    @property
    def address(self) -> str:
        return "unix:path=" + self.path

    def _send(self, conn, data: bytes):
        if self.trickle:
            self.trickle_send(conn, data, self.trickle)
        elif data:
            conn.sendall(data)

    def _serve(self, conn: socket.socket):
        try:
            self._serve_inner(conn)
        except (OSError, ConnectionError):
            pass
        except Exception as exc:  # a bug in the fake, or a message jeepney cannot parse
            self.errors.append(repr(exc))

    def _serve_inner(self, conn):
        buf = b""
        rest = None
        while rest is None:
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                line = line.lstrip(b"\0")
                if line == b"BEGIN":
                    rest = buf
                    break
                self._auth_line(conn, line)
            if rest is None:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
        if self.auth != "ok":
            while conn.recv(65536):
                pass
            return
        parser = Parser()
        data = rest
        while not self._stop.is_set():
            if data:
                for msg in parser.feed(data):
                    self.calls.append(msg)
                    if not self.silent:
                        self._send(conn, b"".join(self.respond(msg)))
            data = conn.recv(65536)
            if not data:
                return

    def _auth_line(self, conn, line: bytes):
        self.auth_lines.append(line)
        if line.startswith(b"AUTH"):
            if self.auth == "ok":
                conn.sendall(b"OK " + b"0123456789abcdef0123456789abcdef" + b"\r\n")
            elif self.auth == "reject":
                conn.sendall(b"REJECTED EXTERNAL\r\n")
        elif line.startswith(b"NEGOTIATE_UNIX_FD") and self.auth == "ok":
            conn.sendall(b"ERROR\r\n")

    # -- answers
    def unsolicited(self, makers) -> list[bytes]:
        return [make(self.next_serial()) for make in makers]

    def respond(self, call: Message) -> list[bytes]:
        h = call.header
        if h.message_type != MessageType.method_call:
            return []
        dest = h.fields.get(HeaderFields.destination)
        member = h.fields.get(HeaderFields.member)
        if dest == "org.freedesktop.DBus":
            if member == "Hello":
                reply = new_method_return(call, "s", (CLIENT_NAME,))
                reply.header.fields[HeaderFields.sender] = "org.freedesktop.DBus"
                reply.header.fields[HeaderFields.destination] = CLIENT_NAME
                out = self.unsolicited(self.before_hello)
                out.append(serialise(reply, self.next_serial(), self.endian))
                out += self.unsolicited(self.after_hello)
                return out
            reply = new_method_return(call)
            reply.header.fields[HeaderFields.sender] = "org.freedesktop.DBus"
            return [serialise(reply, self.next_serial(), self.endian)]
        replies = [serialise(m, self.next_serial(), self.endian) for m in self.systemd(call)]
        if self.hook is not None:
            hooked = self.hook(self, call, replies)
            if hooked is not None:
                replies = hooked
        return self.unsolicited(self.between) + replies

    def _ret(self, call, sig=None, body=()):
        m = new_method_return(call, sig, body)
        m.header.fields[HeaderFields.sender] = SYSTEMD_SENDER
        m.header.fields[HeaderFields.destination] = CLIENT_NAME
        return m

    def _err(self, call, name, text):
        m = new_error(call, name, "s", (text,))
        m.header.fields[HeaderFields.sender] = SYSTEMD_SENDER
        m.header.fields[HeaderFields.destination] = CLIENT_NAME
        return m

    def unit_by_path(self, path):
        for u in self.units.values():
            if unit_path(u.name) == path:
                return u
        return None

    def systemd(self, call: Message) -> list[Message]:
        h = call.header
        member = h.fields.get(HeaderFields.member)
        iface = h.fields.get(HeaderFields.interface)
        path = h.fields.get(HeaderFields.path)
        body = call.body
        units = list(self.units.values())
        if member == "ListUnits":
            return [self._ret(call, UNIT_LIST_SIG, ([u.row() for u in units],))]
        if member == "ListUnitsFiltered":
            states = set(body[0])
            rows = [u.row() for u in units if states & {u.load, u.active, u.sub}]
            return [self._ret(call, UNIT_LIST_SIG, (rows,))]
        if member == "ListUnitsByPatterns":
            states, patterns = set(body[0]), body[1]
            rows = [u.row() for u in units
                    if (not states or states & {u.load, u.active, u.sub})
                    and (not patterns or any(fnmatch.fnmatchcase(u.name, p) for p in patterns))]
            return [self._ret(call, UNIT_LIST_SIG, (rows,))]
        if member == "ListUnitsByNames":
            names = list(body[0])
            for n in names:
                if n in self.refuse_names or "@." in n or n.endswith("@"):
                    return [self._err(call, "org.freedesktop.DBus.Error.InvalidArgs",
                                      f"Unit name {n} is not valid.")]
            rows = []
            for n in names:
                u = self.units.get(n)
                rows.append(u.row() if u else
                            (n, "", "not-found", "inactive", "dead", "", unit_path(n), 0, "", "/"))
            return [self._ret(call, UNIT_LIST_SIG, (rows,))]
        if member in ("GetUnit", "LoadUnit"):
            return [self._ret(call, "o", (unit_path(body[0]),))]
        if iface == PROPS_IFACE and member in ("Get", "GetAll"):
            if path == MANAGER_PATH:
                table = {MANAGER_IFACE: self.manager}
            else:
                u = self.unit_by_path(path)
                table = u.props if u else {UNIT_IFACE: {
                    "StateChangeTimestamp": ("t", 0), "ActiveEnterTimestamp": ("t", 0),
                    "ActiveExitTimestamp": ("t", 0)}}
            if member == "GetAll":
                props = table.get(body[0], {})
                return [self._ret(call, "a{sv}", (dict(props.items()),))]
            prop = table.get(body[0], {}).get(body[1])
            if prop is None:
                return [self._err(call, "org.freedesktop.DBus.Error.UnknownProperty",
                                  "Unknown property or interface.")]
            return [self._ret(call, "v", (prop,))]
        return [self._err(call, "org.freedesktop.DBus.Error.UnknownMethod",
                          f"Unknown method {member}.")]


def member_of(call: Message) -> str:
    return call.header.fields.get(HeaderFields.member, "")


def copy_units(units):
    return copy.deepcopy(units)

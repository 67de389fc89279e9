# SPDX-License-Identifier: MIT
"""Reading systemd over the D-Bus system bus: one connection, two pipelined rounds of calls
whatever the number of units.

Why: `systemctl show` formats some 300 properties per unit in a process of its own. Asking
systemd for only the few each unit's metrics need, pipelined (many calls written before the
first answer is read), costs a fraction of that and spawns nothing (BENCHMARKS.md). Any user
may read unit state on the system bus. Every wait is bounded by the tick's Deadline; only
replies to this connection's own calls are decoded (anything else is skipped by its header);
a reply of the wrong shape is refused, not guessed at.
"""
import _socket
import posix
import struct

from .bus_wire import ERROR, Malformed, decode_body, fixed_header, header_fields, marshal_string_array, \
    marshal_strings, method_call, unit_path
from .model import DeadlineExceeded, HeartbeatError
from .syscalls import getenv
from .history import state_changed, unexplained_restarts
from .units import is_glob, is_unit_name, select_units, unit_type
from .values import is_integer, is_restart_policy, is_result, parse_timestamp

SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
SERVICE_INTERFACE = "org.freedesktop.systemd1.Service"
TIMER_INTERFACE = "org.freedesktop.systemd1.Timer"
LISTING = "a(ssssssouso)"  # name, description, load, active, sub, following, path, job id, type, path
# init.scope is PID 1's own scope: its ActiveEnterTimestamp is when the manager started,
# the reference for units that were never active since boot.
MANAGER_UNIT = "init.scope"
# dbus-daemon answers LimitsExceeded past max_replies_per_connection (128 on the system bus)
# calls waiting for a reply, so at most this many are in flight.
BUS_WINDOW = 100
AUTH_LINE_MAX = 512

# The properties a unit's metrics need beyond its listing (load, active and sub state), by
# unit type; they mirror read_systemctl.SHOW_PROPERTIES. Each Get costs systemd and
# dbus-daemon ~45 µs, so what only some units need is asked for those alone, once their state
# is known: a unit that is not active (when it stopped; a oneshot's last run; why it ended),
# a failed one (why; whether systemd will restart it), a service restarted since the last
# tick (its policy, when it went down), a unit whose state changed since the last tick (when
# it entered active). history.py says what each is for.
BUS_PROPERTIES = {
    "service": ((SERVICE_INTERFACE, "NRestarts"), (SERVICE_INTERFACE, "ExecMainCode"),
                (SERVICE_INTERFACE, "ExecMainStatus")),
    "timer": ((TIMER_INTERFACE, "LastTriggerUSec"), (TIMER_INTERFACE, "NextElapseUSecRealtime"),
              (TIMER_INTERFACE, "NextElapseUSecMonotonic"), (TIMER_INTERFACE, "TimersMonotonic"),
              (TIMER_INTERFACE, "TimersCalendar"), (UNIT_INTERFACE, "ActiveEnterTimestamp"),
              (UNIT_INTERFACE, "Triggers")),
}
# Not asked either when the first round found the unit's state never changed since systemd
# loaded it (StateChangeTimestamp 0): it never started nor stopped, so these are all 0. That is
# also what an allowlisted unit systemd does not keep loaded (a disabled service, a name it does
# not know) looks like, and every call about such a unit makes systemd load it from disk and
# drop it again, about 0.2 ms of systemd's and dbus-daemon's CPU each (BENCHMARKS.md).
STOPPED_PROPERTIES = {
    "service": ((SERVICE_INTERFACE, "Type"), (UNIT_INTERFACE, "ActiveExitTimestamp"),
                (SERVICE_INTERFACE, "ExecMainStartTimestamp"), (SERVICE_INTERFACE, "ExecMainExitTimestamp"),
                (SERVICE_INTERFACE, "Result")),
    "timer": (),  # a timer counts from its last trigger, whatever its state
}
# Each type that can fail says why in its own interface's Result (slices, targets and
# devices have none).
FAILED_PROPERTIES = {
    "service": ((SERVICE_INTERFACE, "Restart"),),
    **{kind: ((f"org.freedesktop.systemd1.{kind.capitalize()}", "Result"),)
       for kind in ("socket", "mount", "swap", "automount", "path", "timer", "scope")},
}
RESTARTED_PROPERTIES = {
    "service": ((SERVICE_INTERFACE, "Restart"), (UNIT_INTERFACE, "ActiveExitTimestamp"),
                (UNIT_INTERFACE, "InactiveEnterTimestamp")),
}
CHANGED_PROPERTIES = ((UNIT_INTERFACE, "ActiveEnterTimestamp"),)


def _timers(element_types: tuple):
    def check(value) -> bool:
        return isinstance(value, list) and all(
            isinstance(item, tuple) and len(item) == 3
            and all(is_integer(v) if t is int else isinstance(v, t) for v, t in zip(item, element_types))
            for item in value)
    return check


# What each property must be (its D-Bus type as Python sees it); anything else is left out.
def _is_string(value) -> bool:
    return isinstance(value, str)


_INTEGER = is_integer
PROPERTY_CHECKS = {
    "NRestarts": _INTEGER, "ExecMainCode": _INTEGER, "ExecMainStatus": _INTEGER,
    "Type": _is_string, "Result": is_result, "Restart": is_restart_policy,
    "TimersMonotonic": _timers((str, int, int)), "TimersCalendar": _timers((str, str, int)),
    "Triggers": lambda value: isinstance(value, list) and all(isinstance(name, str) for name in value),
}


class BusFailure(HeartbeatError):
    """The bus could not be used, or did not behave: systemctl may still work."""


class BusCallError:
    """An error reply to one call (an unknown property on an older systemd, a vanished unit)."""

    __slots__ = ("name", "message")

    def __init__(self, name: str, message: str):
        self.name, self.message = name, message


def system_bus_path(environ=None) -> str:
    """The socket of $DBUS_SYSTEM_BUS_ADDRESS's first unix:path= address, else the standard one."""
    variable = getenv("DBUS_SYSTEM_BUS_ADDRESS") if environ is None else environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    for address in variable.split(";"):
        transport, _colon, options = address.partition(":")
        for option in options.split(",") if transport == "unix" else ():
            key, _equals, value = option.partition("=")
            if key == "path" and value:
                return unescape_address(value, variable)
    return SYSTEM_BUS_SOCKET


def unescape_address(value: str, variable: str) -> str:
    """D-Bus addresses escape bytes as %XX; BusFailure (with the variable) on a bad escape."""
    parts = value.split("%")
    try:
        raw = parts[0].encode() + b"".join(bytes.fromhex(p[:2]) + p[2:].encode()
                                           for p in parts[1:] if len(p) >= 2 and p[:2].isascii())
        if any(len(p) < 2 or not p[:2].isascii() for p in parts[1:]) or b"\0" in raw:
            raise ValueError
        return raw.decode("utf-8", "surrogateescape")
    except ValueError:
        raise BusFailure(f"DBUS_SYSTEM_BUS_ADDRESS has a bad %-escape: {variable[:120]!r}") from None


class SystemBus:
    """One connection to the system bus; calls are pipelined and matched to replies by serial."""

    def __init__(self, path: str, deadline):
        self.path = path
        self.buffer = b""
        self.discard = 0  # bytes still to skip of a message that is not ours
        self.serial = 1
        self.greeted = False  # the bus has not yet answered the authentication
        self.connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self.connection.settimeout(deadline.remaining("connecting to the system bus"))
            self.connection.connect(path)
        except DeadlineExceeded:
            self.close()
            raise
        except (OSError, ValueError) as error:
            self.close()
            reason = getattr(error, "strerror", None) or str(error)
            raise BusFailure(f"cannot use the system bus at {path}: {reason}") from None
        uid = str(posix.geteuid()).encode().hex().encode()
        # Authenticate as our uid, begin, say Hello; the first calls follow in the same write
        # (call_all), without waiting for the answer: the bus reads them all in order.
        self.unsent = b"\0AUTH EXTERNAL " + uid + b"\r\nBEGIN\r\n" + method_call(
            1, "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello", destination="org.freedesktop.DBus")

    def greeting(self) -> bool:
        """Consume the bus's answer to the authentication once it is in; whether it is."""
        if b"\r\n" not in self.buffer:
            if len(self.buffer) > AUTH_LINE_MAX:
                raise BusFailure(f"the system bus at {self.path} answered the authentication with garbage")
            return False
        line, _crlf, self.buffer = self.buffer.partition(b"\r\n")
        if not line.startswith(b"OK "):
            raise BusFailure(f"the system bus at {self.path} refused us: {line[:80].decode('ascii', 'replace')}")
        self.greeted = True
        return True

    def receive(self, deadline) -> None:
        self.connection.settimeout(deadline.remaining("reading systemd on the system bus"))
        chunk = self.connection.recv(1 << 18)
        if not chunk:
            raise BusFailure(f"the system bus at {self.path} closed the connection")
        self.buffer += chunk

    def replies(self, pending: dict):
        """Cut every complete reply to a pending call off the front of the buffer, as
        (serial, type, byte order, message, body start, header fields). Any other message
        (a signal, a call, a reply to someone else) is skipped as it arrives, undecoded."""
        buffer, start = self.buffer, 0
        while True:
            if self.discard:
                skipped = min(self.discard, len(buffer) - start)
                start += skipped
                self.discard -= skipped
                if self.discard:
                    break
            if len(buffer) - start < 16:
                break
            order, kind, body_start, end = fixed_header(buffer, start)
            if len(buffer) - start < body_start:
                break  # the header fields are not all here yet
            fields = header_fields(buffer[start:start + body_start], order)
            serial = fields.get(5) if kind in (2, 3) else None
            if serial not in pending:
                self.discard = end
                continue
            if len(buffer) - start < end:
                break
            yield serial, kind, order, buffer[start:start + end], body_start, fields
            start += end
        self.buffer = buffer[start:]

    def call_all(self, requests: list[tuple], deadline) -> list:
        """Every call (path, interface, member, signature, body, reply signature) with
        BUS_WINDOW in flight; their replies in the same order: a tuple of values, or a
        BusCallError (an error reply, or a reply of another signature than expected)."""
        results: list = [None] * len(requests)
        pending: dict[int, int] = {}  # serial -> index of the request
        sent = answered = 0
        try:
            while answered < len(requests):
                batch = []
                while sent < len(requests) and len(pending) < BUS_WINDOW:
                    self.serial += 1
                    pending[self.serial] = sent
                    batch.append(method_call(self.serial, *requests[sent][:5]))
                    sent += 1
                if batch or self.unsent:
                    self.connection.settimeout(deadline.remaining("writing to the system bus"))
                    self.connection.sendall(self.unsent + b"".join(batch))
                    self.unsent = b""
                self.receive(deadline)
                if not self.greeted and not self.greeting():
                    continue
                for serial, kind, order, message, body_start, fields in self.replies(pending):
                    index = pending.pop(serial)
                    results[index] = reply_values(kind, order, message, body_start, fields,
                                                  requests[index][5], deadline)
                    answered += 1
        except TimeoutError:
            raise DeadlineExceeded(f"systemd did not answer on the system bus within {deadline.timeout:g} s") from None
        except Malformed as error:
            raise BusFailure(f"malformed message on the system bus: {error}") from None
        except (struct.error, IndexError, ValueError, RecursionError) as error:
            raise BusFailure(f"malformed message on the system bus: {type(error).__name__}: {error}") from None
        except OSError as error:
            raise BusFailure(f"reading systemd on the system bus failed: {error.strerror or error}") from None
        return results

    def close(self) -> None:
        self.connection.close()


def reply_values(kind: int, order: str, message: bytes, body_start: int, fields: dict, expected: str,
                 deadline):
    signature = fields.get(8, "")
    if kind == ERROR:  # its name is a header field, its message the first string
        values = decode_body(message, order, body_start, signature, deadline)
        text = values[0] if values and isinstance(values[0], str) else ""
        return BusCallError(fields.get(4, ""), text)
    if signature != expected:
        return BusCallError("unexpected-signature", f"answered {signature!r} where {expected!r} was expected")
    return decode_body(message, order, body_start, signature, deadline)


_GET_BODIES: dict[tuple, bytes] = {}


def get_property(path: str, interface: str, name: str) -> tuple:
    body = _GET_BODIES.get((interface, name))
    if body is None:
        body = _GET_BODIES[(interface, name)] = marshal_strings(interface, name)
    return (path, PROPERTIES_INTERFACE, "Get", "ss", body, "v")


def list_units_by_names(names: list[str]) -> tuple:
    return (MANAGER_PATH, MANAGER_INTERFACE, "ListUnitsByNames", "as", marshal_string_array(names), LISTING)


def listing_rows(reply, what: str) -> list[tuple]:
    """ListUnits*'s a(ssssssouso) -> (name, load, active, sub, object path) rows."""
    if isinstance(reply, BusCallError):
        raise BusFailure(f"systemd refused {what}: {reply.name}: {reply.message}")  # e.g. AccessDenied
    return [(row[0], row[2], row[3], row[4], row[6]) for row in reply[0]]


def property_calls(unit: dict, path: str, wanted) -> list[tuple]:
    """Gets for the properties in `wanted` that the unit has not been asked yet (the tables
    overlap: a failed service that restarted needs Restart once)."""
    asked = unit.setdefault("_asked", set())
    calls = []
    for interface, prop in wanted:
        if prop not in asked:
            asked.add(prop)
            calls.append((unit, prop, get_property(path, interface, prop)))
    return calls


def own_properties(kind: str) -> tuple:
    """What every unit of this type is asked for: its state change time, then BUS_PROPERTIES."""
    return ((UNIT_INTERFACE, "StateChangeTimestamp"), *BUS_PROPERTIES.get(kind, ()))


def state_properties(kind: str, active_state: str) -> tuple:
    """What a unit needs in its state (from the listing): STOPPED_, then FAILED_PROPERTIES."""
    if active_state in ("active", "reloading"):
        return ()
    wanted = STOPPED_PROPERTIES.get(kind, ((UNIT_INTERFACE, "ActiveExitTimestamp"),))
    return wanted + FAILED_PROPERTIES.get(kind, ()) if active_state == "failed" else wanted


def history_properties(unit: dict, kind: str, before: "dict | None") -> tuple:
    """What a unit needs given what the last tick saw of it (its own properties answered):
    CHANGED_PROPERTIES if its state changed since (never, for a unit whose state never
    changed since systemd loaded it: it was never active), RESTARTED_PROPERTIES if systemd
    restarted it since without a failure the heartbeat saw (history.py)."""
    changed = unit.get("StateChangeTimestamp")
    wanted = CHANGED_PROPERTIES if changed != 0 and state_changed(before, changed) else ()
    if unexplained_restarts(before, unit.get("NRestarts")):
        wanted += RESTARTED_PROPERTIES.get(kind, ())
    return wanted


def read_over_bus(patterns: list[str], bus: SystemBus, deadline,
                  remembered: "dict | None" = None) -> "tuple[list[dict], float | None, list[str]]":
    """The allowlisted and failed units over D-Bus, in two pipelined rounds, three when a
    unit only the listings named changed since the last tick. The first: the listings, and
    each allowlisted unit's own properties (its object path follows from its name). The
    second: units only the listings named (globs, failed), what a unit needs in its state,
    and what an allowlisted unit needs given `remembered` (the last tick's history records,
    by unit); the third: that, for the units of the second. Unit dicts hold systemd's raw
    values (µs timestamps). Returns (units, when the manager started, warnings)."""
    remembered = remembered or {}
    exact = [p for p in patterns if not is_glob(p)]
    listing_call = ((MANAGER_PATH, MANAGER_INTERFACE, "ListUnits", "", b"", LISTING) if len(exact) < len(patterns)
                    else (MANAGER_PATH, MANAGER_INTERFACE, "ListUnitsFiltered", "as",
                          marshal_string_array(["failed"]), LISTING))
    calls = [get_property(unit_path(MANAGER_UNIT), UNIT_INTERFACE, "ActiveEnterTimestamp"), listing_call]
    if exact:
        calls.append(list_units_by_names(exact))
    asked = {name: {"Unit": name} for name in exact}  # the allowlisted units, asked in round one
    paths = {name: unit_path(name) for name in exact}
    gets = []
    for name, unit in asked.items():
        gets += property_calls(unit, paths[name], own_properties(unit_type(name)))
    replies = bus.call_all(calls + [get[2] for get in gets], deadline)
    store_answers(gets, replies[len(calls):])
    start = replies[0][0] if not isinstance(replies[0], BusCallError) else None
    manager_start = parse_timestamp(start) if is_integer(start) else None
    loaded = listing_rows(replies[1], listing_call[2])
    warnings: list[str] = []
    rows = {row[0]: row for row in loaded}
    if exact:
        rows.update(allowlisted_rows(exact, replies[2], bus, deadline, warnings))
    names, allowlisted = select_units([p for p in patterns if p in rows or is_glob(p)], [row[:4] for row in loaded])
    units, gets, later = [], [], []
    for name in names:
        if name not in asked and not is_unit_name(name):
            warnings.append(f"skipping a unit systemd listed with an invalid name: {name[:80]!r}")
            continue
        unit_id, load_state, active_state, sub_state, path = rows[name]
        unit = asked.get(name) or {"Unit": name}
        unit.update(Id=unit_id, LoadState=load_state, ActiveState=active_state, SubState=sub_state,
                    Allowlisted=name in allowlisted)
        kind = unit_type(name)
        if path != paths.get(name):  # not asked yet (or asked at another path: an alias's)
            unit["_asked"] = set()
            gets += property_calls(unit, path, own_properties(kind))
            later.append((unit, path, kind))
        else:
            gets += property_calls(unit, path, history_properties(unit, kind, remembered.get(name)))
        if unit.get("StateChangeTimestamp") != 0:  # 0: never started nor stopped since loaded
            gets += property_calls(unit, path, state_properties(kind, active_state))
        units.append(unit)
    store_answers(gets, bus.call_all([get[2] for get in gets], deadline))
    gets = []
    for unit, path, kind in later:
        gets += property_calls(unit, path, history_properties(unit, kind, remembered.get(unit["Unit"])))
    if gets:
        store_answers(gets, bus.call_all([get[2] for get in gets], deadline))
    for unit in units:
        unit.pop("_asked", None)
    return units, manager_start, warnings


def allowlisted_rows(exact: list[str], reply, bus: SystemBus, deadline, warnings: list) -> dict:
    """The allowlisted names' listing rows, by the name asked for (an alias answers as its
    unit). systemd fails the whole ListUnitsByNames for one name it refuses; then each name
    is asked alone, in one more round, so that one never costs the others."""
    if not isinstance(reply, BusCallError):
        rows = listing_rows(reply, "ListUnitsByNames")
        if len(rows) != len(exact):
            raise BusFailure(f"systemd answered {len(rows)} units for {len(exact)} names")
        return dict(zip(exact, rows))
    answers = bus.call_all([list_units_by_names([name]) for name in exact], deadline)
    rows = {}
    for name, answer in zip(exact, answers):
        if isinstance(answer, BusCallError) or len(answer[0]) != 1:
            reason = f"{answer.name}: {answer.message}" if isinstance(answer, BusCallError) else "no answer"
            warnings.append(f"systemd refused allowlisted unit {name}: {reason[:200]}")
        else:
            rows[name] = listing_rows(answer, "ListUnitsByNames")[0]
    return rows


def store_answers(gets: list[tuple], replies: list) -> None:
    """Put each Get's answer into its unit dict. An error leaves the property out (NRestarts
    before systemd 235, a unit that vanished), as systemctl show would; so does a value of
    the wrong type."""
    for (unit, prop, _call), reply in zip(gets, replies):
        if isinstance(reply, BusCallError):
            unit.pop(prop, None)
            continue
        value = reply[0]
        check = PROPERTY_CHECKS.get(prop, _INTEGER)  # every other property is a µs timestamp
        if check(value):
            unit[prop] = value
        else:
            unit.pop(prop, None)

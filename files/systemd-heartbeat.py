#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""systemd-heartbeat: push the state of load-bearing systemd units to VictoriaMetrics.

One tick reads the allowlisted units plus every failed unit from systemd over D-Bus (a
small client written by hand, two pipelined rounds of calls whatever the number of units;
two systemctl calls when there is no bus), shapes them into metrics, hand-encodes an
OTLP/HTTP protobuf request and POSTs it. Run every 30 s by systemd-heartbeat.timer; run it by hand with --dry-run to see
exactly what it would push.

This file is the only implementation of collection and encoding in the project: the
Ansible module library/systemd_heartbeat.py imports it (module_utils/systemd_heartbeat.py
is a symlink to this file), so it must stay importable and standard-library only.

Metrics (labels: unit, host; exact definitions in README.md):
  systemd_unit_active{sub_state}          1 when ActiveState is "active", else 0
  systemd_unit_info{load_state,active_state,sub_state,unit_type,allowlisted}   always 1
  systemd_unit_restart_count_total        NRestarts (services), cumulative monotonic Sum
  systemd_unit_last_exit_status           ExecMainStatus: exit code, or signal number
  systemd_unit_last_exit_code             ExecMainCode: 0 never ran, 1 exited, 2 killed, 3 dumped
  systemd_unit_seconds_since_active       see seconds_since_active()
  systemd_unit_state_change_timestamp_seconds
  systemd_timer_last_trigger_timestamp_seconds, systemd_timer_next_elapse_timestamp_seconds,
  systemd_timer_interval_seconds
  systemd_heartbeat_up, systemd_heartbeat_collect_duration_seconds,
  systemd_heartbeat_units_reported, systemd_heartbeat_units_failed
"""
# Interpreter start-up is most of a tick's cost (bench/, BENCHMARKS.md). So: no argparse,
# subprocess, socket or collections (each drags in re, enum, selectors, threading...): the
# C module _socket does; modules only some ticks need (fnmatch for globs, json for the state
# file, datetime for systemctl's text, http.client and ssl for https) are imported where
# they are used.
import _socket
import math
import os
import select
import struct
import sys
import time
import zlib

DEFAULT_URL = "http://localhost:30428/opentelemetry/v1/metrics"
DEFAULT_TIMEOUT = 10.0

# Unit types systemd knows; a name without one of these suffixes gets ".service", as systemctl does.
UNIT_SUFFIXES = (
    ".service", ".socket", ".device", ".mount", ".automount", ".swap",
    ".target", ".path", ".timer", ".slice", ".scope",
)
# Characters systemd allows in unit names (unit_name_is_valid), plus the glob characters fnmatch uses.
UNIT_NAME_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@"
)
GLOB_CHARS = frozenset("*?[]!")
UNIT_NAME_MAX = 255

# Properties one batched `systemctl show` asks for. Id is always asked: it names each block.
SHOW_PROPERTIES = (
    "Id", "LoadState", "ActiveState", "SubState", "Type", "NRestarts",
    "ExecMainCode", "ExecMainStatus", "ExecMainStartTimestamp", "ExecMainExitTimestamp",
    "ActiveEnterTimestamp", "ActiveExitTimestamp", "StateChangeTimestamp",
    "LastTriggerUSec", "NextElapseUSecRealtime", "NextElapseUSecMonotonic",
    "TimersMonotonic", "TimersCalendar",
)
# init.scope is PID 1's own scope: its ActiveEnterTimestamp is when the manager started,
# the reference for units that were never active since boot.
MANAGER_UNIT = "init.scope"
# Monotonic timer settings that repeat; OnBootSec, OnStartupSec and OnActiveSec fire once.
REPEATING_TIMER_BASES = ("OnUnitActiveUSec", "OnUnitInactiveUSec")


class HeartbeatError(Exception):
    """A failure worth one line on stderr and a non-zero exit."""


class PushRejected(HeartbeatError):
    """The endpoint answered and refused the payload (HTTP 4xx but 429): sending it again won't help."""


# ---------------------------------------------------------------------------------------
# Settings: the allowlist
# ---------------------------------------------------------------------------------------

def is_glob(pattern: str) -> bool:
    return not GLOB_CHARS.isdisjoint(pattern)


def unit_pattern_problem(entry: str) -> str | None:
    """Why `entry` is not a valid unit name or glob, or None when it is."""
    if not entry:
        return "empty name"
    if len(entry) > UNIT_NAME_MAX:
        return f"longer than {UNIT_NAME_MAX} characters"
    bad = sorted(set(entry) - UNIT_NAME_CHARS - GLOB_CHARS)
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"character {shown} is not allowed in a unit name (systemd-escape it)"
    if entry.startswith((".", "@")):
        return "a unit name cannot start with '.' or '@'"
    if not is_glob(entry) and "." in entry and not entry.endswith(UNIT_SUFFIXES):
        suffix = entry[entry.rindex("."):]
        return f"unknown unit type {suffix!r} (expected one of {', '.join(UNIT_SUFFIXES)})"
    return None


def normalise_unit_pattern(entry: str) -> str:
    """Give a bare name the .service suffix, the way systemctl reads `k3s` as k3s.service."""
    if is_glob(entry) or entry.endswith(UNIT_SUFFIXES):
        return entry
    return entry + ".service"


def parse_allowlist(text: str, source: str) -> list[str]:
    """One unit name or glob per line; '#' starts a comment. Raises on the first bad line."""
    patterns = []
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        problem = unit_pattern_problem(entry)
        if problem:
            raise HeartbeatError(f"{source}:{number}: bad allowlist entry {entry!r}: {problem}")
        patterns.append(normalise_unit_pattern(entry))
    return patterns


def check_unit_patterns(entries: list[str], source: str) -> list[str]:
    """Validate and normalise names given one by one (--unit, the Ansible module)."""
    patterns = []
    for entry in entries:
        problem = unit_pattern_problem(entry)
        if problem:
            raise HeartbeatError(f"{source}: bad unit {entry!r}: {problem}")
        patterns.append(normalise_unit_pattern(entry))
    return patterns


def unique(items) -> list:
    """Items in first-seen order without repeats."""
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------------------------------
# Reading systemd with systemctl: two calls per tick, whatever the number of units (the
# fallback when the system bus cannot be used), and collect(), which picks the way
# ---------------------------------------------------------------------------------------

def run_command(argv: list[str], timeout: float) -> str:
    """Run a command with a deadline; its stdout, or HeartbeatError naming what went wrong.

    posix_spawn and poll instead of subprocess, which costs a tick 3 ms of imports.
    """
    env = dict(os.environ, LC_ALL="C", TZ="UTC", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    what = " ".join(argv[:2])
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        pid = os.posix_spawnp(argv[0], argv, env, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_write, 1), (os.POSIX_SPAWN_DUP2, err_write, 2)])
    except OSError as error:
        for fd in (out_read, out_write, err_read, err_write):
            os.close(fd)
        raise HeartbeatError(f"cannot run {argv[0]}: {error.strerror}") from None
    os.close(out_write)
    os.close(err_write)
    try:
        out, err = read_until(pid, out_read, err_read, time.monotonic() + timeout)
    except TimeoutError:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        raise HeartbeatError(f"{what} did not answer within {timeout:g} s") from None
    finally:
        os.close(out_read)
        os.close(err_read)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise HeartbeatError(f"{what} exited {code}: {message[0]}")
    return out.decode("utf-8", "surrogateescape")


def read_until(pid: int, out_fd: int, err_fd: int, deadline: float) -> tuple[bytes, bytes]:
    """Drain a child's stdout and stderr until both close; TimeoutError at the deadline."""
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    open_fds = 2
    while open_fds:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        for fd, _ in poller.poll(remaining * 1000):
            data = os.read(fd, 1 << 16)
            if data:
                chunks[fd].append(data)
            else:
                poller.unregister(fd)
                open_fds -= 1
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd])


def parse_list_units(text: str) -> list[tuple[str, str, str, str]]:
    """`systemctl list-units --plain --no-legend --full` -> (unit, load, active, sub) rows."""
    rows = []
    for line in text.splitlines():
        fields = line.split(None, 4)
        if len(fields) >= 4:
            rows.append((fields[0], fields[1], fields[2], fields[3]))
    return rows


def select_units(patterns: list[str], loaded: list[tuple[str, str, str, str]]):
    """Which units to show: allowlisted names, glob matches, then every failed unit.

    Returns (names, allowlisted) where names keeps that order without repeats and
    allowlisted is the set of names the allowlist asked for.
    """
    exact = [p for p in patterns if not is_glob(p)]
    globs = [p for p in patterns if is_glob(p)]
    matched = []
    if globs:
        import fnmatch

        matched = sorted(row[0] for row in loaded if any(fnmatch.fnmatchcase(row[0], g) for g in globs))
    # sorted: systemctl lists units in its own order, D-Bus in another
    failed = sorted(row[0] for row in loaded if row[2] == "failed")
    allowlisted = set(exact) | set(matched)
    return unique(exact + matched + failed), allowlisted


def parse_show(text: str) -> list[dict[str, object]]:
    """`systemctl show -p ...` of several units -> one dict per unit, in order.

    Blocks are separated by a blank line. A property printed more than once
    (TimersMonotonic, TimersCalendar: one line per timer setting) becomes a list.
    """
    units: list[dict[str, object]] = []
    current: dict[str, object] = {}
    for line in text.split("\n"):
        if not line:
            if current:
                units.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue  # not a property line; systemctl never prints one, but be tolerant
        if key in ("TimersMonotonic", "TimersCalendar"):
            current.setdefault(key, []).append(value)  # type: ignore[union-attr]
        else:
            current[key] = value
    if current:
        units.append(current)
    return units


def show_units(names: list[str], run, timeout: float) -> list[dict[str, object]]:
    """One `systemctl show` for every unit; blocks are matched to names by position."""
    if not names:
        return []
    argv = ["systemctl", "show", "-p", ",".join(SHOW_PROPERTIES), "--", *names]
    blocks = parse_show(run(argv, timeout))
    if len(blocks) != len(names):
        raise HeartbeatError(f"systemctl show answered {len(blocks)} blocks for {len(names)} units")
    return blocks


class Snapshot:
    """What one collection saw.

    units: a dict per unit, the properties read (systemctl's text or D-Bus's raw values;
    the parsers take both) plus "Unit" (the name asked for, which the metrics carry) and
    "Allowlisted". manager_start: when PID 1 started. wall, monotonic: both clocks read
    right after systemd answered, to place monotonic timestamps (a monotonic timer's next
    elapse) on the wall clock. source: "dbus" or "systemctl"; warning: why not D-Bus.
    """

    __slots__ = ("units", "manager_start", "duration", "wall", "monotonic", "source", "warning")

    def __init__(self, units, manager_start, duration, wall, monotonic, source="systemctl", warning=None):
        self.units, self.manager_start, self.duration = units, manager_start, duration
        self.wall, self.monotonic = wall, monotonic
        self.source, self.warning = source, warning


def collect(patterns: list[str], run=run_command, timeout: float = DEFAULT_TIMEOUT,
            bus: str | None = None) -> Snapshot:
    """Read the state of the allowlisted and failed units.

    With `bus` (the system bus socket's path: the heartbeat's and the module's default), over
    D-Bus; without it, or when that socket cannot be used, with two systemctl calls through
    `run(argv, timeout)`, which returns a command's stdout.
    """
    started = time.monotonic()
    warning = None
    if bus:
        connection = None
        try:
            connection = SystemBus(bus, timeout)
            units, manager_start = read_over_bus(patterns, connection)
        except BusUnavailable as error:  # before the bus answered anything
            warning = f"{error}; reading through systemctl instead"
        else:
            wall, monotonic = time.time(), time.monotonic()
            return Snapshot(units, manager_start, monotonic - started, wall, monotonic, "dbus")
        finally:
            if connection:
                connection.close()
    units, manager_start = read_with_systemctl(patterns, run, timeout)
    wall, monotonic = time.time(), time.monotonic()
    return Snapshot(units, manager_start, monotonic - started, wall, monotonic, "systemctl", warning)


def read_with_systemctl(patterns: list[str], run, timeout: float) -> tuple[list[dict], float | None]:
    """The allowlisted and failed units with two systemctl calls, whatever their number."""
    # Globs are matched against every loaded unit; without globs only failed units are needed.
    state_filter = "--all" if any(is_glob(p) for p in patterns) else "--state=failed"
    listing = run(["systemctl", "list-units", state_filter, "--plain", "--no-legend",
                   "--full", "--no-pager"], timeout)
    names, allowlisted = select_units(patterns, parse_list_units(listing))
    blocks = show_units([MANAGER_UNIT, *names], run, timeout)
    manager_start = parse_timestamp(blocks[0].get("ActiveEnterTimestamp", ""))
    units = []
    for name, block in zip(names, blocks[1:]):
        block["Unit"] = name
        block["Allowlisted"] = name in allowlisted
        units.append(block)
    return units, manager_start


# ---------------------------------------------------------------------------------------
# Reading systemd over D-Bus: a small hand-written client for the system bus socket
# ---------------------------------------------------------------------------------------
# Why: `systemctl show` formats some 300 properties per unit in a process of its own. Asking
# systemd for only the few each unit's metrics need, pipelined (many calls written before the
# first answer is read), costs a fraction of that and spawns nothing (BENCHMARKS.md). The
# wire format below is the D-Bus specification's, little-endian, limited to what the calls
# send and systemd's answers use. Any user may read unit state on the system bus.

SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
SYSTEMD_BUS_NAME = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER_INTERFACE = "org.freedesktop.systemd1.Manager"
PROPERTIES_INTERFACE = "org.freedesktop.DBus.Properties"
UNIT_INTERFACE = "org.freedesktop.systemd1.Unit"
SERVICE_INTERFACE = "org.freedesktop.systemd1.Service"
TIMER_INTERFACE = "org.freedesktop.systemd1.Timer"
# dbus-daemon answers LimitsExceeded past max_replies_per_connection (128 on the system bus)
# calls waiting for a reply, so at most this many are in flight.
BUS_WINDOW = 100

# The properties a unit's metrics need beyond its listing (load, active and sub state), by
# unit type; they mirror SHOW_PROPERTIES. Each Get costs systemd and dbus-daemon ~45 µs, so
# what only a unit that is not active needs (when it stopped; a oneshot's last run) is asked
# for those alone, once their state is known.
BUS_PROPERTIES = {
    "service": ((SERVICE_INTERFACE, "NRestarts"), (SERVICE_INTERFACE, "ExecMainCode"),
                (SERVICE_INTERFACE, "ExecMainStatus")),
    "timer": ((TIMER_INTERFACE, "LastTriggerUSec"), (TIMER_INTERFACE, "NextElapseUSecRealtime"),
              (TIMER_INTERFACE, "NextElapseUSecMonotonic"), (TIMER_INTERFACE, "TimersMonotonic"),
              (TIMER_INTERFACE, "TimersCalendar"), (UNIT_INTERFACE, "ActiveEnterTimestamp")),
}
STOPPED_PROPERTIES = {
    "service": ((SERVICE_INTERFACE, "Type"), (UNIT_INTERFACE, "ActiveExitTimestamp"),
                (SERVICE_INTERFACE, "ExecMainStartTimestamp"), (SERVICE_INTERFACE, "ExecMainExitTimestamp")),
    "timer": (),  # a timer counts from its last trigger, whatever its state
}


class BusUnavailable(HeartbeatError):
    """The system bus cannot be used (no socket, refused): systemctl may still work."""


class BusCallError:
    """An error reply to one call (an unknown property on an older systemd, a vanished unit)."""

    __slots__ = ("name", "message")

    def __init__(self, name: str, message: str):
        self.name, self.message = name, message


def system_bus_path(environ=os.environ) -> str:
    """The socket of $DBUS_SYSTEM_BUS_ADDRESS's first unix:path= address, else the standard one."""
    for address in environ.get("DBUS_SYSTEM_BUS_ADDRESS", "").split(";"):
        transport, _, options = address.partition(":")
        for option in options.split(",") if transport == "unix" else ():
            key, _, value = option.partition("=")
            if key == "path" and value:
                # addresses escape bytes as %XX
                parts = value.split("%")
                return (parts[0].encode() + b"".join(
                    bytes.fromhex(p[:2]) + p[2:].encode() for p in parts[1:])).decode()
    return SYSTEM_BUS_SOCKET


# --- marshalling: method calls --------------------------------------------------------

def _header_field(code: int, signature: str, value: str) -> bytes:
    """One header field, a (byte code, variant) struct: the variant's signature, then its value."""
    data = value.encode()
    if signature == "g":  # a signature: one length byte
        return bytes((code, 1, 103, 0, len(data))) + data + b"\0"
    # a string or object path: the variant signature fills 4 bytes, so the length is aligned
    return bytes((code, 1, ord(signature), 0)) + struct.pack("<I", len(data)) + data + b"\0"


_CONSTANT_FIELDS: dict[tuple, bytes] = {}


def method_call(serial: int, path: str, interface: str, member: str, signature: str = "",
                body: bytes = b"", destination: str = SYSTEMD_BUS_NAME) -> bytes:
    """A METHOD_CALL message: fixed header, header fields (each struct 8-aligned), body."""
    key = (interface, member, signature, destination)
    constant = _CONSTANT_FIELDS.get(key)
    if constant is None:  # the fields after the path are the same for every Get: encode once
        fields = [_header_field(2, "s", interface), _header_field(3, "s", member),
                  _header_field(6, "s", destination)]
        if signature:
            fields.append(_header_field(8, "g", signature))
        # padding goes between the fields, not after the last one: it is not part of the array
        constant = _CONSTANT_FIELDS[key] = b"".join(f + b"\0" * (-len(f) % 8) for f in fields[:-1]) + fields[-1]
    path_field = _header_field(1, "o", path)
    array = path_field + b"\0" * (-len(path_field) % 8) + constant
    # 'l' little-endian, type 1 METHOD_CALL, no flags, protocol version 1
    header = b"l\1\0\1" + struct.pack("<III", len(body), serial, len(array)) + array
    return header + b"\0" * (-len(header) % 8) + body


def marshal_strings(*texts: str) -> bytes:
    """A body of consecutive strings ("s", "ss"): uint32 length, UTF-8, NUL, each 4-aligned."""
    out = b""
    for text in texts:
        data = text.encode()
        out += b"\0" * (-len(out) % 4) + struct.pack("<I", len(data)) + data + b"\0"
    return out


def marshal_string_array(texts: list[str]) -> bytes:
    """An "as" body: the byte length of the elements, then the strings."""
    elements = marshal_strings(*texts)
    return struct.pack("<I", len(elements)) + elements


# --- unmarshalling: replies -----------------------------------------------------------

# struct format and size of the fixed-size types; alignment of every type
_FIXED = {"y": ("<B", 1), "b": ("<I", 4), "n": ("<h", 2), "q": ("<H", 2), "i": ("<i", 4),
          "u": ("<I", 4), "h": ("<I", 4), "x": ("<q", 8), "t": ("<Q", 8), "d": ("<d", 8)}
_ALIGNMENT = {"y": 1, "g": 1, "v": 1, "n": 2, "q": 2, "b": 4, "i": 4, "u": 4, "h": 4, "s": 4,
              "o": 4, "a": 4, "x": 8, "t": 8, "d": 8, "(": 8, "{": 8}


def _type_end(signature: str, start: int) -> int:
    """Index just past the single complete type that starts at `start`."""
    end = start
    while signature[end] == "a":
        end += 1
    if signature[end] in "({":
        depth = 0
        for end in range(end, len(signature)):
            depth += (signature[end] in "({") - (signature[end] in ")}")
            if not depth:
                break
    return end + 1


def decode_value(data: bytes, position: int, signature: str):
    """(value, next position) of one complete type; offsets count from the message start,
    which alignment is relative to. Structs become tuples, arrays lists, variants their value."""
    code = signature[0]
    position += -position % _ALIGNMENT[code]
    if code in "so":
        length = struct.unpack_from("<I", data, position)[0]
        return data[position + 4:position + 4 + length].decode("utf-8", "surrogateescape"), position + 5 + length
    if code in _FIXED:
        fmt, size = _FIXED[code]
        value = struct.unpack_from(fmt, data, position)[0]
        return (bool(value) if code == "b" else value), position + size
    if code == "g":
        length = data[position]
        return data[position + 1:position + 1 + length].decode("ascii"), position + 2 + length
    if code == "v":
        inner, position = decode_value(data, position, "g")
        return decode_value(data, position, inner)
    if code == "a":
        element = signature[1:]
        length = struct.unpack_from("<I", data, position)[0]
        position += 4
        position += -position % _ALIGNMENT[element[0]]  # padding before the first element
        end, items = position + length, []
        while position < end:
            item, position = decode_value(data, position, element)
            items.append(item)
        return items, end
    if code in "({":
        return decode_values(data, position, signature[1:-1])
    raise HeartbeatError(f"D-Bus type {code!r} is not supported")


def decode_values(data: bytes, position: int, signature: str) -> tuple[tuple, int]:
    """A sequence of complete types (a body, a struct's members) -> (tuple of values, position)."""
    values, start = [], 0
    while start < len(signature):
        end = _type_end(signature, start)
        value, position = decode_value(data, position, signature[start:end])
        values.append(value)
        start = end
    return tuple(values), position


def header_fields(message: bytes) -> dict:
    """{code: value} of a message's header fields. The ones replies carry (reply serial u,
    error name s, sender s, destination s, signature g) are read directly: this runs for
    every reply, and the generic decoder costs several times more."""
    end = 16 + struct.unpack_from("<I", message, 12)[0]
    position, fields = 16, {}
    while position < end:
        code = message[position]
        # the variant's one-character signature; 0 for a longer one, which goes the generic way
        kind = message[position + 2] if message[position + 1] == 1 else 0
        if kind == 0x75:  # u, 4-aligned at +4
            fields[code] = struct.unpack_from("<I", message, position + 4)[0]
            position += 8
        elif kind in (0x73, 0x6F):  # s, o: length at +4
            length = struct.unpack_from("<I", message, position + 4)[0]
            fields[code] = message[position + 8:position + 8 + length].decode("utf-8", "surrogateescape")
            position += 9 + length
        elif kind == 0x67:  # g: one length byte at +4
            length = message[position + 4]
            fields[code] = message[position + 5:position + 5 + length].decode("ascii")
            position += 6 + length
        else:
            (code, value), position = decode_value(message, position, "(yv)")
            fields[code] = value
        position += -position % 8
    return fields


def body_offset(fields_length: int) -> int:
    """Where a message's body starts: after the 16 fixed bytes and the fields, 8-aligned."""
    return 16 + fields_length + (-fields_length % 8)


# inner signature of a one-value variant -> (struct format, or "" for a string; alignment)
_SIMPLE_VARIANTS = {b"t": ("<Q", 8), b"x": ("<q", 8), b"u": ("<I", 4), b"i": ("<i", 4), b"s": ("", 4)}


def parse_message(message: bytes):
    """(type, reply serial, the reply's values or a BusCallError) of one whole message."""
    fields = header_fields(message)
    body_start = body_offset(struct.unpack_from("<I", message, 12)[0])
    signature = fields.get(8, "")
    inner = message[body_start + 1:body_start + 2]
    if message[1] == 2 and signature == "v" and message[body_start] == 1 and inner in _SIMPLE_VARIANTS:
        # a Get's answer, usually one number or string: skip the generic decoder
        fmt, size = _SIMPLE_VARIANTS[inner]
        position = body_start + 3
        position += -position % size
        if fmt:
            return message[1], fields.get(5), (struct.unpack_from(fmt, message, position)[0],)
        length = struct.unpack_from("<I", message, position)[0]
        return message[1], fields.get(5), (message[position + 4:position + 4 + length].decode(
            "utf-8", "surrogateescape"),)
    values = decode_values(message, body_start, signature)[0]
    if message[1] == 3:  # ERROR: its name is a header field, the first string its message
        text = values[0] if values and isinstance(values[0], str) else ""
        return 3, fields.get(5), BusCallError(str(fields.get(4, "")), text)
    return message[1], fields.get(5), values


# --- the connection -------------------------------------------------------------------

class SystemBus:
    """One connection to the system bus; calls are pipelined and matched to replies by serial."""

    def __init__(self, path: str, timeout: float):
        if sys.byteorder != "little":  # systemd writes in the host's order; this client reads 'l'
            raise BusUnavailable("the D-Bus client reads little-endian messages only, this host is big-endian")
        self.path, self.timeout = path, timeout
        self.deadline = time.monotonic() + timeout
        self.buffer = b""
        self.serial = 1
        self.connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.greeted = False  # the bus has not yet answered the authentication
        try:
            self.connection.settimeout(timeout)
            self.connection.connect(path)
        except OSError as error:
            self.close()
            raise BusUnavailable(f"cannot use the system bus at {path}: {error.strerror or error}") from None
        uid = str(os.geteuid()).encode().hex().encode()
        # Authenticate as our uid, begin, say Hello; the first calls follow in the same write
        # (call_all), without waiting for the answer: the bus reads them all in order.
        self.pending = b"\0AUTH EXTERNAL " + uid + b"\r\nBEGIN\r\n" + method_call(
            1, "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello", destination="org.freedesktop.DBus")

    def greeting(self) -> bool:
        """Consume the bus's answer to the authentication once it is in; whether it is."""
        if b"\r\n" not in self.buffer:
            return False
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        if not line.startswith(b"OK "):
            raise BusUnavailable(f"the system bus at {self.path} refused us: {line[:80].decode('ascii', 'replace')}")
        self.greeted = True
        return True

    def receive(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.connection.settimeout(remaining)
        chunk = self.connection.recv(1 << 18)
        if not chunk:
            raise BusUnavailable(f"the system bus at {self.path} closed the connection")
        self.buffer += chunk

    def whole_messages(self):
        """Cut every complete message off the front of the buffer."""
        buffer, start = self.buffer, 0
        while len(buffer) - start >= 16:
            if buffer[start] != 0x6C:  # 'l'
                raise HeartbeatError("big-endian D-Bus messages are not supported")
            body_length, _, fields_length = struct.unpack_from("<III", buffer, start + 4)
            end = start + body_offset(fields_length) + body_length
            if end > len(buffer):
                break
            yield buffer[start:end]
            start = end
        self.buffer = buffer[start:]

    def call_all(self, requests: list[tuple]) -> list:
        """Every call (path, interface, member[, signature, body]) with BUS_WINDOW in flight;
        their replies in the same order: a tuple of values or a BusCallError."""
        results: list = [None] * len(requests)
        first = self.serial + 1
        sent = answered = 0
        try:
            while answered < len(requests):
                batch = []
                while sent < len(requests) and sent - answered < BUS_WINDOW:
                    self.serial += 1
                    batch.append(method_call(self.serial, *requests[sent]))
                    sent += 1
                if batch or self.pending:
                    self.connection.settimeout(max(0.001, self.deadline - time.monotonic()))
                    self.connection.sendall(self.pending + b"".join(batch))
                    self.pending = b""
                self.receive()
                if not self.greeted and not self.greeting():
                    continue
                for message in self.whole_messages():
                    kind, reply_to, values = parse_message(message)
                    if kind in (2, 3) and reply_to is not None and 0 <= reply_to - first < len(requests):
                        results[reply_to - first] = values
                        answered += 1
        except TimeoutError:
            raise HeartbeatError(f"systemd did not answer on the system bus within {self.timeout:g} s") from None
        except (struct.error, IndexError, KeyError, ValueError, RecursionError) as error:
            raise HeartbeatError(f"malformed message on the system bus: {type(error).__name__}: {error}") from None
        except BusUnavailable as error:
            if not self.greeted:  # nothing read yet: systemctl may still work
                raise
            raise HeartbeatError(f"reading systemd on the system bus failed: {error}") from None
        except OSError as error:
            if not self.greeted:
                raise BusUnavailable(f"cannot use the system bus at {self.path}: {error.strerror or error}") from None
            raise HeartbeatError(f"reading systemd on the system bus failed: {error.strerror or error}") from None
        return results

    def close(self) -> None:
        self.connection.close()


_GET_BODIES: dict[tuple, bytes] = {}


def get_property(path: str, interface: str, name: str) -> tuple:
    body = _GET_BODIES.get((interface, name))
    if body is None:
        body = _GET_BODIES[(interface, name)] = marshal_strings(interface, name)
    return (path, PROPERTIES_INTERFACE, "Get", "ss", body)


# systemd's bus_label_escape: bytes other than [A-Za-z0-9] become _XX (a leading digit too)
_PATH_ESCAPES = {code: chr(code) if chr(code).isalnum() else f"_{code:02x}" for code in range(128)}


def unit_path(name: str) -> str:
    """A unit's object path. Unit names are ASCII (systemd allows [A-Za-z0-9:_.@\\-])."""
    escaped = name.translate(_PATH_ESCAPES)
    if escaped[:1].isdigit():
        escaped = f"_{ord(escaped[0]):02x}" + escaped[1:]
    return "/org/freedesktop/systemd1/unit/" + (escaped or "_")


def listing_rows(reply, what: str) -> list[tuple]:
    """ListUnits*'s a(ssssssouso) -> (name, load, active, sub, object path) rows."""
    if isinstance(reply, BusCallError):
        raise HeartbeatError(f"systemd refused {what}: {reply.name}: {reply.message}")  # e.g. AccessDenied
    return [(row[0], row[2], row[3], row[4], row[6]) for row in reply[0]]


def property_calls(unit: dict, path: str, wanted) -> list[tuple]:
    return [(unit, prop, get_property(path, interface, prop)) for interface, prop in wanted]


def own_properties(kind: str) -> tuple:
    """What every unit of this type is asked for: its state change time, then BUS_PROPERTIES."""
    return ((UNIT_INTERFACE, "StateChangeTimestamp"), *BUS_PROPERTIES.get(kind, ()))


def read_over_bus(patterns: list[str], bus: SystemBus) -> tuple[list[dict], float | None]:
    """The allowlisted and failed units over D-Bus, in two pipelined rounds. The first: the
    listings, and each allowlisted unit's own properties (its object path follows from its
    name). The second: units only the listings named (globs, failed) and what a unit that is
    not active needs. Unit dicts hold systemd's raw values (µs timestamps)."""
    exact = [p for p in patterns if not is_glob(p)]
    listing_call = ((MANAGER_PATH, MANAGER_INTERFACE, "ListUnits") if len(exact) < len(patterns) else
                    (MANAGER_PATH, MANAGER_INTERFACE, "ListUnitsFiltered", "as", marshal_string_array(["failed"])))
    calls = [get_property(unit_path(MANAGER_UNIT), UNIT_INTERFACE, "ActiveEnterTimestamp"), listing_call]
    if exact:
        calls.append((MANAGER_PATH, MANAGER_INTERFACE, "ListUnitsByNames", "as", marshal_string_array(exact)))
    asked = {name: {"Unit": name} for name in exact}  # the allowlisted units, asked in round one
    paths = {name: unit_path(name) for name in exact}
    gets = []
    for name, unit in asked.items():
        gets += property_calls(unit, paths[name], own_properties(unit_type(name)))
    replies = bus.call_all(calls + [call for _, _, call in gets])
    store_answers(gets, replies[len(calls):])
    manager_start = None if isinstance(replies[0], BusCallError) else parse_timestamp(replies[0][0])
    loaded = listing_rows(replies[1], listing_call[2])
    rows = {row[0]: row for row in loaded}
    if exact:
        by_name = listing_rows(replies[2], "ListUnitsByNames")
        if len(by_name) != len(exact):
            raise HeartbeatError(f"systemd answered {len(by_name)} units for {len(exact)} names")
        rows.update(zip(exact, by_name))  # by the name asked for: an alias answers as its unit
    names, allowlisted = select_units(patterns, [row[:4] for row in loaded])
    units, gets = [], []
    for name in names:
        unit_id, load_state, active_state, sub_state, path = rows[name]
        unit = asked.get(name) or {"Unit": name}
        unit.update(Id=unit_id, LoadState=load_state, ActiveState=active_state, SubState=sub_state,
                    Allowlisted=name in allowlisted)
        kind = unit_type(name)
        if path != paths.get(name):  # not asked yet (or asked at another path: an alias's)
            gets += property_calls(unit, path, own_properties(kind))
        if active_state not in ("active", "reloading"):
            gets += property_calls(unit, path, STOPPED_PROPERTIES.get(kind, ((UNIT_INTERFACE, "ActiveExitTimestamp"),)))
        units.append(unit)
    store_answers(gets, bus.call_all([call for _, _, call in gets]))
    return units, manager_start


def store_answers(gets: list[tuple], replies: list) -> None:
    """Put each Get's answer into its unit dict; an error leaves the property out (NRestarts
    before systemd 235, a unit that vanished), as systemctl show would."""
    for (unit, prop, _), reply in zip(gets, replies):
        if isinstance(reply, BusCallError):
            unit.pop(prop, None)
        else:
            unit[prop] = reply[0]


# ---------------------------------------------------------------------------------------
# Parsing systemctl's value formats
# ---------------------------------------------------------------------------------------

# systemd's "never" on D-Bus: 0, or USEC_INFINITY (all ones)
USEC_NEVER = 2 ** 64 - 1


def parse_timestamp(value: str | int) -> float | None:
    """'Fri 2026-11-27 19:25:44 UTC' (LC_ALL=C TZ=UTC) or D-Bus's µs -> Unix seconds;
    '', 'n/a', 0 and infinity -> None.

    systemd 249 prints these human-readable whatever --timestamp says (LastTriggerUSec and
    NextElapseUSecRealtime ignore it even on 252), so one parser serves every version.
    """
    if isinstance(value, int):
        return value / 1e6 if 0 < value < USEC_NEVER else None
    fields = value.split()
    if len(fields) < 3 or fields[0] == "n/a":
        return None
    try:
        year, month, day = (int(x) for x in fields[1].split("-"))
        clock = fields[2].split(":")
        hour, minute = int(clock[0]), int(clock[1])
        second = float(clock[2])
    except (ValueError, IndexError):
        return None
    from datetime import datetime, timezone

    try:
        stamp = datetime(year, month, day, hour, minute, tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None
    return stamp + second


TIMESPAN_UNITS = {
    "y": 31557600.0, "month": 2629800.0, "w": 604800.0, "d": 86400.0, "h": 3600.0,
    "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "μs": 1e-6,
}


def parse_timespan(value: str | int) -> float | None:
    """systemd's '1d 2h 3min 4.5s' / '30s' / '500ms', or D-Bus's µs -> seconds; else None."""
    if isinstance(value, int):
        return value / 1e6 if value < USEC_NEVER else None
    total = 0.0
    words = value.split()
    if not words:
        return None
    for word in words:
        digits = word.rstrip("abcdefghijklmnopqrstuvwxyzμ")
        unit = word[len(digits):] or "s"
        if unit not in TIMESPAN_UNITS or not digits:
            return None
        try:
            total += float(digits) * TIMESPAN_UNITS[unit]
        except ValueError:
            return None
    return total


def parse_timer_settings(entries) -> list[tuple[str, str | int]]:
    """'{ OnUnitActiveUSec=30s ; next_elapse=... }' lines, or D-Bus's (base, value, next
    elapse) structs -> [(base, value), ...]."""
    settings = []
    for entry in entries or ():
        if isinstance(entry, tuple) and len(entry) >= 2:
            settings.append((entry[0], entry[1]))
            continue
        if not isinstance(entry, str):
            continue
        body = entry.strip().strip("{}").strip()
        first = body.split(" ; ", 1)[0]
        base, sep, value = first.partition("=")
        if sep:
            settings.append((base.strip(), value.strip()))
    return settings


def as_int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------
# Shaping: unit properties -> samples
# ---------------------------------------------------------------------------------------

# A sample is (metric name, kind, labels, value); kind is "gauge" or "counter";
# labels is a tuple of (key, value) pairs; value None is a staleness marker.

def unit_type(name: str) -> str:
    return name.rsplit(".", 1)[-1] if "." in name else ""


def repeating_period(unit: dict) -> float | None:
    """The shortest repeating monotonic setting (OnUnitActiveSec, OnUnitInactiveSec)."""
    periods = [parse_timespan(value) for base, value in parse_timer_settings(unit.get("TimersMonotonic"))
               if base in REPEATING_TIMER_BASES]
    periods = [p for p in periods if p]
    return min(periods) if periods else None


def timer_interval(unit: dict, remembered: float | None, calendar: dict) -> float | None:
    """A timer's own period, so alerts need no per-timer threshold.

    1. repeating monotonic settings give it directly;
    2. a calendar timer that fired: the gap from its last trigger to its next elapse
       (for Mon..Fri schedules this is the gap that matters right now);
    3. a calendar timer that never fired: the gap between its next two elapses
       (systemd-analyze calendar, looked up once per expression and remembered);
    4. otherwise the last value seen (a stopped calendar timer has no next elapse).
    """
    period = repeating_period(unit)
    if period is not None:
        return period
    expressions = [v for b, v in parse_timer_settings(unit.get("TimersCalendar")) if b == "OnCalendar"]
    if expressions:
        last = parse_timestamp(unit.get("LastTriggerUSec", ""))
        following = parse_timestamp(unit.get("NextElapseUSecRealtime", ""))
        if last is not None and following is not None and following > last:
            return following - last
        gaps = [calendar[e] for e in expressions if calendar.get(e)]
        if gaps:
            return min(gaps)
    return remembered


def calendar_expressions(units: list[dict], known: dict) -> list[str]:
    """OnCalendar expressions whose period cannot be read off the timer and is not known yet:
    calendar timers that never triggered (after a reboot, unless Persistent=true)."""
    wanted = []
    for unit in units:
        if unit_type(str(unit["Unit"])) != "timer" or repeating_period(unit) is not None:
            continue
        if parse_timestamp(unit.get("LastTriggerUSec", "")) is not None:
            continue
        wanted += [value for base, value in parse_timer_settings(unit.get("TimersCalendar"))
                   if base == "OnCalendar" and value not in known]
    return unique(wanted)


def calendar_periods(expressions: list[str], run=run_command,
                     timeout: float = DEFAULT_TIMEOUT) -> dict[str, float]:
    """Gap between the next two elapses of each OnCalendar expression, in one call."""
    if not expressions:
        return {}
    text = run(["systemd-analyze", "calendar", "--iterations=2", "--", *expressions], timeout)
    periods, elapses = {}, []
    for line in text.splitlines() + [""]:
        label, _, value = line.strip().partition(": ")
        if label in ("Next elapse", "Iter. #2"):
            elapses.append(parse_timestamp(value))
        elif not line.strip() and elapses:
            if len(elapses) == 2 and None not in elapses and len(periods) < len(expressions):
                periods[expressions[len(periods)]] = elapses[1] - elapses[0]
            elapses = []
    return periods


def next_elapse(unit: dict, wall: float, monotonic: float) -> float | None:
    """When the timer fires next, on the wall clock; a monotonic elapse is converted."""
    realtime = parse_timestamp(unit.get("NextElapseUSecRealtime", ""))
    relative = parse_timespan(unit.get("NextElapseUSecMonotonic", ""))
    candidates = [t for t in (realtime, relative and wall + relative - monotonic) if t]
    return min(candidates) if candidates else None


def seconds_since_active(unit: dict, now: float, manager_start: float | None) -> float | None:
    """How long ago the unit last did its job; the stale-timer and stuck-job signal.

    timer:   since its last trigger; never triggered -> since it was activated.
    service: 0 while active; a oneshot -> since its last run ended (0 while it runs);
             otherwise since it stopped being active.
    any:     never active since boot -> since the manager started (a lower bound).
    """
    kind = unit_type(str(unit.get("Unit", "")))
    active_state = unit.get("ActiveState")
    if kind == "timer":
        since = parse_timestamp(unit.get("LastTriggerUSec", ""))
        if since is None:
            since = parse_timestamp(unit.get("ActiveEnterTimestamp", ""))
    elif active_state in ("active", "reloading"):
        return 0.0
    elif unit.get("Type") == "oneshot" and unit.get("ExecMainStartTimestamp"):
        if active_state == "activating" and unit.get("SubState") == "start":
            return 0.0
        since = parse_timestamp(unit.get("ExecMainExitTimestamp", ""))
        if since is None:
            since = parse_timestamp(unit.get("ExecMainStartTimestamp", ""))
    else:
        since = parse_timestamp(unit.get("ActiveExitTimestamp", ""))
    if since is None:
        since = manager_start
    if since is None:
        return None
    return max(0.0, now - since)


def unit_samples(unit: dict, host: str, snapshot: Snapshot, remembered_interval: float | None = None,
                 calendar: dict | None = None) -> list[tuple]:
    """Every sample one unit contributes."""
    now, manager_start = snapshot.wall, snapshot.manager_start
    name = str(unit["Unit"])
    kind = unit_type(name)
    base = (("unit", name), ("host", host))
    active_state = str(unit.get("ActiveState", ""))
    sub_state = str(unit.get("SubState", ""))
    samples = [
        ("systemd_unit_active", "gauge", (("unit", name), ("sub_state", sub_state), ("host", host)),
         1.0 if active_state == "active" else 0.0),
        ("systemd_unit_info", "gauge", base + (
            ("load_state", str(unit.get("LoadState", ""))), ("active_state", active_state),
            ("sub_state", sub_state), ("unit_type", kind),
            ("allowlisted", "true" if unit.get("Allowlisted") else "false"),
        ), 1.0),
    ]
    # A unit systemd does not know has no run to report: its info says not-found.
    is_service = kind == "service" and unit.get("LoadState") != "not-found"
    restarts = as_int(unit.get("NRestarts", ""))
    if is_service and restarts is not None:
        samples.append(("systemd_unit_restart_count_total", "counter", base, float(restarts)))
    status, code = as_int(unit.get("ExecMainStatus", "")), as_int(unit.get("ExecMainCode", ""))
    if is_service and status is not None:
        samples.append(("systemd_unit_last_exit_status", "gauge", base, float(status)))
    if is_service and code is not None:
        samples.append(("systemd_unit_last_exit_code", "gauge", base, float(code)))
    since = seconds_since_active(unit, now, manager_start)
    if since is not None:
        samples.append(("systemd_unit_seconds_since_active", "gauge", base, round(since, 3)))
    changed = parse_timestamp(unit.get("StateChangeTimestamp", ""))
    if changed is not None:
        samples.append(("systemd_unit_state_change_timestamp_seconds", "gauge", base, changed))
    if kind == "timer":
        last = parse_timestamp(unit.get("LastTriggerUSec", ""))
        if last is not None:
            samples.append(("systemd_timer_last_trigger_timestamp_seconds", "gauge", base, last))
        following = next_elapse(unit, snapshot.wall, snapshot.monotonic)
        if following is not None:
            samples.append(("systemd_timer_next_elapse_timestamp_seconds", "gauge", base,
                            round(following, 3)))
        interval = timer_interval(unit, remembered_interval, calendar or {})
        if interval is not None:
            samples.append(("systemd_timer_interval_seconds", "gauge", base, interval))
    return samples


def health_samples(host: str, duration: float, units: list[dict]) -> list[tuple]:
    """The heartbeat's own health: alive, how long collection took, how much it saw."""
    labels = (("host", host),)
    failed = sum(1 for u in units if u.get("ActiveState") == "failed")
    return [
        ("systemd_heartbeat_up", "gauge", labels, 1.0),
        ("systemd_heartbeat_collect_duration_seconds", "gauge", labels, round(duration, 6)),
        ("systemd_heartbeat_units_reported", "gauge", labels, float(len(units))),
        ("systemd_heartbeat_units_failed", "gauge", labels, float(failed)),
    ]


def spool_samples(host: str, waiting: int, dropped: int) -> list[tuple]:
    """How many payloads wait in the spool, and how many the caps ever dropped (cumulative)."""
    labels = (("host", host),)
    return [("systemd_heartbeat_spooled_payloads", "gauge", labels, float(waiting)),
            ("systemd_heartbeat_spool_dropped_total", "counter", labels, float(dropped))]


def shape(snapshot: Snapshot, host: str, memory: dict | None = None) -> list[tuple]:
    """All samples of one tick."""
    memory = memory or {}
    intervals, calendar = memory.get("intervals", {}), memory.get("calendar", {})
    samples = []
    for unit in snapshot.units:
        samples.extend(unit_samples(unit, host, snapshot, intervals.get(unit["Unit"]), calendar))
    samples.extend(health_samples(host, snapshot.duration, snapshot.units))
    return samples


# ---------------------------------------------------------------------------------------
# Memory between ticks: which series were pushed last, so ended ones get a staleness marker
# ---------------------------------------------------------------------------------------

# marshal, not json: json imports re (with enum, functools, collections), 4 ms of every tick.
# The file is private to the service (StateDirectoryMode=0700, UMask=0077) and starts with the CRC-32
# of the rest: marshal trusts the lengths it reads, and a corrupt one could make it allocate
# for seconds. A file that fails the check or that marshal cannot read (written by another
# Python version) only costs one tick's staleness markers.
MEMORY_FILE = "last-push.marshal"
LEGACY_MEMORY_FILE = "last-push.json"  # written before 0.2; read once, then replaced


def load_memory(state_dir: str | None) -> dict:
    """The last successful push's series and timer intervals; empty when unknown or unreadable."""
    if not state_dir:
        return {}
    import marshal

    try:
        with open(os.path.join(state_dir, MEMORY_FILE), "rb") as handle:
            data = handle.read()
        if len(data) < 4 or struct.unpack_from("<I", data)[0] != zlib.crc32(data[4:]):
            return {}
        memory = marshal.loads(data[4:])
    except FileNotFoundError:
        memory = load_legacy_memory(state_dir)
    except (OSError, EOFError, ValueError, TypeError):
        return {}
    return well_formed(memory)


# what each memory entry must be; an entry of another type is dropped
MEMORY_TYPES = {"series": (list, tuple), "intervals": dict, "calendar": dict, "spool_dropped": (int, float)}


def well_formed(memory) -> dict:
    if not isinstance(memory, dict):
        return {}
    return {key: value for key, value in memory.items()
            if key in MEMORY_TYPES and isinstance(value, MEMORY_TYPES[key])}


def load_legacy_memory(state_dir: str) -> dict:
    import json

    try:
        with open(os.path.join(state_dir, LEGACY_MEMORY_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}  # load_memory checks the shape


def remember(state_dir: str | None, samples: list[tuple], calendar: dict | None = None,
             spool_dropped: int = 0) -> None:
    """Record what was pushed (atomically: a crash never leaves half a file)."""
    if not state_dir:
        return
    import marshal

    series = [(name, kind, labels) for name, kind, labels, value in samples if value is not None]
    intervals = {dict(labels)["unit"]: value for name, _, labels, value in samples
                 if name == "systemd_timer_interval_seconds"}
    path = os.path.join(state_dir, MEMORY_FILE)
    temporary = path + ".tmp"
    data = marshal.dumps({"series": series, "intervals": intervals, "calendar": calendar or {},
                          "spool_dropped": spool_dropped})
    with open(temporary, "wb") as handle:
        handle.write(struct.pack("<I", zlib.crc32(data)) + data)
    os.replace(temporary, path)
    try:
        os.remove(os.path.join(state_dir, LEGACY_MEMORY_FILE))
    except FileNotFoundError:
        pass


def staleness_markers(memory: dict, samples: list[tuple]) -> list[tuple]:
    """A marker for every series pushed last time and absent now (e.g. the old sub_state)."""
    current = {(name, labels) for name, _, labels, _ in samples}
    markers = []
    for entry in memory.get("series", ()):
        try:
            name, kind, labels = entry[0], entry[1], tuple(tuple(pair) for pair in entry[2])
        except (IndexError, TypeError):
            continue
        if (name, labels) not in current:
            markers.append((name, kind, labels, None))
    return markers


# ---------------------------------------------------------------------------------------
# OTLP/HTTP protobuf, written by hand (opentelemetry/proto/metrics/v1/metrics.proto)
# ---------------------------------------------------------------------------------------

def _varint(number: int) -> bytes:
    """Base-128 varint, least significant group first."""
    if number < 0x80:  # most are: tags, short lengths
        return bytes((number,))
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _tag(field: int, wire_type: int) -> bytes:
    """Field key: (field_number << 3) | wire_type. Wire types: 0 varint, 1 64-bit, 2 bytes."""
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
    """A length-delimited field: embedded messages and strings."""
    return _tag(field, 2) + _varint(len(payload)) + payload


def _string_field(field: int, text: str) -> bytes:
    return _bytes_field(field, text.encode("utf-8", "surrogateescape"))


def _key_value(key: str, value: str) -> bytes:
    # KeyValue { string key = 1; AnyValue value = 2; }  AnyValue { string string_value = 1; }
    return _string_field(1, key) + _bytes_field(2, _string_field(1, value))


# NumberDataPoint { fixed64 time_unix_nano = 3; double as_double = 4;
#                   repeated KeyValue attributes = 7; uint32 flags = 8; }
_TIME_TAG, _DOUBLE_TAG = _tag(3, 1), _tag(4, 1)
# No value and flags = 1 (FLAG_NO_RECORDED_VALUE): VictoriaMetrics stores a staleness
# marker, which ends the series at this timestamp.
_NO_VALUE = _tag(8, 0) + _varint(1)


def _number_data_point(labels: tuple, value: float | None, time_ns: bytes, attributes: dict) -> bytes:
    """`attributes` caches each (key, value) label's encoding: the host and unit labels repeat
    across a tick's samples, and encoding them once halves the encoder's time."""
    body = b"".join([attributes.get(pair) or attributes.setdefault(pair, _bytes_field(7, _key_value(*pair)))
                     for pair in labels])
    if value is None:
        return body + _TIME_TAG + time_ns + _NO_VALUE
    return body + _TIME_TAG + time_ns + _DOUBLE_TAG + struct.pack("<d", value)


def _gauge(points: list[bytes]) -> bytes:
    # Gauge { repeated NumberDataPoint data_points = 1; }
    return b"".join(_bytes_field(1, point) for point in points)


def _monotonic_sum(points: list[bytes]) -> bytes:
    # Sum { repeated NumberDataPoint data_points = 1;
    #       AggregationTemporality aggregation_temporality = 2; bool is_monotonic = 3; }
    # Temporality 2 is CUMULATIVE; VictoriaMetrics silently drops a Sum without it.
    return (b"".join(_bytes_field(1, point) for point in points)
            + _tag(2, 0) + _varint(2) + _tag(3, 0) + _varint(1))


def _metric(name: str, kind: str, points: list[bytes]) -> bytes:
    # Metric { string name = 1; Gauge gauge = 5; Sum sum = 7; }
    # No unit (3) and no description (2): with -opentelemetry.usePrometheusNaming
    # VictoriaMetrics would append unit words to the name; without a unit the stored
    # name is the one written here either way.
    data = _bytes_field(7, _monotonic_sum(points)) if kind == "counter" else _bytes_field(5, _gauge(points))
    return _string_field(1, name) + data


def encode_request(samples: list[tuple], resource: dict[str, str], time_ns: int) -> bytes:
    """ExportMetricsServiceRequest with one resource and one scope holding every metric.

    ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1; }
    ResourceMetrics { Resource resource = 1; repeated ScopeMetrics scope_metrics = 2; }
    Resource { repeated KeyValue attributes = 1; }
    ScopeMetrics { InstrumentationScope scope = 1; repeated Metric metrics = 2; }
    The scope is left out on purpose: from 1.132 VictoriaMetrics turns a present scope into
    scope.name/scope.version labels, which would change series identity on upgrade.
    """
    stamp = struct.pack("<Q", time_ns)
    grouped: dict[tuple[str, str], list[bytes]] = {}
    attributes: dict[tuple[str, str], bytes] = {}
    for name, kind, labels, value in samples:
        grouped.setdefault((name, kind), []).append(_number_data_point(labels, value, stamp, attributes))
    metrics = b"".join(_bytes_field(2, _metric(name, kind, points))
                       for (name, kind), points in grouped.items())
    attributes = b"".join(_bytes_field(1, _key_value(k, v)) for k, v in resource.items())
    resource_metrics = _bytes_field(1, attributes) + _bytes_field(2, metrics)
    return _bytes_field(1, resource_metrics)


# ---------------------------------------------------------------------------------------
# Pushing
# ---------------------------------------------------------------------------------------

def split_url(url: str) -> tuple[str, str, int, str]:
    """'http://host:port/path' -> (scheme, host, port, path); HeartbeatError if not http(s)."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or scheme not in ("http", "https") or not authority or "@" in authority:
        raise HeartbeatError(f"{url}: not an http(s) URL")
    host, port = authority, 443 if scheme == "https" else 80
    if authority.startswith("["):  # [::1]:8428
        host, _, tail = authority[1:].partition("]")
        if tail.startswith(":"):
            port = tail[1:]
    elif ":" in authority:
        host, port = authority.rsplit(":", 1)
    try:
        port = int(port)
    except ValueError:
        raise HeartbeatError(f"{url}: bad port {port!r}") from None
    return scheme, host, port, "/" + path


class Endpoint:
    """Where to push: the URL, the Authorization header value (or None), a CA file for https."""

    __slots__ = ("url", "authorization", "ca_file")

    def __init__(self, url: str, authorization: str | None = None, ca_file: str | None = None):
        self.url, self.authorization, self.ca_file = url, authorization, ca_file


def read_authorization(path: str) -> str:
    """The Authorization header from a credentials file: 'Bearer <token>' or 'Basic <user>:<password>'.

    The file must be private (a systemd credential, or mode 0600): a secret readable by
    others is refused, and its content is never echoed in an error.
    """
    try:
        status = os.stat(path)
        with open(path, encoding="utf-8") as handle:
            line = next((x.strip() for x in handle if x.strip()), "")
    except OSError as error:
        raise HeartbeatError(f"cannot read credentials {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise HeartbeatError(f"credentials {path}: not UTF-8 text") from None
    if status.st_mode & 0o077:
        raise HeartbeatError(f"credentials {path} are readable by group or others (mode "
                             f"{status.st_mode & 0o777:04o}); make them private: chmod 600, or a systemd credential")
    scheme, _, secret = line.partition(" ")
    if scheme == "Bearer" and secret.strip():
        return "Bearer " + secret.strip()
    if scheme == "Basic" and ":" in secret:
        import binascii

        return "Basic " + binascii.b2a_base64(secret.strip().encode("utf-8"), newline=False).decode("ascii")
    raise HeartbeatError(f"credentials {path}: the first line must be 'Bearer <token>' or 'Basic <user>:<password>'")


def post_payload(endpoint: Endpoint, payload: bytes, timeout: float) -> None:
    """POST a gzipped protobuf; HeartbeatError with URL, status and the server's message.

    Plain http is written straight to a socket: http.client pulls in the email and ssl
    packages, which cost more CPU than the rest of a tick. https goes through http.client,
    with certificate verification always on (the system's CAs, or --ca-file).
    The whole exchange, not each read, is bounded by `timeout`.
    """
    url = endpoint.url
    scheme, host, port, path = split_url(url)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
               "User-Agent": "systemd-heartbeat"}
    if endpoint.authorization:
        headers["Authorization"] = endpoint.authorization
    try:
        if scheme == "https":
            status, reason, message = https_post(host, port, path, headers, payload, timeout, endpoint.ca_file)
        else:
            status, reason, message = http_post(host, port, path, headers, payload, timeout)
    except (OSError, ValueError) as error:
        reason = "timed out" if isinstance(error, (TimeoutError, _socket.timeout)) else (
            error.strerror if isinstance(error, OSError) and error.strerror else
            getattr(error, "reason", None) or str(error) or type(error).__name__)
        raise HeartbeatError(f"push to {url} failed: {reason}") from None
    if not 200 <= status < 300:
        first_line = message.strip().splitlines()[0] if message.strip() else "no message"
        error_class = PushRejected if 400 <= status < 500 and status != 429 else HeartbeatError
        raise error_class(f"push to {url} failed: HTTP {status} {reason}: {first_line}")


def gzip(body: bytes) -> bytes:
    """gzip framing (wbits 31) at level 1: a tenth of the bytes for a fraction of a millisecond."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()


def connect_tcp(host: str | bytes, port: int, timeout: float):
    """socket.create_connection with the C module: each resolved address in turn."""
    failure: OSError = OSError(f"no address for {host!r}")
    for family, kind, protocol, _, address in _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        connection = _socket.socket(family, kind, protocol)
        try:
            connection.settimeout(timeout)
            connection.connect(address)
            return connection
        except OSError as error:
            connection.close()
            failure = error
    raise failure


def http_post(host: str, port: int, path: str, headers: dict, payload: bytes,
              timeout: float) -> tuple[int, str, str]:
    """HTTP/1.1 POST with Connection: close; (status, reason, first 2 KiB of the body)."""
    deadline = time.monotonic() + timeout
    address = host.encode("ascii") if host.isascii() else host  # skips the idna codec import
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{lines}Content-Length: {len(payload)}\r\n"
            f"Connection: close\r\n\r\n").encode("latin-1")
    connection = connect_tcp(address, port, timeout)
    try:
        connection.settimeout(max(0.001, deadline - time.monotonic()))
        connection.sendall(head + payload)
        answer = b""
        while len(answer) < 65536:
            connection.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and is_complete(answer):
                break
    finally:
        connection.close()
    head_bytes, _, content = answer.partition(b"\r\n\r\n")
    status_line = head_bytes.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    if b"transfer-encoding: chunked" in head_bytes.lower():
        content = content.partition(b"\r\n")[2]  # drop the first chunk's size line
    return int(parts[1]), parts[2] if len(parts) > 2 else "", content[:2048].decode("utf-8", "replace")


def is_complete(answer: bytes) -> bool:
    """Whether a response with a Content-Length has arrived in full (else read to EOF)."""
    head, _, content = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(content) >= int(value)
    return False


def https_post(host: str, port: int, path: str, headers: dict, payload: bytes, timeout: float,
               ca_file: str | None) -> tuple[int, str, str]:
    import http.client
    import ssl

    context = ssl.create_default_context(cafile=ca_file)  # verifies the certificate and the host name
    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        connection.request("POST", path, body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.reason, response.read(2048).decode("utf-8", "replace")
    except http.client.HTTPException as error:
        raise ValueError(str(error) or type(error).__name__) from None
    finally:
        connection.close()


# ---------------------------------------------------------------------------------------
# The spool: payloads that could not be pushed wait on disk and are replayed, oldest first,
# with their original timestamps, so an outage of VictoriaMetrics loses no samples
# ---------------------------------------------------------------------------------------

SPOOL_DIR = "spool"
SPOOL_SUFFIX = ".otlp.gz"
DEFAULT_SPOOL_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_SPOOL_MAX_AGE = 86400.0


def spool_files(state_dir: str | None) -> list[tuple[int, str, int]]:
    """Waiting payloads, oldest first: (time_ns, path, size). Stray files are not ours: left alone."""
    if not state_dir:
        return []
    directory = os.path.join(state_dir, SPOOL_DIR)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    files = []
    for name in names:
        stem = name[:-len(SPOOL_SUFFIX)]
        if name.endswith(SPOOL_SUFFIX) and stem.isdigit():
            path = os.path.join(directory, name)
            try:
                files.append((int(stem), path, os.stat(path).st_size))
            except OSError:
                continue
    return sorted(files)


def spool_write(state_dir: str, payload: bytes, time_ns: int) -> None:
    """Keep a payload for later, atomically (a crash never leaves half a file)."""
    directory = os.path.join(state_dir, SPOOL_DIR)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{time_ns:020d}{SPOOL_SUFFIX}")
    with open(path + ".tmp", "wb") as handle:
        handle.write(payload)
    os.replace(path + ".tmp", path)


def spool_trim(state_dir: str, max_bytes: float, max_age: float, now: float) -> int:
    """Drop the oldest payloads beyond the age and size caps; returns how many were dropped."""
    files = spool_files(state_dir)
    total = sum(size for _, _, size in files)
    dropped = 0
    for time_ns, path, size in files:
        if total <= max_bytes and now - time_ns / 1e9 <= max_age:
            break
        try:
            os.unlink(path)
        except OSError:
            continue
        total -= size
        dropped += 1
    return dropped


def spool_replay(endpoint: Endpoint, waiting: list[tuple[int, str, int]],
                 timeout: float) -> tuple[int, int, str | None]:
    """Push waiting payloads (spool_files' listing) oldest first, for at most `timeout` seconds.

    Returns (sent, corrupt, error): a payload the endpoint refuses (HTTP 4xx) or that is not
    gzip is corrupt: skipped with a warning and deleted. Any other failure stops the replay
    (the endpoint is still down) and is returned as error; the rest waits for the next tick.
    """
    sent = corrupt = 0
    deadline = time.monotonic() + timeout
    for _, path, _ in waiting:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            with open(path, "rb") as handle:
                payload = handle.read()
            if not payload.startswith(b"\x1f\x8b"):
                raise PushRejected("not a gzip file")
            post_payload(endpoint, payload, remaining)
        except PushRejected as error:
            print(f"systemd-heartbeat: warning: skipping spooled {os.path.basename(path)}: {error}", file=sys.stderr)
            corrupt += 1
        except HeartbeatError as error:
            return sent, corrupt, str(error)
        except OSError as error:
            print(f"systemd-heartbeat: warning: skipping spooled {os.path.basename(path)}: {error.strerror}",
                  file=sys.stderr)
            corrupt += 1
        else:
            sent += 1
        try:
            os.unlink(path)
        except OSError:
            pass
    return sent, corrupt, None


# ---------------------------------------------------------------------------------------
# Dry run: what would be pushed, for a person
# ---------------------------------------------------------------------------------------

def format_value(value: float | None) -> str:
    if value is None:
        return "stale"
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return repr(value)


def format_sample(sample: tuple) -> str:
    """Prometheus text style: name{label="value",...} value."""
    name, _, labels, value = sample
    text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
    line = f"{name}{{{text}}} {format_value(value)}"
    if value is None:
        line += "  # staleness marker: this series ended"
    return line


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ---------------------------------------------------------------------------------------
# One tick
# ---------------------------------------------------------------------------------------

def tick(patterns: list[str], host: str, state_dir: str | None, timeout: float, run=run_command,
         bus: str | None = None):
    """Collect and shape one tick: (samples including staleness markers, snapshot, memory)."""
    snapshot = collect(patterns, run, timeout, bus)
    memory = load_memory(state_dir)
    calendar = dict(memory.get("calendar") or {})
    calendar.update(calendar_periods(calendar_expressions(snapshot.units, calendar), run, timeout))
    memory["calendar"] = calendar
    samples = shape(snapshot, host, memory)
    samples += staleness_markers(memory, samples)
    return samples, snapshot, memory


USAGE = """usage: systemd-heartbeat [--url URL] [--unit NAME]... [--allowlist FILE] [--host NAME]
                         [--timeout SECONDS] [--state-dir DIR] [--spool-max-bytes N]
                         [--spool-max-age SECONDS] [--auth-file FILE] [--ca-file FILE]
                         [--source dbus|systemctl] [--dry-run]

Push the state of allowlisted and failed systemd units to VictoriaMetrics (OTLP/HTTP).

  --url URL          OTLP/HTTP metrics endpoint (env VMSINGLE_OTLP_URL;
                     default http://localhost:30428/opentelemetry/v1/metrics)
  --unit NAME        a unit name or glob to report, e.g. '*-server.service' (repeatable)
  --allowlist FILE   one unit name or glob per line, '#' comments (env SYSTEMD_HEARTBEAT_ALLOWLIST)
  --host NAME        value of the host label (env SYSTEMD_HEARTBEAT_HOST; default: the host name)
  --timeout SECONDS  bound on reading systemd and on the push (env SYSTEMD_HEARTBEAT_TIMEOUT;
                     default 10)
  --state-dir DIR    where to remember the last push (to end series that disappear) and to
                     spool payloads while the endpoint is down (env STATE_DIRECTORY, which
                     systemd's StateDirectory= sets)
  --spool-max-bytes N  cap on the spool's size; oldest dropped first (env
                     SYSTEMD_HEARTBEAT_SPOOL_MAX_BYTES; default 52428800)
  --spool-max-age SECONDS  drop spooled payloads older than this (env
                     SYSTEMD_HEARTBEAT_SPOOL_MAX_AGE; default 86400)
  --auth-file FILE   credentials for the endpoint, first line 'Bearer <token>' or
                     'Basic <user>:<password>'; must be private (env SYSTEMD_HEARTBEAT_AUTH_FILE;
                     default: the systemd credential otlp-auth, if the service loads one)
  --ca-file FILE     CA certificates to verify an https endpoint with (env SYSTEMD_HEARTBEAT_CA_FILE;
                     default: the system's); verification is always on
  --source dbus|systemctl  read systemd over the system bus socket ($DBUS_SYSTEM_BUS_ADDRESS or
                     /run/dbus/system_bus_socket; default), or with systemctl show; dbus falls
                     back to systemctl, with a warning, when the socket cannot be used
                     (env SYSTEMD_HEARTBEAT_SOURCE)
  --dry-run          print the samples that would be pushed, one per line, and push nothing
  -h, --help         show this help
"""


class Settings:
    """The command line, after environment defaults."""

    def __init__(self, environ):
        self.url = environ.get("VMSINGLE_OTLP_URL") or DEFAULT_URL
        self.unit: list[str] = []
        self.allowlist = environ.get("SYSTEMD_HEARTBEAT_ALLOWLIST") or None
        self.host = environ.get("SYSTEMD_HEARTBEAT_HOST") or _socket.gethostname()
        self.timeout = environ.get("SYSTEMD_HEARTBEAT_TIMEOUT") or str(DEFAULT_TIMEOUT)
        self.state_dir = environ.get("STATE_DIRECTORY") or None
        self.spool_max_bytes = environ.get("SYSTEMD_HEARTBEAT_SPOOL_MAX_BYTES") or str(DEFAULT_SPOOL_MAX_BYTES)
        self.spool_max_age = environ.get("SYSTEMD_HEARTBEAT_SPOOL_MAX_AGE") or str(DEFAULT_SPOOL_MAX_AGE)
        # a systemd credential (LoadCredential=otlp-auth:...) is picked up without a flag
        credential = os.path.join(environ.get("CREDENTIALS_DIRECTORY") or "/nonexistent", "otlp-auth")
        self.auth_file = environ.get("SYSTEMD_HEARTBEAT_AUTH_FILE") or (
            credential if os.path.exists(credential) else None)
        self.ca_file = environ.get("SYSTEMD_HEARTBEAT_CA_FILE") or None
        self.source = environ.get("SYSTEMD_HEARTBEAT_SOURCE") or "dbus"
        self.dry_run = False


VALUE_FLAGS = {"--url": "url", "--unit": "unit", "--allowlist": "allowlist", "--host": "host",
               "--timeout": "timeout", "--state-dir": "state_dir", "--spool-max-bytes": "spool_max_bytes",
               "--spool-max-age": "spool_max_age", "--auth-file": "auth_file", "--ca-file": "ca_file",
               "--source": "source"}


def parse_args(argv: list[str], environ=os.environ) -> Settings:
    """Flags as `--flag value` or `--flag=value`; HeartbeatError names a bad one.

    Hand-written: argparse imports re, gettext and shutil, a fifth of a tick's CPU.
    """
    settings = Settings(environ)
    position = 0
    while position < len(argv):
        flag, has_value, value = argv[position].partition("=")
        position += 1
        if flag in ("-h", "--help") and not has_value:
            sys.stdout.write(USAGE)
            sys.exit(0)
        if flag == "--dry-run" and not has_value:
            settings.dry_run = True
            continue
        if flag not in VALUE_FLAGS:
            raise HeartbeatError(f"unknown argument {argv[position - 1]!r} (see --help)")
        if not has_value:
            if position >= len(argv):
                raise HeartbeatError(f"{flag} needs a value")
            value = argv[position]
            position += 1
        if flag == "--unit":
            settings.unit.append(value)
        else:
            setattr(settings, VALUE_FLAGS[flag], value)
    try:
        settings.timeout = float(settings.timeout)
    except ValueError:
        raise HeartbeatError(f"--timeout must be a number of seconds, got {settings.timeout!r}") from None
    if not 0 < settings.timeout < 3600:
        raise HeartbeatError(f"--timeout must be between 0 and 3600 seconds, got {settings.timeout:g}")
    if settings.source not in ("dbus", "systemctl"):
        raise HeartbeatError(f"--source must be dbus or systemctl, got {settings.source!r}")
    for flag, name in (("--spool-max-bytes", "spool_max_bytes"), ("--spool-max-age", "spool_max_age")):
        try:
            setattr(settings, name, float(getattr(settings, name)))
        except ValueError:
            raise HeartbeatError(f"{flag} must be a number, got {getattr(settings, name)!r}") from None
        if getattr(settings, name) < 0:
            raise HeartbeatError(f"{flag} must not be negative, got {getattr(settings, name):g}")
    return settings


def read_patterns(args) -> list[str]:
    patterns = check_unit_patterns(args.unit, "--unit")
    if args.allowlist:
        try:
            with open(args.allowlist, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise HeartbeatError(f"cannot read allowlist {args.allowlist}: {error.strerror}") from None
        except UnicodeDecodeError as error:
            raise HeartbeatError(f"{args.allowlist}: not UTF-8 text ({error.reason})") from None
        patterns += parse_allowlist(text, args.allowlist)
    return unique(patterns)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        patterns = read_patterns(args)
        bus = system_bus_path() if args.source == "dbus" else None
        samples, snapshot, memory = tick(patterns, args.host, args.state_dir, args.timeout, bus=bus)
    except HeartbeatError as error:
        print(f"systemd-heartbeat: {error}", file=sys.stderr)
        return 1
    if snapshot.warning:
        print(f"systemd-heartbeat: warning: {snapshot.warning}", file=sys.stderr)
    dropped = int(memory.get("spool_dropped") or 0)
    waiting = spool_files(args.state_dir)
    if args.state_dir:
        samples += spool_samples(args.host, len(waiting), dropped)
    if args.dry_run:
        sys.stdout.write("".join(format_sample(s) + "\n" for s in samples))
        return 0
    time_ns = int(snapshot.wall * 1e9)
    payload = gzip(encode_request(samples, {"host": args.host}, time_ns))
    try:
        endpoint = Endpoint(args.url, read_authorization(args.auth_file) if args.auth_file else None, args.ca_file)
    except HeartbeatError as error:
        print(f"systemd-heartbeat: {error}", file=sys.stderr)
        return 1
    failure = None
    if waiting:  # older payloads first, so VictoriaMetrics gets every tick in order
        _, _, failure = spool_replay(endpoint, waiting, args.timeout)
    if failure is None:
        try:
            post_payload(endpoint, payload, args.timeout)
        except PushRejected as error:
            print(f"systemd-heartbeat: {error}", file=sys.stderr)
            return 1
        except HeartbeatError as error:
            failure = str(error)
    if failure is not None:
        if not args.state_dir:
            print(f"systemd-heartbeat: {failure}", file=sys.stderr)
            return 1
        try:
            spool_write(args.state_dir, payload, time_ns)
            dropped += spool_trim(args.state_dir, args.spool_max_bytes, args.spool_max_age, snapshot.wall)
        except OSError as error:
            print(f"systemd-heartbeat: {failure}; and cannot spool it: {error.strerror}", file=sys.stderr)
            return 1
        print(f"systemd-heartbeat: {failure} (spooled; {len(spool_files(args.state_dir))} waiting)",
              file=sys.stderr)
    try:
        # a spooled payload will reach VictoriaMetrics before the next tick's: remember it too
        remember(args.state_dir, samples, memory["calendar"], dropped)
    except OSError as error:
        # The push landed; only the next tick's staleness markers are at risk.
        print(f"systemd-heartbeat: warning: cannot record the push in {args.state_dir}: "
              f"{error.strerror}", file=sys.stderr)
    return 1 if failure is not None else 0


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: freeing every object and module costs a tick
    several milliseconds, a third of it at a dozen units (BENCHMARKS.md). Everything the tick
    wrote is closed by then; only the standard streams need flushing."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = code or 1
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())

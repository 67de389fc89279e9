# SPDX-License-Identifier: MIT
"""systemd's value formats, as D-Bus sends them (µs integers, structs) and as systemctl
prints them (LC_ALL=C TZ=UTC text). Every parser takes both, and anything else (a wrong type
from a misbehaving bus, garbage text) as unknown: None, never an exception."""


def is_integer(value) -> bool:
    """An int as D-Bus decodes one (a bool is an int to Python, but not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool)


# Every Result systemd gives a unit (the result tables of service.c, socket.c, mount.c, swap.c,
# timer.c, path.c, automount.c, scope.c), and every Restart= policy (service.c). A value
# outside them (a crafted state file, a garbled text, or a result a later systemd adds) is
# treated as absent, by both sources alike: a failure then shows the reason "unknown".
RESULTS = frozenset((
    "success", "resources", "protocol", "timeout", "exit-code", "signal", "core-dump", "watchdog",
    "start-limit-hit", "oom-kill", "exec-condition", "trigger-limit-hit", "service-start-limit-hit",
    "unit-start-limit-hit", "mount-start-limit-hit", "unmounted",
))
RESTART_POLICIES = frozenset(("no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always"))


def is_result(value) -> bool:
    return isinstance(value, str) and value in RESULTS


def is_restart_policy(value) -> bool:
    return isinstance(value, str) and value in RESTART_POLICIES


def is_finite(value) -> bool:
    """A real number, not nan or an infinity (x - x is 0 only for those; math costs an import)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value - value == 0


# systemd's "never" on D-Bus: 0, or USEC_INFINITY (all ones)
USEC_NEVER = 2 ** 64 - 1
YEAR_MAX = 9999  # datetime's range; systemd prints nothing later


def parse_timestamp(value) -> "float | None":
    """'Fri 2026-11-27 19:25:44 UTC' (LC_ALL=C TZ=UTC) or D-Bus's µs -> Unix seconds;
    '', 'n/a', 0 and infinity -> None.

    systemd 249 prints these human-readable whatever --timestamp says (LastTriggerUSec and
    NextElapseUSecRealtime ignore it even on 252), so one parser serves every version.
    """
    if is_integer(value):
        return value / 1e6 if 0 < value < USEC_NEVER else None
    if not isinstance(value, str):
        return None
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
    if not (1970 <= year <= YEAR_MAX and 0 <= second < 61):
        return None
    from datetime import datetime, timezone

    try:
        stamp = datetime(year, month, day, hour, minute, tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None
    return stamp + second


def same_moment(now: float, before: float) -> bool:
    """Whether two readings of one timestamp agree: exactly, or to the second when one of them
    is systemctl's (whole seconds) and the other the bus's (microseconds)."""
    return now == before or ((now.is_integer() or before.is_integer()) and int(now) == int(before))


TIMESPAN_UNITS = {
    "y": 31557600.0, "month": 2629800.0, "w": 604800.0, "d": 86400.0, "h": 3600.0,
    "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "μs": 1e-6,
}


def parse_timespan(value) -> "float | None":
    """systemd's '1d 2h 3min 4.5s' / '30s' / '500ms', or D-Bus's µs -> seconds; else None."""
    if is_integer(value):
        return value / 1e6 if 0 <= value < USEC_NEVER else None
    if not isinstance(value, str):
        return None
    total = 0.0
    words = value.split()
    if not words:
        return None
    for word in words:
        digits = word.rstrip("abcdefghijklmnopqrstuvwxyzμ")
        unit = word[len(digits):] or "s"
        if unit not in TIMESPAN_UNITS or not digits or not digits.isascii():
            return None
        try:
            total += float(digits) * TIMESPAN_UNITS[unit]
        except ValueError:
            return None
    return total if is_finite(total) else None


def parse_timer_settings(entries) -> list[tuple[str, object]]:
    """'{ OnUnitActiveUSec=30s ; next_elapse=... }' lines, or D-Bus's (base, value, next
    elapse) structs -> [(base, value), ...]."""
    settings = []
    if not isinstance(entries, (list, tuple)):
        return settings
    for entry in entries:
        if isinstance(entry, tuple) and len(entry) >= 2 and isinstance(entry[0], str):
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


# The widest integers systemd has (int64 and uint64 on D-Bus): a longer number is not one of
# its values, and converting a few hundred digits to a float would overflow.
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1


def is_count(value) -> bool:
    """A count systemd keeps (NRestarts: uint32 on the bus, any unsigned 64-bit number in text)."""
    return is_integer(value) and 0 <= value <= INT_MAX


def is_exit_status(value) -> bool:
    """An exit code (0-255) or the number of the signal that ended a process."""
    return is_integer(value) and 0 <= value <= 255


def is_cursor(value) -> bool:
    """A journal cursor as journalctl prints one (s=...;i=...;b=...;m=...;t=...;x=...)."""
    return (isinstance(value, str) and 0 < len(value) <= 256 and value.isascii() and value.isprintable()
            and value.startswith("s=") and ";i=" in value and " " not in value)


def as_int(value) -> "int | None":
    """An integer property (D-Bus's int, systemctl's decimal text) within 64 bits, else None."""
    if is_integer(value):
        return value if INT_MIN <= value <= INT_MAX else None
    if isinstance(value, str) and value.isascii() and len(value) <= 21 and value.removeprefix("-").isdigit():
        number = int(value)
        return number if INT_MIN <= number <= INT_MAX else None
    return None

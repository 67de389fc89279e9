# SPDX-License-Identifier: MIT
"""The types passed between the stages, and the one deadline every blocking point obeys.

    Unit      a dict per unit: systemd's properties as read (D-Bus's raw values, or
              systemctl's text: values.py parses both), plus "Unit" (the name the metrics
              carry) and "Allowlisted"
    Snapshot  what one collection saw (read -> shape)
    Sample    (metric name, kind "gauge" | "counter" | "histogram", labels: tuple of (key,
              value), value: float, a histogram's (count, sum, bucket counts, bounds)
              (triggers.lateness_histogram), or None for a staleness marker)
                                                                (shape -> otlp, state, cli)
"""
import time


# Why a payload left the spool without landing: each is a counter from the first tick with a
# state directory, so increase() sees the first drop (a series born at 1 has no increase).
DROP_REASONS = ("rejected", "unreadable", "max_age", "max_bytes")
# Where a tick's failures come from (systemd_heartbeat_history_source{source}): read from the
# journal, or inferred from the units' state.
HISTORY_SOURCE_NAMES = ("journal", "inferred")


class HeartbeatError(Exception):
    """A failure worth one line on stderr and a non-zero exit."""


class DeadlineExceeded(HeartbeatError):
    """The tick's deadline passed while waiting on something (systemd, the endpoint, a child)."""


Sample = tuple  # (name, kind, labels, value): a plain tuple, which marshal and the encoder take as is
Unit = dict


class Deadline:
    """The tick's one deadline (--timeout from the start of the tick), passed to every stage
    that can block: bus, children, DNS, connect, TLS, every read, the spool replay."""

    __slots__ = ("at", "timeout")

    def __init__(self, timeout: float, start: "float | None" = None):
        self.timeout = timeout
        self.at = (time.monotonic() if start is None else start) + timeout

    def remaining(self, what: str = "the tick") -> float:
        """Seconds left; DeadlineExceeded naming `what` when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"{what} did not finish within the {self.timeout:g} s timeout")
        return left

    def expired(self) -> bool:
        return time.monotonic() >= self.at


class Snapshot:
    """What one collection saw.

    units: a Unit per reported unit. manager_start: when PID 1 started. wall, monotonic: both
    clocks read right after systemd answered, to place monotonic timestamps (a monotonic
    timer's next elapse) on the wall clock. source: "dbus" or "systemctl"; warnings: lines
    for the operator (why not D-Bus, units systemd refused, rows that were skipped).
    history_source: where this tick's failures come from ("journal", "inferred").
    """

    __slots__ = ("units", "manager_start", "duration", "wall", "monotonic", "source", "warnings", "history_source")

    def __init__(self, units, manager_start, duration, wall, monotonic, source="systemctl", warnings=()):
        self.units, self.manager_start, self.duration = units, manager_start, duration
        self.wall, self.monotonic = wall, monotonic
        self.source, self.warnings = source, list(warnings)
        self.history_source = None  # "journal" or "inferred" (cli.tick), for systemd_heartbeat_history_source

# SPDX-License-Identifier: MIT
"""What a timer's record follows from one tick to the next: how often it fired, and how late
each trigger came against the elapse the tick before saw scheduled for it. Its runs (success
and failure, by Result) are its service's, which history.py counts (README "Timers").

A timer's record (history.py's, plus):
    service       the unit it triggers (its Unit=, the bus's Triggers)
    triggers      the triggers seen since the heartbeat first looked at it
    triggered_at  LastTriggerUSec at the last look (Unix seconds; 0: not since the boot)
    scheduled     the elapse it was waiting for at the last look (NextElapseUSecRealtime, or
                  the monotonic one on the wall clock: shape.next_elapse)
    lateness      how late the last timed trigger came (seconds; < 0: early)
    late_counts   how many timed triggers came within each of LATENESS_BOUNDS, and past the
                  last (not cumulative), late_sum: their lateness summed
"""
from .units import is_unit_name
from .values import parse_timespan, parse_timestamp

# The lateness histogram's bucket bounds (seconds): systemd fires a timer within AccuracySec=
# of its elapse (1 min by default), so the first minute is split finely.
LATENESS_BOUNDS = (1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def triggered_unit(unit: dict) -> "str | None":
    """The unit a timer starts: the bus's Triggers (a list), systemctl's (space-separated)."""
    value = unit.get("Triggers")
    names = value if isinstance(value, list) else value.split() if isinstance(value, str) else ()
    return next((name for name in names if isinstance(name, str) and is_unit_name(name)), None)


def next_elapse(unit: dict, wall: float, monotonic: float) -> "float | None":
    """When the timer fires next, on the wall clock; a monotonic elapse is converted."""
    realtime = parse_timestamp(unit.get("NextElapseUSecRealtime", ""))
    relative = parse_timespan(unit.get("NextElapseUSecMonotonic", ""))
    candidates = [t for t in (realtime, relative and wall + relative - monotonic) if t]
    return min(candidates) if candidates else None


def observe_timer(record: dict, before: "dict | None", service: "str | None", scheduled: "float | None",
                  last: "float | None", starts: "list[float] | None", now: float) -> None:
    """Follow the timer into `record` (this tick's, history.observe): `service` the unit it
    triggers (triggered_unit, or as remembered), `scheduled` its next
    elapse now, `last` its LastTriggerUSec now (Unix seconds), `starts`: when its service's
    runs started since the last look, as the journal recorded them (None: not read); `now`:
    when systemd was read. An elapse that does not lie ahead is not kept: while its service
    runs, a timer still shows the elapse that started it.

    Triggers: LastTriggerUSec moved -> as many as the journal recorded starts of its service
    since the last look, at least one; without the journal, one. Lateness: of the first of
    them, the one whose elapse the last look saw scheduled (the trigger itself when it was the
    only one, else the first start the journal recorded); later ones between the same two
    looks are counted, not timed. The first look counts nothing."""
    if service:
        record["service"] = service
    record.setdefault("triggers", 0)
    if scheduled is not None and scheduled > now:
        record["scheduled"] = scheduled
    else:
        record.pop("scheduled", None)
    record["triggered_at"] = last or 0.0  # 0: it has not fired since the boot
    if last is None or before is None or "triggered_at" not in before or last <= before["triggered_at"]:
        return
    fired = max(1, len(starts or ()))
    record["triggers"] = record["triggers"] + fired
    first = last if fired == 1 else starts[0]
    if before.get("scheduled"):
        time_trigger(record, first - before["scheduled"])


def time_trigger(record: dict, lateness: float) -> None:
    """One timed trigger into the lateness gauge and histogram."""
    lateness = round(lateness, 6)
    record["lateness"] = lateness
    counts = list(record.get("late_counts") or (0,) * (len(LATENESS_BOUNDS) + 1))
    counts[next((i for i, bound in enumerate(LATENESS_BOUNDS) if lateness <= bound), len(LATENESS_BOUNDS))] += 1
    record["late_counts"] = tuple(counts)
    record["late_sum"] = round(record.get("late_sum", 0.0) + lateness, 6)


def lateness_histogram(record: dict) -> tuple:
    """(count, sum, cumulative-free bucket counts, bounds): the value of a histogram Sample."""
    counts = tuple(record.get("late_counts") or (0,) * (len(LATENESS_BOUNDS) + 1))
    return (sum(counts), record.get("late_sum", 0.0), counts, LATENESS_BOUNDS)

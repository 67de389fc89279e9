# SPDX-License-Identifier: MIT
"""The shape stage: a Snapshot -> the Samples of one tick (model.Sample), and staleness
markers for the series the last push held that this tick does not.

Metrics (labels: unit, host; exact definitions in README.md):
  systemd_unit_active{sub_state}          1 when ActiveState is "active", else 0
  systemd_unit_info{load_state,active_state,sub_state,unit_type,allowlisted}   always 1
  systemd_unit_restart_count_total        NRestarts (services), cumulative monotonic Sum
  systemd_unit_last_exit_status           the most recent exit seen (history.py): exit code or signal
  systemd_unit_last_exit_code             its code: 0 none seen, 1 exited, 2 killed, 3 dumped
  systemd_unit_last_failure_timestamp_seconds   the last failure seen (history.py)
  systemd_unit_last_failure_info{result,exit_code,exit_status,gave_up}   always 1: its reason
  systemd_unit_failures_total{result}     every failure seen, by Result (history.py)
  systemd_unit_active_enter_timestamp_seconds   ActiveEnterTimestamp: when it last became active
  systemd_unit_seconds_since_active       see seconds_since_active()
  systemd_unit_state_change_timestamp_seconds
  systemd_timer_last_trigger_timestamp_seconds, systemd_timer_next_elapse_timestamp_seconds,
  systemd_timer_interval_seconds, systemd_timer_triggers_total,
  systemd_timer_last_trigger_lateness_seconds, systemd_timer_trigger_lateness_seconds (histogram),
  systemd_timer_runs_total{service,result}, systemd_timer_last_success_timestamp_seconds
  systemd_boot_timestamp_seconds          when the service manager started: the boot
  systemd_heartbeat_up, systemd_heartbeat_collect_duration_seconds,
  systemd_heartbeat_units_reported, systemd_heartbeat_units_failed,
  systemd_heartbeat_spooled_payloads, systemd_heartbeat_spool_dropped_total{reason},
  systemd_heartbeat_history_source{source}  1: where the failures come from (journal, inferred)
"""
from .history import EXIT_CODES, observe, observe_all
from .model import DROP_REASONS, Snapshot
from .triggers import lateness_histogram, next_elapse
from .units import unique, unit_type
from .values import as_int, parse_timer_settings, parse_timespan, parse_timestamp

# Monotonic timer settings that repeat; OnBootSec, OnStartupSec and OnActiveSec fire once.
REPEATING_TIMER_BASES = ("OnUnitActiveUSec", "OnUnitInactiveUSec")


def repeating_period(unit: dict) -> "float | None":
    """The shortest repeating monotonic setting (OnUnitActiveSec, OnUnitInactiveSec)."""
    periods = [parse_timespan(value) for base, value in parse_timer_settings(unit.get("TimersMonotonic"))
               if base in REPEATING_TIMER_BASES]
    periods = [p for p in periods if p]
    return min(periods) if periods else None


def timer_interval(unit: dict, remembered: "float | None", calendar: dict) -> "float | None":
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


def seconds_since_active(unit: dict, now: float, manager_start: "float | None") -> "float | None":
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


def unit_samples(unit: dict, host: str, snapshot: Snapshot, remembered_interval: "float | None" = None,
                 calendar: "dict | None" = None, record: "dict | None" = None,
                 service: "dict | None" = None) -> list[tuple]:
    """Every sample one unit contributes; `record` is its history this tick (history.observe),
    `service`: a timer's service's (its runs)."""
    now, manager_start = snapshot.wall, snapshot.manager_start
    name = str(unit["Unit"])
    kind = unit_type(name)
    record = observe(unit, None, None) if record is None else record
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
    # the most recent exit seen; before any, what systemd says (0: none)
    status = record.get("exit_status", as_int(unit.get("ExecMainStatus", "")))
    code = record.get("exit_code", as_int(unit.get("ExecMainCode", "")))
    if is_service and status is not None:
        samples.append(("systemd_unit_last_exit_status", "gauge", base, float(status)))
    if is_service and code is not None:
        samples.append(("systemd_unit_last_exit_code", "gauge", base, float(code)))
    if record.get("failed_at"):
        samples += failure_samples(record, base)
    for result, count in sorted(record.get("failures", {}).items()):
        samples.append(("systemd_unit_failures_total", "counter", base + (("result", result),), float(count)))
    if record.get("entered"):
        samples.append(("systemd_unit_active_enter_timestamp_seconds", "gauge", base, record["entered"]))
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
        samples += trigger_samples(record, base, service)
    return samples


def trigger_samples(record: dict, base: tuple, service: "dict | None") -> list[tuple]:
    """A timer's triggers and how late they came (triggers.py); the runs of its service, by
    Result ("success" for a run that ended well), when the service is reported too."""
    samples = [("systemd_timer_triggers_total", "counter", base, float(record.get("triggers", 0))),
               ("systemd_timer_trigger_lateness_seconds", "histogram", base, lateness_histogram(record))]
    if "lateness" in record:
        samples.append(("systemd_timer_last_trigger_lateness_seconds", "gauge", base, record["lateness"]))
    if service is None or "service" not in record:
        return samples
    runs = base + (("service", record["service"]),)
    samples.append(("systemd_timer_runs_total", "counter", runs + (("result", "success"),),
                    float(service.get("successes", 0))))
    for result, count in sorted(service.get("failures", {}).items()):
        samples.append(("systemd_timer_runs_total", "counter", runs + (("result", result),), float(count)))
    if service.get("succeeded_at"):
        samples.append(("systemd_timer_last_success_timestamp_seconds", "gauge", base, service["succeeded_at"]))
    return samples


def failure_samples(record: dict, base: tuple) -> list[tuple]:
    """When the unit last failed, and why: Result, the exit of that run (empty when it had
    none, or when the failure was seen only through the restart counter and no earlier one
    was), and whether systemd then gave up restarting it."""
    code = record.get("failure_code", 0)
    reason = (("result", str(record.get("result", "unknown"))), ("exit_code", EXIT_CODES.get(code, "")),
              ("exit_status", str(record.get("failure_status", 0)) if code in EXIT_CODES else ""),
              ("gave_up", "true" if record.get("gave_up") else "false"))
    return [("systemd_unit_last_failure_timestamp_seconds", "gauge", base, record["failed_at"]),
            ("systemd_unit_last_failure_info", "gauge", base + reason, 1.0)]


def health_samples(host: str, duration: float, units: list[dict], boot: "float | None" = None,
                   history_source: "str | None" = None) -> list[tuple]:
    """The heartbeat's own health: alive, how long collection took, how much it saw; when
    the host's service manager started (a new value is a reboot); where its failures come from."""
    labels = (("host", host),)
    failed = sum(1 for u in units if u.get("ActiveState") == "failed")
    booted = [("systemd_boot_timestamp_seconds", "gauge", labels, boot)] if boot else []
    if history_source:
        booted.append(("systemd_heartbeat_history_source", "gauge", labels + (("source", history_source),), 1.0))
    return booted + [
        ("systemd_heartbeat_up", "gauge", labels, 1.0),
        ("systemd_heartbeat_collect_duration_seconds", "gauge", labels, round(duration, 6)),
        ("systemd_heartbeat_units_reported", "gauge", labels, float(len(units))),
        ("systemd_heartbeat_units_failed", "gauge", labels, float(failed)),
    ]


def spool_samples(host: str, waiting: int, dropped: dict) -> list[tuple]:
    """How many payloads wait in the spool, and how many were ever dropped, by reason
    (cumulative; every reason from zero, model.DROP_REASONS)."""
    labels = (("host", host),)
    samples = [("systemd_heartbeat_spooled_payloads", "gauge", labels, float(waiting))]
    dropped = dict.fromkeys(DROP_REASONS, 0) | dropped
    for reason in sorted(dropped):
        samples.append(("systemd_heartbeat_spool_dropped_total", "counter", (("host", host), ("reason", reason)),
                        float(dropped[reason])))
    return samples


def shape(snapshot: Snapshot, host: str, memory: "dict | None" = None, records: "dict | None" = None) -> list[tuple]:
    """All samples of one tick. `records`: each unit's history this tick (history.observe_all
    of the snapshot and `memory`, computed here when not given)."""
    memory = memory or {}
    intervals, calendar = memory.get("intervals", {}), memory.get("calendar", {})
    if records is None:
        records = observe_all(snapshot.units, memory, clock=(snapshot.wall, snapshot.monotonic))
    samples = []
    for unit in snapshot.units:
        record = records.get(str(unit["Unit"]))
        service = records.get(record.get("service", "")) if record and "service" in record else None
        samples.extend(unit_samples(unit, host, snapshot, intervals.get(unit["Unit"]), calendar, record, service))
    samples.extend(health_samples(host, snapshot.duration, snapshot.units, snapshot.manager_start,
                                  snapshot.history_source))
    return samples


def is_labels(labels: tuple) -> bool:
    """(key, value) string pairs: the labels of a series remembered from a state file."""
    return all(isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str) and isinstance(pair[1], str)
               for pair in labels)


def staleness_markers(memory: dict, samples: list[tuple]) -> list[tuple]:
    """A marker for every series pushed last time and absent now (e.g. the old sub_state).
    Call it last, on every sample of the push: a series never gets a marker and a value at
    the same timestamp, nor two markers. A remembered series of the wrong shape is skipped."""
    current = {(sample[0], sample[2]) for sample in samples}
    unordered = None  # the same series with its labels in another order (an older version, a crafted file)
    markers = []
    for name, kind, labels in memory.get("series", ()):
        try:
            if (name, labels) in current:
                continue
        except TypeError:  # an unhashable label from a crafted file
            continue
        if not (name.startswith("systemd_") and is_labels(labels)):  # a crafted file's series: not ours
            continue
        if unordered is None:  # built only on a tick where some series ended: most ticks skip it
            unordered = {(sample[0], frozenset(sample[2])) for sample in samples}
        if (name, frozenset(labels)) not in unordered:
            unordered.add((name, frozenset(labels)))
            markers.append((name, kind, labels, None))
    return markers

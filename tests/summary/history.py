"""A known 24-hour heartbeat history, as the heartbeat would have pushed it, for import into a
real VictoriaMetrics (/api/v1/import, JSON lines, past timestamps).

alpha: backup.service fails twice (02:00 for 30 min, exit 1; 14:00 for 1 h, SIGKILL, and
       systemd gives up restarting it), web.service crashes (exit 3) and is restarted 12 times
       from 10:00, job.timer (every 5 min) stops firing at 05:50 and is stale from 06:00 until
       it fires again at 08:00, typo.service is allowlisted but not found, api, db and cache
       restart within 80 s of each other at 12:00 (a mass restart), the heartbeat is silent for
       20 minutes from 18:00, and the host reboots at 20:00 (its units restart with it: that is
       the reboot, not a mass restart). old.service has restarted 5 times before the window: no
       restarts to report.
       systemd_unit_failures_total, as the heartbeat counts from the journal: backup.service
       exit-code 1 (02:00) and signal 5 (at 14:00 it was killed five times between two ticks
       before systemd gave up: a series born at 5), web.service exit-code 1 to 12 (one a tick),
       old.service exit-code 4 all day (failures before the window: none in it).
beta:  everything clean all day.
gamma: pushed the day before, nothing in the window: "no data".
Times are offsets from the start of the window.
"""
from __future__ import annotations

import json

STEP = 30
DAY = 86400


def series(name: str, labels: dict, points: list[tuple[float, float]]) -> str:
    return json.dumps({"metric": {"__name__": name, **labels},
                       "values": [v for _, v in points], "timestamps": [int(t * 1000) for t, _ in points]})


def build(start: float) -> str:
    """JSON lines for the window [start, start + 24 h)."""
    h, m = 3600, 60
    ticks = [start + k * STEP for k in range(DAY // STEP)]
    alpha_ticks = [t for t in ticks if not (start + 18 * h < t < start + 18 * h + 20 * m)]
    lines = []

    def info(host, unit, active, load="loaded", allowlisted="true", predicate=lambda t: True, host_ticks=None):
        points = [(t, 1.0) for t in (host_ticks or ticks) if predicate(t)]
        if points:
            lines.append(series("systemd_unit_info", {
                "host": host, "unit": unit, "load_state": load, "active_state": active,
                "sub_state": {"active": "running", "failed": "failed", "inactive": "dead"}[active],
                "unit_type": unit.rsplit(".", 1)[1], "allowlisted": allowlisted}, points))

    def in_failure(t):
        return start + 2 * h <= t < start + 2 * h + 30 * m or start + 14 * h <= t < start + 15 * h

    # ---- alpha
    lines.append(series("systemd_heartbeat_up", {"host": "alpha"}, [(t, 1.0) for t in alpha_ticks]))
    info("alpha", "backup.service", "failed", predicate=in_failure, host_ticks=alpha_ticks)
    info("alpha", "backup.service", "active", predicate=lambda t: not in_failure(t), host_ticks=alpha_ticks)
    lines.append(series("systemd_unit_last_exit_status", {"host": "alpha", "unit": "backup.service"}, [
        (t, 0.0 if t < start + 2 * h else 1.0 if t < start + 14 * h else 9.0) for t in alpha_ticks]))
    lines.append(series("systemd_unit_restart_count_total", {"host": "alpha", "unit": "web.service"}, [
        (t, float(min(12, max(0, int((t - start - 10 * h) // STEP) + 1)))) for t in alpha_ticks]))
    lines.append(series("systemd_unit_restart_count_total", {"host": "alpha", "unit": "old.service"},
                        [(t, 5.0) for t in alpha_ticks]))
    info("alpha", "web.service", "active", host_ticks=alpha_ticks)

    def since_trigger(t):
        if start + 5 * h + 50 * m <= t < start + 8 * h:
            return t - (start + 5 * h + 50 * m)  # stopped firing after 05:50
        return (t - start) % 300

    lines.append(series("systemd_unit_seconds_since_active", {"host": "alpha", "unit": "job.timer"},
                        [(t, since_trigger(t)) for t in alpha_ticks]))
    lines.append(series("systemd_timer_interval_seconds", {"host": "alpha", "unit": "job.timer"},
                        [(t, 300.0) for t in alpha_ticks]))
    info("alpha", "job.timer", "active", host_ticks=alpha_ticks)
    info("alpha", "typo.service", "inactive", load="not-found", host_ticks=alpha_ticks)
    info("alpha", "stray.service", "inactive", allowlisted="false", host_ticks=alpha_ticks)

    def latest(events: list[float], default: float | None = None):
        """The value of a 'last ...' timestamp metric at each tick: the latest event by then."""
        def at(t):
            past = [e for e in events if e <= t]
            return past[-1] if past else default
        return at

    def stamps(name, host, unit, value_at, host_ticks):
        points = [(t, value_at(t)) for t in host_ticks if value_at(t) is not None]
        lines.append(series(name, {"host": host, "unit": unit} if unit else {"host": host}, points))

    def failure_info(host, unit, reasons: list[tuple[float, float, dict]], host_ticks):
        for first, until, labels in reasons:  # each reason from its failure until the next one
            lines.append(series("systemd_unit_last_failure_info", {"host": host, "unit": unit, **labels},
                                [(t, 1.0) for t in host_ticks if first <= t < until]))

    reboot = start + 20 * h
    stamps("systemd_boot_timestamp_seconds", "alpha", None, latest([start - 5 * DAY, reboot]), alpha_ticks)
    stamps("systemd_unit_last_failure_timestamp_seconds", "alpha", "backup.service",
           latest([start + 2 * h, start + 14 * h]), alpha_ticks)
    failure_info("alpha", "backup.service", [
        (start + 2 * h, start + 14 * h, {"result": "exit-code", "exit_code": "exited", "exit_status": "1",
                                         "gave_up": "false"}),
        (start + 14 * h, start + DAY, {"result": "signal", "exit_code": "killed", "exit_status": "9",
                                       "gave_up": "true"})], alpha_ticks)
    crashes = [start + 10 * h + k * STEP + 25 for k in range(12)]  # exit 3, restarted 1 s later
    # every failure counted, by Result: a series appears at the first tick that sees a failure
    # with its Result, holding the failures since the tick before
    failures = {("backup.service", "exit-code"): [(start + 2 * h, 1)],
                ("backup.service", "signal"): [(start + 14 * h, 5)],
                ("web.service", "exit-code"): [(c, 1) for c in crashes],
                ("old.service", "exit-code"): [(start - DAY, 4)]}
    for (unit, result), counted in failures.items():
        lines.append(series("systemd_unit_failures_total", {"host": "alpha", "unit": unit, "result": result}, [
            (t, float(sum(n for moment, n in counted if moment <= t))) for t in alpha_ticks if t >= counted[0][0]]))
    stamps("systemd_unit_last_failure_timestamp_seconds", "alpha", "web.service", latest(crashes), alpha_ticks)
    failure_info("alpha", "web.service", [(crashes[0], start + DAY, {
        "result": "exit-code", "exit_code": "exited", "exit_status": "3", "gave_up": "false"})], alpha_ticks)
    stamps("systemd_unit_active_enter_timestamp_seconds", "alpha", "web.service",
           latest([start - 5 * DAY] + [c + 1 for c in crashes] + [reboot + 2]), alpha_ticks)
    for unit, moment in (("api.service", 10), ("db.service", 40), ("cache.service", 90)):
        info("alpha", unit, "active", host_ticks=alpha_ticks)
        stamps("systemd_unit_active_enter_timestamp_seconds", "alpha", unit,
               latest([start - 5 * DAY, start + 12 * h + moment, reboot + 3]), alpha_ticks)
    # ---- beta
    lines.append(series("systemd_heartbeat_up", {"host": "beta"}, [(t, 1.0) for t in ticks]))
    for unit in ("backup.service", "web.service", "job.timer"):
        info("beta", unit, "active")
    lines.append(series("systemd_unit_restart_count_total", {"host": "beta", "unit": "web.service"},
                        [(t, 3.0) for t in ticks]))
    lines.append(series("systemd_unit_last_exit_status", {"host": "beta", "unit": "backup.service"},
                        [(t, 0.0) for t in ticks]))
    lines.append(series("systemd_unit_seconds_since_active", {"host": "beta", "unit": "job.timer"},
                        [(t, (t - start) % 300) for t in ticks]))
    lines.append(series("systemd_timer_interval_seconds", {"host": "beta", "unit": "job.timer"},
                        [(t, 300.0) for t in ticks]))
    stamps("systemd_boot_timestamp_seconds", "beta", None, latest([start - 3 * DAY]), ticks)
    for unit in ("backup.service", "web.service"):
        stamps("systemd_unit_active_enter_timestamp_seconds", "beta", unit, latest([start - 3 * DAY + 5]), ticks)
    # ---- gamma: the day before only
    lines.append(series("systemd_heartbeat_up", {"host": "gamma"},
                        [(start - DAY + k * STEP, 1.0) for k in range(DAY // STEP)]))
    return "\n".join(lines) + "\n"

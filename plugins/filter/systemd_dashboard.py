# SPDX-License-Identifier: MIT
"""Ansible filter: the systemd-monitoring Grafana dashboard, built as data from the allowlist.

    {{ systemd_monitoring_units | systemd_monitoring_dashboard(title=..., uid=...) | to_nice_json }}

The dashboard is a dict, serialised by the caller: no JSON is ever assembled as text, and
Grafana's own templates ("{{host}}" in legends) are plain strings in the data, so Jinja never
sees them as templates. Plain Python with no Ansible import; tests and scripts import it by its
collection name (the clone is linked into .venv/collections by scripts/bootstrap).

Layout: an overview row (units by state, the hosts that need attention now, failed units, the
failures in the time range and how many, stale timers, the heartbeat's health, alerts firing), then one row
per load-bearing unit whose panels depend on its type (service, timer, anything else), each with
its last failure and its failures by reason. Built for a fleet: the host variable's All is `.*` (no query grows with the
number of hosts), lists and graphs show at most TOP series (the worst), graphs at most
MAX_POINTS points a series.
Globs in the allowlist get a row that shows every matching unit. Mass restarts (the alert
SystemdMassRestart) are annotations on every time series.

Unit names go through the heartbeat's own normalisation (units.unit_matcher: a bare name is
its .service), so a row asks for exactly the unit the heartbeat reports.
"""
from __future__ import annotations

from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.units import (
    normalise_unit_pattern, unit_matcher)

SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
STATE_COLOURS = {
    "active": "green", "reloading": "blue", "activating": "yellow", "deactivating": "yellow",
    "inactive": "text", "failed": "red", "maintenance": "orange", "refreshing": "blue",
}
# one name per line: ansible-doc reads this file's assignments and warns on a tuple target
WIDTH = 24
ROW_HEIGHT = 1
PANEL_HEIGHT = 5
# Bounds that keep every panel's cost flat as the fleet grows: a list shows at most TOP series
# (the worst first), a graph at most MAX_POINTS points a series, never finer than the heartbeat.
TOP = 10
MAX_POINTS = 500
MIN_STEP = "30s"


def selector(unit: str) -> str:
    """The label matcher of an allowlist entry (the heartbeat's units.unit_matcher)."""
    return unit_matcher(unit)


def target(expr: str, legend: str = "{{host}}", instant: bool = False, table: bool = False) -> dict:
    spec = {"refId": "A", "datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
            "instant": instant, "range": not instant, "interval": MIN_STEP}
    if table:
        spec["format"] = "table"
    return spec


def panel(kind: str, title: str, description: str, unit: str, targets: list[dict], **extra) -> dict:
    spec = {"type": kind, "title": title, "description": description, "datasource": DATASOURCE,
            "targets": targets, "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {},
            "interval": MIN_STEP, "maxDataPoints": MAX_POINTS}
    for key, value in extra.items():
        if key == "colours":
            spec["fieldConfig"]["overrides"] = value
        elif key == "defaults":
            spec["fieldConfig"]["defaults"].update(value)
        else:
            spec[key] = value
    return spec


def state_colours() -> list[dict]:
    """Each state's count in the state's colour (active green, failed red, ...): one field
    override per state, matched by the series' name, which starts with the state."""
    return [{"matcher": {"id": "byRegexp", "options": f"^{state}/.*"},
             "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}]}
            for state, colour in STATE_COLOURS.items()]


def stat_options(field: str | None = None) -> dict:
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "values": False, "fields": ""},
               "colorMode": "value", "graphMode": "none", "justifyMode": "auto", "textMode": "value_and_name",
               "orientation": "auto"}
    if field:
        options["reduceOptions"]["fields"] = f"/^{field}$/"
    return options


def top(expr: str) -> str:
    """The TOP series of `expr` with the highest values (a graph: the highest at any time)."""
    return f"topk_max({TOP}, {expr})"


def state_panel(match: str) -> dict:
    return panel("stat", "State", "How many of the selected hosts have the unit in each ActiveState (LoadState "
                 "shows a missing unit); the overview names the hosts.", "none",
                 [target(f'count by (active_state, load_state) (systemd_unit_info{{host=~"$host", {match}}})',
                         legend="{{active_state}}/{{load_state}}", instant=True)],
                 options=stat_options(), defaults={"decimals": 0}, colours=state_colours())


def last_failure_panel(match: str) -> dict:
    """How long ago the unit last failed, and why, per host (history.py; README "Metrics")."""
    return panel(
        "table", "Last failure", f"How long ago the unit last failed (exited unsuccessfully or entered failed), "
        "with systemd's Result, the exit of that run and whether systemd then gave up restarting it, on the "
        f"{TOP} hosts where it failed most recently. Kept across restarts; empty if it never failed since the "
        "heartbeat watches it.", "s",
        [target(f'bottomk({TOP}, (time() - systemd_unit_last_failure_timestamp_seconds{{host=~"$host", {match}}}) '
                f'* on(host, unit) group_left(result, exit_code, exit_status, gave_up) '
                f'systemd_unit_last_failure_info{{host=~"$host", {match}}})', instant=True, table=True)])


def counted_in_range(counter: str, by: str) -> str:
    """What `counter` (a selector) counted in the dashboard's time range, summed by `by`, as the
    alerts and the daily summary count: increase_prometheus between the samples in the range,
    plus the first value of a series born in it after the host's first push in it (what it counted
    since the tick before); a series born at the host's first look holds what came before and is
    not counted."""
    series = f"{counter}[$__range]"
    return (f'sum by ({by}) (increase_prometheus({series}) or label_set(first_over_time({series}) and '
            f'(tfirst_over_time({series}) > on(host) group_left() '
            'tfirst_over_time(systemd_heartbeat_up{host=~"$host"}[$__range])), "born", "in-window"))')


def failures_in_range() -> str:
    """Each unit's failures in the dashboard's time range (systemd_unit_failures_total)."""
    return counted_in_range('systemd_unit_failures_total{host=~"$host"}', "host, unit") + " > 0"


def failures_by_reason_panel(match: str) -> dict:
    """Every failure of the unit (systemd_unit_failures_total), by systemd's Result, summed over
    the selected hosts: stacked bars, one a step (Grafana's $__interval, never under 30 s)."""
    return panel(
        "timeseries", "Failures by reason", "Failures of the unit over the selected hosts, by systemd's Result "
        "(exit-code, signal, core-dump, timeout, watchdog, start-limit-hit, oom-kill, ...; unknown where the "
        "heartbeat could not read the journal), every failure counted once, also those between two heartbeat ticks "
        f"and those of Restart=always services (the {TOP} Results with the most). Right after the heartbeat is "
        "deployed on a host, its first bar may hold the failures since the boot.", "none",
        [target(top(f'sum by (result) (increase(systemd_unit_failures_total{{host=~"$host", {match}}}'
                    '[$__interval]))'), legend="{{result}}")],
        defaults={"decimals": 0, "custom": {"drawStyle": "bars", "fillOpacity": 80, "lineWidth": 1,
                                            "stacking": {"mode": "normal", "group": "A"}}})


def unit_row_panels(unit: str) -> list[dict]:
    name = normalise_unit_pattern(unit)
    match = selector(name)
    kind = name.rsplit(".", 1)[-1] if "." in name and not name.endswith("*") else "service"
    panels = [state_panel(match)]
    if kind == "timer":
        panels += [
            panel("stat", "Since last trigger", "Seconds since the timer last fired (since it was activated if it "
                  "never fired since boot).", "s",
                  [target(top(f'systemd_unit_seconds_since_active{{host=~"$host", {match}}}'))],
                  options=stat_options(), defaults={"thresholds": {"mode": "absolute", "steps": [
                      {"color": "green", "value": None}]}}),
            panel("stat", "Interval", "The timer's own period, from its schedule.", "s",
                  [target(top(f'systemd_timer_interval_seconds{{host=~"$host", {match}}}'))], options=stat_options()),
            panel("stat", "Stale after", "The stale-timer alert's own threshold for this timer (the recording "
                  "rule systemd_timer_stale_threshold_seconds: a factor of the interval, or the inventory's "
                  "override).", "s",
                  [target(top(f'systemd_timer_stale_threshold_seconds{{host=~"$host", {match}}}'))],
                  options=stat_options()),
            panel("timeseries", "Since last trigger over time", "A saw-tooth is healthy; a ramp means the timer "
                  f"stopped firing (the {TOP} hosts with the longest).", "s",
                  [target(top(f'systemd_unit_seconds_since_active{{host=~"$host", {match}}}'))]),
            last_failure_panel(match),
            failures_by_reason_panel(match),
        ]
    elif kind == "service":
        panels += [
            panel("stat", "Restarts", "Restarts systemd made (Restart=) within the dashboard's time range.", "none",
                  [target(f'topk({TOP}, increase_prometheus(systemd_unit_restart_count_total'
                          f'{{host=~"$host", {match}}}[$__range]))', instant=True)], options=stat_options(),
                  defaults={"decimals": 0, "thresholds": {"mode": "absolute", "steps": [
                      {"color": "green", "value": None}, {"color": "orange", "value": 1},
                      {"color": "red", "value": 4}]}}),
            last_failure_panel(match),
            failures_by_reason_panel(match),
            panel("stat", "Last exit status", "The most recent exit of the main process: the exit code, or the "
                  "signal number when killed (9 = SIGKILL). Kept while the next run is up.", "none",
                  [target(top(f'systemd_unit_last_exit_status{{host=~"$host", {match}}}'))], options=stat_options(),
                  defaults={"decimals": 0, "thresholds": {"mode": "absolute", "steps": [
                      {"color": "green", "value": None}, {"color": "red", "value": 1}]}}),
            panel("timeseries", "Since active", "Seconds since the unit was last active; 0 while it is. For a "
                  "oneshot job, since its last run.", "s",
                  [target(top(f'systemd_unit_seconds_since_active{{host=~"$host", {match}}}'))]),
        ]
    else:
        panels += [
            panel("timeseries", "Since active", "Seconds since the unit was last active; 0 while it is.",
                  "s", [target(top(f'systemd_unit_seconds_since_active{{host=~"$host", {match}}}'))]),
            last_failure_panel(match),
            failures_by_reason_panel(match),
        ]
    return panels


TRUST_ROW = "Load-bearing timers: can they be trusted?"
# a load-bearing timer: one the allowlist names (the heartbeat's timer series exist for every reported timer)
LOAD_BEARING = 'on(host, unit) systemd_unit_info{host=~"$host", allowlisted="true"}'
BY_TIMER = "{{host}}: {{unit}}"


def trust_panels() -> list[dict]:
    """Issue 21's questions for every load-bearing timer over the time range: did it fire as often as
    its interval expects, did its runs succeed (and why not), how late did it fire, how long since
    its last successful run. The daily summary's trust report gives the verdict over its own window."""
    triggers = 'systemd_timer_triggers_total{host=~"$host"}'
    runs = 'systemd_timer_runs_total{host=~"$host"}'
    buckets = 'systemd_timer_trigger_lateness_seconds_bucket{host=~"$host"}'
    lateness = 'systemd_timer_last_trigger_lateness_seconds{host=~"$host"}'
    succeeded = counted_in_range('systemd_timer_runs_total{host=~"$host", result="success"}', "host, unit")
    ended = counted_in_range(runs, "host, unit")
    return [
        panel("table", "Runs seen vs expected", "Per load-bearing timer: the triggers the heartbeat counted in the "
              "time range (systemd_timer_triggers_total, also several between two ticks), and the runs its interval "
              "expects in the time the heartbeat watched it (from its first to its last sample in the range, over "
              "systemd_timer_interval_seconds).", "none",
              [target(f"topk({TOP * 10}, {counted_in_range(triggers, 'host, unit')} and {LOAD_BEARING})",
                      instant=True, table=True),
               dict(target(f"topk({TOP * 10}, (tlast_over_time({triggers}[$__range]) - tfirst_over_time({triggers}"
                           f"[$__range])) / last_over_time(systemd_timer_interval_seconds{{host=~\"$host\"}}"
                           f"[$__range]) and {LOAD_BEARING})", instant=True, table=True), refId="B")],
              transformations=[{"id": "merge", "options": {}}], defaults={"decimals": 0},
              colours=[{"matcher": {"id": "byName", "options": "Value #A"},
                        "properties": [{"id": "displayName", "value": "Runs seen"}]},
                       {"matcher": {"id": "byName", "options": "Value #B"},
                        "properties": [{"id": "displayName", "value": "Runs expected"}]}]),
        panel("stat", "Runs that succeeded", "Of the runs of each load-bearing timer's service that ended in the "
              "time range (systemd_timer_runs_total), the fraction that succeeded (the alert "
              "SystemdTimerSuccessRatioLow compares it over its own window).", "percentunit",
              [target(f"bottomk({TOP}, (({succeeded}) or 0 * ({ended})) / ({ended}) and {LOAD_BEARING})",
                      legend=BY_TIMER, instant=True)],
              options=stat_options(), defaults={"decimals": 1}),
        panel("timeseries", "Runs by result", "Runs of the load-bearing timers' services that ended, by result "
              "(success, or systemd's Result of a failed run: exit-code, signal, timeout, ...), summed over the "
              f"selected hosts, one bar a step (the {TOP} with the most).", "none",
              [target(top(f"sum by (unit, result) (increase({runs}[$__interval]) and {LOAD_BEARING})"),
                      legend="{{unit}}: {{result}}")],
              defaults={"decimals": 0, "custom": {"drawStyle": "bars", "fillOpacity": 80, "lineWidth": 1,
                                                  "stacking": {"mode": "normal", "group": "A"}}}),
        panel("timeseries", "Lateness of the last trigger", "How late each load-bearing timer last fired after the "
              "elapse the heartbeat saw scheduled the tick before (seconds; slightly negative is on time), the "
              f"highest in each step, so a late trigger shows however wide the step (the {TOP} latest).", "s",
              [target(top(f"max_over_time({lateness}[$__interval]) and {LOAD_BEARING}"), legend=BY_TIMER)]),
        panel("table", "Lateness in the time range", "Every trigger's lateness in the time range, from the "
              "heartbeat's histogram (systemd_timer_trigger_lateness_seconds, bounds 1, 5, 10, 30, 60, 300, 900, "
              "3600 s): median and 99th percentile (interpolated within a bucket), and the worst last-trigger "
              "lateness a tick saw.", "s",
              [dict(target(f"topk({TOP * 10}, histogram_quantile({phi}, sum by (host, unit, le) "
                           f"(increase({buckets}[$__range]))) and {LOAD_BEARING})", instant=True, table=True), refId=ref)
               for ref, phi in (("A", 0.5), ("B", 0.99))]
              + [dict(target(f"topk({TOP * 10}, max_over_time({lateness}[$__range]) and {LOAD_BEARING})",
                             instant=True, table=True), refId="C")],
              transformations=[{"id": "merge", "options": {}}], defaults={"decimals": 1},
              colours=[{"matcher": {"id": "byName", "options": f"Value #{ref}"},
                        "properties": [{"id": "displayName", "value": name}]}
                       for ref, name in (("A", "Median"), ("B", "99th percentile"), ("C", "Worst"))]),
        panel("stat", "Since last success", f"Seconds since each load-bearing timer's service last ended a "
              f"successful run (systemd_timer_last_success_timestamp_seconds; the {TOP} longest).", "s",
              [target(f'topk({TOP}, time() - systemd_timer_last_success_timestamp_seconds{{host=~"$host"}} '
                      f"and {LOAD_BEARING})", legend=BY_TIMER, instant=True)], options=stat_options()),
    ]


ALERTS_SHOWN = "SystemdUnitRestartLoop|SystemdUnitFailureLoop|SystemdTimerStale|SystemdUnitFailed|SystemdMassRestart"


def overview_panels() -> list[dict]:
    return [
        panel("stat", "Units by state", "How many units are in each ActiveState on the selected hosts: a few "
              "numbers whatever the fleet's size.", "none",
              [target('count by (active_state) (systemd_unit_info{host=~"$host"})', legend="{{active_state}}",
                      instant=True)], options=stat_options(), defaults={"decimals": 0}),
        panel("bargauge", "Hosts that need me now", f"The {TOP} hosts with the most failed units, stale timers "
              "and missing units (allowlisted but not loaded) right now.", "none",
              [target(f'topk({TOP}, sum by (host) ('
                      'count by (host, unit) (systemd_unit_info{host=~"$host", active_state="failed"}) or '
                      'count by (host, unit) (systemd_unit_info{host=~"$host", allowlisted="true", '
                      'load_state!="loaded"}) or count by (host, unit) (systemd_unit_seconds_since_active'
                      '{host=~"$host", unit=~".+[.]timer"} > on(host, unit) '
                      'systemd_timer_stale_threshold_seconds{host=~"$host"})))', instant=True)],
              options={"reduceOptions": {"calcs": ["lastNotNull"], "values": False, "fields": ""},
                       "orientation": "horizontal", "displayMode": "basic"}, defaults={"decimals": 0}),
        panel("table", "Failed units", f"Failed units, allowlisted or not (the first {TOP * 10}).", "none",
              [target(f'limitk({TOP * 10}, systemd_unit_info{{host=~"$host", active_state="failed"}})',
                      instant=True, table=True)]),
        panel("table", "Failures in the time range", "Units whose last failure falls in the dashboard's time "
              "range (the most recent one of each), when, and why: systemd's Result, the exit of that run and "
              "whether systemd then gave up restarting it; and how many times each failed in the range "
              "(systemd_unit_failures_total, every failure counted once, also those between two heartbeat "
              "ticks and those of Restart=always services).", "dateTimeAsIso",
              [target(f'topk({TOP * 10}, 1000 * systemd_unit_last_failure_timestamp_seconds{{host=~"$host"}} '
                      '* on(host, unit) group_left(result, exit_code, exit_status, gave_up) '
                      'systemd_unit_last_failure_info{host=~"$host"} > 1000 * ${__from:date:seconds})',
                      instant=True, table=True),
               dict(target(f'topk({TOP * 10}, {failures_in_range()})', instant=True, table=True), refId="B")],
              transformations=[{"id": "merge", "options": {}}],
              colours=[{"matcher": {"id": "byName", "options": "Value #A"},
                        "properties": [{"id": "displayName", "value": "Last failure"}]},
                       {"matcher": {"id": "byName", "options": "Value #B"},
                        "properties": [{"id": "displayName", "value": "Failures in the range"},
                                       {"id": "unit", "value": "none"}, {"id": "decimals", "value": 0}]}]),
        panel("table", "Stale timers", "Timers past the stale-timer alert's own threshold "
              "(systemd_timer_stale_threshold_seconds: a factor of the interval, or the inventory's override).", "s",
              [target(f'topk({TOP * 10}, systemd_unit_seconds_since_active{{host=~"$host", unit=~".+[.]timer"}} '
                      '> on(host, unit) systemd_timer_stale_threshold_seconds{host=~"$host"})',
                      instant=True, table=True)]),
        panel("stat", "Heartbeat: since last push", f"Seconds since the {TOP} most silent hosts last pushed; above "
              "3 intervals the heartbeat-missing alert fires.", "s",
              [target(f'topk({TOP}, lag(systemd_heartbeat_up{{host=~"$host"}}[1d]))', instant=True)],
              options=stat_options(),
              defaults={"thresholds": {"mode": "absolute", "steps": [
                  {"color": "green", "value": None}, {"color": "red", "value": 90}]}}),
        panel("table", "Alerts firing", "Failed-unit, restart-loop, failure-loop, stale-timer and mass-restart alerts firing "
              "now (vmalert's ALERTS series).", "none",
              [target(f'limitk({TOP * 10}, ALERTS{{alertstate="firing", alertname=~"{ALERTS_SHOWN}", '
                      'host=~"$host"})', instant=True, table=True)]),
        panel("timeseries", "Heartbeat: units reported", f"How many units the heartbeat reports, summed over the "
              f"selected hosts, and the {TOP} hosts that report the most.", "none",
              [target('sum(systemd_heartbeat_units_reported{host=~"$host"})', legend="all selected hosts"),
               dict(target(top('systemd_heartbeat_units_reported{host=~"$host"}')), refId="B")]),
        panel("timeseries", "Heartbeat: collection time", f"How long a tick took to read systemd: the median over "
              f"the selected hosts and the {TOP} slowest.", "s",
              [target('quantile(0.5, systemd_heartbeat_collect_duration_seconds{host=~"$host"})', legend="median"),
               dict(target(top('systemd_heartbeat_collect_duration_seconds{host=~"$host"}')), refId="B")]),
    ]


def mass_restart_annotation() -> dict:
    """The alert SystemdMassRestart as a region on every time series, while it fires."""
    return {"name": "Mass restarts", "datasource": DATASOURCE, "enable": True, "hide": False,
            "iconColor": "orange", "step": "30s",
            "expr": 'ALERTS{alertname="SystemdMassRestart", alertstate="firing", host=~"$host"}',
            "titleFormat": "Mass restart on {{host}}", "textFormat": "event: {{event}}",
            "tagKeys": "host,event", "useValueForTime": False}


def place(rows: list[tuple[str, list[dict]]]) -> list[dict]:
    """Rows of panels on Grafana's 24-column grid, four panels a line; ids from 1."""
    placed, y, next_id = [], 0, 1
    for title, panels in rows:
        placed.append({"type": "row", "title": title, "collapsed": False, "id": next_id, "panels": [],
                       "gridPos": {"x": 0, "y": y, "w": WIDTH, "h": ROW_HEIGHT}})
        next_id += 1
        y += ROW_HEIGHT
        width = WIDTH // min(4, len(panels))
        for index, spec in enumerate(panels):
            if index and index % 4 == 0:
                y += PANEL_HEIGHT
            spec = dict(spec, id=next_id, gridPos={"x": (index % 4) * width, "y": y, "w": width, "h": PANEL_HEIGHT})
            placed.append(spec)
            next_id += 1
        y += PANEL_HEIGHT
    return placed


def systemd_monitoring_dashboard(units: list[str], title: str = "systemd units", uid: str = "systemd-units",
                                 refresh: str = "30s") -> dict:
    """The whole dashboard for an allowlist."""
    rows = [("Overview", overview_panels())]
    if any(normalise_unit_pattern(unit).endswith(".timer") for unit in units):
        rows.append((TRUST_ROW, trust_panels()))
    rows += [(normalise_unit_pattern(unit), unit_row_panels(unit)) for unit in units]
    return {
        "uid": uid, "title": title, "tags": ["systemd", "systemd-monitoring"], "timezone": "browser",
        "editable": True, "graphTooltip": 1, "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": refresh,
        "time": {"from": "now-24h", "to": "now"}, "fiscalYearStartMonth": 0, "liveNow": False,
        "description": "Generated by systemd-monitoring from the inventory's allowlist; edits are overwritten.",
        "annotations": {"list": [mass_restart_annotation()]}, "links": [],
        "templating": {"list": [
            {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
             "hide": 0, "refresh": 1, "options": [], "regex": ""},
            {"type": "query", "name": "host", "label": "Host", "datasource": DATASOURCE,
             "query": {"query": "label_values(systemd_heartbeat_up, host)", "refId": "host"},
             "definition": "label_values(systemd_heartbeat_up, host)", "refresh": 2, "multi": True,
             "includeAll": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "hide": 0, "options": [],
             "regex": "", "sort": 1},
        ]},
        "panels": place(rows),
    }


class FilterModule:
    def filters(self):
        return {"systemd_monitoring_dashboard": systemd_monitoring_dashboard}

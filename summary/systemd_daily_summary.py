# SPDX-License-Identifier: MIT
"""systemd-daily-summary: what went wrong with systemd units in the last day, per host.

Pulls the heartbeat's history from VictoriaMetrics' query API and reports, per host: units
that failed (allowlisted or not) with when, for how long, why (systemd's Result and the exit
status) and whether systemd gave up restarting them; units that failed and were restarted
(crashes), with counts and the last reason; every unit's failures counted by systemd's Result
(systemd_unit_failures_total); units systemd restarted, with counts; mass
restarts (at least K load-bearing units restarted or failed within M seconds) and reboots;
timers that went stale; allowlisted units missing on the host; gaps where the heartbeat itself
pushed nothing; and a one-line verdict. A host seen in the week before the window that pushed
nothing in it is reported as "no data", never as healthy.

    systemd-daily-summary [--url URL] [--since 24h] [--until now] [--unit NAME]... [--json]

Exit status: 0 nothing to report, 1 findings, 2 VictoriaMetrics could not be queried,
64 a malformed or inverted window (EX_USAGE).

The number of queries is fixed (at most nine), whatever the number of hosts and units: every
query covers all of them. VictoriaMetrics aggregates (MetricsQL rollups over the window); raw
samples are exported only for the series whose exact timestamps a finding needs (failed units,
the units that failed, the hosts whose pushes may have a gap), so the work here grows with the
findings, not with the fleet.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import requests

try:  # the heartbeat's own reading of unit names (installed with the project; pyproject.toml)
    from systemd_heartbeat.model import HeartbeatError
    from systemd_heartbeat.units import check_unit_patterns
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plugins", "module_utils"))
    from systemd_heartbeat.model import HeartbeatError
    from systemd_heartbeat.units import check_unit_patterns

DEFAULT_URL = "http://localhost:30428"
EX_USAGE = 64
EX_SOFTWARE = 70  # sysexits.h: an internal error
STEP = 30  # seconds; the heartbeat's interval, the resolution of failure and staleness episodes
HOST_MEMORY = "7d"  # a host that pushed in this long before the window is expected in it
# Mass restarts, as the alert SystemdMassRestart defines them (roles/systemd_monitoring_alerts
# defaults): at least this many load-bearing units within this many seconds on one host.
MASS_RESTART_UNITS, MASS_RESTART_WINDOW = 3, 300
HEALTHY_LISTED = 5  # more healthy hosts than this are counted in the report, not listed one by one
EXIT_WORDS = {"exited": "exit status {}", "killed": "killed by signal {}", "dumped": "dumped core on signal {}"}


class QueryError(Exception):
    """VictoriaMetrics could not be queried (down, refused, bad answer)."""


class UsageError(Exception):
    """A malformed or inverted window."""


# ------------------------------------------------------------------ the window

RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_moment(text: str, now: float, name: str) -> float:
    """'now', a duration ago ('24h', '90m', '2d'), Unix seconds, or ISO 8601 -> Unix seconds."""
    value = text.strip()
    if value == "now":
        return now
    match = RELATIVE.match(value)
    if match:
        return now - float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{name} {text!r} is not 'now', a duration like 24h or 90m, "
                         "Unix seconds, or an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def window(since: str, until: str, now: float) -> tuple[float, float]:
    start, end = parse_moment(since, now, "--since"), parse_moment(until, now, "--until")
    if start >= end:
        raise UsageError(f"the window is empty or inverted: --since {since} ({iso(start)}) is not before "
                         f"--until {until} ({iso(end)})")
    return start, end


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def span(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


# ------------------------------------------------------------------ VictoriaMetrics

class Victoria:
    """The query API, with every request counted (the count must not grow with units)."""

    def __init__(self, url: str, timeout: float, hosts: "list[str] | None" = None):
        self.url, self.timeout, self.requests = url.rstrip("/"), timeout, 0
        self.session = requests.Session()
        # --host: every series selector of every request narrowed to those hosts by
        # VictoriaMetrics itself (extra_filters[]), so a summary of one host in a fleet's
        # VictoriaMetrics reads that host's series only
        self.scope = {"extra_filters[]": f"{{host=~{regex(set(hosts))}}}"} if hosts else {}

    def _get(self, path: str, params: dict, stream: bool = False) -> requests.Response:
        self.requests += 1
        params = {**params, **self.scope}
        try:
            answer = self.session.post(f"{self.url}{path}", data=params, timeout=self.timeout, stream=stream)
        except requests.RequestException as error:
            reason = type(error).__name__ if not str(error) else str(error).rsplit(":", maxsplit=1)[-1].strip(" )'\"")
            raise QueryError(f"cannot query VictoriaMetrics at {self.url}: {reason}") from None
        if answer.status_code != 200:
            first = (answer.text.strip().splitlines() or [""])[0][:200]
            raise QueryError(f"VictoriaMetrics at {self.url} answered HTTP {answer.status_code} to {path}: {first}")
        return answer

    def query(self, expr: str, at: float) -> list[dict]:
        return self._json(self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"}), "value")

    def query_range(self, expr: str, start: float, end: float, step: int = STEP) -> list[dict]:
        return self._json(self._get("/api/v1/query_range", {
            "query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}s"}), "values")

    def export(self, matches: list[str], start: float, end: float) -> Iterator[tuple[dict, list[tuple[float, float]]]]:
        """Raw samples, exactly as pushed (for gaps, where interpolation would hide them), of the
        series any of `matches` selects, one series at a time (an export is read as it streams):
        (its labels, [(seconds, value), ...]) without its staleness markers."""
        answer = self._get("/api/v1/export", {"match[]": matches, "start": f"{start:.3f}", "end": f"{end:.3f}"},
                           stream=True)
        try:
            for line in answer.iter_lines():
                if line.strip():
                    metric, points = exported(json.loads(line), self.url)
                    if metric.get("host"):  # none of the heartbeat's without one (query_rows)
                        yield metric, points
        except ValueError:
            raise QueryError(f"VictoriaMetrics at {self.url} sent an export that is not JSON lines") from None
        except requests.RequestException:
            raise QueryError(f"VictoriaMetrics at {self.url} broke off an export") from None

    def _json(self, answer: requests.Response, key: str) -> list[dict]:
        try:
            return query_rows(answer.json()["data"]["result"], key)
        except (ValueError, KeyError, TypeError):
            raise QueryError(f"VictoriaMetrics at {self.url} sent an answer that is not a query result") from None


class Labels(dict):
    """A series' labels, checked to be text; a label it lacks reads as "" (a series pushed by
    something else under the heartbeat's names may lack `unit`: no KeyError, no crash)."""

    def __init__(self, labels: object):
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise TypeError
        super().__init__(labels)

    def __missing__(self, key: str) -> str:
        return ""


def query_rows(result: object, key: str) -> list[dict]:
    """A query's result, checked: each row's labels are text and its `key` a [time, number] pair
    ("value": an instant query) or a list of them ("values": a range), else ValueError, TypeError
    or KeyError. A series without a host label is none of the heartbeat's (every series it pushes
    has one): left out."""
    if not isinstance(result, list):
        raise TypeError
    rows = []
    for row in result:
        metric = Labels(row["metric"])
        for stamp, value in row[key] if key == "values" else [row[key]]:
            float(stamp)  # raises on anything that is not a number
            float(value)
        if metric.get("host"):
            rows.append({**row, "metric": metric})
    return rows


def exported(series: object, url: str) -> tuple[dict, list[tuple[float, float]]]:
    """One line of an export -> (labels, [(seconds, value), ...]), its staleness markers left out:
    VictoriaMetrics writes the marker the heartbeat ends a series with (a unit gone, a state
    left) as a null value, which is no sample. Anything else that is not a number is refused."""
    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    try:
        metric, stamps, values = Labels(series["metric"]), series["timestamps"], series["values"]  # type: ignore[index]
        if not (isinstance(stamps, list) and isinstance(values, list) and len(stamps) == len(values)
                and all(number(stamp) for stamp in stamps) and all(v is None or number(v) for v in values)):
            raise TypeError
    except (KeyError, TypeError):
        raise QueryError(f"VictoriaMetrics at {url} sent an export line that is not a series of numbers") from None
    # NaN: a marker too
    return metric, [(stamp / 1000, value) for stamp, value in zip(stamps, values) if value is not None and value == value]


# ------------------------------------------------------------------ shaping

def episodes(timestamps: list[float], tolerance: float = STEP * 1.5) -> list[tuple[float, float]]:
    """Runs of timestamps no further apart than `tolerance` -> [(first, last), ...]."""
    runs: list[tuple[float, float]] = []
    for stamp in sorted(timestamps):
        if runs and stamp - runs[-1][1] <= tolerance:
            runs[-1] = (runs[-1][0], stamp)
        else:
            runs.append((stamp, stamp))
    return runs


def gaps(stamps: list[float], start: float, end: float, limit: float) -> list[tuple[float, float]]:
    """Silences longer than `limit` between raw pushes, including at the window's edges."""
    points = [start] + sorted(stamps) + [end]
    return [(a, b) for a, b in zip(points, points[1:]) if b - a > limit]


FINDINGS = ("failed", "crashed", "restarted", "mass_restarts", "reboots", "stale_timers", "missing", "heartbeat_gaps")


def new_host() -> dict:
    return {**{key: [] for key in FINDINGS}, "failures_by_reason": [], "pushed": False}


def counted_in_window(counter: str, whole: str, by: str) -> str:
    """How much `counter` counted in the window, summed by `by`, as the alert
    SystemdUnitFailureLoop counts failures: increase_prometheus between the samples in the
    window, plus the first value of a series born in the window after the host's first push in
    it (what it counted since the tick before, all new). A series whose first sample is the
    host's first push in the window existed before it, or was born at the heartbeat's first look
    at the host, holding what it counted before: neither counts. (increase() would guess from
    the first values whether a new series started at 0.)"""
    series = f"{counter}[{whole}]"
    return (f"sum by ({by}) (increase_prometheus({series}) or label_set(first_over_time({series}) "
            f"and (tfirst_over_time({series}) > on(host) group_left() "
            f'tfirst_over_time(systemd_heartbeat_up[{whole}])), "born", "in-window"))')


def failures_in_window(whole: str) -> str:
    """Each unit's failures in the window by Result, from systemd_unit_failures_total."""
    return counted_in_window("systemd_unit_failures_total", whole, "host, unit, result") + " > 0"


def reason(labels: dict | None) -> dict:
    """A failure's reason, from the labels of systemd_unit_last_failure_info."""
    if not labels:
        return {}
    return {"result": labels.get("result", ""), "exit_code": labels.get("exit_code", ""),
            "exit_status": int(labels["exit_status"]) if labels.get("exit_status", "").isdigit() else None,
            "gave_up": labels.get("gave_up") == "true"}


def reason_at(infos: list[tuple[float, dict]], moment: float) -> dict:
    """The reason the heartbeat reported right after `moment` (its first push that knew it)."""
    later = [labels for stamp, labels in infos if stamp >= moment - 0.001]
    return reason(later[0] if later else (infos[-1][1] if infos else None))


def literal(text: str) -> str:
    """`text` as a MetricsQL string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def regex(names: set[str]) -> str:
    """A MetricsQL string literal holding a regex that matches exactly `names`."""
    return literal("|".join(sorted(re.escape(name) for name in names)))


def per_series(rows: list[dict]) -> dict[tuple, dict[str, float]]:
    """Rows tagged with an `of` label (label_set) -> {the series' other labels: {of: value}}."""
    found: dict[tuple, dict[str, float]] = {}
    for row in rows:
        labels = dict(row["metric"])
        of = labels.pop("of", "")
        found.setdefault(tuple(sorted(labels.items())), {})[of] = float(row["value"][1])
    return found


def distinct_values(rows: list[dict], start: float, end: float) -> dict[tuple, list[float]]:
    """count_values_over_time("at", ...) rows -> {(host, unit or ""): sorted values in the window}."""
    found: dict[tuple, list[float]] = {}
    for row in rows:
        metric = row["metric"]
        try:
            value = float(metric["at"])
        except (KeyError, ValueError):
            continue
        if start <= value <= end:
            found.setdefault((metric.get("host", ""), metric.get("unit", "")), []).append(value)
    return {key: sorted(values) for key, values in found.items()}


def mass_restarts(events: list[tuple[float, str]], boots: list[float], units: int, window: float) -> list[dict]:
    """Episodes of the alert SystemdMassRestart (event=units): moments when at least `units`
    distinct units had an event (entered active, or failed) within the last `window` seconds,
    leaving out events in the window right after a boot (those are the reboot's). Each
    episode: its first and last event, and every unit counted in it."""
    events = sorted((t, unit) for t, unit in events if not any(boot <= t <= boot + window for boot in boots))
    episodes: list[dict] = []
    in_window: dict[str, int] = {}  # unit -> its events in (moment - window, moment]
    first = 0
    for moment, unit in events:  # one pass: a crash loop has an event at every tick
        in_window[unit] = in_window.get(unit, 0) + 1
        while events[first][0] <= moment - window:
            gone = events[first][1]
            in_window[gone] -= 1
            if not in_window[gone]:
                del in_window[gone]
            first += 1
        if len(in_window) < units:
            continue
        if episodes and events[first][0] <= episodes[-1]["last"]:  # overlaps the one before: the same event
            episodes[-1]["last"] = moment
            episodes[-1]["units"].update(in_window)
        else:
            episodes.append({"first": events[first][0], "last": moment, "units": set(in_window)})
    return [{"from": iso(e["first"]), "to": iso(e["last"]), "units": sorted(e["units"])} for e in episodes]


def collect(victoria: Victoria, start: float, end: float, stale_factor: float, gap_after: float,
            mass_units: int = MASS_RESTART_UNITS, mass_window: float = MASS_RESTART_WINDOW) -> dict:
    """Nine queries for every host and unit; returns the findings per host."""
    length = f"{int(end - start)}s"
    whole = f"{int(round((end - start) * 1000)) + 1}ms"  # [start, end] as an export reads it, both ends in
    hosts: dict[str, dict] = {}

    def host(name: str) -> dict:
        return hosts.setdefault(name, new_host())

    # 1. which hosts are expected: those that pushed in the week before the window, or in it
    for row in victoria.query(f"count by (host) (count_over_time(systemd_heartbeat_up[{HOST_MEMORY}]))", start):
        host(row["metric"]["host"])
    # 2. the heartbeat's pushes, per series: the first and last in the window and the time they
    #    cover without a silence longer than gap_after. Only a series that covers less than
    #    last - first, or starts or ends further than gap_after from the window's edges, can have
    #    a gap: its raw pushes are exported below, the others have none.
    suspects: set[str] = set()
    for labels, seen in per_series(victoria.query(
            f'label_set(tfirst_over_time(systemd_heartbeat_up[{whole}]), "of", "first") or '
            f'label_set(tlast_over_time(systemd_heartbeat_up[{whole}]), "of", "last") or '
            f'label_set(duration_over_time(systemd_heartbeat_up[{whole}], {gap_after}), "of", "covered")',
            end)).items():
        name = dict(labels)["host"]
        host(name)["pushed"] = True
        first, last = seen.get("first", start), seen.get("last", end)
        if first - start > gap_after or end - last > gap_after or last - first - seen.get("covered", 0) > 0.001:
            suspects.add(name)
    # 3. failure episodes from the raw samples of failed units (the heartbeat ends a state's
    #    series with a staleness marker, so raw samples mark the episode exactly)
    failed: dict[tuple[str, str], list[float]] = {}
    for metric, points in victoria.export(['systemd_unit_info{active_state="failed"}'], start, end):
        failed.setdefault((metric["host"], metric["unit"]), []).extend(t for t, _ in points)
    # 4. every failure the heartbeat recorded in the window (each distinct value of the last
    #    failure's time, even for a unit systemd restarted before a tick saw it failed)
    failures = distinct_values(victoria.query(
        f'count_values_over_time("at", systemd_unit_last_failure_timestamp_seconds[{length}])', end), start, end)
    # 5. one export, skipped when nothing needs it: the raw pushes of the hosts that may have a
    #    gap, and the exit statuses and failure reasons of just the units (on just the hosts)
    #    that failed
    failing: dict[str, set[str]] = {}
    for name, unit in [*failed, *failures]:
        failing.setdefault(name, set()).add(unit)
    matches = [f"systemd_heartbeat_up{{host=~{regex(suspects)}}}"] if suspects else []
    matches += [f'{{__name__=~"systemd_unit_last_exit_status|systemd_unit_last_failure_info",'
                f'host={literal(name)},unit=~{regex(units)}}}' for name, units in sorted(failing.items())]
    status: dict[tuple[str, str], list[tuple[float, float]]] = {}
    infos: dict[tuple[str, str], list[tuple[float, dict]]] = {}
    for metric, points in victoria.export(matches, start, end) if matches else ():
        stamps = [t for t, _ in points]
        if metric["__name__"] == "systemd_heartbeat_up":
            record = host(metric["host"])
            record["pushed"] = record["pushed"] or bool(stamps)
            record["heartbeat_gaps"] = [{"from": iso(a), "to": iso(b), "duration": span(b - a), "seconds": round(b - a)}
                                        for a, b in gaps(stamps, start, end, gap_after)] if stamps else []
        elif metric["__name__"] == "systemd_unit_last_exit_status":
            status.setdefault((metric["host"], metric["unit"]), []).extend(points)
        else:
            infos.setdefault((metric["host"], metric["unit"]), []).extend((t, metric) for t in stamps)
    for samples in infos.values():
        samples.sort(key=lambda sample: sample[0])
    episodes_of: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for (name, unit), stamps in sorted(failed.items()):
        for first, last in episodes(stamps, gap_after):
            episodes_of.setdefault((name, unit), []).append((first, last))
            seen = [v for t, v in status.get((name, unit), []) if first <= t <= last]
            at_failure = [m for m in failures.get((name, unit), []) if first - gap_after <= m <= last]
            host(name)["failed"].append({
                "unit": unit, "since": iso(first), "until": iso(last),
                "duration": span(last - first + STEP), "seconds": round(last - first + STEP),
                "ongoing": end - last <= gap_after,
                "last_exit_status": int(seen[-1]) if seen else None,
                **reason_at(infos.get((name, unit), []), at_failure[-1] if at_failure else first)})
    # failures outside any failed episode: the unit was restarted (by systemd or by hand)
    for (name, unit), moments in sorted(failures.items()):
        spans = episodes_of.get((name, unit), [])
        crashes = [m for m in moments if not any(a - gap_after <= m <= b + STEP for a, b in spans)]
        if crashes:
            host(name)["crashed"].append({"unit": unit, "failures": len(crashes), "last": iso(crashes[-1]),
                                          **reason_at(infos.get((name, unit), []), crashes[-1])})
    # 6. restarts systemd made in the window (only between samples inside it: no phantom counts
    #    for a unit first seen with a non-zero counter), and in the same query each unit's
    #    failures by Result (failures_in_window)
    by_reason: dict[tuple[str, str], dict[str, int]] = {}
    for row in victoria.query(
            f'label_set(increase_prometheus(systemd_unit_restart_count_total[{length}]) > 0, "of", "restarts") or '
            f'label_set({failures_in_window(whole)}, "of", "failures")', end):
        metric, count = row["metric"], int(round(float(row["value"][1])))
        if metric.get("of") == "failures":
            by_reason.setdefault((metric["host"], metric["unit"]), {})[metric.get("result", "")] = count
        else:
            host(metric["host"])["restarted"].append({"unit": metric["unit"], "restarts": count})
    for (name, unit), counts in by_reason.items():
        host(name)["failures_by_reason"].append(
            {"unit": unit, "failures": sum(counts.values()), "by_result": dict(sorted(counts.items()))})
    # 7. stale timers: past the stale-timer alert's own threshold where vmalert recorded it
    #    (the inventory's overrides), else stale_factor x their own interval
    #    (compared with each threshold first and the results joined: joining the thresholds
    #    themselves with `or` costs VictoriaMetrics every timer at every step, seconds at 1,000 hosts)
    since, recorded = 'systemd_unit_seconds_since_active{unit=~".+[.]timer"}', "systemd_timer_stale_threshold_seconds"
    for row in victoria.query_range(
            f"max by (host, unit) (({since} > on(host, unit) {recorded}) or on(host, unit) ({since} > on(host, unit) "
            f"({stale_factor} * systemd_timer_interval_seconds unless on(host, unit) {recorded})))", start, end):
        for first, last in episodes([float(t) for t, _ in row["values"]]):
            host(row["metric"]["host"])["stale_timers"].append({
                "unit": row["metric"]["unit"], "since": iso(first), "until": iso(last),
                "duration": span(last - first + STEP), "seconds": round(last - first + STEP),
                "ongoing": end - last <= STEP * 1.5})
    # 8. every allowlisted unit (the load-bearing ones a mass restart counts), and those
    #    systemd did not know at some point in the window
    load_bearing = set()
    for row in victoria.query(f'max by (host, unit, load_state) (max_over_time('
                              f'systemd_unit_info{{allowlisted="true"}}[{length}]))', end):
        metric = row["metric"]
        load_bearing.add((metric["host"], metric["unit"]))
        if metric["load_state"] != "loaded":
            host(metric["host"])["missing"].append({"unit": metric["unit"], "load_state": metric["load_state"]})
    # 9. reboots and units (re)entering active: each distinct boot and start time in the window
    #    (only series with a value in the window: a start before it is no event)
    started = '{__name__=~"systemd_unit_active_enter_timestamp_seconds|systemd_boot_timestamp_seconds"}'
    starts = distinct_values(victoria.query(
        f'count_values_over_time("at", {started}[{length}]) '
        f'and on(host, unit) (max_over_time({started}[{length}]) >= {start:.3f})', end), start, end)
    for name in {h for h, _ in [*starts, *failures]}:
        boots = starts.get((name, ""), [])
        host(name)["reboots"] = [{"at": iso(boot)} for boot in boots]
        events = [(t, unit) for (h, unit), moments in [*starts.items(), *failures.items()]
                  if h == name and unit and (h, unit) in load_bearing for t in moments]
        host(name)["mass_restarts"] = mass_restarts(events, boots, mass_units, mass_window)
    for record in hosts.values():
        record["restarted"].sort(key=lambda r: (-r["restarts"], r["unit"]))
        record["crashed"].sort(key=lambda r: (-r["failures"], r["unit"]))
        record["failures_by_reason"].sort(key=lambda r: (-r["failures"], r["unit"]))
        record["stale_timers"].sort(key=lambda r: (r["since"], r["unit"]))
        record["missing"].sort(key=lambda r: r["unit"])
        record["verdict"] = verdict(record)
    return hosts


# ------------------------------------------------------------------ can this timer be trusted?

class TrustRule:
    """The verdict's thresholds (the daily playbook's systemd_daily_summary_trust_* variables,
    as flags): checked here, so a bad one is one line naming it (UsageError)."""

    def __init__(self, window: str = "7d", max_failed: str = "0", max_late: str = "10", min_seen: str = "0.95",
                 max_gap: str = "2"):
        self.window = duration(window, "--trust-window")
        self.max_failed = number(max_failed, "--trust-max-failed", int, lambda v: v >= 0, "a whole number >= 0")
        self.max_late = number(max_late, "--trust-max-late", float, lambda v: v > 0, "a number of seconds > 0")
        self.min_seen = number(min_seen, "--trust-min-seen", float, lambda v: 0 < v <= 1, "a fraction in (0, 1]")
        self.max_gap = number(max_gap, "--trust-max-gap", float, lambda v: v >= 1, "a number of intervals >= 1")

    def as_dict(self) -> dict:
        return {"window_seconds": round(self.window), "max_failed_runs": self.max_failed,
                "max_lateness_seconds": self.max_late, "min_runs_seen_fraction": self.min_seen,
                "max_intervals_without_success": self.max_gap, "text": self.text()}

    def text(self) -> str:
        return (f"ready for auto-pull when the heartbeat watched the timer for the whole window (less one interval), "
                f"saw at least {self.min_seen:.0%} of the runs its interval expects, at most {self.max_failed} "
                f"run{'s' if self.max_failed != 1 else ''} failed, none came more than {seconds(self.max_late)} late, "
                f"and it never went more than {self.max_gap:g} intervals without a successful run")


def duration(text: str, name: str) -> float:
    match = RELATIVE.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise UsageError(f"{name} {text!r} is not a duration like 7d, 36h or 90m")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


def number(text: str, name: str, kind: type, ok, what: str):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or value != value or not ok(value):
        raise UsageError(f"{name} {text!r} is not {what}")
    return value


def seconds(value: float) -> str:
    return f"{value:g} s" if abs(value) < 60 else span(value)


def days(length: float) -> str:
    return f"{length / 86400:g} day{'s' if length != 86400 else ''}" if length % 86400 == 0 else span(length)


def trust_queries(end: float, rule: TrustRule) -> tuple[str, str]:
    """Two queries for every load-bearing timer on every host: what the heartbeat saw of it over
    the trust window (each value tagged with `of`), and each moment it saw a successful run end."""
    whole = f"{int(round(rule.window * 1000)) + 1}ms"
    load_bearing = f'on(host, unit) last_over_time(systemd_unit_info{{allowlisted="true"}}[{whole}])'
    parts = {
        "first": f"tfirst_over_time(systemd_timer_triggers_total[{whole}])",
        "last": f"tlast_over_time(systemd_timer_triggers_total[{whole}])",
        "interval": f"last_over_time(systemd_timer_interval_seconds[{whole}])",
        "worst": f"max_over_time(systemd_timer_last_trigger_lateness_seconds[{whole}])",
        "triggers": counted_in_window("systemd_timer_triggers_total", whole, "host, unit"),
        "runs": counted_in_window("systemd_timer_runs_total", whole, "host, unit, service, result"),
        "late": counted_in_window("systemd_timer_trigger_lateness_seconds_bucket", whole, "host, unit, le"),
    }
    seen = " or ".join(f'label_set(({expr}) and {load_bearing}, "of", "{of}")' for of, expr in parts.items())
    successes = (f'count_values_over_time("at", systemd_timer_last_success_timestamp_seconds[{whole}]) '
                 f"and {load_bearing}")
    return seen, successes


def trust(victoria: Victoria, end: float, rule: TrustRule) -> list[dict]:
    """The trust report of every load-bearing timer the heartbeat counted triggers for in the
    window ending at `end`: runs expected and seen, failed runs and why, lateness, the longest
    time without a successful run, and the verdict (TrustRule)."""
    seen_query, successes_query = trust_queries(end, rule)
    start = end - rule.window
    timers: dict[tuple[str, str], dict] = {}
    for row in victoria.query(seen_query, end):
        metric, value = row["metric"], float(row["value"][1])
        timer = timers.setdefault((metric["host"], metric["unit"]), {"runs": {}, "buckets": {}, "service": ""})
        if metric["of"] == "runs":
            timer["service"] = metric.get("service", "")
            timer["runs"][metric.get("result", "")] = int(round(value))
        elif metric["of"] == "late":
            timer["buckets"][float(metric["le"])] = value
        else:
            timer[metric["of"]] = value
    successes = distinct_values(victoria.query(successes_query, end), 0, end)
    report = []
    for (host, unit), seen in sorted(timers.items()):
        if "first" in seen:  # counted triggers: a heartbeat that reports them
            report.append(judge(host, unit, seen, successes.get((host, unit), []), start, end, rule))
    return report


def judge(host: str, unit: str, seen: dict, successes: list[float], start: float, end: float,
          rule: TrustRule) -> dict:
    first, interval = seen["first"], seen.get("interval", 0.0)
    watched_until = min(end, seen["last"] + STEP)
    watched = watched_until - first
    expected = int(round(watched / interval)) if interval > 0 else 0
    triggers = int(round(seen.get("triggers", 0)))
    failed = {result: count for result, count in sorted(seen["runs"].items()) if result != "success" and count}
    succeeded = seen["runs"].get("success", 0)
    buckets = sorted(seen["buckets"].items())
    total = buckets[-1][1] if buckets else 0.0
    median = next((le for le, count in buckets if count >= total / 2), None) if total else None
    median = median if median != float("inf") else None  # past the last bound: no bound to state
    below = [count for le, count in buckets if le <= rule.max_late]  # the largest bound not above the threshold
    late = int(round(total - (below[-1] if below else 0)))
    worst = seen.get("worst")
    if not late and worst is not None and worst > rule.max_late:
        late = 1
    moments = [max(start, first)] + [t for t in successes if max(start, first) < t <= watched_until] + [watched_until]
    longest = max(b - a for a, b in zip(moments, moments[1:]))
    blocking = []
    if watched + interval < rule.window:
        blocking.append(f"not watched long enough ({days(watched)} of {days(rule.window)})")
    if not interval:
        blocking.append("its interval is unknown (no runs to expect)")
    elif triggers < rule.min_seen * expected:
        blocking.append(f"{triggers:,} of {expected:,} expected runs seen "
                        f"({triggers / expected if expected else 0:.0%}, under {rule.min_seen:.0%})")
    if sum(failed.values()) > rule.max_failed:
        blocking.append(f"{sum(failed.values()):,} failed run{'s' if sum(failed.values()) != 1 else ''} (more than "
                        f"{rule.max_failed}: " + ", ".join(f"{result} {count}" for result, count in failed.items()) + ")")
    if late:
        blocking.append(f"{late:,} run{'s' if late != 1 else ''} late by more than {seconds(rule.max_late)}"
                        + (f" (worst {seconds(worst)})" if worst is not None else ""))
    if interval and longest > rule.max_gap * interval:
        blocking.append(f"{span(longest)} without a successful run (more than {rule.max_gap:g} x {seconds(interval)})")
    verdict = (f"ready for auto-pull: {days(rule.window)}, {triggers:,} runs, {sum(failed.values())} failed, "
               f"none late by more than {seconds(rule.max_late)}") if not blocking else \
        "not ready for auto-pull: " + "; ".join(blocking)
    return {"host": host, "unit": unit, "service": seen["service"], "watched_seconds": round(watched),
            "interval_seconds": interval, "runs_expected": expected, "runs_seen": triggers,
            "runs_succeeded": succeeded, "runs_failed": sum(failed.values()), "failed_by_result": failed,
            "lateness_worst_seconds": worst, "lateness_median_at_most_seconds": median, "runs_late": late,
            "longest_without_success_seconds": round(longest), "ready": not blocking, "blocking": blocking,
            "verdict": verdict}


def trust_markdown(timers: list[dict], end: float, rule: TrustRule) -> list[str]:
    if not timers:
        return []
    lines = [f"## Can these timers be trusted? {iso(end - rule.window)} to {iso(end)}", "",
             f"Rule: {rule.text()}.", ""]
    for timer in timers:
        failed = ", ".join(f"{result} {count}" for result, count in timer["failed_by_result"].items())
        median = timer["lateness_median_at_most_seconds"]
        lines += [f"### {timer['host']}: `{timer['unit']}`: {timer['verdict']}", "",
                  f"- runs: {timer['runs_seen']:,} seen of {timer['runs_expected']:,} expected (every "
                  f"{seconds(timer['interval_seconds'])}, watched {days(timer['watched_seconds'])})",
                  f"- ended: {timer['runs_succeeded']:,} succeeded, {timer['runs_failed']:,} failed"
                  + (f" ({failed})" if failed else "") + (f", of `{timer['service']}`" if timer["service"] else ""),
                  "- lateness: " + (f"worst {seconds(timer['lateness_worst_seconds'])}"
                                    if timer["lateness_worst_seconds"] is not None else "worst unknown")
                  + (f", median at most {seconds(median)}" if median is not None else "")
                  + f", {timer['runs_late']:,} late by more than {seconds(rule.max_late)}",
                  f"- longest without a successful run: {span(timer['longest_without_success_seconds'])}", ""]
    return lines


def only_units(hosts: dict, patterns: list[str]) -> dict:
    """The findings about the units `patterns` name (the heartbeat's names and globs)."""
    def wanted(unit: str) -> bool:
        return any(fnmatch.fnmatchcase(unit, pattern) for pattern in patterns)

    for record in hosts.values():
        for key in ("failed", "crashed", "failures_by_reason", "restarted", "stale_timers", "missing"):
            record[key] = [finding for finding in record[key] if wanted(finding["unit"])]
        record["mass_restarts"] = [event for event in record["mass_restarts"] if any(map(wanted, event["units"]))]
        record["verdict"] = verdict(record)
    return hosts


def empty_host(name: str) -> dict:
    """A host asked for by name that VictoriaMetrics knows nothing about."""
    record = new_host()
    record["verdict"] = verdict(record)
    return record


def verdict(record: dict) -> str:
    """One line: healthy, no data, or what needs attention."""
    if not record["pushed"]:
        return "no data: the heartbeat pushed nothing in the window"
    kinds = (("failed", "failure", "failures"), ("crashed", "unit crashed", "units crashed"),
             ("restarted", "unit restarted", "units restarted"), ("mass_restarts", "mass restart", "mass restarts"),
             ("reboots", "reboot", "reboots"), ("stale_timers", "stale timer", "stale timers"),
             ("missing", "missing unit", "missing units"), ("heartbeat_gaps", "heartbeat gap", "heartbeat gaps"))
    parts = [f"{len(record[key])} {one if len(record[key]) == 1 else many}"
             for key, one, many in kinds if record[key]]
    return "attention: " + ", ".join(parts) if parts else "healthy"


def has_findings(hosts: dict) -> bool:
    return any(record["verdict"] != "healthy" for record in hosts.values())


# ------------------------------------------------------------------ output

def markdown(hosts: dict, start: float, end: float, trusted: tuple[list[dict], TrustRule] | None = None) -> str:
    """Every host with findings (or no data) in full; healthy hosts by name while they are few,
    else counted in one line, so a fleet's report is as long as its trouble."""
    lines = [f"# systemd daily summary, {iso(start)} to {iso(end)}", ""]
    if not hosts:
        lines += ["No host has pushed a heartbeat in the window or the week before it.", ""]
    healthy = {name for name, record in hosts.items() if record["verdict"] == "healthy"}
    counted = healthy if len(healthy) > HEALTHY_LISTED else set()
    for name in sorted(set(hosts) - counted):
        record = hosts[name]
        lines += [f"## {name}: {record['verdict']}", ""]
        if not record["pushed"]:
            continue
        for failure in record["failed"]:
            lines.append(f"- failed: `{failure['unit']}` at {failure['since']} for {failure['duration']}"
                         + (" (still failed)" if failure["ongoing"] else "") + why(failure))
        for crash in record["crashed"]:
            lines.append(f"- crashed: `{crash['unit']}` failed {crash['failures']} time"
                         f"{'s' if crash['failures'] != 1 else ''} and was restarted, the last at {crash['last']}"
                         + why(crash))
        for tally in record["failures_by_reason"]:
            lines.append(f"- failures by reason: `{tally['unit']}` {tally['failures']}: "
                         + ", ".join(f"{result} {count}" for result, count in tally["by_result"].items()))
        for restart in record["restarted"]:
            lines.append(f"- restarted: `{restart['unit']}` {restart['restarts']} time"
                         f"{'s' if restart['restarts'] != 1 else ''}")
        for event in record["mass_restarts"]:
            lines.append(f"- mass restart: {len(event['units'])} load-bearing units restarted or failed from "
                         f"{event['from']} to {event['to']}: " + ", ".join(f"`{unit}`" for unit in event["units"]))
        for boot in record["reboots"]:
            lines.append(f"- reboot: the host booted at {boot['at']}")
        for stale in record["stale_timers"]:
            lines.append(f"- stale timer: `{stale['unit']}` from {stale['since']} for {stale['duration']}"
                         + (" (still stale)" if stale["ongoing"] else ""))
        for missing in record["missing"]:
            lines.append(f"- missing: `{missing['unit']}` is allowlisted but {missing['load_state']}")
        for gap in record["heartbeat_gaps"]:
            lines.append(f"- heartbeat gap: nothing pushed from {gap['from']} to {gap['to']} ({gap['duration']})")
        if lines[-1] != "":
            lines.append("")
    if counted:
        lines += [f"## {len(counted)} more hosts: healthy", ""]
    if trusted:
        lines += trust_markdown(trusted[0], end, trusted[1])
    return "\n".join(lines).rstrip() + "\n"


def why(finding: dict) -> str:
    """': exit-code, exit status 127; systemd gave up restarting it' (or the bare exit status
    of a heartbeat that reported no reason)."""
    if not finding.get("result"):
        status = finding.get("last_exit_status")
        return f", last exit status {status}" if status is not None else ""
    text = f": {finding['result']}"
    if finding.get("exit_code") and finding.get("exit_status") is not None:
        text += ", " + EXIT_WORDS.get(finding["exit_code"], "status {}").format(finding["exit_status"])
    return text + ("; systemd gave up restarting it" if finding.get("gave_up") else "")


def as_json(hosts: dict, start: float, end: float, requests_made: int,
            trusted: tuple[list[dict], TrustRule] | None = None) -> str:
    report = {"window": {"since": iso(start), "until": iso(end)}, "queries": requests_made,
              "hosts": {name: hosts[name] for name in sorted(hosts)}}
    if trusted:
        timers, rule = trusted
        report["trust"] = {"window": {"since": iso(end - rule.window), "until": iso(end)}, "rule": rule.as_dict(),
                           "timers": timers}
    return json.dumps(report, indent=2) + "\n"


# ------------------------------------------------------------------ command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="systemd-daily-summary", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--url", default=os.environ.get("VICTORIA_METRICS_URL", DEFAULT_URL),
                        help="VictoriaMetrics base URL; on a cluster vmselect's "
                        "http://vmselect:8481/select/<accountID>/prometheus (env VICTORIA_METRICS_URL; "
                        "default %(default)s)")
    parser.add_argument("--since", default="24h", help="start: 'now', a duration ago (24h, 90m, 2d), "
                        "Unix seconds or ISO 8601 (default %(default)s)")
    parser.add_argument("--until", default="now", help="end, same forms (default %(default)s)")
    parser.add_argument("--host", action="append", default=[], metavar="NAME",
                        help="report only this host (repeatable; default: every host)")
    parser.add_argument("--unit", action="append", default=[], metavar="NAME",
                        help="report only this unit: a name or glob as in the allowlist, a bare name meaning "
                             ".service (repeatable; default: every unit)")
    parser.add_argument("--json", action="store_true", help="JSON for tools instead of Markdown")
    parser.add_argument("--stale-factor", type=float, default=2.0,
                        help="a timer is stale after this many of its own intervals without firing (default 2)")
    parser.add_argument("--gap", type=float, default=90.0,
                        help="seconds without a push that count as a heartbeat gap (default 90: 3 intervals)")
    parser.add_argument("--mass-restart-units", type=int, default=MASS_RESTART_UNITS,
                        help="a mass restart is at least this many load-bearing units restarted or failed within "
                             "--mass-restart-window on one host (default %(default)s: the alert's)")
    parser.add_argument("--mass-restart-window", type=float, default=MASS_RESTART_WINDOW,
                        help="seconds (default %(default)s: the alert's)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per query (default 30)")
    trust_flags = parser.add_argument_group(
        "can this timer be trusted?", "a report per load-bearing timer over its own window, ending at --until, "
        "with a verdict: ready for auto-pull, or what blocks it")
    trust_flags.add_argument("--trust-window", default="7d", help="the window (default %(default)s)")
    trust_flags.add_argument("--trust-max-failed", default="0", help="at most this many failed runs (default %(default)s)")
    trust_flags.add_argument("--trust-max-late", default="10", help="no run later than this many seconds "
                             "(default %(default)s, a bound of the lateness histogram: exact)")
    trust_flags.add_argument("--trust-min-seen", default="0.95", help="at least this fraction of the runs the "
                             "interval expects seen (default %(default)s)")
    trust_flags.add_argument("--trust-max-gap", default="2", help="never more than this many intervals without "
                             "a successful run (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        start, end = window(args.since, args.until, time.time())
        try:
            patterns = check_unit_patterns(args.unit, "--unit")
        except HeartbeatError as error:
            raise UsageError(str(error)) from None
        rule = TrustRule(args.trust_window, args.trust_max_failed, args.trust_max_late, args.trust_min_seen,
                         args.trust_max_gap)
        victoria = Victoria(args.url, args.timeout, args.host)
        hosts = collect(victoria, start, end, args.stale_factor, args.gap, args.mass_restart_units,
                        args.mass_restart_window)
        timers = trust(victoria, end, rule)
        if args.host:
            hosts = {name: hosts.get(name) or empty_host(name) for name in args.host}
            timers = [timer for timer in timers if timer["host"] in args.host]
        if patterns:
            hosts = only_units(hosts, patterns)
            timers = [timer for timer in timers if any(fnmatch.fnmatchcase(timer["unit"], p) for p in patterns)]
    except UsageError as error:
        print(f"systemd-daily-summary: {error}", file=sys.stderr)
        return EX_USAGE
    except QueryError as error:
        print(f"systemd-daily-summary: {error}", file=sys.stderr)
        return 2
    trusted = (timers, rule)
    sys.stdout.write(as_json(hosts, start, end, victoria.requests, trusted) if args.json
                     else markdown(hosts, start, end, trusted))
    return 1 if has_findings(hosts) else 0


def guarded(argv: list[str] | None = None) -> int:
    """main(), but a defect in it is one line and exit status EX_SOFTWARE, never a traceback
    and exit status 1, which says "findings" to whatever runs the summary."""
    try:
        return main(argv)
    except Exception as error:  # pylint: disable=broad-exception-caught
        frame = traceback.extract_tb(error.__traceback__)[-1]
        print(f"systemd-daily-summary: internal error (a bug, please report it): {type(error).__name__}: {error} "
              f"at {Path(frame.filename).name}:{frame.lineno}", file=sys.stderr)
        return EX_SOFTWARE


if __name__ == "__main__":
    sys.exit(guarded())

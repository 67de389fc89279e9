#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""systemd-daily-summary: what went wrong with systemd units in the last day, per host.

Pulls the heartbeat's history from VictoriaMetrics' query API and reports, per host: units
that failed (allowlisted or not) with when, for how long and their last exit status; units
systemd restarted, with counts; timers that went stale; allowlisted units missing on the host;
gaps where the heartbeat itself pushed nothing; and a one-line verdict. A host seen in the
week before the window that pushed nothing in it is reported as "no data", never as healthy.

    systemd-daily-summary [--url URL] [--since 24h] [--until now] [--json]

Exit status: 0 nothing to report, 1 findings, 2 VictoriaMetrics could not be queried,
64 a malformed or inverted window (EX_USAGE).

The number of queries is fixed (at most seven), whatever the number of hosts and units: every
query covers all of them and the grouping is done here.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import datetime, timezone

import requests

DEFAULT_URL = "http://localhost:30428"
EX_USAGE = 64
STEP = 30  # seconds; the heartbeat's interval, the resolution of failure and staleness episodes
HOST_MEMORY = "7d"  # a host that pushed in this long before the window is expected in it


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

    def __init__(self, url: str, timeout: float):
        self.url, self.timeout, self.requests = url.rstrip("/"), timeout, 0
        self.session = requests.Session()

    def _get(self, path: str, params: dict) -> requests.Response:
        self.requests += 1
        try:
            answer = self.session.post(f"{self.url}{path}", data=params, timeout=self.timeout)
        except requests.RequestException as error:
            reason = type(error).__name__ if not str(error) else str(error).split(":")[-1].strip(" )'\"")
            raise QueryError(f"cannot query VictoriaMetrics at {self.url}: {reason}") from None
        if answer.status_code != 200:
            first = (answer.text.strip().splitlines() or [""])[0][:200]
            raise QueryError(f"VictoriaMetrics at {self.url} answered HTTP {answer.status_code} to {path}: {first}")
        return answer

    def query(self, expr: str, at: float) -> list[dict]:
        return self._json(self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"}))

    def query_range(self, expr: str, start: float, end: float, step: int = STEP) -> list[dict]:
        return self._json(self._get("/api/v1/query_range", {
            "query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}s"}))

    def export(self, match: str, start: float, end: float) -> list[dict]:
        """Raw samples, exactly as pushed (for gaps, where interpolation would hide them)."""
        answer = self._get("/api/v1/export", {"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"})
        try:
            return [json.loads(line) for line in answer.text.splitlines() if line.strip()]
        except ValueError:
            raise QueryError(f"VictoriaMetrics at {self.url} sent an export that is not JSON lines") from None

    def _json(self, answer: requests.Response) -> list[dict]:
        try:
            body = answer.json()
            return body["data"]["result"]
        except (ValueError, KeyError, TypeError):
            raise QueryError(f"VictoriaMetrics at {self.url} sent an answer that is not a query result") from None


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


def collect(victoria: Victoria, start: float, end: float, stale_factor: float, gap_after: float) -> dict:
    """Seven queries for every host and unit; returns the findings per host."""
    length = f"{int(end - start)}s"
    hosts: dict[str, dict] = {}

    def host(name: str) -> dict:
        return hosts.setdefault(name, {"failed": [], "restarted": [], "stale_timers": [], "missing": [],
                                       "heartbeat_gaps": [], "pushed": False})

    # 1. which hosts are expected: those that pushed in the week before the window, or in it
    for row in victoria.query(f"count by (host) (count_over_time(systemd_heartbeat_up[{HOST_MEMORY}]))", start):
        host(row["metric"]["host"])
    # 2. the heartbeat's own pushes, raw, for gaps
    for series in victoria.export("systemd_heartbeat_up", start, end):
        record = host(series["metric"]["host"])
        stamps = [t / 1000 for t in series.get("timestamps", [])]
        record["pushed"] = record["pushed"] or bool(stamps)
        record["heartbeat_gaps"] = [{"from": iso(a), "to": iso(b), "duration": span(b - a), "seconds": round(b - a)}
                                    for a, b in gaps(stamps, start, end, gap_after)] if stamps else []
    # 3. failure episodes from the raw samples of failed units (the heartbeat ends a state's
    #    series with a staleness marker, so raw samples mark the episode exactly)
    failed: dict[tuple[str, str], list[float]] = {}
    for series in victoria.export('systemd_unit_info{active_state="failed"}', start, end):
        key = (series["metric"]["host"], series["metric"]["unit"])
        failed.setdefault(key, []).extend(t / 1000 for t in series.get("timestamps", []))
    # 4. the exit statuses of just those units (one query, skipped when nothing failed)
    status: dict[tuple[str, str], list[tuple[float, float]]] = {}
    if failed:
        # a regex in a MetricsQL string literal: re.escape's backslashes must themselves be escaped
        units = "|".join(sorted({re.escape(unit).replace("\\", "\\\\") for _, unit in failed}))
        for series in victoria.export(f'systemd_unit_last_exit_status{{unit=~"{units}"}}', start, end):
            key = (series["metric"]["host"], series["metric"]["unit"])
            status.setdefault(key, []).extend(zip((t / 1000 for t in series["timestamps"]), series["values"]))
    for (name, unit), stamps in sorted(failed.items()):
        for first, last in episodes(stamps, gap_after):
            seen = [v for t, v in status.get((name, unit), []) if first <= t <= last and v == v]
            host(name)["failed"].append({
                "unit": unit, "since": iso(first), "until": iso(last),
                "duration": span(last - first + STEP), "seconds": round(last - first + STEP),
                "ongoing": end - last <= gap_after,
                "last_exit_status": int(seen[-1]) if seen else None})
    # 5. restarts systemd made in the window (only between samples inside it: no phantom counts
    #    for a unit first seen with a non-zero counter)
    for row in victoria.query(f"increase_prometheus(systemd_unit_restart_count_total[{length}]) > 0", end):
        host(row["metric"]["host"])["restarted"].append(
            {"unit": row["metric"]["unit"], "restarts": int(round(float(row["value"][1])))})
    # 6. stale timers: longer than stale_factor x their own interval without firing
    for row in victoria.query_range(
            f'max by (host, unit) (systemd_unit_seconds_since_active{{unit=~".+[.]timer"}} '
            f'> on(host, unit) ({stale_factor} * systemd_timer_interval_seconds))', start, end):
        for first, last in episodes([float(t) for t, _ in row["values"]]):
            host(row["metric"]["host"])["stale_timers"].append({
                "unit": row["metric"]["unit"], "since": iso(first), "until": iso(last),
                "duration": span(last - first + STEP), "seconds": round(last - first + STEP),
                "ongoing": end - last <= STEP * 1.5})
    # 7. allowlisted units systemd did not know at some point in the window
    for row in victoria.query(f'max by (host, unit, load_state) (max_over_time('
                              f'systemd_unit_info{{allowlisted="true", load_state!="loaded"}}[{length}]))', end):
        host(row["metric"]["host"])["missing"].append(
            {"unit": row["metric"]["unit"], "load_state": row["metric"]["load_state"]})
    for record in hosts.values():
        record["restarted"].sort(key=lambda r: (-r["restarts"], r["unit"]))
        record["stale_timers"].sort(key=lambda r: (r["since"], r["unit"]))
        record["missing"].sort(key=lambda r: r["unit"])
        record["verdict"] = verdict(record)
    return hosts


def empty_host(name: str) -> dict:
    """A host asked for by name that VictoriaMetrics knows nothing about."""
    record = {"failed": [], "restarted": [], "stale_timers": [], "missing": [], "heartbeat_gaps": [], "pushed": False}
    record["verdict"] = verdict(record)
    return record


def verdict(record: dict) -> str:
    """One line: healthy, no data, or what needs attention."""
    if not record["pushed"]:
        return "no data: the heartbeat pushed nothing in the window"
    kinds = (("failed", "failure", "failures"), ("restarted", "unit restarted", "units restarted"),
             ("stale_timers", "stale timer", "stale timers"), ("missing", "missing unit", "missing units"),
             ("heartbeat_gaps", "heartbeat gap", "heartbeat gaps"))
    parts = [f"{len(record[key])} {one if len(record[key]) == 1 else many}"
             for key, one, many in kinds if record[key]]
    return "attention: " + ", ".join(parts) if parts else "healthy"


def has_findings(hosts: dict) -> bool:
    return any(record["verdict"] != "healthy" for record in hosts.values())


# ------------------------------------------------------------------ output

def markdown(hosts: dict, start: float, end: float) -> str:
    lines = [f"# systemd daily summary, {iso(start)} to {iso(end)}", ""]
    if not hosts:
        lines += ["No host has pushed a heartbeat in the window or the week before it.", ""]
    for name in sorted(hosts):
        record = hosts[name]
        lines += [f"## {name}: {record['verdict']}", ""]
        if not record["pushed"]:
            continue
        for failure in record["failed"]:
            status = failure["last_exit_status"]
            lines.append(f"- failed: `{failure['unit']}` at {failure['since']} for {failure['duration']}"
                         + (" (still failed)" if failure["ongoing"] else "")
                         + (f", last exit status {status}" if status is not None else ""))
        for restart in record["restarted"]:
            lines.append(f"- restarted: `{restart['unit']}` {restart['restarts']} time"
                         f"{'s' if restart['restarts'] != 1 else ''}")
        for stale in record["stale_timers"]:
            lines.append(f"- stale timer: `{stale['unit']}` from {stale['since']} for {stale['duration']}"
                         + (" (still stale)" if stale["ongoing"] else ""))
        for missing in record["missing"]:
            lines.append(f"- missing: `{missing['unit']}` is allowlisted but {missing['load_state']}")
        for gap in record["heartbeat_gaps"]:
            lines.append(f"- heartbeat gap: nothing pushed from {gap['from']} to {gap['to']} ({gap['duration']})")
        if lines[-1] != "":
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def as_json(hosts: dict, start: float, end: float, requests_made: int) -> str:
    return json.dumps({"window": {"since": iso(start), "until": iso(end)}, "queries": requests_made,
                       "hosts": {name: hosts[name] for name in sorted(hosts)}}, indent=2) + "\n"


# ------------------------------------------------------------------ command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="systemd-daily-summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("VICTORIA_METRICS_URL", DEFAULT_URL),
                        help="VictoriaMetrics base URL (env VICTORIA_METRICS_URL; default %(default)s)")
    parser.add_argument("--since", default="24h", help="start: 'now', a duration ago (24h, 90m, 2d), "
                        "Unix seconds or ISO 8601 (default %(default)s)")
    parser.add_argument("--until", default="now", help="end, same forms (default %(default)s)")
    parser.add_argument("--host", action="append", default=[], metavar="NAME",
                        help="report only this host (repeatable; default: every host)")
    parser.add_argument("--json", action="store_true", help="JSON for tools instead of Markdown")
    parser.add_argument("--stale-factor", type=float, default=2.0,
                        help="a timer is stale after this many of its own intervals without firing (default 2)")
    parser.add_argument("--gap", type=float, default=90.0,
                        help="seconds without a push that count as a heartbeat gap (default 90: 3 intervals)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per query (default 30)")
    args = parser.parse_args(argv)
    try:
        start, end = window(args.since, args.until, time.time())
        victoria = Victoria(args.url, args.timeout)
        hosts = collect(victoria, start, end, args.stale_factor, args.gap)
        if args.host:
            hosts = {name: hosts.get(name) or empty_host(name) for name in args.host}
    except UsageError as error:
        print(f"systemd-daily-summary: {error}", file=sys.stderr)
        return EX_USAGE
    except QueryError as error:
        print(f"systemd-daily-summary: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(as_json(hosts, start, end, victoria.requests) if args.json else markdown(hosts, start, end))
    return 1 if has_findings(hosts) else 0


if __name__ == "__main__":
    sys.exit(main())

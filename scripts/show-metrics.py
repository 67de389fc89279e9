#!/usr/bin/env python3
"""Print, per host, what VictoriaMetrics holds from the heartbeat: one line per unit.

    python3 scripts/show-metrics.py [HOST ...]     (default: every host)
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import urllib.request

URL = os.environ.get("VICTORIA_METRICS_URL", "http://127.0.0.1:30428")


def query(expr: str) -> list[dict]:
    data = urllib.parse.urlencode({"query": expr}).encode()
    with urllib.request.urlopen(f"{URL}/api/v1/query", data=data, timeout=10) as answer:
        return json.load(answer)["data"]["result"]


def main(hosts: list[str]) -> int:
    urllib.request.urlopen(f"{URL}/internal/force_flush", timeout=10).read()
    time.sleep(1)
    rows: dict[tuple[str, str], dict[str, str]] = {}
    # only series pushed in the last two minutes: what the heartbeat reports now
    for result in query('last_over_time({__name__=~"systemd_unit_info|systemd_unit_restart_count_total|'
                        'systemd_unit_seconds_since_active|systemd_unit_last_exit_status|'
                        'systemd_unit_last_failure_timestamp_seconds|systemd_unit_last_failure_info"}[2m]) '
                        'keep_metric_names'):
        metric, value = result["metric"], result["value"][1]
        if hosts and metric["host"] not in hosts:
            continue
        row = rows.setdefault((metric["host"], metric["unit"]), {})
        if metric["__name__"] == "systemd_unit_info":
            row["state"] = f'{metric["load_state"]}/{metric["active_state"]}/{metric["sub_state"]}'
        elif metric["__name__"] == "systemd_unit_last_failure_info":
            row["why"] = (metric["result"] + (f' {metric["exit_code"]} {metric["exit_status"]}' if metric["exit_code"]
                                              else "") + (", gave up" if metric["gave_up"] == "true" else ""))
        elif metric["__name__"] == "systemd_unit_last_failure_timestamp_seconds":
            row["failed"] = f"{time.time() - float(value):.0f} s ago"
        else:
            row[metric["__name__"].replace("systemd_unit_", "")] = value
    if not rows:
        print(f"VictoriaMetrics at {URL} holds no heartbeat data yet", file=sys.stderr)
        return 1
    print(f"{'host':<12} {'unit':<38} {'load/active/sub':<28} {'restarts':>8} {'exit':>5} {'s since active':>14}  "
          "last failure")
    for (host, unit), row in sorted(rows.items()):
        failure = f"{row['failed']}: {row.get('why', '?')}" if "failed" in row else "-"
        print(f"{host:<12} {unit:<38} {row.get('state', '?'):<28} {row.get('restart_count_total', '-'):>8} "
              f"{row.get('last_exit_status', '-'):>5} {row.get('seconds_since_active', '-'):>14}  {failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmark: the daily summary's run time for 1 host and for 50 hosts x 20 units of history.

    sudo .venv/bin/python bench/summary.py [--repeat 5]

Loads 24 hours of heartbeat history at the heartbeat's 30 s resolution into a fresh
VictoriaMetrics (the lab's binary, its own port and data directory): per unit the info,
restart-counter and seconds-since-active series; one host in ten has a failure episode, a
restart burst and a heartbeat gap, so every query has something to find. Then times
`systemd-daily-summary --json` (median and range) and reads back how many queries it issued,
which must be the same for both sizes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
import lab  # noqa: E402

PORT = lab.VM_PORT + 5
STEP, DAY = 30, 86400


def history(start: float, hosts: int, units: int):
    """JSON lines, one series per line, yielded so memory stays small: per host its pushes and
    boot time; per unit its state, start time and restarts; one host in ten with a failure (and
    its reason), a restart burst and a heartbeat gap."""
    stamps = [int((start + k * STEP) * 1000) for k in range(DAY // STEP)]
    for h in range(hosts):
        host = f"host{h:02d}"
        troubled = h % 10 == 0
        beat = [t for t in stamps if not (troubled and start + 3600 < t / 1000 < start + 3600 + 1200)]
        yield json.dumps({"metric": {"__name__": "systemd_heartbeat_up", "host": host},
                          "values": [1] * len(beat), "timestamps": beat})
        yield json.dumps({"metric": {"__name__": "systemd_boot_timestamp_seconds", "host": host},
                          "values": [start - 5 * DAY] * len(beat), "timestamps": beat})
        for u in range(units):
            unit = f"unit{u:02d}.service"
            failing = troubled and u == 0
            info = [t for t in beat if not (failing and start + 7200 <= t / 1000 < start + 9000)]
            yield json.dumps({"metric": {"__name__": "systemd_unit_info", "host": host, "unit": unit,
                                         "load_state": "loaded", "active_state": "active", "sub_state": "running",
                                         "unit_type": "service", "allowlisted": "true"},
                              "values": [1] * len(info), "timestamps": info})
            if failing:
                bad = [t for t in beat if start + 7200 <= t / 1000 < start + 9000]
                yield json.dumps({"metric": {"__name__": "systemd_unit_info", "host": host, "unit": unit,
                                             "load_state": "loaded", "active_state": "failed", "sub_state": "failed",
                                             "unit_type": "service", "allowlisted": "true"},
                                  "values": [1] * len(bad), "timestamps": bad})
                yield json.dumps({"metric": {"__name__": "systemd_unit_last_exit_status", "host": host, "unit": unit},
                                  "values": [1] * len(beat), "timestamps": beat})
                since = [t for t in beat if t / 1000 >= start + 7200]  # kept after the failure
                yield json.dumps({"metric": {"__name__": "systemd_unit_last_failure_timestamp_seconds", "host": host,
                                             "unit": unit},
                                  "values": [start + 7200] * len(since), "timestamps": since})
                yield json.dumps({"metric": {"__name__": "systemd_unit_last_failure_info", "host": host, "unit": unit,
                                             "result": "exit-code", "exit_code": "exited", "exit_status": "1",
                                             "gave_up": "false"},
                                  "values": [1] * len(since), "timestamps": since})
            restarts = [min(10, max(0, (t // 1000 - int(start) - 36000) // STEP)) if troubled and u == 1 else 0
                        for t in beat]
            # every unit started 5 days ago, except the restart burst's: a start at each of its restarts
            started = [start - 5 * DAY + u + (restart * STEP + 36000 + 5 * DAY if restart else 0)
                       for restart in restarts] if troubled and u == 1 else [start - 5 * DAY + u] * len(beat)
            yield json.dumps({"metric": {"__name__": "systemd_unit_active_enter_timestamp_seconds", "host": host,
                                         "unit": unit}, "values": started, "timestamps": beat})
            yield json.dumps({"metric": {"__name__": "systemd_unit_restart_count_total", "host": host, "unit": unit},
                              "values": restarts, "timestamps": beat})


def load(url: str, start: float, hosts: int, units: int) -> None:
    batch: list[str] = []

    def flush():
        request = urllib.request.Request(f"{url}/api/v1/import", data="\n".join(batch).encode(), method="POST")
        urllib.request.urlopen(request, timeout=600).read()
        batch.clear()

    for line in history(start, hosts, units):
        batch.append(line)
        if len(batch) >= 200:
            flush()
    if batch:
        flush()
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=60).read()
    time.sleep(2)


def run(url: str, start: float, end: float, repeat: int) -> tuple[list[float], int, int]:
    command = [str(Path(sys.executable).parent / "systemd-daily-summary"), "--url", url, "--json",
               "--since", str(start), "--until", str(end)]
    times, queries, hosts = [], 0, 0
    for _ in range(repeat):
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        times.append((time.perf_counter() - began) * 1000)
        report = json.loads(done.stdout)
        queries, hosts = report["queries"], len(report["hosts"])
    return times, queries, hosts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print("| history | series | report wall ms, median (min-max) | queries | hosts reported |")
    print("|---|---:|---|---:|---:|")
    for hosts, units in ((1, 20), (50, 20)):
        lab.stop_service("victoria-metrics-summary-bench")
        url = lab.start_victoriametrics("victoria-metrics-summary-bench", PORT)
        end = (time.time() // 3600 - 1) * 3600
        start = end - DAY
        began = time.perf_counter()
        load(url, start, hosts, units)
        loaded = time.perf_counter() - began
        times, queries, reported = run(url, start, end, args.repeat)
        # per host: up, boot; per unit: info, start, restarts; a troubled host's failing unit: its
        # failed info, exit status, last failure and its reason
        series = hosts * (2 + units * 3) + (hosts + 9) // 10 * 4
        print(f"| {hosts} host{'s' if hosts > 1 else ''} x {units} units x 24 h (loaded in {loaded:.0f} s) | "
              f"{series} | {statistics.median(times):.0f} ({min(times):.0f}-{max(times):.0f}) | {queries} | "
              f"{reported} |", flush=True)
    lab.stop_service("victoria-metrics-summary-bench")
    return 0


if __name__ == "__main__":
    sys.exit(main())

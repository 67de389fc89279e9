#!/usr/bin/env python3
"""Runs inside a lab host: times one heartbeat tick against its floor, the bare batched
`systemctl show` of the same units. Prints one JSON object. Standard library only.

argv: HEARTBEAT_MODULE ALLOWLIST URL REPEAT LAUNCHER. The tick runs the launcher, as the
systemd service does (python3 -IS, precompiled module)."""
from __future__ import annotations

import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time

HEARTBEAT, ALLOWLIST, URL, REPEAT, LAUNCHER = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]


def timed(argv: list[str], env=None) -> tuple[float, float]:
    """Wall and CPU (user + system, the child and its children) of one command, in ms."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def main() -> None:
    spec = importlib.util.spec_from_file_location("hb", HEARTBEAT)
    hb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hb)
    units = [line.strip() for line in open(ALLOWLIST) if line.strip()]
    floor_argv = ["systemctl", "show", "-p", ",".join(hb.SHOW_PROPERTIES), "--", *units]
    tick_argv = [LAUNCHER, "--allowlist", ALLOWLIST, "--url", URL, "--host", "bench"]
    env = {"LC_ALL": "C", "TZ": "UTC", "PATH": "/usr/bin:/bin"}
    timed(floor_argv, env)
    timed(tick_argv)  # warm the page cache and the bus
    floors, ticks = [], []
    for _ in range(REPEAT):
        floors.append(timed(floor_argv, env))
        ticks.append(timed(tick_argv))
    samples, snapshot, _ = hb.tick(units, "bench", None, 10, bus=hb.system_bus_path())
    body = hb.encode_request(samples, {"host": "bench"}, int(snapshot.wall * 1e9))
    print(json.dumps({
        "units": len(units), "reported": len(snapshot.units), "samples": len(samples),
        "bytes": len(hb.gzip(body)), "bytes_uncompressed": len(body),
        "floor_wall_ms": summary([w for w, _ in floors]), "floor_cpu_ms": summary([c for _, c in floors]),
        "tick_wall_ms": summary([w for w, _ in ticks]), "tick_cpu_ms": summary([c for _, c in ticks]),
    }))


if __name__ == "__main__":
    main()

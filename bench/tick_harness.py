"""Runs inside a lab host: times one heartbeat tick against its floor, the bare batched
`systemctl show` of the same units. Prints one JSON object. Standard library only.

argv: LIB_DIR ALLOWLIST URL REPEAT LAUNCHER. LIB_DIR holds the installed package
(LIB_DIR/systemd_heartbeat/). The tick runs the launcher, as the systemd service does
(python3 -IS, precompiled package). Helpers from peers_harness, copied beside this file.
"""
from __future__ import annotations

import json
import sys

from peers_harness import pushed_request, summary, tick_argv, timed

LIB, ALLOWLIST, URL, REPEAT, LAUNCHER = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]


def main() -> None:
    snapshot, samples, body, gzipped = pushed_request(LIB, ALLOWLIST, "bench")
    from systemd_heartbeat.read_systemctl import SHOW_PROPERTIES  # the package pushed_request imported

    units = [line.strip() for line in open(ALLOWLIST) if line.strip()]
    floor_argv = ["systemctl", "show", "-p", ",".join(SHOW_PROPERTIES), "--", *units]
    tick = tick_argv(LAUNCHER, ALLOWLIST, URL, "bench")
    env = {"LC_ALL": "C", "TZ": "UTC", "PATH": "/usr/bin:/bin"}
    timed(floor_argv, env)
    timed(tick, tick=True)  # warm the page cache and the bus
    floors, ticks = [], []
    for _ in range(REPEAT):
        floors.append(timed(floor_argv, env))
        ticks.append(timed(tick, tick=True))
    print(json.dumps({
        "units": len(units), "reported": len(snapshot.units), "samples": len(samples),
        "bytes": len(gzipped), "bytes_uncompressed": len(body),
        "floor_wall_ms": summary([w for w, _ in floors], 2), "floor_cpu_ms": summary([c for _, c in floors], 2),
        "tick_wall_ms": summary([w for w, _ in ticks], 2), "tick_cpu_ms": summary([c for _, c in ticks], 2),
    }))


if __name__ == "__main__":
    main()

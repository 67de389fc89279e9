"""Runs inside a lab host: ticks of two installed heartbeat versions, interleaved, the same units.

argv: ALLOWLIST URL REPEAT LAUNCHER STATE_DIR [LAUNCHER STATE_DIR]...
Each version ticks as the service runs it (its launcher, the service's LimitAS=, its own state
directory, emptied first); one warm-up tick each, then REPEAT rounds, the order reversed every other round (ABBA...) so
drift and after-effects hit both. Per tick: wall and CPU of the process and its children, and
the CPU systemd and dbus-daemon spent meanwhile (peers_harness, copied beside this file).
Prints one JSON object: per version the raw rows [wall, cpu, bus side] in ms and the number of
samples its `--dry-run` prints. Standard library only.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from peers_harness import as_the_service, bus_side_pids, tick_argv, timed, with_bus_side_cpu


def main() -> None:
    allowlist, url, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
    versions = list(zip(sys.argv[4::2], sys.argv[5::2]))
    ticks, out = [], []
    for index, (launcher, state_dir) in enumerate(versions):
        shutil.rmtree(state_dir, ignore_errors=True)
        # host labels of one length: the versions push payloads of the same size
        ticks.append(tick_argv(launcher, allowlist, url, f"bench-{index}", state_dir))
        dry = subprocess.run([launcher, "--allowlist", allowlist, "--host", "bench", "--dry-run"],
                             capture_output=True, text=True, check=True)
        warm = subprocess.run(ticks[-1], capture_output=True, text=True, check=True, preexec_fn=as_the_service)
        out.append({"samples": dry.stdout.count("\n"), "stderr": dry.stderr + warm.stderr, "rows": []})
    pids = bus_side_pids()
    for round_ in range(repeat):
        order = range(len(versions)) if round_ % 2 == 0 else reversed(range(len(versions)))
        for index in order:
            out[index]["rows"].append([round(x, 3) for x in with_bus_side_cpu(pids, lambda: timed(ticks[index], tick=True))])
    print(json.dumps(out))


if __name__ == "__main__":
    main()

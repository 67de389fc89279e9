"""Benchmark: what reading the journal adds to a tick (issue 20), on one lab host.

    sudo .venv/bin/python bench/journal_tick.py [--units 12] [--repeat 41]

On lab-host6 (booted for it; systemd 252): UNITS bench units (bench/tick.py's load_units:
oneshot services that stay active, one in ten failed) and one crash loop (Restart=always, a run
of 0.5 s exiting 3, restarted after 1 s: its NRestarts moves between any two ticks 2 s apart).
The working tree's heartbeat, as a clone runs it, ticks in three ways, interleaved, REPEAT
times each, 2 s apart, each with a state directory of its own:

    steady            the bench units only: nothing moves, the journal is not read
    moved, journal    and the crash loop: every tick reads its entries from the journal
    moved, inferred   the same with --journal no: the failures are inferred

Per tick: wall and CPU of the process and its children (journalctl included), and the CPU
systemd and dbus-daemon spent meanwhile (bench/peers_harness.py). Prints Markdown for
BENCHMARKS.md. The journal is the host's own (a lab host a few minutes old: thousands of
entries, not a server's millions; journalctl seeks to the unit's cursor either way).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
sys.path.insert(0, str(ROOT / "bench"))
import lab  # noqa: E402
from tick import HOST, load_units, prepare_host  # noqa: E402

LAUNCHER = "/opt/bench/systemd-heartbeat"  # tick.install_heartbeat's default
LOOP = "bench-loop.service"
LOOP_UNIT = ("[Service]\nExecStart=/bin/sh -c 'sleep 0.5; exit 3'\nRestart=always\nRestartSec=1\n"
             "[Unit]\nStartLimitIntervalSec=0\n")
HARNESS = r'''
import json, subprocess, sys, time
sys.path.insert(0, "/opt/bench")
from peers_harness import as_the_service, bus_side_pids, timed, with_bus_side_cpu
program, allowlist, url, repeat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
modes = {
    "steady": ["--allowlist", allowlist, "--state-dir", "/var/lib/bench-steady"],
    "moved, journal": ["--allowlist", allowlist, "--unit", "bench-loop.service", "--state-dir", "/var/lib/bench-journal"],
    "moved, inferred": ["--allowlist", allowlist, "--unit", "bench-loop.service", "--state-dir", "/var/lib/bench-inferred",
                        "--journal", "no"],
}
rows = {mode: [] for mode in modes}
for mode, flags in modes.items():
    state = flags[flags.index("--state-dir") + 1]
    subprocess.run(["rm", "-rf", state])
    subprocess.run(["mkdir", "-p", state])  # as StateDirectory= makes it
    subprocess.run([program, "--url", url, "--host", "bench"] + flags, capture_output=True)  # warm-up: the records
pids = bus_side_pids()
for round_ in range(repeat):
    for mode, flags in modes.items():
        time.sleep(2.0 / len(modes))  # the crash loop moves between two ticks of a mode
        argv = [program, "--url", url, "--host", "bench"] + flags
        rows[mode].append(with_bus_side_cpu(pids, lambda: timed(argv, tick=True)))
print(json.dumps(rows))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=41)
    args = parser.parse_args()
    url = prepare_host()
    names = load_units(HOST, args.units)
    lab.ssh(HOST, f"cat > /etc/systemd/system/{LOOP}", input=LOOP_UNIT)
    lab.ssh(HOST, f"systemctl daemon-reload && systemctl start {LOOP} && "
                  f"printf '%s\\n' {' '.join(names)} > /opt/bench/allowlist")
    lab.ssh(HOST, "cat > /opt/bench/journal_harness.py", input=HARNESS)
    try:  # prepare_host installed the working tree's heartbeat as the role does, with its launcher
        answer = lab.ssh(HOST, ["python3", "/opt/bench/journal_harness.py", LAUNCHER, "/opt/bench/allowlist", url,
                                str(args.repeat)], timeout=3600)
    finally:
        lab.ssh(HOST, f"systemctl stop {LOOP}; rm -f /etc/systemd/system/{LOOP}; systemctl daemon-reload", check=False)
    rows = json.loads(answer.stdout)
    version = lab.ssh(HOST, "systemctl --version").stdout.split()[1]
    print(f"Command: `sudo .venv/bin/python bench/journal_tick.py --units {args.units} --repeat {args.repeat}`; "
          f"{HOST} (systemd {version}), {args.repeat} ticks of each, interleaved, 2 s apart.\n")
    print("| tick | wall ms | CPU ms (process and children) | + systemd, dbus-daemon ms |")
    print("|---|---|---|---|")
    for mode, samples in rows.items():
        wall, cpu, bus = (statistics.median(s[i] for s in samples) for i in range(3))
        print(f"| {mode} | {wall:.1f} | {cpu:.1f} | {bus:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

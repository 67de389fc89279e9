"""Benchmark: one heartbeat tick, two versions of the code, interleaved in one run on one lab host.

    sudo .venv/bin/python bench/before_after.py [--before f40ecf3] [--after REV] [--sizes 12,200,1000] [--repeat 101]
                                                [--timers yes|no]

BEFORE and AFTER are git revisions; AFTER defaults to the working tree. Each version is installed
on lab-host6 (booted for this, nothing else on it) the way the role deploys it, side by side: its
code in a lib dir of its own (the *.py of the package plugins/module_utils/systemd_heartbeat/
where the version has it, else the single module files/systemd-heartbeat.py as
systemd_heartbeat.py), precompiled with `python3 -m compileall -q -f`, run through the launcher
(`#!/usr/bin/python3 -IS`) rendered from that version's own role template.
For each N the host gets the units bench/peers.py loads (bench-NNNN: oneshot services that stay
active, one in ten failed, one in ten a timer, or with --timers no services only, so a change to
what a timer costs stays out; earlier sizes unloaded), both versions allowlist
exactly them, and inside the host (bench/before_after_harness.py) each version ticks REPEAT
times, alternating, with its own state directory, as the service runs it. Measured per tick as
bench/peers.py measures the heartbeat: wall, CPU of the process and its children, and the CPU
systemd and dbus-daemon spent meanwhile.

Prints a Markdown table for BENCHMARKS.md: medians, the ratio after / before of the medians (for
wall time also the median of the ratios within each round, which cancels load that comes and
goes on the machine) with a 90 % interval (the rounds resampled, before and after of one round
kept together), the spread (min-max), and how busy the rest of the machine was meanwhile. Run it with --after equal to
--before to see the noise floor. Raw numbers go to bench/results/before-after-N.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
sys.path.insert(0, str(ROOT / "bench"))
import lab  # noqa: E402
from tick import (HOST, LAUNCHER_TEMPLATE, PACKAGE, ROLE_HANDLERS, ROLE_VARS, SINGLE, allowlist_units,  # noqa: E402
                  git, heartbeat_files, install_heartbeat, machine, prepare_host, reader, run_harness, unload_units)

VERSIONS = ("before", "after")


def version(rev: str | None) -> tuple[dict[str, str], str, str, str, str]:
    """A version as the role installs it: its files (tick.heartbeat_files), its launcher template,
    the role's vars and handlers, and what it is, in words. rev None: the working tree."""
    if rev is None:
        dirty = git("status", "--porcelain", "--", PACKAGE, SINGLE, LAUNCHER_TEMPLATE, ROLE_VARS,
                    ROLE_HANDLERS).strip()
        where = f"the working tree (HEAD {git('rev-parse', '--short', 'HEAD').strip()}{', with uncommitted changes' * bool(dirty)})"
    else:
        where = git("rev-parse", "--short", f"{rev}^{{commit}}").strip()
    read, files = reader(rev), heartbeat_files(rev)
    template = read(LAUNCHER_TEMPLATE)
    calls = "; ".join(line.split("  #")[0] for line in template.splitlines()  # what it runs
                      if line.strip() and not line.startswith(("#", "{{", "import sys", "sys.path")))
    shape = "single module" if "systemd_heartbeat.py" in files else f"package, {len(files)} modules"
    return files, template, read(ROLE_VARS), read(ROLE_HANDLERS), f"{where}: {shape}; launcher `{calls}`"


def ratio_of_medians(before: list[float], after: list[float], rounds) -> float:
    return statistics.median(after[i] for i in rounds) / statistics.median(before[i] for i in rounds)


def paired_ratio(before: list[float], after: list[float], rounds) -> float:
    """The median of after / before within each round: the two ticks of a round ran moments apart,
    so load that comes and goes on the machine cancels out."""
    return statistics.median(after[i] / before[i] for i in rounds)


def with_interval(ratio, before: list[float], after: list[float], draws: int = 2000) -> str:
    """ratio over all rounds, then in brackets its 5th and 95th percentile over the rounds drawn
    again with replacement (the two ticks of a round stay together)."""
    rng, rounds = random.Random(1), range(len(before))
    again = sorted(ratio(before, after, rng.choices(rounds, k=len(before))) for _ in range(draws))
    return f"x{ratio(before, after, rounds):.3f} [{again[int(draws * 0.05)]:.3f}-{again[int(draws * 0.95) - 1]:.3f}]"


def cpu_outside(host: str) -> float:
    """CPU seconds the machine has spent so far (all cores, /proc/stat) minus those of the lab
    host's processes (their own and their reaped children's): the rest of the machine's work."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    inside, ns = 0, os.readlink(f"/proc/{lab.leader_pid(host)}/ns/pid")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == ns:
                inside += sum(int(x) for x in open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[11:15])
        except OSError:
            pass  # gone meanwhile
    return (sum(fields) - fields[3] - fields[4] - inside) / os.sysconf("SC_CLK_TCK")


def metrics(rows: list[list[float]]) -> dict[str, list[float]]:
    return {"wall": [r[0] for r in rows], "cpu": [r[1] for r in rows], "bus": [r[2] for r in rows],
            "host_cpu": [r[1] + r[2] for r in rows]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--before", default="f40ecf3", help="git revision (default f40ecf3)")
    parser.add_argument("--after", default=None, help="git revision (default: the working tree)")
    parser.add_argument("--sizes", default="12,200,1000")
    parser.add_argument("--repeat", type=int, default=101)
    parser.add_argument("--timers", choices=("yes", "no"), default="yes",
                        help="one unit in ten a timer (yes, the default) or services only (no)")
    args = parser.parse_args()
    started = time.monotonic()
    versions = dict(zip(VERSIONS, (version(args.before), version(args.after))))
    url = prepare_host("before_after_harness.py", heartbeat=False)
    launchers = []
    for name, (files, template, role_vars, handlers, _) in versions.items():
        launchers += [install_heartbeat(HOST, files, f"/opt/bench/{name}", template, role_vars, handlers=handlers),
                      f"/opt/bench/{name}/state"]
    py = lab.inside(HOST, ["python3", "-V"]).stdout.split()[1]
    systemd = lab.inside(HOST, ["systemctl", "--version"]).stdout.split()[1]
    print(f"Command: `sudo .venv/bin/python bench/before_after.py {shlex.join(sys.argv[1:])}`\n")
    print(f"Before: {versions['before'][-1]}.  \nAfter: {versions['after'][-1]}.\n")
    print(f"Machine: {machine()}; {HOST}: systemd {systemd}, Python {py}; {args.repeat} ticks of each version, "
          "interleaved; median wall / CPU ms per tick (CPU: the process and its children), + the CPU "
          "systemd and dbus-daemon spent meanwhile; ratio after / before of the medians (wall, paired: "
          "the median of the ratios within each round), 90 % interval in brackets (rounds resampled). Units: "
          + ("one in ten a timer" if args.timers == "yes" else "services only, no timers") + ".\n")
    print("| N monitored (loaded; samples a tick, before / after) | before | after | after / before: wall | wall, paired | "
          "CPU | CPU with systemd, dbus-daemon |")
    print("|---:|---|---|---|---|---|---|")
    spreads, others = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        loaded = allowlist_units(size, timers=args.timers == "yes")
        other, start = cpu_outside(HOST), time.monotonic()
        answer = run_harness("before_after_harness.py", "/opt/bench/allowlist", url, str(args.repeat), *launchers,
                             at=f"N = {size}")
        others.append((size, (cpu_outside(HOST) - other) / (time.monotonic() - start)))
        result = dict(zip(VERSIONS, json.loads(answer.stdout)))
        (ROOT / "bench/results").mkdir(exist_ok=True)
        (ROOT / f"bench/results/before-after-{size}.json").write_text(json.dumps(result, indent=2))
        for name in VERSIONS:
            if result[name]["stderr"] or answer.stderr:
                print(f"warning: {name} at N = {size} wrote to stderr: {result[name]['stderr']}{answer.stderr}",
                      file=sys.stderr)
        m = {name: metrics(result[name]["rows"]) for name in VERSIONS}
        med = {name: {k: statistics.median(v) for k, v in m[name].items()} for name in VERSIONS}
        cells = [f"{med[n]['wall']:.1f} / {med[n]['cpu']:.1f} (+{med[n]['bus']:.1f})" for n in VERSIONS]
        ratios = [with_interval(ratio, m["before"][key], m["after"][key]) for key, ratio in
                  (("wall", ratio_of_medians), ("wall", paired_ratio), ("cpu", ratio_of_medians),
                   ("host_cpu", ratio_of_medians))]
        samples = " / ".join(dict.fromkeys(str(result[n]["samples"]) for n in VERSIONS))  # before / after
        print(f"| {size} ({loaded}; {samples} samples) | {' | '.join(cells)} | {' | '.join(ratios)} |", flush=True)
        spreads.append((size, m))
    unload_units(HOST)
    print(f"\nSpread over the {args.repeat} ticks, min-max, wall / CPU / systemd and dbus-daemon, ms:\n")
    print("| N | before | after |")
    print("|---:|---|---|")
    for size, m in spreads:
        print(f"| {size} | " + " | ".join(" / ".join(f"{min(m[n][k]):.1f}-{max(m[n][k]):.1f}" for k in ("wall", "cpu", "bus"))
                                          for n in VERSIONS) + " |")
    print("\nOther work on the machine while the ticks ran (CPU outside the lab host, VictoriaMetrics "
          f"taking the pushes included, in cores of {len(os.sched_getaffinity(0))}): " + ", ".join(f"N = {size}: {load:.2f}" for size, load in others) + ".")
    print(f"\n(The run took {time.monotonic() - started:.0f} s.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

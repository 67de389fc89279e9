"""Benchmark against the peers, side by side, in one run on one lab host.

    sudo .venv/bin/python bench/peers.py [--sizes 12,200,1000] [--repeat 7]

For each N, lab-host6 (booted for this, nothing else on it) gets N units to monitor, named
bench-NNNN: oneshot services that stay active, one in ten failed, one in ten a timer. Then,
inside the host, alternating, REPEAT times:
  - one heartbeat tick (the launcher the role installs; allowlist = the N names; with a state
    directory, as the service runs it), wall and CPU of the process and its children
    (RUSAGE_CHILDREN), and the gzipped bytes it pushes;
  - one scrape of prometheus-systemd-exporter 0.7 (Debian unstable) restricted with
    --systemd.collector.unit-include='bench-.+', restart counts on;
  - one scrape of prometheus-node-exporter (Debian unstable) with only its systemd collector,
    restricted the same way, restart metrics on.
For the exporters: wall time of the scrape, CPU the exporter process spent on it (the on-CPU
time of all its threads, /proc/PID/task/*/schedstat, in ns), gzipped bytes on the wire, and the
resident memory it holds between scrapes. For every tool, the CPU that systemd (PID 1) and
dbus-daemon spent while it collected: the cost its reads put on the host. Also timed, in the
same loop: the bare interpreter and the interpreter loading the heartbeat's modules a tick
loads (found with -X importtime), the start-up any Python oneshot pays.
Prints a Markdown table with the ratios against the best peer at each N.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
sys.path.insert(0, str(ROOT / "bench"))
import lab  # noqa: E402
from tick import HOST, allowlist_units, machine, prepare_host, run_harness, unload_units  # noqa: E402


def cell(result: dict, best: dict | None) -> str:
    wall, cpu = result["wall_ms"]["median"], result["cpu_ms"]["median"]
    text = (f"{wall} / {cpu} ms (+{result['bus_side_cpu_ms']['median']} ms in systemd and dbus-daemon), "
            f"{result['bytes']} B, {result['rss_mb']} MB held")
    if best:
        text += f" (x{wall / best['wall_ms']['median']:.2f} wall, x{cpu / max(best['cpu_ms']['median'], 0.1):.2f} CPU)"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="12,200,1000")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    url = prepare_host("peers_harness.py")
    for name in ("prometheus-systemd-exporter", "prometheus-node-exporter"):
        lab.run(["cp", lab.peer(name), str(lab.host_dir(HOST) / "root/opt/bench/bin" / name)])
    print(f"Machine: {machine()}; {HOST}: systemd 252, Python 3.11; median of {args.repeat} (spread below); "
          "wall / CPU per collection, gzipped bytes, memory held between collections.\n")
    print("| N monitored | heartbeat tick (ratio to the best peer) | systemd_exporter 0.7 scrape | "
          "node_exporter, systemd collector |")
    print("|---:|---|---|---|")
    startups, spreads = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        loaded = allowlist_units(size, timers=True)
        answer = run_harness("peers_harness.py", "/opt/bench/systemd-heartbeat", "/opt/bench/allowlist", url,
                             str(args.repeat), "/opt/bench/bin/prometheus-systemd-exporter",
                             "/opt/bench/bin/prometheus-node-exporter", "bench-.+", "/opt/bench/lib", at=f"N = {size}")
        r = json.loads(answer.stdout)
        startups.append((size, r["startup"]))
        spreads.append((size, r))
        best = min((r["systemd_exporter"], r["node_exporter"]), key=lambda x: x["wall_ms"]["median"])
        print(f"| {size} ({loaded} loaded) | {cell(r['heartbeat'], best)} | {cell(r['systemd_exporter'], None)} | "
              f"{cell(r['node_exporter'], None)} |", flush=True)
        (ROOT / "bench/results").mkdir(exist_ok=True)
        (ROOT / f"bench/results/peers-{size}.json").write_text(json.dumps(r, indent=2))
    unload_units(HOST)
    print(f"\nSpread over the {args.repeat} collections, min-max, wall / CPU ms:\n")
    print("| N | heartbeat tick | systemd_exporter scrape | node_exporter scrape |")
    print("|---:|---|---|---|")
    for size, r in spreads:
        print(f"| {size} | " + " | ".join(f"{r[n]['wall_ms']['min']}-{r[n]['wall_ms']['max']} / "
                                          f"{r[n]['cpu_ms']['min']}-{r[n]['cpu_ms']['max']}"
                                          for n in ("heartbeat", "systemd_exporter", "node_exporter")) + " |")
    print("\nExporter CPU per scrape read again 0.5 s after it (work left for later, such as garbage "
          "collection, included), median ms:")
    for size, r in spreads:
        print(f"- N = {size}: systemd_exporter {r['systemd_exporter']['cpu_settled_ms']['median']} "
              f"(at the response {r['systemd_exporter']['cpu_ms']['median']}); node_exporter "
              f"{r['node_exporter']['cpu_settled_ms']['median']} (at the response {r['node_exporter']['cpu_ms']['median']})")
    print("\nStart-up every Python oneshot pays, measured in the same run (wall / CPU, median):")
    for size, startup in startups:
        interpreter, loaded = startup["interpreter"], startup["module_loaded"]
        print(f"- N = {size}: `python3 -IS -c pass` {interpreter['wall_ms']['median']} / "
              f"{interpreter['cpu_ms']['median']} ms; the heartbeat's modules a tick loads, loaded, then exit "
              f"{loaded['wall_ms']['median']} / {loaded['cpu_ms']['median']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

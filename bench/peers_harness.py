"""Runs inside a lab host: one heartbeat tick vs one scrape of each peer exporter, same units.

argv: LAUNCHER ALLOWLIST URL REPEAT SYSTEMD_EXPORTER NODE_EXPORTER REGEX LIB_DIR
LIB_DIR is where the heartbeat's package is installed (LIB_DIR/systemd_heartbeat/), as the
launcher finds it. Prints one JSON object. Standard library only.

Also the in-host helpers the other harnesses import (bench/tick.py's prepare_host copies this
file beside them): timed, summary, tick_argv, pushed_request, the CPU of systemd and dbus-daemon.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request

PORTS = {"systemd_exporter": 19558, "node_exporter": 19100}
STATE_DIR = "/opt/bench/state"
# The service's LimitAS= in bytes (bench/tick.py's run_harness reads it from the role's unit
# file): a tick runs under it as under systemd, which spares the heartbeat setting a cap of its
# own when it loads its state (state.loads_bounded).
SERVICE_LIMIT_AS = int(os.environ.get("BENCH_SERVICE_LIMIT_AS") or 0)


def cpu_ms(pid: int) -> float:
    """CPU time of all the process's threads, in ns resolution (/proc/PID/stat counts 10 ms
    clock ticks, too coarse for a scrape of a few ms). The Go runtime keeps its threads."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
            total += int(handle.read().split()[0])  # time on the CPU, ns
    return total / 1e6


def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def exporter_argv(systemd_exporter: str, node_exporter: str, regex: str, ports: dict = PORTS) -> dict[str, list[str]]:
    """The peers as the benchmarks run them: restricted to the units REGEX matches, restart
    counts on, node_exporter with only its systemd collector; listening on 127.0.0.1:ports."""
    return {
        "systemd_exporter": [systemd_exporter, f"--web.listen-address=127.0.0.1:{ports['systemd_exporter']}",
                             f"--systemd.collector.unit-include={regex}", "--systemd.collector.enable-restart-count"],
        "node_exporter": [node_exporter, f"--web.listen-address=127.0.0.1:{ports['node_exporter']}",
                          "--collector.disable-defaults", "--collector.systemd",
                          f"--collector.systemd.unit-include={regex}", "--collector.systemd.enable-restarts-metrics"],
    }


def scrape(name: str, pid: int) -> tuple[float, float, int]:
    request = urllib.request.Request(f"http://127.0.0.1:{PORTS[name]}/metrics", headers={"Accept-Encoding": "gzip"})
    before = cpu_ms(pid)
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as answer:
        body = answer.read()
    wall = (time.perf_counter() - start) * 1000
    return wall, cpu_ms(pid) - before, len(body)


def as_the_service() -> None:
    """In the child before it runs a tick: the service's limits."""
    if SERVICE_LIMIT_AS:
        resource.setrlimit(resource.RLIMIT_AS, (SERVICE_LIMIT_AS, SERVICE_LIMIT_AS))


def timed(argv: list[str], env=None, tick: bool = False) -> tuple[float, float]:
    """Wall and CPU (user + system, the child and its children) of one command, in ms; a
    heartbeat tick (tick=True) under the service's limits."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, env=env,
                   preexec_fn=as_the_service if tick else None)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) * 1000


def bus_side_pids() -> list[int]:
    """systemd (PID 1) and dbus-daemon: the processes every tool's reads make work."""
    pids = [1]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if open(f"/proc/{entry}/comm").read().strip() == "dbus-daemon":
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def with_bus_side_cpu(pids: list[int], collect, *args) -> tuple:
    """collect(*args)'s result plus the CPU systemd and dbus-daemon spent meanwhile."""
    before = sum(cpu_ms(pid) for pid in pids)
    result = collect(*args)
    return result + (sum(cpu_ms(pid) for pid in pids) - before,)


def summary(values: list[float], digits: int = 1) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def tick_argv(launcher: str, allowlist: str, url: str, host: str, state_dir: str | None = None) -> list[str]:
    """One heartbeat tick as the service runs it: the launcher, with its state directory if one
    is given (the first tick fills it)."""
    argv = [launcher, "--allowlist", allowlist, "--url", url, "--host", host]
    if state_dir is None:
        return argv
    os.makedirs(state_dir, exist_ok=True)
    return argv + ["--state-dir", state_dir]


def pushed_request(lib_dir: str, allowlist: str, host: str) -> tuple[object, list, bytes, bytes]:
    """What one tick pushes, computed with the package installed in LIB_DIR (the code the tick
    runs; its flags read by the program's own parser): the snapshot, the samples, the request
    body, and that body gzipped as the push sends it. Without a state directory: no spool
    counts, no staleness markers."""
    if lib_dir not in sys.path:
        sys.path.insert(0, lib_dir)
    from systemd_heartbeat import cli, model, otlp

    args = cli.parse_args(["--allowlist", allowlist, "--host", host])
    samples, snapshot, _ = cli.tick(cli.read_patterns(args), host, None, model.Deadline(30))
    body = otlp.encode_request(samples, {"host": host}, int(snapshot.wall * 1e9))
    return snapshot, samples, body, otlp.gzip(body)


def modules_loaded(tick: list[str]) -> list[str]:
    """The heartbeat's modules one tick imports (python3 -X importtime on the launcher: a tick
    imports a stage only where it uses it)."""
    run = subprocess.run(["python3", "-IS", "-X", "importtime", *tick], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, check=True)
    names = (line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:"))
    return [name for name in names if name.startswith("systemd_heartbeat.")]


def main() -> None:
    launcher, allowlist, url, repeat, systemd_exporter, node_exporter, regex, lib_dir = sys.argv[1:9]
    repeat = int(repeat)
    peers = exporter_argv(systemd_exporter, node_exporter, regex)
    processes = {name: subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, argv in peers.items()}
    try:
        for name in peers:
            deadline = time.monotonic() + 30
            while True:
                try:
                    scrape(name, processes[name].pid)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        tick = tick_argv(launcher, allowlist, url, "bench-peers", STATE_DIR)
        timed(tick, tick=True)  # the first tick fills the state directory (timers' calendar periods)
        modules = modules_loaded(tick)  # and warms up
        results = {"heartbeat": [], **{name: [] for name in peers}}
        # what any Python oneshot pays before its first call: the interpreter alone, and the
        # interpreter loading the heartbeat's modules a tick loads and leaving the way a tick leaves
        floors = {"interpreter": [], "module_loaded": []}
        load_only = ["python3", "-IS", "-c", f"import sys; sys.path.insert(0, {lib_dir!r}); "
                     f"import {', '.join(modules)}; systemd_heartbeat.cli.exit_now(0)"]
        rss = {name: [] for name in peers}
        settled = {name: [] for name in peers}
        pids = bus_side_pids()
        for _ in range(repeat):
            floors["interpreter"].append(timed(["python3", "-IS", "-c", "pass"]))
            floors["module_loaded"].append(timed(load_only))
            results["heartbeat"].append(with_bus_side_cpu(pids, lambda: timed(tick, tick=True) + (0,)))
            for name, process in processes.items():
                before = cpu_ms(process.pid)
                results[name].append(with_bus_side_cpu(pids, scrape, name, process.pid))
                time.sleep(0.5)  # let the Go runtime settle, then read what it holds between scrapes
                # and the CPU again: work the scrape left for later (garbage collection) counts too
                settled[name].append(cpu_ms(process.pid) - before)
                rss[name].append(rss_mb(process.pid))
        out = {name: {"wall_ms": summary([r[0] for r in rows]), "cpu_ms": summary([r[1] for r in rows]),
                      "bytes": rows[-1][2], "bus_side_cpu_ms": summary([r[3] for r in rows])}
               for name, rows in results.items()}
        for name in peers:
            out[name]["rss_mb"] = round(statistics.median(rss[name]), 1)
            out[name]["cpu_settled_ms"] = summary(settled[name])
        out["heartbeat"]["rss_mb"] = 0.0  # a oneshot: nothing runs between ticks
        out["heartbeat"]["bytes"] = len(pushed_request(lib_dir, allowlist, "bench-peers")[3])
        out["heartbeat"]["modules"] = modules
        out["startup"] = {name: {"wall_ms": summary([r[0] for r in rows]), "cpu_ms": summary([r[1] for r in rows])}
                          for name, rows in floors.items()}
        print(json.dumps(out))
    finally:
        for process in processes.values():
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()

"""Benchmark: the read side at 10 / 100 / 1,000 hosts: daily summary (this tree and a git
revision, interleaved), every alert rule's expression, and every dashboard panel with host = All.

    sudo .venv/bin/python bench/fleet.py [--before b84385d] [--sizes 10,100,1000] [--repeat 3]

Per size, a fresh VictoriaMetrics (the lab's binary, 127.0.0.1:31410, its own data directory
under /tmp) gets the synthetic fleet of tests/summary/fleet.py: 24 h at the heartbeat's 30 s, one
host in twenty with failures, a crash loop, a restart burst, a mass restart, a reboot, a stale
timer, a missing unit and a heartbeat gap, one in a hundred silent all day, every host padded to
at least 15 units, and the stale threshold vmalert records for each timer. Measured, median of
REPEAT: the summary's wall time and peak memory (ru_maxrss of the process, pinned to one core)
and whether both versions report the same findings (of those both report); the sum of the instant queries of every rule
(rendered as tests/alerts does); the sum of every panel's query as Grafana sends it, from the
server's side (`executionTimeMsec`) and wall, and any refusal. Prints a Markdown table with the
ratio of each figure to the 10-host run.

First, vmalert itself (--only-vmalert: nothing else) on a fleet of the present with 5 % of units
firing: its evaluation time and the queries it sends per evaluation (vmalert_evaluations).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
sys.path.insert(0, str(ROOT / "tests/summary"))
sys.path.insert(0, str(ROOT / "tests"))
# the clone as the collection (scripts/bootstrap links it there), as tests/conftest.py does:
# helpers_dashboard imports the dashboard filter by its collection name
sys.path.insert(0, str(ROOT / ".venv/collections"))
import fleet  # noqa: E402
import history  # noqa: E402
import lab  # noqa: E402
from helpers_dashboard import panel_requests, systemd_dashboard  # noqa: E402

systemd_monitoring_dashboard = systemd_dashboard.systemd_monitoring_dashboard

PORT, PAD = 31410, 12  # VictoriaMetrics for the history; +1 and +2: VictoriaMetrics and vmalert now
UNITS_PER_HOST, EVALUATION = 15, "5s"
UNITS = ["backup", "web.service", "job.timer", "typo.service", "pad-*.service"]  # as tests/dashboard/test_fleet_queries.py


def thresholds(start: float, hosts: int) -> str:
    """The recording rule systemd_timer_stale_threshold_seconds, as vmalert writes it for each timer."""
    stamps = ",".join(str(int((start + k * history.STEP) * 1000)) for k in range(history.DAY // history.STEP))
    values = ",".join(["600"] * (history.DAY // history.STEP))
    return "\n".join(f'{{"metric":{{"__name__":"systemd_timer_stale_threshold_seconds","host":"{fleet.name(i)}",'
                     f'"unit":"job.timer"}},"values":[{values}],"timestamps":[{stamps}]}}'
                     for i in range(hosts) if fleet.kind(i) != "gamma")


def start_victoria(directory: Path, port: int = PORT) -> tuple[subprocess.Popen, str]:
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([lab.tool("victoria-metrics"), f"-storageDataPath={directory}",
                                f"-httpListenAddr=127.0.0.1:{port}", "-search.latencyOffset=0s"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            return process, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("VictoriaMetrics did not start")


def summary(script: Path, url: str, start: float, end: float) -> tuple[float, float, dict]:
    """Wall seconds, peak MB and the hosts of one run of a version of the summary, on one core."""
    began = time.perf_counter()
    with tempfile.NamedTemporaryFile("r") as peak:  # GNU time's %M: the process's own peak, in KB
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, "taskset", "-c", "0", sys.executable,
                               str(script), "--url", url, "--json", "--since", str(start), "--until", str(end),
                               "--timeout", "600"], capture_output=True, text=True)
        wall = time.perf_counter() - began
        return wall, int(peak.read().split()[-1]) / 1024, json.loads(done.stdout)["hosts"]


def common(hosts: dict, before: dict) -> dict:
    """`hosts` with only the findings the version before reports (a finding added since, such as
    failures_by_reason, is no difference in the ones both report)."""
    return {name: {key: value for key, value in found.items() if key in before.get(name, {})}
            for name, found in hosts.items()}


def query(url: str, path: str, params: dict) -> tuple[float, float, int]:
    """(wall s, server s, HTTP status) of one query."""
    request = urllib.request.Request(f"{url}{path}", data=urllib.parse.urlencode(params).encode())
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as answer:
            body = json.load(answer)
            return time.perf_counter() - began, float(body.get("stats", {}).get("executionTimeMsec", 0)) / 1000, 200
    except urllib.error.HTTPError as error:
        return time.perf_counter() - began, 0.0, error.code


def render_rules(path: Path) -> list[str]:
    """The rules as tests/alerts renders them, evaluated every EVALUATION (written to `path`);
    returns every rule's expression."""
    subprocess.run([str(ROOT / ".venv/bin/ansible-playbook"), str(ROOT / "tests/alerts/render.yml"),
                    "-e", f"rules_path={path}", "-e", f"vmalert={lab.tool('vmalert')}",
                    "-e", f"systemd_monitoring_alerts_evaluation_interval={EVALUATION}"],
                   cwd=ROOT, check=True, capture_output=True)
    rules = yaml.safe_load(path.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def firing_now(now: float, hosts: int) -> str:
    """JSON lines for `hosts` hosts of UNITS_PER_HOST units, from 10 minutes before `now` to 10
    after at the heartbeat's 30 s (an instant query at any moment of the run sees a fresh push).
    Every 20th unit of the fleet fires, in turn: a failed allowlisted service, a failed service
    off the allowlist, a crash loop (one restart a tick), a stale timer; each failure with its
    last failure's reason and time. The rest are healthy services."""
    ticks = [now + k * history.STEP for k in range(-20, 21)]
    stamps = ",".join(str(int(t * 1000)) for t in ticks)

    def line(name: str, labels: dict, values) -> str:
        values = [values] * len(ticks) if isinstance(values, (int, float)) else values
        return (f'{{"metric":{json.dumps({"__name__": name, **labels})},"values":[{",".join(map(str, values))}],'
                f'"timestamps":[{stamps}]}}')

    lines = []
    for i in range(hosts):
        host = f"host-{i:04d}"
        lines += [line("systemd_heartbeat_up", {"host": host}, 1),
                  line("systemd_boot_timestamp_seconds", {"host": host}, now - 5 * history.DAY)]
        for j in range(UNITS_PER_HOST):
            k = i * UNITS_PER_HOST + j
            kind = ("failed", "stray", "loop", "stale")[k // 20 % 4] if k % 20 == 0 else "ok"
            unit = f"{kind}-{j:02d}." + ("timer" if kind == "stale" else "service")
            labels = {"host": host, "unit": unit}
            failed = kind in ("failed", "stray")
            lines += [line("systemd_unit_info", {**labels, "load_state": "loaded",
                                                 "active_state": "failed" if failed else "active",
                                                 "sub_state": "failed" if failed else "running",
                                                 "unit_type": unit.rsplit(".", 1)[1],
                                                 "allowlisted": "false" if kind == "stray" else "true"}, 1),
                      line("systemd_unit_state_change_timestamp_seconds", labels, now - 3600),
                      line("systemd_unit_active_enter_timestamp_seconds", labels, now - 2 * history.DAY),
                      line("systemd_unit_restart_count_total", labels,
                           list(range(len(ticks))) if kind == "loop" else 0)]
            if kind in ("failed", "stray", "loop"):
                lines += [line("systemd_unit_last_failure_info", {**labels, "result": "exit-code", "exit_code": "exited",
                                                                  "exit_status": "1", "gave_up": "false"}, 1),
                          line("systemd_unit_last_failure_timestamp_seconds", labels, now - 3600)]
            if kind == "stale":
                lines += [line("systemd_unit_seconds_since_active", labels, 36000),
                          line("systemd_timer_interval_seconds", labels, 600)]
    return "\n".join(lines)


def metrics(url: str) -> dict[str, float]:
    """A Prometheus text page, summed by metric name (labels dropped)."""
    sums: dict[str, float] = {}
    for row in urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode().splitlines():
        if row and not row.startswith("#"):
            name, value = row.rsplit(" ", 1)
            key = name if name.startswith("vm_http_requests_total") else name.split("{")[0]
            sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def vmalert_evaluations(rules: Path, hosts: int, directory: Path, evaluations: int) -> dict:
    """Inside vmalert, over `evaluations` evaluations of the rule group after the first: its own
    evaluation time (vmalert_iteration_duration_seconds), the alerts firing, and the queries it
    sent, counted by VictoriaMetrics (vm_http_requests_total of /api/v1/query: vmalert 1.112
    counts connections to its datasource, not requests), rules and annotation templates alike."""
    process, url = start_victoria(directory, PORT + 1)
    vmalert = None
    try:
        now = time.time()
        urllib.request.urlopen(urllib.request.Request(f"{url}/api/v1/import", data=firing_now(now, hosts).encode(),
                                                      method="POST"), timeout=600).read()
        urllib.request.urlopen(f"{url}/internal/force_flush").read()
        time.sleep(2)
        own = f"http://127.0.0.1:{PORT + 2}"
        vmalert = subprocess.Popen([lab.tool("vmalert"), f"-rule={rules}", f"-datasource.url={url}",
                                    f"-remoteWrite.url={url}", "-notifier.blackhole",
                                    f"-httpListenAddr=127.0.0.1:{PORT + 2}",
                                    "-rule.evalDelay=0s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        queries = 'vm_http_requests_total{path="/api/v1/query"}'

        def after_evaluation(done: float) -> tuple[dict, dict]:
            """Both pages read as soon as vmalert has finished more than `done` evaluations (the
            next starts an interval later, so no query is in flight)."""
            while vmalert.poll() is None:
                try:
                    mine = metrics(own)
                    if mine.get("vmalert_iteration_total", 0) > done and "vmalert_iteration_duration_seconds_sum" in mine:
                        return mine, metrics(url)
                except OSError:
                    pass
                time.sleep(0.02)
            raise SystemExit("vmalert exited")

        first, first_vm = after_evaluation(0)  # after the first evaluation: the alerts exist
        mine, theirs = after_evaluation(first["vmalert_iteration_total"] + evaluations - 1)
        runs = mine["vmalert_iteration_total"] - first["vmalert_iteration_total"]
        return {"evaluations": runs, "firing": mine["vmalert_alerts_firing"],
                "eval_s": (mine["vmalert_iteration_duration_seconds_sum"]
                           - first["vmalert_iteration_duration_seconds_sum"]) / runs,
                "queries": (theirs[queries] - first_vm[queries]) / runs}
    finally:
        if vmalert:
            vmalert.terminate()
            vmalert.wait(30)
        process.terminate()
        process.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="b84385d")
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only-vmalert", action="store_true", help="measure vmalert alone (its own table)")
    parser.add_argument("--evaluations", type=int, default=6, help="vmalert evaluations measured per size")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wt22b-fleet-"))
    exprs = render_rules(work / "rules.yml")
    inside = {}
    for size in (int(s) for s in args.sizes.split(",")):
        inside[size] = vmalert_evaluations(work / "rules.yml", size, work / f"now-{size}", args.evaluations)
        print(json.dumps({"hosts": size, **inside[size]}), file=sys.stderr, flush=True)
    print("| hosts | units firing | vmalert evaluation, s | queries per evaluation |")
    print("|---:|---:|---:|---:|")
    for size, row in inside.items():
        print(f"| {size} | {row['firing']:.0f} | {row['eval_s']:.3f} | {row['queries']:.0f} |")
    if args.only_vmalert:
        shutil.rmtree(work, ignore_errors=True)
        return 0
    before = work / "before.py"
    before.write_text(subprocess.run(["git", "show", f"{args.before}:summary/systemd_daily_summary.py"], cwd=ROOT,
                                     check=True, capture_output=True, text=True).stdout)
    after = ROOT / "summary/systemd_daily_summary.py"
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        process, url = start_victoria(work / f"data-{size}")
        try:
            end = (time.time() // 3600 - 1) * 3600
            start = end - history.DAY
            began = time.perf_counter()
            fleet.load(url, start, size, PAD)
            urllib.request.urlopen(urllib.request.Request(f"{url}/api/v1/import", data=thresholds(start, size).encode(),
                                                          method="POST")).read()
            urllib.request.urlopen(f"{url}/internal/force_flush").read()
            time.sleep(2)
            loaded = time.perf_counter() - began
            runs = {"before": [], "after": []}
            for _ in range(args.repeat):
                for name, script in (("before", before), ("after", after)):
                    runs[name].append(summary(script, url, start, end))
            same = all(common(r[2], runs["before"][0][2]) == runs["before"][0][2] for r in runs["before"] + runs["after"])
            rule_times = [sum(query(url, "/api/v1/query", {"query": e, "time": f"{end:.0f}"})[0] for e in exprs)
                          for _ in range(args.repeat)]
            panels = panel_requests(systemd_monitoring_dashboard(UNITS), ".*", start, end)
            dash = []
            for _ in range(args.repeat):
                answers = [query(url, path, params) for _, path, params in panels]
                dash.append((sum(a[0] for a in answers), sum(a[1] for a in answers),
                             sum(a[2] != 200 for a in answers)))
            rows.append({"hosts": size, "loaded_s": loaded,
                         **{f"summary_{n}_s": statistics.median(r[0] for r in v) for n, v in runs.items()},
                         **{f"summary_{n}_mb": statistics.median(r[1] for r in v) for n, v in runs.items()},
                         "same_findings": same, "rules_s": statistics.median(rule_times), "rules": len(exprs),
                         "dashboard_wall_s": statistics.median(d[0] for d in dash),
                         "dashboard_server_s": statistics.median(d[1] for d in dash),
                         "dashboard_refused": max(d[2] for d in dash), "panel_queries": len(panels)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        finally:
            process.terminate()
            process.wait(30)
            shutil.rmtree(work / f"data-{size}", ignore_errors=True)
    base = rows[0]
    print("| hosts | summary before, s | summary after, s (x 10-host) | before, MB | after, MB (x 10-host) | "
          "same findings | all rules, s (x) | dashboard All, VictoriaMetrics s (x) | wall s | refused |")
    print("|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for row in rows:
        def ratio(key):
            return f"{row[key]:.2f} (x{row[key] / base[key]:.1f})"
        print(f"| {row['hosts']} | {row['summary_before_s']:.2f} | {ratio('summary_after_s')} | "
              f"{row['summary_before_mb']:.0f} | {row['summary_after_mb']:.0f} (x{row['summary_after_mb'] / base['summary_after_mb']:.1f}) | "
              f"{'yes' if row['same_findings'] else 'NO'} | {ratio('rules_s')} | {ratio('dashboard_server_s')} | "
              f"{row['dashboard_wall_s']:.2f} | {row['dashboard_refused']} of {row['panel_queries']} |")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

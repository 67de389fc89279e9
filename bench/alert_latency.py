#!/usr/bin/env python3
"""Benchmark and end-to-end check: from an event on a real host to the alert in Alertmanager.

    sudo .venv/bin/python bench/alert_latency.py      # on the demo lab (scripts/demo first)

Three events at once, on lab hosts running the deployed heartbeat, with vmalert evaluating the
deployed rules and the lab's real Alertmanager receiving:
  restart loop   a unit starts crash-looping; threshold moment = its 4th restart
  stale timer    a timer's job hangs, so the timer is no longer triggered (what "silently stops
                 firing" looks like); threshold = its last trigger + 2x its interval
  heartbeat gone the heartbeat timer of a host stops; threshold = its last push + 3 intervals
Each alert's latency is (firing in Alertmanager) - (threshold moment). Then every cause is fixed
and the time until Alertmanager shows the alert resolved is measured too.

molecule's verify imports run_scenario() from here (tests/molecule/test_alerts.py), so the
benchmark and the end-to-end test are one implementation.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
import lab  # noqa: E402

ALERTMANAGER = f"http://127.0.0.1:{lab.ALERTMANAGER_PORT}"
VICTORIA = f"http://127.0.0.1:{lab.VM_PORT}"

CRASHLOOP = "lab-e2e-crashloop.service"
JOB_TIMER = "lab-e2e-job.timer"
JOB = "lab-e2e-job.service"
HANG = "/run/lab-e2e-job-hangs"  # while this exists the job hangs, and its timer cannot fire again
E2E_UNITS = {
    CRASHLOOP: "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sh -c 'sleep 1; exit 3'\n"
               "Restart=on-failure\nRestartSec=1\n",
    JOB: f"[Service]\nType=oneshot\nExecStart=/bin/sh -c 'if test -e {HANG}; then exec sleep infinity; fi'\n",
    JOB_TIMER: "[Timer]\nOnActiveSec=1s\nOnUnitActiveSec=15s\nAccuracySec=1s\n",
}


def log(message: str) -> None:
    print(f"alert-latency: {message}", file=sys.stderr, flush=True)


def sh(host: str, command: str) -> str:
    return lab.ssh(host, command).stdout


def active_alerts() -> list[dict]:
    with urllib.request.urlopen(f"{ALERTMANAGER}/api/v2/alerts?active=true&silenced=false&inhibited=false",
                                timeout=5) as answer:
        return json.load(answer)


def query(expr: str) -> list[tuple[dict, float]]:
    data = urllib.parse.urlencode({"query": expr}).encode()
    with urllib.request.urlopen(f"{VICTORIA}/api/v1/query", data=data, timeout=10) as answer:
        return [(r["metric"], float(r["value"][1])) for r in json.load(answer)["data"]["result"]]


def systemd_show(host: str, unit: str, prop: str) -> str:
    return sh(host, f"systemctl show -p {prop} --value {unit}").strip()


def install_units(host: str) -> None:
    script = ["set -e"] + [f"cat > /etc/systemd/system/{name} <<'UNIT'\n{text}UNIT" for name, text in E2E_UNITS.items()]
    script += ["systemctl daemon-reload", f"systemctl start {JOB_TIMER}"]
    sh(host, "\n".join(script))


def remove_units(host: str) -> None:
    names = " ".join(E2E_UNITS)
    sh(host, f"systemctl stop {names}; rm -f {HANG} " + " ".join(f"/etc/systemd/system/{n}" for n in E2E_UNITS)
       + "; systemctl daemon-reload; systemctl reset-failed")


def wait_until(what: str, predicate, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def matches(alert: dict, name: str, host: str, unit: str) -> bool:
    labels = alert["labels"]
    return labels.get("alertname") == name and labels.get("host") == host and labels.get("unit") == unit


def run_scenario(unit_host: str, heartbeat_host: str, interval: float = 30.0) -> dict[str, dict]:
    """Cause, time and fix the three alerts. unit_host must allowlist CRASHLOOP and JOB_TIMER."""
    expected = {
        "restart loop": ("SystemdUnitRestartLoop", unit_host, CRASHLOOP),
        "stale timer": ("SystemdTimerStale", unit_host, JOB_TIMER),
        "heartbeat missing": ("SystemdHeartbeatMissing", heartbeat_host, "systemd-heartbeat.service"),
    }
    wait_until(f"{JOB_TIMER} interval in VictoriaMetrics", lambda: query(
        f'systemd_timer_interval_seconds{{host="{unit_host}",unit="{JOB_TIMER}"}}'), 120)
    # an earlier run's alerts must have resolved first (a restart loop stays for its window)
    wait_until("earlier alerts to resolve", lambda: not any(
        matches(a, *triple) for a in active_alerts() for triple in expected.values()), 600, step=2)

    # the events
    sh(unit_host, f"systemctl start {CRASHLOOP}")
    sh(unit_host, f"touch {HANG}")
    timer_interval = float(query(f'systemd_timer_interval_seconds{{host="{unit_host}",unit="{JOB_TIMER}"}}')[0][1])
    sh(heartbeat_host, "systemctl stop systemd-heartbeat.timer")
    wait_until(f"{JOB} to hang", lambda: systemd_show(unit_host, JOB, "ActiveState") == "activating", 60)
    last_trigger = float(sh(unit_host, f"date -d \"$(systemctl show -p LastTriggerUSec --value {JOB_TIMER})\" +%s"))
    # the last push is the last completed run of the now stopped heartbeat service
    last_push = float(sh(heartbeat_host, "date -d \"$(systemctl show -p ExecMainExitTimestamp --value "
                                         "systemd-heartbeat.service)\" +%s"))
    fourth_restart = wait_until("the 4th restart", lambda: int(systemd_show(unit_host, CRASHLOOP, "NRestarts") or 0) >= 4
                                and time.time(), 60, step=0.1)
    thresholds = {"restart loop": fourth_restart, "stale timer": last_trigger + 2 * timer_interval,
                  "heartbeat missing": last_push + 3 * interval}
    fired: dict[str, float] = {}

    def all_fired():
        alerts = active_alerts()
        now = time.time()
        for key, (name, host, unit) in expected.items():
            if key not in fired and any(matches(a, name, host, unit) for a in alerts):
                fired[key] = now
                log(f"{key} fired {now - thresholds[key]:.1f} s after its threshold")
        return len(fired) == len(expected)

    wait_until("all three alerts to fire", all_fired, 300)

    # the fixes
    sh(unit_host, f"systemctl stop {CRASHLOOP}")
    sh(unit_host, f"rm -f {HANG}; systemctl stop {JOB}")
    sh(heartbeat_host, "systemctl start systemd-heartbeat.timer")
    fixed_at = time.time()
    resolved: dict[str, float] = {}

    def all_resolved():
        alerts = active_alerts()
        now = time.time()
        for key, (name, host, unit) in expected.items():
            if key not in resolved and not any(matches(a, name, host, unit) for a in alerts):
                resolved[key] = now
                log(f"{key} resolved {now - fixed_at:.1f} s after the fix")
        return len(resolved) == len(expected)

    wait_until("all three alerts to resolve", all_resolved, 600, step=1)
    return {key: {"threshold": thresholds[key], "fired": fired[key], "latency": fired[key] - thresholds[key],
                  "resolved_after_fix": resolved[key] - fixed_at} for key in expected}


def converge(inventory: str, host: str, *extra: str) -> None:
    """The project's playbook against one host."""
    subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", inventory, "--limit", host,
                    str(ROOT / "playbooks/systemd-monitoring.yml"), *extra], cwd=ROOT, check=True,
                   capture_output=True, text=True, timeout=600)


def allowlist_e2e_units(inventory: str, host: str) -> None:
    import yaml

    units = yaml.safe_load((ROOT / "inventory/group_vars/systemd_monitoring_hosts.yml").read_text())[
        "systemd_monitoring_units"] + [CRASHLOOP, JOB_TIMER]
    converge(inventory, host, "-e", json.dumps({"systemd_monitoring_units": units}))


def restore_allowlist(inventory: str, host: str) -> None:
    converge(inventory, host)


def main() -> int:
    unit_host, heartbeat_host = "lab-host2", "lab-host1"
    install_units(unit_host)
    allowlist_e2e_units(str(ROOT / "inventory/lab.yml"), unit_host)
    try:
        results = run_scenario(unit_host, heartbeat_host)
    finally:
        remove_units(unit_host)
        restore_allowlist(str(ROOT / "inventory/lab.yml"), unit_host)
    print("| alert | threshold moment | event -> firing in Alertmanager, after the threshold | fix -> resolved |")
    print("|---|---|---:|---:|")
    moments = {"restart loop": "4th restart", "stale timer": "last trigger + 2 x its interval (15 s)",
               "heartbeat missing": "last push + 3 x 30 s"}
    for key, result in results.items():
        print(f"| {key} | {moments[key]} | {result['latency']:.1f} s | {result['resolved_after_fix']:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

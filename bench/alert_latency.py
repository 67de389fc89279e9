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

Then, one after the other (each changes what the next would count):
  auto-pull      the infrastructure-auto-pull timer and service of docs/examples, allowlisted
                 and nothing else: a pull that fails is retried and given up on (restart loop,
                 failed, with why), a stopped timer goes stale; each fixed, each resolves
  mass restart   three load-bearing units restarted at once; threshold = the third one's start
  reboot         the unit host rebooted; threshold = its boot (its service manager's start)

molecule's verify imports these from here (tests/molecule/test_alerts.py, test_auto_pull.py,
test_mass_restart.py), so the benchmark and the end-to-end tests are one implementation.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
import lab  # noqa: E402

# the Alertmanager the vmalert under test notifies: the lab's, or one of its own (molecule's verify)
ALERTMANAGER = os.environ.get("SYSTEMD_MONITORING_LAB_ALERTMANAGER") or f"http://127.0.0.1:{lab.ALERTMANAGER_PORT}"
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


def active_alerts(alertmanager: str = "") -> list[dict]:
    """What `alertmanager` (ALERTMANAGER if not given) holds active now."""
    with urllib.request.urlopen(f"{alertmanager or ALERTMANAGER}/api/v2/alerts?active=true&silenced=false&inhibited=false",
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


def matches(alert: dict, name: str, host: str, unit: str | None, **more: str) -> bool:
    """`unit` None: an alert without a unit label (a host's event)."""
    labels = alert["labels"]
    return (labels.get("alertname") == name and labels.get("host") == host and labels.get("unit") == unit
            and all(labels.get(key) == value for key, value in more.items()))


def firing(name: str, host: str, unit: str | None = None, alertmanager: str = "", **more: str) -> dict | None:
    """The alert as Alertmanager (`alertmanager`, ALERTMANAGER if not given) holds it now, or None."""
    found = [alert for alert in active_alerts(alertmanager) if matches(alert, name, host, unit, **more)]
    return found[0] if found else None


def unix_time(host: str, unit: str, prop: str) -> float:
    """A timestamp property of a unit on a host, as Unix seconds (to the microsecond; to the
    second for LastTriggerUSec, which systemctl prints only as a date)."""
    if prop == "LastTriggerUSec":
        text = sh(host, f"date -d \"$(systemctl show -p {prop} --value '{unit}')\" +%s.%N").strip()
        return float(text)
    text = sh(host, f"echo $(systemctl show -p {prop}Monotonic --value '{unit}') "
                    "$(cut -d' ' -f1 /proc/uptime) $(date +%s.%N)").split()
    monotonic, uptime, now = int(text[0]) / 1e6, float(text[1]), float(text[2])
    return now - uptime + monotonic


def run_scenario(unit_host: str, heartbeat_host: str, interval: float = 30.0) -> dict[str, dict]:
    """Cause, time and fix the three alerts. unit_host must allowlist CRASHLOOP and JOB_TIMER."""
    expected = {
        "restart loop": ("SystemdUnitRestartLoop", unit_host, CRASHLOOP),
        "stale timer": ("SystemdTimerStale", unit_host, JOB_TIMER),
        "heartbeat missing": ("SystemdHeartbeatMissing", heartbeat_host, "systemd-heartbeat.service"),
    }
    lab.wait_until(f"{JOB_TIMER} interval in VictoriaMetrics", lambda: query(
        f'systemd_timer_interval_seconds{{host="{unit_host}",unit="{JOB_TIMER}"}}'), 120)
    # an earlier run's alerts must have resolved first (a restart loop stays for its window)
    lab.wait_until("earlier alerts to resolve", lambda: not any(
        matches(a, *triple) for a in active_alerts() for triple in expected.values()), 600, step=2)

    # the events
    sh(unit_host, f"systemctl start {CRASHLOOP}")
    sh(unit_host, f"touch {HANG}")
    timer_interval = float(query(f'systemd_timer_interval_seconds{{host="{unit_host}",unit="{JOB_TIMER}"}}')[0][1])
    sh(heartbeat_host, "systemctl stop systemd-heartbeat.timer")
    lab.wait_until(f"{JOB} to hang", lambda: systemd_show(unit_host, JOB, "ActiveState") == "activating", 60)
    last_trigger = float(sh(unit_host, f"date -d \"$(systemctl show -p LastTriggerUSec --value {JOB_TIMER})\" +%s"))
    # the last push is the last completed run of the now stopped heartbeat service
    last_push = float(sh(heartbeat_host, "date -d \"$(systemctl show -p ExecMainExitTimestamp --value "
                                         "systemd-heartbeat.service)\" +%s"))
    fourth_restart = lab.wait_until(
        "the 4th restart", lambda: int(systemd_show(unit_host, CRASHLOOP, "NRestarts") or 0) >= 4 and time.time(),
        60, step=0.1)
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

    lab.wait_until("all three alerts to fire", all_fired, 300)

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

    lab.wait_until("all three alerts to resolve", all_resolved, 600, step=1)
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


# --- the auto-pull timer: allowlisted, and nothing else -------------------------------------

AUTO_PULL_TIMER, AUTO_PULL = "infrastructure-auto-pull.timer", "infrastructure-auto-pull.service"
EXAMPLES = ROOT / "docs/examples"
# The lab's timings: a poll every 20 s instead of 5 min, a retry after 3 s instead of 30 s
# (an empty On*Sec= drops every timer setting of the unit, then the lab's are added).
AUTO_PULL_DROP_INS = {
    AUTO_PULL_TIMER: "[Timer]\nOnActiveSec=\nOnActiveSec=5s\nOnUnitActiveSec=20s\nAccuracySec=1s\n",
    AUTO_PULL: "[Unit]\nStartLimitIntervalSec=60s\n[Service]\nRestartSec=3s\n",
}
# a caddy that records its reloads (%% is systemd's escape for %)
CADDY_STAND_IN = "[Service]\nExecStart=/bin/sleep infinity\nExecReload=/bin/sh -c 'date +%%s >> /run/caddy-reloads'\n"


def install_auto_pull(host: str, drop_ins: dict[str, str] | None = None, start: bool = True) -> None:
    """The units and script of docs/examples as they are, on a host with a real git repository
    to poll (a bare one on the host stands in for GitHub), and a caddy.service to reload; the
    lab's timings as drop-ins (`drop_ins`: unit -> its drop-in, AUTO_PULL_DROP_INS by default).
    `start`: enable and start the timer (else only enable it)."""
    import base64

    files = {f"/etc/systemd/system/{AUTO_PULL}": (EXAMPLES / AUTO_PULL).read_text(),
             f"/etc/systemd/system/{AUTO_PULL_TIMER}": (EXAMPLES / AUTO_PULL_TIMER).read_text(),
             "/usr/local/bin/infrastructure-auto-pull": (EXAMPLES / "infrastructure-auto-pull").read_text(),
             "/etc/systemd/system/caddy.service": CADDY_STAND_IN}
    files.update({f"/etc/systemd/system/{unit}.d/lab-timings.conf": text
                  for unit, text in (AUTO_PULL_DROP_INS if drop_ins is None else drop_ins).items()})
    script = ["set -e", "command -v git >/dev/null || { apt-get update -qq && "
              "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git >/dev/null; }",
              "rm -rf /srv/infrastructure /srv/infrastructure.git /srv/infrastructure.git.away /srv/upstream "
              "/run/caddy-reloads",
              "git init -q --bare -b main /srv/infrastructure.git",
              "git -c init.defaultBranch=main clone -q /srv/infrastructure.git /srv/upstream 2>/dev/null",
              "cd /srv/upstream && mkdir caddy && echo ':80' > caddy/Caddyfile && git add -A && "
              "git -c user.name=lab -c user.email=lab@lab commit -qm initial && git push -q origin HEAD:main",
              "git clone -q /srv/infrastructure.git /srv/infrastructure"]
    for path, text in files.items():
        encoded = base64.b64encode(text.encode()).decode()
        script.append(f"mkdir -p {path.rsplit('/', 1)[0]} && echo {encoded} | base64 -d > {path}")
    script += ["chmod 0755 /usr/local/bin/infrastructure-auto-pull", "systemctl daemon-reload",
               f"systemctl start caddy.service; systemctl enable {'--now ' if start else ''}{AUTO_PULL_TIMER}"]
    sh(host, "\n".join(script))


def remove_auto_pull(host: str) -> None:
    sh(host, f"systemctl disable --now {AUTO_PULL_TIMER}; systemctl stop {AUTO_PULL} caddy.service; "
             f"systemctl reset-failed {AUTO_PULL}; rm -rf /etc/systemd/system/{AUTO_PULL}* "
             f"/etc/systemd/system/{AUTO_PULL_TIMER}* /etc/systemd/system/caddy.service "
             "/usr/local/bin/infrastructure-auto-pull /srv/infrastructure /srv/infrastructure.git* /srv/upstream "
             "/run/caddy-reloads; systemctl daemon-reload")


def commit_upstream(host: str, path: str) -> None:
    sh(host, f"cd /srv/upstream && date +%s.%N >> {path} && git add -A && "
             f"git -c user.name=lab -c user.email=lab@lab commit -qm change && git push -q origin HEAD:main")


def reloads(host: str) -> int:
    return len(sh(host, "cat /run/caddy-reloads 2>/dev/null || true").split())


def pull_ran_since(host: str, moment: float) -> bool:
    """The auto-pull finished a run that started after `moment`, and succeeded."""
    started = unix_time(host, AUTO_PULL, "ExecMainStartTimestamp")
    state = systemd_show(host, AUTO_PULL, "ActiveState")
    return started > moment and state == "inactive" and systemd_show(host, AUTO_PULL, "Result") == "success"


def run_auto_pull_scenario(host: str) -> dict[str, dict]:
    """The auto-pull, allowlisted (and nothing else): it reloads caddy when caddy/ changes and
    only then; a pull that keeps failing fires the restart-loop alert, then the failed one
    (systemd gave up); fixed, both resolve; a stopped timer fires the stale alert, and resolves."""
    lab.wait_until(f"{AUTO_PULL_TIMER} interval in VictoriaMetrics", lambda: query(
        f'systemd_timer_interval_seconds{{host="{host}",unit="{AUTO_PULL_TIMER}"}}'), 120)
    # it works: a change under caddy/ reloads caddy at the next poll, any other change does not
    before, moment = reloads(host), time.time()
    commit_upstream(host, "caddy/Caddyfile")
    lab.wait_until("caddy to be reloaded", lambda: reloads(host) == before + 1, 60)
    moment = time.time()
    commit_upstream(host, "README")
    lab.wait_until("a poll after the unrelated change", lambda: pull_ran_since(host, moment), 60)
    assert reloads(host) == before + 1, "caddy reloaded for a change outside caddy/"

    results: dict[str, dict] = {}
    # the repository goes away: each poll fails, systemd retries 3 s later, then gives up
    sh(host, "mv /srv/infrastructure.git /srv/infrastructure.git.away")
    fourth = lab.wait_until("the 4th retry",
                            lambda: int(systemd_show(host, AUTO_PULL, "NRestarts") or 0) >= 4 and time.time(),
                            120, step=0.1)
    # watched together: the timer starts the given-up unit again 20 s later and it loops anew,
    # so waiting for one alert and then for the unit to be failed could see its second give-up
    # (a CI run did: the loop alert came after the timer's next start)
    seen: dict[str, object] = {}

    def gave_up_and_both_fired():
        if "gave up" not in seen and systemd_show(host, AUTO_PULL, "ActiveState") == "failed":
            seen["gave up"] = unix_time(host, AUTO_PULL, "StateChangeTimestamp")
        for name in ("SystemdUnitRestartLoop", "SystemdUnitFailed"):
            alert = name not in seen and firing(name, host, AUTO_PULL)
            if alert:
                seen[name] = (time.time(), alert)
        return len(seen) == 3

    lab.wait_until(f"{AUTO_PULL} to give up and both alerts to fire", gave_up_and_both_fired, 180, step=0.2)
    gave_up, (loop, _), (failed_at, failed) = seen["gave up"], seen["SystemdUnitRestartLoop"], seen["SystemdUnitFailed"]
    description = failed["annotations"]["description"]
    assert "Why: exit-code, main process exited with status 1; systemd gave up restarting it." in description, \
        description
    # fixed: the repository is back, the operator clears the failure and the timer polls again
    sh(host, f"mv /srv/infrastructure.git.away /srv/infrastructure.git; systemctl reset-failed {AUTO_PULL}; "
             f"systemctl restart {AUTO_PULL_TIMER}")
    fixed = time.time()
    lab.wait_until("a good poll", lambda: pull_ran_since(host, fixed), 60)
    failed_resolved = lab.wait_until("the failed alert to resolve", lambda: not firing(
        "SystemdUnitFailed", host, AUTO_PULL) and time.time(), 120)
    loop_resolved = lab.wait_until("the restart-loop alert to resolve", lambda: not firing(
        "SystemdUnitRestartLoop", host, AUTO_PULL) and time.time(), 600, step=2)
    results["auto-pull restart loop"] = {"latency": loop - fourth, "resolved_after_fix": loop_resolved - fixed}
    results["auto-pull failed"] = {"latency": failed_at - gave_up, "resolved_after_fix": failed_resolved - fixed,
                                   "gave_up_at": gave_up, "fired_at": failed_at}
    # the timer stops (disabled by hand, or its job hangs): stale after 2 x 20 s
    lab.wait_until("the timer to fire after the fix",
                   lambda: unix_time(host, AUTO_PULL_TIMER, "LastTriggerUSec") > fixed, 60)
    sh(host, f"systemctl stop {AUTO_PULL_TIMER}")
    threshold = unix_time(host, AUTO_PULL_TIMER, "LastTriggerUSec") + 2 * 20
    stale = lab.wait_until("the stale alert",
                           lambda: firing("SystemdTimerStale", host, AUTO_PULL_TIMER) and time.time(), 180)
    sh(host, f"systemctl start {AUTO_PULL_TIMER}")
    restarted = time.time()
    stale_resolved = lab.wait_until("the stale alert to resolve", lambda: not firing(
        "SystemdTimerStale", host, AUTO_PULL_TIMER) and time.time(), 120)
    results["auto-pull stale timer"] = {"latency": stale - threshold, "resolved_after_fix": stale_resolved - restarted}
    return results


def allowlist_auto_pull(inventory: str, host: str) -> list[str]:
    """The project's allowlist plus the auto-pull's timer and service: the one change it takes."""
    import yaml

    units = yaml.safe_load((ROOT / "inventory/group_vars/systemd_monitoring_hosts.yml").read_text())[
        "systemd_monitoring_units"] + [AUTO_PULL_TIMER, AUTO_PULL]
    converge(inventory, host, "-e", json.dumps({"systemd_monitoring_units": units}))
    return units


# --- mass restarts and reboots -------------------------------------------------------------

MASS_RESTART_UNITS = ("eco-server.service", "factorio-server.service", "icarus-server.service")  # lab stand-ins


def run_mass_restart_scenario(host: str, window: float) -> dict[str, dict]:
    """Three allowlisted services restarted at once: SystemdMassRestart (event=units) fires,
    its description names them, and it resolves once the window has passed."""
    lab.wait_until("earlier mass restarts to resolve",
                   lambda: not firing("SystemdMassRestart", host, None, event="units")
                   and not firing("SystemdMassRestart", host, None, event="reboot"), window + 120, step=2)
    sh(host, "systemctl restart " + " ".join(MASS_RESTART_UNITS))
    threshold = max(unix_time(host, unit, "ActiveEnterTimestamp") for unit in MASS_RESTART_UNITS)
    alert = lab.wait_until("the mass-restart alert", lambda: firing("SystemdMassRestart", host, None, event="units"), 120)
    fired = time.time()
    assert all(unit in alert["annotations"]["description"] for unit in MASS_RESTART_UNITS), alert["annotations"]
    resolved = lab.wait_until("the mass-restart alert to resolve", lambda: not firing(
        "SystemdMassRestart", host, None, event="units") and time.time(), window + 120, step=1)
    return {"mass restart": {"latency": fired - threshold, "resolved_after_threshold": resolved - threshold}}


def boot_time(host: str) -> float:
    return unix_time(host, "init.scope", "ActiveEnterTimestamp")


def run_reboot_scenario(host: str, window: float) -> dict[str, dict]:
    """The host reboots: SystemdMassRestart (event=reboot) fires, the units restarting with it
    never fire the units event, and it resolves once the window has passed since the boot."""
    lab.wait_until("earlier mass restarts to resolve",
                   lambda: not firing("SystemdMassRestart", host, None, event="units")
                   and not firing("SystemdMassRestart", host, None, event="reboot"), window + 120, step=2)
    lab.reboot(host)
    booted = boot_time(host)
    seen_units_event = []

    def reboot_alert():
        if firing("SystemdMassRestart", host, None, event="units"):
            seen_units_event.append(time.time())
        return firing("SystemdMassRestart", host, None, event="reboot")

    lab.wait_until("the reboot alert", reboot_alert, 180)
    fired = time.time()
    resolved = lab.wait_until("the reboot alert to resolve", lambda: not reboot_alert() and time.time(),
                              window + 120, step=1)
    assert seen_units_event == [], "the units restarting with the reboot fired a second mass-restart event"
    return {"reboot": {"latency": fired - booted, "resolved_after_threshold": resolved - booted}}


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--unit-host", default="lab-host2")
    parser.add_argument("--heartbeat-host", default="lab-host1")
    parser.add_argument("--inventory", default=str(ROOT / "inventory/lab.yml"))
    parser.add_argument("--mass-restart-window", type=float, default=300,
                        help="the inventory's systemd_monitoring_alerts_mass_restart_window_seconds")
    args = parser.parse_args()
    unit_host, heartbeat_host, inventory = args.unit_host, args.heartbeat_host, args.inventory
    install_units(unit_host)
    allowlist_e2e_units(inventory, unit_host)
    try:
        results = run_scenario(unit_host, heartbeat_host)
    finally:
        remove_units(unit_host)
        restore_allowlist(inventory, unit_host)
    install_auto_pull(unit_host)
    allowlist_auto_pull(inventory, unit_host)
    try:
        results.update(run_auto_pull_scenario(unit_host))
    finally:
        remove_auto_pull(unit_host)
        restore_allowlist(inventory, unit_host)
    results.update(run_mass_restart_scenario(unit_host, args.mass_restart_window))
    results.update(run_reboot_scenario(unit_host, args.mass_restart_window))
    print("| alert | threshold moment | event -> firing in Alertmanager, after the threshold | resolved |")
    print("|---|---|---:|---:|")
    moments = {"restart loop": "4th restart", "stale timer": "last trigger + 2 x its interval (15 s)",
               "heartbeat missing": "last push + 3 x 30 s",
               "auto-pull restart loop": "4th retry of the failing pull",
               "auto-pull failed": "systemd gave up (start limit)",
               "auto-pull stale timer": "last trigger + 2 x its interval (20 s)",
               "mass restart": "the third unit's start", "reboot": "the boot (service manager's start)"}
    for key, result in results.items():
        after = (f"{result['resolved_after_fix']:.1f} s after the fix" if "resolved_after_fix" in result
                 else f"{result['resolved_after_threshold']:.1f} s after the threshold")
        print(f"| {key} | {moments[key]} | {result['latency']:.1f} s | {after} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

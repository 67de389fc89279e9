"""Mass restarts, end to end with real vmalert (lab-host3, the role's) and the lab's
Alertmanager: three load-bearing units restarted at once on lab-host13 fire SystemdMassRestart
(event=units), naming them, and it resolves after the window; then lab-host13 reboots (its root
filesystem and the deployed heartbeat stay): SystemdMassRestart (event=reboot) fires, the units
restarting with the boot do not fire the units event, and it resolves. The dashboard's
annotation query finds both. lab-host13 is this file's alone: the reboot restarts everything on it.
bench/alert_latency.py runs the same scenarios for BENCHMARKS.md."""
from __future__ import annotations

import sys

from scenario import MASS_RESTART_HOST
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import alert_latency  # noqa: E402
from helpers_dashboard import systemd_dashboard  # noqa: E402

HOST = MASS_RESTART_HOST
WINDOW = 120  # molecule/default/host_vars/lab-host3.yml: systemd_monitoring_alerts_mass_restart_window_seconds


def annotation_events(victoria, event: str) -> list[dict]:
    (annotation,) = systemd_dashboard.systemd_monitoring_dashboard([])["annotations"]["list"]
    expr = annotation["expr"].replace("$host", HOST)
    victoria.flush()
    return [labels for labels, _ in victoria.query(f"max_over_time({expr}[15m])") if labels.get("event") == event]


def test_three_units_restarted_together_are_a_mass_restart(victoria):
    result = alert_latency.run_mass_restart_scenario(HOST, WINDOW)["mass restart"]
    # one heartbeat interval (30 s) until a push shows it, one evaluation (15 s), Alertmanager
    assert result["latency"] <= 65, result
    assert result["resolved_after_threshold"] <= WINDOW + 65, result
    assert annotation_events(victoria, "units")


def test_a_reboot_is_its_own_event(victoria):
    result = alert_latency.run_reboot_scenario(HOST, WINDOW)["reboot"]
    # the heartbeat's first push comes OnBootSec (30 s) after the boot; then one evaluation
    assert result["latency"] <= 30 + 65, result
    assert result["resolved_after_threshold"] <= WINDOW + 65, result
    assert annotation_events(victoria, "reboot")

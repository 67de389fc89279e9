"""End to end with real vmalert (on lab-host3, installed by the role) and the lab's real
Alertmanager: a crash loop, a timer whose job hangs and a stopped heartbeat each fire their
alert in Alertmanager within 60 s (+ one push) of the rule's own threshold, and each fix resolves it.
The scenario is bench/alert_latency.py's, so the benchmark and this check are the same code."""
from __future__ import annotations

import sys

from scenario import lab_host, write_inventory
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import alert_latency  # noqa: E402

UNIT_HOST, HEARTBEAT_HOST = "lab-host4", "lab-host3"


def test_alerts_fire_in_alertmanager_and_resolve(tmp_path):
    inventory = write_inventory(tmp_path, {UNIT_HOST: lab_host(UNIT_HOST)})
    alert_latency.install_units(UNIT_HOST)
    alert_latency.allowlist_e2e_units(str(inventory), UNIT_HOST)
    try:
        results = alert_latency.run_scenario(UNIT_HOST, HEARTBEAT_HOST)
    finally:
        alert_latency.remove_units(UNIT_HOST)
        alert_latency.restore_allowlist(str(inventory), UNIT_HOST)
    for key, result in results.items():
        # worst case: one heartbeat interval (30 s) until the next push shows it, one
        # evaluation interval (30 s) until vmalert sees it, plus Alertmanager's group_wait (0 s)
        assert result["latency"] <= 65, (key, result)

"""Every panel query of the generated dashboard, run against the real VictoriaMetrics fed by the
scenario hosts' heartbeats: for every host, every allowlisted unit's row returns data (no panel
would show "No data" for a unit that exists; "Last failure" and "Failures by reason" only for a
unit that failed), and a unit added to the inventory by its bare name (as the variables table
allows) gets a row whose queries return data after one converge."""
from __future__ import annotations

import json
import sys


from scenario import SCENARIO_HOSTS, ansible_playbook, lab_host, write_inventory
from helpers import ROOT, inventory_allowlist

sys.path.insert(0, str(ROOT / "tests"))
from helpers_dashboard import ONLY_AFTER_A_FAILURE, panel_queries, systemd_dashboard  # noqa: E402

UNITS = inventory_allowlist()


def empty_unit_panels(victoria, dashboard: dict, host: str) -> list[tuple[str, str]]:
    victoria.flush()
    return [(row, title) for row, title, expr in panel_queries(dashboard, host)
            # the load-bearing timers' row is checked against timers of a known history (tests/dashboard/test_trust_row.py)
            if row not in ("Overview", systemd_dashboard.TRUST_ROW) and title not in ONLY_AFTER_A_FAILURE
            and not victoria.query(expr)]


def test_every_unit_row_returns_data_for_every_host(victoria):
    dashboard = systemd_dashboard.systemd_monitoring_dashboard(UNITS)
    for host in SCENARIO_HOSTS:
        assert empty_unit_panels(victoria, dashboard, host) == []
    overview = {title: victoria.query(expr) for row, title, expr in panel_queries(dashboard, SCENARIO_HOSTS[0])
                if row == "Overview"}
    assert overview["Heartbeat: since last push"] and overview["Heartbeat: units reported"]


def test_a_unit_added_to_the_inventory_gets_a_row_with_data_after_one_converge(tmp_path, victoria):
    from test_deployed import tick_now

    added = UNITS + ["systemd-journald"]  # a bare name: the row must ask for what the heartbeat reports
    inventory = write_inventory(tmp_path, {"lab-host3": lab_host("lab-host3")})
    run = ansible_playbook(inventory, "-e", json.dumps({"systemd_monitoring_units": added}))
    try:
        assert run.returncode == 0, run.output[-3000:]
        victoria.wait_for_push("lab-host3", tick_now("lab-host3"))
        # the dashboard the same inventory generates (the role's filter, as the converge runs it)
        dashboard = systemd_dashboard.systemd_monitoring_dashboard(added)
        assert [p["title"] for p in dashboard["panels"] if p["type"] == "row"][-1] == "systemd-journald.service"
        assert empty_unit_panels(victoria, dashboard, "lab-host3") == []
    finally:
        ansible_playbook(inventory)
        tick_now("lab-host3")  # the restored allowlist ends the added unit's series

"""The follow-up this monitoring unblocks: the infrastructure-auto-pull timer and service of
docs/examples, installed as they are on lab-host12 (with a real git repository to poll and a
caddy.service to reload; the lab polls every 20 s instead of 5 min) and added to the allowlist,
nothing else. It reloads caddy when caddy/ changes; its rows appear on the dashboard with data;
a pull that keeps failing fires the restart-loop alert and then the failed one (systemd gave up),
a stopped timer the stale one; each resolves once fixed. bench/alert_latency.py runs the same
scenario for BENCHMARKS.md."""
from __future__ import annotations

import sys
import time

from scenario import AUTO_PULL_HOST, lab_host, write_inventory
from helpers import ROOT

sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
import alert_latency  # noqa: E402
from helpers_dashboard import ONLY_AFTER_A_FAILURE, panel_queries, systemd_dashboard  # noqa: E402

HOST = AUTO_PULL_HOST


def test_adding_the_auto_pull_timer_to_the_allowlist_is_all_it_takes(tmp_path, victoria):
    from test_deployed import tick_now

    inventory = write_inventory(tmp_path, {HOST: lab_host(HOST)})
    alert_latency.install_auto_pull(HOST)
    units = alert_latency.allowlist_auto_pull(str(inventory), HOST)
    try:
        # the installed heartbeat reports them (and so ends their series once they go)
        victoria.wait_for_push(HOST, tick_now(HOST))
        # its rows appear, and their panels have data (its last failure and failures by reason
        # only once it failed; its restarts once two pushes are in the range, its stale threshold
        # once vmalert wrote it)
        dashboard = systemd_dashboard.systemd_monitoring_dashboard(units)
        rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
        assert rows[-2:] == [alert_latency.AUTO_PULL_TIMER, alert_latency.AUTO_PULL]
        deadline = time.monotonic() + 120
        while True:
            victoria.flush()
            empty = [(row, title) for row, title, expr in panel_queries(dashboard, HOST)
                     if row in rows[-2:] and title not in ONLY_AFTER_A_FAILURE and not victoria.query(expr)]
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert empty == []
        results = alert_latency.run_auto_pull_scenario(HOST)
        # the row's last failure said why and that systemd gave up, from its first give-up until
        # the failed alert fired, read at every second of that (later the timer starts the unit
        # again 20 s after and its next failure, restart pending, is rightly the last one)
        failed = results["auto-pull failed"]
        failure = [expr for row, title, expr in panel_queries(dashboard, HOST)
                   if row == alert_latency.AUTO_PULL and title == "Last failure"]
        start, end = failed["gave_up_at"], failed["fired_at"]
        moments = [start + second for second in range(int(end - start) + 1)] + [end]
        shown = {(labels["result"], labels["exit_status"], labels["gave_up"])
                 for at in moments for labels, _ in victoria.query(failure[0], at=at)}
        assert ("exit-code", "1", "true") in shown, shown
    finally:
        alert_latency.remove_auto_pull(HOST)
        alert_latency.restore_allowlist(str(inventory), HOST)
        tick_now(HOST)  # their series end now
    for key, result in results.items():
        # one heartbeat interval (30 s) until a push shows it, one evaluation (15 s), Alertmanager
        assert result["latency"] <= 65, (key, result)

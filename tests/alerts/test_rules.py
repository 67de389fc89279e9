"""The alert rules, rendered from the role's template and exercised by vmalert-tool unittest.

vmalert-tool (VictoriaMetrics 1.112, Debian 13's package) sets up its own VictoriaMetrics,
ingests the input series and evaluates the rules like vmalert does. It listens on 0.0.0.0:8880,
which no flag changes, so it runs in a network namespace of its own with only a loopback
interface: nothing it binds is reachable from outside, and it never meets another 8880.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import lab
from helpers import ANSIBLE_PLAYBOOK, ROOT
from helpers_dashboard import panel_queries, systemd_dashboard

HERE = Path(__file__).resolve().parent
TEST_FILES = sorted(p.name for p in HERE.glob("*.test.yml"))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rules")
    done = subprocess.run(
        [ANSIBLE_PLAYBOOK, str(HERE / "render.yml"),
         "-e", f"rules_path={directory / 'rules.yml'}", "-e", f"vmalert={lab.tool('vmalert')}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    return directory


def vmalert_tool(directory: Path, test_file: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                           lab.tool("vmalert-tool"), "unittest", f"--files={directory / test_file}"],
                          cwd=directory, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("test_file", TEST_FILES)
def test_vmalert_tool_unittest(rendered, test_file):
    shutil.copy(HERE / test_file, rendered / test_file)
    done = vmalert_tool(rendered, test_file)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]


def test_the_stale_timer_panel_shows_exactly_the_timers_the_alert_fires_for(rendered):
    """The dashboard's "Stale timers" query, run by vmalert-tool beside the rules rendered with
    overrides (render.yml: an exact name and a glob), returns the timers SystemdTimerStale fires
    for, with the same threshold: the factor for one, each override for the others."""
    (expr,) = [expr for row, title, expr in panel_queries(systemd_dashboard.systemd_monitoring_dashboard([]), ".*")
               if title == "Stale timers"]
    timers = {  # unit: (interval, seconds since it fired at 3h); the threshold in force
        "fast.timer": (30, 10800),  # 2 x 30 s: stale
        "hourly-report.timer": (600, 10800),  # the override, 7200 s: stale
        "nightly-backup.timer": (3600, 10800),  # the glob's override, 93600 s: not stale (2 x 3600 would be)
        "ok.timer": (600, 60),
    }
    series = []
    for unit, (interval, since) in timers.items():
        series += [{"series": f'systemd_unit_seconds_since_active{{unit="{unit}",host="h1"}}',
                    "values": f"{since}x12"},
                   {"series": f'systemd_timer_interval_seconds{{unit="{unit}",host="h1"}}', "values": f"{interval}x12"}]
    stale = ["fast.timer", "hourly-report.timer"]
    test = {"rule_files": ["rules.yml"], "evaluation_interval": "30s", "tests": [{
        "name": "the dashboard's stale timers are the alert's", "interval": "30s", "input_series": series,
        "alert_rule_test": [{"eval_time": "5m", "alertname": "SystemdTimerStale", "groupname": "systemd-monitoring",
                             "exp_alerts": [{"exp_labels": {"severity": "critical", "unit": unit, "host": "h1"},
                                             "exp_annotations": {
                                                 "summary": f"{unit} on h1 has not fired for 3h 0m 0s",
                                                 "description": f"{unit} on h1 last fired 3h 0m 0s ago, more than its "
                                                                "stale threshold. Check that the timer is active and "
                                                                "what its job did.",
                                                 "command": f"systemctl list-timers {unit}; journalctl -u {unit} "
                                                            "--since -1day"}}
                                            for unit in stale]}],
        "metricsql_expr_test": [{"expr": expr, "eval_time": "5m", "exp_samples": [
            {"labels": f'{{unit="{unit}",host="h1"}}', "value": 10800}
            for unit in stale]}],
    }]}
    (rendered / "stale_panel.test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    done = vmalert_tool(rendered, "stale_panel.test.yml")
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]


def test_a_broken_rule_never_replaces_a_working_one(rendered, tmp_path):
    """The role validates with vmalert -dryRun before the file goes live."""
    live = tmp_path / "live.yml"
    shutil.copy(rendered / "rules.yml", live)
    before = live.read_bytes()
    done = subprocess.run(
        [ANSIBLE_PLAYBOOK, str(HERE / "render.yml"),
         "-e", f"rules_path={live}", "-e", f"vmalert={lab.tool('vmalert')}",
         # "5 minutes" is no duration vmalert understands
         "-e", "systemd_monitoring_alerts_unit_missing_for='5 minutes'"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "failed to validate" in done.stdout
    assert live.read_bytes() == before

"""The alerts role's preflight on the controller itself (no lab): it finds the vmalert that
validates the rules or stops with one line naming the variable, writes nothing first, and
writes the rules unvalidated when told vmalert runs elsewhere; its tags reach every task."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from helpers import ANSIBLE_PLAYBOOK, ROOT


def run_role(tmp_path: Path, *args: str, **variables) -> subprocess.CompletedProcess:
    playbook = tmp_path / "alerts.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Alert rules", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"systemd_monitoring_alerts_rules_path": str(tmp_path / "rules/systemd.yml"), **variables},
        "roles": [{"role": "coilysiren.systemd_monitoring.systemd_monitoring_alerts"}]}]))
    return subprocess.run([ANSIBLE_PLAYBOOK, str(playbook), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_no_vmalert_on_the_host_stops_preflight_with_one_line_naming_the_variable(tmp_path):
    done = run_role(tmp_path, systemd_monitoring_alerts_vmalert_binary=str(tmp_path / "no/vmalert"))
    assert done.returncode != 0
    (fatal,) = [line for line in done.stdout.splitlines() if line.startswith("fatal: [localhost]")]
    line = json.loads(fatal.split("=> ", 1)[1])["msg"]
    assert "\n" not in line and line.startswith("systemd_monitoring_alerts_vmalert_binary: ")
    assert f"no vmalert at {tmp_path}/no/vmalert on localhost" in line
    assert "systemd_monitoring_alerts_validate: false" in line
    assert not (tmp_path / "rules").exists()  # nothing changed before the check


def test_a_missing_vmalert_to_copy_names_its_variable(tmp_path):
    done = run_role(tmp_path, systemd_monitoring_alerts_vmalert_install=True,
                    systemd_monitoring_alerts_vmalert_binary_src=str(tmp_path / "vmalert"))
    assert done.returncode != 0
    assert f"systemd_monitoring_alerts_vmalert_binary_src: no file {tmp_path}/vmalert on the controller" in done.stdout


def test_validation_off_writes_the_rules_without_vmalert_and_tags_select_the_role(tmp_path):
    done = run_role(tmp_path, "--tags", "systemd_monitoring_alerts", systemd_monitoring_alerts_validate=False,
                    systemd_monitoring_alerts_vmalert_binary=str(tmp_path / "no/vmalert"))
    assert done.returncode == 0, done.stdout[-3000:]
    assert "SystemdHeartbeatMissing" in (tmp_path / "rules/systemd.yml").read_text()
    skipped = run_role(tmp_path, "--skip-tags", "systemd_monitoring_alerts_rules",
                       systemd_monitoring_alerts_validate=False)
    assert skipped.returncode == 0 and "Render the alert rules" not in skipped.stdout


def test_a_timer_success_ratio_that_is_no_fraction_stops_preflight_with_one_line_naming_it(tmp_path):
    done = run_role(tmp_path, systemd_monitoring_alerts_validate=False,
                    systemd_monitoring_alerts_timer_success_ratio_min=1.5)
    assert done.returncode != 0
    (fatal,) = [line for line in done.stdout.splitlines() if line.startswith("fatal: [localhost]")]
    assert json.loads(fatal.split("=> ", 1)[1])["msg"] == (
        "systemd_monitoring_alerts_timer_success_ratio_min: 1.5 is not a fraction above 0 and at most 1")
    assert not (tmp_path / "rules").exists()
    done = run_role(tmp_path, systemd_monitoring_alerts_validate=False,
                    systemd_monitoring_alerts_timer_lateness_max_seconds=0)
    assert done.returncode != 0 and "timer_lateness_max_seconds=0" in done.stdout

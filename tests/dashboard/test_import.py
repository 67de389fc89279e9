"""The role's import through Grafana's HTTP API, against a stand-in that implements the
documented subset of the API (tests/grafana_standin.py; no Grafana server can be installed
here): create, update in place, no change when unchanged, check mode, a bad token, a version
mismatch, and the token never printed."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from grafana_standin import GrafanaStandIn
from helpers import ANSIBLE_PLAYBOOK, ROOT

TOKEN = "glsa_standin_0123456789abcdef"


@pytest.fixture()
def grafana():
    standin = GrafanaStandIn(TOKEN)
    yield standin
    standin.close()


def apply(tmp_path: Path, grafana, units, token=TOKEN, *args: str, **extra):
    playbook = tmp_path / "import.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Import the dashboard", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "roles": [{"role": "coilysiren.systemd_monitoring.systemd_monitoring_dashboard"}]}]))
    variables = {"systemd_monitoring_dashboard_units": units,
                 "systemd_monitoring_dashboard_path": str(tmp_path / "systemd.json"),
                 "systemd_monitoring_dashboard_grafana_url": grafana.url,
                 "systemd_monitoring_dashboard_grafana_token": token,
                 "systemd_monitoring_dashboard_grafana_folder_uid": "infrastructure", **extra}
    done = subprocess.run([ANSIBLE_PLAYBOOK, str(playbook),
                           "-e", json.dumps(variables), *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                               "PATH": "/usr/bin:/bin"})
    return done.returncode, done.stdout + done.stderr


def import_task_changed(output: str) -> bool:
    block = output.split("Import the dashboard into Grafana", 1)[1].split("TASK", 1)[0]
    return "changed:" in block


def test_create_then_unchanged_then_update_in_place(tmp_path, grafana):
    rc, out = apply(tmp_path, grafana, ["a.service"])
    assert rc == 0 and import_task_changed(out), out[-2000:]
    stored = grafana.dashboards["systemd-units"]
    assert stored["folderUid"] == "infrastructure" and stored["dashboard"]["version"] == 1
    rc, out = apply(tmp_path, grafana, ["a.service"])
    assert rc == 0 and not import_task_changed(out) and grafana.posts == 1
    rc, out = apply(tmp_path, grafana, ["a.service", "b.timer"])
    assert rc == 0 and import_task_changed(out) and grafana.posts == 2
    stored = grafana.dashboards["systemd-units"]
    assert stored["dashboard"]["version"] == 2 and stored["folderUid"] == "infrastructure"
    # an allowlisted timer brings the row of the load-bearing timers, after the overview
    assert [p["title"] for p in stored["dashboard"]["panels"] if p["type"] == "row"] == [
        "Overview", "Load-bearing timers: can they be trusted?", "a.service", "b.timer"]
    assert TOKEN not in out


def test_check_mode_shows_the_change_and_imports_nothing(tmp_path, grafana):
    apply(tmp_path, grafana, ["a.service"])
    rc, out = apply(tmp_path, grafana, ["a.service", "c.service"], TOKEN, "--check", "--diff")
    assert rc == 0 and import_task_changed(out) and grafana.posts == 1
    assert '+        "title": "c.service"' in out or '"c.service"' in out


def test_a_bad_token_fails_with_grafanas_message_and_is_never_printed(tmp_path, grafana):
    rc, out = apply(tmp_path, grafana, ["a.service"], "wrong-token-do-not-print")
    assert rc != 0
    assert "HTTP 401: invalid API key (the token is wrong or expired)" in out
    assert "wrong-token-do-not-print" not in out and grafana.posts == 0


def test_a_version_mismatch_without_overwrite_fails_clearly(tmp_path, grafana):
    apply(tmp_path, grafana, ["a.service"])
    grafana.edit_after_read = True
    rc, out = apply(tmp_path, grafana, ["a.service", "b.timer"], TOKEN,
                    systemd_monitoring_dashboard_grafana_overwrite=False)
    assert rc != 0
    assert ("HTTP 412: The dashboard has been changed by someone else (changed in Grafana since; "
            "set overwrite to replace it)") in out


def test_state_absent_deletes_the_dashboard_and_its_file_once(tmp_path, grafana):
    apply(tmp_path, grafana, ["a.service"])
    assert "systemd-units" in grafana.dashboards and (tmp_path / "systemd.json").exists()
    rc, out = apply(tmp_path, grafana, ["a.service"], TOKEN, "--check", systemd_monitoring_dashboard_state="absent")
    assert rc == 0 and "systemd-units" in grafana.dashboards  # check mode deletes nothing
    rc, out = apply(tmp_path, grafana, ["a.service"], systemd_monitoring_dashboard_state="absent")
    assert rc == 0, out[-2000:]
    assert "systemd-units" not in grafana.dashboards and not (tmp_path / "systemd.json").exists()
    assert "changed=2" in out and TOKEN not in out
    rc, out = apply(tmp_path, grafana, ["a.service"], systemd_monitoring_dashboard_state="absent")
    assert rc == 0 and "changed=0" in out


def test_a_url_without_a_token_fails_in_preflight(tmp_path, grafana):
    rc, out = apply(tmp_path, grafana, ["a.service"], "")
    assert rc != 0 and grafana.posts == 0
    assert ("systemd_monitoring_dashboard_grafana_url and systemd_monitoring_dashboard_grafana_token go together "
            "(url is set, token is empty)") in out


def module_results(tmp_path: Path, grafana, *args: str) -> dict[str, dict]:
    """The module's results, present then absent, as the playbook registered them."""
    playbook = tmp_path / "module.yml"
    sync = {"url": grafana.url, "token": TOKEN, "uid": "systemd-units"}
    playbook.write_text(yaml.safe_dump([{
        "name": "The module alone", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": [
            {"name": "Import", "register": "present", "coilysiren.systemd_monitoring.grafana_dashboard_sync": {
                **sync, "dashboard": {"uid": "systemd-units", "title": "t", "panels": []}}},
            {"name": "Delete", "register": "absent",
             "coilysiren.systemd_monitoring.grafana_dashboard_sync": {**sync, "state": "absent"}},
            {"name": "Write the results", "ansible.builtin.copy": {
                "content": "{{ {'present': present, 'absent': absent} | to_json }}",
                "dest": str(tmp_path / "results.json"), "mode": "0644"}}]}]))
    done = subprocess.run([ANSIBLE_PLAYBOOK, str(playbook), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout[-2000:]
    return json.loads((tmp_path / "results.json").read_text())


def test_the_module_returns_its_diff_only_in_diff_mode_and_what_return_documents(tmp_path, grafana):
    plain = module_results(tmp_path, grafana)
    assert "diff" not in plain["present"] and "diff" not in plain["absent"]
    assert {"uid", "version", "url"} <= set(plain["present"])
    assert "uid" in plain["absent"] and "version" not in plain["absent"]  # RETURN: version only for present
    shown = module_results(tmp_path, grafana, "--diff")
    assert '"title": "t"' in shown["present"]["diff"]["after"] and shown["present"]["diff"]["before"] == ""
    assert shown["absent"]["diff"]["after"] == "" and '"title": "t"' in shown["absent"]["diff"]["before"]

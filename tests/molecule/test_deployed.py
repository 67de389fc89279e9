"""After converge: what the deployed role does, seen from the controller."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

import lab as lab_module
from scenario import FRESH_HOST, SCENARIO_HOSTS, ansible_playbook, lab_host, write_inventory
from helpers import ROOT, inventory_allowlist


def on_host(host: str, command: str) -> subprocess.CompletedProcess:
    return lab_module.ssh(host, command, check=False)


def tick_now(host: str) -> float:
    """Run the installed heartbeat service once, synchronously, as the timer would.

    `systemctl start` joins a run the timer already started, which may have read the old
    allowlist; so start twice and return a moment between the two: only the second run's
    push is later than it.
    """
    assert on_host(host, "systemctl start systemd-heartbeat.service").returncode == 0
    between = time.time()
    done = on_host(host, "systemctl start systemd-heartbeat.service")
    assert done.returncode == 0, done.stderr
    return between


def test_both_hosts_report_with_distinct_host_labels(victoria):
    for host in SCENARIO_HOSTS:
        # a tick of the installed service now: it also ends series of units other tests
        # allowlisted for a while (staleness markers)
        victoria.wait_for_push(host, tick_now(host))
    hosts = {m["host"] for m, _ in victoria.query('systemd_heartbeat_up{host=~"lab-host3|lab-host4"}')}
    assert hosts == set(SCENARIO_HOSTS)
    for host in SCENARIO_HOSTS:
        units = {m["unit"] for m, _ in victoria.query(f'systemd_unit_info{{host="{host}",allowlisted="true"}}')}
        assert units == set(inventory_allowlist())
        active = victoria.query(f'systemd_unit_active{{host="{host}",unit="factorio-server.service"}}')
        assert [(m["sub_state"], v) for m, v in active] == [("running", 1.0)]


def test_the_deployed_service_may_read_the_journal(victoria):
    """As the role deploys it (SupplementaryGroups=systemd-journal, both sandboxes), the heartbeat
    may read the system journal: its failures come from there, not from inference."""
    for host in SCENARIO_HOSTS:  # pushed by the ticks above (more starts now would hit the unit's start limit)
        victoria.wait_for(f'systemd_heartbeat_history_source{{host="{host}"}}', timeout=60)
        sources = {m["source"] for m, _ in victoria.query(f'systemd_heartbeat_history_source{{host="{host}"}}')}
        assert sources == {"journal"}, (host, sources)


def test_module_push_arrives_and_reports_missing_units(tmp_path, victoria):
    """The module the deploy runs: its push lands in VictoriaMetrics; a missing unit warns."""
    inventory = write_inventory(tmp_path, {"lab-host3": lab_host("lab-host3")})
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    label = "lab-host3-module-probe"
    done = subprocess.run(
        ["ansible", "lab-host3", "-i", str(inventory), "-m", "coilysiren.systemd_monitoring.systemd_heartbeat", "-a", json.dumps({
            "units": ["factorio-server.service", "no-such-unit.service"], "host": label,
            "url": "http://localhost:30428/opentelemetry/v1/metrics"})],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.split(" => ", 1)[1])
    assert result["pushed"] is True and result["changed"] is False
    assert result["missing"] == ["no-such-unit.service"]
    assert "allowlisted unit no-such-unit.service does not exist on this host" in done.stderr
    factorio = next(u for u in result["units"] if u["unit"] == "factorio-server.service")
    assert factorio["sub_state"] == "running" and factorio["restarts"] == 0
    arrived = victoria.wait_for(f'systemd_unit_active{{host="{label}",unit="factorio-server.service"}}')
    assert [(m["sub_state"], v) for m, v in arrived] == [("running", 1.0)]


def test_check_diff_on_a_fresh_host_changes_nothing(tmp_path):
    lab_module.up(1, first=int(FRESH_HOST[len("lab-host"):]))
    inventory = write_inventory(tmp_path, {FRESH_HOST: lab_host(FRESH_HOST)})
    run = ansible_playbook(inventory, "--check", "--diff")
    assert run.returncode == 0, run.output[-4000:]
    assert run.recap(FRESH_HOST)["failed"] == 0
    assert "+VMSINGLE_OTLP_URL=http://localhost:30428/opentelemetry/v1/metrics" in run.output  # the diff
    left = on_host(FRESH_HOST, "ls /etc/systemd-heartbeat /usr/local/lib/systemd-heartbeat "
                               "/etc/systemd/system/systemd-heartbeat.timer; getent passwd systemd-heartbeat")
    assert left.stdout == "" and left.returncode != 0


def snapshot_files(host: str) -> str:
    return on_host(host, "sha256sum /etc/systemd-heartbeat/* /etc/systemd/system/systemd-heartbeat.* "
                         "/usr/local/lib/systemd-heartbeat/systemd_heartbeat/*.py").stdout


@pytest.mark.parametrize("extra, message", [
    ({"systemd_monitoring_interval": 0},
     "systemd_monitoring_interval must be a positive number of seconds, got 0"),
    ({"systemd_monitoring_otlp_url": "localhost:30428/opentelemetry/v1/metrics"},
     "systemd_monitoring_otlp_url must be an http:// or https:// URL, got localhost:30428/opentelemetry/v1/metrics"),
    ({"systemd_monitoring_units": ["factorio-server.service", "bad name.service"]},
     "units: bad unit 'bad name.service': character ' ' is not allowed in a unit name"),
    ({"systemd_monitoring_units": ["factorio-server.servce"]},
     "units: bad unit 'factorio-server.servce': unknown unit type '.servce'"),
])
def test_invalid_inventory_value_fails_in_preflight_and_changes_nothing(tmp_path, extra, message):
    inventory = write_inventory(tmp_path, {"lab-host4": lab_host("lab-host4")})
    before = snapshot_files("lab-host4")
    run = ansible_playbook(inventory, "-e", json.dumps(extra))
    assert run.returncode != 0
    assert message in run.output, run.output[-3000:]
    assert run.recap("lab-host4")["changed"] == 0
    assert snapshot_files("lab-host4") == before


def test_a_python_older_than_the_floor_fails_in_preflight_and_changes_nothing(tmp_path):
    """kai-server's floor is Python 3.10 (Ubuntu 22.04): a host whose python3 is older is
    refused with one line naming what was found (a stand-in python3 that reports 3.9.2)."""
    on_host("lab-host4", "mkdir -p /opt/old-python && printf '#!/bin/sh\\necho 3.9.2\\n' > /opt/old-python/python3 "
                         "&& chmod 0755 /opt/old-python/python3")
    inventory = write_inventory(tmp_path, {"lab-host4": lab_host("lab-host4")})
    before = snapshot_files("lab-host4")
    run = ansible_playbook(inventory, "-e", json.dumps({"_systemd_monitoring_python_dir": "/opt/old-python"}))
    assert run.returncode != 0
    assert ("the heartbeat needs Python >= 3.10 as /opt/old-python/python3 on lab-host4, found 3.9.2"
            in run.output), run.output[-3000:]
    assert run.recap("lab-host4")["changed"] == 0 and snapshot_files("lab-host4") == before


def test_host_without_systemd_fails_in_preflight(tmp_path):
    """The controller machine itself: its PID 1 is not systemd."""
    inventory = write_inventory(tmp_path, {"not-systemd": {"ansible_connection": "local",
                                                           "ansible_host": "localhost"}})
    run = ansible_playbook(inventory)
    assert run.returncode != 0
    assert "host not-systemd does not run systemd (ansible_facts['service_mgr'] is '" in run.output
    assert run.recap("not-systemd")["changed"] == 0


def test_allowlist_change_propagates(tmp_path, victoria):
    inventory = write_inventory(tmp_path, {"lab-host3": lab_host("lab-host3")})
    changed = [u for u in inventory_allowlist() if u != "factorio-server.service"] + ["systemd-journald.service"]
    run = ansible_playbook(inventory, "-e", json.dumps({"systemd_monitoring_units": changed}))
    assert run.returncode == 0, run.output[-3000:]
    assert "DEPRECATION WARNING" not in run.output, run.output[-3000:]
    assert run.recap("lab-host3")["changed"] >= 1
    allowlist = on_host("lab-host3", "grep -v '^#' /etc/systemd-heartbeat/allowlist").stdout.split()
    assert allowlist == changed
    victoria.wait_for_push("lab-host3", tick_now("lab-host3"))
    query = 'systemd_unit_active{{host="lab-host3",unit="{}"}}'
    assert victoria.query(query.format("systemd-journald.service"))  # added: reports
    assert victoria.query(query.format("factorio-server.service")) == []  # removed: series ended
    # back to the inventory's list
    run = ansible_playbook(inventory)
    assert run.returncode == 0 and run.recap("lab-host3")["changed"] >= 1
    victoria.wait_for_push("lab-host3", tick_now("lab-host3"))
    assert victoria.query(query.format("factorio-server.service"))
    assert victoria.query(query.format("systemd-journald.service")) == []


def test_state_absent_removes_everything(tmp_path):
    """Install on the fresh host, then systemd_monitoring_state=absent leaves nothing behind."""
    lab_module.up(1, first=int(FRESH_HOST[len("lab-host"):]))
    inventory = write_inventory(tmp_path, {FRESH_HOST: lab_host(FRESH_HOST)})
    installed = ansible_playbook(inventory)
    assert installed.returncode == 0, installed.output[-3000:]
    assert on_host(FRESH_HOST, "systemctl is-active systemd-heartbeat.timer").stdout.strip() == "active"
    removed = ansible_playbook(inventory, "-e", "systemd_monitoring_state=absent")
    assert removed.returncode == 0, removed.output[-3000:]
    left = on_host(FRESH_HOST, "ls -d /etc/systemd-heartbeat /usr/local/lib/systemd-heartbeat "
                               "/usr/local/bin/systemd-heartbeat /var/lib/systemd-heartbeat "
                               "/etc/systemd/system/systemd-heartbeat.* 2>/dev/null; "
                               "getent passwd systemd-heartbeat; systemctl list-units --all --plain --no-legend "
                               "'systemd-heartbeat*'")
    assert left.stdout.strip() == ""
    again = ansible_playbook(inventory, "-e", "systemd_monitoring_state=absent")
    assert again.returncode == 0 and again.recap(FRESH_HOST)["changed"] == 0


def test_every_role_absent_removes_what_it_installed_and_starts_nothing(tmp_path):
    """The fresh host as kai-server: heartbeat, vmalert run by the role, the dashboard
    provisioned on the host. One converge restarts vmalert once (no reload on top); then each
    role's state=absent removes its files, vmalert stays stopped, and a second run changes nothing."""
    lab_module.up(1, first=int(FRESH_HOST[len("lab-host"):]))
    vmalert = f"{lab_module.CACHE}/debian-trixie/root/usr/bin/vmalert"
    observability = {"systemd_monitoring_alerts_vmalert_install": True,
                     "systemd_monitoring_alerts_vmalert_binary_src": vmalert,
                     "systemd_monitoring_alerts_vmalert_listen_address": "127.0.0.1:8884",
                     "systemd_monitoring_dashboard_path": str(tmp_path / "systemd.json"),
                     "systemd_monitoring_dashboard_provisioning_dir": "/var/lib/grafana-provisioning"}
    inventory = write_inventory(tmp_path, {FRESH_HOST: {**lab_host(FRESH_HOST), **observability}},
                                observability=(FRESH_HOST,))
    on_host(FRESH_HOST, "mkdir -p /var/lib/grafana-provisioning")
    installed = ansible_playbook(inventory)
    assert installed.returncode == 0, installed.output[-3000:]
    handlers = re.findall(r"RUNNING HANDLER \[[^:]+: (\w+ vmalert)\] \**\n(\w+)", installed.output)
    assert [name for name, outcome in handlers if outcome != "skipping"] == ["Restart vmalert"], installed.output[-3000:]
    assert on_host(FRESH_HOST, "systemctl is-active vmalert.service").stdout.strip() == "active"
    absent = json.dumps({"systemd_monitoring_state": "absent", "systemd_monitoring_alerts_state": "absent",
                         "systemd_monitoring_dashboard_state": "absent"})
    removed = ansible_playbook(inventory, "-e", absent)
    assert removed.returncode == 0, removed.output[-3000:]
    ran = re.findall(r"RUNNING HANDLER \[[^\]]+\] \**\n(\w+)", removed.output)
    assert set(ran) <= {"skipping"}, removed.output[-3000:]  # nothing restarted or reloaded
    left = on_host(FRESH_HOST, "ls -d /etc/vmalert/rules/systemd-monitoring.yml /etc/systemd/system/vmalert.service "
                               "/var/lib/grafana-provisioning/systemd-units.json /etc/systemd-heartbeat "
                               "/usr/local/bin/vmalert 2>/dev/null; getent passwd vmalert; "
                               "systemctl is-active vmalert.service")
    assert left.stdout.split() == ["inactive"] and not (tmp_path / "systemd.json").exists()
    again = ansible_playbook(inventory, "-e", absent)
    assert again.returncode == 0 and again.recap(FRESH_HOST)["changed"] == 0, again.output[-3000:]
    assert on_host(FRESH_HOST, "systemctl is-active vmalert.service").stdout.strip() == "inactive"


def test_endpoint_credentials_stay_secret(tmp_path):
    """A bearer token reaches the host only as a root-only credential file loaded by systemd:
    not in Ansible's output, not on a command line, not in a world-readable file."""
    inventory = write_inventory(tmp_path, {"lab-host4": lab_host("lab-host4")})
    token = "tok-" + os.urandom(8).hex()
    run = ansible_playbook(inventory, "-e", json.dumps({"systemd_monitoring_otlp_bearer_token": token}))
    try:
        assert run.returncode == 0, run.output[-3000:]
        assert token not in run.output
        listing = on_host("lab-host4", "stat -c '%a %U %G' /etc/systemd-heartbeat/otlp-auth").stdout.split()
        assert listing == ["600", "root", "root"]
        unit = on_host("lab-host4", "systemctl cat systemd-heartbeat.service").stdout
        assert "LoadCredential=otlp-auth:/etc/systemd-heartbeat/otlp-auth" in unit and token not in unit
        assert token not in on_host("lab-host4", "cat /etc/systemd-heartbeat/heartbeat.env").stdout
        assert on_host("lab-host4", "systemctl start systemd-heartbeat.service").returncode == 0
        readable = on_host("lab-host4", f"grep -rl {token} /etc /usr/local /var/lib/systemd-heartbeat "
                                        "2>/dev/null | xargs -r stat -c '%a %n'").stdout.split("\n")
        assert [line for line in readable if line and not line.startswith("600 ")] == []
    finally:
        restored = ansible_playbook(inventory)
    assert restored.returncode == 0
    assert on_host("lab-host4", "test -e /etc/systemd-heartbeat/otlp-auth").returncode != 0
    assert "LoadCredential" not in on_host("lab-host4", "systemctl cat systemd-heartbeat.service").stdout

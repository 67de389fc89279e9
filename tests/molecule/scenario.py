"""The molecule scenario's lab hosts as the controller-side checks see them, and how they run
ansible-playbook against them. The fixtures are in conftest.py.

The checks molecule's verify runs after converge (molecule/default/verify.yml) drive
ansible-playbook and the module against the scenario's lab hosts and read the real
VictoriaMetrics. Run only by molecule: the hosts exist between its create and destroy. Verify runs
test_auto_pull.py and test_mass_restart.py each in a pytest of its own, beside the others.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import lab as lab_module
from helpers import ROOT

SCENARIO_HOSTS = ("lab-host3", "lab-host4")
FRESH_HOST = "lab-host5"
# The two longest checks (minutes of waiting on timers and alerts each) have a host of their own,
# so verify runs each beside the rest (molecule/default/verify.yml): what they restart, fail,
# reboot and allowlist happens on a host no other check reads. Alerts are per host.
AUTO_PULL_HOST = "lab-host12"
MASS_RESTART_HOST = "lab-host13"


def write_inventory(directory: Path, hosts: dict[str, dict], observability: tuple[str, ...] = ()) -> Path:
    """An inventory of some lab hosts in the project's group (and `observability` also in the
    alerting group), with inventory/group_vars beside it."""
    (directory / "group_vars").symlink_to(ROOT / "inventory/group_vars")
    base = {"ansible_host": "127.0.0.1", "ansible_user": "root",
            "ansible_ssh_private_key_file": str(lab_module.key_path()),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_python_interpreter": "/usr/bin/python3"}
    inventory = {"all": {"children": {
        "systemd_monitoring_hosts": {"hosts": {name: {**base, **extra} for name, extra in hosts.items()}},
        "systemd_monitoring_observability": {"hosts": {name: {} for name in observability}}}}}
    path = directory / "hosts.json"
    path.write_text(json.dumps(inventory))
    return path


def lab_host(name: str) -> dict:
    return {"ansible_port": lab_module.ssh_port(name)}


class PlaybookRun:
    def __init__(self, done: subprocess.CompletedProcess):
        self.returncode, self.output = done.returncode, done.stdout + done.stderr

    def recap(self, host: str) -> dict[str, int]:
        match = re.search(rf"^{re.escape(host)}\s*:\s*(.*)$", self.output, re.MULTILINE)
        assert match, self.output[-3000:]
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def ansible_playbook(inventory: Path, *args: str) -> PlaybookRun:
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0")
    done = subprocess.run(["ansible-playbook", "-i", str(inventory), str(ROOT / "playbooks/systemd-monitoring.yml"),
                           *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return PlaybookRun(done)

"""The lab's own contract: `up` and `down` are idempotent, and `down` leaves no processes,
mounts or listening ports behind. Runs last in scripts/test: it tears the lab down."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lab

LAB = [sys.executable, str(Path(lab.__file__))]
PORTS = [*(lab.ssh_port(h) for h in lab.host_names(2)), lab.VM_PORT, lab.ALERTMANAGER_PORT,
         lab.MOLECULE_ALERTMANAGER_PORT, lab.TESTS_ALERTMANAGER_PORT]
OWN_ALERTMANAGER = ("alertmanager", "--port", str(lab.MOLECULE_ALERTMANAGER_PORT), "--name", "alertmanager-molecule")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


def listening_ports() -> set[int]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def lab_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()
            if line.startswith(("systemd-nspawn", str(lab.TOOLS))) or "victoria-metrics -storageDataPath" in line]


def lab_mounts() -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if str(lab.RUN) in line]


def run_lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LAB, *args], capture_output=True, text=True, timeout=600)


def test_up_is_idempotent():
    first = run_lab("up")
    assert first.returncode == 0, first.stderr
    pids = {h: lab.nspawn_pid(h) for h in lab.host_names(2)}
    second = run_lab("up")
    assert second.returncode == 0, second.stderr
    assert {h: lab.nspawn_pid(h) for h in lab.host_names(2)} == pids  # nothing restarted
    own_pids = []
    for _ in range(2):  # an Alertmanager of its own (molecule's): started once, then found running
        own = run_lab(*OWN_ALERTMANAGER)
        assert own.returncode == 0 and own.stderr.count("\n") == 1, own.stderr
        own_pids.append(lab.read_pid(lab.RUN / "services/alertmanager-molecule/pid"))
    assert own_pids[0] and own_pids[0] == own_pids[1]
    assert set(PORTS) <= listening_ports()


def test_down_leaves_nothing_and_is_idempotent():
    for _ in range(2):
        done = run_lab("down")
        assert done.returncode == 0, done.stderr
        assert lab_processes() == []
        assert lab_mounts() == []
        assert not set(PORTS) & listening_ports()
        assert not (lab.RUN / "hosts").exists() or not any((lab.RUN / "hosts").iterdir())


def test_an_alertmanager_of_its_own_needs_a_lab_name():
    done = run_lab("alertmanager", "--port", "9999", "--name", "../etc")
    assert done.returncode == 1 and done.stderr.startswith("lab: --name must be alertmanager-") and \
        done.stderr.count("\n") == 1

"""The failure-history alerts end to end (issue 20), on real systemd 252 (Debian 12) and 257
(Debian 13): a service crash-looping on a lab host, the heartbeat ticking there and pushing to the
lab's VictoriaMetrics, the role's rules (rendered by tests/alerts/render.yml, evaluated every 2 s)
in a real vmalert, and a real Alertmanager receiving (the lab tests' own: helpers.own_alertmanager):

- SystemdUnitFailureLoop fires for the loop, and its description counts the failures the unit
  logged itself, by Result; it did not fire before the loop;
- SystemdFailureHistoryInferred fires for a heartbeat that may not read the journal (`nobody`),
  not for the one that reads it, and resolves once that heartbeat reads the journal (root).

VictoriaMetrics and that Alertmanager are shared with other tests: this vmalert's rule group gets
`params: extra_filters[]` (a VictoriaMetrics query argument that filters every series of every
query) naming this test's host labels, so it evaluates and alerts on nothing else; its series are
deleted at the end.
"""
from __future__ import annotations

import sys
import time

import pytest

from helpers import ROOT, heartbeat_host, own_alertmanager, scoped_vmalert
from helpers import HEARTBEAT_ON_HOST as PROGRAM
from lab import wait_until
from test_failure_events import LOGS, SCRIPTS, disable, enable, install_scripts, run, runs, unit
from test_failure_history import remove_units, sh, unit_files

sys.path.insert(0, str(ROOT / "bench"))
import alert_latency  # noqa: E402  (Alertmanager's view: bench and tests share it)

pytestmark = pytest.mark.lab

HOSTS = ("lab-host1", "lab-trixie1")  # systemd 252 and 257 (test_debian_versions.RELEASES)
LOOP = "alerts-loop.service"
# exits 3 after 0.1 s, restarted 300 ms later: more than the rule's 3 failures within seconds
UNITS = {LOOP: unit(f"ExecStart={run(3, 0.1)}\nRestart=on-failure\nRestartSec=300ms")}
STATE, UNREAD_STATE = "/var/lib/alerts-test", "/var/lib/alerts-test-unread"


@pytest.fixture(scope="module", params=HOSTS)
def host(request, lab):
    name = heartbeat_host(request, lab)
    sh(lab, name, "\n".join(["set -e", f"rm -rf {STATE} {UNREAD_STATE} {LOGS}", f"mkdir -p {STATE} {LOGS}",
                             f"install -d -o nobody {UNREAD_STATE}"] + install_scripts()
                            + unit_files(UNITS) + ["systemctl daemon-reload", enable(UNITS)]))
    yield name
    disable(lab, name, UNITS)
    remove_units(lab, name, UNITS, also=f"{STATE} {UNREAD_STATE} {LOGS} {SCRIPTS}")


@pytest.fixture(scope="module")
def vmalert(lab, host, victoria, tmp_path_factory):
    """vmalert with the role's rules, scoped to this host's labels (`{host}-alerts...`), notifying
    the lab tests' Alertmanager; the labels' series are deleted afterwards."""
    with scoped_vmalert(lab, victoria, tmp_path_factory.mktemp("vmalert"), f'{{host=~"{host}-alerts.*"}}') as process:
        yield process


def push(lab, host: str, victoria, label: str, state: str, user: str = "") -> None:
    """One tick of the heartbeat on the host, pushed to VictoriaMetrics under `label`."""
    prefix = f"runuser -u {user} -- " if user else ""
    since = time.time()
    answer = lab.ssh(host, f"{prefix}{PROGRAM} --host {label} --url {victoria.otlp} --state-dir {state} --unit {LOOP}",
                     check=False)
    assert answer.returncode == 0, answer.stderr
    victoria.wait_for_push(label, since)


@pytest.fixture(scope="module")
def alertmanager(lab) -> str:
    """The Alertmanager the vmalert fixture notifies."""
    return own_alertmanager(lab)


def test_a_crash_loop_fires_the_failure_loop_in_alertmanager(lab, host, victoria, vmalert, alertmanager):
    label = f"{host}-alerts"
    push(lab, host, victoria, label, STATE)  # the host's first pushes in the window come before the loop
    time.sleep(2)
    push(lab, host, victoria, label, STATE)
    time.sleep(6)  # evaluations of the rules
    assert vmalert.poll() is None
    assert not alert_latency.firing("SystemdUnitFailureLoop", label, LOOP, alertmanager)
    sh(lab, host, f"systemctl start {LOOP}")
    wait_until("5 failures", lambda: len([r for r in runs(lab, host, LOOP) if r[0] == "exit"]) >= 5, timeout=30,
               step=0.1)
    sh(lab, host, f"systemctl stop {LOOP}")
    failed = len([r for r in runs(lab, host, LOOP) if r[0] == "exit"])
    push(lab, host, victoria, label, STATE)
    alert = wait_until("SystemdUnitFailureLoop in Alertmanager",
                       lambda: alert_latency.firing("SystemdUnitFailureLoop", label, LOOP, alertmanager), timeout=60, step=1)
    assert alert["labels"]["severity"] == "critical"
    description = alert["annotations"]["description"]
    assert f"{LOOP} on {label} failed {failed} times in the last 5 minutes" in description, description
    assert description.endswith(f"by systemd's Result: exit-code {failed}."), description
    assert not alert_latency.firing("SystemdFailureHistoryInferred", label, "systemd-heartbeat.service", alertmanager)


def test_a_heartbeat_without_the_journal_fires_history_inferred_until_it_reads_it(
        lab, host, victoria, vmalert, alertmanager):
    """`nobody` may not read the journal: its ticks infer the loop's failures and say so; a tick
    as root with the same state directory reads the journal again, and the alert resolves."""
    label = f"{host}-alerts-unread"
    push(lab, host, victoria, label, UNREAD_STATE, user="nobody")
    before = len([r for r in runs(lab, host, LOOP) if r[0] == "exit"])
    sh(lab, host, f"systemctl start {LOOP}")
    wait_until("2 more failures", lambda: len([r for r in runs(lab, host, LOOP) if r[0] == "exit"]) >= before + 2,
               timeout=30, step=0.1)
    push(lab, host, victoria, label, UNREAD_STATE, user="nobody")
    sh(lab, host, f"systemctl stop {LOOP}")
    alert = wait_until("SystemdFailureHistoryInferred in Alertmanager", lambda: alert_latency.firing(
        "SystemdFailureHistoryInferred", label, "systemd-heartbeat.service", alertmanager), timeout=60, step=1)
    assert alert["labels"]["severity"] == "warning"
    assert not alert_latency.firing("SystemdFailureHistoryInferred", f"{host}-alerts", "systemd-heartbeat.service",
                                    alertmanager)
    push(lab, host, victoria, label, UNREAD_STATE)  # root: the journal is read
    wait_until("SystemdFailureHistoryInferred resolved", lambda: not alert_latency.firing(
        "SystemdFailureHistoryInferred", label, "systemd-heartbeat.service", alertmanager), timeout=60, step=1)

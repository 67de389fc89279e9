"""The heartbeat on both Debian releases of the lab: Debian 12 (systemd 252, Python 3.11,
dbus-daemon as the system bus) and Debian 13 (systemd 257, Python 3.13, dbus-broker). It is
installed the way a clone runs it (helpers.install_heartbeat) and driven only through its
command line, as root and as an unprivileged user; each tick is checked against `systemctl
show` on the same host, and one real tick goes to the lab's VictoriaMetrics."""
from __future__ import annotations

import re
import shlex
import time
from typing import NamedTuple

import pytest

from helpers import HEARTBEAT_ON_HOST as PROGRAM
from helpers import install_heartbeat

pytestmark = pytest.mark.lab


class Release(NamedTuple):
    debian: str
    systemd: int
    python: str
    bus: str  # the process behind /run/dbus/system_bus_socket


# lab-host1: the e2e and reliability tests use lab-host2, and a failed unit there would
# change the unit counts they assert.
RELEASES = {
    "lab-host1": Release("12", 252, "3.11", "dbus-daemon"),
    "lab-trixie1": Release("13", 257, "3.13", "dbus-broker"),
}
AS_USER = {"root": "", "unprivileged": "runuser -u nobody --"}
# One of each kind of unit the comparison must get right, created on the host under test.
UNITS = {
    "versions-running.service": "[Service]\nExecStart=/bin/sleep infinity\n",
    "versions-failed.service": "[Service]\nType=oneshot\nExecStart=/bin/sh -c 'exit 7'\n",
    "versions-job.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    # fires once soon after it starts, then not again during the test
    "versions-job.timer": "[Timer]\nOnActiveSec=1s\nOnUnitActiveSec=1h\nAccuracySec=1s\n",
}
UNIT_FLAGS = " ".join(f"--unit {u}" for u in UNITS if u != "versions-job.timer") + " --unit '*.timer'"
# Metrics whose values do not move between two ticks a moment apart (timestamps and ages do).
STABLE = ("systemd_unit_active", "systemd_unit_info", "systemd_unit_restart_count_total",
          "systemd_unit_last_exit_status")
PROPERTIES = "Id,LoadState,ActiveState,SubState,NRestarts,ExecMainStatus,LastTriggerUSec"


def sh(lab, host: str, command: str, **kwargs) -> str:
    return lab.ssh(host, command, **kwargs).stdout


def systemctl_show(lab, host: str, units) -> dict[str, dict[str, str]]:
    text = sh(lab, host, f"LC_ALL=C TZ=UTC systemctl show -p {PROPERTIES} -- {shlex.join(units)}")
    blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
              for block in text.strip().split("\n\n")]
    return {b["Id"]: b for b in blocks}


@pytest.fixture(scope="module", params=sorted(RELEASES))
def host(request, lab):
    """A lab host of each release with the heartbeat unpacked under /opt and the test units
    settled (the failed one failed, the timer fired once); all removed afterwards."""
    name = request.param
    if name == "lab-trixie1":
        request.getfixturevalue("trixie")  # boots Debian 13 on first use
    install_heartbeat(lab, name)  # heartbeat_archive() under /opt, run as PROGRAM
    script = [f"cat > /etc/systemd/system/{unit} <<'UNIT'\n{text}UNIT" for unit, text in UNITS.items()]
    sh(lab, name, "\n".join([*script, "systemctl daemon-reload",
                             "systemctl start --no-block versions-running.service versions-failed.service "
                             "versions-job.timer"]))
    deadline = time.monotonic() + 30
    while True:
        truth = systemctl_show(lab, name, UNITS)
        if (truth["versions-failed.service"]["ActiveState"] == "failed"
                and truth["versions-running.service"]["SubState"] == "running"
                and truth["versions-job.timer"]["LastTriggerUSec"] not in ("", "n/a")
                and truth["versions-job.service"]["ActiveState"] == "inactive"):
            break
        assert time.monotonic() < deadline, f"test units did not settle on {name}: {truth}"
        time.sleep(0.5)
    yield name
    units = shlex.join(UNITS)
    sh(lab, name, f"systemctl stop {units}; systemctl reset-failed {units}; cd /etc/systemd/system && "
                  f"rm -f {units}; systemctl daemon-reload; rm -rf /opt/systemd-heartbeat", check=False)


def parse(text: str) -> dict[tuple, float]:
    """--dry-run output: {(name, ((label, value), ...) sorted): value}."""
    samples = {}
    for line in text.splitlines():
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)))
        samples[(name, pairs)] = float(value)
    return samples


def dry_run(lab, host: str, user: str, source: str):
    """One --dry-run tick on the host: (samples, stderr); asserts it exited 0."""
    answer = lab.ssh(host, f"{AS_USER[user]} {PROGRAM} --dry-run --source {source} --host {host} "
                           f"--timeout 10 {UNIT_FLAGS}", check=False)
    assert answer.returncode == 0, answer.stderr
    return parse(answer.stdout), answer.stderr


def of_unit(samples: dict[tuple, float], name: str, unit: str) -> list[tuple[dict, float]]:
    return [(dict(labels), value) for (n, labels), value in samples.items()
            if n == name and dict(labels).get("unit") == unit]


def test_release_runs_its_own_systemd_python_and_bus(lab, host):
    release = RELEASES[host]
    assert sh(lab, host, "cat /etc/debian_version").startswith(release.debian + ".")
    assert int(sh(lab, host, "systemctl --version").split()[1]) == release.systemd
    python = sh(lab, host, "python3 -c 'import sys; print(*sys.version_info[:2], sep=\".\")'")
    assert python.strip() == release.python
    # The containers share the machine's network namespace, so ss lists every lab host's bus
    # socket; only this host's own has its processes named.
    sockets = [line for line in sh(lab, host, "ss -xlpH src /run/dbus/system_bus_socket").splitlines()
               if "users:" in line]
    assert len(sockets) == 1, sockets
    processes = set(re.findall(r'\("([^"]+)",pid=', sockets[0])) - {"systemd"}
    other = "dbus-daemon" if release.bus == "dbus-broker" else "dbus-broker"
    assert release.bus in processes and other not in processes, processes
    expected_id = "dbus-broker.service" if release.bus == "dbus-broker" else "dbus.service"
    assert sh(lab, host, "systemctl show -p Id --value dbus.service").strip() == expected_id


@pytest.mark.parametrize("user", sorted(AS_USER))
def test_dbus_and_systemctl_ticks_agree_with_systemctl_show(lab, host, user):
    """A tick read over D-Bus (no fallback warning) reports the same series as one read with
    systemctl, the same stable values, and those values are what `systemctl show` says."""
    for _ in range(6):  # a stand-in timer's job may run between the reads; read again then
        bus, errors = dry_run(lab, host, user, "dbus")
        systemctl, _ = dry_run(lab, host, user, "systemctl")
        truth = systemctl_show(lab, host, UNITS)
        differ = sorted(set(bus) ^ set(systemctl)) + [
            key for key in set(bus) & set(systemctl) if key[0] in STABLE and bus[key] != systemctl[key]]
        if not differ:
            break
        time.sleep(1)
    assert [line for line in errors.splitlines() if "warning" in line] == []  # D-Bus was read
    assert differ == []
    for unit, props in truth.items():
        active = of_unit(bus, "systemd_unit_active", unit)
        assert active == [({"unit": unit, "sub_state": props["SubState"], "host": host},
                           1.0 if props["ActiveState"] == "active" else 0.0)]
        (info, one), = of_unit(bus, "systemd_unit_info", unit)
        assert (info["load_state"], info["active_state"], info["sub_state"], one) == (
            props["LoadState"], props["ActiveState"], props["SubState"], 1.0)
        if unit.endswith(".service"):
            assert of_unit(bus, "systemd_unit_restart_count_total", unit)[0][1] == int(props["NRestarts"])
            assert of_unit(bus, "systemd_unit_last_exit_status", unit)[0][1] == int(props["ExecMainStatus"])
    assert (truth["versions-running.service"]["SubState"], truth["versions-failed.service"]["ActiveState"],
            truth["versions-failed.service"]["ExecMainStatus"], truth["versions-job.timer"]["SubState"]) == (
        "running", "failed", "7", "waiting")


def test_a_real_tick_reaches_victoriametrics(lab, host, victoria):
    label = f"{host}-debian-versions"  # a host label of its own: other tests query lab-host*
    before = time.time()
    answer = lab.ssh(host, f"{PROGRAM} --host {label} --url {victoria.otlp} --timeout 10 {UNIT_FLAGS}",
                     check=False)
    assert answer.returncode == 0, answer.stderr
    assert "warning" not in answer.stderr
    victoria.wait_for_push(label, before)
    failed = victoria.query(f'systemd_unit_active{{host="{label}",unit="versions-failed.service"}}')
    assert [(m["sub_state"], v) for m, v in failed] == [("failed", 0.0)]
    status = victoria.query(f'systemd_unit_last_exit_status{{host="{label}",unit="versions-failed.service"}}')
    assert [v for _, v in status] == [7.0]
    running = victoria.query(f'systemd_unit_active{{host="{label}",unit="versions-running.service"}}')
    assert [(m["sub_state"], v) for m, v in running] == [("running", 1.0)]
    assert victoria.query(f'systemd_heartbeat_up{{host="{label}"}}')[0][1] == 1.0

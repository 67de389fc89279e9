"""Failure history on real systemd (Debian 12: systemd 252; Debian 13: systemd 257), read by
the heartbeat as a clone runs it, pushed to the lab's VictoriaMetrics:

- the last exit status sticks while the next run of a crash loop is up (systemd resets it);
- the last failure time is kept across restarts and later runs, also for a failure that
  happened and was restarted between two ticks (seen only through NRestarts);
- the failure's reason (Result) and exit are reported, and a service systemd gave up
  restarting (StartLimitBurst= hit after exit 127) is marked as such;
- path, socket, mount and slice units report sensible values, and a socket that fails says why;
- with a state directory (what the bus spares itself depends on it), the D-Bus reader and
  systemctl still give the same series and values.
"""
from __future__ import annotations

import re
import shlex
import time

import pytest

from helpers import HEARTBEAT_ON_HOST as PROGRAM
from helpers import heartbeat_host
from lab import wait_until

pytestmark = pytest.mark.lab

HOSTS = ("lab-host1", "lab-trixie1")  # systemd 252 and 257 (test_debian_versions.RELEASES)
STATE = "/var/lib/history-test"
UNITS = {
    # a crash loop with time to see both states: runs 1 s, exits 3, restarted after 2 s
    "history-crash.service": "[Unit]\nStartLimitIntervalSec=0\n[Service]\n"
                             "ExecStart=/bin/sh -c 'sleep 1; exit 3'\nRestart=on-failure\nRestartSec=2\n",
    # restarted within a moment of each failure: ticks see it running, only NRestarts moves
    "history-quick.service": "[Unit]\nStartLimitIntervalSec=0\n[Service]\n"
                             "ExecStart=/bin/sh -c 'test -e /run/history-quick-ok && exec sleep infinity; "
                             "sleep 2; exit 5'\nRestart=on-failure\nRestartSec=100ms\n",
    # the owner's incident: the binary is gone (exit 127) until the start limit latches it
    "history-gone.service": "[Unit]\nStartLimitIntervalSec=60\nStartLimitBurst=3\n[Service]\n"
                            "ExecStart=/bin/sh -c 'exec /nonexistent/history-binary'\nRestart=on-failure\n"
                            "RestartSec=500ms\n",
    # the other unit types the owner allowlists
    "history-watch.path": "[Path]\nPathChanged=/run/history-watch\n",
    "history-watch.service": "[Service]\nType=oneshot\nExecStart=/bin/true\n",
    "history.socket": "[Socket]\nListenStream=127.0.0.1:45871\n",
    "history.service": "[Service]\nExecStart=/bin/true\n",
    "history-taken.socket": "[Socket]\nListenStream=127.0.0.1:45872\n",  # the port is taken: fails
    "history-taken.service": "[Service]\nExecStart=/bin/true\n",
    "run-history\\x2dmount.mount": "[Mount]\nWhat=tmpfs\nWhere=/run/history-mount\nType=tmpfs\n",
    "history.slice": "[Slice]\n",
    "history-in-slice.service": "[Service]\nSlice=history.slice\nExecStart=/bin/sleep infinity\n",
}
ALLOWLIST = ["history-crash", "history-quick", "history-gone.service", "history-watch.path", "history.socket",
             "history-taken.socket", "run-history\\x2dmount.mount", "history.slice"]
UNIT_FLAGS = " ".join(f"--unit {shlex.quote(name)}" for name in ALLOWLIST)


def sh(lab, host: str, command: str, **kwargs) -> str:
    return lab.ssh(host, command, **kwargs).stdout


def show(lab, host: str, unit: str, *props: str) -> dict[str, str]:
    text = sh(lab, host, f"LC_ALL=C TZ=UTC systemctl show -p {','.join(props)} -- {shlex.quote(unit)}")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def when(lab, host: str, unit: str, prop: str) -> float:
    """A timestamp property as Unix seconds (to the microsecond)."""
    return int(show(lab, host, unit, prop + "Monotonic")[prop + "Monotonic"]) / 1e6 + boot_offset(lab, host)


def boot_offset(lab, host: str) -> float:
    """Wall clock minus the host's monotonic clock (monotonic timestamps -> Unix seconds)."""
    return float(sh(lab, host, "python3 -c 'import time; print(time.time() - time.monotonic())'"))


@pytest.fixture(scope="module", params=HOSTS)
def host(request, lab):
    name = heartbeat_host(request, lab)
    script = ["set -e", f"rm -rf {STATE}; mkdir -p {STATE}; rm -f /run/history-quick-ok",
              # something else holds history-taken.socket's port
              "systemd-run -q --unit history-port-holder python3 -c 'import socket, time; s = socket.socket(); "
              "s.bind((\"127.0.0.1\", 45872)); s.listen(); time.sleep(3600)'", "sleep 0.5"]
    script += unit_files(UNITS) + [
        "systemctl daemon-reload",
        "systemctl start history-crash.service history-quick.service history-gone.service "
        "history-watch.path history.socket 'run-history\\x2dmount.mount' history-in-slice.service",
        "systemctl start history-taken.socket || true"]
    sh(lab, name, "\n".join(script))
    yield name
    remove_units(lab, name, UNITS, "history-port-holder.service",
                 also=f"{STATE} /run/history-quick-ok /run/history-watch")


def unit_files(units: dict[str, str]) -> list[str]:
    """Shell lines that write each unit file."""
    return [f"cat > {shlex.quote('/etc/systemd/system/' + unit)} <<'UNIT'\n{text}UNIT" for unit, text in units.items()]


def remove_units(lab, host: str, units: dict[str, str], *running: str, also: str) -> None:
    """Stop the units (and what else is running), forget them, remove their files and `also`."""
    names = " ".join(shlex.quote(unit) for unit in units)
    sh(lab, host, f"systemctl stop {names} {' '.join(running)}; systemctl reset-failed {names}; "
                  f"cd /etc/systemd/system && rm -f {names}; systemctl daemon-reload; rm -rf {also}", check=False)


def parse(text: str) -> dict[tuple, float]:
    samples = {}
    for line in text.splitlines():
        series, value = line.split("  #")[0].rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = tuple(sorted((key, re.sub(r"\\(.)", r"\1", text))  # label values as --dry-run escapes them
                             for key, text in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels)))
        samples[(name, pairs)] = float("nan") if value == "stale" else float(value)
    return samples


def tick(lab, host: str, victoria, watched: tuple[str, str, str] | None = None) -> dict[tuple, float]:
    """A real tick with the state directory, pushed; then what a dry run with the memory it
    left would push (this moment's samples, for the assertions). `watched`: the host label's
    suffix, the state directory and the unit flags, if not the module's."""
    suffix, state, flags = watched or ("history", STATE, UNIT_FLAGS)
    answer = lab.ssh(host, f"{PROGRAM} --host {host}-{suffix} --url {victoria.otlp} --state-dir {state} {flags}",
                     check=False)
    assert answer.returncode == 0, answer.stderr
    return dry_run(lab, host, watched=watched)[0]


def dry_run(lab, host: str, source: str = "dbus",
            watched: tuple[str, str, str] | None = None) -> tuple[dict[tuple, float], str]:
    suffix, state, flags = watched or ("history", STATE, UNIT_FLAGS)
    answer = lab.ssh(host, f"{PROGRAM} --host {host}-{suffix} --dry-run --state-dir {state} --source {source} {flags}",
                     check=False)
    assert answer.returncode == 0, answer.stderr
    return {k: v for k, v in parse(answer.stdout).items() if v == v}, answer.stderr


def value(samples: dict, name: str, unit: str, **labels) -> float | None:
    found = [v for (n, pairs), v in samples.items()
             if n == name and dict(pairs).get("unit") == unit and all(dict(pairs).get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, found
    return found[0] if found else None


def labels_of(samples: dict, name: str, unit: str) -> dict:
    found = [dict(pairs) for (n, pairs), _ in samples.items() if n == name and dict(pairs).get("unit") == unit]
    assert len(found) == 1, (name, unit, found)
    return found[0]


def test_exit_status_sticks_through_a_crash_loop(lab, host, victoria):
    """Ticks land while history-crash is running (systemd: ExecMainStatus=0) and while it waits
    to restart (3): every sample of the metric after the first failure says 3, in VictoriaMetrics."""
    label = f"{host}-history"
    states, start = [], time.time()
    for _ in range(40):  # a cycle is 3 s: more than three of them, ticks 0.7 s apart
        samples = tick(lab, host, victoria)
        states.append(show(lab, host, "history-crash.service", "SubState")["SubState"])
        if len(states) >= 12 and {"running", "auto-restart"} <= set(states[4:]):
            break
        time.sleep(0.7)
    assert {"running", "auto-restart"} <= set(states[4:]), states
    victoria.flush()
    values = victoria.raw_values(f'systemd_unit_last_exit_status{{host="{label}",unit="history-crash.service"}}',
                                 start)
    first = values.index(3.0)
    assert values[first:] == [3.0] * len(values[first:]) and len(values[first:]) >= 3, values
    (info,) = [dict(m) for m, _ in victoria.query(
        f'systemd_unit_last_failure_info{{host="{label}",unit="history-crash.service"}}')]
    assert (info["result"], info["exit_code"], info["exit_status"], info["gave_up"]) == ("exit-code", "exited", "3", "false")
    assert value(samples, "systemd_unit_last_exit_code", "history-crash.service") == 1


def test_a_failure_restarted_between_two_ticks_is_not_missed(lab, host, victoria):
    """history-quick runs 2 s, exits 5 and is back 100 ms later: tick, let it fail and restart
    unseen, tick: the last failure is the exit systemd recorded (ActiveExitTimestamp). Its
    reason and exit status systemd has already reset: the last ones seen stand, or unknown (README)."""
    def running_at_restarts():
        props = show(lab, host, "history-quick.service", "SubState", "NRestarts")
        return props["SubState"] == "running" and int(props["NRestarts"])

    before = wait_until("history-quick running", running_at_restarts, timeout=60, step=0.2)
    tick(lab, host, victoria)
    wait_until("an unseen restart", lambda: (running_at_restarts() or 0) > before, timeout=30, step=0.05)
    exited = when(lab, host, "history-quick.service", "ActiveExitTimestamp")
    samples = tick(lab, host, victoria)
    assert value(samples, "systemd_unit_last_failure_timestamp_seconds", "history-quick.service") == \
        pytest.approx(exited, abs=0.01)
    # it recovers (the next run stays up); the failure and its exit are kept
    sh(lab, host, "touch /run/history-quick-ok")
    fixed = time.time()
    wait_until("history-quick to stay up",
               lambda: running_at_restarts() is not False
               and when(lab, host, "history-quick.service", "ActiveEnterTimestamp") > fixed, timeout=30, step=0.2)
    later = tick(lab, host, victoria)
    assert value(later, "systemd_unit_last_failure_timestamp_seconds", "history-quick.service") >= exited - 0.01
    # its reason: the one a tick last caught while systemd showed it (the 100 ms before a restart),
    # else unknown
    reason = labels_of(later, "systemd_unit_last_failure_info", "history-quick.service")
    assert (reason["result"], reason["exit_code"], reason["exit_status"], reason["gave_up"]) in (
        ("unknown", "", "", "false"), ("exit-code", "exited", "5", "false"))
    # no exit was seen, unless a tick caught the moment systemd still shows it as the restart begins
    assert (value(later, "systemd_unit_last_exit_code", "history-quick.service"),
            value(later, "systemd_unit_last_exit_status", "history-quick.service")) in ((0, 0), (1, 5))


def test_a_service_systemd_gave_up_on_says_why_and_that_it_gave_up(lab, host, victoria):
    wait_until("history-gone to hit its start limit",
               lambda: show(lab, host, "history-gone.service", "ActiveState")["ActiveState"] == "failed",
               timeout=30, step=0.2)
    props = show(lab, host, "history-gone.service", "Result", "ExecMainStatus", "NRestarts", "SubState")
    # journald stores PID 1's entries a moment after the state changes (a CI run on 252 ticked
    # before it had the start limit's refusal): a tick then waits for the next one
    # (test_journal_events.py, waits_for_the_next_tick); this one ticks once they are stored
    last_run = show(lab, host, "history-gone.service", "InvocationID")["InvocationID"]
    wait_until("journald to store the start limit's refusal of the last run's restart",
               lambda: "Failed to start" in sh(lab, host, "journalctl --no-pager -o cat _PID=1 "
                                                          f"UNIT=history-gone.service INVOCATION_ID={last_run}"),
               timeout=30, step=0.2)
    samples = tick(lab, host, victoria)
    assert labels_of(samples, "systemd_unit_last_failure_info", "history-gone.service") == {
        "unit": "history-gone.service", "host": f"{host}-history", "result": props["Result"], "exit_code": "exited",
        "exit_status": "127", "gave_up": "true"}
    assert props["ExecMainStatus"] == "127" and props["SubState"] == "failed"
    # read from the journal: when its last run failed, not when the start limit then left it failed
    assert value(samples, "systemd_heartbeat_history_source", None, source="journal") == 1
    assert value(samples, "systemd_unit_last_failure_timestamp_seconds", "history-gone.service") == \
        pytest.approx(when(lab, host, "history-gone.service", "ExecMainExitTimestamp"), abs=0.1)
    assert value(samples, "systemd_unit_last_exit_status", "history-gone.service") == 127
    assert value(samples, "systemd_unit_restart_count_total", "history-gone.service") == int(props["NRestarts"])


def test_path_socket_mount_and_slice_units_report_sensible_values(lab, host, victoria):
    sh(lab, host, "touch /run/history-watch")  # the path unit triggers its service
    samples = tick(lab, host, victoria)
    for unit in ("history-watch.path", "history.socket", "run-history\\x2dmount.mount", "history.slice"):
        kind = unit.rsplit(".", 1)[1]
        props = show(lab, host, unit, "ActiveState", "SubState", "StateChangeTimestamp", "ActiveEnterTimestamp")
        assert props["ActiveState"] == "active", (unit, props)
        assert value(samples, "systemd_unit_active", unit, sub_state=props["SubState"]) == 1.0
        assert labels_of(samples, "systemd_unit_info", unit)["unit_type"] == kind
        assert value(samples, "systemd_unit_seconds_since_active", unit) == 0.0
        assert value(samples, "systemd_unit_active_enter_timestamp_seconds", unit) == \
            pytest.approx(when(lab, host, unit, "ActiveEnterTimestamp"), abs=0.01)
        for name in ("systemd_unit_restart_count_total", "systemd_unit_last_exit_status",
                     "systemd_unit_last_failure_timestamp_seconds"):
            assert value(samples, name, unit) is None, (name, unit)  # services only; never failed
    # a socket whose port is taken fails, and says why
    props = show(lab, host, "history-taken.socket", "ActiveState", "Result")
    assert props["ActiveState"] == "failed"
    assert labels_of(samples, "systemd_unit_last_failure_info", "history-taken.socket")["result"] == props["Result"]
    # an unmounted mount counts from when it stopped being active
    sh(lab, host, "systemctl stop 'run-history\\x2dmount.mount'")
    stopped = when(lab, host, "run-history\\x2dmount.mount", "ActiveExitTimestamp")
    samples = tick(lab, host, victoria)
    assert value(samples, "systemd_unit_active", "run-history\\x2dmount.mount", sub_state="dead") == 0.0
    assert 0 <= value(samples, "systemd_unit_seconds_since_active", "run-history\\x2dmount.mount") <= \
        time.time() - stopped + 1


def test_dbus_and_systemctl_agree_with_the_same_memory(lab, host, victoria):
    """With a state directory the bus asks less (history.py); the values are the same."""
    tick(lab, host, victoria)
    for _ in range(8):  # the crash loops move between the two reads: read again then
        bus, errors = dry_run(lab, host, "dbus")
        systemctl, _ = dry_run(lab, host, "systemctl")
        differ = sorted(set(bus) ^ set(systemctl))
        for key in set(bus) & set(systemctl):
            tolerance = 1.0 if "timestamp" in key[0] else 2.0 if "seconds_since" in key[0] else 0.0
            if "collect_duration" not in key[0] and abs(bus[key] - systemctl[key]) > tolerance:
                differ.append((key, bus[key], systemctl[key]))
        if not differ:
            break
        time.sleep(0.5)
    assert differ == []
    assert "warning" not in errors
    assert value(bus, "systemd_unit_last_failure_timestamp_seconds", "history-gone.service") is not None


QUEUED = {
    # runs 1 s, exits 5, restarted 1 s later, but its restart waits for history-blocker's start
    # job when one is queued (After=): systemd >= 254 shows it auto-restart-queued meanwhile
    "history-queued.service": "[Unit]\nStartLimitIntervalSec=0\nAfter=history-blocker.service\n[Service]\n"
                              "ExecStart=/bin/sh -c 'sleep 1; exit 5'\nRestart=on-failure\nRestartSec=1\n",
    "history-blocker.service": "[Service]\nType=oneshot\nExecStart=/bin/sleep 4\n",
}


def test_a_restart_counted_while_queued_is_not_taken_for_the_next_failure(lab, host, victoria):
    """systemd >= 254 counts a restart (NRestarts) when it queues its job: a tick that sees the
    unit auto-restart-queued sees the count with it. A failure and restart before the next tick
    rise the count by one more: a failure the next tick reports (a CI run on 257 missed one, its
    tick having landed in that state by chance)."""
    if int(sh(lab, host, "systemctl --version").split()[1]) < 254:
        pytest.skip("auto-restart-queued is systemd >= 254's")
    watched = ("queued", STATE + "-queued", "--unit history-queued.service")
    script = [f"rm -rf {watched[1]}; mkdir -p {watched[1]}"] + unit_files(QUEUED)
    sh(lab, host, "\n".join(script + ["systemctl daemon-reload", "systemctl start history-queued.service"]))
    try:
        wait_until("history-queued waiting to restart",
                   lambda: show(lab, host, "history-queued.service", "SubState")["SubState"] == "auto-restart",
                   timeout=30, step=0.05)
        sh(lab, host, "systemctl start --no-block history-blocker.service")
        wait_until("its restart queued behind history-blocker", lambda: show(
            lab, host, "history-queued.service", "SubState")["SubState"] == "auto-restart-queued", timeout=10, step=0.05)
        counted = int(show(lab, host, "history-queued.service", "NRestarts")["NRestarts"])
        first = tick(lab, host, victoria, watched)
        assert show(lab, host, "history-queued.service", "SubState")["SubState"] == "auto-restart-queued", \
            "the tick did not land while the restart was queued"
        # the queued restart runs once history-blocker is done, fails 1 s later and is restarted
        wait_until("a failure and restart after the tick", lambda: int(show(
            lab, host, "history-queued.service", "NRestarts")["NRestarts"]) > counted, timeout=30, step=0.05)
        exited = when(lab, host, "history-queued.service", "ActiveExitTimestamp")
        later = tick(lab, host, victoria, watched)
        last_exit = when(lab, host, "history-queued.service", "ActiveExitTimestamp")
        failed_at = "systemd_unit_last_failure_timestamp_seconds"
        assert value(later, failed_at, "history-queued.service") > value(first, failed_at, "history-queued.service")
        # that failure, or (on a slow machine, the unit failing every 2 s) one systemd logged after it
        # and before the tick read it: never one before it
        assert exited - 0.01 <= value(later, failed_at, "history-queued.service") <= last_exit + 0.01
    finally:
        remove_units(lab, host, QUEUED, also=watched[1])

"""Failures as systemd recorded them (issue 20), on real systemd 252 (Debian 12) and 257 (Debian
13): the heartbeat reads the journal for the units that moved between two ticks.

Every unit here logs each run itself (`start`/`exit STATUS` with the time, to the microsecond,
into /run/events-test/UNIT.log) before systemd sees the exit. The expected counts, reasons,
exit statuses and times come from those logs and from what the test did to the unit (killed
it, stopped it), never from the heartbeat's reading. All cases run between two ticks, so every
failure here happens where a 30 s tick is blind: between two looks.
"""
from __future__ import annotations

import shlex

import pytest

from helpers import HEARTBEAT_ON_HOST as PROGRAM
from helpers import heartbeat_host
from lab import wait_until
from test_failure_history import dry_run, remove_units, sh, show, unit_files, value

pytestmark = pytest.mark.lab

HOSTS = ("lab-host1", "lab-trixie1")
STATE = "/var/lib/events-test"
LOGS = "/run/events-test"


SCRIPTS = "/usr/local/lib/events-test"
# Each run logs itself: "start TIME", "exit STATUS TIME" (µs), into LOGS/UNIT.log. Scripts, not
# shell in ExecStart=, which systemd would expand ($, %) and unquote first.
SCRIPT_FILES = {
    # run.sh STATUS SECONDS UNIT: a run that lives SECONDS, then exits STATUS
    "run.sh": f'log={LOGS}/$3.log\necho "start $(date +%s%6N)" >> $log\nsleep $2\n'
              f'echo "exit $1 $(date +%s%6N)" >> $log\nexit $1\n',
    # jvm.sh UNIT: runs until SIGTERM, then exits 143 (as a JVM does when an admin stops it)
    "jvm.sh": f'log={LOGS}/$1.log\necho "start $(date +%s%6N)" >> $log\n'
              f'trap \'echo "exit 143 $(date +%s%6N)" >> $log; exit 143\' TERM\nwhile :; do sleep 0.1; done\n',
    # sleeper.sh UNIT: runs until it is killed (SIGTERM, as a stop sends it, is a clean end)
    "sleeper.sh": f'echo "start $(date +%s%6N)" >> {LOGS}/$1.log\nexec sleep infinity\n',
    # killed.sh SECONDS UNIT: a run that lives SECONDS, then SIGKILLs itself (Result=signal;
    # SIGTERM would be a clean end for systemd)
    "killed.sh": f'log={LOGS}/$2.log\necho "start $(date +%s%6N)" >> $log\nsleep $1\n'
                 f'echo "signal 9 $(date +%s%6N)" >> $log\nkill -KILL $$\n',
    # job.sh UNIT: a timer's job whose 2nd run exits 1
    "job.sh": f'log={LOGS}/$1.log\nn=$(($(cat {LOGS}/job-n 2>/dev/null || echo 0) + 1)); echo $n > {LOGS}/job-n\n'
              f'echo "start $(date +%s%6N)" >> $log\ns=0; [ $n = 2 ] && s=1\necho "exit $s $(date +%s%6N)" >> $log\n'
              f'exit $s\n',
}


def run(status: int, seconds: float = 0.3) -> str:
    """ExecStart= of a run that logs its start, lives `seconds`, logs its exit and exits `status`."""
    return f"{SCRIPTS}/run.sh {status} {seconds} %n"


def killed(seconds: float = 0.1) -> str:
    """ExecStart= of a run that logs its start, lives `seconds`, logs "signal 9" and SIGKILLs itself."""
    return f"{SCRIPTS}/killed.sh {seconds} %n"


START_LIMIT = "StartLimitIntervalSec=60\nStartLimitBurst=3"


def unit(service: str, start_limit: str = "StartLimitIntervalSec=0") -> str:
    """Enabled (as load-bearing units are): systemd unloads a unit that nothing wants once it is
    inactive, and with it NRestarts and its timestamps, the traces a tick compares."""
    return f"[Unit]\n{start_limit}\n[Service]\n{service}\n[Install]\nWantedBy=multi-user.target\n"


def enable(units: dict) -> str:
    return "systemctl enable -q " + " ".join(name for name in units if name.endswith(".service"))


def disable(lab, host: str, units: dict) -> None:
    sh(lab, host, "systemctl disable -q " + " ".join(units), check=False)


def install_scripts() -> list[str]:
    writes = [f"cat > {SCRIPTS}/{name} <<'SCRIPT'\n#!/bin/sh\n{text}SCRIPT\nchmod 755 {SCRIPTS}/{name}"
              for name, text in SCRIPT_FILES.items()]
    return [f"mkdir -p {SCRIPTS}"] + writes


# Every Restart= value under the same start limit (3 starts in 60 s), with a run's end it restarts
# after, or one it does not (systemd's service_shall_restart(): on-abnormal restarts after all but
# a clean exit and exit-code; on-abort after signal and core-dump only; on-watchdog after the
# watchdog only; on-success after a clean exit only; no never). unit: (its [Service], restarted)
WATCHDOG = f"ExecStart={SCRIPTS}/sleeper.sh %n\nWatchdogSec=1"  # killed by SIGABRT 1 s after each start
RESTART_POLICIES = {
    "events-limit-abnormal.service": (f"ExecStart={killed()}\nRestart=on-abnormal\nRestartSec=200ms", True),
    "events-limit-abort.service": (f"ExecStart={killed()}\nRestart=on-abort\nRestartSec=200ms", True),
    "events-limit-onwatchdog.service": (f"{WATCHDOG}\nRestart=on-watchdog\nRestartSec=200ms", True),
    "events-limit-alwayskilled.service": (f"ExecStart={killed()}\nRestart=always\nRestartSec=200ms", True),
    # RestartForceExitStatus= restarts what on-abort would not
    "events-limit-forced.service": (f"ExecStart={run(1, 0.1)}\nRestart=on-abort\nRestartSec=200ms\n"
                                    "RestartForceExitStatus=1", True),
    "events-abnormal-exit.service": (f"ExecStart={run(1, 0.1)}\nRestart=on-abnormal\nRestartSec=200ms", False),
    "events-abort-exit.service": (f"ExecStart={run(1, 0.1)}\nRestart=on-abort\nRestartSec=200ms", False),
    "events-abort-watchdog.service": (f"{WATCHDOG}\nRestart=on-abort\nRestartSec=200ms", False),
    "events-onwatchdog-killed.service": (f"ExecStart={killed()}\nRestart=on-watchdog\nRestartSec=200ms", False),
    "events-onsuccess-exit.service": (f"ExecStart={run(1, 0.1)}\nRestart=on-success\nRestartSec=200ms", False),
    "events-no-exit.service": (f"ExecStart={run(1, 0.1)}\nRestart=no", False),
}

UNITS = {
    # Restart=on-failure, RestartSec=1: a crash loop of 1.3 s per run, ~6 failures between ticks
    "events-loop.service": unit(f"ExecStart={run(3)}\nRestart=on-failure\nRestartSec=1"),
    # Restart=always: every failure counted, the restarts are not what is counted
    "events-always.service": unit(f"ExecStart={run(4)}\nRestart=always\nRestartSec=1"),
    # Restart=always of clean exits: restarts, no failure
    "events-clean.service": unit(f"ExecStart={run(0)}\nRestart=always\nRestartSec=1"),
    # ssh.service's pattern: 255 is not restarted
    "events-prevent.service": unit(f"ExecStart={run(255)}\nRestart=on-failure\nRestartPreventExitStatus=255"),
    # a clean exit (7 made successful) that systemd restarts: no failure
    "events-force.service": unit(f"ExecStart={run(7)}\nRestart=on-failure\nRestartSec=1\nSuccessExitStatus=7\n"
                                 "RestartForceExitStatus=7"),
    # 42 counts as success: no failure, not restarted
    "events-success.service": unit(f"ExecStart={run(42)}\nRestart=on-failure\nSuccessExitStatus=42"),
    # a JVM-like service that exits 143 when an admin stops it
    "events-jvm.service": unit(f"ExecStart={SCRIPTS}/jvm.sh %n\nRestart=on-failure"),
    # the start limit under each Restart= policy that restarts after a failure
    "events-limit-failure.service": unit(f"ExecStart={run(5, 0.1)}\nRestart=on-failure\nRestartSec=200ms",
                                         START_LIMIT),
    "events-limit-always.service": unit(f"ExecStart={run(5, 0.1)}\nRestart=always\nRestartSec=200ms",
                                        START_LIMIT),
    # clean runs restarted until the start limit: Result=start-limit-hit
    "events-limit-success.service": unit(f"ExecStart={run(0, 0.1)}\nRestart=on-success\nRestartSec=200ms",
                                         START_LIMIT),
    # Restart=no, started by hand until the start limit refuses the 4th start (the test does it)
    "events-limit-no.service": unit(f"ExecStart={run(5, 0.1)}", START_LIMIT),
    **{name: unit(service, START_LIMIT) for name, (service, _) in RESTART_POLICIES.items()},
    # never pings its watchdog: killed with SIGABRT 1 s after each start, restarted 1 s later
    "events-watchdog.service": unit(f"ExecStart={SCRIPTS}/sleeper.sh %n\nWatchdogSec=1\nRestart=on-failure\n"
                                    "RestartSec=1"),
    # killed by a signal by the test, restarted
    "events-killed.service": unit("ExecStart=/bin/sleep infinity\nRestart=on-failure\nRestartSec=500ms"),
    # TimeoutStartSec= of a oneshot: Result=timeout
    "events-timeout.service": unit("Type=oneshot\nExecStart=/bin/sleep 10\nTimeoutStartSec=1"),
    # a oneshot job of a timer whose 2nd run fails
    "events-job.service": unit(f"Type=oneshot\nExecStart={SCRIPTS}/job.sh %n"),
    "events-job.timer": "[Timer]\nOnActiveSec=0\nOnUnitActiveSec=1s\nAccuracySec=1ms\n",
}
ALLOWLIST = [name for name in UNITS if name.endswith(".service")] + ["events-job.timer"]
FLAGS = " ".join(f"--unit {shlex.quote(name)}" for name in ALLOWLIST)


@pytest.fixture(scope="module", params=HOSTS)
def host(request, lab):
    name = heartbeat_host(request, lab)
    sh(lab, name, "\n".join(["set -e", f"rm -rf {STATE} {LOGS}; mkdir -p {STATE} {LOGS}"] + install_scripts()
                            + unit_files(UNITS) + ["systemctl daemon-reload", enable(UNITS)]))
    yield name
    disable(lab, name, UNITS)
    remove_units(lab, name, UNITS, also=f"{STATE} {LOGS} {SCRIPTS}")


def tick(lab, host: str, user: str = "") -> str:
    """One tick with the state directory, pushing nowhere (the push fails: spooled); stderr."""
    prefix = f"runuser -u {user} -- " if user else ""
    answer = lab.ssh(host, f"{prefix}{PROGRAM} --host events --url http://127.0.0.1:9/x --state-dir {STATE} "
                           f"{FLAGS}", check=False)
    assert answer.returncode == 1 and "Connection refused (spooled" in answer.stderr, answer.stderr
    return answer.stderr


def runs(lab, host: str, unit_name: str) -> list[tuple[str, int, float]]:
    """What the unit logged itself: ("start"|"exit"|"signal", status or signal, Unix seconds)."""
    text = sh(lab, host, f"cat {LOGS}/{unit_name}.log 2>/dev/null || true")
    return [(w[0], int(w[1]) if w[0] != "start" else 0, int(w[-1]) / 1e6)
            for w in (line.split() for line in text.splitlines()) if w]


def failures(samples: dict, unit_name: str) -> dict[str, float]:
    return {dict(pairs)["result"]: v for (n, pairs), v in samples.items()
            if n == "systemd_unit_failures_total" and dict(pairs)["unit"] == unit_name}


def info(samples: dict, unit_name: str) -> dict:
    found = [dict(pairs) for (n, pairs), _ in samples.items()
             if n == "systemd_unit_last_failure_info" and dict(pairs)["unit"] == unit_name]
    return found[0] if found else {}


def settled(lab, host: str, unit_name: str) -> bool:
    state = show(lab, host, unit_name, "ActiveState")
    return state["ActiveState"] in ("failed", "inactive") and not sh(lab, host, f"systemctl list-jobs --no-legend {unit_name}")


@pytest.fixture(scope="module")
def between_two_ticks(lab, host):
    """The first tick sees every unit before anything happens; then each case runs; then the
    second tick, and what it would push (a dry run with the memory it left)."""
    sh(lab, host, "systemctl start events-jvm.service events-killed.service")
    tick(lab, host)
    sh(lab, host, "systemctl start --no-block events-loop.service events-always.service events-clean.service "
                  "events-prevent.service events-force.service events-success.service events-limit-failure.service "
                  "events-limit-always.service events-limit-success.service events-timeout.service events-job.timer "
                  + " ".join(RESTART_POLICIES))
    for _ in range(4):  # Restart=no: three runs by hand, the 4th start refused by the start limit
        sh(lab, host, "systemctl start events-limit-no.service; sleep 0.3", check=False)
    for _ in range(2):  # two kills, each restarted 0.5 s later
        wait_until("events-killed running", lambda: show(lab, host, "events-killed.service", "SubState")["SubState"]
                   == "running", timeout=10, step=0.1)
        sh(lab, host, "systemctl kill -s KILL events-killed.service")
        wait_until("events-killed restarting", lambda: show(lab, host, "events-killed.service", "SubState")["SubState"]
                   != "running", timeout=10, step=0.05)
    wait_until("4 runs of the timer's job", lambda: len([r for r in runs(lab, host, "events-job.service")
                                                         if r[0] == "exit"]) >= 4, timeout=30, step=0.2)
    sh(lab, host, "systemctl stop events-job.timer")
    wait_until("5 failures of the crash loops", lambda: all(
        len([r for r in runs(lab, host, u) if r[0] == "exit"]) >= 5 for u in ("events-loop.service",
                                                                              "events-always.service")),
        timeout=40, step=0.2)
    sh(lab, host, "systemctl start --no-block events-watchdog.service")
    wait_until("the watchdog's 3rd run", lambda: len(runs(lab, host, "events-watchdog.service")) >= 3, timeout=30,
               step=0.05)
    sh(lab, host, "systemctl stop events-watchdog.service")  # 2 watchdog failures, the 3rd run stopped
    sh(lab, host, "systemctl stop events-jvm.service events-loop.service events-always.service "
                  "events-clean.service events-force.service events-killed.service")
    for name in ("events-limit-failure.service", "events-limit-always.service", "events-limit-success.service",
                 "events-timeout.service", "events-prevent.service", "events-jvm.service", "events-limit-no.service",
                 "events-watchdog.service", *RESTART_POLICIES):
        wait_until(f"{name} settled", lambda: settled(lab, host, name), timeout=30, step=0.2)
    errors = tick(lab, host)
    return dry_run(lab, host, watched=("events", STATE, FLAGS))[0], errors


def test_every_failure_between_two_ticks_is_counted_with_its_reason(lab, host, between_two_ticks):
    samples, errors = between_two_ticks
    assert "inferred" not in errors, errors
    assert value(samples, "systemd_heartbeat_history_source", None, source="journal") == 1
    for name in ("events-loop.service", "events-always.service", "events-prevent.service",
                 "events-limit-failure.service", "events-limit-always.service", "events-limit-no.service"):
        exits = [r for r in runs(lab, host, name) if r[0] == "exit"]
        assert failures(samples, name) == {"exit-code": len(exits)}, name
        last = info(samples, name)
        assert (last["result"], last["exit_code"], last["exit_status"]) == ("exit-code", "exited", str(exits[-1][1]))
        at = value(samples, "systemd_unit_last_failure_timestamp_seconds", name)
        assert abs(at - exits[-1][2]) < 0.1, (name, at, exits[-1])


def test_clean_exits_are_not_failures_whatever_restarts_them(lab, host, between_two_ticks):
    samples, _ = between_two_ticks
    for name in ("events-clean.service", "events-force.service", "events-success.service"):
        assert [r for r in runs(lab, host, name) if r[0] == "exit"], f"{name} never ran"
        assert failures(samples, name) == {}, name
        assert info(samples, name) == {}, name


def test_systemd_gave_up_only_when_its_start_limit_refused_a_restart(lab, host, between_two_ticks):
    samples, _ = between_two_ticks
    assert info(samples, "events-limit-failure.service")["gave_up"] == "true"
    assert info(samples, "events-limit-always.service")["gave_up"] == "true"
    assert info(samples, "events-limit-no.service")["gave_up"] == "true"  # it refused the admin's 4th start
    limit_success = info(samples, "events-limit-success.service")
    assert (limit_success["result"], limit_success["gave_up"]) == ("start-limit-hit", "true")
    assert failures(samples, "events-limit-success.service") == {"start-limit-hit": 1}
    # RestartPreventExitStatus= and an admin stop are no give-up, though the unit stays failed
    assert info(samples, "events-prevent.service")["gave_up"] == "false"
    jvm = info(samples, "events-jvm.service")
    assert (jvm["result"], jvm["exit_status"], jvm["gave_up"]) == ("exit-code", "143", "false")
    assert failures(samples, "events-jvm.service") == {"exit-code": 1}


def test_each_restart_policy_gives_up_only_when_its_start_limit_refused_a_restart(lab, host, between_two_ticks):
    """Every Restart= value, with a run's end it restarts after (3 runs, then the start limit
    refuses the 4th start: systemd gave up) and one it does not restart after (1 run, failed
    by its policy: no give-up). Each run counted once, with the end the test gave it."""
    samples, _ = between_two_ticks
    for name, (service, restarted) in RESTART_POLICIES.items():
        logged = runs(lab, host, name)
        starts = [r for r in logged if r[0] == "start"]
        assert len(starts) == (3 if restarted else 1), (name, logged)  # StartLimitBurst=3, or not restarted
        assert show(lab, host, name, "ActiveState")["ActiveState"] == "failed", name
        result, exit_code, status = (("watchdog", "killed", "6") if "WatchdogSec" in service  # SIGABRT
                                     else ("signal", "killed", "9") if "killed.sh" in service
                                     else ("exit-code", "exited", "1"))
        assert failures(samples, name) == {result: len(starts)}, name
        assert info(samples, name) == {"unit": name, "host": f"{host}-events", "result": result, "exit_code": exit_code,
                                       "exit_status": status, "gave_up": "true" if restarted else "false"}, name
        ends = [r for r in logged if r[0] != "start"]
        if ends:  # the watchdog's runs are killed by systemd: no end of their own in the log
            at = value(samples, "systemd_unit_last_failure_timestamp_seconds", name)
            assert abs(at - ends[-1][2]) < 0.1, (name, at, ends[-1])


def test_signal_timeout_and_a_timer_job(lab, host, between_two_ticks):
    samples, _ = between_two_ticks
    assert failures(samples, "events-killed.service") == {"signal": 2}  # the test killed it twice
    killed = info(samples, "events-killed.service")
    assert (killed["exit_code"], killed["exit_status"]) == ("killed", "9")
    assert failures(samples, "events-timeout.service") == {"timeout": 1}
    watchdog = [r for r in runs(lab, host, "events-watchdog.service") if r[0] == "start"]
    assert len(watchdog) == 3 and failures(samples, "events-watchdog.service") == {"watchdog": 2}
    assert (info(samples, "events-watchdog.service")["exit_code"], info(samples, "events-watchdog.service")["exit_status"]) \
        == ("killed", "6")  # SIGABRT
    job = runs(lab, host, "events-job.service")
    failed = [r for r in job if r[0] == "exit" and r[1] != 0]
    assert len(failed) == 1 and failures(samples, "events-job.service") == {"exit-code": 1}
    assert abs(value(samples, "systemd_unit_last_failure_timestamp_seconds", "events-job.service") - failed[0][2]) < 0.1


def test_an_admin_restart_that_cancels_a_pending_restart(lab, host):
    """A failure, systemd's restart pending for 5 s, an admin restart, and the next run fails
    before any tick: both failures counted, the last one at its own exit."""
    name = "events-pending.service"
    units = {name: unit(f"ExecStart={run(6)}\nRestart=on-failure\nRestartSec=5")}
    sh(lab, host, "\n".join(unit_files(units) + ["systemctl daemon-reload", enable(units)]))
    try:
        flags = f"--unit {name}"
        state = STATE + "-pending"
        sh(lab, host, f"rm -rf {state}; mkdir -p {state}")
        lab.ssh(host, f"{PROGRAM} --host events --url http://127.0.0.1:9/x --state-dir {state} {flags}", check=False)
        sh(lab, host, f"systemctl start {name}")
        wait_until("waiting for its restart", lambda: show(lab, host, name, "SubState")["SubState"] == "auto-restart",
                   timeout=10, step=0.05)
        sh(lab, host, f"systemctl restart {name}")
        wait_until("the second run exited", lambda: len([r for r in runs(lab, host, name) if r[0] == "exit"]) == 2,
                   timeout=10, step=0.05)
        lab.ssh(host, f"{PROGRAM} --host events --url http://127.0.0.1:9/x --state-dir {state} {flags}", check=False)
        samples = dry_run(lab, host, watched=("events", state, flags))[0]
        exits = [r for r in runs(lab, host, name) if r[0] == "exit"]
        assert failures(samples, name) == {"exit-code": 2}
        assert abs(value(samples, "systemd_unit_last_failure_timestamp_seconds", name) - exits[-1][2]) < 0.1
    finally:
        disable(lab, host, units)
        remove_units(lab, host, units, also=f"{STATE}-pending")


def test_without_the_journal_the_failures_are_inferred_and_say_so(lab, host):
    """A user who may not read the journal (nobody, without the systemd-journal group): the tick
    still pushes, the failures are inferred, and systemd_heartbeat_history_source says so."""
    name = "events-unread.service"
    units = {name: unit(f"ExecStart={run(3)}\nRestart=on-failure\nRestartSec=1")}
    state = "/tmp/events-unread"
    sh(lab, host, "\n".join(unit_files(units) + ["systemctl daemon-reload", enable(units), f"rm -rf {state}",
                                                 f"install -d -o nobody {state}"]))
    try:
        flags = f"--unit {name}"
        command = f"runuser -u nobody -- {PROGRAM} --host events --url http://127.0.0.1:9/x --state-dir {state} {flags}"
        lab.ssh(host, command, check=False)
        sh(lab, host, f"systemctl start {name}")
        wait_until("two failures", lambda: len([r for r in runs(lab, host, name) if r[0] == "exit"]) >= 2,
                   timeout=20, step=0.1)
        answer = lab.ssh(host, command, check=False)
        assert "Connection refused (spooled" in answer.stderr and "inferred" not in answer.stderr, answer.stderr
        shown = lab.ssh(host, f"runuser -u nobody -- {PROGRAM} --host events --dry-run --state-dir {state} {flags}",
                        check=False).stdout
        assert 'systemd_heartbeat_history_source{host="events",source="inferred"} 1' in shown
        assert f'systemd_unit_failures_total{{unit="{name}",host="events",result=' in shown
    finally:
        disable(lab, host, units)
        remove_units(lab, host, units, also=state)

"""Can this timer be trusted (issue 21), on real systemd 252 (Debian 12) and 257 (Debian 13):
a timer's triggers, how late each came, and its service's runs by outcome, read by the heartbeat
as a clone runs it (D-Bus, the journal, a state directory) and pushed to the lab's
VictoriaMetrics.

Each job logs its own runs (`start TIME`, `exit STATUS TIME`, µs) into /run/trust-test/UNIT.log.
The expected counts, outcomes and lateness come from those logs, from the timer settings the test
wrote and from when the test stopped and started the timer; never from the heartbeat's reading.
"""
from __future__ import annotations

import math
import shlex
import time

import pytest

from helpers import heartbeat_host
from lab import wait_until
from test_failure_history import remove_units, sh, tick, unit_files, value

pytestmark = pytest.mark.lab

HOSTS = ("lab-host1", "lab-trixie1")  # systemd 252 and 257
STATE = "/var/lib/trust-test"
LOGS = "/run/trust-test"
JOB = "/usr/local/lib/trust-test/job.sh"
FAILING_RUN = 3  # the fast job's 3rd run exits 1 (the job counts its own runs)
# job.sh UNIT FAILING_RUN: logs its start, exits 1 on its FAILING_RUN-th run (0: never), else 0
JOB_SCRIPT = (f'log={LOGS}/$1.log; n=$(($(grep -c ^start $log 2>/dev/null || echo 0) + 1))\n'
              'echo "start $(date +%s%6N)" >> $log\ns=0; [ "$n" = "$2" ] && s=1\n'
              'echo "exit $s $(date +%s%6N)" >> $log\nexit $s\n')
# Enabled, as a host's timers are: systemd unloads a stopped timer nothing wants, and with it its
# LastTriggerUSec (a timer stopped between two ticks would then show nothing of its last runs)
INSTALL = "[Install]\nWantedBy=timers.target\n"
UNITS = {
    # fires 1 s after it starts, then 2 s after each run began: many triggers between two ticks
    "trust-fast.timer": "[Timer]\nOnActiveSec=1s\nOnUnitActiveSec=2s\nAccuracySec=1ms\n" + INSTALL,
    "trust-fast.service": f"[Service]\nType=oneshot\nExecStart={JOB} %n {FAILING_RUN}\n",
    # a calendar timer every 10 s that catches up what it missed while it was not running
    "trust-calendar.timer": "[Timer]\nOnCalendar=*:*:0/10\nAccuracySec=1ms\nPersistent=true\n" + INSTALL,
    "trust-calendar.service": f"[Service]\nType=oneshot\nExecStart={JOB} %n 0\n",
}
TIMERS = " ".join(name for name in UNITS if name.endswith(".timer"))
FLAGS = " ".join(f"--unit {shlex.quote(name)}" for name in UNITS)


WATCHED = ("trust", STATE, FLAGS)  # the host label's suffix, the state directory, the units


@pytest.fixture(scope="module", params=HOSTS)
def host(request, lab):
    name = heartbeat_host(request, lab)
    sh(lab, name, "\n".join(["set -e", f"rm -rf {STATE} {LOGS}; mkdir -p {STATE} {LOGS} {JOB.rsplit('/', 1)[0]}",
                             f"cat > {JOB} <<'SCRIPT'\n#!/bin/sh\n{JOB_SCRIPT}SCRIPT\nchmod 755 {JOB}",
                             "rm -f /var/lib/systemd/timers/stamp-trust-*"]
                            + unit_files(UNITS) + ["systemctl daemon-reload", f"systemctl disable -q {TIMERS}"]))
    yield name
    sh(lab, name, f"systemctl disable -q {TIMERS}", check=False)
    remove_units(lab, name, UNITS, also=f"{STATE} {LOGS} {JOB.rsplit('/', 1)[0]}")


def runs(lab, host: str, unit: str) -> tuple[list[float], list[tuple[int, float]]]:
    """(start times, (exit status, time) of each exit) from the job's own log."""
    lines = sh(lab, host, f"cat {LOGS}/{unit}.log 2>/dev/null || true").splitlines()
    starts = [int(line.split()[1]) / 1e6 for line in lines if line.startswith("start ")]
    exits = [(int(line.split()[1]), int(line.split()[2]) / 1e6) for line in lines if line.startswith("exit ")]
    return starts, exits


def settled(lab, host: str, unit: str) -> bool:
    """Its job is not running (a oneshot's run ends when its start job does)."""
    return sh(lab, host, f"systemctl is-active {unit}", check=False).strip() != "activating"


def last_stored(victoria, match: str) -> float:
    """The newest sample VictoriaMetrics holds of the series (NaN: a staleness marker); a push
    is searchable a moment after it is answered, so callers wait for the value they expect."""
    victoria.flush()
    values = victoria.raw_values(match)
    return values[-1] if values else float("nan")


def clear_of_a_mark(lab) -> None:
    """Wait until the next 10 s mark is 4-9 s away: a tick then sees it ahead, and there is
    time to act before it."""
    wait_until("a moment clear of a 10 s mark", lambda: 1 <= time.time() % 10 <= 6, timeout=15, step=0.1)


def test_a_timer_that_fires_every_two_seconds(lab, host, victoria):
    """Ticks 10 s apart see several triggers each: every trigger counted (the journal's starts
    of its service), every run by outcome, the first trigger after each tick timed against the
    elapse that tick saw (AccuracySec=1ms: on time, within the 0.1 s a run takes to log)."""
    timer, service = "trust-fast.timer", "trust-fast.service"
    tick(lab, host, victoria, WATCHED)  # the first look, before the timer runs
    sh(lab, host, f"systemctl enable -q --now {timer}")
    started = time.time()
    first = tick(lab, host, victoria, WATCHED)
    assert value(first, "systemd_timer_triggers_total", timer) == 0
    wait_until("five runs", lambda: len(runs(lab, host, service)[1]) >= 5, timeout=30, step=0.5)
    # between two runs: a timer whose service runs still shows the elapse that started it
    wait_until("a run to end", lambda: settled(lab, host, service), timeout=10, step=0.1)
    tick(lab, host, victoria, WATCHED)
    wait_until("eight runs", lambda: len(runs(lab, host, service)[1]) >= 8, timeout=30, step=0.5)
    sh(lab, host, f"systemctl stop {timer}")
    wait_until("the last run to end", lambda: settled(lab, host, service), timeout=10, step=0.2)
    samples = tick(lab, host, victoria, WATCHED)
    starts, exits = runs(lab, host, service)
    assert len(starts) == len(exits)
    assert value(samples, "systemd_timer_triggers_total", timer) == len(starts)
    by_outcome = {"success": sum(1 for status, _at in exits if status == 0), "exit-code": 1}
    for result, count in by_outcome.items():
        assert value(samples, "systemd_timer_runs_total", timer, service=service, result=result) == count, result
    assert value(samples, "systemd_timer_last_success_timestamp_seconds", timer) == pytest.approx(
        max(t for status, t in exits if status == 0), abs=0.1)
    assert abs(value(samples, "systemd_timer_last_trigger_lateness_seconds", timer)) < 0.1
    # the ticks after the one that saw it first each timed one trigger, all within a second
    assert value(samples, "systemd_timer_trigger_lateness_seconds_count", timer) == 2
    assert value(samples, "systemd_timer_trigger_lateness_seconds_bucket", timer, le="1") == 2
    assert starts[0] - started < 1.2  # OnActiveSec=1s
    # as VictoriaMetrics stores them (the last sample pushed): the histogram's buckets, the runs
    selector = f'host="{host}-trust",unit="{timer}"'
    wait_until("the last push", lambda: last_stored(victoria, f"systemd_timer_triggers_total{{{selector}}}")
               == len(starts), timeout=20, step=0.5)
    assert last_stored(victoria, f'systemd_timer_trigger_lateness_seconds_bucket{{{selector},le="+Inf"}}') == 2
    assert last_stored(victoria, f'systemd_timer_trigger_lateness_seconds_count{{{selector}}}') == 2
    assert last_stored(victoria, f'systemd_timer_runs_total{{{selector},service="{service}",result="exit-code"}}') == 1


def test_a_calendar_timer_and_its_catch_up_after_a_gap(lab, host, victoria):
    """OnCalendar=*:*:0/10: a trigger is timed against the 10 s mark the tick before saw.
    Persistent=true: the timer is stopped past its next elapse (as a host is shut down) and
    started again: it fires at once, and that trigger is timed against the elapse it missed."""
    timer, service = "trust-calendar.timer", "trust-calendar.service"
    clear_of_a_mark(lab)
    sh(lab, host, f"systemctl enable -q --now {timer}")
    looked = time.time()
    tick(lab, host, victoria, WATCHED)
    wait_until("a trigger", lambda: len(runs(lab, host, service)[1]) >= 1, timeout=15, step=0.2)
    samples = tick(lab, host, victoria, WATCHED)
    (began,) = runs(lab, host, service)[0]
    mark = math.ceil(looked / 10) * 10  # the elapse the first tick saw: the next 10 s mark
    assert began == pytest.approx(mark, abs=0.2)
    assert value(samples, "systemd_timer_last_trigger_lateness_seconds", timer) == pytest.approx(began - mark, abs=0.1)
    # the last look while it runs; then it misses its next elapse while stopped
    clear_of_a_mark(lab)
    seen = time.time()
    tick(lab, host, victoria, WATCHED)
    missed = math.ceil(seen / 10) * 10
    sh(lab, host, f"systemctl stop {timer}")
    wait_until("its next elapse to pass", lambda: time.time() > missed + 2, timeout=15, step=0.2)
    sh(lab, host, f"systemctl start {timer}")
    wait_until("the catch-up run", lambda: len(runs(lab, host, service)[1]) >= 2, timeout=10, step=0.2)
    caught_up = runs(lab, host, service)[0][1]
    assert caught_up > missed + 2  # it fired when started again, not at a 10 s mark
    samples = tick(lab, host, victoria, WATCHED)
    assert value(samples, "systemd_timer_triggers_total", timer) == 2
    assert value(samples, "systemd_timer_last_trigger_lateness_seconds", timer) == pytest.approx(
        caught_up - missed, abs=0.2)
    assert value(samples, "systemd_timer_runs_total", timer, service=service, result="success") == 2
    sh(lab, host, f"systemctl stop {timer}")
    # taken off the allowlist: its series end with a staleness marker; VictoriaMetrics stores
    # none for a histogram point without a value, so the histogram's series go stale instead
    fast_only = " ".join(f"--unit {shlex.quote(name)}" for name in UNITS if not name.startswith("trust-calendar"))
    tick(lab, host, victoria, ("trust", STATE, fast_only))
    selector = f'host="{host}-trust",unit="{timer}"'
    wait_until("the staleness marker", lambda: math.isnan(last_stored(
        victoria, f"systemd_timer_triggers_total{{{selector}}}")), timeout=20, step=0.5)
    assert math.isnan(last_stored(victoria, f"systemd_timer_triggers_total{{{selector}}}"))
    assert last_stored(victoria, f"systemd_timer_trigger_lateness_seconds_count{{{selector}}}") == 2

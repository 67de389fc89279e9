"""Failures read from systemd's journal (read_journal.py), against what PID 1 really wrote.

The fixtures (tests/fixtures/journal-252/, journal-257/, by tests/fixtures/capture_journal.py)
hold, per case, what the capture did to a unit on a real systemd 252 and 257 host, the unit's
own log of each run's start and exit status (written by the unit's process, not by systemd),
and PID 1's journal entries about the unit. The expected failures come from what the capture
did and from that log: never from the heartbeat's reading."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import load_heartbeat

hb = load_heartbeat()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VERSIONS = ("252", "257")


def case(version: str, name: str) -> dict:
    return json.loads((FIXTURES / f"journal-{version}" / f"{name}.json").read_text())


def exits(fixture: dict) -> list[int]:
    """The exit statuses the unit's own process wrote, run by run."""
    return [int(line.split()[1]) for line in fixture["process_log"] if line.startswith("exit ")]


def starts(fixture: dict) -> list[int]:
    return [int(line.split()[2]) for line in fixture["process_log"] if line.startswith("start ")]


def read(fixture: dict) -> list:
    return hb.failures(fixture["journal"])


def reasons(found) -> list[tuple]:
    return [(f.result, f.exit_code, f.exit_status) for f in found]


# Cases where every run that exited non-zero on its own (the unit's log) failed with exit-code,
# and nothing else did; whether systemd gave up at the end (the start limit refused a start).
EXIT_CASES = {
    "on-failure-loop": False, "always-loop": False, "admin-restart-cancels-pending": False,
    "restart-prevent": False, "restart-force": False, "admin-stop-143": False,
    "start-limit-no": True, "start-limit-on-failure": True, "start-limit-always": True, "oneshot-timer": False,
}
# Cases that exit only cleanly (0, or a status SuccessExitStatus= makes clean): no failure at all.
CLEAN_CASES = ("always-clean", "restart-force-clean", "success-exit-status")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(EXIT_CASES))
def test_every_failed_run_is_counted_once_with_its_own_exit(version, name):
    fixture = case(version, name)
    failed = [status for status in exits(fixture) if status != 0 and not (name == "success-exit-status")]
    found = read(fixture)
    assert reasons(found) == [("exit-code", 1, status) for status in failed]
    assert [f.gave_up for f in found][-1:] == [EXIT_CASES[name]]
    # each failure is placed at its run's exit (the unit's own clock, the same host): within 0.1 s
    exit_times = [int(line.split()[2]) / 1e6 for line in fixture["process_log"]
                  if line.startswith("exit ") and int(line.split()[1]) != 0]
    assert all(abs(f.at - t) < 0.1 for f, t in zip(found, exit_times)), [(f.at, t) for f, t in zip(found, exit_times)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", CLEAN_CASES)
def test_clean_exits_are_no_failures(version, name):
    fixture = case(version, name)
    assert starts(fixture), "the unit never ran"
    assert read(fixture) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_a_loop_of_clean_runs_stopped_by_the_start_limit_is_one_failure_given_up_on(version):
    """Restart=on-success, runs exiting 0: the 4th start is refused (start-limit-hit), and so is
    the capture's start by hand after it: one failure, not two."""
    found = read(case(version, "start-limit-on-success"))
    assert reasons(found) == [("start-limit-hit", 0, 0)] and found[0].gave_up


@pytest.mark.parametrize("version", VERSIONS)
def test_runs_killed_by_a_signal(version):
    fixture = case(version, "killed")
    kills = [a for a in fixture["did"] if a["action"].startswith("SIGKILL")]
    assert reasons(read(fixture)) == [("signal", 2, 9)] * len(kills)


@pytest.mark.parametrize("version", VERSIONS)
def test_watchdog_timeout_and_exec_start_pre(version):
    # watchdog: runs 1 and 2 killed with SIGABRT by the watchdog, run 3 stopped by the capture
    assert reasons(read(case(version, "watchdog"))) == [("watchdog", 2, 6)] * (len(starts(case(version, "watchdog"))) - 1)
    # TimeoutStartSec=1 kills `sleep 10` with SIGTERM
    assert reasons(read(case(version, "timeout"))) == [("timeout", 2, 15)]
    # ExecStartPre=/bin/false: three runs, the control process's exit 1, then the start limit
    found = read(case(version, "exec-start-pre-fails"))
    assert reasons(found) == [("exit-code", 1, 1)] * 3 and found[-1].gave_up and not found[0].gave_up


@pytest.mark.parametrize("version", VERSIONS)
def test_entries_read_at_two_ticks_count_each_failure_once(version):
    """A tick that read the last run's failure, and one that reads the start limit's entries after
    it: the repeat of that failure is not a second one, and it is given up on."""
    fixture = case(version, "start-limit-on-failure")
    journal = fixture["journal"]
    cut = max(i for i, e in enumerate(journal) if e.get("MESSAGE_ID") == hb.UNIT_FAILED
              and not any(x.get("MESSAGE", "").endswith(hb.START_LIMIT_HIT) for x in journal[:i]))
    first = hb.failures(journal[:cut + 1])
    record = {"failed_at": first[-1].at, "result": first[-1].result, "run": first[-1].run, "gave_up": False,
              "failure_code": 1, "failure_status": first[-1].exit_status}
    second = hb.failures(journal[cut + 1:], hb.last_failure(record))
    assert [f.new for f in second] == [False] and second[0].gave_up
    assert len(first) + sum(f.new for f in second) == len([s for s in exits(fixture) if s])


@pytest.mark.parametrize("version", VERSIONS)
def test_each_units_entries_after_its_own_cursor(version):
    fixture = case(version, "on-failure-loop")
    journal = fixture["journal"]
    unit = journal[0]["UNIT"]
    cursor = journal[3]["__CURSOR"]
    assert hb.by_unit(journal, {unit: cursor})[unit] == journal[4:]
    assert hb.by_unit(journal, {unit: None})[unit] == journal
    assert hb.by_unit(journal, {unit: "s=x;i=1;b=y"})[unit] == journal  # its entry not among them: all


def test_the_earliest_cursor_is_by_sequence_number():
    a, b = "s=abc;i=10;b=1;m=1;t=1;x=1", "s=abc;i=f;b=1;m=1;t=1;x=1"
    assert hb.earliest_cursor([a, b]) == b
    assert hb.earliest_cursor([a, "s=def;i=1;b=1"]) is None  # not one sequence: go by time


# ---------------------------------------------------------------- one tick's reading

def journal_lines(entries: list[dict]) -> str:
    return "".join(json.dumps(e) + "\n" for e in entries)


class FakeJournalctl:
    """journalctl as a `run` callable: the entries of a fixture from the cursor (or all), filtered
    by the UNIT= matches; `stored` hides the entries journald has not stored yet."""

    def __init__(self, entries: list[dict], stored: int | None = None):
        self.entries, self.stored, self.calls = entries, stored, []

    def __call__(self, argv, deadline):
        self.calls.append(argv)
        assert argv[:4] == ["journalctl", "--output=json", "--no-pager", "--quiet"] and "_PID=1" in argv
        units = {a[5:] for a in argv if a.startswith("UNIT=")}
        visible = self.entries[:self.stored] if self.stored is not None else self.entries
        start = [a for a in argv if a.startswith("--cursor=")]
        if start:
            cursor = start[0].split("=", 1)[1]
            visible = visible[next(i for i, e in enumerate(visible) if e["__CURSOR"] == cursor):]
        self.stored = None  # stored by the next reading
        return journal_lines([e for e in visible if e["UNIT"] in units])


def shown_unit(fixture: dict) -> dict:
    """The unit as a tick reads it afterwards (systemctl show's text, as the systemctl reader has it)."""
    unit = dict(line.split("=", 1) for line in fixture["show"].splitlines() if "=" in line) \
        if isinstance(fixture["show"], str) else dict(fixture["show"])
    unit["Unit"] = fixture["journal"][0]["UNIT"]
    return unit


@pytest.mark.parametrize("version", VERSIONS)
def test_a_reading_counts_what_the_journal_holds_and_keeps_the_cursor(version):
    fixture = case(version, "start-limit-on-failure")
    unit = shown_unit(fixture)
    run = FakeJournalctl(fixture["journal"])
    reading = hb.read_failures([unit], {}, None, hb.Deadline(5), run, readable=lambda: True)
    assert reading.source == "journal" and reading.warnings == []
    assert len(reading.recorded[unit["Unit"]]) == len([s for s in exits(fixture) if s])
    assert reading.cursors[unit["Unit"]] == fixture["journal"][-1]["__CURSOR"]
    assert any(a == "--boot" for a in run.calls[0])  # no cursor, no earlier look: this boot


@pytest.mark.parametrize("version", VERSIONS)
def test_the_next_reading_starts_at_the_units_cursor(version):
    fixture = case(version, "on-failure-loop")
    unit, journal = shown_unit(fixture), fixture["journal"]
    cursor = journal[5]["__CURSOR"]
    run = FakeJournalctl(journal)
    record = {"cursor": cursor, "changed": 1.0, "restarts": 0}
    reading = hb.read_failures([unit], {unit["Unit"]: record}, 100.0, hb.Deadline(5), run, readable=lambda: True)
    assert f"--cursor={cursor}" in run.calls[0]
    expected = hb.failures(journal[6:])
    assert [f.at for f in reading.recorded[unit["Unit"]]] == [f.at for f in expected]


@pytest.mark.parametrize("version", VERSIONS)
def test_entries_journald_has_not_stored_yet_are_read_again_once(version):
    """The state shows the unit failed, the journal does not have its last entries yet: one more
    reading a moment later (here it has them)."""
    fixture = case(version, "restart-prevent")
    unit = shown_unit(fixture)
    assert unit["ActiveState"] == "failed"
    failed_at = next(i for i, e in enumerate(fixture["journal"]) if e.get("MESSAGE_ID") == hb.UNIT_FAILED)
    run = FakeJournalctl(fixture["journal"], stored=failed_at)
    reading = hb.read_failures([unit], {}, None, hb.Deadline(5), run, settle=0.01, readable=lambda: True)
    assert len(run.calls) == 2 and reading.source == "journal"
    assert [(f.result, f.exit_status) for f in reading.recorded[unit["Unit"]]] == [("exit-code", 255)]


def test_a_journal_that_cannot_be_read_leaves_the_failures_to_inference():
    fixture = case("252", "on-failure-loop")
    unit = shown_unit(fixture)
    unreadable = hb.read_failures([unit], {}, None, hb.Deadline(5), FakeJournalctl([]), readable=lambda: False)
    assert (unreadable.source, unreadable.recorded) == ("inferred", {})

    def refusing(argv, deadline):
        raise hb.HeartbeatError("journalctl exited 1: No journal files were opened due to insufficient permissions.")

    refused = hb.read_failures([unit], {}, None, hb.Deadline(5), refusing, readable=lambda: True)
    assert refused.source == "inferred" and refused.recorded == {} and "insufficient permissions" in refused.warnings[0]

    def garbage(argv, deadline):
        return "not json\n"

    assert hb.read_failures([unit], {}, None, hb.Deadline(5), garbage, readable=lambda: True).source == "inferred"


def test_a_slow_journal_costs_exactness_not_the_tick():
    """journalctl gets half of what is left of the deadline; past it, the tick infers and goes on."""
    fixture = case("252", "on-failure-loop")
    unit = shown_unit(fixture)

    def slow(argv, deadline):
        import time

        while not deadline.expired():
            time.sleep(0.01)
        raise hb.DeadlineExceeded("journalctl did not finish")

    tick = hb.Deadline(1.0)
    reading = hb.read_failures([unit], {}, None, tick, slow, readable=lambda: True)
    assert reading.source == "inferred" and not tick.expired() and tick.remaining() > 0.3


def test_nothing_moved_nothing_read():
    called = []
    reading = hb.read_failures([], {}, None, hb.Deadline(5), lambda argv, d: called.append(argv), readable=lambda: True)
    assert reading.source is None and called == []


@pytest.mark.parametrize("version", VERSIONS)
def test_the_start_limits_repeat_is_no_failure_even_when_the_failure_before_was_inferred(version):
    """A tick that inferred the last run's failure (the journal did not have it yet: no run in the
    record) and one that then reads the start limit's refusal and its "Failed with result": that
    entry repeats the last run's Result, it is not a failure of its own."""
    journal = case(version, "start-limit-on-failure")["journal"]
    refusal = next(i for i, e in enumerate(journal) if e.get("MESSAGE", "").endswith(hb.START_LIMIT_HIT))
    assert hb.failures(journal[refusal:]) == []


def unit_at(name: str, entry: dict, state: str, sub: str, restarts: int) -> dict:
    """A service as the bus reader has it (µs timestamps), its state entered at `entry`'s time."""
    return {"Unit": name, "LoadState": "loaded", "ActiveState": state, "SubState": sub, "Result": "exit-code",
            "Restart": "on-failure", "NRestarts": restarts, "ExecMainCode": 1, "ExecMainStatus": 3,
            "StateChangeTimestamp": int(entry["__REALTIME_TIMESTAMP"])}


def history_tick(units: list, memory: dict, journal: list, wall: float) -> dict:
    """One tick's history (history.observe_history) with the journal holding `journal`; the
    memory the next tick starts from."""
    snapshot = hb.Snapshot(units, None, 0.0, wall, 0.0)
    records = hb.observe_history(snapshot, memory, hb.Deadline(5), FakeJournalctl(journal))
    return {"units": records, "wall": wall, "history_source": snapshot.history_source}


@pytest.mark.parametrize("version", VERSIONS)
def test_a_failure_journald_has_not_stored_yet_waits_for_the_next_tick(version, monkeypatch):
    """A CI run on 252: the tick right after the start limit's refusal saw the unit failed before
    journald had stored the refusal's entries (also 0.2 s later). Inferred, the failure went to
    the refusal (the state change), 0.5 s after the run that failed, and was counted twice. The
    unit now waits for the next tick, which reads those entries: one failure per failed run, at
    its run's "Failed with result", given up on."""
    from systemd_heartbeat import read_journal

    monkeypatch.setattr(read_journal, "journal_readable", lambda: True)
    journal = case(version, "start-limit-on-failure")["journal"]
    failed = [e for e in journal if e.get("MESSAGE_ID") == hb.UNIT_FAILED]
    refusal = next(i for i, e in enumerate(journal) if e.get("MESSAGE", "").endswith(hb.START_LIMIT_HIT))
    name, last_run = journal[0]["UNIT"], failed[2]  # runs 1-3 exit 3; the start limit refuses the 4th start
    waiting = unit_at(name, last_run, "activating", "auto-restart", 2)
    given_up = unit_at(name, journal[refusal], "failed", "failed", 3)
    memory = history_tick([waiting], {}, journal[:journal.index(last_run) + 1], 100.0)
    before = memory["units"][name]
    memory = history_tick([given_up], memory, journal[:refusal], 130.0)  # stored up to the refusal
    record = memory["units"][name]
    assert memory["history_source"] == "journal" and record["waited"]
    assert (record["failed_at"], record["failures"], record["gave_up"]) == (hb.entry_time(last_run), {"exit-code": 3}, False)
    assert all(record.get(key) == before.get(key) for key in ("changed", "restarts", "pending", "cursor"))
    memory = history_tick([given_up], memory, journal, 160.0)  # stored now
    record = memory["units"][name]
    assert (record["failed_at"], record["failures"], record["gave_up"]) == (hb.entry_time(last_run), {"exit-code": 3}, True)
    assert "waited" not in record and record["cursor"] == journal[-1]["__CURSOR"]
    # journald still without them a tick later (lost, rate-limited): inferred, as without a journal
    memory = history_tick([given_up], history_tick([given_up], {"units": {name: before}, "wall": 100.0,
                                                                "history_source": "journal"}, journal[:refusal], 130.0),
                          journal[:refusal], 160.0)
    assert memory["history_source"] == "inferred" and "waited" not in memory["units"][name]

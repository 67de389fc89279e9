"""The history the heartbeat keeps per unit (history.py): the last exit, the last failure and
its reason, whether systemd gave up, kept across restarts; and that the D-Bus reader, which
asks only for what a unit's state and history need, gives the same samples as systemctl,
which shows everything. The sequences are those seen on systemd 252 and 257 in the lab."""
from __future__ import annotations

import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import PACKAGE_PARENT

sys.path.insert(0, str(PACKAGE_PARENT))
from systemd_heartbeat import history, read_bus, shape, state  # noqa: E402
from systemd_heartbeat.model import Snapshot  # noqa: E402

S = 1_000_000  # D-Bus timestamps are µs


def service(state="active", sub="running", restarts=0, code=0, status=0, result="success", restart="on-failure",
            changed=100, **more) -> dict:
    unit = {"Unit": "web.service", "Id": "web.service", "LoadState": "loaded", "ActiveState": state,
            "SubState": sub, "NRestarts": restarts, "ExecMainCode": code, "ExecMainStatus": status,
            "Result": result, "Restart": restart, "StateChangeTimestamp": changed * S, "Allowlisted": True}
    unit.update({key: value * S if key.endswith("Timestamp") else value for key, value in more.items()})
    return unit


def ticks(*units, start_wall=1000.0) -> list[dict]:
    """Each unit observed in turn, a tick 30 s apart; the records after each."""
    records, memory = [], {}
    for index, unit in enumerate(units):
        record = history.observe(unit, memory.get("units", {}).get(unit["Unit"]), memory.get("wall"))
        records.append(record)
        memory = {"units": {unit["Unit"]: record}, "wall": start_wall + 30 * index}
    return records


def test_a_crash_loop_keeps_its_exit_status_and_failure_while_the_next_run_is_up():
    """exit 3, Restart=on-failure: systemd resets ExecMainStatus and Result when the restart
    starts; the heartbeat keeps 3 and the failure's time."""
    records = ticks(
        service(restarts=0),
        service("activating", "auto-restart", 0, 1, 3, "exit-code", changed=1011, ExecMainExitTimestamp=1010),
        service(restarts=1, changed=1013),  # the restart of the failure just seen: nothing new
    )
    assert "failed_at" not in records[0] and records[0]["restarts"] == 0
    assert (records[1]["failed_at"], records[1]["result"], records[1]["exit_status"]) == (1010.0, "exit-code", 3)
    assert records[2]["failed_at"] == 1010.0 and records[2]["exit_status"] == 3 and records[2]["exit_code"] == 1


def test_a_failure_between_two_ticks_is_seen_through_the_restart_counter():
    """Running at both ticks, NRestarts 4 -> 6: failures happened; systemd forgot the reason,
    the one seen last stands; the time is the last exit from active after the previous look."""
    records = ticks(
        service("activating", "auto-restart", 4, 1, 3, "exit-code", changed=900, ExecMainExitTimestamp=900),
        service(restarts=4, changed=905),
        service(restarts=6, changed=1040, ActiveExitTimestamp=1039, InactiveEnterTimestamp=1040),
    )
    assert records[2]["failed_at"] == 1039.0
    assert (records[2]["result"], records[2]["failure_status"], records[2]["gave_up"]) == ("exit-code", 3, False)


def test_a_restart_already_counted_is_not_discounted_again():
    """systemd >= 254 counts the restart when it queues its job (auto-restart-queued: NRestarts
    already 5, seen on 257). A failure and restart between that tick and the next one rise the
    counter to 6: a failure, not the restart that was queued (a lab run on 257 missed it so)."""
    records = ticks(
        service("activating", "auto-restart-queued", 5, 1, 5, "exit-code", changed=1010,
                ExecMainExitTimestamp=1009),
        service(restarts=6, changed=1040, ActiveExitTimestamp=1039, InactiveEnterTimestamp=1039),
    )
    assert records[0]["failed_at"] == 1009.0 and "pending" not in records[0]
    assert records[1]["failed_at"] == 1039.0 and records[1]["exit_status"] == 5


def test_a_restart_not_yet_counted_is_not_a_failure():
    """In auto-restart (and failed-before-auto-restart) the counter does not hold the restart
    yet: its rise by one at the next tick is that restart."""
    for sub, state in (("auto-restart", "activating"), ("failed-before-auto-restart", "failed")):
        records = ticks(
            service(state, sub, 5, 1, 5, "exit-code", changed=1010, ExecMainExitTimestamp=1009),
            service(restarts=6, changed=1011, ActiveExitTimestamp=1009, InactiveEnterTimestamp=1009),
        )
        assert records[0]["pending"] is True, sub
        assert records[1]["failed_at"] == records[0]["failed_at"], sub


def test_a_oneshot_loop_that_never_becomes_active_is_placed_when_it_went_down():
    records = ticks(service("activating", "start", 1, changed=1000),
                    service("activating", "start", 2, changed=1033, InactiveEnterTimestamp=1032))
    assert records[1]["failed_at"] == 1032.0 and records[1]["result"] == "unknown"
    assert "exit_code" not in records[1]  # no exit was ever seen: the metric says what systemd says


def test_restarts_that_need_not_be_failures_are_not_counted_as_failures():
    for policy in ("always", "on-success", "no"):
        records = ticks(service(restarts=1, restart=policy), service(restarts=3, restart=policy, changed=1040,
                                                                     ActiveExitTimestamp=1039))
        assert "failed_at" not in records[1], policy


def test_a_manual_restart_resets_the_counter_and_is_not_a_failure():
    records = ticks(service(restarts=5), service(restarts=0, changed=1040, ActiveExitTimestamp=1039))
    assert "failed_at" not in records[1]
    # reset, then restarted by systemd again: the count is lower but above 0
    records = ticks(service(restarts=5), service(restarts=1, changed=1040, ActiveExitTimestamp=1039))
    assert records[1]["failed_at"] == 1039.0


def test_no_failure_is_guessed_at_the_first_look():
    assert "failed_at" not in ticks(service(restarts=7, ActiveExitTimestamp=50))[0]


def test_start_limit_gives_up_with_the_exit_that_caused_it():
    """The owner's incident: exit 127 until StartLimitBurst= latched it failed. systemd 252 and
    257 leave Result=exit-code, so 'gave up' is derived."""
    gave_up = service("failed", "failed", 3, 1, 127, "exit-code", changed=1061, ExecMainExitTimestamp=1060)
    record = ticks(gave_up)[0]
    assert (record["failed_at"], record["result"], record["failure_status"], record["gave_up"]) == \
        (1061.0, "exit-code", 127, True)
    assert not history.gave_up(dict(gave_up, Restart="no"))
    assert not history.gave_up(dict(gave_up, Restart="on-abnormal"))  # exit codes are not abnormal
    assert history.gave_up(dict(gave_up, Restart="on-abnormal", Result="signal"))
    assert history.gave_up(dict(gave_up, Result="start-limit-hit", Restart="on-watchdog"))
    # systemd >= 254 passes a restarting service through failed: not given up
    assert not history.gave_up(dict(gave_up, SubState="failed-before-auto-restart"))


def test_the_last_failure_outlives_recovery_and_an_older_one_never_replaces_it():
    records = ticks(service("failed", "failed", 0, 2, 9, "signal", changed=500, restart="no"),
                    service(changed=600, restart="no"),
                    service("failed", "failed", 0, 2, 9, "signal", changed=500, restart="no"))
    assert records[1]["failed_at"] == records[2]["failed_at"] == 500.0 and records[1]["result"] == "signal"
    assert records[1]["exit_status"] == 9 and records[1]["exit_code"] == 2


def test_other_unit_types_fail_with_their_own_result():
    socket = {"Unit": "web.socket", "ActiveState": "failed", "SubState": "failed", "LoadState": "loaded",
              "Result": "service-start-limit-hit", "StateChangeTimestamp": 700 * S}
    record = ticks(socket)[0]
    assert (record["failed_at"], record["result"], record["gave_up"]) == (700.0, "service-start-limit-hit", False)
    samples = {s[0]: s for s in shape.unit_samples(socket, "h", Snapshot([socket], 0.0, 0.1, 1000.0, 10.0),
                                                   record=record)}
    assert dict(samples["systemd_unit_last_failure_info"][2]) == {
        "unit": "web.socket", "host": "h", "result": "service-start-limit-hit", "exit_code": "",
        "exit_status": "", "gave_up": "false"}
    assert "systemd_unit_last_exit_status" not in samples


def test_samples_of_a_unit_with_a_history():
    unit = service(restarts=2, changed=1013, ActiveEnterTimestamp=1013)
    record = {"restarts": 1, "exit_code": 1, "exit_status": 3, "failed_at": 1010.0, "result": "exit-code",
              "failure_code": 1, "failure_status": 3, "gave_up": False, "changed": 1011.0}
    samples = shape.unit_samples(unit, "h", Snapshot([unit], 0.0, 0.1, 1100.0, 10.0),
                                 record=history.observe(unit, record, 1050.0))
    values = {(name, tuple(sorted(labels))): value for name, _, labels, value in samples}
    base = (("host", "h"), ("unit", "web.service"))
    assert values[("systemd_unit_last_exit_status", base)] == 3
    assert values[("systemd_unit_last_exit_code", base)] == 1
    assert values[("systemd_unit_last_failure_timestamp_seconds", base)] == 1013.0  # StateChange: no exit after
    assert values[("systemd_unit_active_enter_timestamp_seconds", base)] == 1013.0
    info = [labels for name, _, labels, _ in samples if name == "systemd_unit_last_failure_info"]
    assert dict(info[0])["exit_status"] == "3" and dict(info[0])["exit_code"] == "exited"


# --- the D-Bus reader's selective Gets give what systemctl's everything gives -------------------

KINDS = ("service", "timer", "socket", "path", "mount", "slice")
STATES = ("active", "reloading", "inactive", "failed", "activating", "deactivating")
SUB_STATES = ("running", "exited", "dead", "failed", "auto-restart", "auto-restart-queued",
              "failed-before-auto-restart", "start", "waiting", "listening", "mounted")
STAMP = st.one_of(st.just(0), st.integers(1, 3000).map(lambda seconds: seconds * S))


@st.composite
def unit_and_record(draw):
    """Everything `systemctl show` prints for a unit (as D-Bus values), and a record from before."""
    kind = draw(st.sampled_from(KINDS))
    unit = {"Unit": f"u.{kind}", "Id": f"u.{kind}", "LoadState": "loaded", "Allowlisted": True,
            "ActiveState": draw(st.sampled_from(STATES)), "SubState": draw(st.sampled_from(SUB_STATES))}
    for name in ("StateChangeTimestamp", "ActiveEnterTimestamp", "ActiveExitTimestamp", "InactiveEnterTimestamp"):
        unit[name] = draw(STAMP)
    never_changed = unit["StateChangeTimestamp"] == 0  # since loaded: then it never ran either
    if kind != "slice":
        unit["Result"] = draw(st.sampled_from(("success", "exit-code", "signal", "start-limit-hit", "resources")))
    if kind == "service":
        unit.update(NRestarts=draw(st.integers(0, 6)), ExecMainCode=draw(st.integers(0, 3)),
                    ExecMainStatus=draw(st.integers(0, 255)), Type=draw(st.sampled_from(("simple", "oneshot"))),
                    Restart=draw(st.sampled_from(("no", "on-failure", "always", "on-abnormal"))),
                    ExecMainStartTimestamp=draw(STAMP), ExecMainExitTimestamp=draw(STAMP))
    if never_changed:
        unit.update({name: 0 for name in unit if name.endswith("Timestamp")})
        unit.update({name: 0 for name in ("NRestarts", "ExecMainCode", "ExecMainStatus") if name in unit})
    if kind == "timer":
        unit.update(LastTriggerUSec=draw(STAMP), NextElapseUSecRealtime=draw(STAMP), NextElapseUSecMonotonic=0,
                    TimersMonotonic=[("OnUnitActiveUSec", 30 * S, 0)], TimersCalendar=[])
    before = None
    if draw(st.booleans()):
        # what the last tick saw: the same unit, a moment (or several restarts) earlier
        earlier = dict(unit, StateChangeTimestamp=draw(st.sampled_from((unit["StateChangeTimestamp"], 5 * S))))
        if kind == "service":
            earlier.update(NRestarts=draw(st.integers(0, 6)), SubState=draw(st.sampled_from(SUB_STATES)))
        before = history.observe(earlier, None, None)
        before["failed_at"] = draw(st.sampled_from((0.0, 1.0, 2000.0)))
    return unit, before


def as_the_bus_reads_it(unit: dict, before: dict | None) -> dict:
    """The unit as read_over_bus leaves it: its listing's states, its own properties, then
    what its state and its history ask for (the same tables the reader uses)."""
    kind = unit["Unit"].rsplit(".", 1)[1]
    listed = {key: unit[key] for key in ("Unit", "Id", "LoadState", "ActiveState", "SubState", "Allowlisted")}
    names = [prop for _, prop in read_bus.own_properties(kind) + read_bus.state_properties(kind, unit["ActiveState"])]
    seen = dict(listed, **{name: unit[name] for name in names if name in unit})
    if unit["StateChangeTimestamp"] == 0:  # as read_over_bus: nothing of its state to ask
        names = [prop for _, prop in read_bus.own_properties(kind)]
    names += [prop for _, prop in read_bus.history_properties(seen, kind, before)]
    return dict(listed, **{name: unit[name] for name in names if name in unit})


@settings(max_examples=400, deadline=None)
@given(unit_and_record(), st.sampled_from((None, 10.0, 1500.0)))
def test_the_bus_asks_for_everything_the_samples_need(case, previous_look):
    unit, before = case
    memory = {"units": {unit["Unit"]: before} if before else {}, "wall": previous_look}
    bus_unit = as_the_bus_reads_it(unit, before)

    def samples(observed):
        snapshot = Snapshot([observed], 50.0, 0.1, 3100.0, 100.0)
        return sorted(shape.shape(snapshot, "h", memory), key=repr), history.observe_all([observed], memory)

    assert samples(bus_unit) == samples(unit)


ANY = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=True),
                st.text(max_size=80), st.binary(max_size=10), st.lists(st.integers(), max_size=3),
                st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(st.sampled_from(sorted(state.RECORD_FIELDS)), st.text(max_size=10)), ANY,
                       max_size=15),
       unit_and_record())
def test_a_record_from_a_hostile_state_file_never_breaks_a_tick(record, case):
    """Whatever a (corrupt, planted) state file holds as a unit's record, it is checked field by
    field: a record with a field that fails is dropped whole (and named), what is kept passes
    every check, and observing and shaping the unit never raises."""
    unit, _ = case
    now, warnings = 1e10, []
    memory = state.well_formed({"units": {unit["Unit"]: record, 7: record, "x": "not a record"}, "wall": "soon"},
                               warnings=warnings, now=now)
    checked = memory["units"].get(unit["Unit"])
    assert "x" not in memory["units"] and "wall" not in memory and "'x'" in "".join(warnings)
    known = {key: value for key, value in record.items() if key in state.RECORD_FIELDS}
    if all(state.field_ok(state.RECORD_FIELDS[key], value, now + state.CLOCK_SLACK) for key, value in known.items()):
        assert checked == known
    else:
        assert checked is None and repr(unit["Unit"])[:40] in "".join(warnings)
    snapshot = Snapshot([unit], 50.0, 0.1, 3100.0, 100.0)
    records = history.observe_all([unit], memory)
    assert shape.shape(snapshot, "h", memory, records)
    assert state.well_formed({"units": records}, now=now)["units"] == records  # what it writes, it reads back

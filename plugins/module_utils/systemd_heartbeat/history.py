# SPDX-License-Identifier: MIT
"""What the heartbeat remembers of each unit from one tick to the next, and what follows from
it: the last exit, the last failure and its reason, whether systemd gave up restarting, and
when the unit last entered `active`.

Why: systemd forgets. It resets a service's ExecMainStatus and Result when the next run
starts, so a crash-looping service reads 3, 0, 3, 0 and a query at a random moment says 0;
and it keeps no failure time at all. A tick records what systemd still says (a record per
unit, kept in the state directory by state.py) and carries it over the moments systemd has
forgotten. README "Metrics" defines every value; this module is that definition in code.

A record (a plain dict, so marshal stores it and state.well_formed can check it):
    changed     StateChangeTimestamp seen (Unix seconds; 0 = none)
    restarts    NRestarts seen (services; absent = unknown)
    pending     the unit was seen failed and waiting for its automatic restart, not yet
                counted: the next rise of NRestarts is that restart, not a new failure
    entered     ActiveEnterTimestamp (0 = never active since boot)
    exit_code, exit_status      the most recent exit of the main process seen (code 0 = none)
    failed_at   the last failure (0 = none seen), and of that failure:
    result      systemd's Result ("exit-code", "signal", ...; "unknown" when it was seen only
                through the restart counter), failure_code, failure_status (its exit), gave_up
    run         that failure's INVOCATION_ID, when the journal named it
    cursor      where the journal's reading of the unit stopped (read_journal)
    failures    systemd_unit_failures_total: a count per Result
    successes   a service's runs that ended well (systemd_timer_runs_total{result="success"}
                of the timers that start it), succeeded_at: when the last one ended,
                exit_seen: ExecMainExitTimestamp at the last look, started_run: the
                INVOCATION_ID of the last run the journal showed beginning
    waited      the unit moved, and journald had not stored why yet: `changed`, `restarts`,
                `pending` and `cursor` are still the ones before, so the next tick reads
                those entries again (wait_for_journal)
A timer's record follows its triggers too (triggers.py).
"""

from .model import HISTORY_SOURCE_NAMES
from .triggers import next_elapse, observe_timer, triggered_unit
from .units import unit_type
from .values import USEC_NEVER, as_int, is_count, is_exit_status, parse_timestamp, same_moment

# Restart= policies that restart a service only after a failure, and the Results each one
# restarts on (systemd's service_shall_restart(), src/core/service.c: on-abnormal is any Result
# but success and exit-code); None = any Result but success.
ABNORMAL = frozenset(("signal", "core-dump", "timeout", "watchdog", "oom-kill", "resources", "protocol",
                      "start-limit-hit"))
RESTARTS_ON_FAILURE = {
    "on-failure": None, "on-abnormal": ABNORMAL, "on-abort": frozenset(("signal", "core-dump")),
    "on-watchdog": frozenset(("watchdog",)),
}
# Sub-states of a service whose run just ended and whose automatic restart is due
# (systemd >= 254 adds the queued one and passes a failing service through the last one).
RESTART_PENDING = ("auto-restart", "auto-restart-queued", "failed-before-auto-restart")
# Those of them in which NRestarts does not count that restart yet: systemd counts it when it
# queues the restart job, which >= 254 shows as auto-restart-queued (seen on 257: 1, then 2 in
# auto-restart-queued, then running at 2). On 249-253 the job is queued in auto-restart too, for
# as long as it waits for other jobs (milliseconds unless ordered after one): not told apart.
RESTART_NOT_COUNTED = ("auto-restart", "failed-before-auto-restart")
EXIT_CODES = {1: "exited", 2: "killed", 3: "dumped"}  # ExecMainCode, as systemctl status words it
ACTIVE = ("active", "reloading")


def state_changed(before: "dict | None", changed) -> bool:
    """Whether the unit changed state since the record (or has none): then what only a state
    change can move (ActiveEnterTimestamp) has to be read again."""
    return before is None or parse_timestamp(changed) != (before.get("changed") or None)


def unexplained_restarts(before: "dict | None", restarts) -> int:
    """Automatic restarts since the record that no failure seen explains (0 without a record:
    failures before the heartbeat's first look are not guessed at). NRestarts resets to 0 on
    a manual restart; a count below the remembered one but above 0 means restarts since."""
    now = as_int(restarts)
    if before is None or now is None or "restarts" not in before:
        return 0
    rose = now - before["restarts"] if now >= before["restarts"] else now
    return max(0, rose - (1 if before.get("pending") else 0))


def gave_up(unit: dict) -> bool:
    """A failed service that its Restart= policy would restart after this Result, yet systemd
    does not (it hit its start limit): derived, because systemd 249-252 leave the Result of
    the last run (exit-code) rather than start-limit-hit."""
    if unit_type(str(unit["Unit"])) != "service" or unit.get("ActiveState") != "failed":
        return False
    if unit.get("SubState") != "failed":
        return False  # failed-before-auto-restart: the restart is on its way
    policy, result = unit.get("Restart"), unit.get("Result")
    if policy == "always":
        return True
    if policy not in RESTARTS_ON_FAILURE:
        return False  # no, on-success, unknown
    results = RESTARTS_ON_FAILURE[policy]
    return result == "start-limit-hit" or (result not in ("success", "", None)
                                           and (results is None or result in results))


def seen_failure(unit: dict) -> "float | None":
    """When the failure systemd shows right now happened: a unit that is failed entered that
    state then (StateChangeTimestamp); a service waiting for its automatic restart after an
    unsuccessful run failed when its main process exited (ExecMainExitTimestamp)."""
    state, sub = unit.get("ActiveState"), str(unit.get("SubState", ""))
    if state == "failed":
        return parse_timestamp(unit.get("StateChangeTimestamp"))
    if (unit_type(str(unit["Unit"])) == "service" and state not in ACTIVE and sub in RESTART_PENDING
            and unit.get("Result") not in ("success", "", None)):
        at = parse_timestamp(unit.get("ExecMainExitTimestamp"))
        return at if at is not None else parse_timestamp(unit.get("StateChangeTimestamp"))
    return None


def inferred_failure(unit: dict, previous_look: "float | None") -> "float | None":
    """When the failure behind an automatic restart nobody saw happened: the unit's last exit
    from active (ActiveExitTimestamp) if it came after the previous look, else when it last
    went down (InactiveEnterTimestamp, at most RestartSec= after the exit on systemd < 254),
    else when it entered its current state."""
    since = previous_look or 0.0
    for name in ("ActiveExitTimestamp", "InactiveEnterTimestamp", "StateChangeTimestamp"):
        at = parse_timestamp(unit.get(name))
        if at is not None and (at > since or name == "StateChangeTimestamp"):
            return at
    return None


def moved(unit: dict, before: "dict | None") -> bool:
    """Whether something may have happened to the unit since its record, so that the journal
    is worth reading: its NRestarts or StateChangeTimestamp moved. A unit seen for the first
    time: if it is failed or was restarted (its journal since the boot tells why)."""
    # It runs for every unit at every tick: the bus's ints (the usual case) are compared as they
    # come, as the record has them (µs / 1e6); systemctl's text is parsed.
    # pylint: disable=unidiomatic-typecheck
    restarts = unit.get("NRestarts")
    if type(restarts) is not int:
        restarts = as_int(restarts)
    if before is None:
        return unit.get("ActiveState") == "failed" or bool(restarts)
    if restarts is not None and restarts != before.get("restarts", restarts):
        return True
    changed = unit.get("StateChangeTimestamp")
    if type(changed) is int and 0 < changed < USEC_NEVER:
        return changed / 1e6 != before.get("changed", 0.0)
    return not same_moment(parse_timestamp(changed) or 0.0, before.get("changed", 0.0))


def count_failure(record: dict, result: str, times: int = 1) -> None:
    """systemd_unit_failures_total{result}: every failure once, by its Result."""
    counts = record["failures"] = dict(record.get("failures", {}))
    counts[result] = counts.get(result, 0) + times


def observe(unit: dict, before: "dict | None", previous_look: "float | None", recorded=None, runs=None) -> dict:
    """This tick's record of one unit: what systemd says now, and what it forgot carried over
    from the record before. `recorded`: the failures systemd's journal recorded since the
    record (read_journal.Failure, oldest first), or None when the journal was not read for
    it: then the failures are inferred from the state as before; `runs`: its runs in those
    entries (read_journal.Runs; None: none read)."""
    record = dict(before) if before else {}
    record.pop("waited", None)
    record["changed"] = parse_timestamp(unit.get("StateChangeTimestamp")) or 0.0
    if "ActiveEnterTimestamp" in unit:  # else unchanged since the record (state_changed)
        record["entered"] = parse_timestamp(unit["ActiveEnterTimestamp"]) or 0.0
    elif not record["changed"]:  # its state never changed since systemd loaded it: never active
        record["entered"] = 0.0
    is_service = unit_type(str(unit["Unit"])) == "service" and unit.get("LoadState") != "not-found"
    code = status = restarts = None
    if is_service:
        code, status, restarts = (as_int(unit.get("ExecMainCode")), as_int(unit.get("ExecMainStatus")),
                                  as_int(unit.get("NRestarts")))
        # what the record keeps passes state.py's checks: what it writes, the next tick reads back
        status = status if is_exit_status(status) else None
        restarts = restarts if is_count(restarts) else None
        if code in EXIT_CODES and status is not None:
            # systemd holds an exit until the next run starts; after that, the record keeps it
            record["exit_code"], record["exit_status"] = code, status
    if recorded is not None:
        observe_recorded(record, unit, recorded)
    else:
        observe_inferred(record, unit, before, previous_look, is_service, code, status, restarts)
    if is_service:
        observe_successes(record, unit, before, recorded is not None, runs)
    if restarts is not None:
        record["restarts"] = restarts
        if str(unit.get("SubState", "")) in RESTART_NOT_COUNTED:
            record["pending"] = True
        else:
            record.pop("pending", None)
    return record


def observe_recorded(record: dict, unit: dict, recorded: list) -> None:
    """The failures as systemd recorded them (read_journal.failures): each new one counted, the
    last one's time, Result, exit and run as the journal has them; given up when the start
    limit refused a start after it and the unit is still failed."""
    for failure in recorded:
        if failure.new:
            count_failure(record, failure.result)
    if recorded and recorded[-1].at >= record.get("failed_at", 0.0):
        last = recorded[-1]
        record["failed_at"], record["result"] = last.at, last.result
        if last.run:
            record["run"] = last.run
        else:
            record.pop("run", None)
        record["failure_code"], record["failure_status"] = last.exit_code, last.exit_status
        record["gave_up"] = last.gave_up and unit.get("SubState") == "failed"


def observe_successes(record: dict, unit: dict, before: "dict | None", journal: bool, runs) -> None:
    """A service's runs that ended well: from the journal's "Deactivated successfully." where
    it was read; else a run seen ended (ExecMainExitTimestamp moved since the last look) with
    Result success: one, however many ended between the two looks. The first look counts
    none. The runs that began since the last look, each once (started_run), are this tick's
    `new_starts` (history.observe_timers)."""
    record.setdefault("successes", 0)
    # read only while the service is not active (the bus asks for it then: read_bus), so that
    # both sources keep the same record
    exited = parse_timestamp(unit.get("ExecMainExitTimestamp")) if unit.get("ActiveState") not in ACTIVE else None
    if runs is not None:
        if runs.succeeded:
            record["successes"] += len(runs.succeeded)
            record["succeeded_at"] = max(runs.succeeded[-1], record.get("succeeded_at", 0.0))
        fresh = [start for start in runs.started if start[1] != record.get("started_run")]
        if fresh and fresh[-1][1]:
            record["started_run"] = fresh[-1][1]
        record["new_starts"] = [start[0] for start in fresh]
    elif (not journal and before is not None and exited is not None and exited > before.get("exit_seen", 0.0)
          and unit.get("Result") == "success"):
        record["successes"] += 1
        record["succeeded_at"] = exited
    if exited is not None:
        record["exit_seen"] = exited


def observe_timers(records: dict, units: list[dict], before: dict, wall: float, monotonic: float,
                   read: "dict | None" = None) -> None:
    """Each timer's triggers and their lateness (triggers.observe_timer), with the runs of its
    service that began since the last look (when the journal was read for it: `read`, the
    units whose runs it gave, whose records hold them until here)."""
    for unit in units:
        name = str(unit["Unit"])
        # endswith, not unit_type: it runs for every unit at every tick
        if not name.endswith(".timer") or unit.get("LoadState") == "not-found":
            continue
        service = triggered_unit(unit) or records[name].get("service")
        observe_timer(records[name], before.get(name), service, next_elapse(unit, wall, monotonic),
                      parse_timestamp(unit.get("LastTriggerUSec")), records.get(service, {}).get("new_starts"), wall)
    for name in read or ():
        if name in records:
            records[name].pop("new_starts", None)


def observe_inferred(record: dict, unit: dict, before, previous_look, is_service: bool, code, status, restarts) -> None:
    """The failures inferred from two looks at the state (without the journal)."""
    times = 1
    # an active unit shows no failure; an active service may have had one since the last look
    failure = seen_failure(unit) if unit.get("ActiveState") not in ACTIVE else None
    if failure is not None:  # systemd shows it: its reason and exit are systemd's
        held = is_service and code in EXIT_CODES and status is not None
        reason = (str(unit.get("Result") or "unknown"), code if held else 0, status if held else 0)
    elif (is_service and (times := unexplained_restarts(before, restarts)) > 0
          and unit.get("Restart") in RESTARTS_ON_FAILURE):
        # restarted since the last look, and its policy restarts only after a failure; systemd
        # has already reset that run's Result and exit: the reason seen last stands, if any
        failure = inferred_failure(unit, previous_look)
        reason = (record.get("result", "unknown"), record.get("failure_code", 0), record.get("failure_status", 0))
    if failure is not None and failure >= record.get("failed_at", 0.0):
        if failure > record.get("failed_at", 0.0):  # a failure still shown at the next look is not a new one
            count_failure(record, reason[0], times)
        record["failed_at"] = failure
        record["result"], record["failure_code"], record["failure_status"] = reason
        record["gave_up"] = gave_up(unit)
        record.pop("run", None)  # not a failure the journal named


# What says how far a unit's record has followed systemd (moved, unexplained_restarts, the
# journal's cursor): kept as it was while the journal's entries are awaited.
FOLLOWED = ("changed", "restarts", "pending", "cursor")


def wait_for_journal(record: dict, before: dict) -> dict:
    """The record of a unit that moved while journald had not stored the entries that say why
    (read_journal.JournalReading.waiting): what systemd shows now (its exit, when it became
    active) is taken, no failure is counted or inferred, and what says how far the record has
    followed systemd stays as it was, so that the next tick sees the unit moved and reads
    the same entries again. Once: a unit that waited already is inferred."""
    for key in FOLLOWED:
        if key in before:
            record[key] = before[key]
        else:
            record.pop(key, None)
    record["waited"] = True
    return record


def observe_all(units: list[dict], memory: dict, recorded: "dict | None" = None, runs: "dict | None" = None,
                clock: "tuple[float, float] | None" = None) -> dict[str, dict]:
    """A record per unit of this tick; units no longer reported are forgotten. `recorded`:
    the journal's failures of the units it was read for (read_journal.read_failures), `runs`
    their runs; `clock`: the snapshot's wall and monotonic time, to follow timers by."""
    before, previous_look, recorded, runs = memory.get("units", {}), memory.get("wall"), recorded or {}, runs or {}
    records = {str(unit["Unit"]): observe(unit, before.get(str(unit["Unit"])), previous_look,
                                          recorded.get(str(unit["Unit"])), runs.get(str(unit["Unit"])))
               for unit in units}
    if clock:
        observe_timers(records, units, before, *clock, read=runs)
    return records


def observe_history(snapshot, memory: dict, deadline, run=None, journal: bool = True) -> dict[str, dict]:
    """This tick's records of every unit in `snapshot` (observe_all), with the failures of the
    units that moved read from the journal when `journal` (read_journal), each unit's cursor in
    its record; sets snapshot.history_source ("journal" or "inferred")."""
    if not journal:
        snapshot.history_source = "inferred"
        return observe_all(snapshot.units, memory, clock=(snapshot.wall, snapshot.monotonic))
    before = memory.get("units", {})
    changed = [unit for unit in snapshot.units if moved(unit, before.get(str(unit["Unit"])))]
    if not changed and memory.get("history_source") in HISTORY_SOURCE_NAMES:
        # a steady tick: nothing to read, the source as the last tick found it (read_journal
        # is not even imported: it is not in the preload bundle)
        snapshot.history_source = memory["history_source"]
        recorded = dict.fromkeys((str(u["Unit"]) for u in snapshot.units), ()) \
            if snapshot.history_source == "journal" else None
        return observe_all(snapshot.units, memory, recorded, clock=(snapshot.wall, snapshot.monotonic))
    from .read_journal import read_failures, remembered_source

    reading = read_failures(changed, before, memory.get("wall"), deadline, run)
    snapshot.history_source = remembered_source(reading.source, memory.get("history_source"))
    snapshot.warnings += reading.warnings
    recorded = reading.recorded
    recorded.update(dict.fromkeys(reading.waiting, ()))
    if snapshot.history_source == "journal":  # a unit that did not move had no failure: nothing to infer
        recorded.update(dict.fromkeys({str(u["Unit"]) for u in snapshot.units} - {str(u["Unit"]) for u in changed}, ()))
    records = observe_all(snapshot.units, memory, recorded, reading.runs, (snapshot.wall, snapshot.monotonic))
    for name in reading.waiting:
        records[name] = wait_for_journal(records[name], before[name])
    for name, cursor in reading.cursors.items():
        if cursor:
            records[name]["cursor"] = cursor
    return records

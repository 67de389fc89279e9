# SPDX-License-Identifier: MIT
"""Failure events from systemd's own record: what PID 1 wrote to the journal about the units
that moved since the last tick, read with `journalctl -o json`, and what they say happened.

A tick reads the journal only for units whose NRestarts or StateChangeTimestamp moved since
their record (history.moved): a steady tick never runs journalctl. PID 1's structured entries
(systemd's src/systemd/sd-messages.h; seen on 252 and 257, tests/fixtures/journal-*):

    98e322203f7a4ed290d09fe03c09fe15  "Main process exited" / "Control process exited":
                                      EXIT_CODE (exited, killed, dumped), EXIT_STATUS
    d9b373ed55a64feb8242e02dbe79a49c  "Failed with result": UNIT_RESULT
    5eb03494b6584870a536b337290809b3  "Scheduled restart job, restart counter is at N": N_RESTARTS
    (no MESSAGE_ID)                   "Start request repeated too quickly.": the start limit
    7ad2d189f7e94e70a38c781354912448  "Deactivated successfully.": a run that ended well
    7d4958e842da4a758f6c1cdc7b36dcc5  "Starting X..." (JOB_TYPE=start): a run begins (a job
                                      that waits: oneshot, ExecStartPre)
    39f53479d3a045ac8e11786248231fbf  "Started X" / "Finished X" (JOB_TYPE=start): a run
                                      began (without a "Starting") / a oneshot's run ended

Each entry carries the run's INVOCATION_ID. At a start-limit hit systemd logs "Failed with
result" a second time for the same run: that is the same failure, now given up on.

Where each unit's reading stops is its cursor (the journal's __CURSOR of the last entry read
for it), kept in its history record: the next reading starts after it.
"""
from .model import HISTORY_SOURCE_NAMES, HeartbeatError
from .values import as_int, is_cursor, is_result, parse_timestamp, same_moment

PROCESS_EXITED = "98e322203f7a4ed290d09fe03c09fe15"
UNIT_FAILED = "d9b373ed55a64feb8242e02dbe79a49c"
RESTART_SCHEDULED = "5eb03494b6584870a536b337290809b3"
UNIT_SUCCEEDED = "7ad2d189f7e94e70a38c781354912448"
JOB_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"
JOB_DONE = "39f53479d3a045ac8e11786248231fbf"
START_LIMIT_HIT = "Start request repeated too quickly."
EXIT_CODES = {"exited": 1, "killed": 2, "dumped": 3}  # EXIT_CODE as systemd words it -> ExecMainCode
OUTPUT_MAX = 16 << 20  # a reading past this is not one tick's events: the tick infers instead


class JournalUnreadable(HeartbeatError):
    """The journal could not be read (no permission, no journalctl, garbage): infer instead."""


class Failure:
    """One failure, as systemd recorded it: when (the "Failed with result" entry, Unix seconds),
    its Result, the exit that caused it (0, 0 without one), whether systemd then gave up
    restarting (the start limit refused the restart)."""

    __slots__ = ("at", "result", "exit_code", "exit_status", "gave_up", "run", "new")

    def __init__(self, at: float, result: str, exit_code: int, exit_status: int, run: str, new: bool = True):
        self.at, self.result, self.exit_code, self.exit_status, self.run = at, result, exit_code, exit_status, run
        self.gave_up = result == "start-limit-hit"
        self.new = new  # False: the failure an earlier tick read (failures' `before`)

    def __repr__(self) -> str:
        return f"Failure({self.at!r}, {self.result!r}, {self.exit_code}, {self.exit_status}, gave_up={self.gave_up})"


def journal_command(names: list[str], cursor: "str | None", since: "float | None") -> list[str]:
    """journalctl for PID 1's entries about `names`, from `cursor` on (else since `since`, else
    this boot). --cursor, not --after-cursor: journalctl 252 skips the first entry that matches
    after the cursor when the cursor's own entry does not match (seen on every capture,
    tests/fixtures/journal-findings.md); by_unit drops the cursor's own entry instead."""
    start = [f"--cursor={cursor}"] if cursor else [f"--since=@{since:.6f}"] if since else ["--boot"]
    return ["journalctl", "--output=json", "--no-pager", "--quiet", *start, "_PID=1",
            *(f"UNIT={name}" for name in names)]


def parse_entries(text: str) -> list[dict]:
    """journalctl's JSON lines -> entries; a field journalctl shows as an array of byte values
    (not UTF-8) or a list (repeated) is left out. JournalUnreadable for anything that is not
    JSON lines of objects."""
    import json  # only on a tick that reads the journal: json imports re (4 ms)

    entries = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            raise JournalUnreadable("journalctl printed something that is not JSON") from None
        if not isinstance(entry, dict):
            raise JournalUnreadable("journalctl printed JSON that is not an entry")
        entries.append({key: value for key, value in entry.items() if isinstance(value, str)})
    return entries


def entry_time(entry: dict) -> "float | None":
    """When the entry was written, Unix seconds (journald's __REALTIME_TIMESTAMP, µs)."""
    micros = as_int(entry.get("__REALTIME_TIMESTAMP"))
    return micros / 1e6 if micros is not None and 0 < micros < 1 << 62 else None


def failures(entries: list[dict], before: "Failure | None" = None) -> list[Failure]:
    """The failures one unit's entries record, oldest first, each counted once: a "Failed with
    result" entry, with the last process exit of the same run before it. A second one for the
    same run and Result (the start limit's, and one for every start it refuses after) is not a
    failure of its own. A failure after which the start limit refused a start is given up on; a
    restart scheduled after it means it was not (yet). `before`: the unit's last failure read at
    an earlier tick (its run and Result, new=False), which entries read now may repeat or give
    up on: it comes first, its gave_up updated."""
    found: list[Failure] = [before] if before else []
    exits: dict[str, tuple[int, int]] = {}
    refused = False  # the entry before was the start limit's refusal
    for entry in entries:
        message_id, run = entry.get("MESSAGE_ID"), entry.get("INVOCATION_ID", "")
        after_refusal, refused = refused, False
        if message_id == PROCESS_EXITED:
            code, status = EXIT_CODES.get(entry.get("EXIT_CODE", "")), as_int(entry.get("EXIT_STATUS"))
            if code is not None and status is not None and 0 <= status <= 255:
                exits[run] = (code, status)
        elif message_id == UNIT_FAILED:
            at, result = entry_time(entry), entry.get("UNIT_RESULT")
            if at is None or not is_result(result):
                continue
            if found and run and found[-1].run == run and found[-1].result == result:
                continue  # the start limit's repeat of this run's failure
            if after_refusal and result != "start-limit-hit":
                # the same repeat of a failure an earlier tick inferred (its run not known): the
                # refusal's own "Failed with result" carries the last run's Result, never a new run
                if found:
                    found[-1].gave_up = True
                continue
            code, status = exits.pop(run, (0, 0))
            found.append(Failure(at, result, code, status, run))
        elif message_id == RESTART_SCHEDULED:
            if found:
                found[-1].gave_up = False
        elif entry.get("MESSAGE", "").endswith(START_LIMIT_HIT):
            refused = True
            if found:
                found[-1].gave_up = True
    return found


class Runs:
    """A unit's runs in the entries read: when each run that something started began
    (`started`: (time, INVOCATION_ID), each run once; not the restarts systemd made of it) and
    when each run that ended well ended (`succeeded`: times, restarts' runs too), oldest first."""

    __slots__ = ("started", "succeeded")

    def __init__(self, started: list, succeeded: list):
        self.started, self.succeeded = started, succeeded


def runs(entries: list[dict]) -> Runs:
    """A run begins with its start job's "Starting" or, for a job that does not wait, its
    "Started" (a new INVOCATION_ID: "Finished", a oneshot's end, repeats the "Starting"'s);
    it ended well with "Deactivated successfully." (PID 1's words are never translated). A
    run after "Scheduled restart job" is systemd's restart (Restart=), not a start from outside
    (a timer's trigger): left out of `started`."""
    started, succeeded, seen = [], [], set()
    restarting = False
    for entry in entries:
        message_id, at = entry.get("MESSAGE_ID"), entry_time(entry)
        if at is None:
            continue
        if message_id == UNIT_SUCCEEDED:
            succeeded.append(at)
        elif message_id == RESTART_SCHEDULED:
            restarting = True
        elif entry.get("JOB_TYPE") == "start" and (message_id == JOB_STARTING or (
                message_id == JOB_DONE and entry.get("MESSAGE", "").startswith("Started "))):
            run = entry.get("INVOCATION_ID", "")
            if run not in seen:
                seen.add(run)
                if not restarting:
                    started.append((at, run))
            restarting = False
    return Runs(started, succeeded)


def last_failure(record: "dict | None") -> "Failure | None":
    """The failure a unit's record holds, as the journal recorded it (its run known)."""
    if not record or not record.get("run") or not record.get("failed_at"):
        return None
    failure = Failure(record["failed_at"], record.get("result", "unknown"), record.get("failure_code", 0),
                      record.get("failure_status", 0), record["run"], new=False)
    failure.gave_up = bool(record.get("gave_up"))
    return failure


def by_unit(entries: list[dict], starts: dict) -> dict[str, list[dict]]:
    """Each unit's entries from where its reading starts (`starts`: name -> its cursor, whose own
    entry an earlier tick read; or a time, Unix seconds; or None, all). A unit whose cursor's
    entry is not among them (the reading started after it) gets them all."""
    grouped: dict[str, list[dict]] = {name: [] for name in starts}
    for entry in entries:
        name = entry.get("UNIT")
        if name in grouped:
            grouped[name].append(entry)
    for name, start in starts.items():
        if isinstance(start, str):
            for position, entry in enumerate(grouped[name]):
                if entry.get("__CURSOR") == start:
                    grouped[name] = grouped[name][position + 1:]
                    break
        elif start is not None:
            grouped[name] = [e for e in grouped[name] if (entry_time(e) or 0.0) >= start]
    return grouped


def earliest_cursor(cursors: list[str]) -> "str | None":
    """The cursor that comes first in the journal: by the sequence number (i=) within one
    sequence (s=); None when they are not of one sequence (the reading then goes by time)."""
    keyed = []
    for cursor in cursors:
        fields = dict(part.partition("=")[::2] for part in cursor.split(";"))
        try:
            keyed.append((fields.get("s"), int(fields.get("i", ""), 16), cursor))
        except ValueError:
            return None
    if len({key[0] for key in keyed}) != 1:
        return None
    return min(keyed)[2]


def read_events(starts: dict, deadline, run) -> dict[str, list[dict]]:
    """Each unit's entries from where its reading starts (`starts`: name -> cursor, time or None
    for this boot), in one journalctl: from the earliest cursor when every unit has one, else
    from the earliest time, else this boot. JournalUnreadable when the journal cannot be read."""
    cursors = [start for start in starts.values() if isinstance(start, str)]
    times = [start for start in starts.values() if isinstance(start, float)]
    cursor = earliest_cursor(cursors) if len(cursors) == len(starts) else None
    since = min(times) if times and None not in starts.values() and cursor is None else None
    if cursor is None and since is not None and cursors:
        since = min([since] + [cursor_time(c) for c in cursors])
    try:
        text = run(journal_command(list(starts), cursor, since), deadline)
    except HeartbeatError as error:
        raise JournalUnreadable(str(error)) from None
    if len(text) > OUTPUT_MAX:
        raise JournalUnreadable(f"journalctl printed more than {OUTPUT_MAX >> 20} MiB")
    return by_unit(parse_entries(text), starts)


def cursor_time(cursor: str) -> float:
    """The time a cursor's entry was written (its t= field, µs in hex), or 0 (from the boot on)."""
    fields = dict(part.partition("=")[::2] for part in cursor.split(";"))
    try:
        return int(fields.get("t", ""), 16) / 1e6 - 1.0
    except ValueError:
        return 0.0


def journal_readable() -> bool:
    """Whether this process may read the system journal: its current file, persistent or
    volatile, is readable to us (root, or the systemd-journal or adm group; seen to hold inside
    the role's sandbox, PrivateUsers= included). Without that right journalctl exits 1 ("No
    journal files were opened due to insufficient permissions."): asking first spares a child."""
    import posix

    from .syscalls import lexists

    try:
        with open("/etc/machine-id", "rb") as handle:
            machine = handle.read(64).strip().decode("ascii")
    except (OSError, UnicodeDecodeError):
        return False
    for base in ("/var/log/journal", "/run/log/journal"):
        path = f"{base}/{machine}/system.journal"
        if lexists(path):
            return posix.access(path, posix.R_OK)
    return False


def explained(unit: dict, before: "dict | None", entries: list[dict]) -> bool:
    """Whether the entries account for what the state shows moved: a rise of NRestarts by a
    restart systemd logged at that count; a unit that entered failed (or waits for its restart
    after a failure) since its record, by a "Failed with result". Not, when journald has not
    stored the entries yet (it takes them from PID 1 a moment later) or lost them."""
    restarts = as_int(unit.get("NRestarts"))
    if before is not None and restarts is not None and restarts > before.get("restarts", restarts):
        if restarts not in {as_int(e.get("N_RESTARTS")) for e in entries if e.get("MESSAGE_ID") == RESTART_SCHEDULED}:
            return False
    failing = unit.get("ActiveState") == "failed" or (
        str(unit.get("SubState", "")).startswith(("auto-restart", "failed-before")) and unit.get("Result") != "success")
    if failing and (before is None or not same_moment(parse_timestamp(unit.get("StateChangeTimestamp")) or 0.0,
                                                      before.get("changed", 0.0))):
        return any(e.get("MESSAGE_ID") == UNIT_FAILED for e in entries)
    return True


class JournalReading:
    """What one tick read of the journal: `recorded` (unit -> its failures, oldest first, for
    each unit whose record the journal explains), `waiting` (units whose entries journald has
    not stored yet: their records wait for the next tick, history.wait_for_journal),
    `runs` (unit -> its Runs in the entries, for the same units), `cursors` (unit -> cursor of
    the last entry read for it), `source` ("journal",
    "inferred", or None when nothing moved and the journal was not asked), `warnings`."""

    __slots__ = ("recorded", "runs", "waiting", "cursors", "source", "warnings")

    def __init__(self):
        self.recorded, self.runs, self.waiting, self.cursors, self.source, self.warnings = {}, {}, set(), {}, None, []


def read_failures(units: list[dict], records: dict, previous_look: "float | None", deadline, run=None,
                  settle: float = 0.2, readable=None) -> JournalReading:
    """The journal's failures of `units` (those that moved since their records: history.moved),
    in one journalctl (and once more, `settle` s later, for units whose entries journald had
    not stored yet). A unit with a record whose entries are still missing then waits for the
    next tick, once (`waiting`): journald under load can take longer than `settle`, and a
    failure inferred now would be placed at the state change (a start limit's refusal, not
    the run that failed) and counted again when its entries are read.
    Within half of what is left of the tick's deadline: a journal slower than that costs the
    exactness of this tick (the failures are inferred), not the tick."""
    from .model import Deadline

    reading = JournalReading()
    names = [str(u["Unit"]) for u in units]
    if not names:
        return reading
    reading.source = "inferred"
    if not (readable or journal_readable)():
        return reading
    if run is None:  # journalctl as a child process, as systemctl is (imports os: only now)
        from .read_systemctl import run_command as run
    budget = Deadline(deadline.remaining("reading the journal") / 2)
    by_name = {str(u["Unit"]): u for u in units}
    # where each unit's reading starts: after its cursor; a unit with a record but no cursor
    # (inferred so far) from the last look, so nothing counted already is counted again; a unit
    # seen for the first time, from the boot
    starts = {name: records[name].get("cursor") or (previous_look - 1.0 if previous_look else 0.0)
              if name in records else None for name in names}
    try:
        entries = read_events(starts, budget, run)
        waiting = [n for n in names if not explained(by_name[n], records.get(n), entries[n])]
        if waiting and budget.remaining("reading the journal") > settle:
            import time

            time.sleep(settle)
            entries.update(read_events({name: starts[name] for name in waiting}, budget, run))
    except HeartbeatError as error:  # unreadable, or its half of the deadline spent
        reading.warnings.append(f"cannot read the journal ({str(error)[:160]}): failures inferred this tick")
        return reading
    for name in names:
        if explained(by_name[name], records.get(name), entries[name]):
            reading.recorded[name] = failures(entries[name], last_failure(records.get(name)))
            reading.runs[name] = runs(entries[name])
        elif name in records and not records[name].get("waited"):
            reading.waiting.add(name)
            continue  # its cursor stays where it was: the next tick reads these entries again
        if entries[name]:
            reading.cursors[name] = entries[name][-1].get("__CURSOR") if is_cursor(entries[name][-1].get("__CURSOR")) \
                else None
    reading.source = "journal" if len(reading.recorded) + len(reading.waiting) == len(names) else "inferred"
    return reading


def remembered_source(read: "str | None", remembered: "str | None") -> str:
    """Where this tick's failures come from: what the reading found; when nothing moved (the
    journal was not asked), what the last tick found, or whether the journal is readable."""
    if read:
        return read
    if remembered in HISTORY_SOURCE_NAMES:
        return remembered
    return "journal" if journal_readable() else "inferred"

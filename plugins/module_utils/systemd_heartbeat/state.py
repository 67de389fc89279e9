# SPDX-License-Identifier: MIT
"""The state directory: what the last push held (so series that end get a staleness marker,
and calendar timers keep their period), and the one way files are written there.

Nothing in the directory is trusted: a file is read only if it is a regular file (never
through a symlink, never a FIFO that would block), every value is checked for its type
before use, and files are written under a fresh name created exclusively, then renamed.
"""
import posix
import struct
import zlib

# pylint: disable=unidiomatic-typecheck
# type(x) is T, not isinstance: a remembered value must be exactly what history.py writes (a
# bool is not a count), and the checks run for every field of every record at every tick.

from .syscalls import is_regular, join
from .model import DROP_REASONS, HISTORY_SOURCE_NAMES, HeartbeatError
from .triggers import LATENESS_BOUNDS
from .units import is_unit_name
from .values import INT_MAX, is_cursor, is_finite, is_result

# marshal, not json: json imports re (with enum, functools, collections), 4 ms of every tick.
# The file is private to the service (StateDirectoryMode=0700, UMask=0077) and starts with the
# CRC-32 of the rest: marshal trusts the lengths it reads, and a corrupt one could make it
# allocate for seconds. A file that fails the check or that marshal cannot read (written by
# another Python version) only costs one tick's staleness markers.
MEMORY_FILE = "last-push.marshal"
LEGACY_MEMORY_FILE = "last-push.json"  # written before 0.2; read once, then replaced
READ_MAX = 64 << 20
# O_NOFOLLOW: a symlink is not ours; O_NONBLOCK: opening a FIFO must not wait for a writer
READ_FLAGS = posix.O_RDONLY | posix.O_NOFOLLOW | posix.O_NONBLOCK | posix.O_CLOEXEC
# O_EXCL|O_NOFOLLOW: a fresh name of our own, never a planted file or symlink
WRITE_FLAGS = posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC


def read_regular_file(path: str, limit: int = READ_MAX) -> bytes:
    """A regular file's bytes; OSError for anything else (symlink, FIFO, directory, too big)."""
    descriptor = posix.open(path, READ_FLAGS)
    try:
        status = posix.fstat(descriptor)
        if not is_regular(status.st_mode):
            raise OSError(0, "not a regular file")
        if status.st_size > limit:
            raise OSError(0, f"larger than {limit} bytes")
        chunks, size = [], 0
        while True:
            chunk = posix.read(descriptor, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise OSError(0, f"larger than {limit} bytes")
            chunks.append(chunk)
    finally:
        posix.close(descriptor)


def write_atomically(directory: str, name: str, data: bytes) -> None:
    """Write `name` in `directory` so that it is whole or absent: a fresh temporary name
    created exclusively (O_EXCL|O_NOFOLLOW: a planted symlink is never written through), then
    renamed over the old file (rename replaces a symlink, it does not follow it). On any
    failure (a full disk) the temporary file is removed."""
    temporary = join(directory, f".{name}.{posix.getpid()}.{posix.urandom(4).hex()}.tmp")
    descriptor = posix.open(temporary, WRITE_FLAGS, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[posix.write(descriptor, view):]
        finally:
            posix.close(descriptor)
        posix.replace(temporary, join(directory, name))
    except BaseException:
        try:
            posix.unlink(temporary)
        except OSError:
            pass
        raise


# One run at a time per state directory: a tick holds a POSIX record lock (lockf) on LOCK_FILE
# from before it loads the state until it exits (the kernel releases it however the process
# ends, SIGKILL included). A run by hand beside the timer's waits for it, within its deadline.
LOCK_FILE = "lock"
LOCK_FLAGS = posix.O_RDWR | posix.O_CREAT | posix.O_NOFOLLOW | posix.O_CLOEXEC
# There while a tick loads the state file (begin_load .. end_load, a few ms under the lock). A
# tick killed there may have been killed by the file itself: marshal can take minutes, and no
# deadline or cap stops it, to hash a crafted set. The next tick tries the file once more (a
# SIGTERM at shutdown lands there now and then, and costs nothing); found a second time, the
# file is set aside. A tick killed anywhere else leaves the state file as the last complete
# tick wrote it (write_atomically): it costs that tick only.
LOADING = "loading"
LOADING_AGAIN = "loading-again"
MARK_FLAGS = posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC
SET_ASIDE_SUFFIX = ".set-aside"


class StateBusy(HeartbeatError):
    """Another run holds the state directory past this run's wait (cli says so in one line)."""


_held: "dict[str, int]" = {}  # state directory -> the descriptor its lock is held through


def lock_state(state_dir: str, wait: float) -> None:
    """Hold the state directory's lock until unlock_state or the process's exit. StateBusy if
    another run still holds it after `wait` seconds; nothing when the lock file cannot be
    opened (a directory we cannot write: the tick says so when it remembers)."""
    import time

    try:
        descriptor = posix.open(join(state_dir, LOCK_FILE), LOCK_FLAGS, 0o600)
    except OSError:
        return
    give_up = time.monotonic() + wait
    while True:
        try:
            posix.lockf(descriptor, posix.F_TLOCK, 0)
            _held[state_dir] = descriptor
            return
        except OSError:
            if time.monotonic() >= give_up:
                posix.close(descriptor)
                raise StateBusy(f"another run holds the state directory {state_dir} (its lock file "
                                f"{LOCK_FILE}); this run leaves it alone and pushes nothing") from None
            time.sleep(0.05)


def unlock_state(state_dir: str) -> None:
    """Let the next run have the directory (the program's exit does it too)."""
    descriptor = _held.pop(state_dir, None)
    if descriptor is not None:
        posix.close(descriptor)


def begin_load(state_dir: str) -> "str | None":
    """Mark the state file as being loaded; a warning if the last two ticks died loading it
    (then it is set aside, and this tick starts without it)."""
    try:
        posix.close(posix.open(join(state_dir, LOADING), MARK_FLAGS, 0o600))
        return None  # the usual case: one system call
    except FileExistsError:
        pass
    except OSError:
        return None  # a state directory we cannot write: the tick says so when it remembers
    try:  # killed once while loading: try again, once
        posix.close(posix.open(join(state_dir, LOADING_AGAIN), MARK_FLAGS, 0o600))
        return None
    except OSError:
        pass
    end_load(state_dir)
    aside = set_aside(state_dir, MEMORY_FILE)
    try:
        posix.close(posix.open(join(state_dir, LOADING), MARK_FLAGS, 0o600))
    except OSError:
        pass
    return None if aside is None else (f"the last two ticks died while loading {MEMORY_FILE} (killed at "
                                       f"their deadline?): it is set aside as {aside}; this tick starts without it")


def end_load(state_dir: str) -> None:
    for name in (LOADING_AGAIN, LOADING):
        try:
            posix.unlink(join(state_dir, name))
        except OSError:
            pass


def set_aside(state_dir: str, name: str) -> "str | None":
    """Rename a state file that cannot be used to NAME.set-aside (replacing the one set aside
    before), for a person to look at; its new name, or None if there was none."""
    try:
        posix.replace(join(state_dir, name), join(state_dir, name + SET_ASIDE_SUFFIX))
    except OSError:
        return None
    return name + SET_ASIDE_SUFFIX


# The loader's caps follow --timeout. Loading a state file, checking it, and ending its series
# (a staleness marker each, encoded and pushed) costs about 10 us per series on the 2-core lab
# machine (BENCHMARKS.md); a host four times slower still does 10,000 series in a quarter of a
# second. So a file may hold up to SERIES_PER_SECOND series and history records per second of
# the timeout (and at least MIN_SERIES), a quarter of the deadline on such a host, and take
# BYTES_PER_SERIES each; the state file the heartbeat writes is held to the same caps.
SERIES_PER_SECOND = 10_000
MIN_SERIES = 5_000
MAX_SERIES = 200_000
BYTES_PER_SERIES = 256


def series_cap(timeout: float) -> int:
    return max(MIN_SERIES, min(MAX_SERIES, int(timeout * SERIES_PER_SECOND)))


def load_memory(state_dir: "str | None", timeout: float = 10.0, warnings: "list | None" = None,
                set_aside_bad: bool = False) -> dict:
    """The last successful push's series, timer intervals, calendar periods, drop counts and
    history records; empty when unknown. Whatever the file holds, this returns: a file that
    cannot be read as ours, or that is past the caps for `timeout`, is left out with one
    warning (and set aside with `set_aside_bad`: the tick's own run, which owns the
    directory), and a record or entry that fails its check is dropped with a warning naming
    it. `warnings` collects those lines."""
    warnings = [] if warnings is None else warnings
    if not state_dir:
        return well_formed({})
    cap = series_cap(timeout)
    name = MEMORY_FILE
    try:
        try:
            memory = read_memory_file(state_dir, cap)
        except FileNotFoundError:
            name = LEGACY_MEMORY_FILE
            memory = load_legacy_memory(state_dir, cap)
        return well_formed(memory, cap, warnings)
    except FileNotFoundError:
        return well_formed({})
    except Exception as error:  # noqa: BLE001 - anything a file can make a loader raise:
        # OSError, EOFError, ValueError, TypeError, SystemError (marshal), RecursionError
        # (deep JSON), MemoryError (under LimitAS=), UnicodeError, BadStateFile
        reason = (error.strerror or str(error)) if isinstance(error, OSError) else \
            str(error) if isinstance(error, BadStateFile) else type(error).__name__
        aside = set_aside(state_dir, name) if set_aside_bad else None
        warnings.append(f"{name} in {state_dir} cannot be used ({reason[:160]})"
                        + (f": set aside as {aside}" if aside else "") + "; this tick starts without it")
        return well_formed({})


class BadStateFile(ValueError):
    """A state file that is not one of ours, or past the caps."""


def read_memory_file(state_dir: str, cap: int):
    try:
        data = read_regular_file(join(state_dir, MEMORY_FILE), cap * BYTES_PER_SERIES)
    except OSError as error:
        if error.errno or isinstance(error, FileNotFoundError):
            raise
        raise BadStateFile(f"{error.strerror}, the most its --timeout allows") from None
    if len(data) < 4 or struct.unpack_from("<I", data)[0] != zlib.crc32(data[4:]):
        raise BadStateFile("its CRC-32 does not match: corrupt, or not written by the heartbeat")
    import marshal

    return loads_bounded(marshal.loads, data[4:])


# marshal's codes for a list and a tuple (with and without the reference flag 0x80), each
# followed by a 4-byte element count that marshal allocates for before it reads one element.
# (It reads sets and dicts element by element, and checks a string's or a long's length
# against the data left: those cost nothing to lie about.)
CONTAINER_CODES = b"[(\xdb\xa8"
# The service runs under LimitAS= of this much (the role's unit file): a crafted count is a
# MemoryError at once, or at worst one allocation of this size, with no set-up by the tick.
ADDRESS_SPACE_CAPPED = 512 << 20


def may_overallocate(data: bytes) -> bool:
    """Whether the 4-byte counts after list and tuple codes add up to more than the data could
    hold (each element takes a byte at least; nested containers each claiming a little less
    than that would add up to gigabytes). Our own files stay below, but a byte inside a float,
    a string or a reference often looks like a code: then the load is capped (loads_bounded)."""
    total = len(data)
    for code in CONTAINER_CODES:
        position = data.find(code)
        while position != -1:
            total -= int.from_bytes(data[position + 1:position + 5], "little")
            if total < 0:
                return True
            position = data.find(code, position + 1)
    return False


def address_space_capped() -> bool:
    """Whether this process already runs under a cap on its address space no larger than
    ADDRESS_SPACE_CAPPED (the service does: one small read instead of an import and three
    system calls)."""
    try:
        with open("/proc/self/limits", "rb") as handle:
            for line in handle:
                if line.startswith(b"Max address space"):
                    soft = line.split()[3]
                    return soft.isdigit() and int(soft) <= ADDRESS_SPACE_CAPPED
    except OSError:
        pass
    return False


def loads_bounded(loads, data: bytes):
    """marshal.loads, with what it may allocate capped. marshal trusts the element counts it
    reads, and a crafted file (the CRC only guards against corruption) can ask for a tuple of
    2**31 elements: seconds of allocating and freeing. Under a cap on the address space that
    is a MemoryError at once. Setting the cap costs an import and three system calls, so it is
    set only when a count looks impossible and the process has no such cap already."""
    if not may_overallocate(data) or address_space_capped():
        return loads(data)
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm", "rb") as handle:
        mapped = int(handle.read().split()[0]) * posix.sysconf("SC_PAGE_SIZE")
    cap = mapped + (64 << 20) + 64 * len(data)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        return loads(data)  # already as tight
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        return loads(data)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# How far ahead of the wall clock a remembered time may lie. Any further, and the clock stepped
# back since it was recorded (or the file was crafted): such a record is dropped, not kept as a
# "last failure" in the future that would hide every real failure until the clock caught up.
CLOCK_SLACK = 60.0
INTERVAL_MAX = 10 * 366 * 86400.0  # the longest timer period or calendar gap that is kept
COUNT_MAX = 1 << 53  # a drop count past this is not one the heartbeat made


# A history record's fields (history.py) and what each must be: a time (0 <= t <= now + slack),
# a count (NRestarts), an exit code (0 none, 1 exited, 2 killed, 3 dumped), an exit status (an
# exit code 0-255 or a signal's number), a flag, a result (one of systemd's, or "unknown": a
# failure seen only through NRestarts). A record with a field that is not is dropped whole (a
# warning names it): a record is one unit's story, and half of one (a failure time without its
# reason) would be pushed as a different story.
# A timer's (triggers.py): the unit it starts, an elapse (which lies ahead: up to INTERVAL_MAX),
# a lateness (either sign, up to INTERVAL_MAX), the lateness histogram's bucket counts and sum.
TIME, COUNT, EXIT_CODE, EXIT_STATUS, FLAG, RESULT, CURSOR, COUNTS, RUN, UNIT_NAME, SCHEDULE, SECONDS, BUCKETS, \
    SECONDS_SUM = range(14)
RECORD_FIELDS = {
    "changed": TIME, "entered": TIME, "failed_at": TIME, "restarts": COUNT,
    "pending": FLAG, "gave_up": FLAG, "exit_code": EXIT_CODE, "exit_status": EXIT_STATUS,
    "failure_code": EXIT_CODE, "failure_status": EXIT_STATUS, "result": RESULT,
    "cursor": CURSOR, "failures": COUNTS, "run": RUN, "waited": FLAG,
    "successes": COUNT, "succeeded_at": TIME, "exit_seen": TIME, "started_run": RUN,
    "service": UNIT_NAME, "triggers": COUNT, "triggered_at": TIME, "scheduled": SCHEDULE, "lateness": SECONDS,
    "late_counts": BUCKETS, "late_sum": SECONDS_SUM,
}


def field_ok(kind: int, value, latest: float) -> bool:
    """Whether `value` passes the check of its field's kind; `latest` is now + slack. Written
    out, not one function per kind: it runs for every field of every record at every tick."""
    if kind == TIME:
        return type(value) is float and 0 <= value <= latest
    if kind == COUNT:
        return type(value) is int and 0 <= value <= INT_MAX
    if kind == EXIT_STATUS:
        return type(value) is int and 0 <= value <= 255
    if kind == EXIT_CODE:
        return type(value) is int and 0 <= value <= 3
    if kind == FLAG:
        return type(value) is bool
    if kind == CURSOR:  # where the journal's reading of the unit stopped (read_journal)
        return is_cursor(value)
    if kind == RUN:  # the last failure's INVOCATION_ID (128 bits in hex), as the journal has it
        return type(value) is str and len(value) <= 32 and value.isascii() and value.isalnum()
    if kind == UNIT_NAME:
        return type(value) is str and is_unit_name(value)
    if kind == SCHEDULE:
        return type(value) is float and 0 <= value <= latest + INTERVAL_MAX
    if kind == SECONDS:
        return type(value) is float and -INTERVAL_MAX <= value <= INTERVAL_MAX
    if kind == SECONDS_SUM:
        return type(value) is float and -INTERVAL_MAX * INT_MAX <= value <= INTERVAL_MAX * INT_MAX
    if kind == BUCKETS:
        return type(value) is tuple and len(value) == len(LATENESS_BOUNDS) + 1 and all(
            type(n) is int and 0 <= n <= INT_MAX for n in value)
    if kind == COUNTS:  # systemd_unit_failures_total: a count per Result
        return type(value) is dict and len(value) <= 32 and all(
            (k == "unknown" or is_result(k)) and type(n) is int and 0 <= n <= INT_MAX for k, n in value.items())
    return value == "unknown" or is_result(value)


def checked_record(record, now: float) -> "tuple[dict | None, str]":
    """(the record with its known fields, ""), or (None, what is wrong with it). Fields this
    version does not know (a newer one's) are left out."""
    if type(record) is not dict:
        return None, f"not a record ({type(record).__name__})"
    latest, unknown = now + CLOCK_SLACK, False
    for key, value in record.items():
        kind = RECORD_FIELDS.get(key) if type(key) is str else None
        if kind is None:
            unknown = True
        elif not field_ok(kind, value, latest):
            future = kind == TIME and type(value) is float and value > now
            return None, f"{key}={value!r:.40}" + (" lies in the future" if future else " fails its check")
    if unknown:
        return {key: value for key, value in record.items() if type(key) is str and key in RECORD_FIELDS}, ""
    return record, ""


def well_formed(memory, cap: int = MAX_SERIES, warnings: "list | None" = None, now: "float | None" = None) -> dict:
    """What passes its checks, entry by entry: a bad entry costs itself, not the rest, and
    each one dropped is named in `warnings`. BadStateFile if the file holds more series or
    records than `cap`. A series is (name, kind, labels) with a tuple of labels; the labels'
    own shape, (key, value) string pairs, is checked only where it matters
    (shape.staleness_markers, for a series that matches none pushed now): checking every pair
    here costs 1,000 units a ms."""
    import time

    warnings = [] if warnings is None else warnings
    now = time.time() if now is None else now
    if not isinstance(memory, dict):
        memory = {}
    series = memory.get("series")
    if isinstance(series, (list, tuple)) and len(series) > cap:
        raise BadStateFile(f"{len(series)} series, more than the {cap} its --timeout allows")
    checked = {"series": [entry for entry in series  # _is_series, inline: it runs for every series
                          if isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[0], str)
                          and entry[1] in ("gauge", "counter", "histogram") and isinstance(entry[2], tuple)]
               if isinstance(series, (list, tuple)) else []}
    for key in ("intervals", "calendar"):
        table = memory.get(key)
        checked[key] = {k: v for k, v in table.items() if isinstance(k, str) and is_finite(v) and 0 < v <= INTERVAL_MAX} \
            if isinstance(table, dict) else {}
        if isinstance(table, dict) and len(checked[key]) < len(table):
            warnings.append(f"state: dropped {len(table) - len(checked[key])} of the remembered {key} (not a "
                            f"period of up to {INTERVAL_MAX:g} s)")
    checked["spool_dropped"] = checked_drops(memory.get("spool_dropped"), warnings)
    wall = memory.get("wall")
    stepped_back = wall - now if isinstance(wall, float) and wall > now + CLOCK_SLACK else 0.0
    checked["units"] = checked_records(memory.get("units"), cap, now, warnings, stepped_back)
    if field_ok(TIME, wall, now + CLOCK_SLACK):
        checked["wall"] = wall
    if memory.get("history_source") in HISTORY_SOURCE_NAMES:
        checked["history_source"] = memory["history_source"]
    return checked


def checked_drops(dropped, warnings: list) -> dict:
    """The spool's drop counts: one of model.DROP_REASONS each, a count the heartbeat made."""
    if not isinstance(dropped, dict):
        return {}
    checked = {k: int(v) for k, v in dropped.items() if k in DROP_REASONS and is_finite(v) and 0 <= v < COUNT_MAX}
    bad = [k for k in dropped if k not in checked]
    if bad:
        warnings.append(f"state: dropped the spool drop counts of {named(bad)} (an unknown reason, or not a count)")
    return checked


def checked_records(units, cap: int, now: float, warnings: list, stepped_back: float = 0.0) -> dict:
    """The history records that pass their checks. Those that fail are dropped, named in one
    warning; when the wall clock stepped back since the last tick (`stepped_back` seconds),
    the records with times past now are dropped as well, and one warning says why."""
    if not isinstance(units, dict):
        return {}
    if len(units) > cap:
        raise BadStateFile(f"{len(units)} history records, more than the {cap} its --timeout allows")
    checked, bad, future = {}, [], []
    for name, record in units.items():
        record, wrong = checked_record(record, now) if isinstance(name, str) else (None, "not a unit name")
        if record is not None:
            checked[name] = record
        elif stepped_back and wrong.endswith("lies in the future"):
            future.append(name)
        else:
            bad.append(f"{name!r:.80}: {wrong}")
    if stepped_back:
        warnings.append(f"state: the wall clock stepped back {stepped_back:.0f} s since the last tick"
                        + (f"; the history of {named(future)}, with times past now, starts again from what "
                           f"systemd says now" if future else ""))
    if bad:
        warnings.append(f"state: dropped the history of {len(bad)} unit{'s' if len(bad) > 1 else ''}, which "
                        f"starts again from what systemd says now: {named(bad)}")
    return checked


def named(items: list, most: int = 3) -> str:
    """The first few of `items`, and how many more: one line, however many there are."""
    shown = ", ".join(str(item) for item in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def load_legacy_memory(state_dir: str, cap: int) -> dict:
    """The JSON state file version 0.1 wrote (FileNotFoundError without one)."""
    data = read_regular_file(join(state_dir, LEGACY_MEMORY_FILE), cap * BYTES_PER_SERIES)
    import json  # only for this one read: json imports re, 4 ms

    memory = json.loads(data)  # a file nested too deep raises RecursionError: load_memory sets it aside
    if isinstance(memory, dict) and isinstance(memory.get("series"), list):  # JSON has lists, not tuples
        memory["series"] = [(e[0], e[1], tuple(tuple(p) if isinstance(p, list) else p for p in e[2]))
                            for e in memory["series"] if isinstance(e, list) and len(e) == 3 and isinstance(e[2], list)]
    return memory


def pushed_memory(samples: list[tuple], calendar: dict, spool_dropped: dict, history: "dict | None" = None) -> dict:
    """What to remember of a push: its series (not its staleness markers), timer intervals,
    calendar periods, the drop counts, and each unit's history record with the tick's wall
    time (history.py; `history` as {"units": ..., "wall": ...})."""
    return {"series": [(name, kind, labels) for name, kind, labels, value in samples if value is not None],
            "intervals": {dict(labels)["unit"]: value for name, _kind, labels, value in samples
                          if name == "systemd_timer_interval_seconds"},
            "calendar": calendar, "spool_dropped": spool_dropped, **(history or {})}


def remember(state_dir: "str | None", memory: dict, timeout: float = 10.0) -> "str | None":
    """Record it (atomically: a crash never leaves half a file); the legacy file goes. Held to
    the caps the loader applies for `timeout` (else the next tick would set the file aside):
    past them, the series that do not fit are not remembered (they will get no staleness
    marker), and the warning says so."""
    if not state_dir:
        return None
    import marshal

    cap, warning = series_cap(timeout), None
    series = memory.get("series", [])
    pushed = len(series)
    while True:
        data = marshal.dumps(memory)
        if (len(series) <= cap and len(memory.get("units", ())) <= cap and len(data) + 4 <= cap * BYTES_PER_SERIES) \
                or not series:
            break
        kept = min(len(series) // 2, cap)
        warning = (f"the state holds more than --timeout {timeout:g} s allows: {pushed - kept} "
                   f"series not remembered (no staleness marker when they end)")
        memory = dict(memory, series=series[:kept], units=dict(list(memory.get("units", {}).items())[:cap]))
        series = memory["series"]
    write_atomically(state_dir, MEMORY_FILE, struct.pack("<I", zlib.crc32(data)) + data)
    try:
        posix.remove(join(state_dir, LEGACY_MEMORY_FILE))
    except FileNotFoundError:
        pass
    return warning

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

from .syscalls import is_regular, join, lexists
from .values import is_finite, is_word

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


# There while a tick runs (begin_tick .. end_tick). Found by the next tick, it means this one was
# killed before it finished (systemd's TimeoutStartSec=): its state file may be what made it
# hang (marshal takes seconds, and no deadline can stop it, to build a crafted set of nested
# tuples), so the next tick sets the file aside and starts without it, instead of hanging again.
UNFINISHED = "tick-unfinished"
UNFINISHED_MEMORY_FILE = MEMORY_FILE + ".unfinished"
MARK_FLAGS = posix.O_WRONLY | posix.O_CREAT | posix.O_NOFOLLOW | posix.O_CLOEXEC


def begin_tick(state_dir: str) -> "str | None":
    """Mark the state directory as in use by a tick; a warning if the last tick never finished."""
    marker = join(state_dir, UNFINISHED)
    if lexists(marker):
        try:
            posix.replace(join(state_dir, MEMORY_FILE), join(state_dir, UNFINISHED_MEMORY_FILE))
        except OSError:
            return None  # no state file: nothing to set aside
        return (f"the last tick did not finish (killed?): its state file is set aside as "
                f"{UNFINISHED_MEMORY_FILE} and this tick starts without it")
    try:
        posix.close(posix.open(marker, MARK_FLAGS, 0o600))
    except OSError:
        pass  # a state directory we cannot write: the tick says so when it remembers
    return None


def end_tick(state_dir: str) -> None:
    try:
        posix.unlink(join(state_dir, UNFINISHED))
    except OSError:
        pass


def load_memory(state_dir: "str | None") -> dict:
    """The last successful push's series, timer intervals, calendar periods and drop counts;
    empty (or without the entries that are not well formed) when unknown or unreadable."""
    if not state_dir:
        return well_formed({})
    import marshal

    try:
        data = read_regular_file(join(state_dir, MEMORY_FILE))
        checked = len(data) >= 4 and struct.unpack_from("<I", data)[0] == zlib.crc32(data[4:])
        memory = loads_bounded(marshal.loads, data[4:]) if checked else {}
    except FileNotFoundError:
        memory = load_legacy_memory(state_dir)
    except Exception:  # noqa: BLE001 - OSError, or what marshal raises on a crafted file: EOFError,
        memory = {}    # ValueError, TypeError, MemoryError, and SystemError from a bad code object
    return well_formed(memory)


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


def _is_time(value) -> bool:
    """A Unix time in seconds (0: none), as history.py keeps them."""
    return isinstance(value, float) and 0 <= value < 1e11


def _is_small_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(1 << 32) <= value <= 1 << 32


def _is_bool(value) -> bool:
    return isinstance(value, bool)


# A history record's fields (history.py) and what each must be; a field that is not is dropped.
RECORD_FIELDS = {
    "changed": _is_time, "entered": _is_time, "failed_at": _is_time, "restarts": _is_small_int,
    "pending": _is_bool, "gave_up": _is_bool, "exit_code": _is_small_int, "exit_status": _is_small_int,
    "failure_code": _is_small_int, "failure_status": _is_small_int, "result": is_word,
}


def well_formed_record(record) -> "dict | None":
    """A history record with only its well-formed fields; None for anything but a dict."""
    if not isinstance(record, dict):
        return None
    return {key: value for key, value in record.items() if (check := RECORD_FIELDS.get(key)) and check(value)}


def well_formed(memory) -> dict:
    """Only what has the expected type, entry by entry: a bad entry costs itself, not the rest.
    A series is (name, kind, labels) with a tuple of labels; the labels' own shape, (key,
    value) string pairs, is checked only where it matters (shape.staleness_markers, for a
    series that matches none pushed now): checking every pair here costs 1,000 units a ms."""
    if not isinstance(memory, dict):
        memory = {}
    series = memory.get("series")
    checked = {"series": [entry for entry in series  # _is_series, inline: it runs for every series
                          if isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[0], str)
                          and entry[1] in ("gauge", "counter") and isinstance(entry[2], tuple)]
               if isinstance(series, (list, tuple)) else []}
    for key in ("intervals", "calendar"):
        table = memory.get(key)
        checked[key] = {k: v for k, v in table.items() if isinstance(k, str) and is_finite(v) and v > 0} \
            if isinstance(table, dict) else {}
    dropped = memory.get("spool_dropped")
    checked["spool_dropped"] = {k: int(v) for k, v in dropped.items() if isinstance(k, str) and is_finite(v) and v >= 0} \
        if isinstance(dropped, dict) else {}
    units = memory.get("units")
    checked["units"] = {name: record for name, record in
                        ((k, well_formed_record(v)) for k, v in units.items() if isinstance(k, str))
                        if record is not None} if isinstance(units, dict) else {}
    if _is_time(memory.get("wall")):
        checked["wall"] = memory["wall"]
    return checked


def load_legacy_memory(state_dir: str) -> dict:
    try:
        data = read_regular_file(join(state_dir, LEGACY_MEMORY_FILE))
    except OSError:
        return {}
    import json  # only for this one read: json imports re, 4 ms

    try:
        memory = json.loads(data)
    except ValueError:
        return {}
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


def remember(state_dir: "str | None", memory: dict) -> None:
    """Record it (atomically: a crash never leaves half a file); the legacy file goes."""
    if not state_dir:
        return
    import marshal

    data = marshal.dumps(memory)
    write_atomically(state_dir, MEMORY_FILE, struct.pack("<I", zlib.crc32(data)) + data)
    try:
        posix.remove(join(state_dir, LEGACY_MEMORY_FILE))
    except FileNotFoundError:
        pass

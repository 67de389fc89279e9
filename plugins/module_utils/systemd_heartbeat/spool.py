# SPDX-License-Identifier: MIT
"""The spool: payloads that could not be pushed wait in the state directory and are replayed,
oldest first, with their original timestamps, so an outage of VictoriaMetrics loses no samples.

A payload is dropped only when the endpoint says the payload itself is bad (push.PushRejected),
when it cannot be read as one of ours, or by the caps on age and size; each drop is counted by
reason (systemd_heartbeat_spool_dropped_total{reason}) and logged. Only regular files with
strictly numeric ASCII names are ours: anything else in the directory is skipped with a warning.
"""
import os

from .model import DeadlineExceeded
from .push import PushFailed, PushRejected, post_payload
from .state import read_regular_file, write_atomically

SPOOL_DIR = "spool"
SPOOL_SUFFIX = ".otlp.gz"
STAMP_DIGITS = 20
DEFAULT_SPOOL_MAX_BYTES = 50 * 1024 * 1024
DEFAULT_SPOOL_MAX_AGE = 86400.0


class Spooled:
    """A waiting payload: its tick's time, its path, its size."""

    __slots__ = ("time_ns", "path", "size")

    def __init__(self, time_ns: int, path: str, size: int):
        self.time_ns, self.path, self.size = time_ns, path, size


def warn(message: str) -> None:
    import sys

    sys.stderr.write(f"systemd-heartbeat: warning: {message}\n")


def spool_files(state_dir: "str | None") -> list[Spooled]:
    """Waiting payloads, oldest first. Entries that are not ours are skipped with a warning;
    our own temporary files (a tick that died while writing) are removed."""
    if not state_dir:
        return []
    directory = os.path.join(state_dir, SPOOL_DIR)
    if os.path.islink(directory):
        warn(f"{directory} is a symlink, not the spool: ignored")
        return []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    files, foreign = [], []
    for entry in entries:
        stem = entry.name[:-len(SPOOL_SUFFIX)]
        ours = entry.name.endswith(SPOOL_SUFFIX) and len(stem) == STAMP_DIGITS and stem.isascii() and stem.isdigit()
        try:
            regular = entry.is_file(follow_symlinks=False)
            if ours and regular:
                files.append(Spooled(int(stem), entry.path, entry.stat(follow_symlinks=False).st_size))
            elif regular and entry.name.startswith(".") and entry.name.endswith(".tmp"):
                os.unlink(entry.path)
            else:
                foreign.append(entry.name)
        except OSError:
            continue
    if foreign:
        shown = ", ".join(repr(name[:60]) for name in sorted(foreign)[:5])
        warn(f"skipping {len(foreign)} entries in {directory} that are not spooled payloads: {shown}")
    files.sort(key=stamp_of)
    return files


def stamp_of(spooled: Spooled) -> int:
    return spooled.time_ns


def spool_write(state_dir: str, payload: bytes, time_ns: int) -> Spooled:
    """Keep a payload for later, whole or not at all."""
    directory = os.path.join(state_dir, SPOOL_DIR)
    if os.path.islink(directory):
        raise OSError(0, f"{directory} is a symlink")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    name = f"{time_ns:0{STAMP_DIGITS}d}{SPOOL_SUFFIX}"
    write_atomically(directory, name, payload)
    return Spooled(time_ns, os.path.join(directory, name), len(payload))


def drop(spooled: Spooled, reason: str, why: str, dropped: dict) -> None:
    """Delete a payload for good: counted by reason, and said."""
    try:
        os.unlink(spooled.path)
    except OSError:
        return
    dropped[reason] = dropped.get(reason, 0) + 1
    warn(f"dropped spooled payload {os.path.basename(spooled.path)} (reason: {reason}): {why}")


def spool_expire(waiting: list[Spooled], max_age: float, now: float, dropped: dict) -> list[Spooled]:
    """Drop the payloads past max_age before they are replayed; the ones still fresh."""
    fresh = []
    for spooled in waiting:
        if now - spooled.time_ns / 1e9 > max_age:
            drop(spooled, "max_age", f"older than {max_age:g} s", dropped)
        else:
            fresh.append(spooled)
    return fresh


def is_spooled_payload(payload: bytes) -> bool:
    """One of ours: a complete gzip stream (a truncated file would be sent and refused, or
    half-accepted) of an OTLP request (its first byte is the tag of resource_metrics, field 1,
    length-delimited). Bounded: a payload of ours inflates to about 20 times its size."""
    import zlib

    try:
        inflater = zlib.decompressobj(31)
        content = inflater.decompress(payload, 64 * len(payload) + 65536)
    except zlib.error:
        return False
    return inflater.eof and not inflater.unconsumed_tail and not inflater.unused_data and content[:1] == b"\x0a"


def spool_trim(files: list[Spooled], max_bytes: float, max_age: float, now: float, dropped: dict) -> None:
    """Drop the oldest payloads beyond the age and size caps."""
    total = sum(spooled.size for spooled in files)
    for spooled in files:
        if now - spooled.time_ns / 1e9 > max_age:
            drop(spooled, "max_age", f"older than {max_age:g} s", dropped)
        elif total > max_bytes:
            drop(spooled, "max_bytes", f"the spool holds more than {max_bytes:g} bytes", dropped)
        else:
            break
        total -= spooled.size


def spool_replay(endpoint, waiting: list[Spooled], deadline, dropped: dict) -> "tuple[int, str | None]":
    """Push waiting payloads oldest first, within the deadline. Returns (sent, error): the
    first failure that may pass (the endpoint is still down, or time ran out) stops the
    replay and is returned; the rest waits for the next tick."""
    sent = 0
    for spooled in waiting:
        try:
            payload = read_regular_file(spooled.path)
            if not is_spooled_payload(payload):
                raise OSError(0, "not a whole gzip file of an OTLP request")
        except OSError as error:
            drop(spooled, "unreadable", error.strerror or str(error), dropped)
            continue
        try:
            post_payload(endpoint, payload, deadline)
        except PushRejected as error:
            drop(spooled, "rejected", str(error), dropped)
            continue
        except (PushFailed, DeadlineExceeded) as error:
            return sent, str(error)
        sent += 1
        try:
            os.unlink(spooled.path)
        except OSError:
            pass
    return sent, None

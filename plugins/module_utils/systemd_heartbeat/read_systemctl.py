# SPDX-License-Identifier: MIT
"""Reading systemd through its command-line tools: two `systemctl` calls per tick whatever
the number of units (the fallback when the system bus cannot be used), and
`systemd-analyze calendar` for the period of calendar timers. Each child runs in its own
process group under the tick's Deadline, its exit included: at the deadline the whole group
is killed, so a child that closes its output and keeps running cannot hold the tick."""
import os
import select
import time

from .model import DeadlineExceeded, HeartbeatError
from .units import is_glob, is_unit_name, select_units
from .values import as_int, is_restart_policy, is_result, parse_timestamp

# Properties one batched `systemctl show` asks for: every one the D-Bus reader may ask
# (read_bus.BUS_PROPERTIES and the tables after it). `systemctl show` fetches them all from
# systemd whatever -p says, so asking for all costs nothing. Id is always asked: it names
# each block.
SHOW_PROPERTIES = (
    "Id", "LoadState", "ActiveState", "SubState", "Type", "NRestarts",
    "ExecMainCode", "ExecMainStatus", "ExecMainStartTimestamp", "ExecMainExitTimestamp",
    "ActiveEnterTimestamp", "ActiveExitTimestamp", "InactiveEnterTimestamp", "StateChangeTimestamp",
    "Result", "Restart",
    "LastTriggerUSec", "NextElapseUSecRealtime", "NextElapseUSecMonotonic",
    "TimersMonotonic", "TimersCalendar", "Triggers",
)
# What the D-Bus reader gets typed and checks (read_bus.PROPERTY_CHECKS) comes here as text: a
# value that is not one of systemd's is left out, as the bus reader leaves it out, so both
# sources give the same series. A number past 64 bits (which the bus cannot carry) gets a warning.
INTEGER_PROPERTIES = ("NRestarts", "ExecMainCode", "ExecMainStatus")
WORD_PROPERTIES = {"Result": is_result, "Restart": is_restart_policy}
MANAGER_UNIT = "init.scope"  # PID 1's own scope: when it became active is when the manager started
OUTPUT_MAX = 64 << 20  # more than any systemctl prints for thousands of units
SIGKILL = 9  # the same on every Linux architecture; the signal module would import enum (2 ms)


def run_command(argv: list[str], deadline) -> str:
    """Run a command until it exits or the deadline passes; its stdout, or HeartbeatError
    naming what went wrong. posix_spawn and poll instead of subprocess, which costs a tick
    3 ms of imports."""
    env = dict(os.environ, LC_ALL="C", TZ="UTC", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    what = " ".join(argv[:2])
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        # setpgroup=0: its own process group, so the deadline can end its children too
        # pylint: disable-next=ansible-bad-function  # the heartbeat on the host has no AnsibleModule.run_command
        pid = os.posix_spawnp(argv[0], argv, env, setpgroup=0, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_write, 1), (os.POSIX_SPAWN_DUP2, err_write, 2)])
    except (OSError, ValueError) as error:
        for fd in (out_read, out_write, err_read, err_write):
            os.close(fd)
        raise HeartbeatError(f"cannot run {argv[0]}: {getattr(error, 'strerror', None) or error}") from None
    os.close(out_write)
    os.close(err_write)
    try:
        out, err, status = wait_for(pid, out_read, err_read, deadline, what)
    finally:
        os.close(out_read)
        os.close(err_read)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise HeartbeatError(f"{what} exited {code}: {message[0][:200]}")
    return out.decode("utf-8", "surrogateescape")


def wait_for(pid: int, out_fd: int, err_fd: int, deadline, what: str) -> tuple[bytes, bytes, int]:
    """Drain a child's stdout and stderr and wait for its exit. Once it has exited, its
    process group is killed (whatever it left behind holding the pipes ends too). At the
    deadline, or past OUTPUT_MAX, the group is killed and HeartbeatError raised."""
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    open_fds = {out_fd, err_fd}
    poller = select.poll()
    for fd in open_fds:
        poller.register(fd, select.POLLIN)
    exit_fd = exit_notifier(pid)
    if exit_fd is not None:
        poller.register(exit_fd, select.POLLIN)
    status, size = None, 0
    try:
        while open_fds or status is None:
            remaining = deadline.at - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"{what} did not finish within the {deadline.timeout:g} s timeout")
            # without a pidfd, look at the child every 50 ms
            for fd, _events in poller.poll(1000 * (remaining if exit_fd is not None else min(remaining, 0.05))):
                if fd in open_fds:
                    data = os.read(fd, 1 << 16)
                    size += len(data)
                    if size > OUTPUT_MAX:
                        raise HeartbeatError(f"{what} printed more than {OUTPUT_MAX >> 20} MiB")
                    if data:
                        chunks[fd].append(data)
                    else:
                        poller.unregister(fd)
                        open_fds.discard(fd)
            if status is None:
                reaped, status_now = os.waitpid(pid, os.WNOHANG)
                if reaped:
                    status = status_now
                    if exit_fd is not None:
                        poller.unregister(exit_fd)
                    kill_group(pid, reap=False)
    except BaseException:
        kill_group(pid, reap=status is None)
        raise
    finally:
        if exit_fd is not None:
            os.close(exit_fd)
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), status


def exit_notifier(pid: int) -> "int | None":
    """A pidfd that polls readable when the child exits; None where the kernel has none."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None


def kill_group(pid: int, reap: bool) -> None:
    """SIGKILL the child's process group; reap the child too if it was still running."""
    try:
        os.killpg(pid, SIGKILL)
    except OSError:
        pass  # nothing is left in the group
    if reap:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def parse_list_units(text: str) -> tuple[list[tuple[str, str, str, str]], list[str]]:
    """`systemctl list-units --plain --no-legend --full` -> (unit, load, active, sub) rows, and
    warnings for lines that do not start with a valid unit name (skipped)."""
    rows, warnings = [], []
    for line in text.splitlines():
        fields = line.split(None, 4)
        if len(fields) < 4:
            continue
        if not is_unit_name(fields[0]):
            warnings.append(f"skipping a unit systemctl listed with an invalid name: {fields[0][:80]!r}")
            continue
        rows.append((fields[0], fields[1], fields[2], fields[3]))
    return rows, warnings


def parse_show(text: str) -> list[dict[str, object]]:
    """`systemctl show -p ...` of several units -> one dict per unit, in order.

    Blocks are separated by a blank line. A property printed more than once
    (TimersMonotonic, TimersCalendar: one line per timer setting) becomes a list.
    """
    units: list[dict[str, object]] = []
    current: dict[str, object] = {}
    for line in text.split("\n"):
        if not line:
            if current:
                units.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue  # not a property line; systemctl never prints one, but be tolerant
        if key in ("TimersMonotonic", "TimersCalendar"):
            current.setdefault(key, []).append(value)  # type: ignore[union-attr]
        else:
            current[key] = value
    if current:
        units.append(current)
    return units


def show_units(names: list[str], run, deadline) -> list[dict[str, object]]:
    """One `systemctl show` for every unit; blocks are matched to names by position."""
    if not names:
        return []
    argv = ["systemctl", "show", "-p", ",".join(SHOW_PROPERTIES), "--", *names]
    blocks = parse_show(run(argv, deadline))
    if len(blocks) != len(names):
        raise HeartbeatError(f"systemctl show answered {len(blocks)} blocks for {len(names)} units")
    return blocks


def read_with_systemctl(patterns: list[str], run, deadline) -> "tuple[list[dict], float | None, list[str]]":
    """The allowlisted and failed units with two systemctl calls, whatever their number.
    Returns (units, when the manager started, warnings)."""
    # Globs are matched against every loaded unit; without globs only failed units are needed.
    state_filter = "--all" if any(is_glob(p) for p in patterns) else "--state=failed"
    listing = run(["systemctl", "list-units", state_filter, "--plain", "--no-legend",
                   "--full", "--no-pager"], deadline)
    loaded, warnings = parse_list_units(listing)
    names, allowlisted = select_units(patterns, loaded)
    blocks = show_units([MANAGER_UNIT, *names], run, deadline)
    manager_start = parse_timestamp(blocks[0].get("ActiveEnterTimestamp", ""))
    units = []
    for name, block in zip(names, blocks[1:]):
        warnings += checked_values(block, name)
        block["Unit"] = name
        block["Allowlisted"] = name in allowlisted
        units.append(block)
    return units, manager_start, warnings


def checked_values(block: dict, name: str) -> list[str]:
    """Leave out of `block` the typed properties whose text is not such a value; a warning for
    each number out of range (an empty value is systemd's "none" and goes silently)."""
    warnings = []
    for key in INTEGER_PROPERTIES:
        value = block.get(key)
        if value is not None and as_int(value) is None:
            del block[key]
            if value:
                shown = value if len(value) <= 40 else value[:40] + "..."
                warnings.append(f"{name}: {key}={shown!r} from systemctl is not a 64-bit integer: left out")
    for key, check in WORD_PROPERTIES.items():
        if key in block and not check(block[key]):
            del block[key]
    return warnings


def calendar_periods(expressions: list[str], deadline, run=run_command) -> dict[str, float]:
    """Gap between the next two elapses of each OnCalendar expression, in one call."""
    if not expressions:
        return {}
    text = run(["systemd-analyze", "calendar", "--iterations=2", "--", *expressions], deadline)
    periods, elapses = {}, []
    for line in text.splitlines() + [""]:
        label, _colon, value = line.strip().partition(": ")
        # systemd < 257 labels the second one "Iter. #2", 257 "Iteration #2"
        if label in ("Next elapse", "Iter. #2", "Iteration #2"):
            elapses.append(parse_timestamp(value))
        elif not line.strip() and elapses:
            if len(elapses) == 2 and None not in elapses and len(periods) < len(expressions):
                periods[expressions[len(periods)]] = elapses[1] - elapses[0]
            elapses = []
    return periods

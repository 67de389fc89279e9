# SPDX-License-Identifier: MIT
"""The read stage: a Snapshot of the allowlisted and failed units, over the D-Bus system
bus when it can be used, else through systemctl, within the tick's one Deadline."""
import time

from .model import Snapshot


def collect(patterns: list[str], deadline, bus: "str | None" = None, run=None, remembered=None) -> Snapshot:
    """Read the state of the allowlisted and failed units.

    With `bus` (the system bus socket's path: the heartbeat's and the module's default), over
    D-Bus; without it, or when the bus fails or misbehaves, with two systemctl calls through
    `run(argv, deadline)` (read_systemctl.run_command by default), which returns a command's
    stdout. Running out of time is not a reason to try systemctl: it raises. `remembered`
    (the last tick's history records, by unit) spares the bus the properties that cannot have
    changed since; systemctl shows them all anyway.
    """
    started = time.monotonic()
    warnings = []
    if bus:
        from .read_bus import BusFailure, SystemBus, read_over_bus

        connection = None
        try:
            connection = SystemBus(bus, deadline)
            units, manager_start, warnings = read_over_bus(patterns, connection, deadline, remembered)
        except BusFailure as error:
            warnings = [f"{error}; reading through systemctl instead"]
        else:
            wall, monotonic = time.time(), time.monotonic()
            return Snapshot(units, manager_start, monotonic - started, wall, monotonic, "dbus", warnings)
        finally:
            if connection:
                connection.close()
    from .read_systemctl import read_with_systemctl, run_command

    units, manager_start, more = read_with_systemctl(patterns, run or run_command, deadline)
    wall, monotonic = time.time(), time.monotonic()
    return Snapshot(units, manager_start, monotonic - started, wall, monotonic, "systemctl", warnings + more)


def bus_socket(source: str, environ=None) -> "tuple[str | None, list[str]]":
    """The bus socket to read from for --source, and a warning when the address is unusable
    (then systemctl is used: it would not reach that bus either, but it may know better)."""
    if source != "dbus":
        return None, []
    from .read_bus import BusFailure, system_bus_path

    try:
        return system_bus_path(environ), []
    except BusFailure as error:
        return None, [f"{error}; reading through systemctl instead"]

"""Which calls read_over_bus asks systemd for, with a stand-in for the bus that answers like
systemd 252: every call about a unit systemd does not keep loaded makes it load the unit from
disk and drop it again (BENCHMARKS.md), so a unit whose state never changed since it was
loaded gets no stop-time Gets, and its samples are the same as if it had."""
from __future__ import annotations

from helpers import load_heartbeat

hb = load_heartbeat()
NEVER_RAN = {"StateChangeTimestamp": 0, "NRestarts": 0, "ExecMainCode": 0, "ExecMainStatus": 0, "Type": "simple",
             "ActiveExitTimestamp": 0, "ExecMainStartTimestamp": 0, "ExecMainExitTimestamp": 0,
             "ActiveEnterTimestamp": 0, "Result": "success"}
STOPPED = dict(NEVER_RAN, StateChangeTimestamp=1_700_000_000_000_000, ActiveExitTimestamp=1_700_000_000_000_000,
               ExecMainCode=1, ExecMainStartTimestamp=1_699_999_990_000_000, ExecMainExitTimestamp=1_700_000_000_000_000)


class StandInBus:
    """Answers the heartbeat's calls from a table of units; records the properties asked."""

    def __init__(self, units: dict):
        self.units, self.asked = units, []

    def call_all(self, requests, deadline):
        return [self.answer(request) for request in requests]

    def answer(self, request):
        path, _interface, member, _signature, body, _reply = request
        if member == "Get":  # body: (interface, property), two strings, each a length, the bytes, a NUL
            second = (4 + int.from_bytes(body[:4], "little") + 1 + 3) & ~3  # aligned to 4
            prop = body[second + 4:second + 4 + int.from_bytes(body[second:second + 4], "little")].decode()
            if path.endswith("init_2escope"):
                return (1_600_000_000_000_000,)
            name = next(n for n in self.units if hb.unit_path(n) == path)
            self.asked.append((name, prop))
            return (self.units[name][prop],)
        if member == "ListUnitsFiltered":
            return ([],)
        if member == "ListUnitsByNames":
            return ([(name, "", "loaded", "inactive", "dead", "", hb.unit_path(name), 0, "", "/")
                     for name in self.units],)
        raise AssertionError(member)


def read(units: dict):
    bus = StandInBus(units)
    read_units, manager_start, _ = hb.read_over_bus(list(units), bus, hb.Deadline(5))
    snapshot = hb.Snapshot(read_units, manager_start, 0.0, 1_700_000_100.0, 100.0, "dbus")
    return bus.asked, sorted(hb.shape(snapshot, "h"))


def test_a_unit_that_never_changed_state_gets_no_stop_time_gets():
    asked, _ = read({"never.service": NEVER_RAN, "stopped.service": STOPPED})
    assert {prop for name, prop in asked if name == "never.service"} == {
        "StateChangeTimestamp", "NRestarts", "ExecMainCode", "ExecMainStatus"}
    assert {prop for name, prop in asked if name == "stopped.service"} >= {
        "Type", "ActiveExitTimestamp", "ExecMainStartTimestamp", "ExecMainExitTimestamp", "Result",
        "ActiveEnterTimestamp"}  # no record of an earlier tick: its state may have changed


def test_its_samples_are_those_of_a_full_read():
    _, samples = read({"never.service": NEVER_RAN})
    everything = dict(NEVER_RAN, Unit="never.service", Id="never.service", LoadState="loaded",
                      ActiveState="inactive", SubState="dead", Allowlisted=True)
    snapshot = hb.Snapshot([everything], 1_600_000_000.0, 0.0, 1_700_000_100.0, 100.0, "dbus")
    assert samples == sorted(hb.shape(snapshot, "h"))

"""Issue 19, checked from outside: the promises of README.md and RELIABILITY.md against a state
directory nothing should poison, remembered values, history that must survive real hosts, texts
and numbers from outside, and the Ansible module.

Written from the documents and the issue only (the heartbeat's code was read for its interfaces:
the state file's format, the fakes' knobs), by a tester who did not read the existing tests.
Every case runs files/systemd-heartbeat.py as a process (the fake systemctl on PATH, or the
jeepney fake bus), or the module as Ansible's debug path runs it; the pushed payload is decoded
with opentelemetry-proto.
"""
from __future__ import annotations

import json
import signal
import time

import pytest
from fakebus import FakeBus, serialise
from fakehttp import FakeEndpoint
from outside_helpers import (
    LEGACY_MEMORY_FILE,
    MEMORY_FILE,
    PREFIX,
    SLACK,
    AuthBus,
    RawEndpoint,
    decode,
    environment,
    find,
    make_active,
    memory,
    one_line_per_message,
    read_memory,
    run,
    run_module,
    series,
    set_prop,
    start,
    tools,
    units,
    write_memory,
)

TIMEOUT = 2.0  # RELIABILITY.md's own test setting: --timeout 2, the whole process within 3.5 s


@pytest.fixture
def endpoint():
    server = FakeEndpoint(statuses=(200,))
    yield server
    server.stop()


@pytest.fixture
def world(tmp_path):
    """A state directory, a bin directory for the fake systemctl, the fake's units."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    fakes = []

    class World:
        now = time.time()
        table = units(now)
        state_dir = state

        def tools(self, name="bin", behaviour=None, table=None):
            fake = tools(tmp_path / name, table if table is not None else self.table, behaviour)
            fakes.append(fake)
            return fake

    yield World()
    for fake in fakes:
        fake.kill_all()


def args(url: str, state_dir: "Path | None", *more: str, timeout: float = TIMEOUT) -> list[str]:
    base = ["--source", "systemctl", "--url", url, "--host", "h1", "--timeout", str(timeout),
            "--unit", "alpha.service", "--unit", "broken.service"]
    return base + (["--state-dir", str(state_dir)] if state_dir else []) + list(more)


def tick_goes_on(result, endpoint, max_warnings: int = 1):
    """The tick's promise (issue 19, "Loading never stops a tick"): exit 0 with the push done,
    at most one warning line, never exit 2 or a traceback, within the deadline."""
    assert result.returncode == 0, result
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result
    assert not one_line_per_message(result.stderr), result
    assert len(result.warnings()) <= max_warnings, result
    assert len(result.lines) == len(result.warnings()), result
    assert endpoint.requests, "nothing was pushed"
    assert result.elapsed <= TIMEOUT + SLACK, result
    return series(decode(endpoint.requests[-1].body))


def injected(result) -> list[str]:
    """Lines of stderr that are not one whole message of the heartbeat: a continuation, or a line
    forged by text from outside (every forged text below starts "systemd-heartbeat: forged")."""
    return [line for line in result.lines if not line.startswith(PREFIX) or line.startswith(PREFIX + "forged")]


def failure_stamps(points, unit: str) -> list[float]:
    return [p[2] for p in find(points, "systemd_unit_last_failure_timestamp_seconds", unit=unit) if p[2] is not None]


# ================================================================================================
# 1. The state file: whatever it holds is loaded or set aside with one warning; the tick goes on
# ================================================================================================

def test_deeply_nested_legacy_json_state_file_does_not_stop_the_tick(world, endpoint):
    # RELIABILITY.md: "memory file of the version before (last-push.json) ... read once"; issue 19:
    # "a deeply nested legacy JSON file" makes every tick exit 2; "Whatever the state file holds is
    # either loaded or set aside with one warning, and the tick goes on: never exit 2".
    fake = world.tools()
    (world.state_dir / LEGACY_MEMORY_FILE).write_text("[" * 200_000 + "]" * 200_000)
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    tick_goes_on(result, endpoint)
    # and the next tick too (the file does not stop the heartbeat "for good")
    again = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    tick_goes_on(again, endpoint)


def test_deeply_nested_legacy_json_dict_does_not_stop_the_tick(world, endpoint):
    # issue 19: "a deeply nested legacy JSON file" (objects this time: {"series": [...]} nesting)
    fake = world.tools()
    (world.state_dir / LEGACY_MEMORY_FILE).write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    tick_goes_on(result, endpoint)


@pytest.mark.parametrize("where", ["series label", "failure reason", "unit record key", "calendar key"])
def test_unencodable_text_in_state_file_does_not_stop_the_tick(world, endpoint, where):
    # issue 19: "text in a stored label or reason that cannot be encoded" makes every tick exit 2.
    # README: the state file holds "the series of the last push" and each unit's history
    # (last failure, its reason); issue 19 "What to build" 1 and 4: loaded or set aside with one
    # warning; "Label values are valid UTF-8: escaped, or the series refused with a warning".
    fake = world.tools()
    bad = "bad\ud800text"
    now = world.now
    if where == "series label":
        m = memory(series_=[("systemd_unit_active", "gauge",
                             (("unit", "gone.service"), ("sub_state", bad), ("host", "h1")))])
    elif where == "failure reason":
        m = memory({"alpha.service": {"changed": now - 3600, "entered": now - 3600, "failed_at": now - 4000,
                                      "result": bad, "failure_code": 1, "failure_status": 1, "gave_up": False}})
    elif where == "unit record key":
        m = memory({bad + ".service": {"changed": now - 10}})
    else:
        m = memory()
        m["calendar"] = {bad: 3600.0}
    write_memory(world.state_dir, m)
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    points = tick_goes_on(result, endpoint)  # decode() itself refuses invalid UTF-8
    assert find(points, "systemd_heartbeat_up")
    again = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    tick_goes_on(again, endpoint)


def big_state(n: int, now: float) -> dict:
    """n remembered series, each distinct (a host with many units and label changes)."""
    rows = [("systemd_unit_info", "gauge",
             (("unit", f"unit-{i:07d}.service"), ("host", "h1"), ("load_state", "loaded"),
              ("active_state", "active"), ("sub_state", f"running-{i % 97}"), ("unit_type", "service"),
              ("allowlisted", "true")))
            for i in range(n)]
    records = {f"unit-{i:07d}.service": {"changed": now - i, "entered": now - i, "restarts": i % 7}
               for i in range(n // 4)}
    return memory(records, rows, wall=now - 30)


def test_big_state_file_inside_the_cap_keeps_the_deadline(world, endpoint):
    # README: "--timeout: one deadline for the whole tick ... (the interpreter's start and exit
    # come on top: RELIABILITY.md; tests allow 1.5 s)". issue 19: "A file well inside the loader's
    # own size cap (hundreds of thousands of series) makes a tick run 5-7 times its --timeout";
    # "a file the loader accepts must load within the deadline on a slow host".
    fake = world.tools()
    write_memory(world.state_dir, big_state(300_000, world.now))
    size = (world.state_dir / MEMORY_FILE).stat().st_size
    assert size < 64 << 20, size  # well inside the loader's cap
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin), wait=TIMEOUT + SLACK + 4)
    tick_goes_on(result, endpoint)


def test_big_state_file_under_the_services_address_space_cap(world, endpoint):
    # roles/systemd_monitoring/templates: the service runs under LimitAS=512M; issue 19: a big
    # state file makes a tick "die of MemoryError"; "Bound both its time and its memory".
    fake = world.tools()
    write_memory(world.state_dir, big_state(450_000, world.now))
    assert (world.state_dir / MEMORY_FILE).stat().st_size < 64 << 20
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin),
                 wait=TIMEOUT + SLACK + 4, limit_as=True)
    tick_goes_on(result, endpoint)


# ================================================================================================
# 2. Remembered values are checked, not only their types
# ================================================================================================

def warned_about(result, unit: str) -> bool:
    return any(unit in line for line in result.warnings())


def test_negative_remembered_restart_count_is_dropped_not_pushed(world, endpoint):
    # issue 19: "A crafted record is pushed and kept forever: a negative restart count";
    # "Counts are non-negative ... A record that fails is dropped, with a warning that names it".
    # README (Failure history): a failure is inferred only when NRestarts "rose since the last
    # tick"; a crafted -5 must not make alpha (2 restarts, Restart=on-failure) a failed unit.
    set_prop(world.table, "alpha.service", "Restart", "s", "on-failure")
    fake = world.tools()
    write_memory(world.state_dir, memory({"alpha.service": {
        "changed": world.now - 3600, "entered": world.now - 3600, "restarts": -5}}, wall=world.now - 30))
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    points = tick_goes_on(result, endpoint)
    assert not failure_stamps(points, "alpha.service"), "a failure made up from a negative count was pushed"
    assert warned_about(result, "alpha.service"), result


def test_negative_remembered_exit_status_is_dropped_not_pushed(world, endpoint):
    # README: systemd_unit_last_exit_status is "its exit code, or the number of the signal that
    # killed it" (never negative), remembered in the state directory; issue 19: "Values are
    # checked, not only types ... A record that fails is dropped, with a warning that names it".
    fake = world.tools()
    write_memory(world.state_dir, memory({"alpha.service": {
        "changed": world.now - 3600, "entered": world.now - 3600, "restarts": 2,
        "exit_code": 1, "exit_status": -7}}, wall=world.now - 30))
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    points = tick_goes_on(result, endpoint)
    statuses = [p[2] for p in find(points, "systemd_unit_last_exit_status", unit="alpha.service")]
    assert all(v is None or v >= 0 for v in statuses), statuses
    assert warned_about(result, "alpha.service"), result


def test_failure_time_centuries_ahead_is_dropped_not_pushed(world, endpoint):
    # issue 19: "a failure time centuries ahead"; "Timestamps lie between the boot and now plus a
    # small slack ... dropped, with a warning that names it".
    fake = world.tools()
    write_memory(world.state_dir, memory({"alpha.service": {
        "changed": world.now - 3600, "entered": world.now - 3600, "failed_at": 9.0e10,
        "result": "exit-code", "failure_code": 1, "failure_status": 1, "gave_up": False}}, wall=world.now - 30))
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    points = tick_goes_on(result, endpoint)
    assert not [t for t in failure_stamps(points, "alpha.service") if t > world.now + 60], points
    assert warned_about(result, "alpha.service"), result
    # and it is not kept forever
    remembered = read_memory(world.state_dir)["units"].get("alpha.service", {})
    assert remembered.get("failed_at", 0) <= world.now + 60, remembered


def test_unknown_remembered_failure_reason_is_dropped_not_pushed(world, endpoint):
    # README: result is "systemd's Result of the unit then (exit-code, signal, ...), or unknown";
    # issue 19: "Reasons come from the known sets. A record that fails is dropped, with a warning".
    fake = world.tools()
    write_memory(world.state_dir, memory({"alpha.service": {
        "changed": world.now - 3600, "entered": world.now - 3600, "failed_at": world.now - 4000,
        "result": "pwned-by-a-crafted-file", "failure_code": 1, "failure_status": 1, "gave_up": False}},
        wall=world.now - 30))
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    points = tick_goes_on(result, endpoint)
    assert not find(points, "systemd_unit_last_failure_info", result="pwned-by-a-crafted-file"), points
    assert warned_about(result, "alpha.service"), result


def test_unknown_remembered_spool_drop_reason_is_dropped_not_pushed(world, endpoint):
    # README: systemd_heartbeat_spool_dropped_total "by reason: rejected, unreadable, max_age,
    # max_bytes"; issue 19: "an unknown spool-drop reason" is pushed and kept forever.
    fake = world.tools()
    write_memory(world.state_dir, memory(spool_dropped={"rejected": 1, "made-up-reason": 7}))
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    points = tick_goes_on(result, endpoint)
    reasons = {p[1]["reason"] for p in find(points, "systemd_heartbeat_spool_dropped_total")}
    assert reasons == {"rejected", "unreadable", "max_age", "max_bytes"}, reasons
    assert any("made-up-reason" in line for line in result.warnings()), result
    assert "made-up-reason" not in read_memory(world.state_dir)["spool_dropped"]


def test_wall_clock_stepped_back_does_not_hide_the_real_failure(world, endpoint):
    # README: "The later of two failures wins"; issue 19: "A wall clock that stepped back leaves a
    # 'last failure' in the future and hides the real failure after it"; "A step of the wall clock
    # is handled on purpose". The last tick ran an hour "ahead" (its wall and broken's failure);
    # broken.service has failed again, really, 10 minutes ago (exit 3).
    fake = world.tools()
    ahead = world.now + 3600
    write_memory(world.state_dir, memory({"broken.service": {
        "changed": ahead, "entered": world.now - 700, "failed_at": ahead, "result": "timeout",
        "failure_code": 2, "failure_status": 9, "gave_up": False}}, wall=ahead))
    result = run(args(endpoint.url(), world.state_dir), environment(fake.bin))
    points = tick_goes_on(result, endpoint)
    stamps = failure_stamps(points, "broken.service")
    assert stamps and all(abs(t - (world.now - 600)) < 2 for t in stamps), stamps
    assert not find(points, "systemd_unit_last_failure_info", unit="broken.service", result="timeout"), points
    assert warned_about(result, "broken.service"), result


# ================================================================================================
# 3. History survives what happens to real hosts
# ================================================================================================

def first_tick(world, endpoint) -> float:
    """broken.service failed (exit 3): the tick records its failure; its pushed time."""
    result = run(args(endpoint.url(), world.state_dir), environment(world.tools("bin-first").bin))
    points = tick_goes_on(result, endpoint)
    stamps = failure_stamps(points, "broken.service")
    assert stamps, points
    return stamps[0]


def history_kept(world, endpoint, failed_at: float, name="bin-after"):
    """broken.service restarted since and runs: systemd forgot the failure; the state directory
    must still hold it (README: "kept across restarts, later successful runs and heartbeat
    restarts (state directory)")."""
    table = units(world.now)
    make_active(table, "broken.service", time.time())
    result = run(args(endpoint.url(), world.state_dir), environment(world.tools(name, table=table).bin))
    assert result.returncode == 0, result
    points = series(decode(endpoint.requests[-1].body))
    assert failure_stamps(points, "broken.service") == [failed_at], (result, points)
    assert find(points, "systemd_unit_last_exit_status", unit="broken.service")[0][2] == 3.0
    return result


def wait_for_call(fake, verb: str, within: float = 5.0):
    end = time.monotonic() + within
    while time.monotonic() < end:
        if any(verb in call for call in fake.calls()):
            return
        time.sleep(0.02)
    raise AssertionError(f"the heartbeat never ran systemctl {verb}")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_tick_costs_at_most_that_tick(world, endpoint, how):
    # issue 19: "A tick killed by SIGTERM at shutdown, by SIGKILL or by systemd's timeout ... makes
    # the next tick set the state file aside. Every remembered failure and exit is then gone";
    # "A killed tick costs at most that tick; the previous good state stays".
    failed_at = first_tick(world, endpoint)
    slow = world.tools("bin-slow", behaviour={"show": {"sleep": 6}})
    process = start(args(endpoint.url(), world.state_dir, timeout=8), environment(slow.bin))
    try:
        wait_for_call(slow, "show")
        process.send_signal(how)
        process.wait(5)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        slow.kill_all()
    result = history_kept(world, endpoint, failed_at)
    assert len(result.warnings()) <= 1, result


def test_two_ticks_on_one_state_directory_do_not_destroy_it(world, endpoint):
    # RELIABILITY.md: "A tick run by hand on the same state directory at the same moment would also
    # set the file aside"; issue 19: "Two runs on one state directory do not destroy it ... the
    # second run waits within its deadline, or leaves the state alone and says so in one line".
    failed_at = first_tick(world, endpoint)
    restarted = units(world.now)  # broken.service restarted: only the state directory knows it failed
    make_active(restarted, "broken.service", time.time())
    slow_a = world.tools("bin-a", behaviour={"show": {"sleep": 1.0}}, table=restarted)
    slow_b = world.tools("bin-b", behaviour={"show": {"sleep": 2.0}}, table=restarted)
    a = start(args(endpoint.url(), world.state_dir, timeout=6), environment(slow_a.bin))
    try:
        wait_for_call(slow_a, "show")  # a has loaded the state file and is reading systemd
        b = start(args(endpoint.url(), world.state_dir, timeout=6), environment(slow_b.bin))
        _, err_a = a.communicate(timeout=8)
        _, err_b = b.communicate(timeout=8)
    finally:
        for p in (a, locals().get("b")):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert a.returncode == 0, err_a
    assert b.returncode in (0, 1), err_b
    assert len(err_b.splitlines()) <= 1 and all(x.startswith(PREFIX) for x in err_b.splitlines()), err_b
    history_kept(world, endpoint, failed_at)


def test_a_rejected_push_keeps_the_ticks_history(world):
    # issue 19: "A push the endpoint rejects (HTTP 400) throws away that tick's history records
    # too"; "A rejected push keeps the tick's history". README: the last failure is "kept across
    # restarts, later successful runs and heartbeat restarts (state directory)".
    rejecting = FakeEndpoint(statuses=(400,))
    accepting = FakeEndpoint(statuses=(200,))
    try:
        result = run(args(rejecting.url(), world.state_dir), environment(world.tools().bin))
        assert result.returncode == 1 and "(payload dropped" in result.stderr, result
        rejected = series(decode(rejecting.requests[-1].body))
        failed_at = failure_stamps(rejected, "broken.service")[0]
        history_kept(world, accepting, failed_at)
    finally:
        rejecting.stop()
        accepting.stop()


# ================================================================================================
# 4. Numbers and texts from outside
# ================================================================================================

@pytest.mark.parametrize("prop", ["NRestarts", "ExecMainStatus", "ExecMainCode"])
def test_a_number_of_hundreds_of_digits_from_systemctl(world, endpoint, prop):
    # issue 19: "A number of a few hundred digits from systemctl crashes the tick (exit 2)";
    # "Numbers are parsed with bounds: one out of range is absent, with a warning".
    set_prop(world.table, "alpha.service", prop, "s", "9" * 400)
    fake = world.tools()
    result = run(args(endpoint.url(), None), environment(fake.bin))
    points = tick_goes_on(result, endpoint)
    for name in ("systemd_unit_restart_count_total", "systemd_unit_last_exit_status", "systemd_unit_last_exit_code"):
        assert all(p[2] is None or p[2] < 1e12 for p in find(points, name, unit="alpha.service")), points
    assert result.warnings(), "an out-of-range number was dropped without a warning"


def test_newline_in_http_reason_phrase_stays_one_line(world):
    # README: "Failures are one line on stderr and exit status 1"; issue 19: "A newline in an HTTP
    # reason phrase ... splits the documented one-line error into two lines".
    server = RawEndpoint(b"HTTP/1.1 503 Service\nsystemd-heartbeat: forged line\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
    try:
        result = run(args(server.url(), world.state_dir), environment(world.tools().bin))
    finally:
        server.stop()
    assert result.returncode == 1, result
    assert not injected(result) and len(result.lines) == 1, result


def test_newline_in_http_rejection_reason_stays_one_line(world):
    # the same for a rejecting status (400: "payload dropped" with its reason), README's first example
    server = RawEndpoint(b"HTTP/1.1 400 Bad\nRequest\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops\n")
    try:
        result = run(args(server.url(), None), environment(world.tools().bin))
    finally:
        server.stop()
    assert result.returncode == 1, result
    assert not injected(result) and len(result.lines) == 1, result


@pytest.fixture
def bus(tmp_path):
    made = []

    def make(cls=FakeBus, table=None):
        b = cls(str(tmp_path / f"bus{len(made)}"), table)
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


def bus_args(url: str, *more: str) -> list[str]:
    return ["--url", url, "--host", "h1", "--timeout", str(TIMEOUT), "--unit", "alpha.service",
            "--unit", "broken.service", *more]


def test_newline_in_a_bus_error_message_stays_one_line(world, endpoint, bus):
    # README: "systemd-heartbeat: warning: cannot use the system bus ...; reading through systemctl
    # instead" is one line; issue 19: "A newline in ... a bus error message ... splits the
    # documented one-line error into two lines. That is a log-injection path into the journal."
    fake_bus = bus()

    def hook(b, call, replies):
        member = call.header.fields.get(3)  # HeaderFields.member
        if member in ("ListUnitsFiltered", "ListUnits"):
            error = b._err(call, "org.freedesktop.DBus.Error.AccessDenied",
                           "Access denied\nsystemd-heartbeat: forged line")
            return [serialise(error, b.next_serial(), b.endian)]
        return None

    fake_bus.hook = hook
    result = run(bus_args(endpoint.url()), environment(world.tools().bin, fake_bus.address))
    assert result.returncode == 0, result
    assert not injected(result) and len(result.lines) == 1, result


def test_newline_in_a_refused_unit_error_stays_one_line(world, endpoint, bus):
    # README: "a name systemd still refuses costs only itself (the others are asked one by one, and
    # a warning names it)"; issue 19 "One message, one line": bus errors are escaped.
    fake_bus = bus()

    def hook(b, call, replies):
        body = call.body
        if call.header.fields.get(3) == "ListUnitsByNames" and "alpha.service" in list(body[0]):
            error = b._err(call, "org.freedesktop.DBus.Error.InvalidArgs",
                           "Unit name alpha.service is not valid.\nsystemd-heartbeat: forged line")
            return [serialise(error, b.next_serial(), b.endian)]
        return None

    fake_bus.hook = hook
    result = run(bus_args(endpoint.url()), environment(world.tools().bin, fake_bus.address))
    assert result.returncode == 0, result
    assert not injected(result), result
    assert len(result.warnings()) == 1 and "alpha.service" in result.warnings()[0], result


def test_newline_in_the_bus_authentication_answer_stays_one_line(world, endpoint, bus):
    # issue 19: "A newline in ... the bus's authentication line splits the documented one-line
    # error into two lines".
    fake_bus = bus(AuthBus)
    fake_bus.auth = "reject"
    fake_bus.auth_answer = b"REJECTED EXTERNAL\nsystemd-heartbeat: forged line\r\n"
    result = run(bus_args(endpoint.url()), environment(world.tools().bin, fake_bus.address))
    assert result.returncode == 0, result
    assert not injected(result) and len(result.lines) == 1, result  # the one warning: reading through systemctl


@pytest.mark.parametrize("where", ["allowlist path", "bus path"])
def test_newline_in_a_path_stays_one_line(world, endpoint, tmp_path, where):
    # issue 19 "What to build" 4: "Every text from outside (HTTP status lines, bus errors, unit
    # names, paths) is escaped before it reaches stderr."
    fake = world.tools()
    if where == "allowlist path":
        result = run(bus_args(endpoint.url(), "--source", "systemctl", "--allowlist",
                              str(tmp_path / "no\nsystemd-heartbeat: forged line")), environment(fake.bin))
        assert result.returncode == 1, result
    else:
        result = run(bus_args(endpoint.url()),
                     environment(fake.bin, "unix:path=/nonexistent/x%0asystemd-heartbeat: forged line"))
        assert result.returncode == 0, result
    assert not injected(result) and len(result.lines) == 1, result


@pytest.mark.parametrize("where", ["Result", "SubState"])
def test_invalid_utf8_in_a_bus_string_is_pushed_as_valid_utf8(world, endpoint, bus, where):
    # issue 19: "Invalid UTF-8 in a bus string goes into the protobuf unchanged, and
    # VictoriaMetrics may then refuse the whole push"; "Label values are valid UTF-8: escaped, or
    # the series refused with a warning". opentelemetry-proto refuses invalid UTF-8 in strings.
    table = units(world.now)
    if where == "Result":  # broken.service's Result, read by Properties.Get
        placeholder, raw = b"exit-codeQ", b"exit-code\xff"
        set_prop(table, "broken.service", "Result", "s", placeholder.decode())
    else:  # alpha.service's SubState, in the listing
        placeholder, raw = b"runninQ", b"runnin\xff"
        table["alpha.service"].sub = placeholder.decode()
    fake_bus = bus(table=table)
    fake_bus.hook = lambda b, call, replies: [r.replace(placeholder, raw) for r in replies]
    result = run(bus_args(endpoint.url()), environment(world.tools().bin, fake_bus.address))
    assert result.returncode == 0, result
    assert endpoint.requests, result
    points = series(decode(endpoint.requests[-1].body))  # raises DecodeError on invalid UTF-8
    assert find(points, "systemd_heartbeat_up")
    assert len(result.lines) <= 1, result


def dry_run_series(result) -> set[str]:
    """The series (name and labels) of a --dry-run's output, values left out: D-Bus has
    timestamps to the microsecond, systemctl to the second (README)."""
    return {line.rsplit(" ", 1)[0] for line in result.stdout.splitlines() if line}


@pytest.mark.parametrize("result_value", ["exit-code", "exit-code-" + "x" * 90], ids=["short", "long"])
def test_both_sources_give_the_same_series_for_a_long_result(world, bus, result_value):
    # README: "Both paths give the same series and values"; issue 19: "The D-Bus and systemctl
    # paths disagree on a long Result value"; "Both sources give the same series for the same
    # systemd answer". ("short" is the control: the oracle agrees with itself.)
    table = units(world.now)
    set_prop(table, "broken.service", "Result", "s", result_value)
    fake_bus = bus(table=table)
    fake = world.tools(table=table)
    over_bus = run(bus_args("http://127.0.0.1:9/x", "--dry-run"), environment(fake.bin, fake_bus.address))
    over_systemctl = run(bus_args("http://127.0.0.1:9/x", "--dry-run", "--source", "systemctl"),
                         environment(fake.bin, fake_bus.address))
    assert over_bus.returncode == over_systemctl.returncode == 0, (over_bus, over_systemctl)
    assert not over_bus.lines and not over_systemctl.lines, (over_bus, over_systemctl)
    a, b = dry_run_series(over_bus), dry_run_series(over_systemctl)
    assert a == b, (sorted(a - b), sorted(b - a))


# ================================================================================================
# 5. The Ansible module fails like a module
# ================================================================================================

def module_outcome(rc: int, stdout: str, stderr: str) -> dict:
    """issue 19: "No input gives a traceback"; a failure is `failed: true` with a message."""
    assert "Traceback" not in stdout + stderr, (stdout, stderr)
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, ("no JSON result", stderr)
    result = json.loads(lines[-1])
    assert "exception" not in result, result
    if result.get("failed"):
        assert isinstance(result.get("msg"), str) and result["msg"], result
        assert rc == 1, result
    return result


@pytest.mark.parametrize("prop,value", [("NRestarts", "9" * 400), ("ExecMainStatus", "\u00b2"),
                                        ("NRestarts", "\u0663")], ids=["400 digits", "superscript", "arabic digit"])
def test_module_odd_numbers_from_systemctl(world, endpoint, prop, value):
    # issue 19: "Tracebacks instead of failed: true with a message, on odd numbers from systemctl";
    # "The module fails like a module. No input gives a traceback."
    # the fake systemctl writes latin-1: hand it the UTF-8 bytes, as a real systemctl prints them
    set_prop(world.table, "alpha.service", prop, "s", value.encode().decode("latin-1"))
    fake = world.tools()
    rc, out, err = run_module({"units": ["alpha.service"], "url": endpoint.url(), "host": "h1", "timeout": 5},
                              environment(fake.bin))
    result = module_outcome(rc, out, err)
    if not result.get("failed"):
        alpha = [u for u in result["units"] if u["unit"] == "alpha.service"][0]
        key = "restarts" if prop == "NRestarts" else "last_exit_status"
        assert alpha[key] is None or 0 <= alpha[key] < 1 << 32, alpha


@pytest.mark.parametrize("crafted", ["nested legacy json", "unencodable reason"])
def test_module_crafted_state_directory(world, endpoint, crafted):
    # issue 19: "Tracebacks instead of failed: true with a message ... on a crafted state
    # directory". README (module): state_dir "is read, never written".
    fake = world.tools()
    if crafted == "nested legacy json":
        (world.state_dir / LEGACY_MEMORY_FILE).write_text("[" * 200_000 + "]" * 200_000)
    else:
        write_memory(world.state_dir, memory({"alpha.service": {
            "changed": world.now - 3600, "entered": world.now - 3600, "failed_at": world.now - 4000,
            "result": "bad\ud800", "failure_code": 1, "failure_status": 1, "gave_up": False}}))
    rc, out, err = run_module({"units": ["alpha.service"], "url": endpoint.url(), "host": "h1", "timeout": 5,
                               "state_dir": str(world.state_dir)}, environment(fake.bin))
    module_outcome(rc, out, err)


def test_module_bearer_token_with_a_trailing_newline_never_appears(world, endpoint):
    # README: the bearer token is "never logged"; the module's doc: "Never logged." issue 19: "A
    # bearer token with a trailing newline appears in the error message".
    fake = world.tools()
    secret = "s3cr3t-T0KEN-do-not-show"
    rc, out, err = run_module({"units": ["alpha.service"], "url": endpoint.url(), "host": "h1", "timeout": 5,
                               "bearer_token": secret + "\n"}, environment(fake.bin))
    module_outcome(rc, out, err)
    assert secret not in out + err, out
    for request in endpoint.requests:  # what was sent, if anything, is one header line
        assert "\n" not in request.headers.get("authorization", "")


def test_module_url_with_credentials_never_shows_the_password(world):
    # README: "credentials in a URL are refused ... shows ***@host, never the user or the
    # password"; issue 19: "A URL with credentials is refused, but the password is still echoed
    # back in the module's invocation"; "No secret appears in any output, invocation included".
    fake = world.tools()
    rc, out, err = run_module({"units": ["alpha.service"], "url": "http://kai:hunter2-pass@127.0.0.1:9/x"},
                              environment(fake.bin))
    result = module_outcome(rc, out, err)
    assert result.get("failed"), result
    assert "hunter2-pass" not in out + err, out

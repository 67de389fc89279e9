"""ONE DEADLINE per tick: the whole process ends within --timeout + 1.5 s, whatever the adversary does.

Every test measures the wall time of the whole heartbeat process (interpreter start-up included).
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import textwrap
import time

import pytest

from blackbox import (
    IS_ROOT,
    UNIT_ARGS,
    assert_bus_values,
    assert_clean,
    assert_no_fallback,
    assert_within,
    refused_url,
    spool_entries,
    spool_name,
)
from fakebus import (
    LISTING_CALLS,
    TIMER_IFACE,
    UNIT_IFACE,
    Unit,
    default_units,
    member_of,
    raw_message,
    reply_fields,
    signal_bytes,
    usec,
)
from fakesystemctl import wait_dead

T = 2.0


# --- the push ---------------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("mode", ["trickle", "hang"])
def test_push_to_a_trickling_or_mute_endpoint_ends_in_time(run, bus, make_endpoint, tls_context,
                                                           tls_files, state, scheme, mode):
    ep = make_endpoint(mode=mode, tls=tls_context if scheme == "https" else None)
    res = run(*UNIT_ARGS, "--url", ep.url(), "--timeout", T, "--ca-file", tls_files[0],
              "--state-dir", state, bus=bus)
    assert ep.requests, f"the endpoint never got the request: {ep.errors}\n{res}"
    assert_within(res, T)
    assert_clean(res, ok=False)
    assert len(spool_entries(state)) == 1, "the payload that timed out is spooled"


@pytest.mark.parametrize("mode", ["silent", "handshake-trickle"])
def test_tls_handshake_that_never_ends_is_bounded(run, bus, make_endpoint, tls_files, mode):
    ep = make_endpoint(mode=mode)  # plain TCP: never completes a TLS handshake
    res = run(*UNIT_ARGS, "--url", ep.url(scheme="https"), "--timeout", T,
              "--ca-file", tls_files[0], bus=bus)
    assert ep.connections >= 1
    assert_within(res, T)
    assert_clean(res, ok=False)


def test_spool_replay_and_push_share_one_deadline(run, bus, make_endpoint, state):
    for _ in range(3):
        assert_clean(run(*UNIT_ARGS, "--url", refused_url(), "--state-dir", state, bus=bus), ok=False)
    assert len(spool_entries(state)) == 3
    ep = make_endpoint(mode="trickle")
    res = run(*UNIT_ARGS, "--url", ep.url(), "--timeout", T, "--state-dir", state, bus=bus)
    assert_within(res, T)
    assert_clean(res, ok=False)
    assert len(spool_entries(state)) == 4, "nothing may be lost when the replay times out"


def test_fifo_in_the_spool_neither_blocks_nor_breaks_the_tick(run, bus, make_endpoint, state):
    (state / "spool").mkdir()
    os.mkfifo(state / "spool" / spool_name())
    ep = make_endpoint()
    res = run(*UNIT_ARGS, "--url", ep.url(), "--timeout", T, "--state-dir", state, bus=bus)
    assert_within(res, T)
    assert_clean(res, ok=True)
    assert len(ep.requests) == 1, "the tick's own payload is pushed"
    assert any("spool" in w for w in res.warnings), f"the FIFO is skipped with a warning\n{res}"


@pytest.mark.skipif(not (IS_ROOT and shutil.which("unshare") and shutil.which("ip")),
                    reason="needs root, unshare and ip for a private network and resolv.conf")
def test_dns_that_never_answers_is_bounded(tmp_path, bus):
    """A resolver that swallows queries (in a private network namespace) must not stretch the tick."""
    from blackbox import PROGRAM, PYTHON
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:5\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    inner = tmp_path / "inner.py"
    inner.write_text(textwrap.dedent(f"""
        import socket, subprocess, sys, time
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 53))      # swallows every query
        t0 = time.monotonic()
        try:
            p = subprocess.run([{PYTHON!r}, {PROGRAM!r}, "--host", "advhost", "--unit", "alpha",
                                "--url", "http://metrics.heartbeat-adversary.example:8428/x",
                                "--timeout", "{T}"], capture_output=True, timeout=20,
                               env={{"PATH": "/nonexistent", "DBUS_SYSTEM_BUS_ADDRESS": {bus.address!r}}})
        except subprocess.TimeoutExpired:
            print("%.3f" % (time.monotonic() - t0)); print("killed"); sys.exit(0)
        print("%.3f" % (time.monotonic() - t0)); print(p.returncode)
        sys.stdout.write(p.stderr.decode("utf-8", "replace"))
    """))
    script = (f"ip link set lo up && mount --bind {resolv} /etc/resolv.conf && "
              f"mount --bind {hosts} /etc/hosts && exec {PYTHON} {inner}")
    p = subprocess.run(["unshare", "-mn", "sh", "-c", script], capture_output=True, text=True,
                       timeout=90)
    assert p.returncode == 0, p.stderr
    elapsed, rc, *err = p.stdout.splitlines()
    assert float(elapsed) <= T + 1.5, f"DNS stalled the tick {elapsed} s: {err}"
    assert "Traceback" not in "\n".join(err)
    assert rc == "1" and len([e for e in err if "warning:" not in e]) == 1, err


# --- the systemctl path -----------------------------------------------------------------------

SOURCES = {"source-systemctl": ("--source", "systemctl"), "no-bus-socket": ()}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("call", ["list-units", "show"])
@pytest.mark.parametrize("mode", ["closefds", "background"])
def test_systemctl_that_holds_its_pipe_or_lingers_is_killed(run, make_tools, source, call, mode):
    """closefds: `exec >&- 2>&-; sleep 60`; background: answers, exits, a child keeps the pipe open."""
    tools = make_tools(behaviour={call: {"mode": mode}})
    res = run(*UNIT_ARGS, *SOURCES[source], "--dry-run", "--timeout", T, tools=tools)
    assert_within(res, T)
    assert_clean(res, ok=False if mode == "closefds" else None)
    assert tools.started_pids(), "the fake systemctl never ran"
    assert wait_dead(tools.started_pids(), 0.5) == [], (
        "systemctl or its child outlived the deadline: its process group was not killed")


def test_second_systemctl_call_gets_no_fresh_timeout(run, make_tools):
    t = 3.0  # each call alone fits in --timeout; both together do not
    tools = make_tools(behaviour={"list-units": {"sleep": 2.6}, "show": {"sleep": 2.6}})
    res = run(*UNIT_ARGS, "--source", "systemctl", "--dry-run", "--timeout", t, tools=tools)
    assert_within(res, t)
    assert_clean(res, ok=False)


@pytest.mark.parametrize("mode", ["closefds", "background"])
def test_hung_systemd_analyze_is_bounded(run, bus, make_tools, mode):
    """A calendar timer that never fired: the heartbeat may ask systemd-analyze for its period."""
    units = default_units()
    cal = Unit("cal.timer", "loaded", "active", "waiting", {
        UNIT_IFACE: dict(units["tick.timer"].props[UNIT_IFACE], Id=("s", "cal.timer")),
        TIMER_IFACE: dict(units["tick.timer"].props[TIMER_IFACE],
                          LastTriggerUSec=("t", 0), TimersMonotonic=("a(stt)", []),
                          TimersCalendar=("a(sst)", [("OnCalendar", "*-*-* 03:17:00",
                                                      usec(time.time() + 3600))]),
                          NextElapseUSecRealtime=("t", usec(time.time() + 3600)),
                          NextElapseUSecMonotonic=("t", 0)),
    })
    bus.units["cal.timer"] = cal
    tools = make_tools(units=bus.units, behaviour={"calendar": {"mode": mode},
                                                   "list-units": {"mode": "closefds"}})
    res = run("--host", "advhost", "--unit", "cal.timer", "--dry-run", "--timeout", T,
              bus=bus, tools=tools)
    assert_within(res, T)
    assert_clean(res)
    assert wait_dead(tools.started_pids(), 0.5) == [], "systemd-analyze (or its child) outlived the tick"


# --- the bus ----------------------------------------------------------------------------------

def test_bus_that_never_answers_then_slow_systemctl_share_one_deadline(run, bus, make_tools):
    bus.silent = True
    tools = make_tools(behaviour={"list-units": {"sleep": 1.2}, "show": {"sleep": 1.2}})
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, bus=bus, tools=tools)
    assert_within(res, T)
    assert_clean(res)


@pytest.mark.parametrize("how", ["auth-never-answered", "trickle"])
def test_bus_that_stalls_or_trickles_is_bounded(run, bus, make_tools, how):
    if how == "trickle":
        bus.trickle = 0.05
    else:
        bus.auth = "silent"
    tools = make_tools(behaviour={"list-units": {"sleep": 30}, "show": {"sleep": 30}})
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, bus=bus, tools=tools)
    assert_within(res, T)
    assert_clean(res)


def test_sixteen_megabyte_signal_before_the_replies(run, bus, make_tools):
    """A valid 16 MB signal is an unsolicited message like any other: skipped, in time."""
    t = T
    bus.after_hello = [lambda serial: signal_bytes(serial, "<", "ay", (b"\x5a" * (16 << 20),),
                                                   member="Flood")]
    tools = make_tools()
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", t, bus=bus, tools=tools)
    assert_within(res, t)
    assert_clean(res, ok=True)
    assert_no_fallback(res, tools)
    assert_bus_values(res, bus)


INVALID_SIGNATURES = ["a()", "()", "a", "(s", "s)", "{ss}", "a{vs}", "a{s}", "z",
                      "a" * 33 + "s", "(" * 33 + "s" + ")" * 33, "aa{sv}{"]


def invalid_body(sig: str) -> bytes:
    # for a(): an array of 64 bytes of zero-sized structs, a parser that never advances loops forever
    return struct.pack("<I", 64) + b"\0" * 4 + b"\0" * 64


@pytest.mark.parametrize("sig", INVALID_SIGNATURES)
def test_reply_with_an_invalid_signature_is_bounded_and_clean(run, bus, make_tools, sig):
    hit = []

    def hook(bus, call, replies):
        if member_of(call) in LISTING_CALLS and not hit:
            hit.append(call)
            return [raw_message(2, bus.next_serial(), reply_fields(call.header.serial, sig),
                                invalid_body(sig))]
        return None

    bus.hook = hook
    tools = make_tools()
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, bus=bus, tools=tools)
    assert hit, "the listing call was never made"
    assert_within(res, T)
    assert_clean(res)
    if res.rc == 0:  # the bus misbehaved: the values come from systemctl, announced by a warning
        assert_bus_values(res)
        assert res.warnings, res


@pytest.mark.parametrize("sig", INVALID_SIGNATURES)
def test_signal_with_an_invalid_signature_is_bounded_and_clean(run, bus, make_tools, sig):
    bus.after_hello = [lambda serial: raw_message(
        4, serial, [(1, "o", "/org/freedesktop/systemd1"), (2, "s", "org.freedesktop.systemd1.Manager"),
                    (3, "s", "UnitNew"), (7, "s", ":1.1"), (8, "g", sig)], invalid_body(sig))]
    tools = make_tools()
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, bus=bus, tools=tools)
    assert_within(res, T)
    assert_clean(res)
    if res.rc == 0:
        assert_bus_values(res)

"""Right target, right data, no secret echoed, no bad number accepted."""
from __future__ import annotations


import pytest

from blackbox import (
    HOST,
    UNIT_ARGS,
    assert_clean,
    assert_one_state_per_series,
    read_state,
    write_state,
)
from fakehttp import FakeEndpoint

T = 2.0


# --- the port ---------------------------------------------------------------------------------

def listener_on(port: int):
    """A FakeEndpoint on 127.0.0.1:port, or None where that port is taken."""
    try:
        return FakeEndpoint(port=port)
    except OSError:
        return None


@pytest.mark.parametrize("port", ["84006", "0", "65536", "99999999999999999999", "-1", "80a",
                                  "wrapped", "00000000000000065536"])
def test_port_outside_1_to_65535_is_refused_never_wrapped(run, bus, port):
    ep = FakeEndpoint()
    if port == "wrapped":  # the listener's own port + 65536
        port = str(ep.port + 65536)
    elif port == "84006":
        ep.stop()
        ep = listener_on(84006 - 65536)
    try:
        res = run(*UNIT_ARGS, "--url", f"http://127.0.0.1:{port}/opentelemetry/v1/metrics",
                  "--timeout", T, bus=bus)
        assert_clean(res, ok=False)
        assert "port" in res.errors[0].lower() or port in res.errors[0], res
        if ep is not None:
            assert ep.connections == 0, "the port was wrapped modulo 65536 and the push went there"
    finally:
        if ep is not None:
            ep.stop()


# --- IPv6 literals ----------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["http", "https"])
def test_ipv6_literal_url_works_and_sends_a_bracketed_host(run, bus, make_endpoint, tls_context,
                                                           tls_files, scheme):
    ep = make_endpoint(host="::1", tls=tls_context if scheme == "https" else None)
    res = run(*UNIT_ARGS, "--url", ep.url(), "--timeout", T, "--ca-file", tls_files[0], bus=bus)
    assert_clean(res, ok=True)
    assert len(ep.requests) == 1, res
    assert ep.requests[0].headers.get("host") == f"[::1]:{ep.port}", ep.requests[0].headers
    assert ep.requests[0].target == "/opentelemetry/v1/metrics"


# --- credentials in the URL -------------------------------------------------------------------

SECRETS = ("alicebob", "s3cr3tpw", "pa%40ss", "pa@ss", "w0rd")


@pytest.mark.parametrize("form", ["plain", "escaped", "bad-port", "ipv6", "no-host", "env"])
def test_url_with_credentials_is_refused_without_echoing_them(run, bus, make_endpoint, form):
    ep = make_endpoint()
    url = {
        "plain": f"http://alicebob:s3cr3tpw@127.0.0.1:{ep.port}/x",
        "escaped": f"http://alicebob:pa%40ss%3Aw0rd@127.0.0.1:{ep.port}/x",
        "bad-port": "http://alicebob:s3cr3tpw@127.0.0.1:84006/x",
        "ipv6": f"http://alicebob:s3cr3tpw@[::1]:{ep.port}/x",
        "no-host": "http://alicebob:s3cr3tpw@/x",
        "env": f"https://alicebob:s3cr3tpw@127.0.0.1:{ep.port}/x",
    }[form]
    if form == "env":
        res = run(*UNIT_ARGS, "--timeout", T, bus=bus, env={"VMSINGLE_OTLP_URL": url})
    else:
        res = run(*UNIT_ARGS, "--url", url, "--timeout", T, bus=bus)
    assert_clean(res, ok=False)
    for secret in SECRETS:
        assert secret not in res.stderr + res.stdout, f"{secret!r} echoed\n{res}"
    assert ep.connections == 0, "a URL with credentials must be refused, not used"


# --- numbers ----------------------------------------------------------------------------------

BAD_NUMBERS = [("--spool-max-bytes", "nan"), ("--spool-max-bytes", "inf"), ("--spool-max-bytes", "-1"),
               ("--spool-max-bytes", "-inf"), ("--spool-max-age", "nan"), ("--timeout", "nan"),
               ("--timeout", "inf"), ("--timeout", "0"), ("--timeout", "-1"), ("--timeout", "1e999"),
               ("--timeout", "-0"), ("--timeout", "NaN")]
ENV_OF = {"--spool-max-bytes": "SYSTEMD_HEARTBEAT_SPOOL_MAX_BYTES",
          "--spool-max-age": "SYSTEMD_HEARTBEAT_SPOOL_MAX_AGE", "--timeout": "SYSTEMD_HEARTBEAT_TIMEOUT"}


@pytest.mark.parametrize("form", ["separate", "equals", "env"])
@pytest.mark.parametrize("flag,value", BAD_NUMBERS)
def test_bad_numbers_are_refused_with_one_line(run, bus, make_endpoint, state, flag, value, form):
    ep = make_endpoint()
    base = (*UNIT_ARGS, "--url", ep.url(), "--state-dir", state)
    if form == "separate":
        res = run(*base, flag, value, bus=bus, limit=10)
    elif form == "equals":
        res = run(*base, f"{flag}={value}", bus=bus, limit=10)
    else:
        res = run(*base, bus=bus, env={ENV_OF[flag]: value}, limit=10)
    assert_clean(res, ok=False)
    name = flag.lstrip("-")
    assert name in res.errors[0] or ENV_OF[flag] in res.errors[0], f"the line names the flag\n{res}"
    assert ep.connections == 0, "nothing is pushed after a refused argument"


# --- staleness markers ------------------------------------------------------------------------

def first_tick(run, bus, ep, state):
    res = run(*UNIT_ARGS, "--url", ep.url(), "--timeout", T, "--state-dir", state, bus=bus)
    assert_clean(res, ok=True)
    assert (state / "last-push.marshal").exists(), "the state directory remembers the push"
    return res


def test_sub_state_change_marks_the_old_series_only(run, bus, make_endpoint, state):
    ep = make_endpoint()
    first_tick(run, bus, ep, state)
    bus.units["alpha.service"].sub = "reloading"
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, "--state-dir", state, bus=bus)
    assert_clean(res, ok=True)
    assert res.values("systemd_unit_active", unit="alpha.service", sub_state="running") == ["stale"], res
    assert res.values("systemd_unit_active", unit="alpha.service", sub_state="reloading") == ["1"], res
    assert_one_state_per_series(res)


def test_state_listing_present_series_in_other_forms_never_yields_stale_and_value(
        run, bus, make_endpoint, state):
    """The remembered series come back with labels reordered, another kind, twice, plus a ghost."""
    ep = make_endpoint()
    first_tick(run, bus, ep, state)
    remembered = read_state(state / "last-push.marshal")
    series = list(remembered["series"])
    assert series and all(len(s) == 3 for s in series), remembered
    kinds = {s[1] for s in series}
    crafted = list(series)
    for name, kind, labels in series:
        crafted.append((name, kind, tuple(reversed(tuple(labels)))))
        crafted.append((name, kind, tuple(labels)))
        crafted += [(name, other, tuple(labels)) for other in kinds if other != kind]
    ghost = ("systemd_unit_active", series[0][1], (("unit", "ghost.service"), ("sub_state", "running"),
                                                   ("host", HOST)))
    crafted.append(ghost)
    remembered["series"] = crafted
    write_state(state / "last-push.marshal", remembered)
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, "--state-dir", state, bus=bus)
    assert_clean(res, ok=True)
    assert res.values("systemd_unit_active", unit="ghost.service") == ["stale"], (
        f"the crafted state was not read at all (the ghost got no marker)\n{res}")
    assert_one_state_per_series(res)


def test_unit_that_vanishes_gets_markers_and_the_rest_none(run, bus, make_endpoint, state):
    ep = make_endpoint()
    first_tick(run, bus, ep, state)
    del bus.units["broken.service"]
    res = run("--host", HOST, "--unit", "alpha", "--unit", "tick.timer", "--dry-run", "--timeout", T,
              "--state-dir", state, bus=bus)
    assert_clean(res, ok=True)
    assert res.values("systemd_unit_active", unit="broken.service") == ["stale"], res
    assert "stale" not in res.values("systemd_unit_active", unit="alpha.service"), res
    assert_one_state_per_series(res)

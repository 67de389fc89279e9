"""NO DATA LOST, SYMLINKS never followed, garbage state never breaks a tick."""
from __future__ import annotations

import math
import os
import random
import re
import resource

import pytest

from blackbox import (
    HOST,
    SPOOL_NAME,
    UNIT_ARGS,
    assert_bus_values,
    assert_clean,
    assert_within,
    gz,
    read_state,
    refused_url,
    spool_entries,
    spool_name,
    ungz,
    write_state,
)

T = 2.0
KEEP = [401, 403, 404, 408, 429, 500, 502, 503, 504, "refused", "hang-up"]
REJECT = [400, 413, 415, 422]


def tick(run, bus, url, state, *extra, **kw):
    return run(*UNIT_ARGS, "--url", url, "--timeout", T, "--state-dir", state, *extra, bus=bus, **kw)


def dry(run, bus, state):
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, "--state-dir", state, bus=bus)
    assert_clean(res, ok=True)
    return res


def dropped(run, bus, state, reason) -> float:
    """systemd_heartbeat_spool_dropped_total{reason=...} as the next tick would push it."""
    res = dry(run, bus, state)
    vals = [v for v in res.values("systemd_heartbeat_spool_dropped_total", reason=reason) if v != "stale"]
    assert len(vals) == 1, f"no single spool_dropped_total{{reason={reason!r}}}\n{res}"
    return float(vals[0])


def names_reason(res, reason) -> bool:
    pattern = re.compile(reason.replace("_", "[-_ ]"), re.I)
    return any(pattern.search(line) for line in res.stderr.splitlines())


def failing_url(make_endpoint, how):
    if how == "refused":
        return refused_url()
    if how == "hang-up":
        return make_endpoint(mode="close").url()
    return make_endpoint(statuses=[how]).url()


# --- what is kept, what is dropped ------------------------------------------------------------

def failed_tick_keeps(run, bus, url, state, waiting: int) -> list[bytes]:
    """A tick whose push fails must leave `waiting` payloads in the spool; their contents."""
    res = tick(run, bus, url, state)
    assert_clean(res, ok=False)
    entries = spool_entries(state)
    assert len(entries) == waiting, f"{waiting} payloads must wait in the spool\n{res}"
    return [ungz(p.read_bytes()) for p in entries]


def replayed_in_order(run, bus, make_endpoint, state, kept: list[bytes]):
    ok = make_endpoint()
    assert_clean(tick(run, bus, ok.url(), state), ok=True)
    assert len(ok.requests) == len(kept) + 1, "the spooled payloads, then the tick's own"
    assert [ungz(b) for b in ok.bodies()[:len(kept)]] == kept, "replayed oldest first, as they were"
    assert spool_entries(state) == []


@pytest.mark.parametrize("how", KEEP)
def test_payload_is_kept_when_the_endpoint_fails(run, bus, make_endpoint, state, how):
    kept = failed_tick_keeps(run, bus, failing_url(make_endpoint, how), state, 1)
    replayed_in_order(run, bus, make_endpoint, state, kept)


@pytest.mark.parametrize("how", [503, 429, 401, "refused"])
def test_replayed_payloads_are_kept_when_the_replay_fails(run, bus, make_endpoint, state, how):
    failed_tick_keeps(run, bus, refused_url(), state, 1)
    kept = failed_tick_keeps(run, bus, failing_url(make_endpoint, how), state, 2)
    replayed_in_order(run, bus, make_endpoint, state, kept)


@pytest.mark.parametrize("status", REJECT)
def test_rejected_payload_is_dropped_counted_and_logged(run, bus, make_endpoint, state, status):
    res = tick(run, bus, make_endpoint(statuses=[status]).url(), state)
    assert_clean(res, ok=False)
    assert spool_entries(state) == [], f"HTTP {status}: the endpoint said the payload is bad"
    assert names_reason(res, "rejected"), f"the drop is logged with its reason\n{res}"
    assert dropped(run, bus, state, "rejected") == 1


@pytest.mark.parametrize("status", REJECT)
def test_rejected_replay_is_dropped_counted_and_logged(run, bus, make_endpoint, state, status):
    assert_clean(tick(run, bus, refused_url(), state), ok=False)
    ep = make_endpoint(statuses=[status, 200])
    res = tick(run, bus, ep.url(), state)
    assert_clean(res, ok=True)
    assert len(ep.requests) == 2, "the replay, refused, then the tick's own payload"
    assert spool_entries(state) == []
    assert names_reason(res, "rejected"), res
    assert dropped(run, bus, state, "rejected") == 1


def test_max_bytes_drops_oldest_counted_and_logged(run, bus, state):
    assert_clean(tick(run, bus, refused_url(), state), ok=False)
    size = spool_entries(state)[0].stat().st_size
    cap = int(size * 1.5)
    results = [tick(run, bus, refused_url(), state, "--spool-max-bytes", cap) for _ in range(3)]
    for res in results:
        assert_clean(res, ok=False)
    left = spool_entries(state)
    assert 1 <= len(left) < 4 and sum(p.stat().st_size for p in left) <= cap
    assert any(names_reason(r, "max_bytes") for r in results), results[-1]
    assert dropped(run, bus, state, "max_bytes") == 4 - len(left)


def test_max_age_drops_counted_and_logged(run, bus, make_endpoint, state):
    assert_clean(tick(run, bus, refused_url(), state), ok=False)
    entry = spool_entries(state)[0]
    old_ns = entry.stat().st_mtime_ns - 3 * 86400 * 10 ** 9
    aged = entry.with_name(spool_name(int(entry.name[:20]) - 3 * 86400 * 10 ** 9))
    entry.rename(aged)
    os.utime(aged, ns=(old_ns, old_ns))
    stale_payload = ungz(aged.read_bytes())
    ok = make_endpoint()
    res = tick(run, bus, ok.url(), state)
    assert_clean(res, ok=True)
    assert stale_payload not in [ungz(b) for b in ok.bodies()], "a payload past --spool-max-age was sent"
    assert names_reason(res, "max_age"), res
    assert dropped(run, bus, state, "max_age") == 1


@pytest.mark.parametrize("content", [b"not gzip at all", gz(b"x" * 5000)[:40], b""],
                         ids=["garbage", "truncated-gzip", "empty"])
def test_unreadable_spool_entry_is_skipped_counted_and_logged(run, bus, make_endpoint, state, content):
    (state / "spool").mkdir()
    (state / "spool" / spool_name()).write_bytes(content)
    ok = make_endpoint()
    res = tick(run, bus, ok.url(), state)
    assert_clean(res, ok=True)
    assert len(ok.requests) == 1 and ok.requests[0].body != content
    assert names_reason(res, "unreadable"), res
    assert dropped(run, bus, state, "unreadable") == 1


# --- a full disk ------------------------------------------------------------------------------

TEMPISH = re.compile(r"(tmp|temp|\.new$|\.part$|~$|^\.)", re.I)


def leftovers(state):
    bad = []
    for p in state.rglob("*"):
        rel = p.relative_to(state)
        if rel.parts[0] == "spool" and len(rel.parts) == 2:
            if not SPOOL_NAME.match(p.name):
                bad.append(str(rel))
        elif str(rel) not in ("last-push.marshal", "spool") and TEMPISH.search(p.name):
            bad.append(str(rel))
    return bad


@pytest.mark.parametrize("limit", [0, 200, 2000])
@pytest.mark.parametrize("scenario", ["pushed", "refused", "replayed"])
def test_full_disk_leaves_no_temporary_files(run, bus, make_endpoint, state, limit, scenario):
    ok = make_endpoint()
    assert_clean(tick(run, bus, ok.url(), state), ok=True)   # a good state file to start from
    before = {}
    if scenario == "replayed":
        assert_clean(tick(run, bus, refused_url(), state), ok=False)
        before = {p.name: p.read_bytes() for p in spool_entries(state)}

    def small_disk():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    url = ok.url() if scenario == "pushed" else refused_url()
    res = tick(run, bus, url, state, preexec=small_disk, pipes=True)
    assert_clean(res)
    assert leftovers(state) == [], f"temporary files left behind: {leftovers(state)}\n{res}"
    for name, data in before.items():
        assert (state / "spool" / name).read_bytes() == data, "a spooled payload was damaged"
    if (state / "last-push.marshal").exists():
        assert isinstance(read_state(state / "last-push.marshal"), dict), "the state file was cut short"


# --- symlinks ---------------------------------------------------------------------------------

TEMP_NAMES = ["last-push.marshal.tmp", ".last-push.marshal.tmp", "last-push.tmp", "last-push.marshal.new",
              "last-push.marshal~", ".last-push.marshal", "spool/.tmp", "spool/tmp", "spool.tmp"]


def fingerprint(path):
    st = os.lstat(path)
    return path.read_bytes(), st.st_mtime_ns, st.st_mode


@pytest.mark.parametrize("target", ["victim-file", "dangling"])
def test_symlinked_temporary_names_are_not_followed(run, bus, make_endpoint, state, tmp_path, target):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious, not the heartbeat's\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (state / "spool").mkdir()
    for i, name in enumerate(TEMP_NAMES):
        (state / name).symlink_to(victim if target == "victim-file" else outside / f"created-{i}")
    print_before = fingerprint(victim)
    ok = make_endpoint()
    for url in (ok.url(), refused_url(), ok.url()):
        res = tick(run, bus, url, state)
        assert_clean(res)
        assert fingerprint(victim) == print_before, f"the victim was written through a symlink\n{res}"
        assert list(outside.iterdir()) == [], f"a file was created through a symlink\n{res}"


def test_symlinked_state_file_is_not_read_nor_written(run, bus, make_endpoint, state, tmp_path):
    victim = tmp_path / "victim.marshal"
    write_state(victim, {"series": [("systemd_unit_active", "gauge", (("unit", "ghost.service"),
                                                                      ("sub_state", "running"), ("host", HOST)))],
                         "intervals": {}, "calendar": {}, "spool_dropped": {}})
    (state / "last-push.marshal").symlink_to(victim)
    before = fingerprint(victim)
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, "--state-dir", state, bus=bus)
    assert_clean(res, ok=True)
    assert "ghost.service" not in res.stdout, "the state file was read through a symlink"
    res = tick(run, bus, make_endpoint().url(), state)
    assert_clean(res)
    assert fingerprint(victim) == before, "the state file was written through a symlink"


def test_symlinked_spool_entry_is_never_sent(run, bus, make_endpoint, state, tmp_path):
    victim = tmp_path / "victim.otlp.gz"
    victim.write_bytes(gz(b"VICTIM PAYLOAD: a file outside the state directory"))
    (state / "spool").mkdir()
    (state / "spool" / spool_name()).symlink_to(victim)
    before = fingerprint(victim)
    ok = make_endpoint()
    res = tick(run, bus, ok.url(), state)
    assert_clean(res, ok=True)
    assert all(b"VICTIM" not in ungz(b) for b in ok.bodies()), "a symlink's target was POSTed"
    assert victim.exists() and fingerprint(victim) == before
    assert res.warnings, "the symlink is skipped with a warning"


def test_symlinked_spool_directory_is_not_followed(run, bus, make_endpoint, state, tmp_path):
    outside = tmp_path / "outside-spool"
    outside.mkdir()
    (outside / spool_name()).write_bytes(gz(b"VICTIM PAYLOAD in a directory outside"))
    (state / "spool").symlink_to(outside, target_is_directory=True)
    before = sorted(p.name for p in outside.iterdir())
    res = tick(run, bus, refused_url(), state)
    assert_clean(res, ok=False)
    assert sorted(p.name for p in outside.iterdir()) == before, "spooled through a symlinked directory"
    ok = make_endpoint()
    res = tick(run, bus, ok.url(), state)
    assert_clean(res)
    assert all(b"VICTIM" not in ungz(b) for b in ok.bodies()), "replayed from a symlinked directory"
    assert sorted(p.name for p in outside.iterdir()) == before


# --- names in the spool -----------------------------------------------------------------------

BAD_NAMES = {
    "arabic-indic-digits": "\u0663" * 20 + ".otlp.gz",
    "fullwidth-digits": "\uff11" * 20 + ".otlp.gz",
    "plus-sign": "+" + "1" * 19 + ".otlp.gz",
    "leading-space": " " + "1" * 19 + ".otlp.gz",
    "underscore": "1_" + "1" * 18 + ".otlp.gz",
    "minus-sign": "-" + "1" * 19 + ".otlp.gz",
}


@pytest.mark.parametrize("kind", list(BAD_NAMES) + ["directory"])
def test_spool_entry_with_a_bad_name_is_skipped_with_a_warning(run, bus, make_endpoint, state, kind):
    (state / "spool").mkdir()
    if kind == "directory":
        (state / "spool" / spool_name()).mkdir()
    else:
        (state / "spool" / BAD_NAMES[kind]).write_bytes(gz(b"VICTIM PAYLOAD under a bad name"))
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, "--state-dir", state, bus=bus)
    assert_clean(res, ok=True)
    assert_bus_values(res)
    ok = make_endpoint()
    res = tick(run, bus, ok.url(), state)
    assert_clean(res, ok=True)
    assert all(b"VICTIM" not in ungz(b) for b in ok.bodies()), "a badly named entry was sent"
    assert len(ok.requests) == 1
    assert res.warnings, f"the entry is skipped with a warning\n{res}"


# --- garbage in the state file ----------------------------------------------------------------

def crc_framed(value):
    import marshal
    import zlib
    body = marshal.dumps(value)
    return zlib.crc32(body).to_bytes(4, "little") + body


GOOD = {"series": [], "intervals": {}, "calendar": {}, "spool_dropped": {}}
S = ("systemd_unit_active", "gauge", (("unit", "alpha.service"), ("sub_state", "gone"), ("host", HOST)))
GARBAGE_STATES = {
    "empty": b"",
    "one-byte": b"\x00",
    "text": b"garbage",
    "random": random.Random(7).randbytes(3000),
    "crc-only": crc_framed(None)[:4],
    "bad-crc": b"\0\0\0\0" + crc_framed(GOOD)[4:],
    "huge-length": (lambda b: __import__("zlib").crc32(b).to_bytes(4, "little") + b)(
        b"\xdb" + (2 ** 31 - 1).to_bytes(4, "little")),
    "none": crc_framed(None),
    "list": crc_framed([1, 2, 3]),
    "string": crc_framed("series"),
    "code-object": crc_framed(compile("1+1", "x", "eval")),
    "series-none": crc_framed(dict(GOOD, series=None)),
    "series-string": crc_framed(dict(GOOD, series="abc")),
    "series-dict": crc_framed(dict(GOOD, series={"a": 1})),
    "series-ints": crc_framed(dict(GOOD, series=[1, 2, 3])),
    "series-short-tuple": crc_framed(dict(GOOD, series=[("systemd_unit_active", "gauge")])),
    "series-labels-string": crc_framed(dict(GOOD, series=[("systemd_unit_active", "gauge", "unit=x")])),
    "series-labels-not-pairs": crc_framed(dict(GOOD, series=[("systemd_unit_active", "gauge", (("unit",),))])),
    "series-labels-ints": crc_framed(dict(GOOD, series=[("systemd_unit_active", "gauge", ((1, 2),))])),
    "series-label-value-none": crc_framed(dict(GOOD, series=[S[:2] + ((("unit", None), ("host", HOST)),)])),
    "series-label-value-bytes": crc_framed(dict(GOOD, series=[S[:2] + ((("unit", b"x"), ("host", HOST)),)])),
    "series-name-none": crc_framed(dict(GOOD, series=[(None, None, None)])),
    "series-unhashable": crc_framed(dict(GOOD, series=[(["a"], {"b": 1}, [["unit", "x"]])])),
    "series-deep": crc_framed(dict(GOOD, series=[[[[[[[[[[]]]]]]]]]])),
    "series-with-bad-escape": crc_framed(dict(GOOD, series=[S[:2] + ((("unit", 'a"b\\c\nd'), ("host", HOST)),)])),
    "intervals-string-values": crc_framed(dict(GOOD, intervals={"tick.timer": "sixty"})),
    "intervals-nan": crc_framed(dict(GOOD, intervals={"tick.timer": math.nan})),
    "intervals-negative-huge": crc_framed(dict(GOOD, intervals={"tick.timer": -1e308})),
    "intervals-list": crc_framed(dict(GOOD, intervals=[1])),
    "intervals-int-keys": crc_framed(dict(GOOD, intervals={1: 2})),
    "calendar-string-values": crc_framed(dict(GOOD, calendar={"*-*-* 03:17:00": "x"})),
    "calendar-list": crc_framed(dict(GOOD, calendar=[("a", 1)])),
    "calendar-inf": crc_framed(dict(GOOD, calendar={"*-*-* 03:17:00": math.inf})),
    "dropped-string": crc_framed(dict(GOOD, spool_dropped="many")),
    "dropped-nan": crc_framed(dict(GOOD, spool_dropped=math.nan)),
    "dropped-negative": crc_framed(dict(GOOD, spool_dropped=-5)),
    "dropped-huge": crc_framed(dict(GOOD, spool_dropped=10 ** 30)),
    "dropped-dict-strings": crc_framed(dict(GOOD, spool_dropped={"rejected": "x"})),
    "dropped-dict-negative": crc_framed(dict(GOOD, spool_dropped={"rejected": -5})),
    "dropped-dict-inf": crc_framed(dict(GOOD, spool_dropped={"max_age": math.inf})),
    "dropped-dict-unknown-reason": crc_framed(dict(GOOD, spool_dropped={"bogus": 3, 7: 1})),
    "dropped-list": crc_framed(dict(GOOD, spool_dropped=[1, 2])),
    "extra-keys": crc_framed(dict(GOOD, zzz=1, series=[S])),
    "missing-keys": crc_framed({}),
}


@pytest.mark.parametrize("case", GARBAGE_STATES)
def test_garbage_state_file_never_breaks_the_tick(run, bus, make_endpoint, state, case):
    (state / "last-push.marshal").write_bytes(GARBAGE_STATES[case])
    res = run(*UNIT_ARGS, "--dry-run", "--timeout", T, "--state-dir", state, bus=bus, limit=15)
    assert_within(res, T)
    assert_clean(res, ok=True)
    assert_bus_values(res, bus)
    assert res.value("systemd_timer_interval_seconds", unit="tick.timer") == 60, res
    for v in res.values("systemd_heartbeat_spool_dropped_total"):
        assert v == "stale" or (math.isfinite(float(v)) and float(v) >= 0), f"dropped_total {v}\n{res}"
    ok = make_endpoint()
    res = tick(run, bus, ok.url(), state, limit=15)
    assert_clean(res, ok=True)
    assert len(ok.requests) == 1
    assert isinstance(read_state(state / "last-push.marshal"), dict), "the state file is written anew"

"""Parsing captured real systemctl answers (systemd 252, a lab host with tests/fixture_units.py).

Re-capture with tests/fixtures/capture.sh. Older systemd prints "n/a" or nothing for a
timestamp that never happened; those variants are derived from the capture below.
"""
from __future__ import annotations

import pytest

from helpers import FIXTURES

CAPTURE = FIXTURES / "systemd-252"
WALL, UPTIME = (float(x) for x in (CAPTURE / "captured-at.txt").read_text().split())
BOOT = 1795963144.0  # init.scope ActiveEnterTimestamp: Sun 2026-11-29 14:39:04 UTC


def stamp(hms: str) -> float:
    """Seconds since the epoch of 2026-11-29 HH:MM:SS UTC (the capture's day)."""
    hour, minute, second = (int(x) for x in hms.split(":"))
    return 1795910400.0 + hour * 3600 + minute * 60 + second


@pytest.fixture(scope="module")
def snapshot(heartbeat):
    names = ["lab-active.service", "lab-crashloop.service", "lab-killed.service", "lab-job.service",
             "lab-job.timer", "lab-calendar.timer", "lab-foo\\x2dbar.service", "lab-missing.service",
             "lab-worker@one.service", "lab-broken.service"]
    blocks = heartbeat.parse_show((CAPTURE / "show.txt").read_text())
    assert [b["Id"] for b in blocks] == ["init.scope", *names]
    units = []
    for name, block in zip(names, blocks[1:]):
        block["Unit"], block["Allowlisted"] = name, name != "lab-broken.service"
        units.append(block)
    manager_start = heartbeat.parse_timestamp(blocks[0]["ActiveEnterTimestamp"])
    return heartbeat.Snapshot(units, manager_start, 0.012, WALL, UPTIME)


@pytest.fixture(scope="module")
def samples(heartbeat, snapshot):
    return {(name, tuple(v for k, v in labels if k != "host")): value
            for name, _, labels, value in heartbeat.shape(snapshot, "h")}


def test_manager_start_is_init_scope_activation(snapshot):
    assert snapshot.manager_start == BOOT


def test_repeated_timer_properties_are_kept_as_lists(heartbeat):
    block = heartbeat.parse_show((CAPTURE / "show.txt").read_text())[5]
    assert block["Id"] == "lab-job.timer"
    assert block["TimersMonotonic"] == ["{ OnUnitActiveUSec=20s ; next_elapse=1h 29min 27.492486s }",
                                        "{ OnActiveUSec=1s ; next_elapse=1h 29min 7.454608s }"]


def test_active_service(samples):
    assert samples[("systemd_unit_active", ("lab-active.service", "running"))] == 1
    assert samples[("systemd_unit_seconds_since_active", ("lab-active.service",))] == 0
    assert samples[("systemd_unit_restart_count_total", ("lab-active.service",))] == 0


def test_crash_looping_service_counts_restarts(samples):
    assert samples[("systemd_unit_restart_count_total", ("lab-crashloop.service",))] == 3


def test_signal_death_shows_signal_number_and_code_killed(samples):
    assert samples[("systemd_unit_last_exit_status", ("lab-killed.service",))] == 9  # SIGKILL
    assert samples[("systemd_unit_last_exit_code", ("lab-killed.service",))] == 2  # killed
    assert samples[("systemd_unit_active", ("lab-killed.service", "failed"))] == 0
    assert samples[("systemd_unit_seconds_since_active", ("lab-killed.service",))] == \
        pytest.approx(WALL - stamp("14:42:07"), abs=0.01)


def test_failed_unit_outside_allowlist_is_reported_and_marked(samples):
    assert samples[("systemd_unit_last_exit_status", ("lab-broken.service",))] == 42
    info = [k for k in samples if k[0] == "systemd_unit_info" and k[1][0] == "lab-broken.service"]
    assert info == [("systemd_unit_info",
                     ("lab-broken.service", "loaded", "failed", "failed", "service", "false"))]


def test_oneshot_counts_from_its_last_run(samples):
    assert samples[("systemd_unit_active", ("lab-job.service", "dead"))] == 0
    assert samples[("systemd_unit_seconds_since_active", ("lab-job.service",))] == \
        pytest.approx(WALL - stamp("14:42:08"), abs=0.01)


def test_timer_with_a_last_trigger(samples):
    assert samples[("systemd_timer_last_trigger_timestamp_seconds", ("lab-job.timer",))] == stamp("14:42:08")
    assert samples[("systemd_unit_seconds_since_active", ("lab-job.timer",))] == \
        pytest.approx(WALL - stamp("14:42:08"), abs=0.01)
    assert samples[("systemd_timer_interval_seconds", ("lab-job.timer",))] == 20  # OnUnitActiveSec
    # a monotonic next elapse (1h 29min 27.49s after the machine's boot) placed on the wall clock
    assert samples[("systemd_timer_next_elapse_timestamp_seconds", ("lab-job.timer",))] == \
        pytest.approx(WALL + 5367.492486 - UPTIME, abs=0.01)


def test_timer_that_never_triggered_counts_from_activation(samples):
    key = ("lab-calendar.timer",)
    assert ("systemd_timer_last_trigger_timestamp_seconds", key) not in samples
    assert samples[("systemd_unit_seconds_since_active", key)] == \
        pytest.approx(WALL - stamp("14:42:07"), abs=0.01)
    assert samples[("systemd_timer_next_elapse_timestamp_seconds", key)] == 1796008620.0  # 30th 03:17
    # never fired and no systemd-analyze answer given: no interval yet
    assert ("systemd_timer_interval_seconds", key) not in samples


def test_not_found_unit_still_reports_with_its_load_state(samples):
    assert samples[("systemd_unit_active", ("lab-missing.service", "dead"))] == 0
    assert samples[("systemd_unit_info", ("lab-missing.service", "not-found", "inactive", "dead",
                                          "service", "true"))] == 1
    assert ("systemd_unit_restart_count_total", ("lab-missing.service",)) not in samples
    # never active since boot: counts from the manager's start
    assert samples[("systemd_unit_seconds_since_active", ("lab-missing.service",))] == \
        pytest.approx(WALL - BOOT, abs=0.01)


def test_why_each_unit_last_failed(samples):
    """Result, the exit and 'gave up' as systemctl shows them (Restart=no: nothing to give up)."""
    def failure(unit):
        (labels,) = [k[1] for k in samples if k[0] == "systemd_unit_last_failure_info" and k[1][0] == unit]
        return labels[1:], samples[("systemd_unit_last_failure_timestamp_seconds", (unit,))]

    # waiting for its automatic restart: failed when its main process exited
    assert failure("lab-crashloop.service") == (("exit-code", "exited", "3", "false"), stamp("14:42:17"))
    assert failure("lab-killed.service") == (("signal", "killed", "9", "false"), stamp("14:42:07"))
    assert failure("lab-broken.service") == (("exit-code", "exited", "42", "false"), stamp("14:42:07"))
    assert not [k for k in samples if k[0] == "systemd_unit_last_failure_info" and k[1][0] == "lab-active.service"]
    assert samples[("systemd_unit_active_enter_timestamp_seconds", ("lab-active.service",))] == stamp("14:42:07")
    assert ("systemd_unit_active_enter_timestamp_seconds", ("lab-job.service",)) not in samples  # never active
    assert samples[("systemd_boot_timestamp_seconds", ())] == BOOT


def test_escaped_and_template_instance_names_are_kept_verbatim(samples):
    assert samples[("systemd_unit_active", ("lab-foo\\x2dbar.service", "running"))] == 1
    assert samples[("systemd_unit_active", ("lab-worker@one.service", "running"))] == 1


def test_health_samples(samples):
    assert samples[("systemd_heartbeat_up", ())] == 1
    assert samples[("systemd_heartbeat_units_reported", ())] == 10
    assert samples[("systemd_heartbeat_units_failed", ())] == 2
    assert samples[("systemd_heartbeat_collect_duration_seconds", ())] == 0.012


@pytest.mark.parametrize("never", ["", "n/a"])
def test_older_systemd_never_timestamps(heartbeat, snapshot, never):
    """systemd < 252 prints 'n/a' (or nothing) for a timestamp that never happened."""
    text = (CAPTURE / "show.txt").read_text()
    for prop in ("ActiveExitTimestamp", "ExecMainExitTimestamp", "LastTriggerUSec",
                 "ActiveEnterTimestamp", "StateChangeTimestamp", "NextElapseUSecRealtime"):
        text = text.replace(f"{prop}=\n", f"{prop}={never}\n")
    blocks = heartbeat.parse_show(text)
    calendar = blocks[6]
    assert calendar["Id"] == "lab-calendar.timer"
    assert heartbeat.parse_timestamp(calendar["LastTriggerUSec"]) is None
    missing = blocks[8]
    missing.update(Unit="lab-missing.service", Allowlisted=True)
    got = {n: v for n, _, _, v in heartbeat.unit_samples(missing, "h", snapshot)}
    assert got["systemd_unit_seconds_since_active"] == pytest.approx(WALL - BOOT, abs=0.01)
    assert "systemd_unit_state_change_timestamp_seconds" not in got


@pytest.mark.parametrize("text, expected", [
    ("Fri 2026-11-27 19:25:44 UTC", 1795807544.0),
    ("Thu 1970-01-01 00:00:00 UTC", 0.0),
    ("", None), ("n/a", None), ("0", None), ("garbage here now", None),
    ("Fri 2026-13-27 19:25:44 UTC", None),
])
def test_parse_timestamp(heartbeat, text, expected):
    assert heartbeat.parse_timestamp(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("30s", 30), ("1min 30s", 90), ("2h", 7200), ("1d 2h 3min 4.5s", 93784.5), ("500ms", 0.5),
    ("250us", 0.00025), ("1w", 604800), ("0", 0), ("", None), ("soon", None), ("5 parsecs", None),
])
def test_parse_timespan(heartbeat, text, expected):
    got = heartbeat.parse_timespan(text)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_select_units_exact_glob_and_failed(heartbeat):
    rows, warnings = heartbeat.parse_list_units((CAPTURE / "list-units-all.txt").read_text())
    assert warnings == []
    names, allowlisted = heartbeat.select_units(
        ["lab-active.service", "lab-worker@*.service", "lab-missing.service"], rows)
    assert names == ["lab-active.service", "lab-missing.service", "lab-worker@one.service",
                     "lab-broken.service", "lab-killed.service"]
    assert allowlisted == {"lab-active.service", "lab-missing.service", "lab-worker@one.service"}


def test_collect_makes_two_systemctl_calls_whatever_the_unit_count(heartbeat):
    calls = []
    show = (CAPTURE / "show.txt").read_text()

    def fake_run(argv, deadline):
        calls.append(argv[:2])
        if argv[1] == "list-units":
            return (CAPTURE / "list-units-all.txt").read_text()
        count = len(argv) - argv.index("--") - 1
        blocks = show.split("\n\n")
        return "\n\n".join((blocks * (count // len(blocks) + 1))[:count])

    patterns = [f"unit{i}.service" for i in range(300)] + ["lab-*"]
    snapshot = heartbeat.collect(patterns, heartbeat.Deadline(5), run=fake_run)
    assert calls == [["systemctl", "list-units"], ["systemctl", "show"]]
    assert len(snapshot.units) > 300


def test_show_block_count_mismatch_is_an_error(heartbeat):
    with pytest.raises(heartbeat.HeartbeatError, match="answered 1 blocks for 2 units"):
        heartbeat.show_units(["a.service", "b.service"], lambda argv, d: "Id=a.service\n", heartbeat.Deadline(5))


def test_calendar_periods_parses_systemd_analyze(heartbeat):
    text = """  Original form: *-*-* 03:17:00
Normalized form: *-*-* 03:17:00
    Next elapse: Sat 2026-11-28 03:17:00 UTC
       From now: 7h left
       Iter. #2: Sun 2026-11-29 03:17:00 UTC
       From now: 1 day 7h left

  Original form: hourly
Normalized form: *-*-* *:00:00
    Next elapse: Fri 2026-11-27 20:00:00 UTC
       From now: 30min left
       Iter. #2: Fri 2026-11-27 21:00:00 UTC
       From now: 1h 30min left
"""
    periods = heartbeat.calendar_periods(["*-*-* 03:17:00", "hourly"], heartbeat.Deadline(5), lambda argv, d: text)
    assert periods == {"*-*-* 03:17:00": 86400.0, "hourly": 3600.0}
    # systemd 257 (Debian 13) spells the second one out
    spelled = text.replace("       Iter. #2:", "   Iteration #2:")
    assert heartbeat.calendar_periods(["*-*-* 03:17:00", "hourly"], heartbeat.Deadline(5), lambda argv, d: spelled) == periods

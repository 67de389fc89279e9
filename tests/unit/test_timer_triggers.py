"""A timer's triggers, their lateness and its service's runs (triggers.py, history.py), against
what PID 1 journaled on real systemd 252 and 257 (tests/fixtures/journal-*/oneshot-timer.json:
the capture started a timer with OnActiveSec=1s, OnUnitActiveSec=2s, AccuracySec=1ms and
stopped it after its oneshot service's 4th run; run 2 exited 1). Expected values come from what
the capture did and the service's own log of each run, never from the heartbeat's reading.
The lateness histogram's encoding is decoded by the official opentelemetry-proto."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from helpers import load_heartbeat

hb = load_heartbeat()
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VERSIONS = ("252", "257")
TIMER, SERVICE = "jcase-oneshot-timer.timer", "jcase-oneshot-timer.service"


def capture(version: str) -> dict:
    return json.loads((FIXTURES / f"journal-{version}" / "oneshot-timer.json").read_text())


def process_log(fixture: dict, word: str) -> list[tuple[int, float]]:
    """(status or pid, Unix seconds) of each run's own "start" or "exit" line."""
    return [(int(line.split()[1]), int(line.split()[2]) / 1e6) for line in fixture["process_log"]
            if line.startswith(word + " ")]


class Journal:
    """journalctl as a `run` callable over the fixture's entries (all stored)."""

    def __init__(self, entries: list[dict]):
        self.entries = entries

    def __call__(self, argv, deadline):
        units = {a[5:] for a in argv if a.startswith("UNIT=")}
        start = next((a.split("=", 1)[1] for a in argv if a.startswith("--cursor=")), None)
        visible = self.entries
        if start:
            visible = visible[next(i for i, e in enumerate(visible) if e["__CURSOR"] == start):]
        return "".join(json.dumps(e) + "\n" for e in visible if e["UNIT"] in units)


def timer(changed: float, last: "float | None", scheduled: "float | None") -> dict:
    """The timer as the bus reader has it (µs)."""
    return {"Unit": TIMER, "LoadState": "loaded", "ActiveState": "active", "SubState": "waiting",
            "StateChangeTimestamp": int(changed * 1e6), "LastTriggerUSec": int(last * 1e6) if last else 0,
            "NextElapseUSecRealtime": int(scheduled * 1e6) if scheduled else 0, "Triggers": [SERVICE],
            "TimersMonotonic": [("OnUnitActiveUSec", 2_000_000, 0)], "TimersCalendar": []}


def service(changed: float, exited: "float | None", result: str = "success") -> dict:
    """The service after a run (a oneshot that exits non-zero is left failed)."""
    state = ("inactive", "dead") if result == "success" else ("failed", "failed")
    return {"Unit": SERVICE, "LoadState": "loaded", "ActiveState": state[0], "SubState": state[1],
            "Result": result, "NRestarts": 0, "Type": "oneshot", "ExecMainCode": 1, "ExecMainStatus": 0,
            "StateChangeTimestamp": int(changed * 1e6),
            "ExecMainExitTimestamp": int(exited * 1e6) if exited else 0}


def tick(units: list, memory: dict, wall: float, journal=None, use_journal: bool = True) -> tuple[dict, list]:
    snapshot = hb.Snapshot(units, None, 0.0, wall, 0.0)
    records = hb.observe_history(snapshot, memory, hb.Deadline(5), journal, use_journal)
    samples = hb.shape(snapshot, "h1", memory, records)
    return {"units": records, "wall": wall, "history_source": snapshot.history_source}, samples


def value(samples: list, name: str, **labels) -> "float | tuple | None":
    found = [s[3] for s in samples if s[0] == name and all(dict(s[2]).get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, found
    return found[0] if found else None


@pytest.fixture
def readable(monkeypatch):
    from systemd_heartbeat import read_journal

    monkeypatch.setattr(read_journal, "journal_readable", lambda: True)


@pytest.mark.parametrize("version", VERSIONS)
def test_triggers_runs_and_lateness_between_two_ticks_from_the_journal(version, readable):
    """One tick right after the timer started, the next after its 4 runs: 4 triggers, 3 runs
    that ended well and 1 that exited 1, the first trigger timed against the elapse the first
    tick saw (1 s after the start, AccuracySec=1ms: within the 0.1 s the process takes to log)."""
    fixture = capture(version)
    started = fixture["did"][0]["end_us"] / 1e6  # systemctl start of the timer had returned
    runs, exits = process_log(fixture, "start"), process_log(fixture, "exit")
    journal = fixture["journal"]
    memory, samples = tick([timer(started, None, started + 1.0), service(0.0, None)], {}, started + 0.1, Journal([]))
    assert value(samples, "systemd_timer_triggers_total") == 0  # from the first look, nothing counted yet
    assert value(samples, "systemd_timer_runs_total", result="success", service=SERVICE) == 0
    last_start, last_exit = runs[-1][1], exits[-1][1]
    memory, samples = tick([timer(last_exit, last_start, last_start + 2.0), service(last_exit, last_exit)], memory,
                           last_exit + 1.0, Journal(journal))
    assert memory["history_source"] == "journal"
    assert value(samples, "systemd_timer_triggers_total") == len(runs) == 4
    failed = [status for status, _at in exits if status]
    assert value(samples, "systemd_timer_runs_total", service=SERVICE, result="success") == len(exits) - len(failed)
    assert value(samples, "systemd_timer_runs_total", service=SERVICE, result="exit-code") == len(failed) == 1
    assert value(samples, "systemd_timer_last_trigger_lateness_seconds") == pytest.approx(runs[0][1] - (started + 1.0),
                                                                                          abs=0.1)
    assert value(samples, "systemd_timer_last_success_timestamp_seconds") == pytest.approx(last_exit, abs=0.1)
    count, total, counts, bounds = value(samples, "systemd_timer_trigger_lateness_seconds")
    assert (count, counts[0], bounds) == (1, 1, hb.LATENESS_BOUNDS)
    # a steady tick after it: nothing moved, nothing counted again
    memory, again = tick([timer(last_exit, last_start, last_start + 2.0), service(last_exit, last_exit)], memory,
                         last_exit + 31.0, Journal(journal))
    assert [s for s in again if s[0].startswith("systemd_timer_")] == [s for s in samples if s[0].startswith("systemd_timer_")]


@pytest.mark.parametrize("version", VERSIONS)
def test_a_tick_per_run_without_the_journal(version):
    """Without the journal, a tick after each run: each trigger counted and timed, each run's
    outcome from the service's Result when the tick saw it ended."""
    fixture = capture(version)
    started = fixture["did"][0]["end_us"] / 1e6
    runs, exits = process_log(fixture, "start"), process_log(fixture, "exit")
    memory = tick([timer(started, None, started + 1.0), service(0.0, None)], {}, started + 0.1, use_journal=False)[0]
    scheduled = started + 1.0  # OnActiveSec=1s, then OnUnitActiveSec=2s after each run began
    for (_pid, began), (status, ended) in zip(runs, exits):
        memory, samples = tick([timer(ended, began, began + 2.0), service(ended, ended, "exit-code" if status else "success")],
                               memory, ended + 0.05, use_journal=False)
        assert value(samples, "systemd_timer_last_trigger_lateness_seconds") == pytest.approx(began - scheduled, abs=0.1)
        scheduled = began + 2.0
    assert memory["history_source"] == "inferred"
    assert value(samples, "systemd_timer_triggers_total") == len(runs)
    failed = [status for status, _at in exits if status]
    assert value(samples, "systemd_timer_runs_total", service=SERVICE, result="success") == len(exits) - len(failed)
    assert value(samples, "systemd_timer_runs_total", service=SERVICE, result="exit-code") == len(failed)
    # each trigger came within AccuracySec=1ms of the elapse the tick before saw (its run's start
    # + 2 s, OnUnitActiveSec): all in the first bucket
    count, _total, counts, _bounds = value(samples, "systemd_timer_trigger_lateness_seconds")
    assert count == counts[0] == len(runs)


def test_a_timer_that_never_fired_and_a_catch_up_after_boot():
    """Never fired: no lateness, no trigger. Persistent=true after a reboot: the catch-up is
    timed against the elapse the last tick before the reboot saw (it slept through it)."""
    memory, samples = tick([timer(1000.0, None, 2000.0)], {}, 1000.5, use_journal=False)
    assert value(samples, "systemd_timer_triggers_total") == 0
    assert value(samples, "systemd_timer_last_trigger_lateness_seconds") is None
    assert value(samples, "systemd_timer_runs_total") is None  # its service is not reported
    memory, samples = tick([timer(9000.0, 9005.0, 12000.0)], memory, 9010.0, use_journal=False)
    assert value(samples, "systemd_timer_triggers_total") == 1
    assert value(samples, "systemd_timer_last_trigger_lateness_seconds") == 7005.0
    assert value(samples, "systemd_timer_trigger_lateness_seconds")[2][-1] == 1  # past an hour


def test_the_lateness_histogram_is_an_otlp_histogram():
    counts = (2, 0, 1, 0, 0, 0, 0, 0, 1)
    samples = [("systemd_timer_trigger_lateness_seconds", "histogram", (("unit", "t.timer"), ("host", "h1")),
                (4, 4000.5, counts, hb.LATENESS_BOUNDS)),
               ("systemd_timer_trigger_lateness_seconds", "histogram", (("unit", "u.timer"), ("host", "h1")), None)]
    request = ExportMetricsServiceRequest()
    request.ParseFromString(hb.encode_request(samples, {"host": "h1"}, 1795807843983998606))
    (metric,) = request.resource_metrics[0].scope_metrics[0].metrics
    assert metric.WhichOneof("data") == "histogram"
    assert metric.histogram.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    point, stale = metric.histogram.data_points
    assert [(a.key, a.value.string_value) for a in point.attributes] == [("unit", "t.timer"), ("host", "h1")]
    assert (point.count, point.sum, tuple(point.bucket_counts), tuple(point.explicit_bounds)) == \
        (4, 4000.5, counts, hb.LATENESS_BOUNDS)
    assert point.time_unix_nano == 1795807843983998606 and point.flags == 0
    assert stale.flags == 1 and stale.count == 0 and not stale.bucket_counts


def test_dry_run_prints_the_histogram_as_victoriametrics_stores_it():
    lines = hb.format_sample(("systemd_timer_trigger_lateness_seconds", "histogram", (("unit", "t.timer"),),
                              (3, 12.5, (1, 1, 0, 0, 0, 0, 0, 0, 1), hb.LATENESS_BOUNDS))).splitlines()
    assert lines[0] == 'systemd_timer_trigger_lateness_seconds_bucket{unit="t.timer",le="1"} 1'
    assert lines[1] == 'systemd_timer_trigger_lateness_seconds_bucket{unit="t.timer",le="5"} 2'
    assert lines[8] == 'systemd_timer_trigger_lateness_seconds_bucket{unit="t.timer",le="+Inf"} 3'
    assert lines[9:] == ['systemd_timer_trigger_lateness_seconds_sum{unit="t.timer"} 12.5',
                         'systemd_timer_trigger_lateness_seconds_count{unit="t.timer"} 3']


@pytest.mark.parametrize("field, bad", [
    ("service", "not a unit"), ("triggers", -1), ("scheduled", float("nan")), ("lateness", 1e300),
    ("late_counts", (1, 2)), ("late_counts", (0, 0, 0, 0, 0, 0, 0, 0, -1)), ("late_sum", float("inf")),
    ("successes", 2 ** 70), ("started_run", "x" * 40),
])
def test_a_crafted_timer_record_is_dropped(field, bad):
    record = {"changed": 1.0, "triggers": 3, "late_counts": (0,) * 9, "late_sum": 0.0, "scheduled": 1.9e9}
    assert hb.checked_record(record, 1.8e9)[0] == record  # an elapse ahead of now is fine
    record[field] = bad
    assert hb.checked_record(record, 1.8e9)[0] is None


@pytest.mark.parametrize("version", VERSIONS)
def test_restarts_systemd_made_are_runs_not_starts(version):
    """A crash loop (Restart=on-failure): every run is a run, only the first was started from
    outside; the fixture's own log has each run's start."""
    journal = json.loads((FIXTURES / f"journal-{version}" / "on-failure-loop.json").read_text())
    found = hb.runs(journal["journal"])
    assert len(found.started) == 1 and found.succeeded == []
    oneshot = hb.runs([e for e in capture(version)["journal"] if e["UNIT"] == SERVICE])
    assert len(oneshot.started) == len(process_log(capture(version), "start"))


@pytest.mark.parametrize("value, expected", [
    (["a.service"], "a.service"), ("a.service b.service", "a.service"), ([], None), ("", None),
    ([7, "b.service"], "b.service"), ("../../etc/passwd", None), (["x" * 300 + ".service"], None),
    ({"a.service": 1}, None), (None, None), (b"a.service", None),
])
def test_what_a_timer_triggers_is_a_unit_name_or_nothing(value, expected):
    """Triggers as the bus gives it (a list), as systemctl prints it (words), or as a lying bus
    or a crafted systemctl could: anything but a unit name is no service."""
    assert hb.triggered_unit({"Triggers": value}) == expected


def test_a_bus_that_sends_triggers_of_the_wrong_type_is_not_believed():
    unit = {"Unit": TIMER}
    for wrong in ("a.service", [b"a.service"], 5, [("a.service",)]):
        hb.store_answers([(unit, "Triggers", None)], [(wrong,)])
        assert "Triggers" not in unit
    hb.store_answers([(unit, "Triggers", None)], [(["a.service"],)])
    assert unit["Triggers"] == ["a.service"]

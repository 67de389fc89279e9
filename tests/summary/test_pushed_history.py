"""The daily summary over a history pushed the way the heartbeat pushes it: OTLP, with the
staleness markers that end a series (the heartbeat's encoder, into the lab's real
VictoriaMetrics, shared: a host label of the test's own, deleted afterwards). The import API the
other summary tests load through drops markers; an export of pushed series holds them, as
nulls. A CI run found the summary crashing on one (a traceback, exit status 1: "findings").

Ticks every 30 s over 20 minutes, written by the test:
- gone.service: failed with exit status 2 for ticks 0-9; at tick 10 it is gone (reset-failed,
  not allowlisted), and its series end with a marker;
- back.service: failed with exit status 1 for ticks 0-4, active again from tick 5 (its failed
  state's series ends with a marker; its exit status stays 1, as systemd keeps it).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import lab
from helpers import delete_series, load_heartbeat

URL = f"http://127.0.0.1:{lab.VM_PORT}"
COMMAND = str(Path(sys.executable).parent / "systemd-daily-summary")
HOST = "summary-pushed"
CLEAN = "summary-pushed-clean"  # pushes beside it, nothing failed
STEP = 30
TICKS = 40

pytestmark = pytest.mark.skipif(not lab.healthy(URL), reason="needs the lab's VictoriaMetrics on 127.0.0.1:30428")


def info(unit: str, state: str, sub: str, value):
    return ("systemd_unit_info", "gauge", (("unit", unit), ("load_state", "loaded"), ("active_state", state),
                                           ("sub_state", sub), ("unit_type", "service"), ("allowlisted", "false")),
            value)


def status(unit: str, value):
    return ("systemd_unit_last_exit_status", "gauge", (("unit", unit),), value)


def tick_samples(k: int) -> list[tuple]:
    samples = [("systemd_heartbeat_up", "gauge", (), 1.0)]
    if k < 10:
        samples += [info("gone.service", "failed", "failed", 1.0), status("gone.service", 2.0)]
    elif k == 10:  # gone: the heartbeat ends what it pushed last time
        samples += [info("gone.service", "failed", "failed", None), status("gone.service", None)]
    if k < 5:
        samples.append(info("back.service", "failed", "failed", 1.0))
    elif k == 5:
        samples.append(info("back.service", "failed", "failed", None))
    if k >= 5:
        samples.append(info("back.service", "active", "running", 1.0))
    samples.append(status("back.service", 1.0))
    return samples


@pytest.fixture(scope="module")
def pushed():
    """The start of the ticks; the history pushed and searchable."""
    heartbeat = load_heartbeat()
    start = (time.time() // STEP) * STEP - (TICKS + 2) * STEP
    scope = f'{{host=~"{HOST}|{CLEAN}"}}'
    delete_series(URL, scope)
    for k in range(TICKS):
        for host, samples in ((HOST, tick_samples(k)), (CLEAN, [("systemd_heartbeat_up", "gauge", (), 1.0)])):
            body = heartbeat.encode_request(samples, {"host": host}, int((start + k * STEP) * 1e9))
            request = urllib.request.Request(f"{URL}/opentelemetry/v1/metrics", data=body, method="POST",
                                             headers={"Content-Type": "application/x-protobuf"})
            urllib.request.urlopen(request, timeout=10).read()
    urllib.request.urlopen(f"{URL}/internal/force_flush", timeout=10).read()
    time.sleep(1)
    yield start
    delete_series(URL, scope)


def iso(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(moment))


def test_the_export_holds_the_markers_as_nulls(pushed):
    """The premise: VictoriaMetrics exports a staleness marker as a null value."""
    data = urllib.parse.urlencode({"match[]": f'systemd_unit_last_exit_status{{host="{HOST}",unit="gone.service"}}',
                                   "start": str(pushed - 60)}).encode()
    with urllib.request.urlopen(f"{URL}/api/v1/export", data=data, timeout=10) as answer:
        (series,) = [json.loads(line) for line in answer.read().splitlines()]
    assert series["values"] == [2] * 10 + [None]


def summary(start: float, host: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, "--url", URL, "--host", host, "--since", str(start - 60),
                           "--until", str(start + TICKS * STEP), "--json"],
                          capture_output=True, text=True, timeout=120, check=False)


def test_failures_ended_by_markers(pushed):
    start = pushed
    done = summary(start, HOST)
    assert (done.returncode, done.stderr) == (1, "")  # findings: two failures
    host = json.loads(done.stdout)["hosts"][HOST]
    failed = {f["unit"]: f for f in host["failed"]}
    assert failed["gone.service"] | {"reason": None} == {
        "unit": "gone.service", "since": iso(start), "until": iso(start + 9 * STEP), "duration": "5m",
        "seconds": 300, "ongoing": False, "last_exit_status": 2} | {"reason": None}
    assert (failed["back.service"]["since"], failed["back.service"]["until"]) == (iso(start), iso(start + 4 * STEP))
    assert (failed["back.service"]["seconds"], failed["back.service"]["last_exit_status"]) == (150, 1)


def test_host_scopes_every_query(pushed):
    """--host CLEAN reads CLEAN's series only: the failed units beside it in the same
    VictoriaMetrics would cost an export (query 5) if the failure scan saw them."""
    done = summary(pushed, CLEAN)
    assert (done.returncode, done.stderr) == (0, "")
    report = json.loads(done.stdout)
    assert report["queries"] == 10 and report["hosts"][CLEAN]["failed"] == []


def test_everything_the_lab_pushed():
    """The summary over every host in the lab's VictoriaMetrics for the last day: whatever the real
    heartbeats of the lab tests before this stage pushed (failures, markers, histograms, hosts
    that came and went) is a report, never an error."""
    now = time.time()
    for flags in ([], ["--json"]):
        done = subprocess.run([COMMAND, "--url", URL, "--since", str(now - 86400), "--until", str(now), *flags],
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode in (0, 1) and done.stderr == "", done.stderr

"""Faults on the lab: VictoriaMetrics down for ten ticks loses nothing; the spool's caps hold
when the outage outlasts them. The heartbeat runs inside a real systemd host; the outage is a
real VictoriaMetrics of its own (so the other tests' instance stays up), stopped and started."""
from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest

from helpers import HEARTBEAT_ON_HOST, install_heartbeat

HOST = "lab-host2"
NAME = "victoria-metrics-outage"


@pytest.fixture()
def outage(lab):
    """(url, state dir on the host); a fresh VictoriaMetrics that the test stops and starts."""
    port = lab.VM_PORT + 6
    lab.stop_service(NAME)
    url = lab.start_victoriametrics(NAME, port)
    state = "/var/lib/systemd-heartbeat-outage"
    install_heartbeat(lab, HOST)
    lab.ssh(HOST, f"rm -rf {state}; mkdir -p {state}")
    yield url, port, state
    lab.stop_service(NAME)


def tick(lab, port: int, state: str, host: str, *extra: str):
    return lab.ssh(HOST, f"{HEARTBEAT_ON_HOST} --unit lab-active.service --host {host} --state-dir {state} "
                         f"--timeout 2 --url http://127.0.0.1:{port}/opentelemetry/v1/metrics " + " ".join(extra),
                   check=False)


def spooled_times(lab, state: str) -> list[int]:
    names = lab.ssh(HOST, f"ls {state}/spool 2>/dev/null", check=False).stdout.split()
    return sorted(int(n.split(".")[0]) for n in names)


def exported_times(url: str, host: str) -> list[int]:
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).read()
    import time

    data = urllib.parse.urlencode({"match[]": f'systemd_heartbeat_up{{host="{host}"}}', "start": "0",
                                   "end": f"{time.time() + 60:.0f}"}).encode()
    with urllib.request.urlopen(f"{url}/api/v1/export", data=data, timeout=10) as answer:
        lines = [json.loads(line) for line in answer.read().decode().splitlines() if line.strip()]
    return sorted(t for line in lines for t in line["timestamps"])


def test_ten_ticks_of_outage_lose_no_sample(lab, outage):
    url, port, state = outage
    host = "outage-ten-ticks"
    assert tick(lab, port, state, host).returncode == 0  # up: pushed
    lab.stop_service(NAME, keep_data=True)
    for waiting in range(1, 11):
        done = tick(lab, port, state, host)
        assert done.returncode == 1 and done.stderr.endswith(f"(spooled; {waiting} waiting)\n"), done.stderr
    held = spooled_times(lab, state)
    assert len(held) == 10
    lab.start_victoriametrics(NAME, port)
    done = tick(lab, port, state, host)
    assert (done.returncode, done.stderr) == (0, "")
    assert spooled_times(lab, state) == []
    stored = exported_times(url, host)
    assert len(stored) == 12  # before, ten during, after
    assert {t // 1_000_000 for t in held} <= set(stored)  # the outage's ticks, at their original times (ms)


def test_caps_hold_when_the_outage_outlasts_them(lab, outage):
    url, port, state = outage
    host = "outage-capped"
    lab.stop_service(NAME, keep_data=True)
    for _ in range(6):
        tick(lab, port, state, host, "--spool-max-bytes", "2500")
    held = spooled_times(lab, state)
    assert 0 < len(held) < 6
    lab.start_victoriametrics(NAME, port)
    assert tick(lab, port, state, host, "--spool-max-bytes", "2500").returncode == 0
    stored = exported_times(url, host)
    assert len(stored) == len(held) + 1  # the newest survived; the oldest were dropped first
    assert {t // 1_000_000 for t in held} <= set(stored)
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).read()
    import time

    dropped = f'systemd_heartbeat_spool_dropped_total{{host="{host}",reason="max_bytes"}}'
    data = urllib.parse.urlencode({"query": dropped,
                                   "time": f"{time.time() + 1:.3f}"}).encode()
    with urllib.request.urlopen(f"{url}/api/v1/query", data=data, timeout=10) as answer:
        result = json.load(answer)["data"]["result"]
    assert float(result[0]["value"][1]) == 6 - len(held)

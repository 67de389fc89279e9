"""The daily summary at fleet size: 1,000 hosts, each a renamed copy of a host of the known
history (tests/summary/fleet.py), beside the originals in one VictoriaMetrics. Every copy's
findings must be exactly its original's (test_daily_summary.py checks the originals')."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lab

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet  # noqa: E402
import history  # noqa: E402

PORT = lab.VM_PORT + 7
HOSTS = 1000
COMMAND = str(Path(sys.executable).parent / "systemd-daily-summary")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab's VictoriaMetrics needs root")


@pytest.fixture(scope="module")
def report():
    """The summary's JSON and Markdown reports over the fleet and the originals."""
    lab.stop_service("victoria-metrics-summary-fleet")
    url = lab.start_victoriametrics("victoria-metrics-summary-fleet", PORT)
    end = (time.time() // 3600 - 1) * 3600
    start = end - history.DAY
    try:
        fleet.load(url, start, HOSTS, originals=True)
        window = ["--url", url, "--since", str(start), "--until", str(end)]
        as_json = subprocess.run([COMMAND, *window, "--json"], capture_output=True, text=True, timeout=300)
        as_markdown = subprocess.run([COMMAND, *window], capture_output=True, text=True, timeout=300)
    finally:
        lab.stop_service("victoria-metrics-summary-fleet")
    assert as_json.returncode == 1, as_json.stderr
    return json.loads(as_json.stdout), as_markdown.stdout


def test_every_copy_has_its_originals_findings(report):
    hosts = report[0]["hosts"]
    assert len(hosts) == HOSTS + 3
    for index in range(HOSTS):
        assert hosts[fleet.name(index)] == hosts[fleet.kind(index)], fleet.name(index)
    assert report[0]["queries"] == 11  # nine for the day, two for the trust report


def test_the_report_lists_hosts_with_findings_and_counts_the_healthy(report):
    hosts, markdown = report
    troubled = sorted(name for name, record in hosts["hosts"].items() if record["verdict"] != "healthy")
    healthy = len(hosts["hosts"]) - len(troubled)
    sections = [line[3:].split(":")[0] for line in markdown.splitlines() if line.startswith("## ")]
    assert sections == troubled + [f"{healthy} more hosts"]
    assert markdown.endswith(f"## {healthy} more hosts: healthy\n")
    assert len(troubled) == sum(fleet.kind(i) != "beta" for i in range(HOSTS)) + 2  # + alpha and gamma

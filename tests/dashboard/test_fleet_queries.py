"""Every panel query of the dashboard, as Grafana sends it with host = All (`.*`), against a real
VictoriaMetrics holding 1,000 synthetic hosts (tests/summary/fleet.py): none is refused, and
none returns more series than its bound. Its cost in time is measured by bench/fleet.py, not here."""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import urllib.request

import pytest

import lab
from helpers import ROOT
from helpers_dashboard import panel_requests

sys.path.insert(0, str(ROOT / "tests/summary"))
import fleet  # noqa: E402
import history  # noqa: E402
from helpers_dashboard import systemd_dashboard  # noqa: E402

TOP, systemd_monitoring_dashboard = systemd_dashboard.TOP, systemd_dashboard.systemd_monitoring_dashboard

PORT = lab.VM_PORT + 8
HOSTS = 1000
UNITS = ["backup", "web.service", "job.timer", "typo.service", "pad-*.service"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab's VictoriaMetrics needs root")


@pytest.fixture(scope="module")
def victoria():
    lab.stop_service("victoria-metrics-dashboard-fleet")
    url = lab.start_victoriametrics("victoria-metrics-dashboard-fleet", PORT)
    end = (time.time() // 3600 - 1) * 3600
    start = end - history.DAY
    fleet.load(url, start, HOSTS, pad_units=2)
    yield url, start, end
    lab.stop_service("victoria-metrics-dashboard-fleet")


def test_every_panel_query_at_fleet_size_is_answered_within_its_bound(victoria):
    url, start, end = victoria
    dashboard = systemd_monitoring_dashboard(UNITS)
    assert next(v for v in dashboard["templating"]["list"] if v["name"] == "host")["allValue"] == ".*"
    answered = 0
    for title, path, params in panel_requests(dashboard, ".*", start, end):
        request = urllib.request.Request(f"{url}{path}", data=urllib.parse.urlencode(params).encode())
        with urllib.request.urlopen(request, timeout=60) as answer:  # a refusal (HTTP 422) raises
            result = json.load(answer)["data"]["result"]
        # a list or graph shows at most TOP * 10 series; counts by state a handful
        assert len(result) <= TOP * 10, (title, params["query"], len(result))
        answered += 1
    assert answered == sum(len(p.get("targets", [])) for p in dashboard["panels"])


def test_failure_panels_count_exactly_what_a_host_of_the_known_history_failed(victoria):
    """The overview's count in the time range and a row's failures by reason, for a copy of alpha
    (tests/summary/history.py): backup.service exit-code 1 and signal 5 (five between two ticks,
    a series born at 5), web.service exit-code 12; old.service's failures before the window none."""
    url, start, end = victoria
    host = fleet.name(0)
    assert fleet.kind(0) == "alpha"
    dashboard = systemd_monitoring_dashboard(["backup"])
    answers: dict[str, list[dict]] = {}
    for title, path, params in panel_requests(dashboard, host, start, end):
        if title in ("Failures in the time range", "Failures by reason"):
            request = urllib.request.Request(f"{url}{path}", data=urllib.parse.urlencode(params).encode())
            with urllib.request.urlopen(request, timeout=60) as answer:
                answers.setdefault(title, []).append(json.load(answer)["data"]["result"])
    last, counted = answers["Failures in the time range"]
    assert {row["metric"]["unit"]: float(row["value"][1]) for row in counted} == {
        "backup.service": 6, "web.service": 12}
    (bars,) = answers["Failures by reason"]
    assert {row["metric"]["result"]: sum(float(pair[1]) for pair in row["values"]) for row in bars} == {
        "exit-code": 1, "signal": 5}

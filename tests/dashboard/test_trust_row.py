"""The dashboard's row for load-bearing timers (issue 21: can this timer be trusted?): every query
of it, as Grafana sends it over the last 7 days, against the lab's real VictoriaMetrics
(127.0.0.1:30428, shared: the test's series carry a host label of their own and are deleted
afterwards), loaded with the timers whose week the test made up (tests/summary/trust_history.week):
alpha-pull.timer ran every 300 s all week, every run succeeded; beta-pull.timer ran every 300 s
for the last 3 days, run 10 failed with exit-code, runs 500 to 503 were killed (signal), trigger
700 came 40 s late; gamma-pull.timer ran every 60 s but not on day 3; delta.timer is not
allowlisted. Every panel returns data, and the values are what the timers did."""
from __future__ import annotations

import json
import sys
import urllib.parse
import urllib.request

import pytest

import lab
from helpers import ROOT
from helpers_dashboard import panel_requests, systemd_dashboard

sys.path.insert(0, str(ROOT / "tests/summary"))
import trust_history  # noqa: E402

URL = f"http://127.0.0.1:{lab.VM_PORT}"
DAY = 86400
TITLES = [p["title"] for p in systemd_dashboard.trust_panels()]

pytestmark = pytest.mark.skipif(not lab.healthy(URL), reason="needs the lab's VictoriaMetrics on 127.0.0.1:30428")


@pytest.fixture(scope="module")
def answers():
    """{panel title: [each query's result, in order]} for the host the test loaded, over a week."""
    dashboard = systemd_dashboard.systemd_monitoring_dashboard(["*-pull.timer"])
    found: dict[str, list[list[dict]]] = {}
    with trust_history.known_week(URL, "dashboard") as (host, end):
        start = end - 7 * DAY
        for title, path, params in panel_requests(dashboard, host, start, end):
            if title in TITLES:
                request = urllib.request.Request(f"{URL}{path}", data=urllib.parse.urlencode(params).encode())
                with urllib.request.urlopen(request, timeout=60) as answer:
                    found.setdefault(title, []).append(json.load(answer)["data"]["result"])
    return found


def by_unit(result: list[dict]) -> dict[str, float]:
    return {row["metric"]["unit"]: float(row["value"][1]) for row in result}


def test_every_query_of_the_row_returns_data(answers):
    assert sorted(answers) == sorted(TITLES)
    assert [title for title, results in answers.items() for result in results if not result] == []


def test_runs_seen_and_expected(answers):
    seen, expected = (by_unit(result) for result in answers["Runs seen vs expected"])
    assert (seen["beta-pull.timer"], expected["beta-pull.timer"]) == (864, 864)  # 3 days at 300 s
    assert by_unit(answers["Runs that succeeded"][0]) == pytest.approx(
        {"alpha-pull.timer": 1, "beta-pull.timer": 859 / 864, "gamma-pull.timer": 1})


def test_runs_by_result_are_the_runs_that_failed(answers):
    (bars,) = answers["Runs by result"]
    counted = {(row["metric"]["unit"], row["metric"]["result"]): sum(float(v) for _at, v in row["values"])
               for row in bars}
    assert {key: n for key, n in counted.items() if key[1] != "success"} == {
        ("beta-pull.timer", "exit-code"): 1, ("beta-pull.timer", "signal"): 4}


def test_lateness_last_worst_and_distribution(answers):
    (lines,) = answers["Lateness of the last trigger"]
    assert {row["metric"]["unit"]: max(float(v) for _at, v in row["values"]) for row in lines} == {
        "alpha-pull.timer": 0.5, "beta-pull.timer": 40, "gamma-pull.timer": 0.5}
    median, p99, worst = (by_unit(result) for result in answers["Lateness in the time range"])
    assert worst == {"alpha-pull.timer": 0.5, "beta-pull.timer": 40, "gamma-pull.timer": 0.5}
    # 863 of beta's 864 triggers came 0.5 s late: both quantiles fall in the first bucket, up to 1 s
    assert all(0 < value <= 1 for value in [*median.values(), *p99.values()]) and len(median) == len(p99) == 3


def test_since_last_success(answers):
    # each last run ended 2 s after its trigger, 7.5 s past the interval: 290.5 s before the end at 300 s, 50.5 s at 60 s
    assert by_unit(answers["Since last success"][0]) == {"alpha-pull.timer": 290.5, "beta-pull.timer": 290.5,
                                                         "gamma-pull.timer": 50.5}


def test_the_row_is_there_only_for_an_allowlist_with_timers():
    rows = [p["title"] for p in systemd_dashboard.systemd_monitoring_dashboard(["web.service"])["panels"]
            if p["type"] == "row"]
    assert systemd_dashboard.TRUST_ROW not in rows
    rows = [p["title"] for p in systemd_dashboard.systemd_monitoring_dashboard(["web", "*.timer"])["panels"]
            if p["type"] == "row"]
    assert rows[:2] == ["Overview", systemd_dashboard.TRUST_ROW]

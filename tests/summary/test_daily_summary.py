"""The daily summary against a real VictoriaMetrics loaded with a known 24-hour history."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

import lab
from cluster_standin import ClusterStandIn
from helpers import ANSIBLE_PLAYBOOK, ROOT

sys.path.insert(0, str(ROOT / "summary"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import history  # noqa: E402

PORT = lab.VM_PORT + 4
COMMAND = str(Path(sys.executable).parent / "systemd-daily-summary")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab's VictoriaMetrics needs root")


@pytest.fixture(scope="module")
def loaded():
    """A fresh VictoriaMetrics holding the history; returns (url, start, end)."""
    lab.stop_service("victoria-metrics-summary-test")  # fresh data every run
    url = lab.start_victoriametrics("victoria-metrics-summary-test", PORT)
    end = (time.time() // 3600 - 1) * 3600  # a whole hour, an hour ago
    start = end - history.DAY
    request = urllib.request.Request(f"{url}/api/v1/import", data=history.build(start).encode(), method="POST")
    urllib.request.urlopen(request, timeout=60).read()
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=10).read()
    time.sleep(1)
    yield url, start, end
    lab.stop_service("victoria-metrics-summary-test")


def at(start: float, hours: int, minutes: int = 0, seconds: int = 0) -> str:
    moment = start + hours * 3600 + minutes * 60 + seconds
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def summary(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=120)


def test_markdown_report(loaded):
    url, start, end = loaded
    done = summary("--url", url, "--since", str(start), "--until", str(end))
    assert done.returncode == 1, done.stderr
    assert done.stdout == f"""# systemd daily summary, {at(start, 0)} to {at(start, 24)}

## alpha: attention: 2 failures, 1 unit crashed, 1 unit restarted, 1 mass restart, 1 reboot, 1 stale timer, \
1 missing unit, 1 heartbeat gap

- failed: `backup.service` at {at(start, 2)} for 30m: exit-code, exit status 1
- failed: `backup.service` at {at(start, 14)} for 1h00m: signal, killed by signal 9; systemd gave up restarting it
- crashed: `web.service` failed 12 times and was restarted, the last at {at(start, 10, 5, 55)}: exit-code, exit status 3
- failures by reason: `web.service` 12: exit-code 12
- failures by reason: `backup.service` 6: exit-code 1, signal 5
- restarted: `web.service` 12 times
- mass restart: 3 load-bearing units restarted or failed from {at(start, 12, 0, 10)} to {at(start, 12, 1, 30)}: \
`api.service`, `cache.service`, `db.service`
- reboot: the host booted at {at(start, 20)}
- stale timer: `job.timer` from {at(start, 6, 0, 30)} for 1h59m
- missing: `typo.service` is allowlisted but not-found
- heartbeat gap: nothing pushed from {at(start, 18)} to {at(start, 18, 20)} (20m)

## beta: healthy

## gamma: no data: the heartbeat pushed nothing in the window
"""


def test_json_report(loaded):
    url, start, end = loaded
    done = summary("--url", url, "--since", str(start), "--until", str(end), "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["window"] == {"since": at(start, 0), "until": at(start, 24)}
    alpha = report["hosts"]["alpha"]
    assert alpha["failed"] == [
        {"unit": "backup.service", "since": at(start, 2), "until": at(start, 2, 29, 30), "duration": "30m",
         "seconds": 1800, "ongoing": False, "last_exit_status": 1, "result": "exit-code", "exit_code": "exited",
         "exit_status": 1, "gave_up": False},
        {"unit": "backup.service", "since": at(start, 14), "until": at(start, 14, 59, 30), "duration": "1h00m",
         "seconds": 3600, "ongoing": False, "last_exit_status": 9, "result": "signal", "exit_code": "killed",
         "exit_status": 9, "gave_up": True}]
    assert alpha["crashed"] == [{"unit": "web.service", "failures": 12, "last": at(start, 10, 5, 55),
                                 "result": "exit-code", "exit_code": "exited", "exit_status": 3, "gave_up": False}]
    # as planted (history.py): web.service one exit-code failure a tick, 12; backup.service one
    # exit-code failure, and five signal failures between two ticks (a series born at 5);
    # old.service's 4 failures before the window are none in it
    assert alpha["failures_by_reason"] == [
        {"unit": "web.service", "failures": 12, "by_result": {"exit-code": 12}},
        {"unit": "backup.service", "failures": 6, "by_result": {"exit-code": 1, "signal": 5}}]
    assert alpha["restarted"] == [{"unit": "web.service", "restarts": 12}]
    assert alpha["mass_restarts"] == [{"from": at(start, 12, 0, 10), "to": at(start, 12, 1, 30),
                                       "units": ["api.service", "cache.service", "db.service"]}]
    assert alpha["reboots"] == [{"at": at(start, 20)}]
    assert alpha["stale_timers"] == [{"unit": "job.timer", "since": at(start, 6, 0, 30), "until": at(start, 7, 59, 30),
                                      "duration": "1h59m", "seconds": 7170, "ongoing": False}]
    assert alpha["missing"] == [{"unit": "typo.service", "load_state": "not-found"}]
    assert alpha["heartbeat_gaps"] == [{"from": at(start, 18), "to": at(start, 18, 20), "duration": "20m",
                                        "seconds": 1200}]
    assert report["hosts"]["beta"]["verdict"] == "healthy"
    assert report["hosts"]["beta"]["restarted"] == []  # a flat non-zero counter is not a restart
    assert report["hosts"]["beta"]["failures_by_reason"] == []
    assert report["hosts"]["gamma"]["verdict"] == "no data: the heartbeat pushed nothing in the window"
    assert report["queries"] == 11  # nine for the day, two for the timers' trust report


def test_a_cluster_base_url_gets_the_same_report_through_vmselect_paths(loaded):
    """On a VictoriaMetrics cluster the summary's --url is vmselect's per-tenant base URL; every
    request goes below it (a stand-in for vmselect forwards them to the single-node server)."""
    url, start, end = loaded
    vmselect = ClusterStandIn(backend=url)
    try:
        window = ("--since", str(start), "--until", str(end), "--json")
        direct = summary("--url", url, *window)
        cluster = summary("--url", f"{vmselect.url}/select/42/prometheus/", *window)
    finally:
        vmselect.close()
    assert cluster.returncode == direct.returncode == 1, cluster.stderr
    assert cluster.stdout == direct.stdout
    assert len(vmselect.paths) == json.loads(cluster.stdout)["queries"]
    assert set(vmselect.paths) == {f"/select/42/prometheus/api/v1/{api}" for api in ("query", "query_range", "export")}


def test_units_named_as_in_the_allowlist(loaded):
    """--unit reads names as the heartbeat does: `web` is web.service, globs match."""
    url, start, end = loaded
    done = summary("--url", url, "--since", str(start), "--until", str(end), "--host", "alpha", "--unit", "web",
                   "--json")
    alpha = json.loads(done.stdout)["hosts"]["alpha"]
    assert [c["unit"] for c in alpha["crashed"]] == ["web.service"] and alpha["failed"] == []
    assert [f["unit"] for f in alpha["failures_by_reason"]] == ["web.service"]
    assert alpha["mass_restarts"] == [] and alpha["reboots"] == [{"at": at(start, 20)}]  # a reboot is the host's
    done = summary("--url", url, "--since", str(start), "--until", str(end), "--host", "alpha", "--unit", "*.timer",
                   "--json")
    alpha = json.loads(done.stdout)["hosts"]["alpha"]
    assert [s["unit"] for s in alpha["stale_timers"]] == ["job.timer"] and alpha["crashed"] == []
    done = summary("--url", url, "--since", "1h", "--unit", "bad name")
    assert done.returncode == 64 and "--unit: bad unit 'bad name'" in done.stderr


def test_a_clean_host_exits_zero(loaded):
    url, start, end = loaded
    done = summary("--url", url, "--since", str(start), "--until", str(end), "--host", "beta")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"# systemd daily summary, {at(start, 0)} to {at(start, 24)}\n\n## beta: healthy\n"


def test_an_unknown_host_is_no_data_not_healthy(loaded):
    url, start, end = loaded
    done = summary("--url", url, "--since", str(start), "--until", str(end), "--host", "delta")
    assert done.returncode == 1
    assert "## delta: no data: the heartbeat pushed nothing in the window" in done.stdout


def test_victoriametrics_down_exits_two_with_one_line():
    done = summary("--url", "http://127.0.0.1:9", "--since", "1h")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("systemd-daily-summary: cannot query VictoriaMetrics at http://127.0.0.1:9: ")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("args, message", [
    (["--since", "1h", "--until", "2h"], "the window is empty or inverted: --since 1h"),
    (["--since", "yesterday-ish"], "--since 'yesterday-ish' is not 'now', a duration like 24h or 90m"),
    (["--until", "2026-13-45"], "--until '2026-13-45' is not 'now', a duration like 24h or 90m"),
])
def test_bad_window_is_rejected(args, message):
    done = summary("--url", "http://127.0.0.1:9", *args)
    assert done.returncode == 64 and done.stdout == ""
    assert done.stderr.startswith(f"systemd-daily-summary: {message}") and done.stderr.count("\n") == 1


def test_daily_playbook_keeps_the_newest_reports(loaded, tmp_path):
    url, start, end = loaded
    reports = tmp_path / "reports"
    reports.mkdir()
    for day in ("2020-01-01", "2020-01-02", "2020-01-03"):
        (reports / f"{day}.md").write_text("old\n")
    done = subprocess.run(
        [ANSIBLE_PLAYBOOK, str(ROOT / "playbooks/daily-summary.yml"),
         "-e", f"systemd_daily_summary_url={url}", "-e", f"systemd_daily_summary_dir={reports}",
         "-e", "systemd_daily_summary_keep=2", "-e", f"systemd_daily_summary_window={start:.0f}",
         "-e", f"systemd_daily_summary_until={end:.0f}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    kept = sorted(p.name for p in reports.iterdir())
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert kept == ["2020-01-03.md", f"{today}.md"]
    assert "## alpha: attention: 2 failures" in (reports / f"{today}.md").read_text()

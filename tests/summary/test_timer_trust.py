"""The daily summary's trust report (issue 21: can this timer be trusted?) against the real
VictoriaMetrics of the lab (127.0.0.1:30428, shared: the test's series carry a host label of
their own and are deleted afterwards), loaded with timers whose week the test made up
(trust_history.week), so every expected value is what the timers did (delta.timer, not
allowlisted, gets no report).
"""
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
import trust_history  # noqa: E402

URL = f"http://127.0.0.1:{lab.VM_PORT}"
COMMAND = str(Path(sys.executable).parent / "systemd-daily-summary")
DAY = 86400
RULE = ("ready for auto-pull when the heartbeat watched the timer for the whole window (less one interval), saw "
        "at least 95% of the runs its interval expects, at most 0 runs failed, none came more than 10 s late, and it "
        "never went more than 2 intervals without a successful run")

pytestmark = pytest.mark.skipif(not lab.healthy(URL), reason="needs the lab's VictoriaMetrics on 127.0.0.1:30428")


@pytest.fixture(scope="module")
def loaded():
    """(host, end of the week): the known week (trust_history.week) imported."""
    with trust_history.known_week(URL, "summary") as week:
        yield week


def summary(host: str, end: float, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, "--url", URL, "--since", str(end - DAY), "--until", str(end), "--host", host,
                           *args], capture_output=True, text=True, timeout=120, check=False)


def test_json_report_per_timer(loaded):
    host, end = loaded
    done = summary(host, end, "--json")
    assert done.returncode == 0, done.stderr  # the trust report is no finding of the day
    report = json.loads(done.stdout)
    # eight for the day and two for the trust report, no export: nothing failed on this host, and
    # its pushes have no gap (--host scopes every query: other tests' hosts share this VictoriaMetrics)
    assert report["queries"] == 10
    trust = report["trust"]
    assert trust["rule"] == {"window_seconds": 7 * DAY, "max_failed_runs": 0, "max_lateness_seconds": 10,
                             "min_runs_seen_fraction": 0.95, "max_intervals_without_success": 2, "text": RULE}
    alpha, beta, gamma = trust["timers"]  # delta.timer is not load-bearing
    assert alpha == {
        "host": host, "unit": "alpha-pull.timer", "service": "alpha-pull.service", "watched_seconds": 7 * DAY,
        "interval_seconds": 300, "runs_expected": 2016, "runs_seen": 2016, "runs_succeeded": 2016,
        "runs_failed": 0, "failed_by_result": {}, "lateness_worst_seconds": 0.5,
        "lateness_median_at_most_seconds": 1, "runs_late": 0, "longest_without_success_seconds": 300,
        "ready": True, "blocking": [],
        "verdict": "ready for auto-pull: 7 days, 2,016 runs, 0 failed, none late by more than 10 s"}
    # 3 days at 300 s: 864 runs, 5 failed; runs 499 and 504 the successes around the 4 killed ones
    assert beta == {
        "host": host, "unit": "beta-pull.timer", "service": "beta-pull.service", "watched_seconds": 3 * DAY,
        "interval_seconds": 300, "runs_expected": 864, "runs_seen": 864, "runs_succeeded": 859,
        "runs_failed": 5, "failed_by_result": {"exit-code": 1, "signal": 4}, "lateness_worst_seconds": 40,
        "lateness_median_at_most_seconds": 1, "runs_late": 1, "longest_without_success_seconds": 5 * 300,
        "ready": False, "blocking": [
            "not watched long enough (3 days of 7 days)",
            "5 failed runs (more than 0: exit-code 1, signal 4)",
            "1 run late by more than 10 s (worst 40 s)",
            "25m without a successful run (more than 2 x 5m)"],
        "verdict": "not ready for auto-pull: not watched long enough (3 days of 7 days); 5 failed runs (more than 0: "
                   "exit-code 1, signal 4); 1 run late by more than 10 s (worst 40 s); 25m without a successful run "
                   "(more than 2 x 5m)"}
    # a week at 60 s is 10,080 runs; a day without them leaves 8,640, and a gap of a day and a run
    assert (gamma["runs_expected"], gamma["runs_seen"], gamma["runs_succeeded"], gamma["runs_failed"]) == (
        10080, 8640, 8640, 0)
    assert gamma["longest_without_success_seconds"] == DAY + 60
    assert gamma["blocking"] == ["8,640 of 10,080 expected runs seen (86%, under 95%)",
                                 "24h01m without a successful run (more than 2 x 1m)"]


def test_markdown_report_states_the_rule_and_each_timer(loaded):
    host, end = loaded
    done = summary(host, end, "--unit", "*-pull.timer")
    assert done.returncode == 0, done.stderr
    section = done.stdout[done.stdout.index("## Can these timers be trusted?"):]
    week = (time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(end - 7 * DAY)),
            time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(end)))
    assert section.startswith(f"## Can these timers be trusted? {week[0]} to {week[1]}\n\nRule: {RULE}.\n\n")
    assert f"""### {host}: `alpha-pull.timer`: ready for auto-pull: 7 days, 2,016 runs, 0 failed, none late by more than 10 s

- runs: 2,016 seen of 2,016 expected (every 5m, watched 7 days)
- ended: 2,016 succeeded, 0 failed, of `alpha-pull.service`
- lateness: worst 0.5 s, median at most 1 s, 0 late by more than 10 s
- longest without a successful run: 5m
""" in section
    assert """- runs: 864 seen of 864 expected (every 5m, watched 3 days)
- ended: 859 succeeded, 5 failed (exit-code 1, signal 4), of `beta-pull.service`
- lateness: worst 40 s, median at most 1 s, 1 late by more than 10 s
- longest without a successful run: 25m
""" in section
    assert "delta.timer" not in done.stdout


def test_thresholds_from_the_command_line(loaded):
    """A looser rule lets beta through but for what it cannot excuse: being watched 3 days."""
    host, end = loaded
    done = summary(host, end, "--json", "--unit", "beta-pull.timer", "--trust-window", "3d",
                   "--trust-max-failed", "5", "--trust-max-late", "60", "--trust-max-gap", "5")
    (beta,) = json.loads(done.stdout)["trust"]["timers"]
    assert beta["ready"] and beta["verdict"] == ("ready for auto-pull: 3 days, 864 runs, 5 failed, "
                                                 "none late by more than 1m")
    done = summary(host, end, "--json", "--unit", "beta-pull.timer", "--trust-max-late", "30")
    (beta,) = json.loads(done.stdout)["trust"]["timers"]
    assert beta["runs_late"] == 1  # 40 s is more than 30 s (a bound of the histogram)


@pytest.mark.parametrize("flag, value, message", [
    ("--trust-window", "a week", "--trust-window 'a week' is not a duration like 7d, 36h or 90m"),
    ("--trust-window", "0d", "--trust-window '0d' is not a duration like 7d, 36h or 90m"),
    ("--trust-max-failed", "-1", "--trust-max-failed '-1' is not a whole number >= 0"),
    ("--trust-max-late", "soon", "--trust-max-late 'soon' is not a number of seconds > 0"),
    ("--trust-min-seen", "1.5", "--trust-min-seen '1.5' is not a fraction in (0, 1]"),
    ("--trust-min-seen", "nan", "--trust-min-seen 'nan' is not a fraction in (0, 1]"),
    ("--trust-max-gap", "0.5", "--trust-max-gap '0.5' is not a number of intervals >= 1"),
])
def test_a_bad_threshold_is_one_line_naming_it(flag, value, message):
    done = subprocess.run([COMMAND, "--url", "http://127.0.0.1:9", flag, value], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (64, "", f"systemd-daily-summary: {message}\n")


def test_the_daily_playbook_passes_its_trust_variables(tmp_path):
    """playbooks/daily-summary.yml hands systemd_daily_summary_trust_* from the inventory to the
    flags (a bad one stops it with the summary's line)."""
    from helpers import ANSIBLE_PLAYBOOK, ROOT

    (tmp_path / "group_vars").mkdir()
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                                        "      ansible_python_interpreter: '{{ ansible_playbook_python }}'\n")
    (tmp_path / "group_vars" / "all.yml").write_text("systemd_daily_summary_trust_min_seen: 2\n")
    done = subprocess.run([ANSIBLE_PLAYBOOK, "-i", str(tmp_path / "hosts.yml"), str(ROOT / "playbooks/daily-summary.yml"),
                           "-e", "systemd_daily_summary_url=http://127.0.0.1:9"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ}, check=False)
    assert done.returncode != 0
    assert "--trust-min-seen '2' is not a fraction in (0, 1]" in done.stdout

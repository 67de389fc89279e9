"""Can the auto-pull timer be trusted (issue 21, point 4), end to end on real systemd 252 (Debian 12)
and 257 (Debian 13): docs/examples' infrastructure-auto-pull timer, service and script polling a
real git repository on the lab host (a bare one stands in for GitHub), one pull refused by the
origin, and what the owner would look at: the daily summary's trust report (Markdown and JSON),
SystemdTimerSuccessRatioLow through a real vmalert into a real Alertmanager (the lab tests' own), and the
dashboard's trust row, all from the real heartbeat's pushes to the lab's VictoriaMetrics.

Time is scaled down 60 times so that a window the verdict needs takes 2.5 minutes, not 2.5 hours
(both hosts side by side: the suite waits for them once): the timer polls every 5 s (the
example: 5 min; first poll 2 s after it starts: 2 min), with an AccuracySec= of 1 ms (the
example's 1 s scaled down is 17 ms; with 1 s a CI run's polls came about 0.25 s late each, and
one fell on the window's edge); a failed pull is retried 0.5 s later (30 s), at most 5 starts
(unchanged) within 10 s (10 min); the heartbeat ticks every 1 s (the role's 30 s), the alert's
window is 30 s (the role's default: 1 day; the test needs a window in which one failed run among
the others crosses the 90% threshold). All as drop-ins beside the
example's units, which are installed as shipped; the script too.

The origin serves each fetch through `remote.origin.uploadpack`, a wrapper that logs it (number,
time) and refuses the FAILING_RUN-th (the host's network gone for one poll), so that `git pull`
fails and the script exits non-zero. Systemd retries it (Restart=on-failure): that retry is a run
of the service, not a trigger of the timer. The expected runs, triggers and the failure come from
that log, the timings the test wrote and systemd's own NRestarts; never from the heartbeat.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from helpers import HEARTBEAT_ON_HOST as PROGRAM
from helpers import ROOT, delete_series, install_heartbeat, own_alertmanager, scoped_vmalert
from helpers_dashboard import panel_requests, systemd_dashboard
from lab import wait_until
from test_failure_history import sh

sys.path.insert(0, str(ROOT / "bench"))
import alert_latency  # noqa: E402  (the auto-pull's install and Alertmanager's view: bench and tests share them)
from alert_latency import AUTO_PULL, AUTO_PULL_TIMER  # noqa: E402

pytestmark = pytest.mark.lab

HOSTS = ("lab-host1", "lab-trixie1")  # systemd 252 and 257 (test_debian_versions.RELEASES)
SCALE = 60
INTERVAL = 300 / SCALE  # OnUnitActiveSec=5min
WINDOW = 150  # the trust report's window: 2.5 min, 30 polls
# the example's times divided by SCALE (an empty OnActiveSec= drops both of its timer settings)
DROP_INS = {
    AUTO_PULL_TIMER: "[Timer]\nOnActiveSec=\nOnActiveSec=2s\nOnUnitActiveSec=5s\nAccuracySec=1ms\n",
    AUTO_PULL: "[Unit]\nStartLimitIntervalSec=10s\n[Service]\nRestartSec=500ms\n",
}
FAILING_RUN = 4  # the origin refuses the 4th fetch
WORK = "/run/autopull-trust"
STATE = "/var/lib/autopull-trust"
HEARTBEAT = "autopull-trust-heartbeat"  # its transient timer and service
# origin's side of each fetch: logs "N served|refused TIME" (µs); refuses the one $WORK/fail-at names
ORIGIN = (f'log={WORK}/fetches; n=$(($(wc -l < $log) + 1))\n'
          f'if [ "$n" = "$(cat {WORK}/fail-at)" ]; then\n'
          '    echo "$n refused $(date +%s%6N)" >> $log; echo "origin: unreachable (injected)" >&2; exit 1\nfi\n'
          'echo "$n served $(date +%s%6N)" >> $log\nexec git-upload-pack "$@"\n')
# the summary's thresholds: the rule's defaults, but for lateness (its scaled accuracy is 2 s) and
# the window
TRUST = ["--trust-window", f"{WINDOW}s", "--trust-max-late", "5"]


def fetches(lab, host: str) -> list[tuple[int, str, float]]:
    return [(int(n), what, int(at) / 1e6) for n, what, at in
            (line.split() for line in sh(lab, host, f"cat {WORK}/fetches").splitlines())]


def restarts(lab, host: str, since: float) -> int:
    """The restarts systemd scheduled for the service since `since`, as its journal recorded them
    ("Scheduled restart job": NRestarts itself starts again at 0 with the timer's next start)."""
    return len(sh(lab, host, f"journalctl --sync; journalctl -q -o cat -u {AUTO_PULL} --since @{since:.0f} "
                             "MESSAGE_ID=5eb03494b6584870a536b337290809b3").splitlines())


def summary(victoria, label: str, end: float, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "summary/systemd_daily_summary.py"), "--url", victoria.url,
                           "--host", label, "--since", f"{end - WINDOW:.3f}", "--until", f"{end:.3f}", *TRUST,
                           *flags], capture_output=True, text=True, timeout=120, check=False)


def prepare(lab, name: str) -> None:
    """The example's units with the scaled drop-ins, and the origin that refuses one fetch."""
    install_heartbeat(lab, name)
    alert_latency.install_auto_pull(name, DROP_INS, start=False)
    sh(lab, name, "\n".join([
        "set -e", f"rm -rf {WORK} {STATE}; mkdir -p {WORK} {STATE}", f": > {WORK}/fetches",
        f"echo {FAILING_RUN} > {WORK}/fail-at",
        f"cat > {WORK}/origin <<'SCRIPT'\n#!/bin/sh\n{ORIGIN}SCRIPT", f"chmod 755 {WORK}/origin",
        f"git -C /srv/infrastructure config remote.origin.uploadpack {WORK}/origin"]))


def clean(lab, name: str) -> None:
    sh(lab, name, f"systemctl stop {HEARTBEAT}.timer {HEARTBEAT}.service; "
                  f"systemctl reset-failed {HEARTBEAT}.timer {HEARTBEAT}.service", check=False)
    alert_latency.remove_auto_pull(name)
    sh(lab, name, f"rm -rf {WORK} {STATE}", check=False)


@pytest.fixture(scope="module")
def scenarios(request, lab, victoria, tmp_path_factory) -> dict:
    """Each host's scenario (play), the hosts side by side: each is minutes of waiting."""
    from concurrent.futures import ThreadPoolExecutor

    if any("trixie" in name for name in HOSTS):
        request.getfixturevalue("trixie")

    def run(name: str):
        try:
            prepare(lab, name)
            return play(lab, name, victoria, tmp_path_factory.mktemp(f"vmalert-{name}"))
        except Exception as error:  # pylint: disable=broad-exception-caught
            # raised by its host's tests (the scenario fixture)
            return error
        finally:
            clean(lab, name)

    with ThreadPoolExecutor(len(HOSTS)) as pool:
        return dict(zip(HOSTS, pool.map(run, HOSTS)))


@pytest.fixture(scope="module", params=HOSTS)
def scenario(request, scenarios) -> dict:
    found = scenarios[request.param]
    if isinstance(found, Exception):
        raise found
    return found


def play(lab, host: str, victoria, vmalert_dir) -> dict:
    """The timer polled for WINDOW seconds, FAILING_RUN refused, with the heartbeat ticking and
    vmalert watching; what the owner would see, read at the end."""
    label = f"{host}-autopull"
    scope = f'{{host="{label}"}}'
    delete_series(victoria.url, scope)
    found: dict = {"label": label}
    with scoped_vmalert(lab, victoria, vmalert_dir, scope,
                        "systemd_monitoring_alerts_heartbeat_interval=1",
                        "systemd_monitoring_alerts_timer_trust_window_seconds=30") as vmalert:
        try:
            # the heartbeat as the role runs it (a timer), every 1 s: its first look before the first poll
            since = time.time()
            # (StartLimitIntervalSec=0: systemd's default start limit, 5 in 10 s, would refuse most ticks)
            sh(lab, host, f"systemd-run -q --unit {HEARTBEAT} --on-active=1ms --on-unit-active=1s "
                          f"--timer-property=AccuracySec=1ms -p StartLimitIntervalSec=0 {PROGRAM} --host {label} "
                          f"--url {victoria.otlp} "
                          f"--state-dir {STATE} --unit {AUTO_PULL_TIMER} --unit {AUTO_PULL}")
            victoria.wait_for_push(label, since)
            sh(lab, host, f"systemctl start {AUTO_PULL_TIMER}")
            found["started"] = started = time.time()
            wait_until(f"fetch {FAILING_RUN} refused and retried",
                       lambda: len(fetches(lab, host)) > FAILING_RUN, timeout=FAILING_RUN * INTERVAL + 30, step=0.5)
            alertmanager = own_alertmanager(lab)  # the one scoped_vmalert notifies, running by now
            found["alert"] = wait_until("SystemdTimerSuccessRatioLow in Alertmanager", lambda: alert_latency.firing(
                "SystemdTimerSuccessRatioLow", label, AUTO_PULL_TIMER, alertmanager), timeout=60, step=1)
            assert vmalert.poll() is None
            # the window: WINDOW long, ending midway between two polls near WINDOW s after the
            # start, so that no run (nor the tick that sees it end) sits on its edge: the retry
            # moved every later poll (OnUnitActiveSec= counts from the last activation)
            nominal = started + 1 + WINDOW
            wait_until("the window's end", lambda: time.time() > nominal + INTERVAL + 3, timeout=WINDOW + 60, step=1)
            last = max(at for _n, _what, at in fetches(lab, host) if at <= nominal)
            found["end"] = end = last + INTERVAL / 2
            sh(lab, host, f"systemctl stop {AUTO_PULL_TIMER}")
            victoria.wait_for_push(label, time.time())
            found["restarts"] = restarts(lab, host, started)
            found["fetches"] = fetches(lab, host)
            found["report"] = summary(victoria, label, end)
            print(f"the trust report at {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}:\n"
                  f"{found['report'].stdout}")  # for the README (pytest -s)
            found["report_json"] = summary(victoria, label, end, "--json")
            found["ready"] = summary(victoria, label, end, "--trust-max-failed", "1")
            found["ready_json"] = summary(victoria, label, end, "--trust-max-failed", "1", "--json")
            found["panels"] = trust_row(victoria, label, end - WINDOW, end)
        finally:
            sh(lab, host, f"systemctl stop {HEARTBEAT}.timer {AUTO_PULL_TIMER}", check=False)
    return found


def trust_row(victoria, label: str, start: float, end: float) -> dict[str, list[list[dict]]]:
    """{panel title: each query's result} of the dashboard's trust row, as Grafana asks for the range."""
    dashboard = systemd_dashboard.systemd_monitoring_dashboard([AUTO_PULL_TIMER, AUTO_PULL])
    titles = [p["title"] for p in systemd_dashboard.trust_panels()]
    answers: dict[str, list[list[dict]]] = {}
    for title, path, params in panel_requests(dashboard, label, start, end):
        if title in titles:
            request = urllib.request.Request(f"{victoria.url}{path}", data=urllib.parse.urlencode(params).encode())
            with urllib.request.urlopen(request, timeout=60) as answer:
                answers.setdefault(title, []).append(json.load(answer)["data"]["result"])
    assert sorted(answers) == sorted(titles)
    return answers


def expected(scenario) -> dict:
    """From the origin's log and systemd's restart count: the runs in the window, the refused one,
    and the triggers (the runs less the retries systemd made)."""
    start, end = scenario["end"] - WINDOW, scenario["end"]
    runs = [(n, what) for n, what, at in scenario["fetches"] if start <= at <= end]
    refused = [n for n, what in runs if what == "refused"]
    return {"runs": len(runs), "refused": refused, "triggers": len(runs) - scenario["restarts"]}


def test_the_failed_pull_is_what_blocks_the_verdict(scenario):
    report, want = scenario["report"], expected(scenario)
    for name in ("report", "report_json", "ready", "ready_json"):  # 2 or 70 would be an error, told on stderr
        assert scenario[name].returncode in (0, 1) and scenario[name].stderr == "", (name, scenario[name].stderr)
    assert want["refused"] == [FAILING_RUN] and scenario["restarts"] == 1  # one refusal, retried once
    (timer,) = json.loads(scenario["report_json"].stdout)["trust"]["timers"]
    assert (timer["unit"], timer["service"]) == (AUTO_PULL_TIMER, AUTO_PULL)
    assert timer["interval_seconds"] == INTERVAL
    assert timer["runs_expected"] == WINDOW / INTERVAL
    assert timer["runs_seen"] == want["triggers"]
    assert (timer["runs_failed"], timer["failed_by_result"]) == (1, {"exit-code": 1})
    assert timer["runs_succeeded"] == want["runs"] - 1
    assert timer["blocking"] == ["1 failed run (more than 0: exit-code 1)"], timer["blocking"]
    assert timer["verdict"] == "not ready for auto-pull: 1 failed run (more than 0: exit-code 1)"
    markdown = report.stdout
    assert f"### {scenario['label']}: `{AUTO_PULL_TIMER}`: {timer['verdict']}" in markdown
    # watched: from the heartbeat's first tick in the window (within its 1 s of the start) to the end
    assert re.search(rf"^- runs: {want['triggers']} seen of 30 expected \(every 5 s, watched (2m29s|2m30s)\)$",
                     markdown, re.M), markdown
    assert f"- ended: {want['runs'] - 1} succeeded, 1 failed (exit-code 1), of `{AUTO_PULL}`" in markdown


def test_allowing_one_failed_run_it_is_ready(scenario):
    want = expected(scenario)
    (timer,) = json.loads(scenario["ready_json"].stdout)["trust"]["timers"]
    assert timer["ready"] and timer["blocking"] == []
    assert timer["verdict"] == f"ready for auto-pull: 2m30s, {want['triggers']} runs, 1 failed, none late by more than 5 s"
    assert f"`{AUTO_PULL_TIMER}`: {timer['verdict']}" in scenario["ready"].stdout


def test_the_success_ratio_alert_fired_in_alertmanager(scenario):
    alert = scenario["alert"]
    assert alert["labels"]["severity"] == "warning"
    assert f"{AUTO_PULL_TIMER} on {scenario['label']}" in alert["annotations"]["summary"], alert["annotations"]
    assert "that ended in the last 30 seconds, " in alert["annotations"]["description"]  # the test's window


def test_every_panel_of_the_trust_row_has_data_and_shows_the_failed_run(scenario):
    panels, want = scenario["panels"], expected(scenario)
    assert [title for title, results in panels.items() for result in results if not result] == []
    (bars,) = panels["Runs by result"]
    counted = {row["metric"]["result"]: sum(float(v) for _at, v in row["values"]) for row in bars}
    assert counted["exit-code"] == 1, counted

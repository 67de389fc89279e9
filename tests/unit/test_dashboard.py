"""The dashboard's structure, from the generator and as the role renders it through Jinja."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ANSIBLE_PLAYBOOK, ROOT, inventory_allowlist
from helpers_dashboard import systemd_dashboard

UNITS = inventory_allowlist() + ["*-server.service", "foo\\x2dbar.service", "media.mount"]


@pytest.fixture(scope="module")
def dashboard():
    return systemd_dashboard.systemd_monitoring_dashboard(UNITS)


def test_one_row_per_unit_after_the_overview(dashboard):
    """... and the load-bearing timers' row (the allowlist names timers) between them."""
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Overview", systemd_dashboard.TRUST_ROW, *UNITS]


def test_unique_ids_and_grid_within_24_columns_without_overlap(dashboard):
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for spec in dashboard["panels"]:
        pos = spec["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, spec["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{spec['title']} overlaps at {(x, y)}"
                cells.add((x, y))


def test_every_panel_has_datasource_unit_title_and_description(dashboard):
    for spec in dashboard["panels"]:
        if spec["type"] == "row":
            continue
        assert spec["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert spec["title"] and spec["description"]
        assert spec["fieldConfig"]["defaults"]["unit"]
        assert all(t["datasource"] == spec["datasource"] and t["expr"] for t in spec["targets"])


def test_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["host"]["definition"] == "label_values(systemd_heartbeat_up, host)"
    assert variables["host"]["multi"] and variables["host"]["includeAll"]


def test_state_panel_maps_states_to_colours(dashboard):
    state = next(p for p in dashboard["panels"] if p["title"] == "State")
    mapped = {o["matcher"]["options"]: o["properties"][0]["value"]["fixedColor"] for o in state["fieldConfig"]["overrides"]}
    assert mapped["^active/.*"] == "green" and mapped["^failed/.*"] == "red" and mapped["^inactive/.*"] == "text"


def test_glob_and_escaped_names_become_valid_matchers(dashboard):
    exprs = [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]
    assert any('unit=~".*-server[.]service"' in e for e in exprs)
    assert any('unit="foo\\\\x2dbar.service"' in e for e in exprs)


def rendered_by_the_role(tmp_path: Path) -> dict:
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render the dashboard", "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"systemd_monitoring_dashboard_path": str(tmp_path / "systemd.json"),
                 "systemd_monitoring_dashboard_units": UNITS},
        "roles": [{"role": "coilysiren.systemd_monitoring.systemd_monitoring_dashboard"}]}]))
    done = subprocess.run([ANSIBLE_PLAYBOOK, str(playbook)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    return json.loads((tmp_path / "systemd.json").read_text())


def test_the_role_writes_exactly_the_generated_data_and_grafana_templates_survive_jinja(tmp_path, dashboard):
    written = rendered_by_the_role(tmp_path)
    assert written == dashboard
    text = json.dumps(written)
    legends = {t["legendFormat"] for p in written["panels"] if p["type"] != "row" for t in p["targets"]}
    assert legends == {"{{host}}", "{{active_state}}", "{{active_state}}/{{load_state}}", "all selected hosts",
                       "median", "{{result}}", "{{unit}}: {{result}}", "{{host}}: {{unit}}"}
    assert not re.search(r"\{\{ |\{%|\}\} |None|True|False|<[a-z]+ object", text.replace("false", "").replace("true", ""))


def test_the_committed_layout_picture_is_current():
    done = subprocess.run([sys.executable, str(ROOT / "scripts/dashboard-picture.py")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (ROOT / "docs/dashboard-layout.svg").read_text() == done.stdout, \
        "run: python3 scripts/dashboard-picture.py > docs/dashboard-layout.svg"


def test_ansible_doc_renders_the_grafana_module():
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-M", str(ROOT / "library"),
                           "grafana_dashboard_sync"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "folder_uid" in done.stdout and "check_mode" in done.stdout


NAMES = {  # allowlist entry -> (row title, the matcher every query of its row uses)
    "k3s": ("k3s.service", 'unit="k3s.service"'),
    "coily-audit-dashboard.timer": ("coily-audit-dashboard.timer", 'unit="coily-audit-dashboard.timer"'),
    "lab-worker@one": ("lab-worker@one.service", 'unit="lab-worker@one.service"'),
    "*-server.service": ("*-server.service", 'unit=~".*-server[.]service"'),
    "getty@*.service": ("getty@*.service", 'unit=~"getty@.*[.]service"'),
    "foo\\x2dbar": ("foo\\x2dbar.service", 'unit="foo\\\\x2dbar.service"'),
    "infrastructure-auto-pull.path": ("infrastructure-auto-pull.path", 'unit="infrastructure-auto-pull.path"'),
}


@pytest.mark.parametrize("entry", sorted(NAMES))
def test_each_row_asks_for_the_unit_the_heartbeat_reports(entry, heartbeat):
    """One normalisation (the heartbeat's units.unit_matcher): a bare name is its .service, so
    the row of `k3s` asks for unit="k3s.service", as the heartbeat reports it."""
    title, matcher = NAMES[entry]
    assert heartbeat.normalise_unit_pattern(entry) == title and heartbeat.unit_matcher(entry) == matcher
    dashboard = systemd_dashboard.systemd_monitoring_dashboard([entry])
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Overview", *[systemd_dashboard.TRUST_ROW] * title.endswith(".timer"), title]
    row = next(index for index, p in enumerate(dashboard["panels"]) if p["type"] == "row" and p["title"] == title)
    exprs = [t["expr"] for p in dashboard["panels"][row + 1:] for t in p["targets"]]
    assert exprs and all(matcher in expr for expr in exprs)
    assert all("unit=" in expr for expr in exprs)


@pytest.mark.parametrize("unit", ["web.service", "job.timer", "deploy.path", "app.socket", "data.mount", "apps.slice"])
def test_every_unit_row_shows_its_last_failure_and_why(unit):
    panels = systemd_dashboard.unit_row_panels(unit)
    (failure,) = [p for p in panels if p["title"] == "Last failure"]
    expr = failure["targets"][0]["expr"]
    assert "time() - systemd_unit_last_failure_timestamp_seconds" in expr
    assert "group_left(result, exit_code, exit_status, gave_up) systemd_unit_last_failure_info" in expr
    if unit.endswith(".service"):  # next to its restarts
        titles = [p["title"] for p in panels]
        assert titles.index("Last failure") == titles.index("Restarts") + 1


def test_the_overview_lists_the_failures_in_the_time_range_and_stale_timers_use_the_alerts_threshold(dashboard):
    overview = {p["title"]: p for p in dashboard["panels"] if p["type"] != "row"}
    failures = overview["Failures in the time range"]["targets"][0]["expr"]
    assert "> 1000 * ${__from:date:seconds}" in failures and "systemd_unit_last_failure_info" in failures
    stale = overview["Stale timers"]["targets"][0]["expr"]
    assert "> on(host, unit) systemd_timer_stale_threshold_seconds" in stale and "2 *" not in stale
    (annotation,) = dashboard["annotations"]["list"]
    assert annotation["expr"] == 'ALERTS{alertname="SystemdMassRestart", alertstate="firing", host=~"$host"}'


@pytest.mark.parametrize("unit", ["web.service", "job.timer", "deploy.path", "data.mount"])
def test_every_unit_row_shows_its_failures_by_reason_bounded(unit):
    """systemd_unit_failures_total by Result, as stacked bars a step each, bounded like every graph:
    the TOP Results, at most MAX_POINTS points, never finer than the heartbeat."""
    panels = systemd_dashboard.unit_row_panels(unit)
    (failures,) = [p for p in panels if p["title"] == "Failures by reason"]
    (query,) = failures["targets"]
    matcher = systemd_dashboard.selector(unit)
    assert query["expr"] == (f'topk_max({systemd_dashboard.TOP}, sum by (result) (increase(systemd_unit_failures_total'
                             f'{{host=~"$host", {matcher}}}[$__interval])))')
    assert query["legendFormat"] == "{{result}}" and not query["instant"]
    assert query["interval"] == failures["interval"] == systemd_dashboard.MIN_STEP
    assert failures["maxDataPoints"] == systemd_dashboard.MAX_POINTS
    assert failures["fieldConfig"]["defaults"]["custom"]["drawStyle"] == "bars"
    titles = [p["title"] for p in panels]
    assert titles.index("Failures by reason") == titles.index("Last failure") + 1


def test_the_overview_counts_each_units_failures_in_the_time_range(dashboard):
    """Next to each unit's last failure, how many times it failed in the range, from the counter
    (every failure once): a second query of the same table, merged on host and unit."""
    (table,) = [p for p in dashboard["panels"] if p["title"] == "Failures in the time range"]
    last, counted = table["targets"]
    assert "systemd_unit_last_failure_info" in last["expr"] and last["refId"] == "A"
    assert counted["refId"] == "B" and counted["instant"] and counted["format"] == "table"
    assert counted["expr"].startswith(f'topk({systemd_dashboard.TOP * 10}, sum by (host, unit) (increase_prometheus('
                                      'systemd_unit_failures_total{host=~"$host"}[$__range]) or label_set(')
    assert 'tfirst_over_time(systemd_heartbeat_up{host=~"$host"}[$__range])' in counted["expr"]
    assert table["transformations"] == [{"id": "merge", "options": {}}]
    names = {o["matcher"]["options"]: o["properties"] for o in table["fieldConfig"]["overrides"]}
    assert {"id": "unit", "value": "none"} in names["Value #B"]
    (alerts,) = [p for p in dashboard["panels"] if p["title"] == "Alerts firing"]
    assert "SystemdUnitFailureLoop" in alerts["targets"][0]["expr"]

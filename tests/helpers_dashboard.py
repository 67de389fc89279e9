"""The dashboard generator (a role filter plugin, plain Python) and what tests need around it."""
from __future__ import annotations

import time

# by its collection name: tests/conftest.py puts the clone's .venv/collections on the path
from ansible_collections.coilysiren.systemd_monitoring.plugins.filter import systemd_dashboard  # noqa: F401


RANGE_SECONDS = {"1h": 3600, "24h": 86400}
# the row panels that show data only for a unit that failed (its last failure, its failures by reason)
ONLY_AFTER_A_FAILURE = ("Last failure", "Failures by reason")


def panel_targets(dashboard: dict, host: str, start: float, end: float):
    """(row title, panel title, expr, instant) for every query of every panel, with Grafana's
    variables filled in as it fills them for the time range start..end."""
    row = ""
    for spec in dashboard["panels"]:
        if spec["type"] == "row":
            row = spec["title"]
            continue
        for target in spec.get("targets", []):
            expr = (target["expr"].replace("$host", host).replace("$__range", f"{int(end - start)}s")
                    .replace("$__interval", f"{max(30, int((end - start) / 500))}s")
                    .replace("${__from:date:seconds}", f"{start:.0f}"))
            yield row, spec["title"], expr, target.get("instant", False)


def panel_queries(dashboard: dict, host: str, time_range: str = "1h") -> list[tuple[str, str, str]]:
    """(row title, panel title, expr) for every panel, over the last `time_range`."""
    end = time.time()
    return [(row, title, expr) for row, title, expr, _ in
            panel_targets(dashboard, host, end - RANGE_SECONDS[time_range], end)]


def panel_requests(dashboard: dict, host: str, start: float, end: float) -> list[tuple[str, str, dict]]:
    """(panel title, API path, parameters) of every query as Grafana sends it: instant at `end`,
    or a range start..end at Grafana's step for 500 points, never finer than 30 s."""
    step = max(30, int((end - start) / 500))
    requests = []
    for _, title, expr, instant in panel_targets(dashboard, host, start, end):
        if instant:
            requests.append((title, "/api/v1/query", {"query": expr, "time": f"{end:.0f}"}))
        else:
            requests.append((title, "/api/v1/query_range", {
                "query": expr, "start": f"{start:.0f}", "end": f"{end:.0f}", "step": f"{step}s"}))
    return requests

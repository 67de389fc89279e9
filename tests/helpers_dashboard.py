"""The dashboard generator (a role filter plugin, plain Python) and what tests need around it."""
from __future__ import annotations

import time

# by its collection name: tests/conftest.py puts the clone's .venv/collections on the path
from ansible_collections.coilysiren.systemd_monitoring.plugins.filter import systemd_dashboard  # noqa: F401


RANGE_SECONDS = {"1h": 3600, "24h": 86400}


def panel_queries(dashboard: dict, host: str, time_range: str = "1h") -> list[tuple[str, str, str]]:
    """(row title, panel title, expr) for every panel, with Grafana's variables filled in."""
    out, row = [], ""
    for spec in dashboard["panels"]:
        if spec["type"] == "row":
            row = spec["title"]
            continue
        for target in spec["targets"]:
            expr = (target["expr"].replace("$host", host).replace("$__range", time_range)
                    .replace("${__from:date:seconds}", str(int(time.time()) - RANGE_SECONDS[time_range])))
            out.append((row, spec["title"], expr))
    return out

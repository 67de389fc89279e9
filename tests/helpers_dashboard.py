"""The dashboard generator (a role filter plugin, plain Python) and what tests need around it."""
from __future__ import annotations

import sys
import time

from helpers import ROOT

sys.path.insert(0, str(ROOT / "plugins/filter"))
import systemd_dashboard  # noqa: E402,F401


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

#!/usr/bin/env python3
"""Draw the dashboard's layout (rows and panels with their titles) as SVG, from the generated JSON.

    python3 scripts/dashboard-picture.py [DASHBOARD.json] > docs/dashboard-layout.svg

Without an argument it generates the dashboard for the inventory's allowlist, which is what the
README shows (tests/unit/test_dashboard.py checks the committed picture is current).
"""
from __future__ import annotations

import json
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELL_W, CELL_H, MARGIN = 40, 22, 10
COLOURS = {"row": "#2b2f36", "stat": "#1f4e79", "timeseries": "#2e6b3a", "table": "#6b4e2e"}


def load(argv: list[str]) -> dict:
    if argv:
        return json.loads(Path(argv[0]).read_text())
    import yaml

    sys.path.insert(0, str(ROOT / ".venv/collections"))  # scripts/bootstrap links the clone there
    from ansible_collections.coilysiren.systemd_monitoring.plugins.filter import systemd_dashboard

    units = yaml.safe_load((ROOT / "inventory/group_vars/systemd_monitoring_hosts.yml").read_text())[
        "systemd_monitoring_units"]
    return systemd_dashboard.systemd_monitoring_dashboard(units)


def svg(dashboard: dict) -> str:
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    width, height = 24 * CELL_W + 2 * MARGIN, bottom * CELL_H + 2 * MARGIN + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="#111217"/>',
           f'<text x="{MARGIN}" y="{MARGIN + 14}" fill="#e0e0e0" font-size="16">{escape(dashboard["title"])} '
           f'(variables: {", ".join(v["name"] for v in dashboard["templating"]["list"])})</text>']
    for spec in dashboard["panels"]:
        pos = spec["gridPos"]
        x, y = MARGIN + pos["x"] * CELL_W, MARGIN + 30 + pos["y"] * CELL_H
        w, h = pos["w"] * CELL_W - 4, pos["h"] * CELL_H - 4
        colour = COLOURS.get(spec["type"], "#444")
        out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="3" fill="{colour}"/>')
        label = spec["title"] if spec["type"] == "row" else f'{spec["title"]} ({spec["type"]})'
        out.append(f'<text x="{x + 6}" y="{y + 15}" fill="#f0f0f0">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(svg(load(sys.argv[1:])))

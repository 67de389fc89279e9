# SPDX-License-Identifier: MIT
"""Ansible filters: unit names as the heartbeat reads them, for the roles' templates.

    {{ 'k3s' | coilysiren.systemd_monitoring.systemd_unit_name }}       -> k3s.service
    {{ 'k3s' | coilysiren.systemd_monitoring.systemd_unit_matcher }}    -> unit="k3s.service"
    {{ 'x' | coilysiren.systemd_monitoring.systemd_unit_problem }}      -> why it is no unit name, or ""

The heartbeat's own code (plugins/module_utils/systemd_heartbeat/units.py), so the allowlist,
the alert rules, the dashboard and the daily summary agree on what a name means: a bare name
is its .service, a glob matches what fnmatch matches, escaped names are taken verbatim.
"""
from __future__ import annotations

from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.units import (
    normalise_unit_pattern, unit_matcher, unit_pattern_problem)


def unit_problem(entry: str) -> str:
    """Why `entry` is not a unit name or glob the heartbeat takes; "" when it is."""
    return unit_pattern_problem(str(entry)) or ""


class FilterModule:
    """The unit-name filters."""

    def filters(self):
        return {"systemd_unit_name": normalise_unit_pattern, "systemd_unit_matcher": unit_matcher,
                "systemd_unit_problem": unit_problem}

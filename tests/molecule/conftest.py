"""Fixtures of the controller-side checks molecule's verify runs (scenario.py: the hosts)."""
from __future__ import annotations

import pytest
from helpers import VictoriaMetrics
import lab as lab_module
from scenario import SCENARIO_HOSTS, lab_host, write_inventory


@pytest.fixture(scope="session")
def victoria():
    return VictoriaMetrics(f"http://127.0.0.1:{lab_module.VM_PORT}")


@pytest.fixture()
def scenario_inventory(tmp_path):
    return write_inventory(tmp_path, {name: lab_host(name) for name in SCENARIO_HOSTS})

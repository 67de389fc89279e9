"""Lab fixtures: the hosts and VictoriaMetrics of lab/lab.py, started if not running."""
from __future__ import annotations

import os

import pytest

import lab as lab_module
from helpers import VictoriaMetrics

pytestmark = pytest.mark.lab


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    lab_module.up(2)
    return lab_module


@pytest.fixture(scope="session")
def trixie(lab):
    """lab-trixie1, a Debian 13 host (systemd 257, Python 3.13, dbus-broker as the system bus),
    booted on first use: only the tests that compare Debian releases need it."""
    return lab.up(0, trixie=1)[0]


@pytest.fixture(scope="session")
def victoria(lab):
    return VictoriaMetrics(lab.start_victoriametrics("victoria-metrics", lab.VM_PORT))


@pytest.fixture(scope="session")
def victoria_prometheus_naming(lab):
    """A second VictoriaMetrics that rewrites OTLP names the Prometheus way."""
    url = lab.start_victoriametrics("victoria-metrics-prometheus-naming", lab.VM_PORT + 1,
                                    "-opentelemetry.usePrometheusNaming")
    return VictoriaMetrics(url)

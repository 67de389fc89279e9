"""Paths and loaders shared by the tests (conftest.py files cannot be imported by name twice)."""
from __future__ import annotations

import importlib.util
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")  # the venv's, beside this Python


def inventory_allowlist() -> list[str]:
    """The allowlist of inventory/group_vars, the project's one definition."""
    import yaml

    return yaml.safe_load((ROOT / "inventory/group_vars/systemd_monitoring_hosts.yml").read_text())[
        "systemd_monitoring_units"]


def load_heartbeat():
    """files/systemd-heartbeat.py has a dash in its name (it is a program); import it by path."""
    if "systemd_heartbeat" in sys.modules:
        return sys.modules["systemd_heartbeat"]
    spec = importlib.util.spec_from_file_location("systemd_heartbeat", ROOT / "files/systemd-heartbeat.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["systemd_heartbeat"] = module
    spec.loader.exec_module(module)
    return module


class VictoriaMetrics:
    """A real VictoriaMetrics on loopback, queried the way dashboards and alerts will."""

    def __init__(self, url: str):
        self.url = url
        self.otlp = f"{url}/opentelemetry/v1/metrics"

    def flush(self) -> None:
        # Recently ingested rows become searchable after an in-memory buffer is flushed.
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict, float]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def series_names(self, match: str) -> set[str]:
        data = urllib.parse.urlencode({"match[]": match}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/series", data=data, timeout=10) as answer:
            return {s["__name__"] for s in json.load(answer)["data"]}

    def wait_for_push(self, host: str, since: float, timeout: float = 20) -> None:
        """Until the heartbeat sample of a tick that started at `since` is queryable."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.flush()
            stamps = self.query(f'timestamp(systemd_heartbeat_up{{host="{host}"}})')
            if stamps and stamps[0][1] >= int(since):
                return
            time.sleep(0.2)
        raise AssertionError(f"no push from {host} after {since} reached {self.url}")

    def wait_for(self, expr: str, timeout: float = 20) -> list[tuple[dict, float]]:
        deadline = time.monotonic() + timeout
        while True:
            self.flush()
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.3)

"""Paths and loaders shared by the tests (conftest.py files cannot be imported by name twice)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_heartbeat():
    """files/systemd-heartbeat.py has a dash in its name (it is a program); import it by path."""
    if "systemd_heartbeat" in sys.modules:
        return sys.modules["systemd_heartbeat"]
    spec = importlib.util.spec_from_file_location("systemd_heartbeat", ROOT / "files/systemd-heartbeat.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["systemd_heartbeat"] = module
    spec.loader.exec_module(module)
    return module

"""Shared test set-up: import paths and the heartbeat loaded from files/."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
# the adversaries every suite may use: a fake system bus (jeepney), fake systemctl, endpoints
sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))
# the clone as the collection (scripts/bootstrap links it there): tests import its plugins by
# their collection names, as Ansible and ansible-test units do
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / ".venv/collections"))

from helpers import load_heartbeat  # noqa: E402


@pytest.fixture(scope="session")
def heartbeat():
    return load_heartbeat()

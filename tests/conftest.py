"""Shared test set-up: import paths and the heartbeat loaded from files/."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
# the adversaries every suite may use: a fake system bus (jeepney), fake systemctl, endpoints
sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))
# the clone as the collection (scripts/bootstrap links it there): tests import its plugins by
# their collection names, as Ansible and ansible-test units do
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / ".venv/collections"))

from helpers import load_heartbeat  # noqa: E402

# CI (.ci/run) replays the same examples at every run, so a verdict belongs to the commit; a
# run of scripts/test by hand searches anew each time (hypothesis's default) and finds more.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def heartbeat():
    return load_heartbeat()

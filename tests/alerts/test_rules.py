"""The alert rules, rendered from the role's template and exercised by vmalert-tool unittest.

vmalert-tool (VictoriaMetrics 1.112, Debian 13's package) sets up its own VictoriaMetrics,
ingests the input series and evaluates the rules like vmalert does. It listens on 0.0.0.0:8880,
which no flag changes, so it runs in a network namespace of its own with only a loopback
interface: nothing it binds is reachable from outside, and it never meets another 8880.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import lab
from helpers import ANSIBLE_PLAYBOOK, ROOT

HERE = Path(__file__).resolve().parent
TEST_FILES = sorted(p.name for p in HERE.glob("*.test.yml"))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rules")
    done = subprocess.run(
        [ANSIBLE_PLAYBOOK, str(HERE / "render.yml"),
         "-e", f"rules_path={directory / 'rules.yml'}", "-e", f"vmalert={lab.tool('vmalert')}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    return directory


@pytest.mark.parametrize("test_file", TEST_FILES)
def test_vmalert_tool_unittest(rendered, test_file):
    shutil.copy(HERE / test_file, rendered / test_file)
    done = subprocess.run(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                           lab.tool("vmalert-tool"), "unittest", f"--files={rendered / test_file}"],
                          cwd=rendered, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]


def test_a_broken_rule_never_replaces_a_working_one(rendered, tmp_path):
    """The role validates with vmalert -dryRun before the file goes live."""
    live = tmp_path / "live.yml"
    shutil.copy(rendered / "rules.yml", live)
    before = live.read_bytes()
    done = subprocess.run(
        [ANSIBLE_PLAYBOOK, str(HERE / "render.yml"),
         "-e", f"rules_path={live}", "-e", f"vmalert={lab.tool('vmalert')}",
         # "5 minutes" is no duration vmalert understands
         "-e", "systemd_monitoring_alerts_unit_missing_for='5 minutes'"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "failed to validate" in done.stdout
    assert live.read_bytes() == before

"""Repository checks of the modules: one implementation shared with the heartbeat, and
ansible-doc renders them. Their behaviour is tested in tests/unit/plugins/modules (which
ships in the collection and runs under ansible-test units too)."""
from __future__ import annotations

import sys
from pathlib import Path

from helpers import ROOT

COLLECTION_MODULE_UTILS = "ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils"


def test_module_shares_the_heartbeat_implementation():
    """One source: the module imports the package the role installs on hosts. The only links
    in the repository are library/*.py, files pointing at the collection's plugins/modules/
    (where the clone's ansible-doc -M library finds them); nothing in a role is a link."""
    source = (ROOT / "plugins/modules/systemd_heartbeat.py").read_text()
    assert f"from {COLLECTION_MODULE_UTILS}.systemd_heartbeat." in source
    assert "_systemd_monitoring_package_source: \"{{ role_path }}/../../plugins/module_utils/systemd_heartbeat\"" in (
        ROOT / "roles/systemd_monitoring/vars/main.yml").read_text()
    import subprocess

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    links = sorted(Path(name) for name in files if (ROOT / name).is_symlink())
    assert [str(link) for link in links] == ["library/grafana_dashboard_sync.py", "library/systemd_heartbeat.py"]
    for link in links:
        assert (ROOT / link).resolve() == ROOT / "plugins/modules" / link.name


def test_ansible_doc_renders_the_module():
    import os
    import subprocess

    done = subprocess.run([sys.executable, "-m", "ansible", "doc", "-M", str(ROOT / "library"), "systemd_heartbeat"],
                          capture_output=True, text=True, env=dict(os.environ, ANSIBLE_NOCOLOR="1"), timeout=120)
    if done.returncode != 0 and "No module named ansible.__main__" in done.stderr:
        done = subprocess.run([str(ROOT / ".venv/bin/ansible-doc"), "-M", str(ROOT / "library"), "systemd_heartbeat"],
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for section in ("OPTIONS", "ATTRIBUTES", "EXAMPLES", "RETURN VALUES", "units", "missing", "check_mode"):
        assert section in done.stdout

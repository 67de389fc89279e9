"""Static checks of the role: every default declared in argument_specs, templates managed."""
from __future__ import annotations

import yaml

from helpers import ROOT

import pytest

ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir())
ROLE = ROOT / "roles/systemd_monitoring"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_and_argument_specs_declare_the_same_variables(role):
    defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert set(defaults) == set(specs)
    for name, spec in specs.items():
        assert name.startswith(role.name + "_")
        assert spec["description"] and spec["type"]
        if "{{" in str(defaults[name]) and spec["type"] not in ("str", "path"):  # a template, not of its type
            assert "default" not in spec and "Defaults to" in " ".join(spec["description"]), name
        else:
            assert spec["default"] == defaults[name], name


TYPES = {"str": str, "path": str, "int": int, "float": (int, float), "bool": bool, "list": list, "dict": dict}


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_argument_spec_defaults_are_of_their_declared_types(role):
    """A default a doc site cannot convert to its type is an error for antsibull-docs (and Galaxy)."""
    specs = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    for name, spec in specs.items():
        if "default" in spec:
            assert isinstance(spec["default"], TYPES[spec["type"]]), name


MANAGED_COMMENT = "# Managed by Ansible (coilysiren.systemd_monitoring): local changes are overwritten at the next run."


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_internal_variables_are_underscored(role):
    internal = yaml.safe_load((role / "vars/main.yml").read_text())
    assert all(name.startswith(f"_{role.name}_") for name in internal)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_templates_start_with_a_managed_by_ansible_comment(role):
    """A plain comment, not the ansible_managed option (deprecated in ansible-core 2.19, gone in 2.23)."""
    for template in (role / "templates").glob("*.j2"):
        lines = template.read_text().splitlines()
        first = lines[1] if lines[0].startswith("#!") else lines[0]
        assert first == MANAGED_COMMENT, template.name
        assert "ansible_managed" not in template.read_text(), template.name


def test_inventory_allowlist_has_suffixes_and_initial_units():
    group = yaml.safe_load((ROOT / "inventory/group_vars/systemd_monitoring_hosts.yml").read_text())
    units = group["systemd_monitoring_units"]
    assert all(u.endswith((".service", ".timer")) for u in units)
    for name in ("coily-audit-dashboard", "coily-update", "repo-recall", "repo-recall-update",
                 "claude-remote-control", "claude-remote-control-restart", "eco-server", "factorio-server",
                 "icarus-server", "core-keeper-server", "k3s"):
        assert f"{name}.service" in units


def test_readme_variable_tables_match_argument_specs():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "scripts/variables-table.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_role_readmes_name_roles_by_fqcn_so_they_work_after_an_install(role):
    import re

    text = (role / "README.md").read_text()
    named = re.findall(r"- role: (\S+)", text)
    assert named and all(name.startswith("coilysiren.systemd_monitoring.") for name in named), named
    assert "-r roles" not in text and "kai-server" not in text

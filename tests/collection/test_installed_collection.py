"""The collection as users get it: `ansible-galaxy collection build`, installed into empty
collections paths from the tarball and from the git repository, checked by `ansible-test sanity`
(ansible-core's own checker, in virtual environments, no docker), and used from a playbook and
an inventory in a directory outside this repository, with FQCNs only, to converge a lab host;
then `--check --diff` and a second run change nothing."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lab as lab_module
from helpers import ROOT

HOST = "lab-host11"  # its own host: molecule has 3-5, 12 and 13, the bench 6-9, tests/lab 1-2
BIN = Path(sys.executable).parent
COLLECTION = "coilysiren.systemd_monitoring"
# ansible-test bootstraps pip in each venv with a script it downloads from a host these machines
# cannot reach; it looks in this cache first (pip 24.2 is ansible-core 2.19's).
GET_PIP = Path.home() / ".ansible/test/cache/get_pip_24_2.py"


def run(argv, cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """A command away from the clone's ansible.cfg (cwd elsewhere, ANSIBLE_CONFIG unset)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    environment.update(ANSIBLE_NOCOLOR="1", **(env or {}))
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build")
    done = run([BIN / "ansible-galaxy", "collection", "build", "--output-path", out, ROOT], cwd=out)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = out.glob("coilysiren-systemd_monitoring-*.tar.gz")
    return built


def install(source: str, into: Path) -> Path:
    """Install into an empty collections path; the installed collection's directory."""
    done = run([BIN / "ansible-galaxy", "collection", "install", source, "-p", into], cwd=into.parent,
               env={"ANSIBLE_COLLECTIONS_PATH": str(into)})
    assert done.returncode == 0 and "was installed successfully" in done.stdout, done.stdout + done.stderr
    return into / "ansible_collections/coilysiren/systemd_monitoring"


@pytest.fixture(scope="module")
def installed(tarball, tmp_path_factory) -> Path:
    return install(str(tarball), tmp_path_factory.mktemp("users") / "collections")


def contents(collection: Path) -> dict[str, str]:
    return {entry["name"]: entry["ftype"] for entry in json.loads((collection / "FILES.json").read_text())["files"]}


def test_the_artifact_holds_the_roles_modules_and_package_and_nothing_points_outside(installed):
    files = contents(installed)
    for name in ("roles/systemd_monitoring/tasks/main.yml", "roles/systemd_monitoring_alerts/tasks/main.yml",
                 "roles/systemd_monitoring_dashboard/tasks/main.yml", "plugins/modules/systemd_heartbeat.py",
                 "plugins/modules/grafana_dashboard_sync.py", "plugins/filter/systemd_dashboard.py",
                 "plugins/module_utils/systemd_heartbeat/cli.py", "meta/runtime.yml", "tests/config.yml",
                 "tests/unit/plugins/modules/test_systemd_heartbeat.py", "tests/fixtures/systemd-252/show.txt"):
        assert files.get(name) == "file", name
    assert not [name for name in files if name.startswith(("lab/", "bench/", "molecule/", "library/", ".venv"))]
    links = [path for path in installed.rglob("*") if path.is_symlink()]
    assert links == []  # no link at all, so none can leave the collection


def test_it_installs_from_the_git_repository_too(installed, tmp_path):
    from_git = install(f"git+file://{ROOT},HEAD", tmp_path / "collections")
    assert sorted(contents(from_git)) == sorted(contents(installed))


@pytest.fixture(scope="module")
def checkout(installed, tmp_path_factory) -> Path:
    """The installed collection copied where ansible-test wants it (.../ansible_collections/
    NAMESPACE/NAME, a git repository); ansible-test writes there."""
    GET_PIP.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "scripts/ansible-test-get-pip.py", GET_PIP)
    copy = tmp_path_factory.mktemp("ansible-test") / "ansible_collections/coilysiren/systemd_monitoring"
    shutil.copytree(installed, copy)
    (copy / ".gitignore").write_text("tests/output/\n")  # its virtual environments are not ours to check
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm",
                                                 "installed"]):
        subprocess.run(["git", *argv], cwd=copy, check=True)
    return copy


def ansible_test(checkout: Path, command: str) -> subprocess.CompletedProcess:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    done = run([BIN / "ansible-test", command, "--venv", "--python", python], cwd=checkout, timeout=1800)
    failures = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("ERROR", "FATAL"))]
    assert done.returncode == 0, "\n".join(failures[-40:]) or (done.stdout + done.stderr)[-3000:]
    return done


def test_ansible_test_sanity_passes(checkout):
    """ansible-core's checker: documentation against argument specs, imports, pylint, pep8..."""
    ansible_test(checkout, "sanity")


def test_ansible_test_units_pass(checkout):
    """The modules' unit tests that ship in the collection, run by ansible-test."""
    done = ansible_test(checkout, "units")
    assert re.search(r"\b[1-9]\d* passed", done.stdout), done.stdout[-2000:]


@pytest.fixture(scope="module")
def outside(installed, tmp_path_factory):
    """A playbook repository of someone else's: its own ansible.cfg, inventory and playbook,
    the collection from the tarball, a lab host of its own."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    lab_module.up(1, first=int(HOST[len("lab-host"):]))
    project = tmp_path_factory.mktemp("someone-elses-playbooks")
    (project / "ansible.cfg").write_text(f"[defaults]\ncollections_path = {installed.parents[2]}\n"
                                         "host_key_checking = false\ninterpreter_python = auto_silent\n"
                                         "[ssh_connection]\npipelining = true\n")
    inventory = {"all": {"hosts": {HOST: {
        "ansible_host": "127.0.0.1", "ansible_port": lab_module.ssh_port(HOST), "ansible_user": "root",
        "ansible_ssh_private_key_file": str(lab_module.key_path()),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}}}}
    (project / "inventory.json").write_text(json.dumps(inventory))
    vmalert = lab_module.CACHE / "debian-trixie/root/usr/bin/vmalert"
    (project / "site.yml").write_text(f"""---
- name: Watch this host's units with the collection
  hosts: all
  become: true
  vars:
    systemd_monitoring_units: [ssh.service, systemd-journald.service, "*.timer"]
    systemd_monitoring_alerts_vmalert_install: true
    systemd_monitoring_alerts_vmalert_binary_src: {vmalert}
    systemd_monitoring_alerts_vmalert_listen_address: 127.0.0.1:8885
    systemd_monitoring_dashboard_path: "{{{{ playbook_dir }}}}/dashboards/systemd.json"
  roles:
    - role: coilysiren.systemd_monitoring.systemd_monitoring
    - role: coilysiren.systemd_monitoring.systemd_monitoring_alerts
    - role: coilysiren.systemd_monitoring.systemd_monitoring_dashboard
  post_tasks:
    - name: Read the host through the collection's module
      coilysiren.systemd_monitoring.systemd_heartbeat:
        units: [ssh.service]
        push: false
      register: seen
    - name: Show it
      ansible.builtin.debug:
        msg: "{{{{ seen.units | map(attribute='unit') | list }}}} via {{{{ seen.source }}}}"
""")
    yield project
    lab_module.stop_host(HOST)


def playbook(project: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict[str, int]]:
    done = run([BIN / "ansible-playbook", "-i", "inventory.json", "site.yml", *args], cwd=project,
               env={"ANSIBLE_CONFIG": str(project / "ansible.cfg")})
    output = done.stdout + done.stderr
    match = re.search(rf"^{HOST}\s*:\s*(.*)$", output, re.MULTILINE)
    assert match, output[-3000:]
    return done, {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def test_a_playbook_outside_the_repository_converges_then_check_and_rerun_change_nothing(outside):
    done, recap = playbook(outside)
    assert done.returncode == 0 and recap["changed"] > 0, (done.stdout + done.stderr)[-4000:]
    assert "['ssh.service'] via dbus" in done.stdout
    assert "DEPRECATION WARNING" not in done.stdout + done.stderr
    assert lab_module.ssh(HOST, "systemctl start systemd-heartbeat.service").returncode == 0
    assert lab_module.ssh(HOST, "systemctl is-active vmalert.service").stdout.strip() == "active"
    checked, recap = playbook(outside, "--check", "--diff")
    assert checked.returncode == 0 and recap["changed"] == 0, (checked.stdout + checked.stderr)[-4000:]
    again, recap = playbook(outside)
    assert again.returncode == 0 and recap["changed"] == 0, (again.stdout + again.stderr)[-4000:]

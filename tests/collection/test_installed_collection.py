"""The collection as users get it: `ansible-galaxy collection build`, installed into empty
collections paths from the tarball and from the git repository, checked by `ansible-test sanity`
and `units` (ansible-core's own checker, in virtual environments, no docker) on every ansible-core
it claims, and used from the README's playbook (FQCNs only, the defaults) in a directory outside
this repository to converge a lab host on the oldest and the newest of them; then `--check --diff`
and a second run change nothing. The README's install command is the one run here."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import cores
import lab as lab_module
from helpers import ROOT

# a host of its own for the oldest and for the newest ansible-core: molecule has 3-5, 12 and 13,
# the bench 6-9, tests/lab 1-2 (SYSTEMD_MONITORING_COLLECTION_HOSTS=lab-hostA,lab-hostB to move them)
HOSTS = os.environ.get("SYSTEMD_MONITORING_COLLECTION_HOSTS", "lab-host11,lab-host14").split(",")
BIN = Path(sys.executable).parent
COLLECTION = "coilysiren.systemd_monitoring"
CORES = cores.claimed()


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
    assert not [name for name in files if name.startswith(("lab/", "bench/", "molecule/", "library/", ".venv",
                                                            "importer_result.json"))]
    links = [path for path in installed.rglob("*") if path.is_symlink()]
    assert links == []  # no link at all, so none can leave the collection


def test_it_installs_from_the_git_repository_too(installed, tmp_path):
    from_git = install(f"git+file://{ROOT},HEAD", tmp_path / "collections")
    assert sorted(contents(from_git)) == sorted(contents(installed))


def copy_as_git_checkout(installed: Path, parent: Path) -> Path:
    """The installed collection copied where ansible-test wants it (.../ansible_collections/
    NAMESPACE/NAME, a git repository); ansible-test writes there, so one copy per version."""
    copy = parent / "ansible_collections/coilysiren/systemd_monitoring"
    shutil.copytree(installed, copy)
    (copy / ".gitignore").write_text("tests/output/\n")  # its virtual environments are not ours to check
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm",
                                                 "installed"]):
        subprocess.run(["git", *argv], cwd=copy, check=True)
    return copy


def ansible_test(core: cores.Core, checkout: Path, command: str) -> subprocess.CompletedProcess:
    return run([core.bin / "ansible-test", command, "--venv", "--python", core.python], cwd=checkout, timeout=1800)


@pytest.fixture(scope="module")
def checked(installed, tmp_path_factory) -> dict[str, dict[str, subprocess.CompletedProcess]]:
    """ansible-test sanity, then units, on every claimed ansible-core, the versions side by side."""
    def one(core: cores.Core) -> dict[str, subprocess.CompletedProcess]:
        checkout = copy_as_git_checkout(installed, tmp_path_factory.mktemp(f"ansible-test-{core.version}"))
        return {command: ansible_test(core, checkout, command) for command in ("sanity", "units")}

    with ThreadPoolExecutor(len(CORES)) as pool:
        return dict(zip((core.version for core in CORES), pool.map(one, pool.map(cores.ensure, CORES))))


def passed(done: subprocess.CompletedProcess) -> None:
    failures = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("ERROR", "FATAL"))]
    assert done.returncode == 0, "\n".join(failures[-40:]) or (done.stdout + done.stderr)[-3000:]


def test_the_claimed_range_is_the_tested_one():
    """meta/runtime.yml claims from the oldest version CI runs; the pins name every minor in between."""
    claim = yaml.safe_load((ROOT / "meta/runtime.yml").read_text())["requires_ansible"]
    assert claim == f">={CORES[0].pin.split('==')[1].rsplit('.', 1)[0]}.0"
    minors = [int(core.version.split(".")[1]) for core in CORES]
    assert minors == list(range(minors[0], minors[-1] + 1))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert CORES[0].pin in project  # the first is the project's own ansible-core


@pytest.mark.parametrize("version", [core.version for core in CORES])
def test_ansible_test_sanity_passes(checked, version):
    """ansible-core's checker: documentation against argument specs, imports, pylint, pep8..."""
    passed(checked[version]["sanity"])


@pytest.mark.parametrize("version", [core.version for core in CORES])
def test_ansible_test_units_pass(checked, version):
    """The modules' unit tests that ship in the collection, run by ansible-test."""
    done = checked[version]["units"]
    passed(done)
    assert re.search(r"\b[1-9]\d* passed", done.stdout), done.stdout[-2000:]


def readme_snippets() -> tuple[str, str]:
    """The README's install command and playbook for collection users, between their markers."""
    readme = (ROOT / "README.md").read_text()
    install = readme.split("<!-- install: begin -->", 1)[1].split("<!-- install: end -->", 1)[0]
    play = readme.split("<!-- playbook: begin -->", 1)[1].split("<!-- playbook: end -->", 1)[0]
    return (install.split("```sh\n", 1)[1].split("```", 1)[0].strip(),
            play.split("```yaml\n", 1)[1].split("```", 1)[0])


def outside_project(installed: Path, core: cores.Core, host: str, parent: Path) -> Path:
    """A playbook repository of someone else's: its own ansible.cfg and inventory, the README's
    playbook as written (the defaults, FQCNs only), the collection installed from the tarball."""
    project = parent / f"someone-elses-playbooks-{core.version}"
    project.mkdir()
    (project / "ansible.cfg").write_text(f"[defaults]\ncollections_path = {installed.parents[2]}\n"
                                         "host_key_checking = false\ninterpreter_python = auto_silent\n"
                                         "[ssh_connection]\npipelining = true\n")
    vmalert = lab_module.CACHE / "debian-trixie/root/usr/bin/vmalert"
    inventory = {"all": {"hosts": {host: {
        "ansible_host": "127.0.0.1", "ansible_port": lab_module.ssh_port(host), "ansible_user": "root",
        "ansible_ssh_private_key_file": str(lab_module.key_path()),
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"}}}}
    (project / "inventory.json").write_text(json.dumps(inventory))
    # the defaults validate the rules with vmalert at /usr/local/bin/vmalert on the host (README: Requirements)
    subprocess.run(["install", "-D", "-m", "0755", str(vmalert),
                    f"/proc/{lab_module.leader_pid(host)}/root/usr/local/bin/vmalert"], check=True)
    _, play = readme_snippets()
    (project / "site.yml").write_text(play.replace("hosts: monitored", "hosts: all") + """
- name: Read the host through the collection's module
  hosts: all
  tasks:
    - name: Read the host
      coilysiren.systemd_monitoring.systemd_heartbeat:
        units: [ssh.service]
        push: false
      register: seen
    - name: Show it
      ansible.builtin.debug:
        msg: "{{ seen.units | map(attribute='unit') | list }} via {{ seen.source }}"
""")
    return project


def playbook(core: cores.Core, host: str, project: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    done = run([core.bin / "ansible-playbook", "-i", "inventory.json", "site.yml", *args], cwd=project,
               env={"ANSIBLE_CONFIG": str(project / "ansible.cfg")})
    match = re.search(rf"^{host}\s*:\s*(.*)$", done.stdout + done.stderr, re.MULTILINE)
    return done, ({key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))} if match else {})


@pytest.fixture(scope="module")
def converged(installed, tmp_path_factory):
    """On the oldest and the newest claimed ansible-core, side by side, one lab host each: converge,
    then --check --diff, then a second run."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    ends = list(zip((CORES[0], CORES[-1]), HOSTS))
    for _, host in ends:
        lab_module.up(1, first=int(host[len("lab-host"):]))
    parent = tmp_path_factory.mktemp("outside")

    def one(end):
        core, host = end
        project = outside_project(installed, cores.ensure(core), host, parent)
        runs = [playbook(core, host, project, *args) for args in ((), ("--check", "--diff"), ())]
        heartbeat = lab_module.ssh(host, "systemctl start systemd-heartbeat.service", check=False)
        vmalert = lab_module.ssh(host, "systemctl is-active vmalert.service", check=False).stdout.strip()
        return runs, heartbeat, vmalert, project

    with ThreadPoolExecutor(len(ends)) as pool:
        results = dict(zip((core.version for core, _ in ends), pool.map(one, ends)))
    yield results
    for _, host in ends:
        lab_module.stop_host(host)


@pytest.mark.parametrize("end", ["oldest", "newest"])
def test_a_playbook_outside_the_repository_converges_then_check_and_rerun_change_nothing(converged, end):
    (first, recap), (checked_run, check_recap), (again, again_recap) = converged[
        (CORES[0] if end == "oldest" else CORES[-1]).version][0]
    assert first.returncode == 0 and recap["changed"] > 0, (first.stdout + first.stderr)[-4000:]
    assert "['ssh.service'] via dbus" in first.stdout
    assert "DEPRECATION WARNING" not in first.stdout + first.stderr
    assert checked_run.returncode == 0 and check_recap["changed"] == 0, (checked_run.stdout + checked_run.stderr)[-4000:]
    assert again.returncode == 0 and again_recap["changed"] == 0, (again.stdout + again.stderr)[-4000:]


@pytest.mark.parametrize("end", ["oldest", "newest"])
def test_the_defaults_run_the_heartbeat_and_write_the_dashboard_inside_the_project(converged, end):
    _, heartbeat, vmalert, project = converged[(CORES[0] if end == "oldest" else CORES[-1]).version]
    assert heartbeat.returncode == 0, heartbeat.stderr
    assert vmalert == "inactive"  # the defaults run no vmalert (systemd_monitoring_alerts_vmalert_install: false)
    assert json.loads((project / "dashboards/systemd.json").read_text())["uid"] == "systemd-units"


def test_the_readme_install_snippet_is_the_one_ci_runs(tarball, tmp_path):
    """The README's install command for collection users, run as written (the tarball for the name)."""
    install, _ = readme_snippets()
    assert install.startswith("ansible-galaxy collection install ")
    argv = install.split()
    argv[argv.index("coilysiren.systemd_monitoring")] = str(tarball)
    into = tmp_path / "collections"
    done = run([BIN / argv[0], *argv[1:], "-p", into], cwd=tmp_path, env={"ANSIBLE_COLLECTIONS_PATH": str(into)})
    assert done.returncode == 0 and "was installed successfully" in done.stdout, done.stdout + done.stderr

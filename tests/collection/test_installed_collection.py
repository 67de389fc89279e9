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


# ansible-test sanity in the clone reads the shipped ignore file, which cannot name the clone's
# own tooling (ansible-test fails on an entry for a file that is not there, as in the artifact):
# the clone's entries, one reason each, are added to it for this run only
CLONE_IGNORES = Path(__file__).with_name("clone-sanity-ignore.txt")


def clone_as_git_checkout(parent: Path) -> Path:
    """Every file git tracks, as the working tree has it, where ansible-test wants the clone; its
    ignore file for the clone's ansible-core (the first claimed) extended by CLONE_IGNORES."""
    copy = parent / "ansible_collections/coilysiren/systemd_monitoring"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        source, target = ROOT / name, copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        elif source.exists():  # a deletion not yet committed
            shutil.copy2(source, target)
    ignores = copy / f"tests/sanity/ignore-{CORES[0].version}.txt"
    ignores.write_text(ignores.read_text() + CLONE_IGNORES.read_text())
    for argv in (["init", "-q"], ["add", "-A"], ["-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm",
                                                 "clone"]):
        subprocess.run(["git", *argv], cwd=copy, check=True)
    return copy


def ansible_test(core: cores.Core, checkout: Path, command: str) -> subprocess.CompletedProcess:
    return run([core.bin / "ansible-test", command, "--venv", "--python", core.python], cwd=checkout, timeout=1800)


@pytest.fixture(scope="module")
def checked(installed, tmp_path_factory) -> dict[str, dict[str, subprocess.CompletedProcess]]:
    """ansible-test sanity, then units, on every claimed ansible-core, and sanity in the clone on
    the clone's own (the first), all side by side."""
    def one(core: cores.Core) -> dict[str, subprocess.CompletedProcess]:
        checkout = copy_as_git_checkout(installed, tmp_path_factory.mktemp(f"ansible-test-{core.version}"))
        return {command: ansible_test(core, checkout, command) for command in ("sanity", "units")}

    def clone() -> dict[str, subprocess.CompletedProcess]:
        return {"sanity": ansible_test(CORES[0], clone_as_git_checkout(tmp_path_factory.mktemp("clone")), "sanity")}

    with ThreadPoolExecutor(len(CORES) + 1) as pool:
        in_clone = pool.submit(clone)
        results = dict(zip((core.version for core in CORES), pool.map(one, pool.map(cores.ensure, CORES))))
        return results | {"clone": in_clone.result()}


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


def test_ansible_test_sanity_passes_in_the_clone(checked):
    """A reviewer's ansible-test sanity in a clone: the tests, lab, benchmarks and scripts too."""
    passed(checked["clone"]["sanity"])


def test_the_clone_ignores_only_files_the_artifact_leaves_out_with_a_reason_each(installed):
    """What ships is checked by the shipped ignore file alone."""
    shipped = contents(installed)
    for line in CLONE_IGNORES.read_text().splitlines():
        entry, _, reason = line.partition(" # ")
        path, check = entry.split()
        assert reason.strip() and path not in shipped and (ROOT / path).exists(), line


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
    # the same play in a play that gathers no facts: the roles' preflight gathers what it reads
    (project / "no-facts.yml").write_text(play.replace("hosts: monitored", "hosts: all\n  gather_facts: false"))
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


def playbook(core: cores.Core, host: str, project: Path, *args: str, book: str = "site.yml"
             ) -> tuple[subprocess.CompletedProcess, dict]:
    done = run([core.bin / "ansible-playbook", "-i", "inventory.json", book, *args], cwd=project,
               env={"ANSIBLE_CONFIG": str(project / "ansible.cfg")})
    match = re.search(rf"^{host}\s*:\s*(.*)$", done.stdout + done.stderr, re.MULTILINE)
    return done, ({key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))} if match else {})


# after the converge, runs of the play with gather_facts: false, whole and by tags, which change nothing
NO_FACTS_RUNS = {
    "whole": (),
    "a step of the heartbeat role and the whole dashboard role": (
        "--tags", "systemd_monitoring_preflight,systemd_monitoring_dashboard"),
    "the heartbeat role without a step": ("--tags", "systemd_monitoring", "--skip-tags", "systemd_monitoring_push"),
}


def role_tasks() -> dict[tuple[str, str], str]:
    """(role, task name) -> the file of the role that holds it: its task files and handlers."""
    def names(entries):
        for entry in entries or []:
            yield from [entry["name"]] if "name" in entry else []
            for key in ("block", "rescue", "always"):
                yield from names(entry.get(key))

    found = {}
    for path in (ROOT / "roles").glob("*/*/*.yml"):
        if path.parent.name in ("tasks", "handlers"):
            for name in names(yaml.safe_load(path.read_text())):
                found[(path.parents[1].name, name)] = path.name if path.parent.name == "tasks" else "handlers"
    return found


def tasks_run(done: subprocess.CompletedProcess) -> dict[tuple[str, str], str]:
    """(role, task name) -> what the first host line under it says (ok, changed, skipping...)."""
    found = {}
    for block in re.split(r"^(?=TASK \[)", done.stdout, flags=re.MULTILINE):
        header = re.match(r"TASK \[(?:[\w.]+\.)?(systemd_monitoring\w*) : (.+?)\] \**$", block, re.MULTILINE)
        status = re.search(r"^(ok|changed|skipping|fatal|failed|included): ", block, re.MULTILINE)
        # the role's implicit "Validating arguments against arg spec" task runs under every tag
        if header and not header.group(2).startswith("Validating arguments against arg spec"):
            found[header.groups()] = status.group(1) if status else "?"
    return found


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
        no_facts = {name: playbook(core, host, project, *args, book="no-facts.yml") for name, args in NO_FACTS_RUNS.items()}
        return {"runs": runs, "heartbeat": heartbeat, "vmalert": vmalert, "project": project, "no facts": no_facts}

    with ThreadPoolExecutor(len(ends)) as pool:
        results = dict(zip((core.version for core, _ in ends), pool.map(one, ends)))
    yield results
    for _, host in ends:
        lab_module.stop_host(host)


@pytest.mark.parametrize("end", ["oldest", "newest"])
def test_a_playbook_outside_the_repository_converges_then_check_and_rerun_change_nothing(converged, end):
    (first, recap), (checked_run, check_recap), (again, again_recap) = converged[
        (CORES[0] if end == "oldest" else CORES[-1]).version]["runs"]
    assert first.returncode == 0 and recap["changed"] > 0, (first.stdout + first.stderr)[-4000:]
    assert "['ssh.service'] via dbus" in first.stdout
    assert "DEPRECATION WARNING" not in first.stdout + first.stderr
    assert checked_run.returncode == 0 and check_recap["changed"] == 0, (checked_run.stdout + checked_run.stderr)[-4000:]
    assert again.returncode == 0 and again_recap["changed"] == 0, (again.stdout + again.stderr)[-4000:]


@pytest.mark.parametrize("end", ["oldest", "newest"])
def test_the_defaults_run_the_heartbeat_and_write_the_dashboard_inside_the_project(converged, end):
    result = converged[(CORES[0] if end == "oldest" else CORES[-1]).version]
    heartbeat, vmalert, project = result["heartbeat"], result["vmalert"], result["project"]
    assert heartbeat.returncode == 0, heartbeat.stderr
    assert vmalert == "inactive"  # the defaults run no vmalert (systemd_monitoring_alerts_vmalert_install: false)
    assert json.loads((project / "dashboards/systemd.json").read_text())["uid"] == "systemd-units"


@pytest.mark.parametrize("end", ["oldest", "newest"])
def test_with_gather_facts_false_preflight_gathers_the_fact_it_reads(converged, end):
    done, recap = converged[(CORES[0] if end == "oldest" else CORES[-1]).version]["no facts"]["whole"]
    assert done.returncode == 0 and recap["changed"] == 0, (done.stdout + done.stderr)[-4000:]
    ran = tasks_run(done)
    assert ran[("systemd_monitoring", "Gather the service manager fact if the play did not")] == "ok"
    assert ran[("systemd_monitoring", "Assert the host runs systemd")] == "ok"


@pytest.mark.parametrize("end", ["oldest", "newest"])
def test_tags_run_one_step_or_one_role_of_the_heartbeat_and_dashboard_roles(converged, end):
    """Which task files ran under --tags/--skip-tags (the alerts role's tags: tests/unit/test_alerts_preflight.py)."""
    runs = converged[(CORES[0] if end == "oldest" else CORES[-1]).version]["no facts"]
    files = role_tasks()
    expected = {
        "a step of the heartbeat role and the whole dashboard role": {
            ("systemd_monitoring", "preflight.yml"), ("systemd_monitoring_dashboard", "preflight.yml"),
            ("systemd_monitoring_dashboard", "install.yml")},
        "the heartbeat role without a step": {("systemd_monitoring", "preflight.yml"), ("systemd_monitoring", "install.yml")},
    }
    for name, wanted in expected.items():
        done, recap = runs[name]
        assert done.returncode == 0 and recap["changed"] == 0, (done.stdout + done.stderr)[-4000:]
        ran = {(role, files[(role, task)]) for role, task in tasks_run(done) if files.get((role, task)) != "main.yml"}
        assert ran == wanted, name


def test_the_readme_install_snippet_is_the_one_ci_runs(tarball, tmp_path):
    """The README's install command for collection users, run as written (the tarball for the name)."""
    install, _ = readme_snippets()
    assert install.startswith("ansible-galaxy collection install ")
    argv = install.split()
    argv[argv.index("coilysiren.systemd_monitoring")] = str(tarball)
    into = tmp_path / "collections"
    done = run([BIN / argv[0], *argv[1:], "-p", into], cwd=tmp_path, env={"ANSIBLE_COLLECTIONS_PATH": str(into)})
    assert done.returncode == 0 and "was installed successfully" in done.stdout, done.stdout + done.stderr

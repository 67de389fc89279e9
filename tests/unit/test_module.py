"""The Ansible module, driven in-process: exit_json/fail_json raise, systemctl answers come
from the captured systemd 252 fixtures, the push goes to a patched fetch_url."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common import warnings
from ansible.module_utils.testing import patch_module_args

from helpers import FIXTURES, ROOT, load_heartbeat

CAPTURE = FIXTURES / "systemd-252"
COLLECTION_MODULE_UTILS = "ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils"


class ExitJson(Exception):
    pass


class FailJson(Exception):
    pass


@pytest.fixture()
def module():
    """library/systemd_heartbeat.py with its module_utils imports served by the heartbeat
    package, as Ansible serves them from plugins/module_utils (ansible.cfg)."""
    import types

    load_heartbeat()
    parents = COLLECTION_MODULE_UTILS.split(".")
    for depth in range(1, len(parents) + 1):  # namespace packages, as Ansible's collection loader makes them
        sys.modules.setdefault(".".join(parents[:depth]), types.ModuleType(".".join(parents[:depth]))).__path__ = []
    for name in [name for name in sys.modules if name == "systemd_heartbeat" or name.startswith("systemd_heartbeat.")]:
        sys.modules[f"{COLLECTION_MODULE_UTILS}.{name}"] = sys.modules[name]
    spec = importlib.util.spec_from_file_location("systemd_heartbeat_module", ROOT / "plugins/modules/systemd_heartbeat.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def run_module(module, args: dict, check_mode=False, fetch_status=204, show=None):
    """Without a bus (a path that does not exist) the module reads through systemctl."""
    calls = []

    def fake_run(argv, deadline):
        calls.append(argv)
        if argv[1] == "list-units":
            return (CAPTURE / "list-units-failed.txt").read_text()
        return show if show is not None else (CAPTURE / "show.txt").read_text()

    def exit_json(self, **kwargs):
        raise ExitJson(kwargs)

    def fail_json(self, **kwargs):
        raise FailJson(kwargs)

    pushed = []

    def fake_fetch(mod, url, data=None, **kwargs):
        pushed.append((url, data, kwargs["headers"]))
        return None, {"status": fetch_status, "msg": "OK" if fetch_status < 300 else "Bad Request",
                      "body": b"" if fetch_status < 300 else b"cannot parse request\n"}

    with patch_module_args({**args, "_ansible_check_mode": check_mode}), \
            mock.patch.object(basic.AnsibleModule, "exit_json", exit_json), \
            mock.patch.object(basic.AnsibleModule, "fail_json", fail_json), \
            mock.patch.object(basic.AnsibleModule, "get_bin_path", lambda self, name, required=False: "/bin/systemctl"), \
            mock.patch.object(sys.modules["systemd_heartbeat.read_systemctl"], "run_command", fake_run), \
            mock.patch.object(module, "bus_socket", lambda source: ("/nonexistent/bus", [])), \
            mock.patch.object(module, "fetch_url", fake_fetch):
        with pytest.raises((ExitJson, FailJson)) as caught:
            module.main()
    return caught.value.args[0], caught.type, calls, pushed


UNITS = ["lab-active.service", "lab-crashloop.service", "lab-killed.service", "lab-job.service",
         "lab-job.timer", "lab-calendar.timer", "lab-foo\\x2dbar.service", "lab-missing.service",
         "lab-worker@one.service"]


def test_collects_reports_and_pushes(module):
    result, kind, calls, pushed = run_module(module, {"units": UNITS, "host": "h1"})
    assert kind is ExitJson and result["changed"] is False and result["pushed"] is True
    assert [c[1] for c in calls] == ["list-units", "show"]
    assert result["source"] == "systemctl"
    assert ("cannot use the system bus at /nonexistent/bus: No such file or directory; "
            "reading through systemctl instead") in warnings.get_warning_messages()
    by_unit = {u["unit"]: u for u in result["units"]}
    assert by_unit["lab-crashloop.service"]["restarts"] == 3
    assert by_unit["lab-killed.service"]["last_exit_status"] == 9
    assert by_unit["lab-missing.service"]["load_state"] == "not-found"
    assert by_unit["lab-broken.service"]["allowlisted"] is False
    assert result["missing"] == ["lab-missing.service"]
    assert result["failed_units"] == ["lab-killed.service", "lab-broken.service"]
    url, body, headers = pushed[0]
    assert url == "http://localhost:30428/opentelemetry/v1/metrics"
    assert headers == {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    assert body[:2] == b"\x1f\x8b"  # gzip


def test_check_mode_collects_but_pushes_nothing(module):
    result, kind, _, pushed = run_module(module, {"units": UNITS}, check_mode=True)
    assert kind is ExitJson and result["pushed"] is False and pushed == []
    assert len(result["units"]) == 10


def test_push_false_validates_only(module):
    result, kind, _, pushed = run_module(module, {"units": UNITS, "push": False})
    assert kind is ExitJson and result["pushed"] is False and pushed == []


def test_bad_unit_name_fails_with_the_name(module):
    result, kind, calls, _ = run_module(module, {"units": ["ok.service", "bad name.service"]})
    assert kind is FailJson and calls == []
    assert result["msg"] == ("units: bad unit 'bad name.service': character ' ' is not allowed in a unit name "
                             "(systemd-escape it)")


def test_bad_url_fails(module):
    result, kind, calls, _ = run_module(module, {"units": UNITS, "url": "localhost:30428"})
    assert kind is FailJson and result["msg"] == "localhost:30428: not an http(s) URL" and calls == []


def test_http_error_carries_status_and_message(module):
    result, kind, _, _ = run_module(module, {"units": UNITS}, fetch_status=400)
    assert kind is FailJson and result["status"] == 400
    assert result["msg"] == ("push to http://localhost:30428/opentelemetry/v1/metrics failed: HTTP 400: "
                             "cannot parse request")


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

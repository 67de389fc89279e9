"""The systemd_heartbeat module, driven in-process as ansible-test units runs it (this file
ships in the collection): exit_json/fail_json raise, systemctl's answers come from the
captured systemd 252 fixtures, the push goes to a patched fetch_url. What it reads over D-Bus
from a real systemd is tested on the lab (tests/lab, molecule)."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.common import warnings
from ansible.module_utils.testing import patch_module_args

from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat import read_systemctl
from ansible_collections.coilysiren.systemd_monitoring.plugins.modules import systemd_heartbeat

CAPTURE = Path(__file__).resolve().parents[3] / "fixtures/systemd-252"


class ExitJson(SystemExit):  # as the real exit_json ends the module: SystemExit, not an Exception
    pass


class FailJson(SystemExit):
    pass


@pytest.fixture()
def module():
    return systemd_heartbeat


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
            mock.patch.object(read_systemctl, "run_command", fake_run), \
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
    failure = by_unit["lab-killed.service"]["last_failure"]
    assert (failure["result"], failure["exit_code"], failure["exit_status"], failure["gave_up"]) == \
        ("signal", "killed", "9", False)
    assert by_unit["lab-active.service"]["last_failure"] is None
    assert by_unit["lab-missing.service"]["load_state"] == "not-found"
    assert by_unit["lab-broken.service"]["allowlisted"] is False
    assert result["missing"] == ["lab-missing.service"]
    assert result["failed_units"] == ["lab-killed.service", "lab-broken.service"]
    url, body, headers = pushed[0]
    assert url == "http://localhost:30428/opentelemetry/v1/metrics"
    assert headers == {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    assert body[:2] == b"\x1f\x8b"  # gzip


def test_the_heartbeats_state_directory_is_read_not_written(module, tmp_path):
    """With state_dir, the push carries what the heartbeat remembers (an exit systemd has
    already reset), and the directory is left as it was."""
    from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat import state

    state.remember(str(tmp_path), {"units": {"lab-active.service": {
        "exit_code": 1, "exit_status": 5, "failed_at": 1795000000.0, "result": "exit-code", "failure_code": 1,
        "failure_status": 5, "gave_up": False}}})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result, kind, _calls, _pushed = run_module(module, {"units": UNITS, "state_dir": str(tmp_path)})
    assert kind is ExitJson
    active = {u["unit"]: u for u in result["units"]}["lab-active.service"]
    assert active["last_exit_status"] == 5
    assert active["last_failure"] == {"at": 1795000000.0, "result": "exit-code", "exit_code": "exited",
                                      "exit_status": "5", "gave_up": False}
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_check_mode_collects_but_pushes_nothing(module):
    result, kind, _calls, pushed = run_module(module, {"units": UNITS}, check_mode=True)
    assert kind is ExitJson and result["pushed"] is False and pushed == []
    assert len(result["units"]) == 10


def test_push_false_validates_only(module):
    result, kind, _calls, pushed = run_module(module, {"units": UNITS, "push": False})
    assert kind is ExitJson and result["pushed"] is False and pushed == []


def test_bad_unit_name_fails_with_the_name(module):
    result, kind, calls, _pushed = run_module(module, {"units": ["ok.service", "bad name.service"]})
    assert kind is FailJson and calls == []
    assert result["msg"] == ("units: bad unit 'bad name.service': character ' ' is not allowed in a unit name "
                             "(systemd-escape it)")


def test_bad_url_fails(module):
    result, kind, calls, _pushed = run_module(module, {"units": UNITS, "url": "localhost:30428"})
    assert kind is FailJson and result["msg"] == "localhost:30428: not an http(s) URL" and calls == []


def test_http_error_carries_status_and_message(module):
    result, kind, _calls, _pushed = run_module(module, {"units": UNITS}, fetch_status=400)
    assert kind is FailJson and result["status"] == 400
    assert result["msg"] == ("push to http://localhost:30428/opentelemetry/v1/metrics failed: HTTP 400: "
                             "cannot parse request")

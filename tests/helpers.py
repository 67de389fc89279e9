"""Paths and loaders shared by the tests (conftest.py files cannot be imported by name twice)."""
from __future__ import annotations

import json
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")  # the venv's, beside this Python


def inventory_allowlist() -> list[str]:
    """The allowlist of inventory/group_vars, the project's one definition."""
    import yaml

    return yaml.safe_load((ROOT / "inventory/group_vars/systemd_monitoring_hosts.yml").read_text())[
        "systemd_monitoring_units"]


def heartbeat_archive() -> bytes:
    """The heartbeat as `python3 files/systemd-heartbeat.py` runs it from a clone: the program
    and its package, as a tar.gz whose members start with `systemd-heartbeat/`. On a lab host:
    `tar -xz -C /opt` from stdin, then `python3 /opt/systemd-heartbeat/files/systemd-heartbeat.py`."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in [ROOT / "files/systemd-heartbeat.py",
                     *sorted((ROOT / "plugins/module_utils/systemd_heartbeat").glob("*.py"))]:
            archive.add(path, arcname="systemd-heartbeat/" + str(path.relative_to(ROOT)), recursive=False)
    return buffer.getvalue()


HEARTBEAT_ON_HOST = "python3 /opt/systemd-heartbeat/files/systemd-heartbeat.py"


def install_heartbeat(lab, host: str) -> str:
    """Unpack heartbeat_archive() under /opt on a lab host; the command that runs it there."""
    import base64

    lab.ssh(host, "rm -rf /opt/systemd-heartbeat && base64 -d | tar -xz -C /opt",
            input=base64.b64encode(heartbeat_archive()).decode())
    return HEARTBEAT_ON_HOST


def heartbeat_host(request, lab) -> str:
    """The lab host a module's `host` fixture is parametrized with (a Debian 13 host booted on
    first use), with the heartbeat installed."""
    name = request.param
    if "trixie" in name:
        request.getfixturevalue("trixie")
    install_heartbeat(lab, name)
    return name


PACKAGE_PARENT = ROOT / "plugins/module_utils"
STAGES = ("model", "syscalls", "text", "units", "values", "triggers", "history", "bus_wire", "read_bus",
          "read_systemctl", "read_journal", "read", "shape", "otlp", "push", "state", "spool", "cli")


def load_heartbeat():
    """Every stage of the heartbeat package (plugins/module_utils/systemd_heartbeat), imported
    as the program imports it, and one namespace with all their names for tests that follow a
    value across stages (test modules that test one stage import it directly)."""
    import importlib
    import types

    if str(PACKAGE_PARENT) not in sys.path:
        sys.path.insert(0, str(PACKAGE_PARENT))
    everything = types.SimpleNamespace()
    for stage in STAGES:
        module = importlib.import_module(f"systemd_heartbeat.{stage}")
        for name, value in vars(module).items():
            if not name.startswith("__"):
                setattr(everything, name, value)
    return everything


class VictoriaMetrics:
    """A real VictoriaMetrics on loopback, queried the way dashboards and alerts will."""

    def __init__(self, url: str):
        self.url = url
        self.otlp = f"{url}/opentelemetry/v1/metrics"

    def flush(self) -> None:
        # Recently ingested rows become searchable after an in-memory buffer is flushed.
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()

    def query(self, expr: str, at: float | None = None) -> list[tuple[dict, float]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def raw_values(self, match: str, start: float = 0) -> list[float]:
        """Every sample of the one series `match` selects since `start`, as pushed, oldest
        first (staleness markers are NaN)."""
        data = urllib.parse.urlencode({"match[]": match, "start": f"{start:.3f}"}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/export", data=data, timeout=10) as answer:
            lines = [json.loads(line) for line in answer.read().decode().splitlines() if line.strip()]
        assert len(lines) <= 1, [line["metric"] for line in lines]
        if not lines:
            return []
        # the export gives each stored block's samples in turn, not one series sorted by time
        pairs = sorted(zip(lines[0]["timestamps"], lines[0]["values"]), key=lambda pair: pair[0])
        return [float(v) if v is not None else float("nan") for _at, v in pairs]

    def series_names(self, match: str) -> set[str]:
        data = urllib.parse.urlencode({"match[]": match}).encode()
        with urllib.request.urlopen(f"{self.url}/api/v1/series", data=data, timeout=10) as answer:
            return {s["__name__"] for s in json.load(answer)["data"]}

    def wait_for_push(self, host: str, since: float, timeout: float = 20) -> None:
        """Until the heartbeat sample of a tick that started at `since` is queryable."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.flush()
            stamps = self.query(f'timestamp(systemd_heartbeat_up{{host="{host}"}})')
            if stamps and stamps[0][1] >= int(since):
                return
            time.sleep(0.2)
        raise AssertionError(f"no push from {host} after {since} reached {self.url}")

    def wait_for(self, expr: str, timeout: float = 20) -> list[tuple[dict, float]]:
        deadline = time.monotonic() + timeout
        while True:
            self.flush()
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.3)


def import_series(url: str, lines: str) -> None:
    """JSON lines (/api/v1/import) into the VictoriaMetrics at `url`, searchable on return."""
    request = urllib.request.Request(f"{url}/api/v1/import", data=lines.encode(), method="POST")
    urllib.request.urlopen(request, timeout=120).read()
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=30).read()
    time.sleep(1)


def delete_series(url: str, match: str) -> None:
    """Every series `match` selects gone from the VictoriaMetrics at `url` (a shared one: the
    test's own host label)."""
    data = urllib.parse.urlencode({"match[]": match}).encode()
    urllib.request.urlopen(f"{url}/api/v1/admin/tsdb/delete_series", data=data, timeout=60).read()


# One rendering at a time, its stdin not the suite's: with two scenarios side by side
# (test_auto_pull_trust) ansible-playbook refused to start, "Ansible requires blocking IO on
# stdin" (an ssh in the other thread had made the stdin they share non-blocking). The
# Alertmanager is found or started under the same lock: two threads would start two.
RENDERING = threading.Lock()


def own_alertmanager(lab) -> str:
    """The Alertmanager scoped_vmalert notifies: the lab tests' own (started on first use), not the
    lab's, where a vmalert scripts/demo left running on lab-host1 sends its copies of the same
    alerts (the same rules over the same series, with the role's default windows)."""
    return lab.start_alertmanager(lab.TESTS_ALERTMANAGER_PORT, "alertmanager-tests")


def scoped_vmalert(lab, victoria: VictoriaMetrics, directory: Path, scope: str, *extra_vars: str):
    """A context: a real vmalert evaluating the role's rules (rendered by tests/alerts/render.yml
    into `directory`, evaluated every 2 s unless `extra_vars`, `-e` values of the role's
    variables, say otherwise), every group scoped with `params: extra_filters[]` to the series
    `scope` selects (VictoriaMetrics and Alertmanager are shared: it evaluates and alerts on
    nothing else), notifying own_alertmanager(); yields its process. Afterwards the series
    `scope` selects (the test's and what vmalert wrote) are deleted."""
    import contextlib
    import subprocess

    import yaml

    @contextlib.contextmanager
    def running():
        settings = ["-e", "systemd_monitoring_alerts_evaluation_interval=2s"]
        for pair in extra_vars:
            settings += ["-e", pair]
        with RENDERING:
            done = subprocess.run([ANSIBLE_PLAYBOOK, str(ROOT / "tests/alerts/render.yml"),
                                   "-e", f"rules_path={directory / 'rules.yml'}", "-e", f"vmalert={lab.tool('vmalert')}",
                                   *settings], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                                  stdin=subprocess.DEVNULL)  # ssh beside it can leave a shared stdin non-blocking
            notifier = own_alertmanager(lab)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        rules = yaml.safe_load((directory / "rules.yml").read_text())
        for group in rules["groups"]:
            group["params"] = {"extra_filters[]": [scope]}
        (directory / "scoped.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
        process = subprocess.Popen([lab.tool("vmalert"), f"-rule={directory / 'scoped.yml'}",
                                    f"-datasource.url={victoria.url}", f"-remoteWrite.url={victoria.url}",
                                    f"-notifier.url={notifier}",
                                    "-httpListenAddr=127.0.0.1:0", "-rule.evalDelay=0s", "-loggerLevel=WARN"],
                                   stdout=subprocess.DEVNULL, stderr=open(directory / "vmalert.log", "w"))
        try:
            yield process
        finally:
            process.terminate()
            process.wait(30)
            victoria.flush()  # what vmalert wrote as it stopped: delete_series misses rows not flushed yet
            delete_series(victoria.url, scope)

    return running()


class TookTooLong(Exception):
    """A test ran past its time limit (time_limited)."""


def time_limited(seconds: int):
    """A context under SIGALRM after `seconds`: a decoder or a wait that loops forever fails its
    test with TookTooLong instead of hanging the suite (the conftests' autouse fixtures)."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def limit():
        def expire(*_):
            raise TookTooLong(f"test still running after {seconds} s")

        previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    return limit()

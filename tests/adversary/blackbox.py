"""The heartbeat as a black box, run as a subprocess: running it, parsing what it prints, the
checks every outcome must pass, and the state directory's files. The suite's fixtures are in
conftest.py (pytest's, not to be imported by name: two conftest modules cannot both be).

HEARTBEAT_PROGRAM overrides the program under test (default: files/systemd-heartbeat.py of this
checkout). Nothing here reads the program's source: it is driven through its documented flags,
a fake system bus (fakebus.py), a fake systemctl (fakesystemctl.py) and fake endpoints (fakehttp.py).
"""
from __future__ import annotations

import gzip
import marshal
import os
import re
import signal
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from fakebus import FakeBus
from fakesystemctl import FakeTools

HERE = Path(__file__).resolve().parent

PROGRAM = os.environ.get("HEARTBEAT_PROGRAM",
                         str(HERE.parent.parent / "files" / "systemd-heartbeat.py"))
PYTHON = os.environ.get("HEARTBEAT_PYTHON",
                        "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)
SLACK = 1.5          # the documented slack over --timeout for a whole tick
HOST = "advhost"
PREFIX = "systemd-heartbeat: "
WARNING = "systemd-heartbeat: warning: "
TEST_LIMIT = 120     # a hard limit per test: a hang fails instead of blocking
IS_ROOT = os.geteuid() == 0


# --- running the heartbeat --------------------------------------------------------------------

SAMPLE = re.compile(r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?[0-9]+)?(?:\s+#.*)?$')
LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


@dataclass
class Sample:
    name: str
    labels: dict
    value: str

    @property
    def key(self):
        return self.name, tuple(sorted(self.labels.items()))

    @property
    def stale(self) -> bool:
        return self.value.lower() == "stale"


def parse_labels(text: str) -> dict:
    labels, pos = {}, 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        assert m, f"unparsable labels {text!r}"
        labels[m.group(1)] = re.sub(r'\\(.)', lambda x: {"n": "\n"}.get(x.group(1), x.group(1)),
                                    m.group(2))
        pos = m.end()
    return labels


def parse_samples(stdout: str) -> list[Sample]:
    samples = []
    for line in stdout.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"dry-run line not in Prometheus text style: {line!r}"
        samples.append(Sample(m.group(1), parse_labels(m.group(2) or ""), m.group(3)))
    return samples


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    elapsed: float
    args: list = field(default_factory=list)

    @property
    def samples(self) -> list[Sample]:
        return parse_samples(self.stdout)

    def values(self, name, **labels) -> list[str]:
        return [s.value for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name, **labels) -> float:
        vals = [v for v in self.values(name, **labels) if v.lower() != "stale"]
        assert len(vals) == 1, f"expected one {name}{labels}, got {vals}\n{self}"
        return float(vals[0])

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith(WARNING)]

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if not line.startswith(WARNING)]

    def __str__(self):
        return (f"rc={self.rc} elapsed={self.elapsed:.2f}s args={self.args}\n--- stderr\n"
                f"{self.stderr[-4000:]}\n--- stdout\n{self.stdout[-3000:]}")


class Runner:
    """Runs the heartbeat with a clean environment: no variable of the host leaks in."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.empty_bin = tmp / "empty-bin"
        self.empty_bin.mkdir(exist_ok=True)

    def __call__(self, *args, bus: FakeBus | None = None, tools: FakeTools | None = None,
                 bus_address: str | None = None, env: dict | None = None, limit: float = 20,
                 preexec=None, pipes: bool = False) -> Result:
        """pipes: capture through pipes, not files (when a file-size limit would cut the output)."""
        environ = {
            "PATH": str(tools.bin if tools else self.empty_bin),
            "HOME": str(self.tmp),
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            "DBUS_SYSTEM_BUS_ADDRESS": (bus_address if bus_address is not None else
                                        bus.address if bus else "unix:path=/nonexistent/adversary-bus"),
        }
        environ.update(env or {})
        argv = [PYTHON, PROGRAM, *[str(a) for a in args]]
        if pipes:
            start = time.monotonic()
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=environ,
                               cwd=self.tmp, start_new_session=True, preexec_fn=preexec, timeout=limit)
            return Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                          p.stderr.decode("utf-8", "replace"), time.monotonic() - start, argv[2:])
        out_path, err_path = self.tmp / "stdout", self.tmp / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.monotonic()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    env=environ, cwd=self.tmp, start_new_session=True,
                                    preexec_fn=preexec)
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = -9
            elapsed = time.monotonic() - start
        res = Result(rc, out_path.read_bytes().decode("utf-8", "replace"),
                     err_path.read_bytes().decode("utf-8", "replace"), elapsed, argv[2:])
        assert rc != -9, f"heartbeat still running after {limit} s (hard limit)\n{res}"
        return res


# --- well-formedness of every outcome ---------------------------------------------------------

def assert_clean(res: Result, ok: bool | None = None):
    """No traceback; every stderr line is ours; exit 0 with no error line, or exit 1 with exactly one."""
    assert "Traceback" not in res.stderr, f"a Python traceback\n{res}"
    for line in res.stderr.splitlines():
        assert line.startswith(PREFIX), f"stderr line not of the form 'systemd-heartbeat: ...': {line!r}\n{res}"
    assert res.rc in (0, 1), f"exit status {res.rc}\n{res}"
    if res.rc == 0:
        assert res.errors == [], f"exit 0 with an error line\n{res}"
    else:
        assert len(res.errors) == 1, f"exit 1 needs exactly one error line, got {res.errors}\n{res}"
    if ok is True:
        assert res.rc == 0, f"expected success\n{res}"
    if ok is False:
        assert res.rc == 1, f"expected failure\n{res}"


def assert_within(res: Result, timeout: float):
    assert res.elapsed <= timeout + SLACK, (
        f"tick took {res.elapsed:.2f} s, more than --timeout {timeout} + {SLACK} s slack\n{res}")


def assert_bus_values(res: Result, bus: FakeBus | None = None):
    """The values the miniature systemd holds (also what the fake systemctl prints)."""
    assert res.value("systemd_unit_active", unit="alpha.service", sub_state="running") == 1, res
    assert res.value("systemd_unit_active", unit="broken.service", sub_state="failed") == 0, res
    assert res.value("systemd_unit_active", unit="tick.timer", sub_state="waiting") == 1, res
    assert res.value("systemd_unit_restart_count_total", unit="alpha.service") == 2, res
    assert res.value("systemd_unit_last_exit_status", unit="broken.service") == 3, res
    assert res.value("systemd_unit_last_exit_code", unit="broken.service") == 1, res
    info = [s for s in res.samples if s.name == "systemd_unit_info" and s.labels.get("unit") == "broken.service"]
    assert info and info[0].labels.get("active_state") == "failed", res
    assert res.value("systemd_heartbeat_up") == 1, res
    if bus is not None:
        last = res.value("systemd_timer_last_trigger_timestamp_seconds", unit="tick.timer")
        assert abs(last - (bus.now - 30)) < 2, res
    for s in res.samples:
        assert s.labels.get("host") == HOST, f"sample without host={HOST}: {s}"


def assert_one_state_per_series(res: Result):
    """No series has a staleness marker and a value in the same push."""
    seen: dict = {}
    for s in res.samples:
        seen.setdefault(s.key, []).append(s.value)
    both = {k: v for k, v in seen.items()
            if any(x.lower() == "stale" for x in v) and any(x.lower() != "stale" for x in v)}
    assert not both, f"series with a staleness marker and a value in one push: {both}\n{res}"


# --- the state directory ----------------------------------------------------------------------

SPOOL_NAME = re.compile(r"^[0-9]{20}\.otlp\.gz$")


def read_state(path: Path) -> dict:
    data = path.read_bytes()
    assert zlib.crc32(data[4:]).to_bytes(4, "little") == data[:4], "bad CRC in the state file"
    return marshal.loads(data[4:])


def write_state(path: Path, state) -> None:
    body = marshal.dumps(state)
    path.write_bytes(zlib.crc32(body).to_bytes(4, "little") + body)


def spool_entries(state_dir: Path) -> list[Path]:
    spool = state_dir / "spool"
    if not spool.is_dir():
        return []
    return sorted(p for p in spool.iterdir() if SPOOL_NAME.match(p.name))


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def ungz(data: bytes) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError):
        return data


# --- small shared helpers ---------------------------------------------------------------------

UNIT_ARGS = ("--host", HOST, "--unit", "alpha", "--unit", "broken.service", "--unit", "tick.timer")


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def refused_url() -> str:
    return f"http://127.0.0.1:{closed_port()}/opentelemetry/v1/metrics"


def assert_no_fallback(res: Result, tools: FakeTools):
    """The tick was read over D-Bus: systemctl never ran and no warning says otherwise."""
    assert tools.calls() == [], f"fell back to systemctl: {tools.calls()}\n{res}"
    assert not any("systemctl" in w for w in res.warnings), res


def spool_name(ns: int | None = None) -> str:
    return f"{time.time_ns() if ns is None else ns:020d}.otlp.gz"

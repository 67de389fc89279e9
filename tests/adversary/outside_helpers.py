"""Helpers for test_outside_promises.py: run the heartbeat as a program (files/systemd-heartbeat.py)
against the shared fakes (a fake systemctl on PATH, the jeepney fake bus, an OTLP endpoint), write
state files the way the state directory holds them, and decode what was pushed with the official
opentelemetry-proto (an independent decoder).

Written from README.md, RELIABILITY.md and issue 19; the state file's format is taken from
state.py (a CRC-32 of the rest, then marshal of a dict), nothing else from the code.
"""
from __future__ import annotations

import gzip
import json
import marshal
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

from fakebus import SERVICE_IFACE, UNIT_IFACE, FakeBus, default_units, usec
from fakesystemctl import FakeTools

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "files" / "systemd-heartbeat.py"
MODULE = ROOT / "plugins" / "modules" / "systemd_heartbeat.py"
COLLECTIONS = ROOT / ".venv" / "collections"
PREFIX = "systemd-heartbeat: "
# RELIABILITY.md: the interpreter's start and the exit come on top of --timeout; tests allow 1.5 s
SLACK = 1.5
LIMIT_AS = 512 << 20  # the role's unit: LimitAS=512M


class Run:
    """One finished heartbeat process."""

    def __init__(self, returncode: int, stdout: str, stderr: str, elapsed: float):
        self.returncode, self.stdout, self.stderr, self.elapsed = returncode, stdout, stderr, elapsed

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()

    def warnings(self) -> list[str]:
        return [line for line in self.lines if line.startswith(PREFIX + "warning: ")]

    def __repr__(self):
        return f"Run(rc={self.returncode}, {self.elapsed:.2f} s, stderr={self.stderr[-1500:]!r})"


def environment(bin_dir: "Path | None" = None, bus: "str | None" = None, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SYSTEMD_HEARTBEAT_", "VMSINGLE_", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY"))}
    if bin_dir is not None:
        env["PATH"] = f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
    env["DBUS_SYSTEM_BUS_ADDRESS"] = bus or "unix:path=/nonexistent/bus"
    env.update(extra)
    return env


def limit_address_space():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def start(args: list[str], env: dict, limit_as: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(PROGRAM), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace",
                            preexec_fn=limit_address_space if limit_as else None, start_new_session=True)


def run(args: list[str], env: dict, wait: float = 8.0, limit_as: bool = False) -> Run:
    began = time.monotonic()
    process = start(args, env, limit_as)
    try:
        out, err = process.communicate(timeout=wait)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        err += f"\n[test: killed after {wait} s]"
        return Run(-9, out, err, time.monotonic() - began)
    return Run(process.returncode, out, err, time.monotonic() - began)


def one_line_per_message(stderr: str) -> list[str]:
    """The lines of stderr that are not messages of the heartbeat (continuations, tracebacks)."""
    return [line for line in stderr.splitlines() if not line.startswith(PREFIX)]


# --- units --------------------------------------------------------------------------------------

def units(now: "float | None" = None):
    """The fake bus's default units (alpha running, broken failed with exit 3, a timer, ...)."""
    return default_units(now)


def set_prop(units_, name: str, prop: str, sig: str, value, iface: str = SERVICE_IFACE):
    units_[name].props.setdefault(iface, {})[prop] = (sig, value)


def make_active(units_, name: str, now: float):
    """The unit restarted after its failure: systemd forgot the failure (Result, exit)."""
    u = units_[name]
    u.active, u.sub = "active", "running"
    set_prop(units_, name, "StateChangeTimestamp", "t", usec(now - 5), UNIT_IFACE)
    set_prop(units_, name, "ActiveEnterTimestamp", "t", usec(now - 5), UNIT_IFACE)
    set_prop(units_, name, "ExecMainCode", "i", 0)
    set_prop(units_, name, "ExecMainStatus", "i", 0)
    set_prop(units_, name, "Result", "s", "success")
    set_prop(units_, name, "ExecMainStartTimestamp", "t", usec(now - 5))
    set_prop(units_, name, "ExecMainExitTimestamp", "t", 0)


def tools(bin_dir: Path, units_, behaviour: "dict | None" = None) -> FakeTools:
    return FakeTools(bin_dir, units_, behaviour)


# --- the endpoint and what it got ---------------------------------------------------------------

def decode(body: bytes):
    """An ExportMetricsServiceRequest, parsed by opentelemetry-proto (it refuses invalid UTF-8)."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    request = ExportMetricsServiceRequest()
    request.ParseFromString(gzip.decompress(body))
    return request


def series(request) -> list[tuple[str, dict, "float | None"]]:
    """(metric name, labels, value or None for a staleness marker) of every data point."""
    out = []
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = metric.gauge.data_points if metric.HasField("gauge") else metric.sum.data_points
                for point in points:
                    labels = {a.key: a.value.string_value for a in point.attributes}
                    value = None if point.flags & 1 else point.as_double
                    out.append((metric.name, labels, value))
    return out


def find(points, name: str, **labels) -> list:
    return [p for p in points if p[0] == name and all(p[1].get(k) == v for k, v in labels.items())]


class RawEndpoint:
    """A loopback HTTP server that reads one request and answers `answer` (raw bytes)."""

    def __init__(self, answer: bytes):
        self.answer = answer
        self.requests: list[bytes] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/opentelemetry/v1/metrics"

    def loop(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            try:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.requests.append(body)
                conn.sendall(self.answer)
            except OSError:
                pass
            finally:
                conn.close()

    def stop(self):
        self.stopped = True
        self.sock.close()
        self.thread.join(2)


# --- the state directory ------------------------------------------------------------------------

MEMORY_FILE = "last-push.marshal"
LEGACY_MEMORY_FILE = "last-push.json"


def write_memory(state_dir: Path, memory: dict) -> None:
    """A state file as the heartbeat writes it: CRC-32 of the marshal data, then the data."""
    data = marshal.dumps(memory)
    (state_dir / MEMORY_FILE).write_bytes(struct.pack("<I", zlib.crc32(data)) + data)


def read_memory(state_dir: Path) -> dict:
    data = (state_dir / MEMORY_FILE).read_bytes()
    return marshal.loads(data[4:])


def memory(units_records: "dict | None" = None, series_=None, wall: "float | None" = None,
           spool_dropped: "dict | None" = None) -> dict:
    m = {"series": list(series_ or []), "intervals": {}, "calendar": {},
         "spool_dropped": dict(spool_dropped or {}), "units": dict(units_records or {})}
    if wall is not None:
        m["wall"] = wall
    return m


# --- the Ansible module -------------------------------------------------------------------------

def run_module(args: dict, env: dict, wait: float = 20.0) -> tuple[int, str, str]:
    """The module run directly, as Ansible's debug path runs it (arguments as JSON on stdin)."""
    env = dict(env, PYTHONPATH=str(COLLECTIONS), ANSIBLE_LOCAL_TEMP="/tmp")
    process = subprocess.run([sys.executable, str(MODULE)], input=json.dumps({"ANSIBLE_MODULE_ARGS": args}),
                             env=env, capture_output=True, text=True, timeout=wait)
    return process.returncode, process.stdout, process.stderr


class AuthBus(FakeBus):
    """A fake bus that answers the AUTH line with `auth_answer` (raw bytes, its own CRLF)."""

    auth_answer = b"REJECTED EXTERNAL\r\n"

    def _auth_line(self, conn, line: bytes):
        self.auth_lines.append(line)
        if line.startswith(b"AUTH"):
            conn.sendall(self.auth_answer)

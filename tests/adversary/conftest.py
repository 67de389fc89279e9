"""Fixtures of the adversarial suite: each adversary (a fake system bus, a fake systemctl, fake
endpoints, TLS files, a state directory) and a hard time limit on every test. What the tests
import by name is in blackbox.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from blackbox import TEST_LIMIT, Runner
from fakebus import FakeBus, default_units
from fakehttp import FakeEndpoint
from fakesystemctl import FakeTools
from helpers import time_limited


@pytest.fixture(autouse=True)
def hard_time_limit():
    with time_limited(TEST_LIMIT):
        yield


@pytest.fixture
def run(tmp_path):
    return Runner(tmp_path)


@pytest.fixture
def short_dir():
    """A short directory for unix sockets (their paths are limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix="hb-adv-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def make_bus(short_dir):
    made = []

    def make(units=None, name="bus") -> FakeBus:
        bus = FakeBus(str(short_dir / name), units)
        made.append(bus)
        return bus

    yield make
    for bus in made:
        bus.stop()
        assert not bus.errors, f"the fake bus itself failed: {bus.errors}"


@pytest.fixture
def bus(make_bus):
    return make_bus()


@pytest.fixture
def make_tools(tmp_path):
    made = []

    def make(units=None, behaviour=None, extra_lines=None, name="bin") -> FakeTools:
        if units is None:
            units = default_units()
        tools = FakeTools(tmp_path / name, units, behaviour, extra_lines)
        made.append(tools)
        return tools

    yield make
    for tools in made:
        tools.kill_all()


@pytest.fixture
def make_endpoint():
    made = []

    def make(**kw) -> FakeEndpoint:
        ep = FakeEndpoint(**kw)
        made.append(ep)
        return ep

    yield make
    for ep in made:
        ep.stop()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A throwaway self-signed certificate for 127.0.0.1 / localhost / ::1."""
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI missing (apt-get install openssl)")
    d = tmp_path_factory.mktemp("tls")
    key, cert = d / "key.pem", d / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


@pytest.fixture
def tls_context(tls_files):
    import ssl
    cert, key = tls_files
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.fixture
def state(tmp_path) -> Path:
    """The state directory, made beforehand as systemd's StateDirectory= does (mode 0700)."""
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return d

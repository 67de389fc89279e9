"""The command line: dry run, and one line on stderr plus a non-zero exit for each failure.

Runs the heartbeat as a program, with a fake systemctl first on PATH (a shell script that
replays the captured systemd 252 answers) and a real HTTP server on loopback.
"""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time

import pytest

from fakebus import default_units
from fakesystemctl import FakeTools
from helpers import ROOT

HEARTBEAT = os.environ.get("HEARTBEAT_PROGRAM") or ROOT / "files/systemd-heartbeat.py"


@pytest.fixture()
def fake_systemctl(tmp_path):
    """The shared fake systemctl (tests/fakes/fakesystemctl.py) first on PATH, serving the fake
    bus's unit table (a running service, a failed one, a timer...); the environment to run with."""
    FakeTools(tmp_path / "bin", default_units())
    return dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", SYSTEMD_HEARTBEAT_SOURCE="systemctl")


def run_heartbeat(env, *args):
    return subprocess.run([sys.executable, str(HEARTBEAT), *args], env=env, capture_output=True,
                          text=True, timeout=30)


class Recorder(http.server.BaseHTTPRequestHandler):
    status, message, bodies = 204, b"", []

    authorizations: list = []

    def do_POST(self):
        self.authorizations.append(self.headers.get("Authorization"))
        self.bodies.append((self.headers["Content-Type"], self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.message)))
        self.end_headers()
        self.wfile.write(self.message)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    Recorder.bodies, Recorder.authorizations = [], []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def url_of(httpd):
    return f"http://127.0.0.1:{httpd.server_address[1]}/opentelemetry/v1/metrics"


def test_dry_run_prints_samples_and_pushes_nothing(fake_systemctl, server):
    done = run_heartbeat(fake_systemctl, "--dry-run", "--unit", "alpha.service", "--host", "h1",
                         "--url", url_of(server))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert 'systemd_unit_active{unit="alpha.service",sub_state="running",host="h1"} 1' in lines
    assert 'systemd_unit_active{unit="broken.service",sub_state="failed",host="h1"} 0' in lines  # failed: reported
    assert 'systemd_heartbeat_units_reported{host="h1"} 2' in lines
    assert Recorder.bodies == []


def test_push_posts_protobuf(fake_systemctl, server):
    done = run_heartbeat(fake_systemctl, "--unit", "a.service", "--url", url_of(server))
    assert done.returncode == 0 and done.stderr == ""
    assert [b[0] for b in Recorder.bodies] == ["application/x-protobuf"]


def test_push_to_a_cluster_goes_to_vminserts_tenant_path(fake_systemctl):
    """On a VictoriaMetrics cluster the URL is vminsert's per-tenant OTLP path, used as given."""
    from cluster_standin import ClusterStandIn

    vminsert = ClusterStandIn()
    try:
        done = run_heartbeat(fake_systemctl, "--unit", "a.service",
                             "--url", f"{vminsert.url}/insert/3/opentelemetry/v1/metrics")
    finally:
        vminsert.close()
    assert done.returncode == 0, done.stderr
    assert vminsert.paths == ["/insert/3/opentelemetry/v1/metrics"]


def test_http_error_names_url_status_and_message(fake_systemctl, server):
    Recorder.status, Recorder.message = 400, b"cannot parse OpenTelemetry request: bad data\n"
    try:
        done = run_heartbeat(fake_systemctl, "--url", url_of(server))
    finally:
        Recorder.status, Recorder.message = 204, b""
    assert done.returncode == 1
    assert done.stderr == (f"systemd-heartbeat: push to {url_of(server)} failed: HTTP 400 Bad Request: "
                           "cannot parse OpenTelemetry request: bad data (payload dropped, reason: rejected)\n")


def test_unreachable_endpoint(fake_systemctl):
    done = run_heartbeat(fake_systemctl, "--url", "http://127.0.0.1:9/opentelemetry/v1/metrics")
    assert done.returncode == 1
    assert done.stderr.startswith("systemd-heartbeat: push to http://127.0.0.1:9/opentelemetry/v1/metrics "
                                  "failed: ") and "refused" in done.stderr
    assert done.stderr.count("\n") == 1


def test_url_without_http_is_rejected(fake_systemctl):
    done = run_heartbeat(fake_systemctl, "--url", "localhost:30428")
    assert done.returncode == 1 and "localhost:30428: not an http(s) URL" in done.stderr


def test_bad_allowlist_line(fake_systemctl, tmp_path):
    allowlist = tmp_path / "allowlist"
    allowlist.write_text("ok.service\nnot ok.service\n")
    done = run_heartbeat(fake_systemctl, "--dry-run", "--allowlist", str(allowlist))
    assert done.returncode == 1
    assert done.stderr == (f"systemd-heartbeat: {allowlist}:2: bad allowlist entry 'not ok.service': "
                           "character ' ' is not allowed in a unit name (systemd-escape it)\n")


def test_missing_allowlist_file(fake_systemctl, tmp_path):
    done = run_heartbeat(fake_systemctl, "--dry-run", "--allowlist", str(tmp_path / "nope"))
    assert done.returncode == 1 and "cannot read allowlist" in done.stderr and "No such file" in done.stderr


def test_hung_systemctl_ends_within_the_timeout(tmp_path):
    FakeTools(tmp_path / "bin", default_units(), behaviour={"list-units": {"sleep": 30}})
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    done = run_heartbeat(env, "--dry-run", "--timeout", "0.5", "--source", "systemctl")
    assert done.returncode == 1
    assert done.stderr == "systemd-heartbeat: systemctl list-units did not finish within the 0.5 s timeout\n"


def test_staleness_marker_after_a_state_change(fake_systemctl, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "last-push.json").write_text(  # the format before 0.2: read too
        '{"series": [["systemd_unit_active", "gauge", [["unit", "alpha.service"], ["sub_state", "auto-restart"],'
        ' ["host", "h1"]]]], "intervals": {}, "calendar": {}}')
    done = run_heartbeat(fake_systemctl, "--dry-run", "--unit", "alpha.service", "--host", "h1",
                         "--state-dir", str(state))
    assert ('systemd_unit_active{unit="alpha.service",sub_state="auto-restart",host="h1"} stale'
            "  # staleness marker: this series ended") in done.stdout.splitlines()
    assert 'systemd_unit_active{unit="alpha.service",sub_state="running",host="h1"} 1' in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unknown argument '--bogus' (see --help)"),
    (["--url"], "--url needs a value"),
    (["--timeout", "soon"], "--timeout must be a number, got 'soon'"),
    (["--timeout=0"], "--timeout must be a number in (0, 3600], got '0'"),
])
def test_bad_arguments_get_one_line(fake_systemctl, args, message):
    done = run_heartbeat(fake_systemctl, "--dry-run", *args)
    assert (done.returncode, done.stderr) == (1, f"systemd-heartbeat: {message}\n")


def test_flags_take_environment_defaults(heartbeat):
    settings = heartbeat.parse_args(["--unit=a.service", "--unit", "b.service"], {
        "VMSINGLE_OTLP_URL": "http://vm:8428/opentelemetry/v1/metrics", "SYSTEMD_HEARTBEAT_HOST": "kai",
        "STATE_DIRECTORY": "/var/lib/systemd-heartbeat", "SYSTEMD_HEARTBEAT_TIMEOUT": "3"})
    assert (settings.url, settings.host, settings.state_dir, settings.timeout, settings.unit) == (
        "http://vm:8428/opentelemetry/v1/metrics", "kai", "/var/lib/systemd-heartbeat", 3.0,
        ["a.service", "b.service"])


def test_help_lists_every_flag(fake_systemctl):
    done = run_heartbeat(fake_systemctl, "--help")
    assert done.returncode == 0
    for flag in ("--url", "--unit", "--allowlist", "--host", "--timeout", "--state-dir", "--dry-run"):
        assert flag in done.stdout


@pytest.mark.parametrize("url, parts", [
    ("http://localhost:30428/opentelemetry/v1/metrics", ("http", "localhost", 30428, "/opentelemetry/v1/metrics")),
    ("https://vm.example/otlp", ("https", "vm.example", 443, "/otlp")),
    ("http://[::1]:8428/x?y=1", ("http", "::1", 8428, "/x?y=1")),
    ("http://127.0.0.1", ("http", "127.0.0.1", 80, "/")),
])
def test_split_url(heartbeat, url, parts):
    assert heartbeat.split_url(url) == parts


@pytest.mark.parametrize("url", ["ftp://x/y", "localhost:8428", "http://", "http://h:port/x"])
def test_split_url_rejects(heartbeat, url):
    with pytest.raises(heartbeat.HeartbeatError):
        heartbeat.split_url(url)


# ---- the spool: no sample lost while the endpoint is down

def decode_times(body: bytes) -> list[int]:
    import gzip as gz

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    request = ExportMetricsServiceRequest()
    request.ParseFromString(gz.decompress(body))
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0]
    return [p.time_unix_nano for p in metric.gauge.data_points][:1]


def test_payloads_spool_while_down_and_replay_oldest_first(fake_systemctl, server, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    down = "http://127.0.0.1:9/opentelemetry/v1/metrics"
    for expected in (1, 2, 3):
        done = run_heartbeat(fake_systemctl, "--state-dir", str(state), "--url", down, "--unit", "a.service")
        assert done.returncode == 1
        assert done.stderr.endswith(f"(spooled; {expected} waiting)\n") and done.stderr.count("\n") == 1
    done = run_heartbeat(fake_systemctl, "--state-dir", str(state), "--url", url_of(server), "--unit", "a.service")
    assert (done.returncode, done.stderr) == (0, "")
    assert len(Recorder.bodies) == 4 and list((state / "spool").iterdir()) == []
    times = [decode_times(body)[0] for _, body in Recorder.bodies]
    assert times == sorted(times) and len(set(times)) == 4  # each tick once, original timestamps, in order


def test_spool_caps_drop_the_oldest_and_count_it(fake_systemctl, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    down = "http://127.0.0.1:9/opentelemetry/v1/metrics"
    for _ in range(4):
        run_heartbeat(fake_systemctl, "--state-dir", str(state), "--url", down, "--spool-max-bytes", "1500")
    kept = sorted(p.name for p in (state / "spool").iterdir())
    sizes = sum(p.stat().st_size for p in (state / "spool").iterdir())
    assert sizes <= 1500 and 0 < len(kept) < 4
    done = run_heartbeat(fake_systemctl, "--state-dir", str(state), "--dry-run")
    assert f'systemd_heartbeat_spooled_payloads{{host="{os.uname().nodename}"}} {len(kept)}' in done.stdout
    assert (f'systemd_heartbeat_spool_dropped_total{{host="{os.uname().nodename}",reason="max_bytes"}} '
            f'{4 - len(kept)}') in done.stdout


def test_every_drop_reason_counts_from_zero_with_a_state_directory(fake_systemctl, tmp_path):
    """A counter born at 1 has no increase(): the first drop would go unseen."""
    done = run_heartbeat(fake_systemctl, "--state-dir", str(tmp_path), "--dry-run")
    host = os.uname().nodename
    for reason in ("rejected", "unreadable", "max_age", "max_bytes"):
        assert f'systemd_heartbeat_spool_dropped_total{{host="{host}",reason="{reason}"}} 0' in done.stdout
    assert "systemd_heartbeat_spool" not in run_heartbeat(fake_systemctl, "--dry-run").stdout


def test_a_corrupt_spool_file_is_skipped_with_a_warning(fake_systemctl, server, tmp_path):
    state = tmp_path / "state"
    (state / "spool").mkdir(parents=True)
    name = f"{time.time_ns():020d}.otlp.gz"
    (state / "spool" / name).write_bytes(b"garbage")
    done = run_heartbeat(fake_systemctl, "--state-dir", str(state), "--url", url_of(server))
    assert done.returncode == 0
    assert (f"warning: dropped spooled payload {name} (reason: unreadable): not a whole gzip file of an OTLP "
            "request") in done.stderr
    assert len(Recorder.bodies) == 1 and list((state / "spool").iterdir()) == []


def test_a_refused_payload_is_not_spooled(fake_systemctl, server, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    Recorder.status, Recorder.message = 400, b"bad request\n"
    try:
        done = run_heartbeat(fake_systemctl, "--state-dir", str(state), "--url", url_of(server))
    finally:
        Recorder.status, Recorder.message = 204, b""
    assert done.returncode == 1 and "HTTP 400" in done.stderr and "spooled" not in done.stderr
    assert not (state / "spool").exists() or list((state / "spool").iterdir()) == []


def test_an_endpoint_that_never_answers_ends_the_tick_within_its_budget(fake_systemctl, tmp_path):
    """A real black hole on loopback: it accepts the connection and never says a word."""
    import socket
    import time

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(hole.accept()), daemon=True)
    thread.start()
    state = tmp_path / "state"
    state.mkdir()
    began = time.monotonic()
    done = run_heartbeat(fake_systemctl, "--state-dir", str(state), "--timeout", "1",
                         "--url", f"http://127.0.0.1:{hole.getsockname()[1]}/opentelemetry/v1/metrics")
    elapsed = time.monotonic() - began
    hole.close()
    assert done.returncode == 1 and "timed out (spooled; 1 waiting)" in done.stderr
    assert elapsed < 3, elapsed


# ---- secrets and TLS

@pytest.mark.parametrize("line, header", [
    ("Bearer s3cret-token", "Bearer s3cret-token"),
    ("Basic vm:pa ss", "Basic dm06cGEgc3M="),
])
def test_credentials_file_sets_the_authorization_header(fake_systemctl, server, tmp_path, line, header):
    secret = tmp_path / "otlp-auth"
    secret.write_text(line + "\n")
    secret.chmod(0o600)
    done = run_heartbeat(fake_systemctl, "--url", url_of(server), "--auth-file", str(secret))
    assert (done.returncode, done.stderr) == (0, "")
    assert Recorder.authorizations == [header]


def test_a_systemd_credential_is_picked_up_without_a_flag(fake_systemctl, server, tmp_path):
    (tmp_path / "otlp-auth").write_text("Bearer from-credential\n")
    (tmp_path / "otlp-auth").chmod(0o400)
    done = run_heartbeat(dict(fake_systemctl, CREDENTIALS_DIRECTORY=str(tmp_path)), "--url", url_of(server))
    assert done.returncode == 0 and Recorder.authorizations == ["Bearer from-credential"]


def test_a_world_readable_credentials_file_is_refused_without_echoing_it(fake_systemctl, server, tmp_path):
    secret = tmp_path / "otlp-auth"
    secret.write_text("Bearer do-not-print-me\n")
    secret.chmod(0o644)
    done = run_heartbeat(fake_systemctl, "--url", url_of(server), "--auth-file", str(secret))
    assert done.returncode == 1 and Recorder.bodies == []
    assert done.stderr == (f"systemd-heartbeat: credentials {secret} are readable by group or others (mode 0644); "
                           "make them private: chmod 600, or a systemd credential\n")
    assert "do-not-print-me" not in done.stdout + done.stderr


def test_a_malformed_credentials_file_is_refused_without_echoing_it(fake_systemctl, tmp_path):
    secret = tmp_path / "otlp-auth"
    secret.write_text("token do-not-print-me\n")
    secret.chmod(0o600)
    done = run_heartbeat(fake_systemctl, "--auth-file", str(secret))
    assert done.returncode == 1 and "'Bearer <token>' or 'Basic <user>:<password>'" in done.stderr
    assert "do-not-print-me" not in done.stderr


@pytest.fixture()
def tls_server(tmp_path):
    """An https endpoint on loopback with a certificate from a throwaway CA."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    Recorder.bodies, Recorder.authorizations = [], []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"https://localhost:{httpd.server_address[1]}/opentelemetry/v1/metrics", tmp_path / "ca.pem"
    httpd.shutdown()


def test_https_is_verified_against_the_ca_file(fake_systemctl, tls_server):
    url, ca = tls_server
    done = run_heartbeat(fake_systemctl, "--url", url, "--ca-file", str(ca))
    assert (done.returncode, done.stderr) == (0, "") and len(Recorder.bodies) == 1


def test_https_with_an_unknown_ca_is_refused(fake_systemctl, tls_server):
    url, _ = tls_server
    done = run_heartbeat(fake_systemctl, "--url", url)
    assert done.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in done.stderr and Recorder.bodies == []


def test_no_series_has_a_staleness_marker_and_a_value_in_one_push(fake_systemctl, server, tmp_path):
    """The spool's own series were added after the markers were computed: every tick after the
    first with a state directory sent systemd_heartbeat_spooled_payloads twice, stale and 0."""
    state = tmp_path / "state"
    state.mkdir()
    assert run_heartbeat(fake_systemctl, "--state-dir", str(state), "--url", url_of(server),
                         "--unit", "first.service").returncode == 0
    done = run_heartbeat(fake_systemctl, "--state-dir", str(state), "--dry-run", "--unit", "other.service")
    series = [line.split(" ")[0] for line in done.stdout.splitlines()]
    stale = {line.split(" ")[0] for line in done.stdout.splitlines() if " stale" in line}
    assert len(series) == len(set(series)) and stale  # the first tick's units ended, once each
    assert not any(name.startswith("systemd_heartbeat_") for name in stale)


def test_a_state_file_that_hangs_two_ticks_is_set_aside_by_the_third(fake_systemctl, tmp_path):
    """A state file marshal takes unbounded time to build (a set holding a tuple whose tree has
    2**45 leaves, 287 bytes, behind a valid CRC: no deadline or address-space cap can stop it)
    hangs the tick until systemd kills it (TimeoutStartSec=). The next tick finds the killed
    tick's loading mark and tries once more (a SIGTERM at shutdown while loading must not cost
    the history); killed again, the third sets the file aside, says so, and runs."""
    import marshal
    import struct
    import zlib

    shared = ()
    for _ in range(45):
        shared = (shared, shared)
    bomb = bytearray(marshal.dumps([shared]))
    bomb[0] = (bomb[0] & 0x80) | ord("<")  # the list becomes a set: its element gets hashed
    state = tmp_path / "state"
    state.mkdir()
    (state / "last-push.marshal").write_bytes(struct.pack("<I", zlib.crc32(bytes(bomb))) + bomb)
    argv = [sys.executable, str(HEARTBEAT), "--state-dir", str(state), "--url", "http://127.0.0.1:9/v1"]
    for _ in range(2):
        with pytest.raises(subprocess.TimeoutExpired):  # as systemd would, it kills the hung tick
            subprocess.run(argv, env=fake_systemctl, capture_output=True, timeout=2)
        assert (state / "loading").exists()
        assert (state / "last-push.marshal").exists()
    done = subprocess.run(argv, env=fake_systemctl, capture_output=True, text=True, timeout=20)
    assert done.returncode == 1, done.stderr  # nothing listens on port 9: spooled
    assert "the last two ticks died while loading last-push.marshal" in done.stderr
    assert (state / "last-push.marshal.set-aside").read_bytes()[4:] == bomb
    assert not (state / "loading").exists() and not (state / "loading-again").exists()
    again = subprocess.run(argv, env=fake_systemctl, capture_output=True, text=True, timeout=20)
    assert again.returncode == 1 and "died while loading" not in again.stderr, again.stderr


def test_a_tick_killed_after_loading_costs_only_itself(fake_systemctl, tmp_path):
    """SIGKILL and SIGTERM (shutdown, systemd's TimeoutStartSec=) at any moment after the load:
    the state file stays as the last complete tick wrote it, so the next tick keeps every
    remembered series and record."""
    import signal

    state = tmp_path / "state"
    argv = [sys.executable, str(HEARTBEAT), "--state-dir", str(state), "--url", "http://127.0.0.1:9/v1"]
    subprocess.run(argv, env=fake_systemctl, capture_output=True, timeout=20)
    slow_tools = FakeTools(tmp_path / "slow", default_units(), {"show": {"sleep": 5}})
    slow = dict(fake_systemctl, PATH=f"{tmp_path / 'slow'}:{os.environ['PATH']}")  # killed while it waits
    for kill in (signal.SIGKILL, signal.SIGTERM):
        remembered = (state / "last-push.marshal").read_bytes()
        child = subprocess.Popen(argv, env=slow, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        child.send_signal(kill)
        child.wait(10)
        slow_tools.kill_all()
        assert (state / "last-push.marshal").read_bytes() == remembered
        assert not (state / "loading").exists()
        after = subprocess.run(argv, env=fake_systemctl, capture_output=True, text=True, timeout=20)
        assert "set aside" not in after.stderr and "cannot be used" not in after.stderr, after.stderr


def test_a_run_that_cannot_have_the_state_directory_leaves_it_alone(fake_systemctl, tmp_path):
    """Another run holds the directory's lock past half of this run's deadline: one line, exit 1,
    nothing read, written or pushed."""
    state = tmp_path / "state"
    state.mkdir()
    argv = [sys.executable, str(HEARTBEAT), "--state-dir", str(state), "--url", "http://127.0.0.1:9/v1"]
    subprocess.run(argv, env=fake_systemctl, capture_output=True, timeout=20)
    before = sorted((p.name, p.read_bytes()) for p in state.iterdir() if p.is_file())
    holder = os.open(state / "lock", os.O_RDWR)
    try:
        os.lockf(holder, os.F_LOCK, 0)
        started = time.monotonic()
        done = subprocess.run(argv + ["--timeout", "1"], env=fake_systemctl, capture_output=True, text=True, timeout=20)
        waited = time.monotonic() - started
    finally:
        os.close(holder)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "another run holds the state directory" in done.stderr
    assert 0.5 <= waited < 3.5  # half its deadline, then it gives up
    assert sorted((p.name, p.read_bytes()) for p in state.iterdir() if p.is_file()) == before


def test_a_dry_run_reads_the_state_directory_and_writes_nothing(fake_systemctl, tmp_path):
    """--dry-run with --state-dir shows the remembered history, and leaves the directory exactly
    as it was: no lock file, no loading mark, a file it cannot use not set aside."""
    state = tmp_path / "state"
    state.mkdir()
    argv = [sys.executable, str(HEARTBEAT), "--state-dir", str(state)]
    subprocess.run(argv + ["--url", "http://127.0.0.1:9/v1"], env=fake_systemctl, capture_output=True, timeout=20)
    (state / "lock").unlink()
    before = sorted((p.name, p.stat().st_mtime_ns) for p in state.rglob("*"))
    shown = subprocess.run(argv + ["--dry-run"], env=fake_systemctl, capture_output=True, text=True, timeout=20)
    assert shown.returncode == 0 and "systemd_unit_last_failure_timestamp_seconds{" in shown.stdout, shown.stderr
    (state / "last-push.marshal").write_bytes(b"not a state file")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in state.rglob("*"))
    bad = subprocess.run(argv + ["--dry-run"], env=fake_systemctl, capture_output=True, text=True, timeout=20)
    assert bad.returncode == 0 and "cannot be used" in bad.stderr and "set aside" not in bad.stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in state.rglob("*")) == before

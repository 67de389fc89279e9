#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The local lab: real systemd hosts in systemd-nspawn, VictoriaMetrics and Alertmanager on loopback.

    python3 lab/lab.py up [--hosts N] [--first K] [--trixie M]
                                                     boot hosts K..K+N-1 (default 1..2), Debian 13
                                                     hosts 1..M (default none), VictoriaMetrics
                                                     and Alertmanager; idempotent
    python3 lab/lab.py stop HOST...                  stop and remove some hosts
    python3 lab/lab.py down                          stop everything, remove the hosts; idempotent
    python3 lab/lab.py status                        what runs
    python3 lab/lab.py ssh HOST [CMD]                a shell (or a command) on a lab host, over SSH

Each host is a copy of a cached debootstrap'ed Debian 12 rootfs, booted with systemd as
PID 1, named lab-host1, lab-host2, ..., with sshd on 127.0.0.1:2201, 2202, ... (key only).
Debian 13 hosts (systemd 257, Python 3.13, dbus-broker as the system bus), for checking the
heartbeat on the next release, are copies of a Debian 13 rootfs named lab-trixie1, ... with
sshd on 127.0.0.1:2301, ...; they boot only when asked for (--trixie).
The hosts share the machine's network, so VictoriaMetrics on 127.0.0.1:30428 is at the same
address from inside, as it is on kai-server (a k3s NodePort); Alertmanager listens on
127.0.0.1:9093. Everything binds to loopback.

Needs root (systemd-nspawn). Installs what it needs with apt on first use; the rootfs and
the VictoriaMetrics binaries are cached in $SYSTEMD_MONITORING_LAB_CACHE.
Standard library only, so tests and the benchmark import it as a helper.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CACHE = Path(os.environ.get("SYSTEMD_MONITORING_LAB_CACHE", "/var/cache/systemd-monitoring-lab"))
RUN = Path(os.environ.get("SYSTEMD_MONITORING_LAB_DIR", "/var/lib/systemd-monitoring-lab"))
TOOLS = CACHE / "debian-trixie"  # victoria-metrics, vmalert, vmalert-tool, alertmanager
NSPAWN_RUNTIME = Path("/run/systemd/nspawn")
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
ROOTFS_PACKAGES = "systemd,systemd-sysv,dbus,python3,openssh-server,iproute2"
MACHINE_PACKAGES = ("systemd-container", "debootstrap", "openssh-client", "iproute2")
# Debian 13 ships VictoriaMetrics 1.112 (OTLP ingestion needs >= 1.97.3) and Alertmanager 0.28.
TOOL_PACKAGES = ("victoria-metrics", "prometheus-alertmanager")
SSH_PORT_BASE = 2200
VM_PORT = 30428
ALERTMANAGER_PORT = 9093
# molecule's own Alertmanager (molecule/default): its alerts resolve on its vmalert's windows alone,
# whatever else evaluates the lab's VictoriaMetrics (the vmalert scripts/demo deploys on lab-host1
# notifies ALERTMANAGER_PORT with the role's default windows)
MOLECULE_ALERTMANAGER_PORT = 9095
# the lab tests' own, for the vmalerts they start (tests/helpers.scoped_vmalert), for the same reason
TESTS_ALERTMANAGER_PORT = 9096
HOST_PREFIX = "lab-host"
TRIXIE_PREFIX = "lab-trixie"
# What a host runs, by its name's prefix: (Debian suite, debootstrap --include, SSH port base).
# Debian 13 gets dbus-broker, its alternative system bus, so the heartbeat's D-Bus client is
# checked against both bus implementations (Debian 12 only has dbus-daemon).
HOST_KINDS = {
    HOST_PREFIX: ("bookworm", ROOTFS_PACKAGES, SSH_PORT_BASE),
    TRIXIE_PREFIX: ("trixie", "systemd,systemd-sysv,dbus-broker,python3,openssh-server,iproute2", 2300),
}
SYSTEMCTL_READY = ("running", "degraded")


class LabError(Exception):
    pass


def log(message: str) -> None:
    print(f"lab: {message}", file=sys.stderr, flush=True)


def run(argv, check=True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, text=True, **kwargs)


# ------------------------------------------------------------------ installation, cached

def ensure_machine_packages() -> None:
    missing = [p for p in MACHINE_PACKAGES
               if run(["dpkg-query", "-W", "-f=${Status}", p], check=False,
                      capture_output=True).stdout != "install ok installed"]
    if missing:
        log(f"apt-get install {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        run(["apt-get", "install", "-y", "-qq", *missing], env=env, stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def cache_lock(name: str):
    """One builder at a time per cache entry: two lab commands (or test sessions) started
    together on a fresh machine would otherwise debootstrap into the same partial tree."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def remove_tree(path: Path) -> None:
    """rm -r that first unmounts what an interrupted debootstrap left mounted inside (its /proc,
    /sys, maybe a bind of /dev): rmtree would walk into them, fail, and leave the tree behind."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        run(["umount", "-l", mount], check=False)
    shutil.rmtree(path, ignore_errors=True)


def ensure_rootfs(kind: str = HOST_PREFIX) -> Path:
    """debootstrap once per suite; later runs copy the cached tree (about 50 s the first time)."""
    suite, packages, _ = HOST_KINDS[kind]
    rootfs = CACHE / f"rootfs-{suite}"
    if (rootfs / "usr/bin/python3").exists():
        return rootfs
    ensure_machine_packages()
    with cache_lock(f"rootfs-{suite}"):
        if (rootfs / "usr/bin/python3").exists():  # built while we waited for the lock
            return rootfs
        partial = CACHE / f"rootfs-{suite}.partial"
        remove_tree(partial)
        log(f"debootstrap {suite} into {rootfs} (once)")
        with open(CACHE / f"debootstrap-{suite}.log", "w") as out:
            run(["debootstrap", "--variant=minbase", f"--include={packages}", suite,
                 str(partial), DEBIAN_MIRROR], stdout=out, stderr=subprocess.STDOUT)
        partial.rename(rootfs)
    return rootfs


def unpack_from_suite(suite: str, packages: tuple[str, ...], into: Path) -> None:
    """Download Debian packages from another suite and unpack them under into/root.

    apt uses a private sources list and state under `into`, so the machine's own apt
    configuration is never touched (works on Debian 12 and 13).
    """
    apt = into / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "sources.d"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(f"deb {DEBIAN_MIRROR} {suite} main\n")
    options = ["-o", f"Dir::Etc::SourceList={apt}/sources.list",
               "-o", f"Dir::Etc::SourceParts={apt}/sources.d",
               "-o", f"Dir::State::Lists={apt}/lists", "-o", f"Dir::Cache={apt}/cache",
               "-o", "APT::Sandbox::User=root"]
    log(f"fetching {', '.join(packages)} from Debian {suite} (once)")
    run(["apt-get", *options, "update", "-qq"], stdout=subprocess.DEVNULL)
    debs = into / "debs"
    shutil.rmtree(debs, ignore_errors=True)
    debs.mkdir(parents=True)
    run(["apt-get", *options, "download", *packages], cwd=debs, stdout=subprocess.DEVNULL)
    for deb in sorted(debs.glob("*.deb")):
        run(["dpkg-deb", "-x", str(deb), str(into / "root")])


def ensure_tools() -> Path:
    """Debian 13's victoria-metrics and prometheus-alertmanager, unpacked into the cache."""
    bindir = TOOLS / "root/usr/bin"
    wanted = ("victoria-metrics", "vmalert", "vmalert-tool", "prometheus-alertmanager")
    if not all((bindir / b).exists() for b in wanted):
        unpack_from_suite("trixie", TOOL_PACKAGES, TOOLS)
    return bindir


def tool(name: str) -> str:
    return str(ensure_tools() / name)


PEERS = CACHE / "debian-sid"  # prometheus-systemd-exporter (only in sid) and node_exporter, for benchmarks
PEER_PACKAGES = ("prometheus-systemd-exporter", "prometheus-node-exporter")


def peer(name: str) -> str:
    """A peer exporter's binary from Debian unstable (static Go: runs on Debian 12)."""
    binary = PEERS / "root/usr/bin" / name
    if not binary.exists():
        unpack_from_suite("sid", PEER_PACKAGES, PEERS)
    return str(binary)


# ------------------------------------------------------------------ hosts

def host_names(count: int, first: int = 1, kind: str = HOST_PREFIX) -> list[str]:
    return [f"{kind}{i}" for i in range(first, first + count)]


def host_kind(host: str) -> str:
    """The prefix of a lab host's name (HOST_KINDS), which says what it runs."""
    for kind in HOST_KINDS:
        if host.startswith(kind) and host[len(kind):].isdigit():
            return kind
    raise LabError(f"not a lab host name: {host!r}")


def ssh_port(host: str) -> int:
    kind = host_kind(host)
    return HOST_KINDS[kind][2] + int(host[len(kind):])


def host_dir(host: str) -> Path:
    return RUN / "hosts" / host


def nspawn_pid(host: str) -> int | None:
    try:
        pid = int((host_dir(host) / "nspawn.pid").read_text())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"systemd-nspawn" in cmdline else None


def leader_pid(host: str) -> int | None:
    """PID of the container's systemd (PID 1 inside), the target for nsenter."""
    pid = nspawn_pid(host)
    if pid is None:
        return None
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        if children:
            return int(children[0])
    return None


def inside(host: str, argv, check=True, timeout=60, **kwargs) -> subprocess.CompletedProcess:
    """Run a command inside a lab host (setup and inspection; tests use SSH for the real path)."""
    leader = leader_pid(host)
    if leader is None:
        raise LabError(f"{host} is not running")
    return run(["nsenter", "-t", str(leader), "-a", *argv], check=check, timeout=timeout,
               capture_output=True, **kwargs)


def key_path() -> Path:
    key = RUN / "id_ed25519"
    if not key.exists():
        RUN.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "systemd-monitoring-lab",
             "-f", str(key)])
    return key


def prepare_rootfs(host: str) -> Path:
    """A fresh copy of the cached rootfs with its own hostname and SSH port, key-only."""
    root = host_dir(host) / "root"
    if root.exists():
        return root
    partial = host_dir(host) / "root.partial"
    shutil.rmtree(partial, ignore_errors=True)
    host_dir(host).mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", "--reflink=auto", str(ensure_rootfs(host_kind(host))), str(partial)])
    (partial / "etc/hostname").write_text(host + "\n")
    (partial / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {host}\n")
    (partial / "etc/ssh/sshd_config.d/lab.conf").write_text(
        f"Port {ssh_port(host)}\nListenAddress 127.0.0.1\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUseDNS no\n")
    ssh_dir = partial / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(Path(str(key_path()) + ".pub").read_text())
    (ssh_dir / "authorized_keys").chmod(0o600)
    if not list((partial / "etc/ssh").glob("ssh_host_*_key")):
        run(["ssh-keygen", "-A", "-f", str(partial)])
    # Units like kai-server's, so the quickstart has something real to watch.
    install_stand_in_units(partial)
    partial.rename(root)
    return root


# Stand-ins for kai-server's load-bearing units (inventory/group_vars), so the lab looks like
# the real box: long-running services, and timer-driven oneshot jobs with their timers.
STAND_IN_SERVICES = ("repo-recall", "claude-remote-control", "k3s", "eco-server", "factorio-server",
                     "icarus-server", "core-keeper-server")
STAND_IN_JOBS = {  # job -> its [Timer] schedule
    "coily-audit-dashboard": "OnBootSec=10s\nOnUnitActiveSec=2min",
    "coily-update": "OnBootSec=20s\nOnUnitActiveSec=5min",
    "repo-recall-update": "OnBootSec=30s\nOnUnitActiveSec=10min",
    "claude-remote-control-restart": "OnCalendar=hourly",
}


def stand_in_units() -> dict[str, str]:
    units = {}
    for name in STAND_IN_SERVICES:
        units[f"{name}.service"] = ("[Unit]\nDescription=Lab stand-in for kai-server's " + name + "\n"
                                    "[Service]\nExecStart=/bin/sleep infinity\nRestart=on-failure\n"
                                    "[Install]\nWantedBy=multi-user.target\n")
    for name, schedule in STAND_IN_JOBS.items():
        units[f"{name}.service"] = ("[Unit]\nDescription=Lab stand-in for kai-server's " + name + " job\n"
                                    "[Service]\nType=oneshot\nExecStart=/bin/true\n")
        units[f"{name}.timer"] = ("[Unit]\nDescription=Lab stand-in timer\n[Timer]\n" + schedule +
                                  "\nAccuracySec=1s\n[Install]\nWantedBy=timers.target\n")
    return units


def install_stand_in_units(root: Path) -> None:
    unit_dir = root / "etc/systemd/system"
    for name, text in stand_in_units().items():
        (unit_dir / name).write_text(text)
        if "[Install]" in text:
            target = "timers.target" if name.endswith(".timer") else "multi-user.target"
            wants = unit_dir / f"{target}.wants"
            wants.mkdir(exist_ok=True)
            link = wants / name
            if not link.is_symlink():
                link.symlink_to(f"/etc/systemd/system/{name}")


def ensure_nspawn_runtime() -> None:
    """nspawn refuses to boot on a machine whose PID 1 is not systemd without this tmpfs."""
    if run(["mountpoint", "-q", str(NSPAWN_RUNTIME)], check=False).returncode != 0:
        NSPAWN_RUNTIME.mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(NSPAWN_RUNTIME)])
        (RUN / "mounted-nspawn-runtime").write_text("1\n")


# The cgroup hierarchies a container's systemd keeps its units in (v1 name=systemd and the
# unified v2 one, on these machines).
CGROUP_HIERARCHIES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))


def host_cgroups(host: str) -> list[Path]:
    """A cgroup of the host's own in each hierarchy. With --keep-unit, nspawn puts its container
    in `payload` below its own cgroup; started from one cgroup, every lab host's systemd would
    share /payload/system.slice/, and a unit of the same name on two hosts would be one cgroup:
    one host's systemd removed it under the other's next start (status 219/CGROUP, "Failed to
    attach to cgroup ... No such file or directory") or killed what was in it."""
    # a top-level cgroup named after the host: lab-... names no cgroup of the machine's own
    return [hierarchy / host for hierarchy in CGROUP_HIERARCHIES if (hierarchy / "cgroup.procs").is_file()]


def enter_cgroups(cgroups: list[Path]) -> None:
    """In the child, before nspawn runs: move it into the host's own cgroups."""
    for cgroup in cgroups:
        (cgroup / "cgroup.procs").write_text(f"{os.getpid()}\n")


def remove_cgroups(host: str) -> None:
    """The host's cgroups, deepest first, once its processes are gone (best effort)."""
    for top in host_cgroups(host):
        for directory, _subdirectories, _files in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(directory)


def boot(host: str) -> None:
    if nspawn_pid(host) is not None:
        return
    root = prepare_rootfs(host)
    ensure_nspawn_runtime()
    remove_cgroups(host)  # what an earlier boot of this host left: its systemd starts afresh
    cgroups = host_cgroups(host)
    for cgroup in cgroups:
        cgroup.mkdir(exist_ok=True)
    console = open(host_dir(host) / "console.log", "ab")
    # --console=read-only: the console is drained into a file; with "passive" nobody reads
    # it and, once its buffer fills, PID 1 blocks and every systemctl call hangs.
    process = subprocess.Popen(
        ["systemd-nspawn", "--register=no", "--keep-unit", "-q", "-D", str(root), "-M", host,
         "-b", "--console=read-only"],
        stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: enter_cgroups(cgroups))
    (host_dir(host) / "nspawn.pid").write_text(f"{process.pid}\n")


def wait_ready(host: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    state = "not started"
    while time.monotonic() < deadline:
        if leader_pid(host) is not None:
            answer = inside(host, ["systemctl", "is-system-running"], check=False, timeout=10)
            state = answer.stdout.strip()
            if state in SYSTEMCTL_READY and ssh(host, ["true"], check=False).returncode == 0:
                return
        time.sleep(0.5)
    raise LabError(f"{host} not ready after {timeout:g} s (systemd: {state}); "
                   f"see {host_dir(host) / 'console.log'}")


def ssh_options(host: str) -> list[str]:
    return ["-i", str(key_path()), "-p", str(ssh_port(host)), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"]


def ssh(host: str, argv, check=True, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    import shlex

    command = argv if isinstance(argv, str) else shlex.join(argv)
    return run(["ssh", *ssh_options(host), "root@127.0.0.1", command], check=check,
               timeout=timeout, capture_output=True, **kwargs)


def stop_host(host: str) -> None:
    pid = nspawn_pid(host)
    if pid is not None:
        leader = leader_pid(host)
        os.kill(pid, signal.SIGTERM)  # nspawn asks the container's systemd to power off
        if not wait_gone(pid, 20) and leader is not None:
            os.kill(leader, signal.SIGKILL)  # a hung PID 1 ends the whole container
            wait_gone(pid, 10)
    remove_cgroups(host)
    shutil.rmtree(host_dir(host), ignore_errors=True)


def reboot(host: str) -> None:
    """Power a host off and boot it again from the same root filesystem: what was installed on
    it stays, its service manager and every unit start anew (a real reboot, as systemd sees it)."""
    pid = nspawn_pid(host)
    if pid is None:
        raise LabError(f"{host} is not running")
    leader = leader_pid(host)
    os.kill(pid, signal.SIGTERM)  # nspawn asks the container's systemd to power off
    if not wait_gone(pid, 30) and leader is not None:
        os.kill(leader, signal.SIGKILL)
        wait_gone(pid, 10)
    boot(host)
    wait_ready(host)


def wait_until(what: str, predicate, timeout: float, step: float = 0.5):
    """Poll predicate until it returns something true (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    return False


# ------------------------------------------------------------------ VictoriaMetrics

def start_victoriametrics(name: str, port: int, *flags: str) -> str:
    """Start (or find running) a VictoriaMetrics on 127.0.0.1:port; returns its base URL."""
    url = f"http://127.0.0.1:{port}"
    piddir = RUN / "services" / name
    pid = read_pid(piddir / "pid")
    if pid is not None and healthy(url):
        return url
    binary = tool("victoria-metrics")
    piddir.mkdir(parents=True, exist_ok=True)
    log_file = open(piddir / "log", "ab")
    process = subprocess.Popen(
        [binary, f"-storageDataPath={piddir / 'data'}", f"-httpListenAddr=127.0.0.1:{port}",
         # the default 30 s offset hides the newest samples from queries
         "-search.latencyOffset=0s", "-loggerLevel=WARN", *flags],
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    (piddir / "pid").write_text(f"{process.pid}\n")
    wait_healthy(url, process, piddir / "log")
    return url


def healthy(url: str, path: str = "/health") -> bool:
    try:
        with urllib.request.urlopen(f"{url}{path}", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def wait_healthy(url: str, process, log_path: Path, timeout: float = 30, path: str = "/health") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url, path):
            return
        if process.poll() is not None:
            raise LabError(f"{url} exited with {process.returncode}; see {log_path}")
        time.sleep(0.2)
    raise LabError(f"{url} not healthy after {timeout:g} s; see {log_path}")


ALERTMANAGER_CONFIG = """# The lab's Alertmanager: keeps alerts for its API; sends them nowhere.
route:
  receiver: lab
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: lab
"""


def start_alertmanager(port: int = ALERTMANAGER_PORT, name: str = "alertmanager") -> str:
    """Debian's prometheus-alertmanager on 127.0.0.1:port (or find it running), clustering off
    (it binds 0.0.0.0 otherwise); `name` is its directory under services/."""
    url = f"http://127.0.0.1:{port}"
    piddir = RUN / "services" / name
    pid = read_pid(piddir / "pid")
    if pid is not None and healthy(url, "/-/healthy"):
        return url
    binary = tool("prometheus-alertmanager")
    # Debian builds Alertmanager to read its notification templates from a fixed path; the
    # package was only unpacked into the cache, so put the templates where it looks.
    templates = Path("/usr/share/prometheus/alertmanager")
    for template in (TOOLS / "root" / templates.relative_to("/")).glob("*.tmpl"):
        if not (templates / template.name).exists():
            templates.mkdir(parents=True, exist_ok=True)
            shutil.copy(template, templates / template.name)
    piddir.mkdir(parents=True, exist_ok=True)
    (piddir / "alertmanager.yml").write_text(ALERTMANAGER_CONFIG)
    log_file = open(piddir / "log", "ab")
    process = subprocess.Popen(
        [binary, f"--config.file={piddir / 'alertmanager.yml'}", f"--storage.path={piddir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    (piddir / "pid").write_text(f"{process.pid}\n")
    wait_healthy(url, process, piddir / "log", path="/-/healthy")
    return url


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def stop_service(name: str, keep_data: bool = False) -> None:
    """Stop a lab service; its directory (and data) goes too unless keep_data."""
    piddir = RUN / "services" / name
    pid = read_pid(piddir / "pid")
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        if not wait_gone(pid, 15):
            os.kill(pid, signal.SIGKILL)
            wait_gone(pid, 5)
    if not keep_data:
        shutil.rmtree(piddir, ignore_errors=True)


def running_hosts() -> list[str]:
    base = RUN / "hosts"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if nspawn_pid(p.name) is not None)


# ------------------------------------------------------------------ commands

def up(count: int, first: int = 1, trixie: int = 0) -> list[str]:
    """Boot lab-host{first..first+count-1} and lab-trixie{1..trixie}, VictoriaMetrics, Alertmanager."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (systemd-nspawn, mount)")
    ensure_machine_packages()
    hosts = host_names(count, first) + host_names(trixie, kind=TRIXIE_PREFIX)
    ensure_downloads({host_kind(host) for host in hosts})
    key_path()
    url = start_victoriametrics("victoria-metrics", VM_PORT)
    alertmanager = start_alertmanager()
    for host in hosts:
        boot(host)
    for host in hosts:
        wait_ready(host)
    log(f"up: {', '.join(f'{h} (ssh 127.0.0.1:{ssh_port(h)})' for h in hosts)}; "
        f"VictoriaMetrics {url}; Alertmanager {alertmanager}; Ansible inventory: inventory/lab.yml")
    return hosts


def ensure_downloads(kinds) -> None:
    """The rootfs of each kind of host and the tools, side by side: on a fresh machine each is
    mostly waiting on the mirror, so two debootstraps together take little longer than one."""
    with concurrent.futures.ThreadPoolExecutor() as pool:
        jobs = [pool.submit(ensure_rootfs, kind) for kind in sorted(kinds)] + [pool.submit(ensure_tools)]
        for job in jobs:
            job.result()


def down() -> None:
    hosts_root = RUN / "hosts"
    if hosts_root.is_dir():
        for path in sorted(hosts_root.iterdir()):
            stop_host(path.name)
    services = RUN / "services"
    if services.is_dir():
        for path in sorted(services.iterdir()):
            stop_service(path.name)
    marker = RUN / "mounted-nspawn-runtime"
    if marker.exists():
        if run(["mountpoint", "-q", str(NSPAWN_RUNTIME)], check=False).returncode == 0:
            run(["umount", str(NSPAWN_RUNTIME)], check=False)
        marker.unlink()
    log("down: no lab hosts or services left running")


def status() -> int:
    hosts = running_hosts()
    for host in hosts:
        state = inside(host, ["systemctl", "is-system-running"], check=False).stdout.strip()
        print(f"{host}: systemd {state}, ssh 127.0.0.1:{ssh_port(host)}")
    services = RUN / "services"
    for path in sorted(services.iterdir()) if services.is_dir() else ():
        print(f"{path.name}: pid {read_pid(path / 'pid') or 'not running'}")
    return 0 if hosts else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="lab", description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="boot the lab hosts and VictoriaMetrics")
    up_parser.add_argument("--hosts", type=int, default=2, help="how many hosts (default 2)")
    up_parser.add_argument("--first", type=int, default=1, help="number of the first host (default 1)")
    up_parser.add_argument("--trixie", type=int, default=0, help="how many Debian 13 hosts (default 0)")
    sub.add_parser("down", help="stop and remove everything the lab started")
    stop_parser = sub.add_parser("stop", help="stop and remove some hosts, leave the rest running")
    stop_parser.add_argument("hosts", nargs="+")
    sub.add_parser("status", help="what runs")
    alertmanager_parser = sub.add_parser("alertmanager", help="start (or find running) an Alertmanager of its own")
    alertmanager_parser.add_argument("--port", type=int, required=True)
    alertmanager_parser.add_argument("--name", required=True, help="its directory under services/ ('down' stops it)")
    ssh_parser = sub.add_parser("ssh", help="run a command on a lab host over SSH")
    ssh_parser.add_argument("host")
    ssh_parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            if not 1 <= args.hosts <= 50 or not 1 <= args.first <= 50 or not 0 <= args.trixie <= 50:
                raise LabError(f"--hosts and --first must be between 1 and 50 and --trixie between 0 and "
                               f"50, got {args.hosts}, {args.first}, {args.trixie}")
            up(args.hosts, args.first, args.trixie)
        elif args.command == "down":
            down()
        elif args.command == "stop":
            for host in args.hosts:
                host_kind(host)  # refuses anything but a lab host's name
                stop_host(host)
        elif args.command == "status":
            return status()
        elif args.command == "alertmanager":
            if not re.fullmatch(r"alertmanager-[a-z0-9-]+", args.name) or not 1024 <= args.port <= 65535:
                raise LabError(f"--name must be alertmanager-<lowercase letters, digits, dashes> and --port "
                               f"1024-65535, got {args.name!r}, {args.port}")
            log(f"{args.name}: {start_alertmanager(args.port, args.name)}")
        elif args.command == "ssh":
            return subprocess.call(["ssh", *ssh_options(args.host), "-t", "root@127.0.0.1",
                                    *args.cmd])
    except (LabError, subprocess.CalledProcessError) as error:
        print(f"lab: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: what a heartbeat tick costs the host as the role deploys it, next to the peers.

    sudo .venv/bin/python bench/deployed.py [--part all|headline|sandbox] [--sizes 12,200,1000]
                                            [--ticks 8] [--rounds 2] [--starts 10] [--keep]

A tick on a host is more than the heartbeat's process: the timer fires, systemd starts a
oneshot service, builds the sandbox the role asks for (namespaces, a read-only view of the
mounts, seccomp filters) in the service's process before the heartbeat runs, reaps it, logs.
So this measures from outside, on lab-host7 (booted for this, every timer of its own stopped,
stopped again at the end unless --keep), with the role's own files: the heartbeat package and
what the role's handlers build from it, its launcher, heartbeat.env, the allowlist,
systemd-heartbeat.service and .timer, all rendered from roles/systemd_monitoring/templates/
with the role's defaults and vars (bench/tick.py's render), the interval set to 2 s.

Whole-host CPU per collection = over windows of collections, the CPU of systemd (PID 1,
/proc/PID/task/*/schedstat, ns), of the processes systemd reaped (PID 1's cutime + cstime:
the service's process, its sandbox set-up before exec included), of dbus-daemon and of
systemd-journald, minus what the same processes spend idle in as long, divided by the
collections. Windows start and end right after a tick's process was reaped (PID 1's cminflt
moves), once systemd is quiet again. The peers, node_exporter's systemd collector and
systemd_exporter 0.7 (Debian unstable), run as services on the same host, scraped every 2 s
from outside, with gzip as Prometheus asks; their cost is the same sum plus all of the
exporter's threads (idle work between scrapes included: it is theirs). Everything is read
from the machine's /proc, so measuring costs the host nothing.

Two hosts in one: the bare lab host (39 mounts) and the same host with 300 more mounts laid
out like a k3s node's (per pod: a projected-token tmpfs, the container's overlay root, the
sandbox's /dev/shm tmpfs and its network namespace file), all shared like kubelet's.

--part sandbox (about 4 min): /bin/true as a timer-started oneshot (User= the heartbeat's
  user), plain, with each sandbox directive (or group) of the role, with alternatives, and with
  each of the role's profiles, STARTS starts each on both mount tables: CPU per start above
  plain, whether the service got a mount namespace of its own, and `systemd-analyze security`
  of the role's unit with the directive taken out of the default, or added to it.
--part headline (about 11 min): at each size N (units bench-NNNN as bench/peers.py loads
  them: oneshot services that stay active, one in ten failed, one in ten a timer; the heartbeat
  allowlists exactly them, the exporters match 'bench-.+'), on both mount tables, the heartbeat
  with each profile of systemd_monitoring_sandbox and both exporters, TICKS collections each in
  ROUNDS rounds in which every tool takes its turn; at the smallest N on the bare table also the
  default with NOT_LOADED more allowlisted names that systemd does not keep loaded.

Prints Markdown for BENCHMARKS.md; raw numbers to bench/results/deployed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
sys.path.insert(0, str(ROOT / "bench"))
import lab  # noqa: E402
import tick  # noqa: E402
from peers_harness import exporter_argv  # noqa: E402

HOST = "lab-host7"  # a host of its own: lab-host1..6 and lab-trixie1 belong to the demo, tests and other benches
INTERVAL = 2  # s, the timer's and the scrapes'
K3S_MOUNTS = 300
K3S_ROOTS = ("/var/lib/kubelet", "/run/k3s", "/run/netns", "/var/lib/rancher")
# not bench/peers.py's 19xxx: every lab host shares the machine's network
PORTS = {"node_exporter": 29100, "systemd_exporter": 29558}
# (not named bench-*: the exporters report what matches bench-.+, the units measured)
EXPORTER_UNITS = {"node_exporter": "peer-node-exporter", "systemd_exporter": "peer-systemd-exporter"}
PROBE = "sandbox-probe"  # the /bin/true service of the sandbox part
CLOCK_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
COMPONENTS = ("systemd", "service processes", "dbus-daemon", "journald")


# ------------------------------------------------------------------ the host

def sh(script: str, timeout: float = 600) -> str:
    """A shell script inside HOST (nsenter: no SSH session, nothing left behind in the host)."""
    return lab.inside(HOST, ["sh", "-euc", script], timeout=timeout).stdout


def host_root() -> Path:
    return lab.host_dir(HOST) / "root"


def role_files(**overrides) -> dict[str, str]:
    """The role's files for HOST, rendered from its templates with its defaults, vars and
    overrides: path on the host -> text."""
    values = tick.role_variables(**{"systemd_monitoring_interval": INTERVAL, "inventory_hostname": HOST,
                                    "systemd_monitoring_host_label": "bench-deployed", **overrides})
    templates = ROOT / tick.ROLE / "templates"
    unit_dir = values["_systemd_monitoring_unit_dir"]
    targets = {"allowlist.j2": values["_systemd_monitoring_allowlist"],
               "heartbeat.env.j2": values["_systemd_monitoring_environment"],
               f"{values['_systemd_monitoring_service']}.j2": f"{unit_dir}/{values['_systemd_monitoring_service']}",
               f"{values['_systemd_monitoring_timer']}.j2": f"{unit_dir}/{values['_systemd_monitoring_timer']}"}
    return {target: tick.render((templates / name).read_text(), values) for name, target in targets.items()}


def write_files(files: dict[str, str]) -> None:
    for path, text in files.items():
        target = host_root() / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def prepare() -> None:
    """Boot HOST, stop its timers, install the heartbeat where the role does (its user, package,
    launcher, settings, units; the timer not yet started) and the peers' binaries."""
    lab.up(1, first=int(HOST[len(lab.HOST_PREFIX):]))
    values = tick.role_variables()
    sh("systemctl stop $(systemctl list-units --type=timer --no-legend --plain | awk '{print $1}') || true\n"
       f"id {values['systemd_monitoring_user']} >/dev/null 2>&1 || useradd --system --shell /usr/sbin/nologin "
       f"--no-create-home --home-dir /nonexistent {values['systemd_monitoring_user']}\n"
       f"mkdir -p {values['_systemd_monitoring_config_dir']} /opt/bench/bin")
    tick.install_heartbeat(HOST, lib=values["_systemd_monitoring_lib_dir"],
                           launcher=values["_systemd_monitoring_launcher"])
    for name in ("prometheus-node-exporter", "prometheus-systemd-exporter"):
        lab.run(["cp", lab.peer(name), str(host_root() / "opt/bench/bin" / name)])


def k3s_mounts(present: bool) -> int:
    """Lay out (or take away) K3S_MOUNTS mounts like a k3s node's in HOST's mount table, shared
    (kubelet makes its directory rshared); the number of mounts HOST has then."""
    if present:
        k3s_mounts(False)  # from a bare table, whatever an interrupted run left
        sh(f"""
mkdir -p /var/lib/kubelet /var/lib/rancher/k3s/agent/containerd/snapshots /run/netns
mount --bind /var/lib/kubelet /var/lib/kubelet
mount --make-private /var/lib/kubelet
mount --make-rshared /var/lib/kubelet
for i in $(seq -w 1 {K3S_MOUNTS // 4}); do
  token=/var/lib/kubelet/pods/pod-$i/volumes/kubernetes.io~projected/kube-api-access-$i
  snapshot=/var/lib/rancher/k3s/agent/containerd/snapshots/$i
  task=/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io/container-$i
  shm=/run/k3s/containerd/io.containerd.grpc.v1.cri/sandboxes/sandbox-$i/shm
  mkdir -p $token $snapshot/fs $snapshot/work $task/rootfs $shm
  mount -t tmpfs -o size=1m tmpfs $token
  mount -t overlay overlay -o lowerdir=/usr/share,upperdir=$snapshot/fs,workdir=$snapshot/work $task/rootfs
  mount -t tmpfs -o size=64k shm $shm
  touch /run/netns/cni-$i && mount --bind /run/netns/cni-$i /run/netns/cni-$i
done""", timeout=300)
    else:
        for _ in range(3):  # a mount may go with its parent (propagation): retry what is left
            sh(f"findmnt -rn -o TARGET | grep -E '^({'|'.join(K3S_ROOTS)})(/|$)' | sort -r | "
               "while read -r target; do umount -l \"$target\" 2>/dev/null || true; done")
    time.sleep(3)  # systemd follows every mount with a .mount unit; let it settle
    return mount_count()


def mount_count() -> int:
    return len((Path(f"/proc/{lab.leader_pid(HOST)}/mountinfo")).read_text().splitlines())


# ------------------------------------------------------------------ measuring

def sched_ms(pid: int) -> float:
    """CPU time of the process's threads (ns resolution), in ms. A thread that ended is not
    counted (systemd starts a few short ones, to close files asynchronously)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                total += int(handle.read().split()[0])
        except FileNotFoundError:  # it ended meanwhile
            pass
    return total / 1e6


def stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on


class Meter:
    """Counters of HOST's processes that a collection makes work, read from outside (the
    machine's /proc), so reading them costs the host nothing."""

    def __init__(self):
        self.leader = lab.leader_pid(HOST)
        children = Path(f"/proc/{self.leader}/task/{self.leader}/children").read_text().split()
        comms = {Path(f"/proc/{pid}/comm").read_text().strip(): int(pid) for pid in children}
        self.daemons = {"dbus-daemon": comms["dbus-daemon"], "journald": comms["systemd-journal"]}

    def reaped(self) -> int:
        """Grows whenever systemd reaps a child (its children's minor faults)."""
        return int(stat_fields(self.leader)[8])

    def children(self) -> set[str]:
        return set(Path(f"/proc/{self.leader}/task/{self.leader}/children").read_text().split())

    def sample(self) -> dict[str, float]:
        fields = stat_fields(self.leader)
        return {"time": time.monotonic(), "systemd": sched_ms(self.leader),
                "service processes": (int(fields[13]) + int(fields[14])) * CLOCK_TICK_MS,
                **{name: sched_ms(pid) for name, pid in self.daemons.items()}}

    def quiet(self, settle: float = 0.25) -> None:
        """Return once systemd has not run for more than 0.1 ms within SETTLE seconds."""
        while True:
            before = sched_ms(self.leader)
            time.sleep(settle)
            if sched_ms(self.leader) - before < 0.1:
                return

    def ticks(self, count: int, timeout: float = 120) -> dict[str, float]:
        """Wait for COUNT ticks of a timer-started service; the counters from right after the
        tick before them to right after the last (and a tick's number, in case another one
        ended before the host was quiet): no tick's process alive, systemd idle for 30 ms."""
        deadline = time.monotonic() + timeout

        def wait_reap(last: int) -> int:
            while (now := self.reaped()) == last:
                if time.monotonic() > deadline:
                    raise SystemExit(f"fewer than {count} ticks on {HOST} within {timeout:g} s")
                time.sleep(0.002)
            return now

        def settled(baseline: set[str]) -> bool:
            before = sched_ms(self.leader)
            time.sleep(0.03)
            return not (self.children() - baseline) and sched_ms(self.leader) - before < 0.05

        reaped = wait_reap(self.reaped())
        baseline = self.children()
        while not settled(baseline):
            reaped = wait_reap(reaped) if self.children() - baseline else reaped
        before, seen = self.sample(), 0
        while True:
            if time.monotonic() > deadline:
                raise SystemExit(f"{HOST} was never quiet after {count} ticks within {timeout:g} s")
            now = self.reaped()
            if now != reaped:
                reaped, seen = now, seen + 1
            if seen >= count and settled(baseline) and self.reaped() == reaped:
                after = self.sample()
                return {**difference(before, after), "ticks": seen}
            time.sleep(0.002)


def machine_pid(pid: int) -> int:
    """The machine's PID of a child of HOST's systemd known inside HOST as PID."""
    leader = lab.leader_pid(HOST)
    for child in Path(f"/proc/{leader}/task/{leader}/children").read_text().split():
        if re.search(r"^NSpid:.*\s(\d+)$", Path(f"/proc/{child}/status").read_text(), re.M)[1] == str(pid):
            return int(child)
    raise SystemExit(f"no process {pid} under {HOST}'s systemd")


def difference(before: dict, after: dict) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after}


def idle_rates(meter: Meter, seconds: float) -> dict[str, float]:
    """What the measured processes spend per second with nothing collecting."""
    for _ in range(5):
        meter.quiet()
        before, reaped = meter.sample(), meter.reaped()
        time.sleep(seconds)
        spent = difference(before, meter.sample())
        if meter.reaped() == reaped:  # nothing started and ended meanwhile
            return {name: spent[name] / spent["time"] for name in COMPONENTS}
    raise SystemExit(f"{HOST} is never idle: systemd keeps reaping processes")


def per_collection(windows: list[dict], idle: dict) -> dict:
    """Windows of one tool (summed) -> CPU per collection by process, the idle rate taken out; ms."""
    total = {key: sum(w[key] for w in windows) for key in windows[0] if isinstance(windows[0][key], (int, float))}
    count = total["collections"]
    out = {name: round((total[name] - idle[name] * total["time"]) / count, 2) for name in COMPONENTS}
    if "exporter" in total:
        out["exporter"] = round(total["exporter"] / count, 2)
    out["total"] = round(sum(out.values()), 2)
    out.update(collections=count, window_s=round(total["time"], 1), period_s=round(total["time"] / count, 2))
    for key in ("bytes", "rss_mb"):
        if key in windows[-1]:
            out[key] = windows[-1][key]
    return out


def timer_window(meter: Meter, ticks: int) -> dict:
    """TICKS ticks (or a few more) of a timer-started service: the counters' differences."""
    spent = meter.ticks(ticks)
    spent["collections"] = spent.pop("ticks")
    return spent


def scrape(port: int) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return len(answer.read())


def scrape_window(meter: Meter, name: str, scrapes: int) -> dict:
    """SCRAPES scrapes of the exporter every INTERVAL s (the window ends INTERVAL s after the
    last: the work it leaves for later, such as garbage collection, counts): the counters'
    differences, the exporter's own CPU, the last answer's size and what it holds in memory."""
    pid = machine_pid(int(sh(f"systemctl show -P MainPID {EXPORTER_UNITS[name]}")))
    meter.quiet()
    before, own = meter.sample(), sched_ms(pid)
    size = 0
    for _ in range(scrapes):
        started = time.monotonic()
        size = scrape(PORTS[name])
        time.sleep(max(0.0, INTERVAL - (time.monotonic() - started)))
    spent = difference(before, meter.sample())
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1]) / 1024
    return {**spent, "collections": scrapes, "exporter": sched_ms(pid) - own, "bytes": size, "rss_mb": round(rss, 1)}


# ------------------------------------------------------------------ what is measured

def start_timer(unit: str, files: dict[str, str]) -> None:
    write_files(files)
    sh(f"systemctl daemon-reload; systemctl reset-failed {unit}.service 2>/dev/null || true; "
       f"systemctl restart {unit}.timer")


def stop_timer(unit: str) -> None:
    sh(f"systemctl stop {unit}.timer; while systemctl is-active -q {unit}.service; do sleep 0.1; done")


def heartbeat_problems(since: str) -> str:
    """'' if every tick since SINCE (journalctl's --since) succeeded and said nothing (a tick
    that cannot read the bus or push says so on stderr); else what went wrong."""
    log = sh(f"journalctl -u systemd-heartbeat.service -o cat --no-pager --since='{since}'")
    result = sh("systemctl show -P Result systemd-heartbeat.service").strip()
    bad = [line for line in log.splitlines()
           if line.startswith("systemd-heartbeat:") or "Failed with result" in line or "Failed to start" in line]
    return "; ".join(bad[-3:] + [f"Result={result}"] * (result != "success")) if bad or result != "success" else ""


def heartbeat_window(meter: Meter, units: list[str], sandbox: str, ticks: int) -> dict:
    """The role's units with systemd_monitoring_sandbox=SANDBOX and the allowlist UNITS, the
    timer firing: TICKS ticks."""
    since = sh("date '+%Y-%m-%d %H:%M:%S'").strip()
    start_timer("systemd-heartbeat", role_files(systemd_monitoring_units=units, systemd_monitoring_sandbox=sandbox))
    spent = timer_window(meter, ticks)
    stop_timer("systemd-heartbeat")
    problem = heartbeat_problems(since)
    if problem:
        raise SystemExit(f"the heartbeat did not tick cleanly (sandbox {sandbox}): {problem}")
    return {**spent, "rss_mb": 0.0}  # a oneshot: nothing runs between ticks


def start_exporter(name: str) -> None:
    """NAME as a service on HOST, answering (its first scrape, which warms it up, done)."""
    argv = exporter_argv("/opt/bench/bin/prometheus-systemd-exporter", "/opt/bench/bin/prometheus-node-exporter",
                         "bench-.+", PORTS)[name]
    unit = EXPORTER_UNITS[name]
    sh(f"systemctl stop {unit} 2>/dev/null || true; systemctl reset-failed {unit} 2>/dev/null || true; "
       f"systemd-run -q --unit={unit} -p Type=exec {' '.join(argv)}")
    deadline = time.monotonic() + 30
    while True:
        try:
            scrape(PORTS[name])
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop_exporter(name: str) -> None:
    sh(f"systemctl stop {EXPORTER_UNITS[name]} 2>/dev/null || true")


# ------------------------------------------------------------------ the sandbox, directive by directive

EMPTY_ROOT = "/opt/bench/empty-root"  # for RootDirectory=: the merged-/usr symlinks and empty mount points
# What the role's default sets that needs no mount namespace, in groups (alone, each of these
# directives costs less than this method resolves, about 1 ms): the syscall filter (compiled by
# libseccomp at every start, for the native architecture only with SystemCallArchitectures=),
# the other seccomp filters and namespaces, and the rest.
SYSCALL_FILTER = ("SystemCallArchitectures=native", "SystemCallFilter=@system-service",
                  "SystemCallFilter=~@privileged @resources")
SECCOMP_AND_NAMESPACES = ("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "RestrictNamespaces=yes",
                          "LockPersonality=yes", "MemoryDenyWriteExecute=yes", "RestrictRealtime=yes",
                          "RestrictSUIDSGID=yes", "ProtectClock=yes", "ProtectHostname=yes")
CREDENTIALS = ("NoNewPrivileges=yes", "CapabilityBoundingSet=", "AmbientCapabilities=", "RemoveIPC=yes",
               "DevicePolicy=closed", "UMask=0077")
SYSCALL_DENY_LIST = ("SystemCallArchitectures=native", "SystemCallFilter=~@clock @cpu-emulation @debug @module "
                     "@mount @obsolete @privileged @raw-io @reboot @resources @swap")


def names(directives) -> str:
    return ", ".join(dict.fromkeys(d.split("=")[0] for d in directives))


# (label, directives, in the role's default?, what they stand in for): timed on /bin/true
ROWS = [
    ("PrivateUsers=yes", ("PrivateUsers=yes",), True, ()),
    ("the syscall filter: " + ", ".join(SYSCALL_FILTER), SYSCALL_FILTER, True, ()),
    (names(SECCOMP_AND_NAMESPACES), SECCOMP_AND_NAMESPACES, True, ()),
    (names(CREDENTIALS), CREDENTIALS, True, ()),
    *((directive, (directive,), False, ()) for directive in (
        "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes",
        "ProtectKernelTunables=yes", "ProtectKernelModules=yes", "ProtectKernelLogs=yes", "ProtectControlGroups=yes",
        "ProtectProc=invisible", "ProcSubset=pid")),
    # alternatives (none is in the role): cheaper filters, cheaper read-only views
    ("instead of the syscall filter, a deny list of the groups `systemd-analyze security` names",
     SYSCALL_DENY_LIST, False, SYSCALL_FILTER[1:]),
    ("PrivateMounts=yes (a mount namespace, nothing in it)", ("PrivateMounts=yes",), False, ()),
    ("ProtectSystem=full (/usr, /boot, /etc read-only)", ("ProtectSystem=full",), False, ()),
    ("InaccessiblePaths=/home", ("InaccessiblePaths=/home",), False, ()),
    ("TemporaryFileSystem=/:ro + BindReadOnlyPaths=/usr /lib /lib64",
     ("TemporaryFileSystem=/:ro", "BindReadOnlyPaths=/usr /lib /lib64"), False, ()),
    ("RootDirectory= (empty) + BindReadOnlyPaths=/usr, MountAPIVFS=no",
     (f"RootDirectory={EMPTY_ROOT}", "BindReadOnlyPaths=/usr", "MountAPIVFS=no"), False, ()),
    ("RootDirectory= (empty) + BindReadOnlyPaths=/usr, MountAPIVFS=yes",
     (f"RootDirectory={EMPTY_ROOT}", "BindReadOnlyPaths=/usr", "MountAPIVFS=yes"), False, ()),
]
NOISE = "plain again, last (its difference to the first: the method's noise)"
PROBE_PERIOD = 0.4  # s from the end of one start of the probe to the next (its timer's OnUnitInactiveSec)


def probe_files(directives, command: str = "/usr/bin/true") -> dict[str, str]:
    """A oneshot as the role's service runs (its user), COMMAND with DIRECTIVES, and its timer.
    No start limit: it starts more often than the default 5 in 10 s."""
    user = tick.role_variables()["systemd_monitoring_user"]
    service = (f"[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=oneshot\nUser={user}\n"
               f"ExecStart={command}\n" + "".join(f"{d}\n" for d in directives))
    timer = f"[Timer]\nOnActiveSec={PROBE_PERIOD}s\nOnUnitInactiveSec={PROBE_PERIOD}s\nAccuracySec=1ms\n"
    return {f"/etc/systemd/system/{PROBE}.service": service, f"/etc/systemd/system/{PROBE}.timer": timer}


def own_mount_namespace(directives) -> bool:
    """Whether a service with DIRECTIVES runs in a mount namespace of its own (its process,
    seen from the machine while it sleeps, against systemd's)."""
    write_files(probe_files(directives, "/usr/bin/sleep 3"))
    leader = lab.leader_pid(HOST)
    before = set(Path(f"/proc/{leader}/task/{leader}/children").read_text().split())
    sh(f"systemctl daemon-reload; systemctl start --no-block {PROBE}.service")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for child in set(Path(f"/proc/{leader}/task/{leader}/children").read_text().split()) - before:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == "sleep":
                    own = os.readlink(f"/proc/{child}/ns/mnt") != os.readlink(f"/proc/{leader}/ns/mnt")
                    sh(f"systemctl stop {PROBE}.service")
                    return own
            except OSError:
                pass
        time.sleep(0.01)
    raise SystemExit(f"{PROBE} with {directives} did not run: "
                     + sh(f"journalctl -u {PROBE}.service -n 5 -o cat --no-pager"))


def probe_cost(meter: Meter, directives, ticks: int, idle: dict) -> dict:
    start_timer(PROBE, probe_files(directives))
    result = per_collection([timer_window(meter, ticks)], idle)
    stop_timer(PROBE)
    state = sh(f"systemctl show -P Result {PROBE}.service").strip()
    if state != "success":
        raise SystemExit(f"{PROBE} with {directives} failed: Result={state}")
    return result


def exposure(unit_text: str) -> float:
    """systemd-analyze security's overall exposure of a service with UNIT_TEXT, loaded as
    molecule verify reads the role's (an unloaded file scores differently: 1.2 for 1.1)."""
    write_files({f"/etc/systemd/system/{PROBE}-exposure.service": unit_text})
    answer = sh(f"systemctl daemon-reload; systemd-analyze security --no-pager {PROBE}-exposure.service "
                "| sed -n 's/.*Overall exposure level for [^:]*: \\([0-9.]*\\).*/\\1/p'")
    return float(answer)


def heartbeat_unit(sandbox: str, add=(), remove=()) -> str:
    """The role's systemd-heartbeat.service with SANDBOX, directives added and removed."""
    values = tick.role_variables(systemd_monitoring_sandbox=sandbox)
    text = tick.render((ROOT / tick.ROLE / "templates/systemd-heartbeat.service.j2").read_text(), values)
    lines = [line for line in text.splitlines() if line not in remove]
    return "\n".join(lines + list(add)) + "\n"


def sandbox_part(ticks: int, results: dict) -> None:
    sh(" ".join(["mkdir -p", *(f"{EMPTY_ROOT}/{d}" for d in ("usr", "proc", "sys", "dev", "run", "tmp"))]) + "; "
       + "; ".join(f"ln -sfn usr/{d} {EMPTY_ROOT}/{d}" for d in ("bin", "sbin", "lib", "lib64")))
    profiles = sandbox_profiles()
    rows = [("plain: `User=` only", (), None, ())] + ROWS + [
        (f"the role's `{name}` profile (all of its directives)", directives, None, ())
        for name, directives in profiles.items()] + [(NOISE, (), None, ())]
    default = default_sandbox()
    base_exposure = exposure(heartbeat_unit(default))
    table, started = {}, time.monotonic()
    for label, directives, in_default, instead_of in rows:
        if in_default is None:
            change = None
        elif in_default:
            change = exposure(heartbeat_unit(default, remove=directives))
        else:
            change = exposure(heartbeat_unit(default, add=directives, remove=instead_of))
        table[label] = {"directives": list(directives), "in_default": in_default, "exposure": change,
                        "instead_of": list(instead_of),
                        "own_mount_namespace": own_mount_namespace(directives)}
    progress(f"exposures and mount namespaces of {len(rows)} rows", started)
    for name in profiles:
        table[f"the role's `{name}` profile (all of its directives)"]["exposure"] = exposure(heartbeat_unit(name))
    for state in ("bare", "k3s"):
        mounts = k3s_mounts(state == "k3s")
        meter = Meter()
        idle = idle_rates(meter, 6)
        for label, directives, _, _ in rows:
            started = time.monotonic()
            table[label][str(mounts)] = probe_cost(meter, directives, ticks, idle)
            progress(f"{mounts} mounts: {label}: {table[label][str(mounts)]['total']} ms per start", started)
    results["sandbox"] = {"rows": table, "default": default, "default_exposure": base_exposure, "starts": ticks}


NOT_SANDBOX = ("Description", "Documentation", "After", "Type", "ExecStart", "EnvironmentFile", "TimeoutStartSec",
               "StateDirectory", "StateDirectoryMode", "LoadCredential", "User", "Group")


def progress(what: str, started: float) -> None:
    print(f"  {what} ({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)


def sandbox_profiles() -> dict[str, list[str]]:
    """Each choice of systemd_monitoring_sandbox: its sandbox directives (the role's unit's,
    but for what runs, where, and as whom)."""
    specs = yaml_load(ROOT / tick.ROLE / "meta/argument_specs.yml")
    choices = specs["argument_specs"]["main"]["options"]["systemd_monitoring_sandbox"]["choices"]
    return {name: [line for line in heartbeat_unit(name).splitlines()
                   if re.match(r"^[A-Z]\w*=", line) and line.split("=")[0] not in NOT_SANDBOX] for name in choices}


def default_sandbox() -> str:
    return yaml_load(ROOT / tick.ROLE_DEFAULTS)["systemd_monitoring_sandbox"]


def yaml_load(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


# ------------------------------------------------------------------ the headline

NOT_LOADED = 10  # allowlisted names systemd does not keep loaded: half disabled units, half unknown
UNLOADED = f"heartbeat, {NOT_LOADED} more names not loaded"


def not_loaded() -> list[str]:
    """NOT_LOADED allowlisted names systemd has no reason to keep loaded: unit files nothing
    references (disabled, never started) and names without a unit file (a typo)."""
    half = NOT_LOADED // 2
    sh("rm -f /etc/systemd/system/bench-disabled-*; " + "; ".join(
        f"printf '[Service]\\nType=oneshot\\nExecStart=/bin/true\\n' > /etc/systemd/system/bench-disabled-{i}.service"
        for i in range(half)) + "; systemctl daemon-reload")
    return [f"bench-disabled-{i}.service" for i in range(half)] + [f"bench-unknown-{i}.service" for i in range(half)]


def headline_part(sizes: list[int], ticks: int, rounds: int, results: dict) -> None:
    """For each size and mount table: ROUNDS rounds, each every tool in turn (the order reversed
    every other round, so load that comes and goes on the machine falls on all of them), TICKS
    collections per tool in all."""
    profiles, default = sandbox_profiles(), default_sandbox()
    out = results.setdefault("headline", {})
    for size in sizes:
        units = tick.load_units(HOST, size, timers=True)
        extra = not_loaded() if size == min(sizes) else []
        for state in ("bare", "k3s"):
            started = time.monotonic()
            mounts = k3s_mounts(state == "k3s")
            meter = Meter()
            idle = idle_rates(meter, 6)
            tools = {f"heartbeat {name}": (lambda n=name: heartbeat_window(meter, units, n, ticks // rounds))
                     for name in profiles}
            tools.update({name: (lambda n=name: scrape_window(meter, n, ticks // rounds)) for name in PORTS})
            if extra and state == "bare":
                tools[UNLOADED] = lambda: heartbeat_window(meter, units + extra, default, ticks // rounds)
            windows = {tool: [] for tool in tools}
            for name in PORTS:
                start_exporter(name)
            try:
                for round_ in range(rounds):
                    for tool in (list(tools) if round_ % 2 == 0 else list(reversed(tools))):
                        windows[tool].append(tools[tool]())
            finally:
                for name in PORTS:
                    stop_exporter(name)
            row = out.setdefault(f"{mounts}/{size}", {"mounts": mounts, "units": size})
            row.update({tool: per_collection(spent, idle) for tool, spent in windows.items()})
            progress(f"{mounts} mounts, {size} units: " + "; ".join(f"{k} {v['total']}" for k, v in row.items()
                                                                    if isinstance(v, dict)), started)
    tick.unload_units(HOST)


# ------------------------------------------------------------------ the report

def markdown(results: dict) -> str:
    out = [f"Machine: {tick.machine()}; {HOST}: systemd {results['systemd']}, Python {results['python']}."]
    if "headline" in results:
        default, profiles = default_sandbox(), list(sandbox_profiles())
        others = [p for p in profiles if p != default]
        rows = sorted(results["headline"].values(), key=lambda r: (r["mounts"], r["units"]))
        out += [f"{results['ticks']} collections per cell ({results['rounds']} rounds, every tool in each); "
                "CPU in ms per collection: systemd + the service's processes + dbus-daemon + journald, idle taken "
                "out; for an exporter also all of its own threads.", "",
                "| mounts | N | heartbeat as deployed (`" + default + "`) | ratio to node_exporter | " +
                " | ".join(f"heartbeat `{p}`" for p in others) + " | node_exporter | systemd_exporter |",
                "|---:|---:|---:|---:|" + "---:|" * len(others) + "---:|---:|"]
        for row in rows:
            hb, node = row[f"heartbeat {default}"], row["node_exporter"]
            out.append(f"| {row['mounts']} | {row['units']} | {hb['total']} | x{hb['total'] / node['total']:.2f} | " +
                       " | ".join(str(row[f"heartbeat {p}"]["total"]) for p in others) +
                       f" | {node['total']} | {row['systemd_exporter']['total']} |")
        tools = [f"heartbeat {p}" for p in profiles] + list(PORTS)
        out += ["", "Where it goes, ms per collection: systemd / service processes / dbus-daemon / journald "
                "(/ the exporter), and the memory held between collections:", "",
                "| mounts | N | " + " | ".join(f"`{t}`" for t in tools) + " |", "|---:|---:|" + "---|" * len(tools)]
        for row in rows:
            cells = []
            for name in tools:
                r = row[name]
                parts = [r[c] for c in COMPONENTS] + ([r["exporter"]] if "exporter" in r else [])
                cells.append(" / ".join(f"{v:g}" for v in parts) + f", {r['rss_mb']} MB")
            out.append(f"| {row['mounts']} | {row['units']} | " + " | ".join(cells) + " |")
        for row in rows:
            if UNLOADED in row:
                more, base = row[UNLOADED], row[f"heartbeat {default}"]
                out += ["", f"With {NOT_LOADED} more allowlisted names systemd does not keep loaded (half unit files "
                        f"nothing references, half unknown names), at {row['units']} units and {row['mounts']} "
                        f"mounts, in the same rounds: {more['total']} ms per tick against {base['total']}, "
                        f"{(more['total'] - base['total']) / NOT_LOADED:+.2f} ms per such name (systemd "
                        f"{more['systemd']} against {base['systemd']}, dbus-daemon {more['dbus-daemon']} against "
                        f"{base['dbus-daemon']})."]
        out.append("")
    if "sandbox" in results:
        sandbox = results["sandbox"]
        mounts = sorted({int(k) for row in sandbox["rows"].values() for k in row if k.isdigit()})
        plain = sandbox["rows"]["plain: `User=` only"]
        out += [f"/bin/true as a timer-started oneshot (`User=` the heartbeat's user), {sandbox['starts']} starts per "
                f"cell; CPU per start above plain ({' / '.join(str(plain[str(m)]['total']) for m in mounts)} ms at "
                f"{' / '.join(map(str, mounts))} mounts). Exposure: `systemd-analyze security` of the role's "
                f"systemd-heartbeat.service, default `{sandbox['default']}` ({sandbox['default_exposure']}), with the "
                "row's directives taken out (rows in the default), added (the others) or instead of what they replace.",
                "", "| directive | own mount namespace | " + " | ".join(f"+ms at {m} mounts" for m in mounts) +
                " | exposure |", "|---|---|" + "---:|" * len(mounts) + "---:|"]
        for label, row in sandbox["rows"].items():
            if label.startswith("plain:"):
                continue
            sign = ("instead: " if row["instead_of"] else
                    {True: "without: ", False: "with: ", None: ""}[row["in_default"]])
            out.append(f"| {label} | {'yes' if row['own_mount_namespace'] else 'no'} | " +
                       " | ".join(f"{row[str(m)]['total'] - plain[str(m)]['total']:+.1f}" for m in mounts) +
                       f" | {sign}{row['exposure'] if row['exposure'] is not None else ''} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--part", choices=("all", "headline", "sandbox"), default="all")
    parser.add_argument("--sizes", default="12,200,1000")
    parser.add_argument("--ticks", type=int, default=8, help="the headline's collections per tool and cell (8)")
    parser.add_argument("--rounds", type=int, default=2, help="the headline's rounds they are split into (2)")
    parser.add_argument("--starts", type=int, default=10, help="starts per directive and mount table (default 10)")
    parser.add_argument("--keep", action="store_true", help=f"leave {HOST} running")
    args = parser.parse_args()
    started = time.monotonic()
    prepare()
    results = {"ticks": args.ticks, "rounds": args.rounds, "systemd": sh("systemctl --version").split()[1],
               "python": sh("python3 -V").split()[1], "command": " ".join(sys.argv[1:])}
    try:
        if args.part in ("all", "sandbox"):
            sandbox_part(args.starts, results)
        if args.part in ("all", "headline"):
            headline_part([int(s) for s in args.sizes.split(",")], args.ticks, args.rounds, results)
    finally:
        (ROOT / "bench/results").mkdir(exist_ok=True)
        (ROOT / "bench/results/deployed.json").write_text(json.dumps(results, indent=2))
        if not args.keep:
            lab.stop_host(HOST)
    print(markdown(results))
    print(f"\n(the run took {(time.monotonic() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

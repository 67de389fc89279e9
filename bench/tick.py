"""Benchmark: the cost of one heartbeat tick on a lab host, next to its floor.

    sudo .venv/bin/python bench/tick.py [--sizes 10,50,200] [--repeat 7]

For each size N it loads N units on lab-host6 (booted for the benchmark, nothing else on it;
oneshot services that stay active, one in ten failing, as a real box has some), allowlists
exactly them, and measures inside the host, alternating: the bare batched `systemctl show` of
the N units with the heartbeat's properties (the floor of any tool reading through systemctl,
as the heartbeat did before it read D-Bus itself), and one full heartbeat tick (the working
tree's package as the role installs it, precompiled, run through the role's launcher:
interpreter start, reading systemd over D-Bus, shaping, encoding, the HTTP push to the lab's
VictoriaMetrics). Prints a Markdown table; numbers go to BENCHMARKS.md by hand.

Also the bench's shared set-up (bench/peers.py and bench/before_after.py import it): which
heartbeat files a version has, installing them as the role does, booting HOST, loading units,
running a harness inside HOST.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lab"))
import lab  # noqa: E402

HOST = "lab-host6"  # a host of its own: no heartbeat timer or vmalert of the demo running beside it
PACKAGE = "plugins/module_utils/systemd_heartbeat"  # the heartbeat: the role copies its top-level *.py
SINGLE = "files/systemd-heartbeat.py"  # the whole heartbeat before the package (f40ecf3 and older)
ROLE = "roles/systemd_monitoring"
LAUNCHER_TEMPLATE = f"{ROLE}/templates/systemd-heartbeat.j2"  # the role's launcher
ROLE_VARS = f"{ROLE}/vars/main.yml"  # what its {{ _names }} stand for
ROLE_DEFAULTS = f"{ROLE}/defaults/main.yml"  # and its public variables
ROLE_HANDLERS = f"{ROLE}/handlers/main.yml"  # what it runs on the host once the package is copied
SHARED_HARNESS = "peers_harness.py"  # in-host helpers the other harnesses import from beside them


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True).stdout


def reader(rev: str | None):
    """read(path) -> the text of a file of the project at git revision rev (None: the working tree)."""
    if rev is None:
        return lambda path: (ROOT / path).read_text()
    return lambda path: git("show", f"{rev}:{path}")


def heartbeat_files(rev: str | None = None) -> dict[str, str]:
    """The heartbeat as the role installs it at rev (None: the working tree), path under the lib
    dir -> text: the package's top-level *.py where that version has the package, else the
    single module as systemd_heartbeat.py."""
    if rev is None:
        names = sorted(str(p.relative_to(ROOT)) for p in (ROOT / PACKAGE).glob("*.py"))
    else:
        names = [n for n in git("ls-tree", "--name-only", rev, f"{PACKAGE}/").splitlines() if n.endswith(".py")]
    read = reader(rev)
    return {f"systemd_heartbeat/{Path(n).name}": read(n) for n in names} or {"systemd_heartbeat.py": read(SINGLE)}


def role_variables(role_vars: str | None = None, defaults: str | None = None, **overrides) -> dict:
    """The variables the role's templates see: its defaults and vars (texts, default the working
    tree's), then overrides; values that are templates themselves (`{{ inventory_hostname }}`)
    rendered. inventory_hostname is HOST unless overridden."""
    import yaml

    values = {"inventory_hostname": HOST, "role_path": str(ROOT / ROLE), "ansible_managed": "Ansible managed",
              **yaml.safe_load(defaults or (ROOT / ROLE_DEFAULTS).read_text()),
              **yaml.safe_load(role_vars or (ROOT / ROLE_VARS).read_text()), **overrides}
    for name, value in values.items():
        if isinstance(value, str) and "{{" in value and name != "_systemd_monitoring_package_source":
            values[name] = render(value, values)
    return values


def render(template: str, variables: dict) -> str:
    """A role template rendered as ansible.builtin.template renders it: Jinja2 with Ansible's
    filters (comment, ...), trim_blocks, the trailing newline kept; an undefined name fails."""
    import jinja2
    from ansible.plugins.filter.core import FilterModule

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True)
    environment.filters.update(FilterModule().filters())
    return environment.from_string(template).render(variables)


def compile_commands(variables: dict, handlers: str | None = None) -> list[list[str]]:
    """What the role's handlers run on the host once the package is copied (those listening
    on "compile heartbeat": compileall, the preload bundle, whatever the version has),
    rendered with VARIABLES; HANDLERS is the handlers file's text (default the working tree's)."""
    import shlex

    import yaml

    commands = []
    for handler in yaml.safe_load(handlers or (ROOT / ROLE_HANDLERS).read_text()):
        command = handler.get("ansible.builtin.command") or handler.get("command")
        if handler.get("listen") == "compile heartbeat" and command:
            argv = command["argv"] if "argv" in command else shlex.split(render(command["cmd"], variables))
            commands.append([render(str(arg), variables) for arg in argv])
    return commands


def install_heartbeat(host: str, files: dict[str, str] | None = None, prefix: str = "/opt/bench",
                      template: str | None = None, role_vars: str | None = None,
                      lib: str | None = None, launcher: str | None = None, handlers: str | None = None) -> str:
    """A heartbeat as the role installs it: its files (heartbeat_files(); default the working
    tree's) in LIB (default PREFIX/lib), compiled by what the role's handlers run, and the
    launcher, the role's template rendered with the role's vars (default the working tree's
    template, vars and handlers), at LAUNCHER (default PREFIX/systemd-heartbeat; returned).
    lib and launcher set to the role's own paths install it exactly where the role does."""
    files = files or heartbeat_files()
    template = template or (ROOT / LAUNCHER_TEMPLATE).read_text()
    lib, launcher = lib or f"{prefix}/lib", launcher or f"{prefix}/systemd-heartbeat"
    root = lab.host_dir(host) / "root"  # the host's / seen from the machine
    lab.inside(host, ["rm", "-rf", lib])
    for name, text in files.items():
        (root / lib.lstrip("/") / name).parent.mkdir(parents=True, exist_ok=True)
        (root / lib.lstrip("/") / name).write_text(text)
    variables = role_variables(role_vars, _systemd_monitoring_lib_dir=lib)
    for argv in compile_commands(variables, handlers):
        lab.inside(host, argv)
    text = render(template, variables)
    (root / launcher.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / launcher.lstrip("/")).write_text(text)
    (root / launcher.lstrip("/")).chmod(0o755)
    return launcher


def prepare_host(*harnesses: str, heartbeat: bool = True) -> str:
    """Boot HOST, install the working tree's heartbeat (unless not heartbeat) and the harnesses
    (files in bench/, SHARED_HARNESS always) into /opt/bench; the lab's OTLP URL."""
    lab.up(1, first=int(HOST[len(lab.HOST_PREFIX):]))
    lab.ssh(HOST, ["mkdir", "-p", "/opt/bench/bin"])  # peers.py puts the exporters there
    if heartbeat:
        install_heartbeat(HOST)
    for harness in dict.fromkeys((*harnesses, SHARED_HARNESS)):
        lab.ssh(HOST, f"cat > /opt/bench/{harness}", input=(ROOT / "bench" / harness).read_text())
    return f"http://127.0.0.1:{lab.VM_PORT}/opentelemetry/v1/metrics"


# Stopped before their files go: an active unit whose file is removed stays loaded (not-found),
# and every unit left loaded makes each peer's full unit listing longer.
STOP_BENCH_UNITS = "systemctl stop 'bench-*' || true"


def load_units(host: str, count: int, timers: bool = False) -> list[str]:
    """N units named bench-NNNN to monitor: oneshot services that stay active, one in ten failed,
    and with timers=True one in ten a calendar timer instead. Returns their names."""
    names, script = [], ["set -e", STOP_BENCH_UNITS, "rm -f /etc/systemd/system/bench-*"]
    for i in range(count):
        if timers and i % 10 == 5:
            name = f"bench-{i:04d}.timer"
            script.append(f"printf '[Timer]\\nOnCalendar=*-*-* 03:00:00\\nUnit=bench-0000.service\\n' "
                          f"> /etc/systemd/system/{name}")
        else:
            name = f"bench-{i:04d}.service"
            command = "/bin/false" if i % 10 == 9 else "/bin/true"
            script.append(f"printf '[Service]\\nType=oneshot\\nRemainAfterExit=yes\\nExecStart={command}\\n' "
                          f"> /etc/systemd/system/{name}")
        names.append(name)
    script += ["systemctl daemon-reload", "systemctl reset-failed"]
    for start in range(0, len(names), 200):
        script.append(f"systemctl start {' '.join(names[start:start + 200])} || true")
    lab.ssh(host, "sh", input="\n".join(script) + "\n", timeout=600)  # as stdin: too long for an argument
    return names


def allowlist_units(size: int, timers: bool = False) -> int:
    """load_units(HOST, size, timers), their names in /opt/bench/allowlist; how many units HOST
    has loaded then (what a full listing sees)."""
    names = load_units(HOST, size, timers)
    lab.ssh(HOST, "cat > /opt/bench/allowlist", input="\n".join(names) + "\n")
    return units_loaded()


def units_loaded() -> int:
    return lab.inside(HOST, ["systemctl", "list-units", "--all", "--no-legend", "--plain"]).stdout.count("\n")


def unload_units(host: str) -> None:
    lab.ssh(host, f"{STOP_BENCH_UNITS}; rm -f /etc/systemd/system/bench-*; systemctl daemon-reload; "
                  "systemctl reset-failed")


def service_limit_as() -> int:
    """The LimitAS= of the role's unit file, in bytes (0: none): the harnesses run ticks under it."""
    for line in (ROOT / ROLE / "templates/systemd-heartbeat.service.j2").read_text().splitlines():
        if line.startswith("LimitAS="):
            value = line.split("=", 1)[1].strip()
            return int(value.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(value[-1], 0)
    return 0


def run_harness(harness: str, *args: str, at: str) -> subprocess.CompletedProcess:
    """bench/HARNESS run inside HOST (prepare_host copied it) with args, and the service's
    LimitAS= for its ticks; its answer. A failure ends the benchmark with what the harness
    wrote to stderr (at: where in the run)."""
    answer = lab.ssh(HOST, ["env", f"BENCH_SERVICE_LIMIT_AS={service_limit_as()}", "python3",
                            f"/opt/bench/{harness}", *args], check=False, timeout=1800)
    if answer.returncode:
        raise SystemExit(f"{harness} failed at {at}:\n{answer.stderr}")
    return answer


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.machine())
    return f"{cpu}, {len(lab.os.sched_getaffinity(0))} cores, {platform.system()} {platform.release()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="10,50,200")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    url = prepare_host("tick_harness.py")
    loaded = units_loaded()
    print(f"Machine: {machine()}; lab host {HOST}: systemd "
          f"{lab.inside(HOST, ['systemctl', '--version']).stdout.split()[1]}, "
          f"Python {lab.inside(HOST, ['python3', '-V']).stdout.split()[1]}; median of {args.repeat} "
          f"(min-max); CPU = user+system of the process and its children.\n")
    print("| units | floor: `systemctl show` wall / CPU ms | tick wall / CPU ms | tick - floor (wall) | bytes pushed (gzip / raw) |")
    print("|---:|---|---|---:|---:|")
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        allowlist_units(size)
        answer = run_harness("tick_harness.py", "/opt/bench/lib", "/opt/bench/allowlist", url, str(args.repeat),
                             "/opt/bench/systemd-heartbeat", at=f"N = {size}")
        r = json.loads(answer.stdout)
        results.append(r)
        fw, fc, tw, tc = r["floor_wall_ms"], r["floor_cpu_ms"], r["tick_wall_ms"], r["tick_cpu_ms"]
        print(f"| {size} | {fw['median']} ({fw['min']}-{fw['max']}) / {fc['median']} | "
              f"{tw['median']} ({tw['min']}-{tw['max']}) / {tc['median']} | "
              f"{tw['median'] - fw['median']:+.1f} | {r['bytes']} / {r['bytes_uncompressed']} |", flush=True)
    unload_units(HOST)
    print(f"\n(units loaded on the host before the run: about {loaded})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One generator for a fake `systemctl` and `systemd-analyze`, shared by every test that needs them.

FakeTools(bin_dir, units) writes bin_dir/systemctl and bin_dir/systemd-analyze: small Python
scripts that answer in systemctl's own text formats from a JSON file next to them, log every
invocation (argv) and the pids of everything they start (so the tests can check that the
heartbeat killed them, and clean up). Behaviour per call ("list-units", "show", "calendar"):
  {"sleep": seconds}            answer after a delay
  {"mode": "closefds"}          close stdout and stderr, then keep running (60 s)
  {"mode": "background"}        start a background `sleep 60` holding stdout/stderr, answer, exit
  {"mode": "fail"}              exit 1 with a message
and "extra_lines": raw lines (latin-1 strings, may hold NUL or any byte) added to list-units.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

SCRIPT = r'''#!/usr/bin/python3
import fnmatch, json, os, subprocess, sys, time
from datetime import datetime, timezone
HERE = os.path.dirname(os.path.abspath(__file__))
CONF = json.load(open(os.path.join(HERE, "fake-systemd.json")))
TOOL = os.path.basename(sys.argv[0])
ARGS = sys.argv[1:]
with open(CONF["log"], "a") as log:
    log.write(json.dumps([TOOL] + ARGS) + "\n")
with open(CONF["pids"], "a") as p:
    p.write("%d\n" % os.getpid())

def out(text):
    sys.stdout.buffer.write(text.encode("latin-1") if isinstance(text, str) else text)

def behave(kind):
    b = CONF["behaviour"].get(kind, {})
    if b.get("sleep"):
        time.sleep(b["sleep"])
    mode = b.get("mode")
    if mode == "closefds":
        os.close(1); os.close(2)
        time.sleep(60)
        sys.exit(0)
    if mode == "background":
        child = subprocess.Popen(["/bin/sleep", "60"])
        with open(CONF["pids"], "a") as p:
            p.write("%d\n" % child.pid)
        with open(CONF["background"], "a") as p:
            p.write("%d\n" % child.pid)
    if mode == "fail":
        sys.stderr.write("Failed to connect to bus: Connection refused\n")
        sys.exit(1)

STAMP = "pretty"
for a in ARGS:
    if a.startswith("--timestamp="):
        STAMP = a.split("=", 1)[1]

def stamp(us):
    if not us:
        return ""
    if STAMP == "unix":
        return "@%d" % (us // 1000000)
    t = datetime.fromtimestamp(us / 1e6, timezone.utc)
    if STAMP in ("us", "us+utc", "µs", "µs+utc"):
        return t.strftime("%a %Y-%m-%d %H:%M:%S.%f UTC")
    return t.strftime("%a %Y-%m-%d %H:%M:%S UTC")

def span(us):
    if not us:
        return "0"
    s, rest = divmod(us, 1000000)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            parts.append("%d%s" % (s // size, unit))
            s %= size
    if s or rest:
        parts.append(("%d.%06ds" % (s, rest)).replace(".000000s", "s"))
    return " ".join(parts)

def value(sig, v, prop):
    if sig == "t":
        if prop.endswith("Monotonic") or prop == "NextElapseUSecMonotonic":
            return span(v)
        return stamp(v)
    if sig == "b":
        return "yes" if v else "no"
    if sig == "a(stt)":
        return ["{ %s=%s ; next_elapse=%s }" % (n, span(a), span(nx)) for n, a, nx in v]
    if sig == "a(sst)":
        return ["{ %s=%s ; next_elapse=%s }" % (n, e, stamp(nx)) for n, e, nx in v]
    return str(v)

UNITS = {u["name"]: u for u in CONF["units"]}

def list_units():
    behave("list-units")
    states, patterns, i = set(), [], 0
    while i < len(ARGS):
        a = ARGS[i]
        if a.startswith("--state="):
            states |= set(a.split("=", 1)[1].split(","))
        elif a == "--state":
            i += 1; states |= set(ARGS[i].split(","))
        elif a.startswith("-"):
            pass
        elif a != "list-units":
            patterns.append(a)
        i += 1
    for u in CONF["units"]:
        if states and not (states & {u["load"], u["active"], u["sub"]}):
            continue
        if patterns and not any(fnmatch.fnmatchcase(u["name"], p) for p in patterns):
            continue
        out("%s %s %s %s %s\n" % (u["name"], u["load"], u["active"], u["sub"], u["description"] or u["name"]))
    for line in CONF.get("extra_lines", []):
        out(line + "\n")

def show():
    behave("show")
    props, names, i, dashdash = [], [], 0, False
    while i < len(ARGS):
        a = ARGS[i]
        if dashdash:
            names.append(a)
        elif a == "--":
            dashdash = True
        elif a in ("-p", "--property"):
            i += 1; props += ARGS[i].split(",")
        elif a.startswith("--property="):
            props += a.split("=", 1)[1].split(",")
        elif a.startswith("-p"):
            props += a[2:].split(",")
        elif a.startswith("-") or a == "show":
            pass
        else:
            names.append(a)
        i += 1
    blocks = []
    for n in names:
        u = UNITS.get(n)
        table = {"Id": ("s", n), "LoadState": ("s", u["load"] if u else "not-found"),
                 "ActiveState": ("s", u["active"] if u else "inactive"),
                 "SubState": ("s", u["sub"] if u else "dead"),
                 "Description": ("s", (u and u["description"]) or n)}
        if u:
            for iface_props in u["props"].values():
                for k, (sig, v) in iface_props.items():
                    if k != "Id":
                        table[k] = (sig, v)
        else:
            for k in ("StateChangeTimestamp", "ActiveEnterTimestamp", "ActiveExitTimestamp"):
                table[k] = ("t", 0)
        lines = []
        for p in (props or list(table)):
            if p in table:
                v = value(table[p][0], table[p][1], p)
                for item in (v if isinstance(v, list) else [v]):
                    lines.append("%s=%s" % (p, item))
        blocks.append("\n".join(lines) + "\n")
    out("\n".join(blocks))

def calendar():
    behave("calendar")
    exprs = [a for a in ARGS if not a.startswith("-") and a != "calendar"]
    now = time.time()
    for e in exprs:
        out("  Original form: %s\nNormalized form: %s\n" % (e, e))
        for k in range(2):
            t = datetime.fromtimestamp(now + 3600 * (k + 1), timezone.utc).strftime("%a %Y-%m-%d %H:%M:%S UTC")
            label = "    Next elapse" if k == 0 else "       Iter. #%d" % (k + 1)
            out("%s: %s\n       (in UTC): %s\n       From now: %dh left\n" % (label, t, t, k + 1))

if TOOL == "systemd-analyze":
    if "calendar" in ARGS:
        calendar()
    else:
        sys.exit(1)
elif "--version" in ARGS:
    out("systemd 252 (252.30-1~deb12u2)\n+PAM +AUDIT\n")
elif "list-units" in ARGS:
    list_units()
elif "show" in ARGS:
    show()
else:
    sys.stderr.write("fake systemctl: unsupported %r\n" % ARGS)
    sys.exit(1)
sys.stdout.flush()
'''


def units_as_json(units) -> list[dict]:
    """The fake bus's Unit table in the shape the script reads."""
    return [{"name": u.name, "load": u.load, "active": u.active, "sub": u.sub,
             "description": u.description, "props": u.props} for u in units.values()]


class FakeTools:
    def __init__(self, bin_dir: Path, units, behaviour: dict | None = None,
                 extra_lines: list[str] | None = None):
        self.bin = Path(bin_dir)
        self.bin.mkdir(parents=True, exist_ok=True)
        self.log = self.bin / "calls.log"
        self.pids = self.bin / "pids"
        self.background = self.bin / "background-pids"
        for f in (self.log, self.pids, self.background):
            f.write_text("")
        self.units = units
        self.behaviour = behaviour or {}
        self.extra_lines = extra_lines or []
        self.write()
        for tool in ("systemctl", "systemd-analyze"):
            path = self.bin / tool
            path.write_text(SCRIPT)
            path.chmod(0o755)

    def write(self):
        conf = {"units": units_as_json(self.units), "behaviour": self.behaviour,
                "extra_lines": self.extra_lines, "log": str(self.log), "pids": str(self.pids),
                "background": str(self.background)}
        (self.bin / "fake-systemd.json").write_text(json.dumps(conf))

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def started_pids(self) -> list[int]:
        return [int(p) for p in self.pids.read_text().split()]

    def background_pids(self) -> list[int]:
        return [int(p) for p in self.background.read_text().split()]

    def kill_all(self):
        """Clean-up: end what these fakes started (by pid, nothing else)."""
        for pid in self.started_pids():
            if alive(pid):
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_dead(pids, within: float) -> list[int]:
    end = time.monotonic() + within
    while time.monotonic() < end:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def systemctl_stamp(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, timezone.utc).strftime("%a %Y-%m-%d %H:%M:%S UTC")

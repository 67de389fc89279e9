"""Units the lab tests install on a host: one of each case the heartbeat must get right."""

UNITS = {
    # an ordinary long-running service
    "lab-active.service": """[Service]
ExecStart=/bin/sleep infinity
""",
    # crashes a second after each start; Restart= makes NRestarts climb
    "lab-crashloop.service": """[Unit]
StartLimitIntervalSec=0
[Service]
ExecStart=/bin/sh -c 'sleep 1; exit 3'
Restart=on-failure
RestartSec=2
""",
    # fails once and stays failed; NOT on the allowlist, reported because it failed
    "lab-broken.service": """[Service]
Type=oneshot
ExecStart=/bin/sh -c 'exit 42'
""",
    # dies of SIGKILL: ExecMainCode=2 (killed), ExecMainStatus=9
    "lab-killed.service": """[Service]
ExecStart=/bin/sh -c 'kill -9 $$$$'
""",
    # a timer-driven oneshot job, like coily-audit-dashboard
    "lab-job.service": """[Service]
Type=oneshot
ExecStart=/bin/true
""",
    "lab-job.timer": """[Timer]
OnActiveSec=1s
OnUnitActiveSec=20s
AccuracySec=1s
""",
    # a calendar timer that has not fired yet
    "lab-calendar.timer": """[Timer]
OnCalendar=*-*-* 03:17:00
Unit=lab-job.service
""",
    # an escaped name: "foo-bar" as systemd-escape writes it inside a unit name
    "lab-foo\\x2dbar.service": """[Service]
ExecStart=/bin/sleep infinity
""",
    # a template; lab-worker@one.service is an instance
    "lab-worker@.service": """[Service]
ExecStart=/bin/sleep infinity
""",
}

STARTED = ["lab-active.service", "lab-crashloop.service", "lab-broken.service",
           "lab-killed.service", "lab-job.timer", "lab-calendar.timer",
           "lab-foo\\x2dbar.service", "lab-worker@one.service"]

ALLOWLIST = """# the e2e allowlist: exact names, a glob, a template instance, a missing unit
lab-active.service
lab-crashloop.service
lab-killed.service
lab-job.service
lab-job.timer
lab-calendar.timer
lab-foo\\x2dbar.service   # escaped name
lab-worker@*.service      # glob over template instances
lab-missing.service       # does not exist: must still be reported (not-found)
"""


def install_script() -> str:
    """A shell script that writes the units, reloads systemd and starts them."""
    lines = ["set -e"]
    for name, text in UNITS.items():
        lines.append(f"cat > '/etc/systemd/system/{name}' <<'UNIT'\n{text}UNIT")
    lines.append("systemctl daemon-reload")
    quoted = " ".join(f"'{u}'" for u in STARTED)
    lines.append(f"systemctl start --no-block {quoted}")
    return "\n".join(lines) + "\n"

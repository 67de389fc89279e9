#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT
"""Ansible module: collect systemd unit state like the heartbeat does, and push it once."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: systemd_heartbeat
short_description: Collect systemd unit state and push one heartbeat to VictoriaMetrics
version_added: "0.2.0"
description:
  - Reads the state of an allowlist of systemd units (exact names and globs) plus every failed
    unit on the target, exactly as the C(systemd-heartbeat) program does, and pushes one
    heartbeat (OTLP/HTTP protobuf) to VictoriaMetrics, so a deploy proves the path works.
  - Returns the state of every unit it saw, and warns about allowlisted units systemd does not know.
  - Shares one implementation of collection and encoding with the heartbeat program, the package
    C(plugins/module_utils/systemd_heartbeat), which Ansible ships to the target as module_utils.
  - "What C(changed) means: the module changes nothing on the target. A push adds samples to
    VictoriaMetrics, which is an observation, not a change of state (like a facts module), so
    C(changed) is always C(false), in check mode or not; C(pushed) says whether it pushed."
author:
  - Kai Siren (@coilysiren)
options:
  units:
    description:
      - Unit names or globs to report, as in the heartbeat's allowlist. A bare name means C(.service).
    type: list
    elements: str
    default: []
  url:
    description:
      - OTLP/HTTP metrics endpoint of VictoriaMetrics.
    type: str
    default: http://localhost:30428/opentelemetry/v1/metrics
  host:
    description:
      - Value of the C(host) label. Defaults to the target's host name.
    type: str
  push:
    description:
      - Whether to push. With C(false) the module only validates its arguments and collects,
        which a preflight can use before anything changes on the host.
    type: bool
    default: true
  timeout:
    description:
      - Seconds allowed for reading systemd and for the push.
    type: float
    default: 10
  validate_certs:
    description:
      - Verify the TLS certificate of an https endpoint.
    type: bool
    default: true
  ca_path:
    description:
      - CA certificates (PEM) to verify an https endpoint with, instead of the system's.
    type: path
  bearer_token:
    description:
      - "Sent as C(Authorization: Bearer <token>). Never logged."
    type: str
  url_username:
    description:
      - User for HTTP basic authentication.
    type: str
  url_password:
    description:
      - Password for HTTP basic authentication. Never logged.
    type: str
  force_basic_auth:
    description:
      - Send the basic credentials with the first request rather than after a 401 challenge.
    type: bool
    default: true
  state_dir:
    description:
      - The heartbeat's state directory on the target (the role's C(/var/lib/systemd-heartbeat)).
        It is read, never written, so that this push carries what the heartbeat's own ticks
        remember (the last exit and the last failure of each unit, which systemd forgets when
        the next run starts). Without it those come only from what systemd holds right now.
    type: path
attributes:
  check_mode:
    description: Can run in check mode and return what it would do without pushing.
    support: full
    details: In check mode the module collects and reports but pushes nothing.
  diff_mode:
    description: Would return details on what changed; it changes nothing.
    support: none
requirements:
  - Python >= 3.10 on the target (the heartbeat's floor; Ubuntu 22.04 ships 3.10).
  - systemd on the target (its D-Bus system bus, else C(systemctl) on the PATH).
notes:
  - Reads systemd over the D-Bus system bus socket (C($DBUS_SYSTEM_BUS_ADDRESS) or
    C(/run/dbus/system_bus_socket)) with the heartbeat's own client; without a bus it falls back
    to C(systemctl show) and warns.
  - Series that end (a unit leaves the allowlist, a sub_state changes) get their staleness
    marker from the heartbeat's next tick, which remembers its own pushes; this module does not.
"""

EXAMPLES = r"""
- name: Push one heartbeat now and show what systemd says
  coilysiren.systemd_monitoring.systemd_heartbeat:
    units:
      - k3s.service
      - "*-server.service"
      - backup.timer
    url: http://localhost:30428/opentelemetry/v1/metrics
  register: heartbeat

- name: Validate an allowlist without pushing
  coilysiren.systemd_monitoring.systemd_heartbeat:
    units: "{{ systemd_monitoring_units }}"
    push: false
"""

RETURN = r"""
units:
  description: One entry per reported unit, allowlisted ones first, then failed units.
  returned: always
  type: list
  elements: dict
  contains:
    unit:
      description: The unit's name as allowlisted (or as systemd lists it, for glob matches and failed units).
      type: str
      sample: game-server.service
    load_state:
      description: systemd's C(LoadState) (C(loaded), C(not-found), C(masked), ...).
      type: str
      sample: loaded
    active_state:
      description: systemd's C(ActiveState).
      type: str
      sample: active
    sub_state:
      description: systemd's C(SubState).
      type: str
      sample: running
    allowlisted:
      description: Whether the allowlist asked for the unit (C(false) for failed units reported only because they failed).
      type: bool
      sample: true
    restarts:
      description: Services, C(NRestarts); C(null) for other types and units systemd does not know.
      type: int
      sample: 0
    last_exit_status:
      description: Services, the most recent exit of the main process (exit code or signal
        number), as the metric C(systemd_unit_last_exit_status) (README); C(null) otherwise.
      type: int
      sample: 0
    last_failure:
      description: When the unit last failed (Unix seconds) and why, as the metrics
        C(systemd_unit_last_failure_timestamp_seconds) and C(systemd_unit_last_failure_info)
        (README); C(null) when no failure is known.
      type: dict
      sample: {"at": 1795960330.9, "result": "exit-code", "exit_code": "exited", "exit_status": "127", "gave_up": true}
    seconds_since_active:
      description: As the metric C(systemd_unit_seconds_since_active) (README); C(null) when unknown.
      type: float
      sample: 0.0
missing:
  description: Allowlisted units systemd does not know (LoadState not-found).
  returned: always
  type: list
  elements: str
  sample: [k3s.service]
failed_units:
  description: Reported units whose ActiveState is failed.
  returned: always
  type: list
  elements: str
  sample: [backup.service]
samples:
  description: Number of samples in the heartbeat (pushed or, in check mode, that would be pushed).
  returned: always
  type: int
  sample: 74
pushed:
  description: Whether the heartbeat was pushed (C(false) in check mode and with I(push=false)).
  returned: always
  type: bool
  sample: true
url:
  description: The endpoint pushed to.
  returned: always
  type: str
  sample: http://localhost:30428/opentelemetry/v1/metrics
source:
  description: How systemd was read, C(dbus) or C(systemctl) (the fallback when there is no bus).
  returned: always
  type: str
  sample: dbus
"""

import socket

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url
from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.history import EXIT_CODES, observe_history
from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.model import Deadline, HeartbeatError
from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.otlp import encode_request, gzip
from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.push import split_url
from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.read import bus_socket, collect
from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.shape import seconds_since_active, shape
from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.state import load_memory
from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.text import one_line
from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.units import check_unit_patterns
from ansible_collections.coilysiren.systemd_monitoring.plugins.module_utils.systemd_heartbeat.values import as_int


def unit_report(unit: dict, snapshot, record: dict) -> dict:
    """What the module returns for one unit: the states, the counters, as plain values;
    `record` is its history (history.observe), as the heartbeat's metrics carry it."""
    def number(key):
        value = as_int(unit.get(key))  # the heartbeat's parser: ASCII digits, within 64 bits
        return value if value is not None and value >= 0 and unit.get("LoadState") != "not-found" else None

    since = seconds_since_active(unit, snapshot.wall, snapshot.manager_start)
    exit_status = number("ExecMainStatus")
    if exit_status is not None and "exit_status" in record:
        exit_status = record["exit_status"]
    failure = None
    if record.get("failed_at"):
        code = record.get("failure_code", 0)
        failure = {"at": record["failed_at"], "result": record.get("result", "unknown"),
                   "exit_code": EXIT_CODES.get(code, ""),
                   "exit_status": str(record.get("failure_status", 0)) if code in EXIT_CODES else "",
                   "gave_up": bool(record.get("gave_up"))}
    return {
        "unit": unit["Unit"],
        "load_state": unit.get("LoadState", ""),
        "active_state": unit.get("ActiveState", ""),
        "sub_state": unit.get("SubState", ""),
        "allowlisted": bool(unit.get("Allowlisted")),
        "restarts": number("NRestarts"),
        "last_exit_status": exit_status,
        "last_failure": failure,
        "seconds_since_active": None if since is None else round(since, 3),
    }


def push(module: AnsibleModule, url: str, body: bytes, timeout: float) -> None:
    """POST through Ansible's own HTTP client (proxies, TLS, basic auth); fail with status and message."""
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    if module.params["bearer_token"]:
        headers["Authorization"] = "Bearer " + module.params["bearer_token"].strip()
    response, info = fetch_url(module, url, data=gzip(body), method="POST", timeout=timeout, headers=headers,
                               ca_path=module.params["ca_path"], force=True)
    status = info.get("status", -1)
    if not 200 <= status < 300:
        message = (info.get("body") or b"").decode("utf-8", "replace").strip() or info.get("msg", "")
        module.fail_json(msg=one_line(f"push to {url} failed: HTTP {status}: {message.splitlines()[0] if message else ''}"),
                         status=status)


def hide_secrets(module: AnsibleModule) -> None:
    """Secrets that no_log cannot know: the credentials of a URL (refused below, but the URL
    is echoed in `invocation`), and a token as it goes into the header (stripped)."""
    authority = module.params["url"].partition("://")[2].partition("/")[0]
    if "@" in authority:
        credentials = authority.rpartition("@")[0]
        module.no_log_values.update(x for x in (credentials, credentials.partition(":")[2]) if x)
    token = module.params["bearer_token"]
    if token and token.strip():
        module.no_log_values.add(token.strip())


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "units": {"type": "list", "elements": "str", "default": []},
            "url": {"type": "str", "default": "http://localhost:30428/opentelemetry/v1/metrics"},
            "host": {"type": "str"},
            "push": {"type": "bool", "default": True},
            "timeout": {"type": "float", "default": 10},
            "validate_certs": {"type": "bool", "default": True},
            "ca_path": {"type": "path"},
            "bearer_token": {"type": "str", "no_log": True},
            "url_username": {"type": "str"},
            "url_password": {"type": "str", "no_log": True},
            # fetch_url sends basic credentials up front only when asked to
            "force_basic_auth": {"type": "bool", "default": True},
            "state_dir": {"type": "path"},
        },
        supports_check_mode=True,
    )
    hide_secrets(module)
    try:
        run(module)
    except Exception as error:  # noqa: BLE001 - the last line of defence: a message, never a traceback
        module.fail_json(msg=one_line(f"internal error, please report: {type(error).__name__}: {str(error)[:200]}"))


def run(module: AnsibleModule) -> None:
    params = module.params
    module.get_bin_path("systemctl", required=True)
    host = params["host"] or socket.gethostname()
    warnings = []
    try:
        split_url(params["url"])
        patterns = check_unit_patterns(params["units"], "units")
        if not 0 < params["timeout"] <= 3600:
            raise HeartbeatError(f"timeout must be in (0, 3600] seconds, got {params['timeout']:g}")
        token = params["bearer_token"]
        if token is not None and not (token.strip() and token.strip().isprintable()):
            raise HeartbeatError("bearer_token must be one line of printable characters (it is not shown)")
        # Over D-Bus, falling back to systemctl through the heartbeat's own runner, which
        # unlike module.run_command kills the child's process group at the deadline.
        bus, warnings = bus_socket("dbus")
        # read only: the heartbeat owns the directory (a file it cannot use is left as it is)
        memory = load_memory(params["state_dir"], params["timeout"], warnings)
        deadline = Deadline(params["timeout"])
        snapshot = collect(patterns, deadline, bus, remembered=memory["units"])
        # the failures as the heartbeat has them: from the journal where it can be read
        records = observe_history(snapshot, memory, deadline)
    except HeartbeatError as error:
        module.fail_json(msg=one_line(str(error)))
    for warning in warnings + snapshot.warnings:
        module.warn(one_line(warning))
    samples = shape(snapshot, host, memory, records)
    reports = [unit_report(unit, snapshot, records[str(unit["Unit"])]) for unit in snapshot.units]
    missing = [r["unit"] for r in reports if r["allowlisted"] and r["load_state"] == "not-found"]
    for unit in missing:
        module.warn(one_line(f"allowlisted unit {unit} does not exist on this host (LoadState=not-found)"))
    pushed = params["push"] and not module.check_mode
    if pushed:
        push(module, params["url"], encode_request(samples, {"host": host}, int(snapshot.wall * 1e9)),
             params["timeout"])
    module.exit_json(changed=False, units=reports, missing=missing, pushed=pushed, url=params["url"],
                     failed_units=[r["unit"] for r in reports if r["active_state"] == "failed"],
                     samples=len(samples), source=snapshot.source)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# SPDX-License-Identifier: MIT
"""Ansible module: import a dashboard into Grafana through its HTTP API, only when it changed."""
from __future__ import annotations

DOCUMENTATION = r"""
---
module: grafana_dashboard_sync
short_description: Import a dashboard into Grafana through its HTTP API, idempotently
version_added: "0.2.0"
description:
  - Reads the dashboard with the same uid from Grafana (C(GET /api/dashboards/uid/<uid>)) and compares it
    with the one given, ignoring the fields Grafana manages (C(id), C(version)). Only when they differ, or
    the folder differs, does it import (C(POST /api/dashboards/db) with the folder, C(overwrite) and a message).
  - The token is never logged or returned.
  - C(changed) is C(true) exactly when the dashboard (or its folder) in Grafana differs from the one given,
    that is when an import happens (or, in check mode, would happen).
  - Runs wherever the task runs (usually the controller, C(delegate_to=localhost)); it needs Python >= 3.10 there.
author:
  - Kai Siren (@coilysiren)
options:
  url:
    description: Grafana's base URL, e.g. C(http://localhost:3000).
    type: str
    required: true
  token:
    description: A Grafana service-account token with permission to write dashboards. Never logged.
    type: str
    required: true
  dashboard:
    description:
      - The dashboard model (must carry a C(uid)). Required with I(state=present); with I(state=absent) only
        its C(uid) is used.
    type: dict
  uid:
    description: With I(state=absent), the uid of the dashboard to delete (else taken from I(dashboard)).
    type: str
  state:
    description:
      - C(present) imports the dashboard when it differs; C(absent) deletes it from Grafana when it is there
        (C(DELETE /api/dashboards/uid/<uid>)).
    type: str
    choices: [present, absent]
    default: present
  folder_uid:
    description: The folder to keep the dashboard in; empty for the General folder. Always sent, so an update never moves it.
    type: str
    default: ""
  version_message:
    description: The version message Grafana records. (C(message) is a name Ansible reserves.)
    type: str
    default: Imported by systemd-monitoring
  overwrite:
    description: Replace the dashboard even if someone changed it in Grafana since (else Grafana answers 412).
    type: bool
    default: true
  timeout:
    description: Seconds per request.
    type: int
    default: 30
  validate_certs:
    description: Verify Grafana's TLS certificate.
    type: bool
    default: true
attributes:
  check_mode:
    description: Can run in check mode and return the changed status prediction without modifying the target.
    support: full
    details: Reads the current dashboard and reports whether it would change; imports nothing.
  diff_mode:
    description: Returns details on what has changed (or would change, in check mode).
    support: full
    details: The diff shows the dashboard JSON before and after.
"""

EXAMPLES = r"""
- name: Import the systemd dashboard
  coilysiren.systemd_monitoring.grafana_dashboard_sync:
    url: http://localhost:3000
    token: "{{ vault_grafana_token }}"
    dashboard: "{{ lookup('ansible.builtin.file', 'deploy/observability/grafana/systemd.json') | from_json }}"
    folder_uid: infrastructure
    version_message: systemd-monitoring, allowlist changed
"""

RETURN = r"""
uid:
  description: The dashboard's uid.
  returned: always
  type: str
  sample: systemd-units
version:
  description: The dashboard's version in Grafana after the run (C(null) when Grafana did not have it, in check mode).
  returned: when I(state=present)
  type: int
  sample: 4
url:
  description: Where Grafana serves the dashboard.
  returned: when I(state=present) and the dashboard was imported
  type: str
  sample: /d/systemd-units/systemd-units
diff:
  description: The dashboard JSON in Grafana before and after (C(before) is empty when Grafana did not have it,
    C(after) is empty when I(state=absent)), without the fields Grafana manages.
  returned: in diff mode (C(--diff))
  type: dict
  contains:
    before:
      description: The dashboard before, as indented JSON, or empty.
      type: str
    after:
      description: The dashboard after, as indented JSON, or empty.
      type: str
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url

MANAGED = ("id", "version")


def comparable(dashboard: dict) -> dict:
    """The dashboard without the fields Grafana itself sets on import."""
    return {key: value for key, value in dashboard.items() if key not in MANAGED}


def request(module: AnsibleModule, method: str, path: str, body: dict | None = None):
    """One API call; (status, parsed JSON or {}). Fails with Grafana's own message otherwise."""
    headers = {"Authorization": "Bearer " + module.params["token"], "Accept": "application/json"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body)
    response, info = fetch_url(module, module.params["url"].rstrip("/") + path, data=data, headers=headers,
                               method=method, timeout=module.params["timeout"])
    status = info.get("status", -1)
    # on an HTTP error fetch_url has already read the body into info["body"]
    raw = info.get("body") or (response.read() if response else b"")
    try:
        payload = json.loads(raw or b"{}")
    except ValueError:
        payload = {}
    return status, payload if isinstance(payload, dict) else {}, info


def fail(module: AnsibleModule, what: str, status: int, payload: dict, info: dict) -> None:
    message = payload.get("message") or info.get("msg") or "no message"
    hint = {401: " (the token is wrong or expired)", 403: " (the token may not write dashboards)",
            412: " (changed in Grafana since; set overwrite to replace it)"}.get(status, "")
    module.fail_json(msg=f"Grafana at {module.params['url']}: {what} failed: HTTP {status}: {message}{hint}",
                     status=status)


def finish(module: AnsibleModule, diff: dict, **result) -> None:
    """Exit with the result; the before/after diff only when asked for (--diff), as Ansible's own modules do."""
    if module._diff:
        result["diff"] = diff
    module.exit_json(**result)


def remove(module: AnsibleModule, uid: str, status: int, current: dict, info: dict) -> None:
    """Delete the dashboard if Grafana has it (status is the answer to reading it)."""
    if status == 404:
        finish(module, {"before": "", "after": ""}, changed=False, uid=uid)
    if status != 200:
        fail(module, f"reading dashboard {uid}", status, current, info)
    diff = {"before": json.dumps(comparable(current.get("dashboard", {})), indent=2, sort_keys=True) + "\n",
            "after": ""}
    if not module.check_mode:
        status, answer, info = request(module, "DELETE", f"/api/dashboards/uid/{uid}")
        if status != 200:
            fail(module, f"deleting dashboard {uid}", status, answer, info)
    finish(module, diff, changed=True, uid=uid)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "token": {"type": "str", "required": True, "no_log": True},
            "dashboard": {"type": "dict"},
            "uid": {"type": "str"},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "folder_uid": {"type": "str", "default": ""},
            "version_message": {"type": "str", "default": "Imported by systemd-monitoring"},
            "overwrite": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 30},
            "validate_certs": {"type": "bool", "default": True},
        },
        required_if=[("state", "present", ("dashboard",)), ("state", "absent", ("dashboard", "uid"), True)],
        supports_check_mode=True,
    )
    wanted = module.params["dashboard"] or {}
    uid = module.params["uid"] or wanted.get("uid")
    if not uid:
        module.fail_json(msg="dashboard: the model has no uid; give it one so imports update it in place")
    status, current, info = request(module, "GET", f"/api/dashboards/uid/{uid}")
    if module.params["state"] == "absent":
        remove(module, uid, status, current, info)
    if status == 404:
        before, folder, version = None, None, None
    elif status == 200:
        before = current.get("dashboard", {})
        folder = current.get("meta", {}).get("folderUid", "")
        version = before.get("version")
    else:
        fail(module, f"reading dashboard {uid}", status, current, info)
    changed = before is None or comparable(before) != comparable(wanted) or folder != module.params["folder_uid"]
    diff = {"before": json.dumps(comparable(before), indent=2, sort_keys=True) + "\n" if before else "",
            "after": json.dumps(comparable(wanted), indent=2, sort_keys=True) + "\n"}
    if not changed or module.check_mode:
        finish(module, diff, changed=changed, uid=uid, version=version)
    body = {"dashboard": dict(comparable(wanted), id=before.get("id") if before else None,
                              version=version if version is not None else 0),
            "folderUid": module.params["folder_uid"], "overwrite": module.params["overwrite"],
            "message": module.params["version_message"]}
    status, answer, info = request(module, "POST", "/api/dashboards/db", body)
    if status != 200:
        fail(module, f"importing dashboard {uid}", status, answer, info)
    finish(module, diff, changed=True, uid=uid, version=answer.get("version"), url=answer.get("url"))


if __name__ == "__main__":
    main()

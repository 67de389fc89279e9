"""vmalert, as the role runs it, against a VictoriaMetrics cluster: the role's base URLs for
vmselect (`/select/<accountID>/prometheus`) and vminsert (`/insert/<accountID>/prometheus`) go
into the unit as given, and the vmalert binary of the lab builds every request below them: the
rules' queries, their annotation templates' queries, the restore of alert state and the remote
write (a stand-in answers for the cluster: tests/cluster_standin.py)."""
from __future__ import annotations

import shlex
import subprocess
import time

import lab
from cluster_standin import ClusterStandIn
from helpers import ANSIBLE_PLAYBOOK, ROOT

URLS = {"datasource": "http://vmselect:8481/select/7/prometheus",
        "remote_read": "http://vmselect:8481/select/7/prometheus",
        "remote_write": "http://vminsert:8480/insert/7/prometheus",
        "notifier": "http://alertmanager:9093"}
RULES = """groups:
  - name: cluster
    interval: 1s
    rules:
      - record: recorded
        expr: systemd_unit_info
      - alert: Firing
        expr: systemd_unit_info == 1
        for: 1s
        annotations:
          description: '{{ with query "systemd_boot_timestamp_seconds" }}{{ . | first | value }}{{ end }}'
"""


def exec_start(unit: str) -> list[str]:
    """The ExecStart= command line of a unit file, its continuation lines joined."""
    text = unit.replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    return shlex.split(line.removeprefix("ExecStart="))


def test_vmalert_queries_and_writes_below_the_cluster_base_urls(tmp_path):
    unit = tmp_path / "vmalert.service"
    done = subprocess.run(
        [ANSIBLE_PLAYBOOK, str(ROOT / "tests/alerts/render_vmalert_unit.yml"), "-e", f"unit_path={unit}",
         *[arg for name, url in URLS.items() for arg in ("-e", f"systemd_monitoring_alerts_vmalert_{name}_url={url}")]],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    flags = dict(arg.split("=", 1) for arg in exec_start(unit.read_text())[1:])
    assert {flags["-datasource.url"], flags["-remoteRead.url"], flags["-remoteWrite.url"], flags["-notifier.url"]} \
        == set(URLS.values())

    # the same flags, with the cluster's host names pointing at the stand-in, on loopback
    cluster = ClusterStandIn()
    (tmp_path / "rules.yml").write_text(RULES)
    for host in ("http://vmselect:8481", "http://vminsert:8480", "http://alertmanager:9093"):
        flags = {k: v.replace(host, cluster.url) for k, v in flags.items()}
    flags.update({"-rule": str(tmp_path / "rules.yml"), "-httpListenAddr": "127.0.0.1:0",
                  "-remoteWrite.flushInterval": "100ms"})
    vmalert = subprocess.Popen([lab.tool("vmalert"), *[f"{k}={v}" for k, v in flags.items()]],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        expected = {"/select/7/prometheus/api/v1/query", "/insert/7/prometheus/api/v1/write", "/api/v2/alerts"}
        deadline = time.monotonic() + 20
        while not expected <= set(cluster.paths) and time.monotonic() < deadline and vmalert.poll() is None:
            time.sleep(0.2)
    finally:
        vmalert.terminate()
        _, errors = vmalert.communicate(timeout=30)
        cluster.close()
    assert set(cluster.paths) == expected, (sorted(set(cluster.paths)), errors[-2000:])
    # restore at start, then per evaluation: the two rules and the template
    assert cluster.paths.count("/select/7/prometheus/api/v1/query") >= 4

"""A synthetic fleet for the read side at scale: copies of the known 24-hour history
(history.py), renamed, with every host padded to a realistic number of units.

One host in twenty is a copy of alpha (two failures, a crash loop, a restart burst, a mass
restart, a reboot, a stale timer, a missing unit, a heartbeat gap), one in a hundred a copy of
gamma (pushed the day before, nothing in the window), the rest copies of beta (clean all day).
Each copy's findings are therefore known: exactly those of the host it copies
(tests/summary/test_daily_summary.py spells them out).

Padding units (`pad-NN.service`, active all day, allowlisted) carry what a healthy service
pushes: its state, restart counter, start time and last exit status. They change no finding.
"""
from __future__ import annotations

import json
import time
import urllib.request
from typing import Iterator

import history

KINDS = ("alpha", "beta", "gamma")


def kind(index: int) -> str:
    """Which known host the fleet's host number `index` copies."""
    if index % 20 == 0:
        return "alpha"
    if index % 100 == 1:
        return "gamma"
    return "beta"


def name(index: int) -> str:
    return f"{kind(index)}-{index:04d}"


def padding(start: float, host: str, units: int) -> Iterator[str]:
    """`units` healthy services on `host`, at every tick of the window (as JSON lines)."""
    stamps = ",".join(str(int((start + k * history.STEP) * 1000)) for k in range(history.DAY // history.STEP))
    count = history.DAY // history.STEP

    def line(metric: dict, value: float) -> str:
        values = ",".join([json.dumps(value)] * count)
        return f'{{"metric":{json.dumps(metric)},"values":[{values}],"timestamps":[{stamps}]}}'

    for u in range(units):
        labels = {"host": host, "unit": f"pad-{u:02d}.service"}
        yield line({"__name__": "systemd_unit_info", **labels, "load_state": "loaded", "active_state": "active",
                    "sub_state": "running", "unit_type": "service", "allowlisted": "true"}, 1)
        yield line({"__name__": "systemd_unit_restart_count_total", **labels}, 0)
        yield line({"__name__": "systemd_unit_active_enter_timestamp_seconds", **labels}, start - 5 * history.DAY)
        yield line({"__name__": "systemd_unit_last_exit_status", **labels}, 0)


def build(start: float, hosts: int, pad_units: int = 0, originals: bool = False) -> Iterator[str]:
    """JSON lines for `hosts` hosts, host by host: each known host's lines built once and renamed
    (and the known hosts themselves, unpadded, with `originals`)."""
    known: dict[str, list[str]] = {k: [] for k in KINDS}
    for line in history.build(start).splitlines():
        host = json.loads(line)["metric"]["host"]
        known[host].append(line)
    if originals:
        for lines in known.values():
            yield from lines
    for index in range(hosts):
        original, renamed = kind(index), name(index)
        for line in known[original]:
            yield line.replace(f'"host": "{original}"', f'"host": "{renamed}"', 1)
        if original != "gamma":
            yield from padding(start, renamed, pad_units)


def load(url: str, start: float, hosts: int, pad_units: int = 0, originals: bool = False,
         batch_bytes: int = 8 << 20) -> None:
    """Import the fleet into the VictoriaMetrics at `url` and flush it, so queries see it all."""
    batch: list[str] = []
    size = 0

    def send() -> None:
        request = urllib.request.Request(f"{url}/api/v1/import", data="\n".join(batch).encode(), method="POST")
        urllib.request.urlopen(request, timeout=600).read()
        batch.clear()

    for line in build(start, hosts, pad_units, originals):
        batch.append(line)
        size += len(line)
        if size >= batch_bytes:
            send()
            size = 0
    if batch:
        send()
    urllib.request.urlopen(f"{url}/internal/force_flush", timeout=120).read()
    time.sleep(2)

"""Timers as the heartbeat reports them for issue 21's trust report, built from what each timer
did: it was first looked at (`watched_from`), fired every `interval` s from then on (a trigger
7 s after each multiple of the interval, as scheduled plus `late.get(j, 0.5)` s), each run ended
2 s after its trigger with `results.get(j, "success")`, and it did not fire at the triggers in
`skipped`. Samples come at the heartbeat's 30 s cadence, as JSON lines for /api/v1/import
(history.series), with the metric interface of the README's metric table:

- systemd_timer_triggers_total{unit}: triggers since the first look (0 at it);
- systemd_timer_last_trigger_lateness_seconds{unit}: the last trigger's lateness;
- systemd_timer_trigger_lateness_seconds_bucket{unit,le} (cumulative), _sum, _count: every trigger's;
- systemd_timer_runs_total{unit,service,result}: runs that ended, a series born at the first tick
  that saw a run end with its result, holding every such run since the tick before;
- systemd_timer_last_success_timestamp_seconds{unit}: when the last successful run ended;
- systemd_timer_interval_seconds{unit}, systemd_unit_info{unit,allowlisted} and the host's
  systemd_heartbeat_up.
"""
from __future__ import annotations

import contextlib
import time
import uuid
from bisect import bisect_right
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Iterator

from helpers import delete_series, import_series
from history import STEP, series

BOUNDS = ("1", "5", "10", "30", "60", "300", "900", "3600", "+Inf")
DAY = 86400


@dataclass
class Timer:
    unit: str
    interval: int
    watched_from: float
    late: dict[int, float] = field(default_factory=dict)
    results: dict[int, str] = field(default_factory=dict)
    skipped: set[int] = field(default_factory=set)
    allowlisted: bool = True

    @property
    def service(self) -> str:
        return self.unit.rsplit(".", 1)[0] + ".service"

    def triggers(self, until: float) -> list[tuple[int, float]]:
        """(j, moment) of every trigger from the first look to `until`."""
        first = self.watched_from + 7
        count = int((until - first) // self.interval) + 1 if until >= first else 0
        return [(j, first + j * self.interval + self.late.get(j, 0.5)) for j in range(count)
                if j not in self.skipped and first + j * self.interval + self.late.get(j, 0.5) <= until]


def build(host: str, timers: list[Timer], since: float, until: float) -> str:
    """JSON lines for `host`: heartbeat ticks from `since` to `until` (both in), each timer's
    series from its first look on."""
    ticks = [since + k * STEP for k in range(int((until - since) // STEP) + 1)]
    lines = [series("systemd_heartbeat_up", {"host": host}, [(t, 1.0) for t in ticks])]
    for timer in timers:
        lines += timer_lines(host, timer, [t for t in ticks if t >= timer.watched_from], until)
    return "\n".join(lines) + "\n"


def timer_lines(host: str, timer: Timer, ticks: list[float], until: float) -> list[str]:
    labels = {"host": host, "unit": timer.unit}
    fired = timer.triggers(until)
    moments = [moment for _j, moment in fired]
    late = [timer.late.get(j, 0.5) for j, _moment in fired]
    ends = [(moment + 2, timer.results.get(j, "success")) for j, moment in fired]
    seen = [bisect_right(moments, t) for t in ticks]  # triggers by each tick

    def running(values: list[float]) -> list[float]:
        return list(accumulate(values, initial=0.0))

    lines = [series("systemd_unit_info", {**labels, "load_state": "loaded", "active_state": "active",
                                          "sub_state": "waiting", "unit_type": "timer",
                                          "allowlisted": "true" if timer.allowlisted else "false"},
                    [(t, 1.0) for t in ticks]),
             series("systemd_timer_interval_seconds", labels, [(t, float(timer.interval)) for t in ticks]),
             series("systemd_timer_triggers_total", labels, [(t, float(n)) for t, n in zip(ticks, seen)]),
             series("systemd_timer_last_trigger_lateness_seconds", labels,
                    [(t, late[n - 1]) for t, n in zip(ticks, seen) if n])]
    for bound in BOUNDS:
        within = running([1.0 if v <= (float("inf") if bound == "+Inf" else float(bound)) else 0.0 for v in late])
        lines.append(series("systemd_timer_trigger_lateness_seconds_bucket", {**labels, "le": bound},
                            [(t, within[n]) for t, n in zip(ticks, seen)]))
    total = running(late)
    lines.append(series("systemd_timer_trigger_lateness_seconds_sum", labels, [(t, total[n]) for t, n in zip(ticks, seen)]))
    lines.append(series("systemd_timer_trigger_lateness_seconds_count", labels, [(t, float(n)) for t, n in zip(ticks, seen)]))
    for result in sorted({result for _at, result in ends}):
        mine = [moment for moment, r in ends if r == result]
        ended = [(t, bisect_right(mine, t)) for t in ticks]
        lines.append(series("systemd_timer_runs_total", {**labels, "service": timer.service, "result": result},
                            [(t, float(n)) for t, n in ended if n]))
    good = [moment for moment, r in ends if r == "success"]
    done = [(t, bisect_right(good, t)) for t in ticks]
    lines.append(series("systemd_timer_last_success_timestamp_seconds", labels, [(t, good[n - 1]) for t, n in done if n]))
    return lines


def week(end: float) -> list[Timer]:
    """The known week ending at `end` (tests/summary/test_timer_trust.py, tests/dashboard/test_trust_row.py):

    - alpha-pull.timer: every 300 s for the whole week, every run succeeded, each trigger 0.5 s late;
    - beta-pull.timer: every 300 s, first looked at 3 days before the end; run 10 failed with
      exit-code, runs 500 to 503 were killed (signal), trigger 700 came 40 s late;
    - gamma-pull.timer: every 60 s for the whole week, but it did not fire for one day (day 3);
    - delta.timer: like alpha, but not allowlisted.
    """
    start = end - 7 * DAY
    gamma_first = start - 3600 + 7
    return [
        Timer("alpha-pull.timer", 300, start - 3600),
        Timer("beta-pull.timer", 300, end - 3 * DAY, late={700: 40.0},
              results={10: "exit-code", **{j: "signal" for j in range(500, 504)}}),
        Timer("gamma-pull.timer", 60, start - 3600,
              skipped={j for j in range(12000) if start + 2 * DAY <= gamma_first + 60 * j < start + 3 * DAY}),
        Timer("delta.timer", 300, start - 3600, allowlisted=False),
    ]


@contextlib.contextmanager
def known_week(url: str, purpose: str) -> Iterator[tuple[str, float]]:
    """(host, end): week(end) and the hour before it imported into the (shared) VictoriaMetrics at
    `url` under a host label of its own, ending an hour ago on the hour; deleted afterwards."""
    host = f"tr21-{purpose}-{uuid.uuid4().hex[:8]}"
    end = (time.time() // 3600 - 1) * 3600
    try:
        import_series(url, build(host, week(end), end - 7 * DAY - 3600, end))
        yield host, end
    finally:
        delete_series(url, f'{{host="{host}"}}')

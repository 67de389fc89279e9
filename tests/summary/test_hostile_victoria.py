"""The daily summary against a VictoriaMetrics that answers HTTP 200 with the wrong things: what
it reads back is input. Each answer is one line on stderr and exit status 2 ("could not be
queried"), never a traceback (exit status 1 would read as "findings") nor exit status 70 (a
defect of the summary's own). A series without a host label is none of the heartbeat's and is
left out."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import standin as base

COMMAND = str(Path(sys.executable).parent / "systemd-daily-summary")


def row(metric, value=(1.0, "1")):
    return {"metric": metric, "value": list(value)}


def answer(result) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


GOOD_EXPORT = b""
# (what every query answers, what every export answers)
HOSTILE = {
    "a value that is not a number": (answer([row({"host": "a"}, (1.0, "lots"))]), GOOD_EXPORT),
    "a time that is not a number": (answer([row({"host": "a"}, ("noon", "1"))]), GOOD_EXPORT),
    "a label that is not text": (answer([row({"host": 5})]), GOOD_EXPORT),
    "labels that are a list": (answer([row(["host", "a"])]), GOOD_EXPORT),
    "a row that is a string": (answer(["host=a"]), GOOD_EXPORT),
    "a result that is an object": (answer({"host": "a"}), GOOD_EXPORT),
    "a value pair of three": (answer([{"metric": {"host": "a"}, "value": [1, "1", "2"]}]), GOOD_EXPORT),
    "no data": (json.dumps({"status": "success"}).encode(), GOOD_EXPORT),
    "an export value that is text": (answer([]), b'{"metric":{"host":"a","unit":"u.service"},'
                                                 b'"values":["1"],"timestamps":[1]}\n'),
    "an export without timestamps": (answer([]), b'{"metric":{"host":"a","unit":"u.service"},"values":[1]}\n'),
    "an export of unequal lengths": (answer([]), b'{"metric":{"host":"a","unit":"u.service"},'
                                                 b'"values":[1,2],"timestamps":[1]}\n'),
    "an export label that is not text": (answer([]), b'{"metric":{"host":["a"],"unit":"u.service"},'
                                                     b'"values":[1],"timestamps":[1]}\n'),
    "an export line that is a list": (answer([]), b'[1, 2]\n'),
}


class HostileVictoria(base.StandIn):
    """A VictoriaMetrics stand-in: HTTP 200 and a fixed body for each API path."""

    def __init__(self, query: bytes, export: bytes, query_range: bytes):
        self.bodies = {"/api/v1/query": query, "/api/v1/export": export, "/api/v1/query_range": query_range}
        super().__init__()

    def _handler(self):
        standin = self

        class Handler(base.Handler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.reply(200, standin.bodies.get(self.path, b""))

        return Handler


def summary_against(query: bytes, export: bytes, query_range: bytes = answer([])) -> subprocess.CompletedProcess:
    """The summary against a VictoriaMetrics that answers every instant query with `query`, every
    range query with `query_range` and every export with `export`."""
    victoria = HostileVictoria(query, export, query_range)
    try:
        return subprocess.run([COMMAND, "--url", victoria.url, "--since", "1h"],
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        victoria.close()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_wrong_answer_is_one_line_and_exit_two(case):
    done = summary_against(*HOSTILE[case])
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.startswith("systemd-daily-summary: VictoriaMetrics at http://127.0.0.1:")
    assert done.stderr.count("\n") == 1


def test_series_without_a_host_label_are_left_out():
    done = summary_against(answer([row({}), row({"unit": "x.service"})]),
                           b'{"metric":{"__name__":"systemd_unit_info","unit":"u.service","active_state":"failed"},'
                           b'"values":[1],"timestamps":[1000]}\n',
                           answer([{"metric": {"unit": "x.timer"}, "values": [[1, "1"]]}]))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("# systemd daily summary, ") and "##" not in done.stdout  # no host: no report


def test_a_series_lacking_a_unit_label_is_no_crash():
    done = summary_against(answer([row({"host": "a"})]), GOOD_EXPORT,
                           answer([{"metric": {"host": "a"}, "values": [[1, "1"]]}]))
    assert done.returncode in (0, 1) and done.stderr == ""


def test_a_vector_where_a_range_belongs_is_exit_two():
    done = summary_against(answer([]), GOOD_EXPORT, answer([row({"host": "a"})]))
    assert (done.returncode, done.stdout) == (2, "") and done.stderr.count("\n") == 1, done.stderr

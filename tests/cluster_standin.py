"""A STAND-IN for a VictoriaMetrics cluster's HTTP front (vmselect, vminsert) and Alertmanager,
not the cluster: on loopback, it records the path of every request and answers only what is
asked under the cluster's per-tenant prefixes (no cluster binary can be installed here).

    /select/<accountID>/prometheus/<path>   with `backend`, forwarded to <backend>/<path> (a
                                            single-node VictoriaMetrics serves the same API
                                            unprefixed); without, every query gets one sample
    /insert/<accountID>/<path>              204, the body dropped
    /api/v2/alerts                          200 (Alertmanager)
    anything else                           404, as vmselect and vminsert refuse it
"""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import standin as base

SELECT = re.compile(r"^/select/(\d+)/prometheus(/api/v1/[a-z_]+)$")
INSERT = re.compile(r"^/insert/(\d+)/")


class ClusterStandIn(base.StandIn):
    def __init__(self, backend: str = ""):
        self.backend = backend
        self.paths: list[str] = []
        super().__init__()

    def _handler(self):
        standin = self

        class Handler(base.Handler):
            def do_GET(self):
                self.serve(b"")

            def do_POST(self):
                self.serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def serve(self, body: bytes) -> None:
                path, _, query = self.path.partition("?")
                standin.paths.append(path)
                select = SELECT.match(path)
                if select and standin.backend:
                    self.forward(f"{standin.backend}{select.group(2)}{'?' + query if query else ''}", body)
                elif select:
                    sample = {"metric": {"host": "h1", "unit": "a.service"}, "value": [time.time(), "1"]}
                    self.reply(200, json.dumps({"status": "success", "data": {
                        "resultType": "vector", "result": [sample]}}).encode())
                elif INSERT.match(path):
                    self.reply(204)
                elif path == "/api/v2/alerts":
                    self.reply(200)
                else:
                    self.reply(404, b"unsupported path\n", "text/plain")

            def forward(self, url: str, body: bytes) -> None:
                request = urllib.request.Request(url, data=body if self.command == "POST" else None,
                                                 headers={"Content-Type": self.headers.get("Content-Type", "")})
                try:
                    with urllib.request.urlopen(request, timeout=60) as reply:
                        self.reply(reply.status, reply.read(), reply.headers.get("Content-Type", ""))
                except urllib.error.HTTPError as error:
                    self.reply(error.code, error.read(), "text/plain")

        return Handler

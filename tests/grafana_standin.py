"""A STAND-IN for Grafana's HTTP API, not Grafana: only the documented subset the dashboard
import uses, on loopback, for tests (no Grafana server can be installed here).

    GET  /api/dashboards/uid/<uid>   200 {"dashboard": {...}, "meta": {"folderUid": ...}} or 404
    POST /api/dashboards/db          {dashboard, folderUid, overwrite, message}
                                     401 on a wrong token; 412 when overwrite is false and the
                                     version sent is not the stored one; else 200 and version + 1
"""
from __future__ import annotations

import json

import standin as base


class GrafanaStandIn(base.StandIn):
    def __init__(self, token: str):
        self.token = token
        self.dashboards: dict[str, dict] = {}  # uid -> {"dashboard", "folderUid", "messages"}
        self.posts = 0
        self.edit_after_read = False  # simulate someone saving in Grafana between our read and write
        super().__init__()

    def _handler(self):
        standin = self

        class Handler(base.Handler):
            def answer(self, status: int, body: dict) -> None:
                self.reply(status, json.dumps(body).encode())

            def authorised(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {standin.token}":
                    self.answer(401, {"message": "invalid API key"})
                    return False
                return True

            def stored_dashboard(self) -> str | None:
                """The uid of /api/dashboards/uid/<uid> if the stand-in has it; else answers 401 or 404."""
                if not self.authorised():
                    return None
                uid = self.path.rsplit("/", 1)[-1]
                if not self.path.startswith("/api/dashboards/uid/") or uid not in standin.dashboards:
                    self.answer(404, {"message": "Dashboard not found"})
                    return None
                return uid

            def do_GET(self):
                uid = self.stored_dashboard()
                if uid is None:
                    return
                stored = standin.dashboards[uid]
                self.answer(200, {"dashboard": stored["dashboard"], "meta": {"folderUid": stored["folderUid"]}})
                if standin.edit_after_read:
                    stored["dashboard"]["version"] += 1

            def do_DELETE(self):
                uid = self.stored_dashboard()
                if uid is not None:
                    del standin.dashboards[uid]
                    self.answer(200, {"title": uid, "message": "Dashboard deleted"})

            def do_POST(self):
                if not self.authorised():
                    return
                if self.path != "/api/dashboards/db":
                    self.answer(404, {"message": "Not found"})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                dashboard = body["dashboard"]
                stored = standin.dashboards.get(dashboard["uid"])
                if stored and not body.get("overwrite") and dashboard.get("version") != stored["dashboard"]["version"]:
                    self.answer(412, {"status": "version-mismatch",
                                      "message": "The dashboard has been changed by someone else"})
                    return
                version = stored["dashboard"]["version"] + 1 if stored else 1
                standin.posts += 1
                saved = dict(dashboard, id=stored["dashboard"]["id"] if stored else len(standin.dashboards) + 1,
                             version=version)
                standin.dashboards[dashboard["uid"]] = {
                    "dashboard": saved, "folderUid": body.get("folderUid", ""),
                    "messages": (stored["messages"] if stored else []) + [body.get("message", "")]}
                self.answer(200, {"id": saved["id"], "uid": saved["uid"], "status": "success", "version": version,
                                  "url": f"/d/{saved['uid']}/{saved['uid']}"})

        return Handler

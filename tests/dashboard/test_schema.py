"""The generated dashboard against Grafana's dashboard JSON schema.

No Grafana server can be installed here, and the PyPI grafana-foundation-sdk wheels carry no
JSON schema. So the schema is derived, at test time, from Grafana's own published types: the
`Dashboard` interface of the npm package @grafana/schema (dist/types/raw/dashboard/x/
types.gen.d.ts), turned into draft-07 JSON schema by typescript-json-schema. Both are pinned;
the result is cached next to the lab's other downloads. This checks structure and types, not
how Grafana renders it.
"""
from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import jsonschema
import pytest

from helpers import inventory_allowlist
from helpers_dashboard import systemd_dashboard

GRAFANA_SCHEMA = "@grafana/schema@13.2.3"
TS_JSON_SCHEMA = "typescript-json-schema@0.65.1"
CACHE = Path(os.environ.get("SYSTEMD_MONITORING_LAB_CACHE", "/var/cache/systemd-monitoring-lab")) / "grafana-schema"


@pytest.fixture(scope="module")
def schema() -> dict:
    target = CACHE / "dashboard.schema.json"
    if not target.exists():
        CACHE.mkdir(parents=True, exist_ok=True)

        def run(*argv):
            return subprocess.run(argv, cwd=CACHE, check=True, capture_output=True, text=True, timeout=300)
        packed = run("npm", "pack", "--silent", GRAFANA_SCHEMA).stdout.strip().splitlines()[-1]
        with tarfile.open(CACHE / packed) as archive:
            archive.extractall(CACHE / "grafana-schema", filter="data")
        run("npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(CACHE / "tools"), TS_JSON_SCHEMA)
        # --strictNullChecks keeps the TypeScript "| null" (threshold steps start at null)
        run(str(CACHE / "tools/node_modules/.bin/typescript-json-schema"), "--required", "--strictNullChecks",
            str(CACHE / "grafana-schema/package/dist/types/raw/dashboard/x/types.gen.d.ts"), "Dashboard",
            "-o", str(target))
    return json.loads(target.read_text())


def test_schema_is_grafanas_dashboard(schema):
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert {"panels", "templating", "schemaVersion", "uid", "title"} <= set(schema["properties"])


def test_generated_dashboard_is_valid(schema):
    units = inventory_allowlist() + ["*-server.service", "media.mount"]
    dashboard = systemd_dashboard.systemd_monitoring_dashboard(units)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(dashboard), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:20])


def test_the_validation_catches_a_broken_dashboard(schema):
    broken = systemd_dashboard.systemd_monitoring_dashboard(["a.service"])
    broken["panels"][1]["gridPos"] = {"x": "left"}
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))

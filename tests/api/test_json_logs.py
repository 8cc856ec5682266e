"""`opencs server --log-format json` (issue 12 item 5): every line of a real server is one JSON
object, and the lines written for a request carry the RequestId its reply names."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest

from opencs import logfmt
from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration


def test_formatter_adds_the_request_id() -> None:
    rec = logging.LogRecord("opencs.api", logging.INFO, __file__, 1, "refused %d", (401,), None)
    assert "RequestId" not in json.loads(logfmt.JsonFormatter().format(rec))
    token = logfmt.request_id.set("RID-1")
    try:
        doc = json.loads(logfmt.JsonFormatter().format(rec))
    finally:
        logfmt.request_id.reset(token)
    assert doc["RequestId"] == "RID-1" and doc["message"] == "refused 401" and doc["level"] == "INFO"
    with pytest.raises(ValueError):
        logfmt.setup("info", "xml")


def test_server_logs_json_lines_with_request_ids(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", args=["--log-format", "json"],
                        env={"OPENCS_USAGE_INTERVAL": "0", "OPENCS_MONITOR_INTERVAL": "0"})
    try:
        srv.start()
        r = httpx.get(f"{srv.url}/clusters", timeout=10)  # unsigned: refused, and logged
        assert r.status_code in (400, 401)
        rid = r.json()["RequestId"]
        time.sleep(0.5)
    finally:
        srv.kill()
    lines = [ln for ln in srv.log.read_text().splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]  # every line is JSON (uvicorn's own included)
    assert any(d.get("RequestId") == rid and "refused" in d["message"] for d in docs), lines[-5:]
    assert any("opencs API at" in d["message"] for d in docs)

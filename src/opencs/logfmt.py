"""Logs of the control plane itself (issue 12 item 5): text, or one JSON object per line
(`--log-format json`) carrying the RequestId of the request a line was written for, so that a
request's lines can be found by the id its reply (and any error body) names."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

# set by the API middleware for the duration of a request (worker threads inherit it through anyio)
request_id: ContextVar[str] = ContextVar("opencs_request_id", default="")
FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            doc["RequestId"] = rid
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup(level: str, fmt: str = "text") -> None:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

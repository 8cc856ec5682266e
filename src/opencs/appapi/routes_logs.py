"""GET /projects/{name}/logs and /services/{service_id}/logs (issue 12 item 5): every container's
output through the engines' log APIs, each line `<container> | [<time> ]<text>`, as text/plain.

Parameters: `follow` (true: keep the reply open and send lines as they come), `tail` (lines per
container), `since` (unix seconds, or a duration back from now such as 10m), `timestamps`.
"""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from opencs.appapi.routes_projects import call, cluster_of, flag, projects
from opencs.errors import BadRequest
from opencs.services.projects.logs import MAX_TAIL, LogOptions

router = APIRouter()
_AGO = re.compile(r"^(\d+)(s|m|h)$")


def _options(follow: str | None, tail: str | None, since: str | None, timestamps: str | None) -> LogOptions:
    n: int | None = None
    if tail not in (None, "", "all"):
        if not tail.isdigit() or not 0 <= int(tail) <= MAX_TAIL:
            raise BadRequest(f"Parameter 'tail': all or 0-{MAX_TAIL} lines", code="InvalidParameter.tail")
        n = int(tail)
    start: float | None = None
    if since:
        m = _AGO.match(since)
        try:
            start = time.time() - int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)] if m else float(since)
        except ValueError:
            raise BadRequest("Parameter 'since': unix seconds or a duration such as 10m",
                             code="InvalidParameter.since") from None
    return LogOptions(flag(follow, False, "follow"), n, start, flag(timestamps, False, "timestamps"))


def _reply(lines: object) -> StreamingResponse:
    return StreamingResponse(lines, media_type="text/plain; charset=utf-8",  # type: ignore[arg-type]
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})


@router.get("/projects/{name}/logs")
async def project_logs(request: Request, name: str, follow: str | None = None, tail: str | None = None,
                       since: str | None = None, timestamps: str | None = None) -> StreamingResponse:
    opts = _options(follow, tail, since, timestamps)
    return _reply(await call(projects(request).logs, cluster_of(request), name, None, opts))


@router.get("/services/{service_id}/logs")
async def service_logs(request: Request, service_id: str, follow: str | None = None, tail: str | None = None,
                       since: str | None = None, timestamps: str | None = None) -> StreamingResponse:
    opts = _options(follow, tail, since, timestamps)
    return _reply(await call(projects(request).logs, cluster_of(request), "", service_id, opts))

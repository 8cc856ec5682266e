"""GET /clusters/{id}/events: what happened to a cluster and its projects (task stages, node
health, containers that died, scaling decisions and their cause), oldest first; `?project=` one
project's, `?kind=`, `?after=<id>` the ones after an event; `?follow=true` keeps the reply open
and streams each new event as a server-sent event (`id:` the event id, `data:` its JSON)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import anyio
from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from opencs.api.deps import services
from opencs.api.errors import request_id_of
from opencs.api.schemas import ClusterId, QueryText

router = APIRouter()
POLL_SECONDS = 0.5


@router.get("/clusters/{cluster_id}/events", response_model=None)
async def cluster_events(
    cluster_id: ClusterId, request: Request, project: QueryText = None,
    kind: Literal["task", "node", "container", "scaling"] | None = None,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    follow: bool = False,
) -> JSONResponse | StreamingResponse:
    rt = services(request)
    await to_thread.run_sync(rt.clusters.get_row, cluster_id)  # 404 for an unknown cluster
    events = rt.events

    def page(since: int) -> list[dict[str, object]]:
        return events.list(cluster_id, after=since, project=project, kind=kind, limit=limit)

    first = await to_thread.run_sync(page, after)
    if not follow:
        return JSONResponse({"events": first, "request_id": request_id_of(request)})

    async def stream() -> AsyncIterator[bytes]:
        batch, last = first, after
        yield b": following\n\n"  # headers and a first byte at once
        while True:
            for e in batch:
                last = int(str(e["id"]))
                yield f"id: {last}\nevent: {e['kind']}\ndata: {json.dumps(e)}\n\n".encode()
            if await request.is_disconnected():
                return
            await anyio.sleep(POLL_SECONDS)
            batch = await to_thread.run_sync(page, last)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

"""A long operation's stages, live: server-sent events rendered from DescribeTaskInfo.

The stream asks GET /tasks/{id} (in-process, as the user) twice a second and sends the stages as
HTML each time they changed (`event: stages`), then `event: done` when the task has ended; htmx's
SSE extension swaps them in, so the page never reloads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from opencs.console.web import Ctx, page

POLL_SECONDS = 0.5
MAX_SECONDS = 1800
TERMINAL = ("success", "fail", "cancelled")


def sse_event(name: str, html: str) -> bytes:
    data = "".join(f"data: {line}\n" for line in html.splitlines() or [""])
    return f"event: {name}\n{data}\n".encode()


async def _stream(ctx: Ctx, tid: str) -> AsyncIterator[bytes]:
    last = None
    loop = asyncio.get_running_loop()
    end = loop.time() + MAX_SECONDS
    while loop.time() < end:
        reply = await ctx.api("GET", f"/tasks/{tid}")
        if not reply.ok:
            yield sse_event("stages", ctx.html("_stages.html", task=None, error=reply.message))
            yield sse_event("done", "")
            return
        stamp = json.dumps(reply.body, sort_keys=True)
        if stamp != last:
            last = stamp
            yield sse_event("stages", ctx.html("_stages.html", task=reply.body, error=""))
        if reply.body.get("state") in TERMINAL:
            yield sse_event("done", "")
            return
        if await ctx.request.is_disconnected():
            return
        await asyncio.sleep(POLL_SECONDS)


@page
async def events(ctx: Ctx) -> Response:
    tid = ctx.request.path_params["task_id"]
    return StreamingResponse(_stream(ctx, tid), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@page
async def task(ctx: Ctx) -> Response:
    tid = ctx.request.path_params["task_id"]
    return ctx.render("task.html", task_id=tid, title=f"Task {tid}", cluster_id="")


routes = [
    Route("/tasks/{task_id}", task, methods=["GET"]),
    Route("/tasks/{task_id}/events", events, methods=["GET"]),
]

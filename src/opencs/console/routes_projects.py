"""Projects of a cluster (spec §10): list, the compose editor (the server's error at its line),
deploy, a project's services and containers live, start/stop/kill/redeploy/delete, scale a service.

Every call is the cluster's Application API (what master_url serves), in-process and admitted by
the same RAM decision (`Ctx.app`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from anyio import to_thread
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from opencs.console.calls import Reply
from opencs.console.forms import template_line, to_int
from opencs.console.routes_tasks import sse_event
from opencs.console.web import DENIED, Ctx, page, prefix, refused_status
from opencs.errors import ApiError

SAMPLE = """version: '3'
services:
  web:
    image: busybox
    command: httpd -f -p 8080 -h /www
"""
VERBS = ("start", "stop", "kill", "redeploy")
FOLLOW_SECONDS = 1800  # a log stream ends after this (the page's EventSource opens a new one)


def _cid(ctx: Ctx) -> str:
    return str(ctx.request.path_params["cluster_id"])


def _name(ctx: Ctx) -> str:
    return str(ctx.request.path_params["name"])


def _editor(ctx: Ctx, values: dict[str, str], error: str = "", line: int | None = None, status: int = 200,
            headers: dict[str, str] | None = None) -> Response:
    template = values.get("template", SAMPLE)
    return ctx.render("_editor.html", status, headers, cluster_id=_cid(ctx), values=values, error=error, line=line,
                      lines=range(1, template.count("\n") + 2))


@page
async def projects(ctx: Ctx) -> Response:
    cid = _cid(ctx)
    if not ctx.may_app(cid, "GET", "/projects"):
        return ctx.render("error.html", 403, message="You may not see this cluster's projects.")
    reply = await ctx.app(cid, "GET", "/projects/", query={"services": "true", "containers": "false"})
    rows = reply.body if reply.ok and isinstance(reply.body, list) else []
    return ctx.render("projects.html", cluster_id=cid, projects=rows, error="" if reply.ok else reply.message,
                      may_create=ctx.may_app(cid, "POST", "/projects"),
                      values={"name": "", "version": "1.0", "template": SAMPLE}, line=None,
                      lines=range(1, SAMPLE.count("\n") + 2))


@page
async def create(ctx: Ctx) -> Response:
    cid = _cid(ctx)
    f = ctx.form
    reply = await ctx.app(cid, "POST", "/projects/", body={
        "name": f.get("name", ""), "version": f.get("version") or "1.0", "template": f.get("template", "")})
    if not reply.ok:
        return _editor(ctx, f, f"{reply.message} ({reply.code})", template_line(f.get("template", ""), reply.message),
                       refused_status(ctx.request))
    url = f"{prefix(ctx.request)}/clusters/{cid}/projects/{f.get('name', '')}"
    return Response(status_code=204, headers={"HX-Redirect": url})


async def _project(ctx: Ctx) -> Reply:
    return await ctx.app(_cid(ctx), "GET", f"/projects/{_name(ctx)}", query={"services": "true",
                                                                             "containers": "true"})


def _buttons(ctx: Ctx) -> dict[str, bool]:
    cid, name = _cid(ctx), _name(ctx)
    out = {v: ctx.may_app(cid, "POST", f"/projects/{name}/{v}") for v in (*VERBS, "update")}
    out["delete"] = ctx.may_app(cid, "DELETE", f"/projects/{name}")
    out["confirm"] = ctx.may_app(cid, "POST", f"/projects/{name}/confirm-update")
    out["rollback"] = ctx.may_app(cid, "POST", f"/projects/{name}/rollback-update")
    out["scale"] = ctx.may_app(cid, "POST", f"/services/{name}_x/scale")
    out["logs"] = ctx.may_app(cid, "GET", "/containers/x/logs", "engine")
    return out


@page
async def project(ctx: Ctx) -> Response:
    reply = await _project(ctx)
    if not reply.ok:
        return ctx.render("error.html", reply.status if reply.status >= 400 else 500, message=reply.message)
    p = reply.body
    may = _buttons(ctx)
    return ctx.render("project.html", cluster_id=_cid(ctx), p=p, may=may, may_logs=may["logs"],
                      bg=p.get("blue_green") or {})


@page
async def live(ctx: Ctx) -> Response:
    reply = await _project(ctx)
    if not reply.ok:
        return ctx.render("_flash.html", error=reply.message)
    p = reply.body
    may = _buttons(ctx)
    return ctx.render("_project_live.html", cluster_id=_cid(ctx), p=p, bg=p.get("blue_green") or {},
                      may=may, may_logs=may["logs"])


def _done(ctx: Ctx, reply: Reply, what: str) -> Response:
    if not reply.ok:
        return ctx.render("_flash.html", error=f"{what}: {reply.message}")
    tid = reply.body.get("task_id") if isinstance(reply.body, dict) else None
    if tid:
        return ctx.render("_task.html", task_id=tid, title=what, cluster_id=_cid(ctx))
    return ctx.render("_flash.html", error="", ok=f"{what}: accepted")


@page
async def action(ctx: Ctx) -> Response:
    cid, name, verb = _cid(ctx), _name(ctx), str(ctx.request.path_params["verb"])
    if verb == "delete":
        reply = await ctx.app(cid, "DELETE", f"/projects/{name}", query={"force": "true"})
        if reply.ok:
            return Response(status_code=204, headers={"HX-Redirect": f"{prefix(ctx.request)}/clusters/{cid}/projects"})
    elif verb in ("confirm", "rollback"):
        reply = await ctx.app(cid, "POST", f"/projects/{name}/{verb}-update", query={"force": "true"})
    elif verb in VERBS:
        reply = await ctx.app(cid, "POST", f"/projects/{name}/{verb}")
    else:
        return ctx.render("_flash.html", error=f"no such action: {verb}")
    return _done(ctx, reply, f"{verb.capitalize()} {name}")


@page
async def update(ctx: Ctx) -> Response:
    """A new version: rolling, or blue-green with the share of requests the new version gets."""
    cid, name, f = _cid(ctx), _name(ctx), ctx.form
    body: dict[str, Any] = {"template": f.get("template", ""), "version": f.get("version", "")}
    if f.get("method") == "blue-green":
        new = to_int(f.get("weight_new"))
        body |= {"update_method": "blue-green",
                 "weights": {"new": new, "old": 100 - new if isinstance(new, int) else new}}
    reply = await ctx.app(cid, "POST", f"/projects/{name}/update", body=body)
    if not reply.ok:
        line = template_line(f.get("template", ""), reply.message)
        return ctx.render("_flash.html", error=f"Update {name}: {reply.message}"
                                               + (f" (template line {line})" if line else ""))
    return _done(ctx, reply, f"Update {name} to {body['version']}")


@page
async def weights(ctx: Ctx) -> Response:
    cid, name = _cid(ctx), _name(ctx)
    new = to_int(ctx.form.get("weight_new"))
    reply = await ctx.app(cid, "POST", f"/projects/{name}/update", body={
        "update_method": "blue-green", "weights": {"new": new, "old": 100 - new if isinstance(new, int) else new}})
    return _done(ctx, reply, f"Weights of {name}: new {new}%")


@page
async def scale(ctx: Ctx) -> Response:
    cid, sid = _cid(ctx), ctx.form.get("service", "")
    reply = await ctx.app(cid, "POST", f"/services/{sid}/scale",
                          body={"type": "scale_to", "value": to_int(ctx.form.get("value"))})
    return _done(ctx, reply, f"Scale {sid} to {ctx.form.get('value')}")


routes = [
    Route("/clusters/{cluster_id}/projects", projects, methods=["GET"]),
    Route("/clusters/{cluster_id}/projects", create, methods=["POST"]),
    Route("/clusters/{cluster_id}/projects/{name}", project, methods=["GET"]),
    Route("/clusters/{cluster_id}/projects/{name}/live", live, methods=["GET"]),
    Route("/clusters/{cluster_id}/projects/{name}/update", update, methods=["POST"]),
    Route("/clusters/{cluster_id}/projects/{name}/weights", weights, methods=["POST"]),
    Route("/clusters/{cluster_id}/projects/{name}/{verb}", action, methods=["POST"]),
    Route("/clusters/{cluster_id}/services/scale", scale, methods=["POST"]),
]


async def _logs_text(ctx: Ctx, cid: str, sid: str, container: str) -> tuple[int, str]:
    """(status, text): the Docker API's logs of one container, admitted as master_url admits
    `GET /containers/{id}/logs` (the user's right on the cluster's Docker API)."""
    if not ctx.may_app(cid, "GET", f"/containers/{container}/logs", "engine"):
        return 403, DENIED
    try:
        return 200, await to_thread.run_sync(ctx.console.services.projects.container_logs, cid, sid, container, 200)
    except ApiError as e:
        return e.status, f"{e.message} ({e.code})"


def _new_lines(text: str, last: str) -> tuple[list[str], str]:
    """Lines of a timestamped log tail after the stamp `last` (docker's RFC 3339 stamps sort as text)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    fresh = [ln for ln in lines if ln.split(" ", 1)[0] > last]
    return fresh, (fresh[-1].split(" ", 1)[0] if fresh else last)


async def _follow(ctx: Ctx, cid: str, sid: str, container: str) -> AsyncIterator[bytes]:
    last = ""
    for _ in range(FOLLOW_SECONDS):
        status, text = await _logs_text(ctx, cid, sid, container)
        if status != 200:
            yield sse_event("logs", ctx.html("_logs_lines.html", lines=[text], failed=True))
            return
        fresh, last = _new_lines(text, last)
        if fresh:
            yield sse_event("logs", ctx.html("_logs_lines.html", lines=fresh, failed=False))
        if await ctx.request.is_disconnected():
            return
        await asyncio.sleep(1)


@page
async def logs_events(ctx: Ctx) -> Response:
    """The container's output as it comes: new lines appended, a second apart (server-sent events)."""
    cid, sid, container = _cid(ctx), str(ctx.request.path_params["service_id"]), str(ctx.request.path_params["cid"])
    return StreamingResponse(_follow(ctx, cid, sid, container), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@page
async def logs(ctx: Ctx) -> Response:
    cid, sid, container = _cid(ctx), str(ctx.request.path_params["service_id"]), str(ctx.request.path_params["cid"])
    if not ctx.may_app(cid, "GET", f"/containers/{container}/logs", "engine"):
        return ctx.render("error.html", 403, message=DENIED)
    return ctx.render("logs.html", cluster_id=cid, service_id=sid, container=container)


LOGS = "/clusters/{cluster_id}/services/{service_id}/containers/{cid}/logs"
routes += [Route(LOGS, logs, methods=["GET"]), Route(LOGS + "/events", logs_events, methods=["GET"])]

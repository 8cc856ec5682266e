"""A cluster's nodes: remove one (DeleteClusterNode), reset one (ResetClusterNode), attach free
instances of the machine pool (AttachInstances, the operator's); each a task shown live."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from opencs.console.calls import Reply
from opencs.console.forms import field_errors
from opencs.console.web import Ctx, page


def _task(ctx: Ctx, reply: Reply, title: str) -> Response:
    cid = str(ctx.request.path_params["cluster_id"])
    if not reply.ok or not isinstance(reply.body, dict) or not reply.body.get("task_id"):
        errors, general = field_errors(reply)
        return ctx.render("_flash.html", error=f"{title}: " + ("; ".join(errors.values()) or general))
    return ctx.render("_task.html", task_id=reply.body["task_id"], title=title, cluster_id=cid)


@page
async def remove(ctx: Ctx) -> Response:
    cid, ip = ctx.request.path_params["cluster_id"], ctx.request.path_params["ip"]
    release = "true" if ctx.form.get("release") == "on" else "false"
    reply = await ctx.api("DELETE", f"/clusters/{cid}/ip/{ip}", query={"releaseInstance": release})
    return _task(ctx, reply, f"Remove node {ip}")


@page
async def reset(ctx: Ctx) -> Response:
    cid, iid = ctx.request.path_params["cluster_id"], ctx.request.path_params["instance_id"]
    reply = await ctx.api("POST", f"/clusters/{cid}/instances/{iid}/reset", body={})
    return _task(ctx, reply, f"Reset node {iid}")


@page
async def attach(ctx: Ctx) -> Response:
    cid = ctx.request.path_params["cluster_id"]
    chosen = [i.strip() for i in ctx.form.get("instances", "").split(",") if i.strip()]
    reply = await ctx.api("POST", f"/clusters/{cid}/attach", body={"instances": chosen})
    return _task(ctx, reply, f"Attach {', '.join(chosen) or 'nothing'}")


routes = [
    Route("/clusters/{cluster_id}/nodes/{ip}/remove", remove, methods=["POST"]),
    Route("/clusters/{cluster_id}/nodes/{instance_id}/reset", reset, methods=["POST"]),
    Route("/clusters/{cluster_id}/attach", attach, methods=["POST"]),
]

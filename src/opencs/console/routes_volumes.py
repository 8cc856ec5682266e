"""Volumes of a cluster (spec §10.9): every node's volumes and who uses them; create (local), delete."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from opencs.console.web import Ctx, page


def _cid(ctx: Ctx) -> str:
    return str(ctx.request.path_params["cluster_id"])


async def _listing(ctx: Ctx, cid: str, error: str = "", status: int = 200) -> Response:
    reply = await ctx.app(cid, "GET", "/volumes")
    vols = reply.body.get("Volumes", []) if reply.ok and isinstance(reply.body, dict) else []
    return ctx.render("_volumes.html", status, cluster_id=cid, volumes=vols,
                      error=error or ("" if reply.ok else reply.message),
                      may_delete=ctx.may_app(cid, "DELETE", "/volumes/x"))


@page
async def volumes(ctx: Ctx) -> Response:
    cid = _cid(ctx)
    if not ctx.may_app(cid, "GET", "/volumes"):
        return ctx.render("error.html", 403, message="You may not see this cluster's volumes.")
    listing = (await _listing(ctx, cid)).body
    return ctx.render("volumes.html", cluster_id=cid, listing=bytes(listing).decode(),
                      may_create=ctx.may_app(cid, "POST", "/volumes/create"))


@page
async def create(ctx: Ctx) -> Response:
    cid = _cid(ctx)
    reply = await ctx.app(cid, "POST", "/volumes/create", body={"name": ctx.form.get("name", ""), "driver": "local"})
    return await _listing(ctx, cid, "" if reply.ok else f"{reply.message} ({reply.code})")


@page
async def delete(ctx: Ctx) -> Response:
    cid, name = _cid(ctx), str(ctx.request.path_params["name"])
    reply = await ctx.app(cid, "DELETE", f"/volumes/{name}")
    return await _listing(ctx, cid, "" if reply.ok else f"{reply.message} ({reply.code})")


routes = [
    Route("/clusters/{cluster_id}/volumes", volumes, methods=["GET"]),
    Route("/clusters/{cluster_id}/volumes", create, methods=["POST"]),
    Route("/clusters/{cluster_id}/volumes/{name}/delete", delete, methods=["POST"]),
]

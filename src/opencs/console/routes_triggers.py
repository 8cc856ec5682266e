"""Triggers of a cluster (spec §11): create (its secret shown once, with the URL to copy), rotate,
delete; when each was last called."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from opencs.console.forms import field_errors, to_int
from opencs.console.web import Ctx, page


def _cid(ctx: Ctx) -> str:
    return str(ctx.request.path_params["cluster_id"])


async def _invocations(ctx: Ctx, cid: str) -> dict[str, list[dict[str, Any]]]:
    """The newest calls of each trigger of the cluster, from the audit trail (cs:InvokeTrigger)."""
    if not ctx.may("GET", "/audit"):
        return {}
    reply = await ctx.api("GET", "/audit", query={"action": "cs:InvokeTrigger", "limit": "300"})
    entries = reply.body.get("entries", []) if reply.ok and isinstance(reply.body, dict) else []
    out: dict[str, list[dict[str, Any]]] = {}
    for e in reversed(entries):
        head, sep, tid = str(e.get("resource", "")).rpartition("/trigger/")
        if sep and head.endswith(f"cluster/{cid}") and len(out.setdefault(tid, [])) < 5:
            out[tid].append(e)
    return out


async def _values(ctx: Ctx, cid: str, created: dict[str, Any] | None, error: str) -> dict[str, Any]:
    reply = await ctx.api("GET", f"/clusters/{cid}/triggers")
    rows = reply.body if reply.ok and isinstance(reply.body, list) else []
    return {"cluster_id": cid, "triggers": rows, "calls": await _invocations(ctx, cid), "created": created,
            "error": error or ("" if reply.ok else reply.message),
            "may_delete": ctx.may("DELETE", f"/clusters/{cid}/triggers/x"),
            "may_rotate": ctx.may("POST", f"/clusters/{cid}/triggers/x/rotate")}


async def _list(ctx: Ctx, cid: str, created: dict[str, Any] | None = None, error: str = "") -> Response:
    return ctx.render("_triggers.html", **await _values(ctx, cid, created, error))


@page
async def triggers(ctx: Ctx) -> Response:
    cid = _cid(ctx)
    if not ctx.may("GET", f"/clusters/{cid}/triggers"):
        return ctx.render("error.html", 403, message="You may not see this cluster's triggers.")
    listing = ctx.html("_triggers.html", **await _values(ctx, cid, None, ""))
    return ctx.render("triggers.html", cluster_id=cid, listing=listing,
                      may_create=ctx.may("POST", f"/clusters/{cid}/triggers"))


@page
async def create(ctx: Ctx) -> Response:
    cid, f = _cid(ctx), ctx.form
    body: dict[str, Any] = {"project_id": f.get("project_id", ""), "action": f.get("action", "redeploy"),
            "service": f.get("service", ""), "image_update": f.get("image_update") == "on"}
    if f.get("signed") == "on":  # else the server's default (OPENCS_TRIGGER_SIGNED)
        body["signed"] = True
    reply = await ctx.api("POST", f"/clusters/{cid}/triggers", body=body)
    if not reply.ok:
        errors, general = field_errors(reply)
        return await _list(ctx, cid, error="; ".join([*errors.values(), general]).strip("; "))
    return await _list(ctx, cid, created=reply.body)


@page
async def rotate(ctx: Ctx) -> Response:
    cid, tid = _cid(ctx), str(ctx.request.path_params["trigger_id"])
    grace = to_int(ctx.form.get("grace_seconds")) or 0
    reply = await ctx.api("POST", f"/clusters/{cid}/triggers/{tid}/rotate", body={"grace_seconds": grace})
    return await _list(ctx, cid, created=reply.body if reply.ok else None, error="" if reply.ok else reply.message)


@page
async def delete(ctx: Ctx) -> Response:
    cid, tid = _cid(ctx), str(ctx.request.path_params["trigger_id"])
    reply = await ctx.api("DELETE", f"/clusters/{cid}/triggers/{tid}")
    return await _list(ctx, cid, error="" if reply.ok else reply.message)


routes = [
    Route("/clusters/{cluster_id}/triggers", triggers, methods=["GET"]),
    Route("/clusters/{cluster_id}/triggers", create, methods=["POST"]),
    Route("/clusters/{cluster_id}/triggers/{trigger_id}/rotate", rotate, methods=["POST"]),
    Route("/clusters/{cluster_id}/triggers/{trigger_id}/delete", delete, methods=["POST"]),
]

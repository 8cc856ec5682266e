"""The signed-in user's AccessKeys (RAM ListAccessKeys/CreateAccessKey/UpdateAccessKey/DeleteAccessKey
of oneself): a new key's secret is shown once; disabling or deleting the session's own key ends it."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from starlette.responses import Response
from starlette.routing import Route

from opencs.api.ram import actions
from opencs.api.ram.routes import VERSION
from opencs.api.secure_transport import loopback_peer
from opencs.console.calls import Reply
from opencs.console.web import Ctx, page
from opencs.services.policies import decide


def _may(ctx: Ctx, action: str) -> bool:
    """The RAM API's own decision (opencs.api.ram.actions.run) for an action on oneself."""
    if ctx.who.is_owner:
        return True
    context = {"acs:sourceip": ctx.caller.client[0] if ctx.caller.client else "127.0.0.1",
               "acs:securetransport": "true" if ctx.request.url.scheme == "https" else "false"}
    return decide(ctx.who.statements, (f"ram:{action}",), actions.resource(action, ctx.who, {}), context)


async def _ram(ctx: Ctx, action: str, **params: str) -> Reply:
    return await ctx.api("POST", "/", query={"Action": action, "Version": VERSION, **params})


async def _page(ctx: Ctx, created: dict[str, Any] | None = None, error: str = "") -> Response:
    reply = await _ram(ctx, "ListAccessKeys")
    keys = reply.body.get("AccessKeys", {}).get("AccessKey", []) if reply.ok else []
    secure = ctx.request.url.scheme == "https" or loopback_peer(ctx.scope)
    return ctx.render("keys.html", keys=keys, created=created, error=error or ("" if reply.ok else reply.message),
                      current=ctx.session.access_key_id, may_create=_may(ctx, "CreateAccessKey") and secure,
                      may_update=_may(ctx, "UpdateAccessKey"), may_delete=_may(ctx, "DeleteAccessKey"))


@page
async def keys(ctx: Ctx) -> Response:
    return await _page(ctx)


@page
async def create(ctx: Ctx) -> Response:
    reply = await _ram(ctx, "CreateAccessKey")
    if not reply.ok:
        return await _page(ctx, error=reply.message)
    return await _page(ctx, created=reply.body.get("AccessKey"))


@page
async def status(ctx: Ctx) -> Response:
    ak, active = str(ctx.request.path_params["key"]), ctx.form.get("status") == "Active"
    reply = await _ram(ctx, "UpdateAccessKey", UserAccessKeyId=ak, Status="Active" if active else "Inactive")
    return await _page(ctx, error="" if reply.ok else reply.message)


@page
async def delete(ctx: Ctx) -> Response:
    ak = str(ctx.request.path_params["key"])
    reply = await _ram(ctx, "DeleteAccessKey", UserAccessKeyId=ak)
    if reply.ok and ak == ctx.session.access_key_id:
        await to_thread.run_sync(ctx.console.services.console_sessions.close, ctx.session.sid)
    return await _page(ctx, error="" if reply.ok else reply.message)


routes = [
    Route("/keys", keys, methods=["GET"]),
    Route("/keys", create, methods=["POST"]),
    Route("/keys/{key}/status", status, methods=["POST"]),
    Route("/keys/{key}/delete", delete, methods=["POST"]),
]

"""The RAM API on "/" of the control-plane port: `Action` from the query (aliyun-python-sdk-core, RPC
signature) or from the x-acs-action header (the Tea SDK, ACS3); parameters from the query and a form
body. Replies are JSON with the RequestId, errors the usual {Code, Message, RequestId}."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qsl

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from opencs.api.errors import request_id_of
from opencs.api.ram import actions
from opencs.errors import BadRequest, Forbidden
from opencs.services.accounts import Principal

VERSION = "2015-05-01"
router = APIRouter()


async def _params(request: Request) -> dict[str, str]:
    params = dict(request.query_params)
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        params.update(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    if "x-acs-action" in request.headers:
        params["Action"] = request.headers["x-acs-action"]
        params.setdefault("Version", request.headers.get("x-acs-version", ""))
    return params


def context_of(request: Request) -> dict[str, str]:
    """Condition keys of a request (lower-cased names)."""
    client = request.scope.get("client")
    return {"acs:sourceip": str(client[0]) if client else "127.0.0.1",
            "acs:securetransport": "true" if request.url.scheme == "https" else "false"}


@router.api_route("/", methods=["GET", "POST"], include_in_schema=False)
async def ram(request: Request) -> JSONResponse:
    p = await _params(request)
    action = p.get("Action", "")
    if not action:
        raise BadRequest("Action is mandatory (RAM API, RPC style)", code="MissingParameter.Action")
    if p.get("Version") != VERSION:
        raise BadRequest(f"Version {p.get('Version')!r} is not supported: the RAM API here is {VERSION}",
                         code="InvalidVersion")
    who = cast(Principal | None, request.scope.get("state", {}).get("principal"))
    if who is None:
        raise Forbidden("the AccessKey belongs to no user", code="NoPermission")
    svc = cast(actions.RamServices, request.app.state.services)
    body: dict[str, Any] = await to_thread.run_sync(actions.run, svc, who, action, p, context_of(request))
    return JSONResponse({"RequestId": request_id_of(request), **body})

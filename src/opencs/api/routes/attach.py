"""Attach scripts (spec §6.10): POST /clusters/{id}/attachscript (signed, DescribeClusterAttachScripts),
and the three calls the script makes from the machine, authenticated by its single-use token."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import Field

from opencs.api.body import json_object, validate
from opencs.api.deps import services
from opencs.api.errors import request_id_of
from opencs.api.schemas import ClusterId, _Body

router = APIRouter()

Token = Annotated[str, Path(min_length=20, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                            description="the attach script's token")]


class AttachScriptBody(_Body):
    """The node spec (spec §6.10) as a JSON-encoded string or an object; recorded in the script."""

    options: dict[str, Any] | str = Field(default_factory=dict, description="node join options (§6.10)")
    # today's SDK: when the token expires (Unix time, default in an hour); the token is single-use
    # whatever one_time_token says, as the issue of the script asks
    expired: Annotated[int, Field(ge=0, le=2**40)] | None = None
    one_time_token: bool | None = None


@router.post("/clusters/{cluster_id}/attachscript", status_code=202)
async def attach_script(cluster_id: ClusterId, request: Request) -> JSONResponse:
    """The command that joins the machine it runs on; the reply is a bare JSON string (as the spec's)."""
    body = validate(AttachScriptBody, await json_object(request))
    cmd = await to_thread.run_sync(services(request).attach_scripts.issue, cluster_id, body.options, body.expired)
    return JSONResponse(cmd, status_code=202, headers={"Cache-Control": "no-store"})


@router.get("/attach/{token}/script", response_class=PlainTextResponse)
def script(token: Token, request: Request) -> PlainTextResponse:
    return PlainTextResponse(services(request).attach_scripts.script(token), media_type="text/x-shellscript",
                             headers={"Cache-Control": "no-store"})


@router.post("/attach/{token}", status_code=202)
async def join(token: Token, request: Request) -> JSONResponse:
    """The machine the request comes from joins the token's cluster (once)."""
    ip = request.client.host if request.client else ""
    out = await to_thread.run_sync(services(request).attach_scripts.join, token, ip)
    return JSONResponse({**out, "request_id": request_id_of(request)}, status_code=202)


@router.get("/attach/{token}")
def status(token: Token, request: Request) -> dict[str, Any]:
    return {**services(request).attach_scripts.status(token), "request_id": request_id_of(request)}

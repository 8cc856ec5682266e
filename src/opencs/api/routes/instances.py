"""Free instances (opencs extension): create nodes outside clusters to attach them later."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field

from opencs.api.body import json_object, validate
from opencs.api.deps import services
from opencs.api.errors import request_id_of
from opencs.api.schemas import CreateInstances, InstanceId, _Body

router = APIRouter()


@router.get("/instances")
def list_instances(request: Request, free: bool = Query(False)) -> list[dict[str, Any]]:
    return services(request).instances.list(free_only=free)


@router.post("/instances", status_code=202)
async def create_instances(request: Request) -> JSONResponse:
    body = validate(CreateInstances, await json_object(request, required=False))
    tid = await run_in_threadpool(services(request).instances.create, body.count)
    return JSONResponse({"task_id": tid, "request_id": request_id_of(request)}, status_code=202)


@router.delete("/instances/{instance_id}", status_code=202)
def delete_instance(instance_id: InstanceId, request: Request) -> JSONResponse:
    tid = services(request).instances.delete(instance_id)
    return JSONResponse({"task_id": tid, "instance_id": instance_id, "request_id": request_id_of(request)},
                        status_code=202)


class RegisterSsh(_Body):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)  # a password may end in a space
    ssh: str = Field(min_length=3, max_length=300)  # user@host[:port]
    password: str | None = Field(default=None, max_length=1024)
    private_key: str | None = Field(default=None, max_length=32768)  # PEM / OpenSSH private key text
    known_host_key: str | None = Field(default=None, max_length=16384)  # pin instead of trust-on-first-use
    remote_socket: str | None = Field(default=None, max_length=200)  # the host's docker socket path


@router.post("/instances/register", status_code=201)
async def register_instance(request: Request) -> JSONResponse:
    body = validate(RegisterSsh, await json_object(request))
    # blocking: SSH login and an engine probe (seconds); keep it off the event loop
    view = await run_in_threadpool(
        services(request).instances.register_ssh, body.ssh, password=body.password,
        private_key=body.private_key, known_host_key=body.known_host_key, remote_socket=body.remote_socket)
    return JSONResponse({**view, "request_id": request_id_of(request)}, status_code=201)

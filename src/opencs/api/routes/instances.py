"""Free instances (opencs extension): create nodes outside clusters to attach them later."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from opencs.api.body import json_object, validate
from opencs.api.errors import request_id_of
from opencs.api.schemas import CreateInstances

router = APIRouter()


@router.get("/instances")
def list_instances(request: Request, free: bool = Query(False)) -> list[dict[str, Any]]:
    return request.app.state.runtime.instances.list(free_only=free)


@router.post("/instances", status_code=202)
async def create_instances(request: Request) -> JSONResponse:
    body = validate(CreateInstances, await json_object(request, required=False))
    tid = request.app.state.runtime.instances.create(body.count)
    return JSONResponse({"task_id": tid, "request_id": request_id_of(request)}, status_code=202)


@router.delete("/instances/{instance_id}", status_code=202)
def delete_instance(instance_id: str, request: Request) -> JSONResponse:
    tid = request.app.state.runtime.instances.delete(instance_id)
    return JSONResponse({"task_id": tid, "instance_id": instance_id, "request_id": request_id_of(request)},
                        status_code=202)

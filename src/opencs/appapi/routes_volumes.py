"""Cluster data volumes, spec §10.24–10.28 (Docker Remote API shapes)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from opencs.api.body import json_object
from opencs.appapi.routes_projects import JSONUTF8, call, cluster_of, projects
from opencs.services.projects.volumes import CreateVolume

router = APIRouter()


@router.post("/volumes/create")
async def create_volume(request: Request) -> Response:
    req = CreateVolume.from_body(await json_object(request))
    data = await call(projects(request).volumes().create, cluster_of(request), req)
    return JSONUTF8(data, status_code=201)


@router.get("/volumes")
@router.get("/volumes/", include_in_schema=False)
async def list_volumes(request: Request) -> Response:
    return JSONUTF8(await call(projects(request).volumes().list, cluster_of(request)))


@router.get("/volumes/{name}")
async def get_volume(request: Request, name: str) -> Response:
    return JSONUTF8(await call(projects(request).volumes().get, cluster_of(request), name))


@router.delete("/volumes/{name}")
async def delete_volume(request: Request, name: str) -> Response:
    await call(projects(request).volumes().delete, cluster_of(request), name)
    return Response(status_code=204)

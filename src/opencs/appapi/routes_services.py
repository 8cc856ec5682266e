"""Services of the projects, spec §10.17–10.23 (service id = ``<project>_<service>``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from opencs.api.body import json_object
from opencs.appapi.routes_projects import JSONUTF8, call, cluster_of, flag, projects, seconds
from opencs.services.projects.requests import ScaleService

router = APIRouter()


@router.get("/services/")
@router.get("/services", include_in_schema=False)
async def list_services(request: Request, q: str | None = None, containers: str | None = None) -> Response:
    data = await call(projects(request).list_services, cluster_of(request), q, flag(containers, True, "containers"))
    return JSONUTF8(data)


@router.get("/services/{service_id}")
async def get_service(request: Request, service_id: str, containers: str | None = None) -> Response:
    data = await call(projects(request).get_service, cluster_of(request), service_id,
                      flag(containers, True, "containers"))
    return JSONUTF8(data)


@router.post("/services/{service_id}/start")
async def start_service(request: Request, service_id: str) -> Response:
    await call(projects(request).start_service, cluster_of(request), service_id)
    return Response(status_code=200)


@router.post("/services/{service_id}/stop")
async def stop_service(request: Request, service_id: str, t: str | None = None) -> Response:
    await call(projects(request).stop_service, cluster_of(request), service_id, seconds(t, 10, "t"))
    return Response(status_code=200)


@router.post("/services/{service_id}/kill")
async def kill_service(request: Request, service_id: str, signal: str | None = None) -> Response:
    await call(projects(request).kill_service, cluster_of(request), service_id, signal)
    return Response(status_code=200)


@router.post("/services/{service_id}/scale")
async def scale_service(request: Request, service_id: str) -> Response:
    req = ScaleService.from_body(await json_object(request))
    await call(projects(request).scale_service, cluster_of(request), service_id, req)
    return Response(status_code=200)

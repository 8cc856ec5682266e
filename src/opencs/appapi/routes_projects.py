"""Projects (applications), spec §10.4–10.16."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from opencs.api.body import json_object
from opencs.errors import BadRequest
from opencs.services.projects import ProjectService
from opencs.services.projects.requests import CreateProject, UpdateProject

router = APIRouter()


class JSONUTF8(JSONResponse):
    """The spec's replies say `Content-Type: application/json;charset=UTF-8`."""

    media_type = "application/json;charset=UTF-8"


# ---------------------------------------------------------------- shared helpers (also used by the other routers)


def projects(request: Request) -> ProjectService:
    return request.app.state.projects  # type: ignore[no-any-return]


def cluster_of(request: Request) -> str:
    state = request.scope.get("state") or {}
    cid = state.get("cluster_id")
    if not cid:
        raise BadRequest("the request carries no cluster: call the Application API at the cluster's master_url",
                         code="MissingCluster")
    return str(cid)


def flag(value: str | None, default: bool, name: str) -> bool:
    """Boolean query flags: true/1/false/0 (spec §10.3)."""
    if value is None or value == "":
        return default
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise BadRequest(f"Parameter '{name}': use true/1 or false/0, not {value!r}", code=f"InvalidParameter.{name}")


def seconds(value: str | None, default: int, name: str, maximum: int = 3600) -> int:
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"Parameter '{name}': a number of seconds, not {value!r}",
                         code=f"InvalidParameter.{name}") from None
    if not 0 <= n <= maximum:
        raise BadRequest(f"Parameter '{name}': 0-{maximum} seconds", code=f"InvalidParameter.{name}")
    return n


async def call(fn: Any, *args: Any, **kw: Any) -> Any:
    """Services block (Docker API calls, waits for tasks): keep them off the event loop."""
    return await run_in_threadpool(fn, *args, **kw)


# ---------------------------------------------------------------- routes


@router.get("/projects/")
@router.get("/projects", include_in_schema=False)
async def list_projects(request: Request, q: str | None = None, services: str | None = None,
                        containers: str | None = None) -> Response:
    ps, cid = projects(request), cluster_of(request)
    data = await call(ps.list_projects, cid, q, flag(services, True, "services"), flag(containers, True, "containers"))
    return JSONUTF8(data)


@router.post("/projects/")
@router.post("/projects", include_in_schema=False)
async def create_project(request: Request) -> Response:
    ps, cid = projects(request), cluster_of(request)
    req = CreateProject.from_body(await json_object(request))
    name = await call(ps.create, cid, req)
    return Response(status_code=201, headers={"Location": f"/projects/{name}"})


@router.get("/projects/{name}")
async def get_project(request: Request, name: str, services: str | None = None,
                      containers: str | None = None) -> Response:
    ps, cid = projects(request), cluster_of(request)
    data = await call(ps.get, cid, name, flag(services, True, "services"), flag(containers, True, "containers"))
    return JSONUTF8(data)


@router.post("/projects/{name}/start")
async def start_project(request: Request, name: str) -> Response:
    await call(projects(request).start, cluster_of(request), name)
    return Response(status_code=200)


@router.post("/projects/{name}/stop")
async def stop_project(request: Request, name: str, t: str | None = None) -> Response:
    await call(projects(request).stop, cluster_of(request), name, seconds(t, 10, "t"))
    return Response(status_code=200)


@router.post("/projects/{name}/kill")
async def kill_project(request: Request, name: str, signal: str | None = None) -> Response:
    await call(projects(request).kill, cluster_of(request), name, signal)
    return Response(status_code=200)


@router.post("/projects/{name}/redeploy")
async def redeploy_project(request: Request, name: str) -> Response:
    await call(projects(request).redeploy, cluster_of(request), name)
    return Response(status_code=200)


@router.post("/projects/{name}/update")
async def update_project(request: Request, name: str) -> Response:
    ps, cid = projects(request), cluster_of(request)
    req = UpdateProject.from_body(await json_object(request))
    tid = await call(ps.update, cid, name, req)
    if req.method == "blue-green":
        # the spec shows no body; the release's durable task id is an addition clients may ignore
        return JSONUTF8({"task_id": tid}, status_code=202)
    return Response(status_code=202)


@router.post("/projects/{name}/confirm-update")
async def confirm_update(request: Request, name: str, force: str | None = None) -> Response:
    """force=true: all traffic to the new version, the old one removed; force=false: only when the
    configured weights already send everything to the new version (409 WeightsNotShifted)."""
    ps, cid = projects(request), cluster_of(request)
    tid = await call(ps.confirm_update, cid, name, flag(force, False, "force"))
    return JSONUTF8({"task_id": tid}, status_code=202)


@router.post("/projects/{name}/rollback-update")
async def rollback_update(request: Request, name: str, force: str | None = None) -> Response:
    ps, cid = projects(request), cluster_of(request)
    tid = await call(ps.rollback_update, cid, name, flag(force, True, "force"))
    return JSONUTF8({"task_id": tid}, status_code=202)


@router.delete("/projects/{name}")
async def delete_project(request: Request, name: str, force: str | None = None, v: str | None = None) -> Response:
    await call(projects(request).delete, cluster_of(request), name, force=flag(force, False, "force"),
               volumes=flag(v, False, "v"))
    return Response(status_code=200)

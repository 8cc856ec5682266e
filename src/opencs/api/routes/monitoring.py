"""The monitoring stack (operator: on or off, its status) and the scaling alert rules users attach
to a service (issue 12 item 3). Bodies are bounded here; the rules' own checks are the service's."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from opencs.api.body import json_object, validate
from opencs.api.deps import services
from opencs.api.errors import request_id_of
from opencs.api.schemas import ClusterId, Text32, TextId, TriggerId, _Body

router = APIRouter()
Percent = Annotated[float, Field(gt=0, le=10000, description="percent of one core")]
Step = Annotated[int, Field(ge=1, le=100)]
Replicas = Annotated[int, Field(ge=0, le=100)]


class EnableMonitoring(_Body):
    prometheus_port: Annotated[int, Field(ge=1024, le=65535)] | None = None
    alertmanager_port: Annotated[int, Field(ge=1024, le=65535)] | None = None


class ScaleOut(_Body):
    cpu_above: Percent
    for_: Annotated[Text32 | int, Field(alias="for")] = "60s"
    step: Step = 1


class ScaleIn(_Body):
    cpu_below: Percent
    for_: Annotated[Text32 | int, Field(alias="for")] = "60s"
    step: Step = 1


class CreateAlertRule(_Body):
    project_id: Annotated[str, Field(min_length=1, max_length=64)]
    service: Annotated[TextId, Field(min_length=1)]
    scale_out: ScaleOut | None = None
    scale_in: ScaleIn | None = None
    min_replicas: Replicas = 1
    max_replicas: Replicas = 10
    cooldown: Text32 | int = "60s"


@router.get("/monitoring")
async def monitoring_status(request: Request) -> JSONResponse:
    out = await to_thread.run_sync(services(request).monitoring.status)
    return JSONResponse({**out, "request_id": request_id_of(request)})


@router.post("/monitoring/enable")
async def monitoring_enable(request: Request) -> JSONResponse:
    body = validate(EnableMonitoring, await json_object(request, required=False))
    out = await to_thread.run_sync(
        lambda: services(request).monitoring.enable(body.prometheus_port, body.alertmanager_port))
    return JSONResponse({**out, "request_id": request_id_of(request)})


@router.post("/monitoring/disable")
async def monitoring_disable(request: Request) -> JSONResponse:
    out = await to_thread.run_sync(services(request).monitoring.disable)
    return JSONResponse({**out, "request_id": request_id_of(request)})


@router.post("/clusters/{cluster_id}/alerts")
async def create_alert_rule(cluster_id: ClusterId, request: Request) -> JSONResponse:
    body = validate(CreateAlertRule, await json_object(request))
    spec: dict[str, Any] = body.model_dump(by_alias=True, exclude={"project_id", "service"}, exclude_none=True)
    out = await to_thread.run_sync(
        lambda: services(request).alerts.create(cluster_id, body.project_id, body.service, spec))
    return JSONResponse({**out, "request_id": request_id_of(request)}, status_code=201)


@router.get("/clusters/{cluster_id}/alerts")
async def list_alert_rules(cluster_id: ClusterId, request: Request) -> list[dict[str, Any]]:
    rt = services(request)
    await to_thread.run_sync(rt.clusters.get_row, cluster_id)  # 404 for an unknown cluster
    return await to_thread.run_sync(rt.alerts.list_rules, cluster_id)


@router.delete("/clusters/{cluster_id}/alerts/{rule_id}")
async def delete_alert_rule(cluster_id: ClusterId, rule_id: TriggerId, request: Request) -> JSONResponse:
    await to_thread.run_sync(services(request).alerts.delete, cluster_id, rule_id)
    return JSONResponse({"id": rule_id, "request_id": request_id_of(request)})

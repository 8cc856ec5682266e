"""Routes of spec §6 that only Kubernetes clusters have (or that today's SDKs call for them):
kubeconfig, scale-out by count, removing nodes by name."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from opencs.api.body import json_object, validate
from opencs.api.deps import services
from opencs.api.errors import request_id_of
from opencs.api.k8s_schemas import (
    CreateEdgeKubernetesCluster,
    CreateKubernetesCluster,
    CreateManagedKubernetesCluster,
    RemoveNodes,
    ScaleOutCluster,
)
from opencs.api.schemas import ClusterId
from opencs.engines.kubernetes.edge import EDGE_PROFILE
from opencs.errors import BadRequest

router = APIRouter()

KUBECONFIG_MINUTES = (15, 4320)  # TemporaryDurationMinutes bounds (the Tea SDK's documented range)


def kubernetes_body(data: dict[str, Any]) -> CreateKubernetesCluster | None:
    """A Kubernetes create body validated, None for a Swarm body; a clear 4xx for types not offered."""
    ctype = data.get("cluster_type")
    kind = ctype.lower() if isinstance(ctype, str) else ""
    if kind == "kubernetes":
        return validate(CreateKubernetesCluster, data)
    if kind == "managedkubernetes":
        if data.get("profile") == EDGE_PROFILE:
            return validate(CreateEdgeKubernetesCluster, data)
        return validate(CreateManagedKubernetesCluster, data)
    if kind == "ask":
        raise BadRequest("cluster_type 'Ask' (serverless Kubernetes) is not offered: this server runs pods on "
                         "nodes it makes; create a cluster with cluster_type 'Kubernetes'",
                         code="ClusterTypeNotSupported")
    return None


def _accepted(request: Request, **body: Any) -> JSONResponse:
    return JSONResponse({**body, "request_id": request_id_of(request)}, status_code=202)


def _body_doc(model: Any) -> dict[str, Any]:
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": model.model_json_schema()}}}}


@router.get("/k8s/{cluster_id}/user_config")
def user_config(
    cluster_id: ClusterId,
    request: Request,
    PrivateIpAddress: bool = Query(False),  # noqa: N803 - the SDK's names; one address here either way
    TemporaryDurationMinutes: int | None = Query(None, ge=KUBECONFIG_MINUTES[0], le=KUBECONFIG_MINUTES[1]),  # noqa: N803
) -> dict[str, str]:
    """DescribeClusterUserKubeconfig: a kubeconfig with the caller's own client certificate, recorded
    and revocable like GET /certs' (opencs.services.cluster_certs.issue_kubeconfig)."""
    who = getattr(request.state, "principal", None)
    return services(request).cluster_certs.issue_kubeconfig(cluster_id, who, TemporaryDurationMinutes)


@router.post("/api/v2/clusters/{cluster_id}", status_code=202, openapi_extra=_body_doc(ScaleOutCluster))
async def scale_out(cluster_id: ClusterId, request: Request) -> JSONResponse:
    body = validate(ScaleOutCluster, await json_object(request))
    tid = await to_thread.run_sync(services(request).clusters.scale_out, cluster_id, body.count)
    return _accepted(request, cluster_id=cluster_id, task_id=tid)


async def _remove(cluster_id: str, request: Request) -> JSONResponse:
    body = validate(RemoveNodes, await json_object(request))
    tid = await to_thread.run_sync(services(request).clusters.remove_nodes, cluster_id, body.nodes,
                                   body.release_node, body.drain_node)
    return _accepted(request, cluster_id=cluster_id, task_id=tid)


@router.post("/api/v2/clusters/{cluster_id}/nodes/remove", status_code=202, openapi_extra=_body_doc(RemoveNodes))
async def remove_cluster_nodes(cluster_id: ClusterId, request: Request) -> JSONResponse:
    """RemoveClusterNodes: cordon, drain, delete and (release_node) release worker nodes."""
    return await _remove(cluster_id, request)


@router.post("/clusters/{cluster_id}/nodes", status_code=202, openapi_extra=_body_doc(RemoveNodes))
async def delete_cluster_nodes(cluster_id: ClusterId, request: Request) -> JSONResponse:
    """DeleteClusterNodes (spec §6.13): as RemoveClusterNodes."""
    return await _remove(cluster_id, request)

"""Cluster routes of spec §5, plus the routes today's SDKs call (nodes, paged list)."""

from __future__ import annotations

from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from opencs.api.authorize import LIST_CUT
from opencs.api.body import json_object, validate
from opencs.api.compressed import MIN_SIZE, GzipOf, accepts_gzip
from opencs.api.deps import ApiServices, services
from opencs.api.errors import request_id_of
from opencs.api.k8s_schemas import CreateKubernetesCluster, ScaleKubernetes
from opencs.api.routes import kubernetes as k8s
from opencs.api.schemas import (
    AttachInstances,
    ClusterId,
    CreateCluster,
    InstanceId,
    NodeIp,
    PageNumber,
    ResetNode,
    ScaleCluster,
)
from opencs.api.store_reads import store_read

router = APIRouter()


def _body_doc(model: Any) -> dict[str, Any]:
    """Document a body the route parses itself (to answer bad JSON and content types our way)."""
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _rt(request: Request) -> ApiServices:
    return services(request)


def _accepted(request: Request, **body: Any) -> JSONResponse:
    return JSONResponse({**body, "request_id": request_id_of(request)}, status_code=202)


_list_gzip = GzipOf()


@router.get("/clusters", response_model=list[dict[str, Any]])
async def list_clusters(request: Request) -> Response:
    # the hottest read: a cached body (see ClusterService.list_json), no response-model validation,
    # and no thread hop when the cache is fresh; gzipped once per body for a client that asks
    # (opencs.api.compressed), unless the authorizer cuts the list to what the caller may see
    clusters = _rt(request).clusters
    body = clusters.cached_list_json()
    if body is None:
        body = await to_thread.run_sync(clusters.list_json)
    vary = {"Vary": "Accept-Encoding"}
    if len(body) >= MIN_SIZE and not request.scope.get("state", {}).get(LIST_CUT) and accepts_gzip(request):
        gz = _list_gzip.cached(body) or await to_thread.run_sync(_list_gzip.compress, body)
        return Response(gz, media_type="application/json", headers={**vary, "Content-Encoding": "gzip"})
    return Response(body, media_type="application/json", headers=vary)


@router.get("/api/v1/clusters")
def list_clusters_paged(
    request: Request,
    page_number: PageNumber = 1,
    page_size: int = Query(10, ge=1, le=100),
) -> dict[str, Any]:
    return _rt(request).clusters.page(page_number, page_size)


# The hot reads are async routes whose store read is inline on SQLite, one hop to a worker thread on
# PostgreSQL (opencs.api.store_reads): a sync route returning a dict takes a second hop, for FastAPI's
# check of the reply (run in a thread for a sync route, inline for an async one), and under
# bench/load.py each hop cost 15-30 ms of waiting.

@router.get("/clusters/{cluster_id}", response_model=dict[str, Any])
async def describe_cluster(cluster_id: ClusterId, request: Request) -> Response:
    # the reply's JSON from memory while nothing changed it (ClusterService.get_json)
    body = await store_read(request, _rt(request).clusters.get_json, cluster_id)
    return Response(body, media_type="application/json")


@router.post("/clusters", status_code=202, openapi_extra=_body_doc(CreateCluster))
async def create_cluster(request: Request) -> JSONResponse:
    # the create endpoints differ by body only (spec §6.0): cluster_type picks the schema
    data = await json_object(request)
    body: CreateKubernetesCluster | CreateCluster = k8s.kubernetes_body(data) or validate(CreateCluster, data)
    cid, tid = await to_thread.run_sync(_rt(request).clusters.create, body)
    return _accepted(request, cluster_id=cid, task_id=tid)


@router.put("/clusters/{cluster_id}", status_code=202, openapi_extra=_body_doc(ScaleCluster))
async def scale_cluster(cluster_id: ClusterId, request: Request) -> JSONResponse:
    data = await json_object(request)
    clusters = _rt(request).clusters
    # store reads and writes in a worker thread: in the event loop they would stall every request
    if await to_thread.run_sync(clusters.type_of, cluster_id) == "kubernetes":  # spec §6.2: the workers in all
        tid = await to_thread.run_sync(clusters.scale_workers, cluster_id,
                                       validate(ScaleKubernetes, data).num_of_nodes)
    else:
        tid = await to_thread.run_sync(clusters.scale, cluster_id, validate(ScaleCluster, data))
    return _accepted(request, cluster_id=cluster_id, task_id=tid)


@router.delete("/clusters/{cluster_id}", status_code=202)
def delete_cluster(cluster_id: ClusterId, request: Request) -> JSONResponse:
    # a JSON body, not "202, no body": the Tea SDK fails to parse an empty reply (CLIENT-COMPAT.md)
    tid = _rt(request).clusters.delete(cluster_id)
    return _accepted(request, cluster_id=cluster_id, task_id=tid)


@router.post("/clusters/{cluster_id}/attach", status_code=202, openapi_extra=_body_doc(AttachInstances))
async def attach_instances(cluster_id: ClusterId, request: Request) -> JSONResponse:
    body = validate(AttachInstances, await json_object(request))
    results, tid = await to_thread.run_sync(_rt(request).clusters.attach, cluster_id, body.instances)
    return _accepted(request, list=results, task_id=tid, cluster_id=cluster_id)


@router.delete("/clusters/{cluster_id}/ip/{ip}", status_code=202)
def remove_node(
    cluster_id: ClusterId, ip: NodeIp, request: Request, releaseInstance: bool = Query(False)  # noqa: N803
) -> JSONResponse:
    tid = _rt(request).clusters.remove_node(cluster_id, ip, releaseInstance)
    return _accepted(request, cluster_id=cluster_id, task_id=tid)


@router.post("/clusters/{cluster_id}/instances/{instance_id}/reset", status_code=202)
async def reset_node(cluster_id: ClusterId, instance_id: InstanceId, request: Request) -> JSONResponse:
    validate(ResetNode, await json_object(request, required=False))
    tid = await to_thread.run_sync(_rt(request).clusters.reset_node, cluster_id, instance_id)
    return _accepted(request, cluster_id=cluster_id, task_id=tid)


@router.get("/clusters/{cluster_id}/nodes", response_model=dict[str, Any])
async def cluster_nodes(
    cluster_id: ClusterId,
    request: Request,
    pageNumber: PageNumber = 1,  # noqa: N803 - the SDK's parameter names
    pageSize: int = Query(100, ge=1, le=1000),  # noqa: N803
) -> Response:
    body = await store_read(request, _rt(request).clusters.nodes_json, cluster_id, pageNumber, pageSize)
    return Response(body, media_type="application/json")

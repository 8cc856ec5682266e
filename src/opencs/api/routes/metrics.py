"""GET /metrics: the control plane's metrics in Prometheus text format; GET /metrics/containers:
CPU, memory, network and block I/O of every cluster's containers and nodes (the last pass of the
usage collector, opencs.loops.usage).

Both are open to loopback peers; any other peer needs `Authorization: Bearer <OPENCS_METRICS_TOKEN>`
(and without a configured token it is refused), since the figures describe the whole installation.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from opencs import metrics
from opencs.api import usage_metrics
from opencs.api.deps import services
from opencs.api.schemas import QueryText
from opencs.errors import ApiError, Forbidden

router = APIRouter()

_PROMETHEUS: dict[int | str, dict[str, Any]] = {
    200: {"content": {metrics.CONTENT_TYPE: {}}, "description": "Prometheus text exposition"}}


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_access(request: Request) -> None:
    if _loopback(request):
        return
    token = services(request).settings.metrics_token
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not token:
        raise Forbidden("/metrics is open to loopback only; set OPENCS_METRICS_TOKEN to scrape it from elsewhere",
                        code="MetricsForbidden")
    if not hmac.compare_digest(given.encode(), token.encode()):
        raise Forbidden("a valid metrics bearer token is required", code="MetricsForbidden")


@router.get("/metrics", response_class=Response, responses=_PROMETHEUS)
def get_metrics(request: Request) -> Response:
    _check_access(request)
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)


@router.get("/metrics/containers", response_class=Response, responses=_PROMETHEUS)
def get_container_metrics(request: Request, cluster: QueryText = None) -> Response:
    """`?cluster=<id>`: that cluster's figures only (the monitoring stack scrapes one target per cluster)."""
    _check_access(request)
    usage = services(request).usage
    if usage is None:
        raise ApiError("container metrics are off on this server (OPENCS_USAGE_INTERVAL=0)",
                       code="ContainerMetricsOff", status=404)
    return Response(usage_metrics.exposition(usage.latest, cluster), media_type=metrics.CONTENT_TYPE)

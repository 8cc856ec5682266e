"""GET /metrics: the control plane's metrics in Prometheus text format.

Open to loopback peers; any other peer needs `Authorization: Bearer <OPENCS_METRICS_TOKEN>` (and
without a configured token it is refused), since the figures describe the whole installation.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, Request
from fastapi.responses import Response

from opencs import metrics
from opencs.api.deps import services
from opencs.errors import Forbidden

router = APIRouter()


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {metrics.CONTENT_TYPE: {}}, "description": "Prometheus text exposition"}})
def get_metrics(request: Request) -> Response:
    if not _loopback(request):
        token = services(request).settings.metrics_token
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not token:
            raise Forbidden("/metrics is open to loopback only; set OPENCS_METRICS_TOKEN to scrape it from elsewhere",
                            code="MetricsForbidden")
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Forbidden("a valid metrics bearer token is required", code="MetricsForbidden")
    return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

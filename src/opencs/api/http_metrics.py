"""ASGI middleware: count and time every control-plane request by route template and status.

Labels use the route's template (`/clusters/{cluster_id}`), never the raw path, so the series stay
bounded whatever clients send; a request that matched no route is `unmatched`.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import Match

from opencs import metrics

Scope = dict[str, Any]


class HttpMetricsMiddleware:
    def __init__(self, app: Any, routes: Any = None) -> None:
        self.app = app
        self.routes = routes  # the app's routes, to name requests refused before routing
        self._flat: list[Any] | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_counted(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            route, method = self._route(scope), scope.get("method", "")
            metrics.http_requests.labels(route, method, str(status)).inc()
            metrics.http_latency.labels(route, method).observe(time.perf_counter() - start)

    def _route(self, scope: Scope) -> str:
        matched = scope.get("route")
        if matched is not None and getattr(matched, "path", None):
            return str(matched.path)
        if self._flat is None:
            self._flat = list(_flatten(self.routes or ()))
        for r in self._flat:
            match, _ = r.matches(scope)
            if match == Match.FULL:
                return str(r.path)
        return "unmatched"


def _flatten(routes: Any) -> Any:
    """Every route with a path template, inside included routers too (FastAPI wraps those)."""
    for r in routes:
        if getattr(r, "path", None):
            yield r
        inner = getattr(r, "original_router", None) or getattr(r, "app", None)
        if inner is not None and hasattr(inner, "routes"):
            yield from _flatten(inner.routes)

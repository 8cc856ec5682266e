"""The Application API's own routes (spec §10): ``/projects``, ``/services``, ``/volumes``.

``create_appapi_app(projects)`` is an ASGI app served behind a cluster's mTLS endpoint (``frontend.py``),
which sets ``scope["state"]["cluster_id"]`` and ``["request_id"]``. An optional ``/v1.NN`` prefix is
stripped, ``/service/…`` (the spec's own typo) is read as ``/services/…``, and errors leave as
``{"Code", "Message", "RequestId"}``.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from opencs import __version__
from opencs.api import errors
from opencs.appapi import routes_logs, routes_projects, routes_services, routes_volumes
from opencs.services.projects import ProjectService

_VERSION_PREFIX = re.compile(r"^/v\d+(?:\.\d+)?(?=/|$)")

Scope = dict[str, Any]


class _PathRewrite:
    """ASGI middleware: `/v1.41/projects/x` → `/projects/x`; `/service/x` → `/services/x`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            path = scope.get("path", "")
            new = path
            m = _VERSION_PREFIX.match(new)
            if m:
                new = new[m.end():] or "/"
            if new == "/service" or new.startswith("/service/"):
                new = "/services" + new[len("/service"):]
            if new != path:
                scope = dict(scope)
                scope["path"] = new
                scope["raw_path"] = new.encode()
        await self.app(scope, receive, send)


def create_appapi_app(projects: ProjectService) -> FastAPI:
    app = FastAPI(
        title="opencs Application API",
        version=__version__,
        description="Projects, services and volumes of one Swarm cluster (Container Service §10), served at "
        "the cluster's master_url with client-certificate authentication.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
    )
    app.state.projects = projects
    errors.install(app)
    for r in (routes_logs.router, routes_projects.router, routes_services.router, routes_volumes.router):
        app.include_router(r)
    app.add_middleware(_PathRewrite)
    return app

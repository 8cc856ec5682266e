"""The console's ASGI app, mounted at /console on the control-plane app (`mount`)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from opencs.appapi.app import create_appapi_app
from opencs.appapi.guard import AppApiGuard
from opencs.console import (
    routes_auth,
    routes_clusters,
    routes_keys,
    routes_nodes,
    routes_projects,
    routes_tasks,
    routes_triggers,
    routes_volumes,
)
from opencs.console.calls import ASGIApp, ControlPlaneApi
from opencs.console.deps import ConsoleServices
from opencs.console.web import HERE, Console

PATH = "/console"


def create_console(services: ConsoleServices, api: ASGIApp) -> Starlette:
    app = Starlette(routes=[
        *routes_auth.routes, *routes_clusters.routes, *routes_projects.routes, *routes_tasks.routes,
        *routes_triggers.routes, *routes_keys.routes, *routes_nodes.routes,
        *routes_volumes.routes,
        Mount("/assets", StaticFiles(directory=HERE / "assets"), name="assets"),
        Mount("/static", StaticFiles(directory=HERE / "static", check_dir=False), name="static"),
    ])
    region = services.settings.regions[0] if services.settings.regions else "*"
    guard = AppApiGuard(services.cluster_certs, region, services.audit)  # master_url's decision and audit
    app.state.console = Console(services, ControlPlaneApi(api), create_appapi_app(services.projects), guard)
    return app


def mount(app: Starlette, services: ConsoleServices) -> Starlette:
    """Serve the console at /console of `app` (the control-plane app, which it calls in-process)."""
    console = create_console(services, app)
    app.mount(PATH, console)
    return console

"""The control-plane ASGI application."""

from __future__ import annotations

from fastapi import FastAPI

from opencs import API_VERSION, __version__
from opencs.api import errors, openapi, store_reads
from opencs.api.deps import ApiServices
from opencs.api.http_metrics import HttpMetricsMiddleware
from opencs.api.middleware import SignedApiMiddleware
from opencs.api.ram import routes as ram
from opencs.api.routes import (
    attach,
    audit,
    certs,
    clusters,
    events,
    images,
    instances,
    kubernetes,
    meta,
    metrics,
    monitoring,
    registry_users,
    tasks,
    triggers,
)

# reachable without a signature: liveness, the OpenAPI document and its viewer
# /hook/trigger authenticates with the trigger's own secret (spec §11), /hook/registry with the
# bundled registry's bearer token
# /console: the web console's pages authenticate with its session cookie (opencs.console)
PUBLIC_PATHS = ("/healthz", "/openapi.json", "/docs", "/docs/", "/redoc", "/hook/trigger", "/hook/registry", "/attach/",
                "/metrics", "/metrics/containers", "/console", "/console/")
# what the nodes call (trigger URLs handed to their containers and alert receivers, the attach
# script), served alone on the nodes' bridge when the API listens on loopback only
NODE_PATHS = ("/healthz", "/hook/trigger", "/attach/")


def create_app(services: ApiServices, only_paths: tuple[str, ...] | None = None) -> FastAPI:
    """The API; with `only_paths`, an app that answers those (NODE_PATHS) and 404s the rest."""
    app = FastAPI(
        title="opencs Container Service API",
        version=__version__,
        description=f"Alibaba Cloud Container Service API {API_VERSION}, self-hosted. "
        "Every route except /healthz and the OpenAPI document needs a signed request "
        "(ROA `acs AK:signature` or ACS3-HMAC-SHA256).",
    )
    app.state.services = services
    errors.install(app)
    openapi.install(app)  # the document says what each route really answers
    for r in (meta.router, clusters.router, certs.router, kubernetes.router, attach.router, tasks.router,
              instances.router, images.router,
              triggers.router, metrics.router, monitoring.router, events.router, ram.router, audit.router,
              registry_users.router):
        app.include_router(r)
    app.add_middleware(SignedApiMiddleware, verifier=services.verifier, public_paths=PUBLIC_PATHS,
                       authorizer=services.authorizer, only_paths=only_paths,
                       inline_reads=lambda: store_reads.inline_for(services))
    app.add_middleware(errors.InternalErrors)  # a 500 keeps the connection and the request id
    app.add_middleware(HttpMetricsMiddleware, routes=app.routes)  # outermost: sees refusals too
    return app

"""The router loop (spec §13): about once a second, HAProxy is converged to the routed services of
every running cluster (``opencs.routing.RouterService``); the loop owns the HAProxy it starts."""

from __future__ import annotations

from collections.abc import Sequence

from opencs.engines.apps import AppEngineError, AppEngines
from opencs.routing.router import RoutedPortLike, RouterService, RoutesUnavailable
from opencs.routing.routes import Routes


class EngineRoutes:
    """The router's RouteSource over the clusters' application engines."""

    def __init__(self, engines: AppEngines) -> None:
        self.engines = engines

    def routed_ports(self, cluster_id: str) -> Sequence[RoutedPortLike]:
        try:
            return self.engines.for_cluster(cluster_id).routed_ports()
        except AppEngineError as e:
            raise RoutesUnavailable(e.message) from None


class RouterLoop:
    """Runs `router` in the background; while it runs, `routes.sync()` (the project tasks') uses it."""

    name = "router"

    def __init__(self, router: RouterService, routes: Routes, *, stop_haproxy: bool = True) -> None:
        """``stop_haproxy=False``: leave HAProxy serving when the loop stops, for the next holder of
        the router lease to adopt (its owner watch stops it if none does within a minute)."""
        self.router = router
        self.routes = routes
        self.stop_haproxy = stop_haproxy

    def start(self) -> None:
        self.routes.active = self.router
        self.router.start()

    def stop(self) -> None:
        self.routes.active = None
        self.router.stop(stop_haproxy=self.stop_haproxy)

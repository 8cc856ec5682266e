"""Simple routing (spec §13) through one HAProxy per control plane; see ``router.py``."""

from opencs.routing.haproxy import HAProxy, HAProxyError
from opencs.routing.router import RELEASE_LABEL, RouterService, sync_routes

__all__ = ["RELEASE_LABEL", "HAProxy", "HAProxyError", "RouterService", "sync_routes"]

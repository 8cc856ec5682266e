"""Simple routing (spec §13) through one HAProxy per control plane; see ``router.py``."""

from opencs.compose.release import RELEASE_LABEL
from opencs.routing.haproxy import HAProxy, HAProxyError
from opencs.routing.router import RouterService
from opencs.routing.routes import Routes

__all__ = ["RELEASE_LABEL", "HAProxy", "HAProxyError", "RouterService", "Routes"]

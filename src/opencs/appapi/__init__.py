"""The per-cluster Application API endpoint (spec §10): `master_url`.

`AppApiManager(rt)` keeps one mTLS listener per live Swarm cluster (`frontend.ClusterFrontend`);
each serves `/projects`, `/services`, `/volumes` from the ASGI app of `opencs.appapi.app` and passes
every other Docker API request to a swarm manager's engine.
"""

from opencs.appapi.frontend import ClusterFrontend, route
from opencs.appapi.manager import AppApiManager

__all__ = ["AppApiManager", "ClusterFrontend", "route"]

"""The per-cluster Application API endpoint (spec §10): `master_url`.

`frontend.ClusterFrontend` is one cluster's mTLS listener (run by the endpoint manager,
`opencs.loops.endpoints`); it serves `/projects`, `/services`, `/volumes` from the ASGI app of
`opencs.appapi.app` and passes every other Docker API request to a swarm manager's engine.
"""

from opencs.appapi.frontend import ClusterFrontend, route

__all__ = ["ClusterFrontend", "route"]

"""The asynchronous control-plane client: the same methods as :class:`~opencs.sdk.Client`, as
coroutines (pagers as async iterators), over ``httpx.AsyncClient``.

    >>> async with AsyncClient("http://127.0.0.1:8990", ak, secret) as cs:
    ...     reply = await cs.create_cluster({"name": "c1", "size": 2})
    ...     await cs.wait_task(reply.task_id)
    ...     async for node in cs.iter_nodes(reply.cluster_id):
    ...         print(node.ip, node.health)
"""

from __future__ import annotations

from typing import Any, Unpack

import httpx

from opencs.sdk.api import ControlPlaneAPI, SignedOptions, app_options, signed_setup
from opencs.sdk.app import AsyncAppClient
from opencs.sdk.flows import app_endpoint
from opencs.sdk.runners import AsyncRunner


class AsyncClient(AsyncRunner, ControlPlaneAPI):
    """Signed asynchronous client; the arguments are those of :class:`~opencs.sdk.Client`
    (``transport``: an :class:`httpx.AsyncBaseTransport`, e.g. ``httpx.ASGITransport(app)``)."""

    def __init__(self, endpoint: str, access_key_id: str, access_key_secret: str, *,
                 transport: httpx.AsyncBaseTransport | None = None, http_client: httpx.AsyncClient | None = None,
                 **options: Unpack[SignedOptions]) -> None:
        super().__init__()
        http = signed_setup(self, endpoint, access_key_id, access_key_secret, options)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, **http)

    async def aclose(self) -> None:
        """Close the underlying HTTP client (only if this object created it)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.endpoint!r}, {self.access_key_id!r}, scheme={self.scheme!r})"

    async def app(self, cluster_id: str, **kw: Any) -> AsyncAppClient:
        """An :class:`AsyncAppClient` for the cluster's ``master_url`` with its certificates."""
        master_url, certs = await self._run(app_endpoint(cluster_id))
        return AsyncAppClient(master_url, certs, **app_options(self.timeout, kw))

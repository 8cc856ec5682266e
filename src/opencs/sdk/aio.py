"""The asynchronous control-plane client: the same methods as :class:`~opencs.sdk.Client`, as
coroutines (pagers as async iterators), over ``httpx.AsyncClient``.

    >>> async with AsyncClient("http://127.0.0.1:8990", ak, secret) as cs:
    ...     reply = await cs.create_cluster({"name": "c1", "size": 2})
    ...     await cs.wait_task(reply.task_id)
    ...     async for node in cs.iter_nodes(reply.cluster_id):
    ...         print(node.ip, node.health)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from opencs.auth.signature import ROA
from opencs.sdk.api import ControlPlaneAPI
from opencs.sdk.app import AsyncAppClient
from opencs.sdk.core import Call, QueryLike, RetryPolicy, Signer, payload_of, tls_context
from opencs.sdk.errors import ConflictError
from opencs.sdk.runners import AsyncRunner


class AsyncClient(AsyncRunner, ControlPlaneAPI):
    """Signed asynchronous client; the arguments are those of :class:`~opencs.sdk.Client`
    (``transport``: an :class:`httpx.AsyncBaseTransport`, e.g. ``httpx.ASGITransport(app)``)."""

    def __init__(
        self,
        endpoint: str,
        access_key_id: str,
        access_key_secret: str,
        *,
        scheme: str = ROA,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: int = 2,
        backoff: float = 0.3,
        http_client: httpx.AsyncClient | None = None,
        user_agent: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        super().__init__()
        self._endpoint = self._signer = Signer(endpoint, access_key_id, access_key_secret, scheme, user_agent)
        self.timeout = timeout
        self.retry = RetryPolicy(max(0, int(retries)), backoff)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout),
                                                      verify=tls_context(ca_file))

    @property
    def access_key_id(self) -> str:
        return self._signer.access_key_id

    @property
    def scheme(self) -> str:
        return self._signer.scheme

    @property
    def user_agent(self) -> str:
        return self._signer.user_agent

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

    async def request(self, method: str, path: str, *, query: QueryLike | None = None, body: Any = None,
                      headers: Mapping[str, str] | None = None) -> Any:
        """Send a signed call and return the decoded JSON reply (see ``Client.request``)."""
        return await self._run(Call(method, path, payload_of, query=query, body=body, headers=headers))

    async def app(self, cluster_id: str, **kw: Any) -> AsyncAppClient:
        """An :class:`AsyncAppClient` for the cluster's ``master_url`` with its certificates."""
        cluster = await self.describe_cluster(cluster_id)
        if not cluster.master_url:
            raise ConflictError(409, "NoMasterUrl", f"cluster {cluster_id} has no master_url yet "
                                f"(state {cluster.state})", None)
        kw.setdefault("timeout", max(self.timeout, 150.0))
        return AsyncAppClient(cluster.master_url, await self.cluster_certs(cluster_id), **kw)

"""The synchronous client of the signed control-plane API (Container Service 2015-12-15).

Signing reuses the pure functions of :mod:`opencs.auth.signature` (ROA HMAC-SHA1 or
ACS3-HMAC-SHA256). Each attempt carries a fresh ``Date``/``x-acs-date`` and nonce, so retried
requests are re-signed and never look like replays.

    >>> from opencs.sdk import Client
    >>> with Client("http://127.0.0.1:8990", ak, secret) as cs:
    ...     reply = cs.create_cluster({"name": "c1", "size": 2})
    ...     cs.wait_task(reply.task_id)
    ...     with cs.app(reply.cluster_id) as app:       # the cluster's Application API (mTLS)
    ...         app.create_project("web", open("compose.yml").read())
    ...         app.wait_project("web")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import httpx

from opencs.auth.signature import ACS3, ROA
from opencs.sdk.api import ControlPlaneAPI, SignedOptions, app_options, signed_setup
from opencs.sdk.app import AppClient
from opencs.sdk.control import raw_call
from opencs.sdk.core import QueryLike, normalize_scheme, tls_context
from opencs.sdk.flows import app_endpoint
from opencs.sdk.runners import SyncRunner

__all__ = ["Client", "normalize_scheme", "tls_context", "ROA", "ACS3"]


class Client(SyncRunner, ControlPlaneAPI):
    """Signed client for an opencs endpoint such as ``http://127.0.0.1:8990``.

    ``scheme`` is :data:`ROA` (``acs AK:sig``, the default) or :data:`ACS3`. ``transport`` plugs
    in any :class:`httpx.BaseTransport`; ``http_client`` replaces the whole :class:`httpx.Client`
    (e.g. a ``starlette.testclient.TestClient``). ``retries`` extra attempts are made only for
    GET/HEAD/PUT/DELETE after a connection failure or a 502/503/504.

    An ``https://`` endpoint's certificate is always verified: against ``ca_file`` (e.g. the output
    of ``opencs ca export``) when given, else against the system's trust store.
    """

    def __init__(self, endpoint: str, access_key_id: str, access_key_secret: str, *,
                 transport: httpx.BaseTransport | None = None, http_client: httpx.Client | None = None,
                 **options: Unpack[SignedOptions]) -> None:
        super().__init__()
        http = signed_setup(self, endpoint, access_key_id, access_key_secret, options)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(transport=transport, **http)

    def close(self) -> None:
        """Close the underlying HTTP client (only if this object created it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.endpoint!r}, {self.access_key_id!r}, scheme={self.scheme!r})"

    def prepare_request(
        self,
        method: str,
        path: str,
        *,
        query: QueryLike | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        date: str | None = None,
        nonce: str | None = None,
    ) -> httpx.Request:
        """Build one signed :class:`httpx.Request` (fresh date and nonce unless given).

        ``path`` may carry ``?k=v`` (merged before ``query``). ``body``: ``bytes``/``str`` are
        sent as they are, anything else as JSON. ``date`` is the RFC 1123 ``Date`` (ROA) or the
        ``x-acs-date`` (ACS3) value.
        """
        p = self._endpoint.parts(raw_call(method, path, query=query, body=body, headers=headers), date=date,
                                 nonce=nonce)
        return self._http.build_request(p.method, p.url, content=p.content or None, headers=p.headers)

    def app(self, cluster_id: str, **kw: Any) -> AppClient:
        """A client of the cluster's Application API: its ``master_url`` with a new certificate of
        the caller's (``GET /clusters/{id}`` and ``/certs``). ``kw`` go to :class:`AppClient`."""
        master_url, certs = self._run(app_endpoint(cluster_id))
        return AppClient(master_url, certs, **app_options(self.timeout, kw))

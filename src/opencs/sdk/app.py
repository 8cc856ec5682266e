"""Clients of a cluster's Application API (spec §10): ``master_url`` over mutual TLS.

The server is verified against the cluster's CA (hostname included); the client presents the
cluster's certificate. ``certs`` is the reply of ``GET /clusters/{id}/certs`` (a mapping with
``ca``, ``cert``, ``key``) or a directory holding ``ca.pem``, ``cert.pem``, ``key.pem``.

    >>> app = AppClient(cluster.master_url, cs.cluster_certs(cluster_id))   # or cs.app(cluster_id)
    >>> app.create_project("web", template); app.wait_project("web")
    >>> app.scale_service("web_web", 3)
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from opencs.sdk.api import ApplicationAPI
from opencs.sdk.core import Endpoint
from opencs.sdk.runners import AsyncRunner, SyncRunner

Certs = Mapping[str, Any] | str | os.PathLike[str]


def _pem(certs: Certs) -> tuple[str, str, str]:
    if isinstance(certs, Mapping):
        ca, cert, key = (str(certs.get(k) or "") for k in ("ca", "cert", "key"))
    else:
        d = Path(certs).expanduser()
        try:
            ca, cert, key = ((d / f"{k}.pem").read_text() for k in ("ca", "cert", "key"))
        except OSError as e:
            raise ValueError(f"cannot read the cluster certificates in {d}: {e.strerror or e}") from None
    if not (ca and cert and key):
        raise ValueError("cluster certificates need ca, cert and key (GET /clusters/{id}/certs)")
    return ca, cert, key


def mtls_context(certs: Certs) -> ssl.SSLContext:
    """A verifying TLS context trusting the cluster's CA and holding its client certificate.

    ``ssl`` loads a key only from a file: it is written to a private temporary directory, loaded,
    and removed at once."""
    ca, cert, key = _pem(certs)
    ctx = ssl.create_default_context(cadata=ca)
    with tempfile.TemporaryDirectory(prefix="opencs-mtls-") as tmp:
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert_file.write_text(cert)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as e:
            raise ValueError(f"the cluster certificate and key do not load: {e}") from None
    return ctx


def _https(master_url: str) -> str:
    """The console shows ``tcp://host:port`` (for docker); the API is ``https://`` there."""
    return "https://" + master_url.removeprefix("tcp://") if master_url.startswith("tcp://") else master_url


def _master_endpoint(master_url: str) -> Endpoint:
    endpoint = Endpoint(_https(master_url))
    if not endpoint.endpoint.startswith("https://"):
        raise ValueError(f"master_url must be https://HOST:PORT (or tcp://), got {master_url!r}")
    return endpoint


class AppClient(SyncRunner, ApplicationAPI):
    """Synchronous client of one cluster's Application API (projects, services, volumes)."""

    def __init__(self, master_url: str, certs: Certs, *, timeout: float = 150.0, retries: int = 2,
                 backoff: float = 0.3, transport: httpx.BaseTransport | None = None,
                 http_client: httpx.Client | None = None) -> None:
        super().__init__()
        self._configure(_master_endpoint(master_url), timeout, retries, backoff)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(transport=transport, timeout=httpx.Timeout(timeout),
                                                 verify=mtls_context(certs), trust_env=False)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AppClient({self.master_url!r})"


class AsyncAppClient(AsyncRunner, ApplicationAPI):
    """The same as :class:`AppClient`, with coroutines (``await app.get_project("web")``)."""

    def __init__(self, master_url: str, certs: Certs, *, timeout: float = 150.0, retries: int = 2,
                 backoff: float = 0.3, transport: httpx.AsyncBaseTransport | None = None,
                 http_client: httpx.AsyncClient | None = None) -> None:
        super().__init__()
        self._configure(_master_endpoint(master_url), timeout, retries, backoff)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout),
                                                      verify=mtls_context(certs), trust_env=False)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncAppClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncAppClient({self.master_url!r})"

"""A Kubernetes cluster's `master_url` (the kubeconfig's `server`): an mTLS listener that checks
each client certificate against opencs's record, then passes the request to kube-apiserver as its
front proxy.

kube-apiserver has no revocation check for client certificates, so the kubeconfigs opencs hands
out point here. The TLS layer accepts certificates of the cluster's CAs (the cluster CA for account
owners, the sub-users' CA) that have not expired; then, on every connection, the certificate's
record must be unrevoked, its user present and the AccessKey it was obtained with active
(opencs.services.cluster_certs.identify) — else a 401 Status and the connection closed. An admitted
request goes to the apiserver over TLS with a front-proxy-client certificate of the cluster's
front-proxy CA (`--requestheader-client-ca-file`, `--requestheader-allowed-names`), naming the
certificate's user (CN) in X-Remote-User and its groups (O) in X-Remote-Group; whatever identity
headers or Authorization the client sent are dropped. Only an account owner's certificate may
carry an admin group (system:masters; opencs, which GET /certs' certificates carry).

Mutating calls (opencs.appapi.guard.kube_verb) go on the audit trail as `k8s:<verb>` with the API
path, the caller, the apiserver's status and the RequestId; never a body or a header.

h11 reads the request head; the rest is passed as bytes both ways (opencs.appapi.engine_proxy), one
request per apiserver connection, so watches stream and exec/attach/port-forward upgrades
(WebSocket or SPDY) run as the apiserver speaks them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

import h11

from opencs import ids
from opencs.appapi import engine_proxy
from opencs.appapi.frontend import HEAD_TIMEOUT, ClusterFrontend
from opencs.appapi.guard import AppApiGuard
from opencs.appapi.http1 import new_connection, next_event, send_json
from opencs.appapi.tlsstream import READ_SIZE, TlsStream
from opencs.errors import ApiError

log = logging.getLogger("opencs.appapi")

# groups that make their holder cluster-admin: system:masters, and opencs (the O of GET /certs'
# certificates, bound to cluster-admin by the engine's add-ons); only an account owner's may pass them
ADMIN_GROUPS = ("system:masters", "opencs")
_IDENTITY = (b"x-remote-", b"authorization", b"impersonate-")


def status_body(status: int, code: str, message: str, request_id: str) -> dict[str, Any]:
    """A Kubernetes Status (what kubectl prints), with opencs's Code/Message/RequestId beside it."""
    reason = {401: "Unauthorized", 403: "Forbidden", 502: "ServiceUnavailable"}.get(status, "BadRequest")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": status, "Code": code, "Message": message, "RequestId": request_id}


def _identity_header(name: bytes) -> bool:
    return name.startswith(_IDENTITY)


async def open_apiserver(urls: list[str], ctx: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    errors: list[str] = []
    for url in urls:
        u = urlsplit(url)
        if u.scheme != "https" or not u.hostname:
            errors.append(f"{url}: not an https URL")
            continue
        try:
            async with asyncio.timeout(engine_proxy.CONNECT_TIMEOUT):
                return await asyncio.open_connection(u.hostname, u.port or 443, ssl=ctx, server_hostname=u.hostname,
                                                     limit=READ_SIZE)
        except (OSError, TimeoutError, ssl.SSLError) as e:
            errors.append(f"{url}: {e or type(e).__name__}")
    raise engine_proxy.NoEngine("; ".join(errors) or "the cluster has no apiserver endpoint")


class KubeFrontend(ClusterFrontend):
    """The listener of one Kubernetes cluster; `apiservers` (set_managers) are its https:// URLs."""

    def __init__(self, cluster_id: str, ssl_context: ssl.SSLContext, upstream_ssl: ssl.SSLContext,
                 apiservers: list[str], host: str, port: int, guard: AppApiGuard | None = None) -> None:
        super().__init__(cluster_id, ssl_context, None, apiservers, host, port, guard)
        self.upstream_ssl = upstream_ssl

    async def _requests(self, tls: TlsStream, peer: Any, sockname: Any, serial: str) -> None:
        conn = new_connection()
        rid = ids.request_id()
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                event = await next_event(conn, tls)
        except h11.RemoteProtocolError as e:
            with contextlib.suppress(Exception):
                await send_json(conn, tls, e.error_status_hint, status_body(400, "BadRequest", str(e), rid), close=True)
            return
        if not isinstance(event, h11.Request):
            return
        user, groups = tls.peer_identity()
        adm = None
        if self.guard is not None:
            try:
                who = await asyncio.to_thread(self.guard.identify, self.cluster_id, serial)
            except ApiError as e:
                log.info("kube %s: %s refused: %s", self.cluster_id, peer, e.message)
                await send_json(conn, tls, e.status, status_body(e.status, e.code, e.message, rid), rid, close=True)
                return
            if not who.is_owner:
                groups = [g for g in groups if g not in ADMIN_GROUPS]
            path = unquote(event.target.decode("latin-1").partition("?")[0])
            adm = self.guard.kube_admission(who, self.cluster_id, event.method.decode("latin-1"), path)
        client = peer[0] if isinstance(peer, tuple) and peer else ""
        extra = [(b"X-Remote-User", user.encode())] + [(b"X-Remote-Group", g.encode()) for g in groups]
        head, upgrade = engine_proxy.engine_head(event, drop=_identity_header, extra=extra)
        try:
            reader, writer = await open_apiserver(self._managers, self.upstream_ssl)
        except engine_proxy.NoEngine as e:
            log.warning("kube %s: no apiserver reachable: %s", self.cluster_id, e)
            msg = f"cluster {self.cluster_id}: no apiserver reachable"
            await send_json(conn, tls, 502, status_body(502, "NoApiServer", msg, rid), rid, close=True)
            await self._record(adm, client, rid, 502)
            return
        trailing, _closed = conn.trailing_data  # the start of a body h11 read with the head
        writer.write(head)
        # a stream (exec, a watch) is on record once it ended, with the apiserver's status (0: none came)
        status = await engine_proxy.splice(tls, reader, writer, bytes(trailing), upgrade)
        await self._record(adm, client, rid, status)

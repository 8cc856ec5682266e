"""One cluster's Application API endpoint (`master_url`): an mTLS listener that serves
`/projects`, `/services`, `/volumes` from the in-process app and passes every other Docker API
request to a swarm manager's engine.

Routing (spec §10.1: the endpoint is "compatible with the Docker Remote API" and the project,
service and volume routes are extensions):

* `/projects…` (also `/v1.NN/projects…`): the app — the Docker API has no such route.
* `/services…`, `/volumes…` without a version prefix (as in spec §10.18–10.28): the app; also
  `/service…`, the spec's own example of start-service (§10.20, the app reads it as `/services…`).
* `/v1.NN/services…`, `/v1.NN/volumes…`: the engine. Docker clients always send a version prefix,
  and `docker service ls|ps|logs` and `docker volume ls` expect Docker's own objects there.
* anything else: the engine.

Who calls (opencs.appapi.guard): the TLS layer accepts only certificates of the cluster's CAs that
have not expired; then every request is checked against the certificate's record (revoked, user or
AccessKey gone: 401, the connection closed) and its user's policies (403 Forbidden.RAM), and mutating
calls go on the audit trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

import h11

from opencs import ids
from opencs.appapi import engine_proxy
from opencs.appapi.asgi_bridge import AppHost, RequestInfo, serve
from opencs.appapi.guard import AppAdmission, AppApiGuard
from opencs.appapi.http1 import error_body, new_connection, next_event, send_json
from opencs.appapi.tlsstream import TlsStream
from opencs.errors import ApiError

log = logging.getLogger("opencs.appapi")

HANDSHAKE_TIMEOUT = 10.0
HEAD_TIMEOUT = 30.0  # to read the first request head after the handshake
IDLE_TIMEOUT = 120.0  # to read the next head on a keep-alive connection (app routes)

_VERSION = re.compile(r"^/v\d+(?:\.\d+)?(?=/|$)")
APP_ROUTES = ("/projects", "/services", "/service", "/volumes")
APP_ROUTES_VERSIONED = ("/projects",)


@dataclass(frozen=True)
class Route:
    target: Literal["app", "engine"]
    path: str  # for the app: the path without its version prefix; else the path as sent
    version: str  # "1.41" or ""


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r + "/") for r in roots)


def route(path: str) -> Route:
    """Where a request for `path` (no query string) goes; see the module docstring."""
    m = _VERSION.match(path)
    if m:
        rest = path[m.end():] or "/"
        if _under(rest, APP_ROUTES_VERSIONED):
            return Route("app", rest, m.group(0)[2:])
        return Route("engine", path, m.group(0)[2:])
    if _under(path, APP_ROUTES):
        return Route("app", path, "")
    return Route("engine", path, "")


class ClusterFrontend:
    """The listener of one cluster. Runs on the endpoint manager's event loop (opencs.loops.endpoints)."""

    def __init__(self, cluster_id: str, ssl_context: ssl.SSLContext, app: AppHost | None,
                 managers: list[str], host: str, port: int, guard: AppApiGuard | None = None) -> None:
        self.cluster_id = cluster_id
        self.ssl_context = ssl_context
        self.app = app
        # None: every certificate the TLS layer accepts may do everything (only tests build it so)
        self.guard = guard
        self.host = host
        self.port = port
        self._managers = list(managers)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind (OSError, e.g. EADDRINUSE, goes to the caller) and accept."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port, backlog=128,
                                                  reuse_address=True)

    async def stop(self) -> None:
        """Stop accepting and end every open connection (a streaming `logs -f` included)."""
        if self._server is not None:
            self._server.close()
        for t in list(self._conns):
            t.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    @property
    def connections(self) -> int:
        return len(self._conns)

    def set_managers(self, docker_hosts: list[str]) -> None:
        """Manager engines in preference order (refreshed from the store by the manager)."""
        if docker_hosts != self._managers and set(docker_hosts) != set(self._managers):  # lists first: cheap
            self._managers = list(docker_hosts)

    # ------------------------------------------------------------ connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._connection(reader, writer)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("appapi %s: connection failed", self.cluster_id)
        finally:
            self._conns.discard(task)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        tls = TlsStream(reader, writer, self.ssl_context)
        try:
            await tls.handshake(HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError) as e:
            # a client without a certificate of this cluster's CA ends here
            log.info("appapi %s: TLS handshake with %s refused: %s", self.cluster_id, peer, e)
            writer.close()
            return
        try:
            await self._requests(tls, peer, writer.get_extra_info("sockname"), tls.peer_serial())
        except (OSError, TimeoutError, h11.ProtocolError) as e:
            log.debug("appapi %s: connection from %s ended: %r", self.cluster_id, peer, e)
        finally:
            await tls.close()

    async def _admit(self, conn: h11.Connection, tls: TlsStream, req: h11.Request, path: str, target: str,
                     serial: str, source: str, rid: str) -> tuple[bool, AppAdmission | None]:
        """(may it go on, what was admitted); a refusal is answered here and ends the connection."""
        guard = self.guard
        if guard is None:
            return True, None
        method = req.method.decode("latin-1")
        try:
            who = await asyncio.to_thread(guard.identify, self.cluster_id, serial)
        except ApiError as e:
            log.info("appapi %s: %s refused: %s", self.cluster_id, source, e.message)
            await send_json(conn, tls, e.status, error_body(e.code, e.message, rid), rid, close=True)
            return False, None
        adm = guard.admit(who, self.cluster_id, method, path, target, source)
        if adm is not None and not adm.allowed:
            no = adm.refusal()
            await send_json(conn, tls, no.status, error_body(no.code, no.message, rid), rid, close=True)
            await asyncio.to_thread(guard.record, adm, source, rid, f"{no.status} {no.code}")
            return False, None
        return True, adm

    async def _record(self, adm: AppAdmission | None, source: str, rid: str, status: int) -> None:
        if adm is not None and adm.mutating and self.guard is not None:
            await asyncio.to_thread(self.guard.record, adm, source, rid, str(status))

    async def _requests(self, tls: TlsStream, peer: Any, sockname: Any, serial: str) -> None:
        conn = new_connection()
        timeout = HEAD_TIMEOUT
        while True:
            try:
                async with asyncio.timeout(timeout):  # the whole head, not each read (slow clients)
                    event = await next_event(conn, tls)
            except h11.RemoteProtocolError as e:
                with contextlib.suppress(Exception):
                    await send_json(conn, tls, e.error_status_hint, error_body("BadRequest", str(e), ""), close=True)
                return
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed
            rid = ids.request_id()
            target = event.target.decode("latin-1")
            raw_path, _, query = target.partition("?")
            r = route(unquote(raw_path))
            log.debug("appapi %s: %s %s -> %s", self.cluster_id, event.method.decode(), raw_path, r.target)
            client = _addr(peer)
            source = client[0] if client else ""
            go_on, adm = await self._admit(conn, tls, event, r.path, r.target, serial, source, rid)
            if not go_on:
                return
            if r.target == "engine":
                status = await self._to_engine(conn, tls, event, rid)
                await self._record(adm, source, rid, status)
                return  # Connection: close toward the engine ends this connection too
            if self.app is None:
                await send_json(conn, tls, 503, error_body("ServiceUnavailable",
                                                           "the Application API is not available", rid),
                                rid, close=True)
                return
            raw = raw_path.encode("latin-1")
            if r.version:  # drop "/v1.NN" from raw_path as well as from path
                raw = raw[len("/v" + r.version):]
            info = RequestInfo(
                path=r.path, raw_path=raw, query=query.encode("latin-1"),
                state={**self.app.state, "cluster_id": self.cluster_id, "request_id": rid},
                server=_addr(sockname), client=_addr(peer),
            )  # fmt: skip
            keep, status = await serve(self.app, conn, tls, event, info)
            await self._record(adm, source, rid, status)
            if not keep:
                return
            conn.start_next_cycle()
            timeout = IDLE_TIMEOUT

    async def _to_engine(self, conn: h11.Connection, tls: TlsStream, req: h11.Request, rid: str) -> int:
        """Pass the request to a manager's engine; the reply's status."""
        head, upgrade = engine_proxy.engine_head(req)
        try:
            reader, writer, used = await engine_proxy.open_engine(self._managers)
        except engine_proxy.NoEngine as e:
            log.warning("appapi %s: no manager engine reachable: %s", self.cluster_id, e)
            msg = f"cluster {self.cluster_id}: no swarm manager reachable"
            await send_json(conn, tls, 502, error_body("NoManager", msg, rid), rid, close=True)
            return 502
        if used in self._managers and used != self._managers[0]:
            # the first one failed: prefer the one that answered from now on
            self._managers.remove(used)
            self._managers.insert(0, used)
        # Bytes after the head that h11 has buffered (the start of a body) go first, as they are.
        trailing, _closed = conn.trailing_data
        writer.write(head)
        return await engine_proxy.splice(tls, reader, writer, bytes(trailing), upgrade)


def _addr(a: Any) -> tuple[str, int] | None:
    if isinstance(a, tuple) and len(a) >= 2:
        return str(a[0]), int(a[1])
    return None

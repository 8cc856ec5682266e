"""Runs the in-process projects/services/volumes ASGI app for requests read with h11."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import h11

from opencs.appapi.http1 import REQUEST_ID_HEADER, error_body, next_event, send_events, send_json
from opencs.appapi.tlsstream import TlsStream

log = logging.getLogger("opencs.appapi")

Scope = dict[str, Any]
Message = MutableMapping[str, Any]
# the shape of starlette.types.ASGIApp: what FastAPI apps are
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]

MAX_BODY = 16 * 1024 * 1024  # as the OpenAPI: project templates are small
BODY_TIMEOUT = 60.0


class AppHost:
    """One ASGI app shared by every cluster's endpoint, with its lifespan run once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def startup(self, timeout: float = 30.0) -> None:
        """ASGI lifespan startup; an app without lifespan support (it raises) is fine."""
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": self.state}
        self._task = asyncio.create_task(self._run(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        msg = await asyncio.wait_for(self._outbox.get(), timeout)
        if msg["type"] == "lifespan.startup.failed":
            raise RuntimeError(f"Application API startup failed: {msg.get('message', '')}")

    async def _run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self._inbox.get, self._outbox.put)
        except Exception as e:  # no lifespan support: the spec says apps raise
            log.debug("Application API app has no lifespan: %r", e)
        # unblock whoever waits for an answer
        await self._outbox.put({"type": "lifespan.gone"})

    async def shutdown(self, timeout: float = 10.0) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._outbox.get(), timeout)
        if not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


@dataclass
class RequestInfo:
    """What the frontend knows about one request beyond the h11 event."""

    path: str  # decoded, without the /v1.NN prefix
    raw_path: bytes
    query: bytes
    state: dict[str, Any]  # cluster_id, request_id (+ lifespan state)
    server: tuple[str, int] | None
    client: tuple[str, int] | None


def _scope(req: h11.Request, info: RequestInfo) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": req.http_version.decode("ascii"),
        "method": req.method.decode("ascii"),
        "scheme": "https",
        "path": info.path,
        "raw_path": info.raw_path,
        "query_string": info.query,
        "root_path": "",
        "headers": [(k, v) for k, v in req.headers],
        "server": info.server,
        "client": info.client,
        "state": info.state,
    }


class _Exchange:
    """One request/response between h11 and the ASGI app: the app's receive() and send()."""

    def __init__(self, conn: h11.Connection, tls: TlsStream, method: str, rid: str) -> None:
        self.conn, self.tls, self.method, self.rid = conn, tls, method, rid
        self.body_done = False
        self.received = 0
        self.response_done = asyncio.Event()
        self.started: list[tuple[int, list[tuple[bytes, bytes]]]] = []
        self.sent_head = False

    async def receive(self) -> Message:
        conn = self.conn
        if self.body_done:
            await self.response_done.wait()  # nothing more to read: the app sees a disconnect afterwards
            return {"type": "http.disconnect"}
        if conn.they_are_waiting_for_100_continue:
            await send_events(conn, self.tls, h11.InformationalResponse(status_code=100, headers=[]))
        try:
            event = await next_event(conn, self.tls, BODY_TIMEOUT)
        except (OSError, TimeoutError, h11.RemoteProtocolError):
            self.body_done = True
            return {"type": "http.disconnect"}
        if isinstance(event, h11.Data):
            self.received += len(event.data)
            if self.received > MAX_BODY:
                self.body_done = True
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": bytes(event.data), "more_body": True}
        self.body_done = True
        if isinstance(event, h11.EndOfMessage):
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.response_done.is_set():
            return
        if message["type"] == "http.response.start":
            headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", [])]
            if not any(k == REQUEST_ID_HEADER.encode() for k, _ in headers) and self.rid:
                headers.append((REQUEST_ID_HEADER.encode(), self.rid.encode()))
            self.started.append((int(message["status"]), headers))
            return
        if message["type"] != "http.response.body" or not self.started:
            return
        events: list[Any] = []
        if not self.sent_head:
            status, headers = self.started[0]
            events.append(h11.Response(status_code=status, headers=headers))
            self.sent_head = True
        body = message.get("body", b"")
        if body and self.method != "HEAD":  # h11 frames HEAD replies as empty
            events.append(h11.Data(data=body))
        if not message.get("more_body", False):
            events.append(h11.EndOfMessage())
            self.response_done.set()
        await send_events(self.conn, self.tls, *events)


async def serve(host: AppHost, conn: h11.Connection, tls: TlsStream, req: h11.Request,
                info: RequestInfo) -> tuple[bool, int]:
    """Run one request through the app; (whether the connection may serve another request, the
    reply's status)."""
    rid = str(info.state.get("request_id", ""))
    length = next((v for k, v in req.headers if k == b"content-length"), None)
    if length is not None and int(length) > MAX_BODY:
        await send_json(conn, tls, 413, error_body("RequestTooLarge", f"body larger than {MAX_BODY} bytes", rid),
                        rid, close=True)
        return False, 413
    ex = _Exchange(conn, tls, req.method.decode("ascii"), rid)
    try:
        await host.app(_scope(req, info), ex.receive, ex.send)
    except Exception:
        log.exception("Application API request %s %s failed (request %s)", ex.method, info.path, rid)
        if not ex.sent_head:
            with contextlib.suppress(Exception):
                await send_json(conn, tls, 500, error_body("InternalError", "internal error", rid), rid, close=True)
        return False, ex.started[0][0] if ex.sent_head else 500
    finally:
        ex.response_done.set()
    if not ex.sent_head:  # the app returned without answering
        await send_json(conn, tls, 500, error_body("InternalError", "no response", rid), rid, close=True)
        return False, 500
    # A route that takes no body never reads the request's (empty) end: read it now, or the connection
    # would be closed right after the reply while a keep-alive client already reuses it for the next
    # request ("Remote end closed connection without response").
    while conn.their_state is h11.SEND_BODY and not ex.body_done:
        msg = await ex.receive()
        if msg["type"] != "http.request" or not msg.get("more_body"):
            break
    return conn.our_state is h11.DONE and conn.their_state is h11.DONE, ex.started[0][0]

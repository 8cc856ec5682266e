"""HTTP/1.1 helpers over a TlsStream, on top of h11 (no hand-written parsing)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11

from opencs.appapi.tlsstream import TlsStream

REQUEST_ID_HEADER = "x-acs-request-id"  # the same header as the OpenAPI (opencs.api.errors)

# Docker clients send X-Registry-Auth (base64 JSON) headers; h11's 16 KiB default is tight.
MAX_HEAD = 64 * 1024


def new_connection() -> h11.Connection:
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)


async def next_event(conn: h11.Connection, tls: TlsStream, timeout: float | None = None) -> Any:
    """The next h11 event, reading from the client as needed (ConnectionClosed at EOF)."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        if timeout is None:
            data = await tls.recv()
        else:
            async with asyncio.timeout(timeout):
                data = await tls.recv()
        conn.receive_data(data)


async def send_events(conn: h11.Connection, tls: TlsStream, *events: Any) -> None:
    out = b"".join(conn.send(e) or b"" for e in events)
    if out:
        await tls.send(out)


def error_body(code: str, message: str, request_id: str) -> dict[str, str]:
    """Docker clients print `message`; opencs' other APIs use Code/Message/RequestId: carry both."""
    return {"message": message, "Code": code, "Message": message, "RequestId": request_id}


async def send_json(conn: h11.Connection, tls: TlsStream, status: int, body: dict[str, Any],
                    request_id: str = "", close: bool = False) -> None:
    """A small JSON reply of our own (errors)."""
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if request_id:
        headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send_events(conn, tls, h11.Response(status_code=status, headers=headers), h11.Data(data=data),
                      h11.EndOfMessage())

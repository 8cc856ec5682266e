"""Passes a Docker API request to a swarm manager's engine and splices the bytes both ways.

Only the request head is rewritten (Connection handling); the body and the whole response are
raw bytes, so chunked uploads, streamed logs/events and hijacked exec/attach sessions pass
unchanged and without buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

import h11

from opencs.appapi.tlsstream import READ_SIZE, TlsStream

log = logging.getLogger("opencs.appapi")

CONNECT_TIMEOUT = 3.0
# hop-by-hop headers that describe the client's connection to us, not ours to the engine
_HOP = {b"connection", b"keep-alive", b"proxy-connection"}


class NoEngine(Exception):
    """No manager engine accepted a connection."""


def engine_head(req: h11.Request, drop: Callable[[bytes], bool] | None = None,
                extra: Sequence[tuple[bytes, bytes]] = ()) -> tuple[bytes, bool]:
    """The request head for the engine and whether it is a protocol upgrade (exec/attach hijack).

    Non-upgrade requests get `Connection: close`: the engine then ends the response by closing,
    so the splice needs no HTTP parsing of the response (streams end when the engine says so).
    `drop` leaves out headers by their lower-cased name, `extra` adds some (a front proxy's identity)."""
    tokens = {t.strip().lower() for k, v in req.headers if k == b"connection" for t in v.split(b",")}
    upgrade = b"upgrade" in tokens and any(k == b"upgrade" for k, _ in req.headers)
    lines = [b"%s %s HTTP/%s" % (req.method, req.target, req.http_version)]
    for name, value in req.headers.raw_items():
        low = name.lower()
        if low in _HOP or (low in tokens and low != b"upgrade") or (low == b"upgrade" and not upgrade):
            continue
        if drop is not None and drop(low):
            continue
        lines.append(name + b": " + value)
    lines += [name + b": " + value for name, value in extra]
    lines.append(b"Connection: Upgrade" if upgrade else b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n", upgrade


async def open_engine(docker_hosts: list[str]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """Connect to the first manager engine that answers (unix sockets: the local provider)."""
    errors: list[str] = []
    for host in docker_hosts:
        if not host.startswith("unix://"):
            errors.append(f"{host}: only unix:// engines are supported")
            continue
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(host[len("unix://"):], limit=READ_SIZE)
            return reader, writer, host
        except (OSError, TimeoutError) as e:
            errors.append(f"{host}: {e or type(e).__name__}")
    raise NoEngine("; ".join(errors) or "the cluster has no swarm manager")


def reply_status(head: bytes) -> int:
    """The status code of an HTTP/1.x reply's first bytes (0 if they are no status line)."""
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    return int(parts[1]) if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else 0


async def splice(tls: TlsStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes,
                 upgrade: bool) -> int:
    """Copy client→engine and engine→client until done; returns the engine's reply status (0: none).

    Plain requests end when the engine closes (it was told `Connection: close`). Upgraded ones
    run until both directions ended: an EOF on one side is passed on as a half-close (TCP
    shutdown toward the engine, TLS close_notify toward the client) and the other keeps going,
    which is what `docker exec -i` needs when stdin ends before the output does."""

    async def client_to_engine() -> None:
        with contextlib.suppress(OSError):
            data = first
            while True:
                if data:
                    writer.write(data)
                    await writer.drain()
                data = await tls.recv()
                if not data:
                    break
            if writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()

    status = 0

    async def engine_to_client() -> None:
        nonlocal status
        with contextlib.suppress(OSError):
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                if not status:
                    status = reply_status(data) or -1
                await tls.send(data)  # at once: logs -f / events must not wait for more bytes
            await tls.send_eof()

    up = asyncio.create_task(client_to_engine())
    down = asyncio.create_task(engine_to_client())
    gone: asyncio.Task[None] | None = None
    try:
        if upgrade:
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            if up.done() and not down.done():
                # The client half-closed: its output still flows, unless it really left (TCP closed),
                # in which case an idle attach would otherwise hold the engine connection forever.
                gone = asyncio.create_task(tls.wait_transport_closed())
                await asyncio.wait({down, gone}, return_when=asyncio.FIRST_COMPLETED)
            else:
                await up  # the engine ended: the client closes once it has read the rest
        else:
            await down
    finally:
        tasks = [t for t in (up, down, gone) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await writer.wait_closed()
    return max(status, 0)

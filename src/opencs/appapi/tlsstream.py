"""Server-side TLS over plain asyncio streams, with TLS half-close.

Why not `asyncio.start_server(ssl=...)`: asyncio's SSL transport shuts the whole connection down
when the peer sends close_notify ("returning true from eof_received() has no effect when using
ssl"). The Docker CLI sends close_notify when stdin ends (`echo hi | docker exec -i c cat`) and
still expects the output, so the Application API endpoint drives `ssl.SSLObject` over memory BIOs
itself: a received close_notify is an EOF for reading only, and writing goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile

READ_SIZE = 64 * 1024


def server_context(ca_pem: str, cert_pem: str, key_pem: str, client_cas: list[str] | None = None) -> ssl.SSLContext:
    """mTLS server context: our certificate, and client certificates REQUIRED from `client_cas`
    (default: `ca_pem`) only. OpenSSL refuses expired client certificates here, at the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Only this cluster's CAs: a certificate of another cluster (or any public CA) is refused.
    for ca in client_cas or [ca_pem]:
        ctx.load_verify_locations(cadata=ca)
    _load_chain(ctx, cert_pem, key_pem)
    # HTTP/1.1 only: the Docker API hijacks connections (exec/attach), which HTTP/2 cannot do.
    ctx.set_alpn_protocols(["http/1.1"])
    # Docker and Python clients do not resume sessions; tickets would be wasted bytes per request.
    ctx.num_tickets = 0
    return ctx


def client_context(ca_pem: str, cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """mTLS client context: servers verified against `ca_pem` (names checked), our certificate."""
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert_pem, key_pem)
    ctx.set_alpn_protocols(["http/1.1"])  # bytes are spliced after the head: HTTP/1.1 both ways
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """`ssl` loads keys from paths only; an anonymous memory file keeps the key off the disk."""
    data = (cert_pem.rstrip("\n") + "\n" + key_pem).encode("ascii")
    try:
        fd = os.memfd_create("opencs-appapi-cert", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux (or no memfd): a private temporary file
        fd = -1
    if fd >= 0:
        try:
            with os.fdopen(os.dup(fd), "wb") as f:
                f.write(data)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    fd, path = tempfile.mkstemp(prefix="opencs-appapi-")  # 0600, removed at once
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


class TlsStream:
    """One TLS connection. `recv` and `send` may run in two tasks at once (a bidirectional splice):
    every SSLObject call is synchronous and the loop is single-threaded, so they never interleave."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: ssl.SSLContext) -> None:
        self._reader = reader
        self._writer = writer
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = ctx.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._stash: list[bytes] = []  # plaintext read ahead by send_eof()
        self.eof_received = False
        self.eof_sent = False
        self._transport_eof = False

    async def handshake(self, timeout: float) -> None:
        """Raises ssl.SSLError (bad/missing client certificate), OSError or TimeoutError."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    self._ssl.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await self._flush()
                    await self._fill()
                except ssl.SSLError:
                    # Send our alert ("certificate required", "unknown ca") so the client sees why.
                    with contextlib.suppress(Exception):
                        await self._flush()
                    raise
            await self._flush()

    def peer_identity(self) -> tuple[str, list[str]]:
        """The verified client certificate's CN and O values (Kubernetes' user and groups)."""
        cert = self._ssl.getpeercert() or {}
        cn, orgs = "", []
        for rdn in cert.get("subject", ()):
            for key, value in rdn:  # type: ignore[str-unpack]  # typeshed's union; subject RDNs are pairs
                if key == "commonName":
                    cn = str(value)
                elif key == "organizationName":
                    orgs.append(str(value))
        return cn, orgs

    def peer_serial(self) -> str:
        """The verified client certificate's serial number, lowercase hex ("" if there is none)."""
        cert = self._ssl.getpeercert()
        raw = cert.get("serialNumber") if cert else None
        return format(int(str(raw), 16), "x") if raw else ""

    async def _fill(self) -> None:
        data = await self._reader.read(READ_SIZE)
        if data:
            self._incoming.write(data)
        else:
            self._transport_eof = True
            self._incoming.write_eof()

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            if self._writer.is_closing():
                raise ConnectionResetError("connection closed")
            self._writer.write(data)
            await self._writer.drain()

    async def recv(self, n: int = READ_SIZE) -> bytes:
        """Plaintext; b"" once the peer sent close_notify or closed the TCP connection."""
        while True:
            # checked on every turn: send_eof() may stash plaintext while we wait in _fill()
            if self._stash:
                return self._stash.pop(0)
            if self.eof_received:
                return b""
            try:
                data = self._ssl.read(n)
            except ssl.SSLWantReadError:
                await self._flush()  # e.g. a TLS 1.3 KeyUpdate reply
                await self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            if self._outgoing.pending:
                await self._flush()
            if not data:
                self.eof_received = True
            return data

    async def wait_transport_closed(self) -> None:
        """Once recv() returned b"": wait until the peer closes TCP too, i.e. it left rather than
        only half-closed. (Nothing may follow close_notify, so stray bytes are dropped.)"""
        while not self._transport_eof:
            if not await self._reader.read(READ_SIZE):
                self._transport_eof = True

    async def send(self, data: bytes) -> None:
        if self.eof_sent:
            raise ConnectionResetError("TLS write side already closed")
        self._ssl.write(data)  # memory BIO: never blocks; renegotiation is disabled
        await self._flush()

    async def send_eof(self) -> None:
        """close_notify: the end of our side only; the peer may go on sending (half-close)."""
        if self.eof_sent:
            return
        self.eof_sent = True
        # Python's unwrap() calls SSL_shutdown twice and the second call swallows (and fails on)
        # application data already buffered in the incoming BIO: read that plaintext first.
        while not self.eof_received:
            try:
                chunk = self._ssl.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            if not chunk:
                self.eof_received = True
                break
            self._stash.append(chunk)
        with contextlib.suppress(ssl.SSLError):  # WantRead: we do not wait for the peer's alert
            self._ssl.unwrap()
        await self._flush()

    async def close(self, timeout: float = 2.0) -> None:
        """close_notify (if not sent yet) and close the socket; never raises."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await self.send_eof()
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await self._writer.wait_closed()

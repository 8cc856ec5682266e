"""The API's node-facing paths on the nodes' bridge, for a server that listens on loopback only.

The default `opencs server` listens on 127.0.0.1, which no node reaches: a trigger URL handed to a
container or an alert receiver, or an attach script's calls, would go nowhere. This loop serves an
app that answers only what the nodes call (`opencs.api.app.NODE_PATHS`; the rest is a 404 with a
RequestId) on the bridge's gateway address, the API's port, and says so through `base()`: trigger
URLs and attach scripts use it while it serves. The bridge may come up after the server starts (the
first local machine creates it), and a second server sharing the data dir finds the address taken:
like the registry's token realm it (re)binds in the background (`opencs.rebinding`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opencs.rebinding import RebindingListener

if TYPE_CHECKING:
    from opencs.config import Settings
    from opencs.providers.base import Provider
    from opencs.services.attach_scripts import NodeEndpoint

log = logging.getLogger("opencs.api")


@dataclass(frozen=True)
class NodeListen:
    """Where and how: the gateway address (None until the provider knows it), the API's port and
    scheme, and the certificate files when the API speaks HTTPS."""

    address: Callable[[], str | None]
    port: int
    scheme: str = "http"
    cert_file: str | None = None
    key_file: str | None = None


class NodeApiListener(RebindingListener[socket.socket]):
    """A loop of the server process: keeps `app_factory()`'s app served on the bridge gateway."""

    name = "node-api"

    def __init__(self, listen: NodeListen, app_factory: Callable[[], Any], retry: float = 0.5) -> None:
        super().__init__(retry, join_timeout=10.0)
        self.listen = listen
        self.app_factory = app_factory
        self._server: Any = None
        self._bound: str | None = None

    def base(self) -> str:
        """The URL the nodes reach the API by while this serves ('' before and after)."""
        host = self._bound
        if host is None:
            return ""
        return f"{self.listen.scheme}://{f'[{host}]' if ':' in host else host}:{self.listen.port}"

    def _bind(self) -> socket.socket | None:
        host = self.listen.address()
        if not host:
            return None
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self.listen.port))
            sock.listen(128)
        except OSError as e:  # no bridge yet, or another server process serves it
            sock.close()
            log.debug("node API: cannot bind %s:%d yet: %s", host, self.listen.port, e)
            return None
        return sock

    def _serve(self, bound: socket.socket) -> None:
        import uvicorn

        config = uvicorn.Config(self.app_factory(), lifespan="off", access_log=False, log_config=None,
                                timeout_graceful_shutdown=5, ssl_certfile=self.listen.cert_file,
                                ssl_keyfile=self.listen.key_file)
        self._server = uvicorn.Server(config)  # not the main thread: it installs no signal handlers
        self._bound = bound.getsockname()[0]
        log.info("node-facing API paths on %s", self.base())
        try:
            asyncio.run(self._server.serve(sockets=[bound]))
        finally:
            self._bound = None
            bound.close()

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def stop(self) -> None:
        super().stop()
        self._server = self._bound = None


def node_gateway(providers: dict[str, Provider]) -> str | None:
    """The host's address on the nodes' bridge (the local provider's), if there is one."""
    net = next((n for p in providers.values() if (n := p.host_network()) is not None), None)
    return net.gateway_address if net is not None else None


def node_listen(settings: Settings, providers: dict[str, Provider]) -> NodeListen | None:
    """Where the node-facing paths are served besides the API: on the bridge gateway, the API's
    port, when the API listens on loopback only and no public URL beyond loopback is configured."""
    from opencs.pki.server_tls import SERVER_FILE, SERVER_KEY_FILE, is_loopback, tls_dir, url_host

    if not (is_loopback(settings.host) and is_loopback(url_host(settings.public_url))):
        return None
    if node_gateway(providers) is None:
        return None
    if not settings.tls:
        return NodeListen(lambda: node_gateway(providers), settings.port)
    cert, key = tls_dir(settings.data_dir) / SERVER_FILE, tls_dir(settings.data_dir) / SERVER_KEY_FILE
    if not (cert.exists() and key.exists()):  # a certificate of the user's (--tls-cert): no SAN of the bridge
        log.warning("nodes cannot reach the API: it listens on loopback with a certificate of its own; "
                    "start it with --host 0.0.0.0 or set OPENCS_PUBLIC_URL")
        return None
    return NodeListen(lambda: node_gateway(providers), settings.port, "https", str(cert), str(key))


def node_endpoint(settings: Settings, providers: dict[str, Provider],
                  node_base: Callable[[], str] = lambda: "") -> NodeEndpoint | None:
    """How a script on a node reaches this API (attach scripts): the nodes' bridge address when the
    API listens on every address, else a public URL that is not loopback, else the node-facing
    listener on the bridge (`node_base`, while it serves), else nothing."""
    from opencs.pki.ca import spki_pin
    from opencs.pki.server_tls import SERVER_FILE, is_loopback, is_wildcard, tls_dir, url_host
    from opencs.services.attach_scripts import NodeEndpoint

    scheme = "https" if settings.tls else "http"
    gateway = node_gateway(providers)
    if is_wildcard(settings.host) and gateway:
        base = f"{scheme}://{gateway}:{settings.port}"
    elif not is_loopback(url_host(settings.public_url)):
        base = settings.public_url
    else:
        base = node_base()
    if not base:
        return None
    cert = tls_dir(settings.data_dir) / SERVER_FILE
    return NodeEndpoint(base, spki_pin(cert.read_text()) if settings.tls and cert.exists() else "")

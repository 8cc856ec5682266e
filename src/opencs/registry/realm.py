"""The realm of the bundled registry's token authentication: `GET /token` on the nodes' bridge.

docker (and containerd) on a node get a 401 with `WWW-Authenticate: Bearer realm=...` from the
registry and ask this endpoint for a token: `GET` with Basic credentials or none (docker), or the
OAuth2 `POST` form with a password grant (containerd, when it has credentials). It has to listen where
the nodes reach it, next to the registry on the bridge, so it is a listener of its own (the API port
stays on loopback by default); what it answers is decided by the `TokenIssuer` it is given.
The listener (re)binds in the background (`opencs.rebinding`).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import logging
from collections.abc import Callable
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from opencs.rebinding import RebindingListener

log = logging.getLogger("opencs.registry")
MAX_FORM = 16 * 1024  # an OAuth2 token form: a few scopes and a credential


class TokenIssuer(Protocol):
    def token(self, authorization: str, query: dict[str, list[str]], source: str) -> tuple[int, dict[str, object]]:
        """(HTTP status, JSON body) of one token request."""


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _RealmHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path != "/token":
            self._reply(404, {"errors": [{"code": "NOT_FOUND", "message": "only /token is served here"}]})
            return
        self._answer(self.headers.get("Authorization", ""), parse_qs(url.query))

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        """The OAuth2 form of the same request (docker's token spec), which containerd sends when it
        has credentials: `grant_type=password` with username and password, service and scope."""
        if urlsplit(self.path).path != "/token":
            self._reply(404, {"errors": [{"code": "NOT_FOUND", "message": "only /token is served here"}]})
            return
        try:
            size = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            size = -1
        if not 0 <= size <= MAX_FORM:
            self.close_connection = True
            self._reply(400, {"errors": [{"code": "UNSUPPORTED", "message": "a form of up to 16 KiB is expected"}]})
            return
        form = parse_qs(self.rfile.read(size).decode("utf-8", "replace"))
        if form.get("grant_type", [""])[0] != "password":
            self._reply(400, {"errors": [{"code": "UNSUPPORTED", "message": "only grant_type=password is served"}]})
            return
        basic = f"{form.get('username', [''])[0]}:{form.get('password', [''])[0]}"
        query = {k: v for k, v in form.items() if k in ("service", "scope")}
        self._answer(f"Basic {base64.b64encode(basic.encode()).decode()}", query)

    def _answer(self, authorization: str, query: dict[str, list[str]]) -> None:
        try:
            status, body = self.server.issuer.token(authorization, query, self.client_address[0])
        except Exception:
            log.exception("registry token request failed")
            status, body = 500, {"errors": [{"code": "UNKNOWN", "message": "token service failed"}]}
        self._reply(status, body)

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="opencs registry"')
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the query names scopes only; credentials are in a header or the form, but keep the log to outcomes


class _RealmHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], issuer: TokenIssuer) -> None:
        self.issuer = issuer
        super().__init__(address, _Handler)


class RealmListener(RebindingListener[_RealmHTTPServer]):
    """A loop of the server process: keeps `GET /token` served on `address()` (None: no bridge yet)."""

    name = "registry-realm"

    def __init__(self, address: Callable[[], tuple[str, int] | None], issuer: TokenIssuer,
                 retry: float = 0.5) -> None:
        super().__init__(retry)
        self.address = address
        self.issuer = issuer
        self._server: _RealmHTTPServer | None = None

    def _bind(self) -> _RealmHTTPServer | None:
        addr = self.address()
        if addr is None:
            return None
        try:
            return _RealmHTTPServer(addr, self.issuer)
        except OSError as e:  # the bridge is not up yet, or another process serves it
            log.debug("registry realm: cannot bind %s:%d yet: %s", addr[0], addr[1], e)
            return None

    def _serve(self, bound: _RealmHTTPServer) -> None:
        self._server = bound
        log.info("registry token realm on http://%s:%d/token", *bound.server_address[:2])
        bound.serve_forever(poll_interval=0.5)

    def _shutdown(self) -> None:
        if self._server is not None:
            with contextlib.suppress(Exception):
                self._server.shutdown()
            self._server.server_close()
            self._server = None

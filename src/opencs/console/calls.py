"""The console's calls: in-process requests to the same ASGI apps the signed API and master_url serve.

A console action is the API call it stands for, made inside this process: the control-plane app
(`SignedApiMiddleware` takes the session's AccessKey — or the user of a password session — in place
of a signature, then authorizes, applies the HTTPS rules, cuts lists and audits exactly as for a
signed call) and the Application API app of a cluster (admitted by the same RAM decision as
master_url's). So a user sees and does in the console exactly what their rights allow on the API,
and the field errors are the API's own.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from opencs.api.middleware import IN_PROCESS_CALLER, IN_PROCESS_USER

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # the parsed JSON reply (None when it was not JSON)
    raw: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def code(self) -> str:
        return str(self.body.get("Code", "")) if isinstance(self.body, dict) else ""

    @property
    def message(self) -> str:
        if isinstance(self.body, dict) and "Message" in self.body:
            return str(self.body["Message"])
        return self.raw.decode("utf-8", "replace")[:500] or f"HTTP {self.status}"


@dataclass(frozen=True)
class Caller:
    """Who the console calls for and from where (the browser's address and scheme, so that source-IP
    conditions, the HTTPS rules and the audit trail see the real client)."""

    access_key_id: str
    client: tuple[str, int] | None
    scheme: str
    host: str
    user_id: str = ""  # a session signed in with a password: the user, and no AccessKey


def _scope(caller: Caller, method: str, path: str, query: dict[str, str] | None, body: bytes,
           extra_state: dict[str, Any] | None = None) -> dict[str, Any]:
    headers = [(b"host", caller.host.encode("latin-1")), (b"accept", b"application/json")]
    if body:
        headers.append((b"content-type", b"application/json"))
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": caller.scheme, "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": urlencode(query or {}).encode(), "headers": headers, "client": caller.client,
        "server": None, "state": dict(extra_state or {}),
        **({IN_PROCESS_USER: caller.user_id} if caller.user_id else {IN_PROCESS_CALLER: caller.access_key_id}),
    }


async def call_asgi(app: ASGIApp, scope: dict[str, Any], body: bytes) -> Reply:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    status = 500
    headers: tuple[tuple[bytes, bytes], ...] = ()
    chunks: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = tuple(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    raw = b"".join(chunks)
    try:
        doc = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        doc = None
    return Reply(status, doc, raw, headers)


class ControlPlaneApi:
    """The control-plane API, called in-process for the signed-in user."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def call(self, caller: Caller, method: str, path: str, *, body: dict[str, Any] | None = None,
                   query: dict[str, str] | None = None) -> Reply:
        raw = json.dumps(body).encode() if body is not None else b""
        return await call_asgi(self.app, _scope(caller, method, path, query, raw), raw)


def app_scope(caller: Caller, cluster_id: str, method: str, path: str, query: dict[str, str] | None,
              body: bytes, request_id: str) -> dict[str, Any]:
    """What the mTLS frontend hands the Application API app: the cluster and a request id."""
    return _scope(caller, method, path, query, body, {"cluster_id": cluster_id, "request_id": request_id})

"""The request side of every console page: the session, the CSRF check, rendering, the calls.

`page(fn)` wraps an endpoint: no session → the sign-in page (htmx: an HX-Redirect); a state-changing
method without the session's CSRF token → 403, before anything runs. The endpoint gets a `Ctx`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl

from anyio import to_thread
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from opencs.api.secure_transport import loopback_peer
from opencs.appapi.guard import AppApiGuard
from opencs.console.calls import ASGIApp, Caller, ControlPlaneApi, Reply, app_scope, call_asgi
from opencs.console.deps import ConsoleServices
from opencs.services.accounts import Principal
from opencs.services.console_sessions import Session

HERE = Path(__file__).parent
COOKIE = "opencs_console"  # the session id (opencs.services.console_sessions)
SAFE_METHODS = ("GET", "HEAD")
DENIED = "User not authorized to operate on the specified resource, or this API doesn't support RAM."
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
# no inline script or style, nothing from elsewhere: the page runs only the console's own files
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals["assets_ok"] = (HERE / "static" / "htmx.min.js").is_file()
    return env


@dataclass
class Console:
    """One console of one process: its services (sessions and failed sign-ins are in the store,
    shared by every process), templates and the apps it calls."""

    services: ConsoleServices
    api: ControlPlaneApi
    appapi: ASGIApp
    guard: AppApiGuard  # the Application API's RAM decision and audit, as master_url's

    env: Environment = field(default_factory=environment)


def console_of(request: Request) -> Console:
    c: Console = request.app.state.console
    return c


@dataclass
class Ctx:
    request: Request
    console: Console
    session: Session
    who: Principal
    form: dict[str, str]

    @property
    def caller(self) -> Caller:
        c = self.request.scope.get("client")
        return Caller(self.session.access_key_id, (str(c[0]), int(c[1])) if c else None,
                      self.request.url.scheme, self.request.headers.get("host", "localhost"), self.session.user_id)

    async def api(self, method: str, path: str, *, body: dict[str, Any] | None = None,
                  query: dict[str, str] | None = None) -> Reply:
        return await self.console.api.call(self.caller, method, path, body=body, query=query)

    def may(self, method: str, path: str) -> bool:
        """Whether the user may make this control-plane call (decides which buttons show)."""
        return self.console.services.authorizer.permits(self.who, method, path, self.scope)

    @property
    def scope(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.request.scope)

    @property
    def source(self) -> str:
        return self.caller.client[0] if self.caller.client else ""

    def may_app(self, cluster_id: str, method: str, path: str, target: str = "app") -> bool:
        """Whether master_url would serve this call of the user (its AppApiGuard decision)."""
        adm = self.console.guard.admit(self.who, cluster_id, method, path, target, self.source)
        return adm is None or adm.allowed

    async def app(self, cluster_id: str, method: str, path: str, *, body: dict[str, Any] | None = None,
                  query: dict[str, str] | None = None) -> Reply:
        """A call of the cluster's Application API, admitted and put on record as master_url does."""
        guard, rid = self.console.guard, "CONSOLE-" + secrets.token_hex(8)
        adm = guard.admit(self.who, cluster_id, method, path, "app", self.source)
        if adm is not None and not adm.allowed:
            no = adm.refusal()
            await to_thread.run_sync(guard.record, adm, self.source, rid, f"{no.status} {no.code}")
            return Reply(no.status, {"Code": no.code, "Message": no.message})
        raw = json.dumps(body).encode() if body is not None else b""
        scope = app_scope(self.caller, cluster_id, method, path, query, raw, rid)
        reply = await call_asgi(self.console.appapi, scope, raw)
        if adm is not None and adm.mutating:
            await to_thread.run_sync(guard.record, adm, self.source, rid, str(reply.status))
        return reply

    def html(self, template: str, **values: Any) -> str:
        """A fragment as text (an SSE event's data)."""
        return self.console.env.get_template(template).render(
            request=self.request, prefix=prefix(self.request), ctx=self, who=self.who, csrf=self.session.csrf, **values)

    def render(self, template: str, status: int = 200, headers: dict[str, str] | None = None,
               **values: Any) -> HTMLResponse:
        return render(self.request, template, status, headers, ctx=self, who=self.who,
                      csrf=self.session.csrf, **values)


def render(request: Request, template: str, status: int = 200, headers: dict[str, str] | None = None,
           **values: Any) -> HTMLResponse:
    html = console_of(request).env.get_template(template).render(request=request, prefix=prefix(request), **values)
    return HTMLResponse(html, status, headers={"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                                               "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
                                               **(headers or {})})


def prefix(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def refused_status(request: Request) -> int:
    """A form the API refused: 422, but 200 to htmx, which swaps it in (a browser logs every 4xx
    reply as a console error, and the refusal is the page's expected answer)."""
    return 200 if htmx(request) else 422


def transport_refusal(request: Request) -> str | None:
    """The console holds a session secret: beyond loopback it is HTTPS only, like secret replies."""
    if request.url.scheme == "http" and not loopback_peer(cast(dict[str, Any], request.scope)):
        return "The console is served over HTTPS only to peers beyond loopback: open the https:// URL."
    return None


async def read_form(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        return {}
    raw = await request.body()
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


def to_signin(request: Request) -> Response:
    return to_page(request, "/signin")


def refuse(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", status, message=message, who=None, csrf="")


def principal_of(services: ConsoleServices, access_key_id: str) -> Principal | None:
    """The user of an active key (store reads: a worker thread)."""
    if not services.keys.active_secret(access_key_id):
        return None
    return services.accounts.principal(access_key_id)


def session_principal(services: ConsoleServices, session: Session) -> Principal | None:
    """Who a session acts for, checked again on every request: its key still active, or — signed in
    with a password — its user, login profile and password still those it was opened with."""
    if session.user_id:
        return services.login_profiles.session_principal(session.user_id, session.stamp)
    return principal_of(services, session.access_key_id)


def to_page(request: Request, path: str) -> Response:
    url = prefix(request) + path
    if htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, 303)


Endpoint = Callable[[Ctx], Awaitable[Response]]


def page(fn: Endpoint, *, resetting: bool | None = False) -> Callable[[Request], Awaitable[Response]]:
    """`resetting`: True for the new-password form, the one page a session that must reset its
    password sees; None for a page either session may use (sign-out)."""

    async def endpoint(request: Request) -> Response:
        problem = transport_refusal(request)
        if problem:
            return refuse(request, 403, problem)
        console = console_of(request)
        sessions = console.services.console_sessions
        session = await to_thread.run_sync(sessions.get, request.cookies.get(COOKIE))
        if session is None:
            return to_signin(request)
        who = await to_thread.run_sync(session_principal, console.services, session)
        if who is None:  # the key, login profile or user went (or the password changed): the session ends
            await to_thread.run_sync(sessions.close, session.sid)
            return to_signin(request)
        if resetting is not None and session.must_reset != resetting:
            return to_page(request, "/password" if session.must_reset else "/clusters")
        form: dict[str, str] = {}
        if request.method not in SAFE_METHODS:
            form = await read_form(request)
            if not session.csrf_ok(request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)):
                return refuse(request, 403, "The form carries no valid CSRF token: reload the page and try again.")
        return await fn(Ctx(request, console, session, who, form))

    endpoint.__name__ = fn.__name__
    return endpoint

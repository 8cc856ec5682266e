"""Sign-in with an AccessKey pair, sign-out.

The accounts model has no passwords (users authenticate with AccessKeys only, as the RAM API
makes them), so the console signs in with an AccessKey id and secret: the secret is checked once,
never stored in the session, and the session lasts while the key stays active.
"""

from __future__ import annotations

import hmac

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from opencs.console.sessions import COOKIE
from opencs.console.web import Ctx, console_of, page, prefix, principal_of, read_form, refuse, render, transport_refusal


def _same_origin(request: Request) -> bool:
    """A sign-in posted from another site is refused (login CSRF); browsers send Origin on POST."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


async def signin_form(request: Request) -> Response:
    problem = transport_refusal(request)
    if problem:
        return refuse(request, 403, problem)
    return render(request, "signin.html", who=None, csrf="", error="", access_key_id="")


def _check(request: Request, ak: str, secret: str) -> bool:
    services = console_of(request).services
    known = services.keys.active_secret(ak) if ak else None
    return known is not None and hmac.compare_digest(known.encode(), secret.encode()) and \
        principal_of(services, ak) is not None


async def signin(request: Request) -> Response:
    problem = transport_refusal(request)
    if problem:
        return refuse(request, 403, problem)
    if not _same_origin(request):
        return refuse(request, 403, "A sign-in from another site is refused.")
    form = await read_form(request)
    ak, secret = form.get("access_key_id", "").strip(), form.get("access_key_secret", "")
    if not await to_thread.run_sync(_check, request, ak, secret):
        # 200: the page is the answer (a browser logs a 401 as a console error); no cookie is set
        return render(request, "signin.html", 200, who=None, csrf="", access_key_id=ak,
                      error="The AccessKey id or secret is wrong, or the key is disabled.")
    session = console_of(request).sessions.open(ak)
    resp = RedirectResponse(prefix(request) + "/clusters", 303)
    resp.set_cookie(COOKIE, session.sid, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                    path=prefix(request) or "/")
    return resp


@page
async def signout(ctx: Ctx) -> Response:
    ctx.console.sessions.close(ctx.session.sid)
    resp = RedirectResponse(prefix(ctx.request) + "/signin", 303)
    resp.delete_cookie(COOKIE, path=prefix(ctx.request) or "/", httponly=True, samesite="strict")
    return resp


async def home(request: Request) -> Response:
    return RedirectResponse(prefix(request) + "/clusters", 303)


routes = [
    Route("/", home, methods=["GET"]),
    Route("/signin", signin_form, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
]

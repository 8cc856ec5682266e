"""Sign-in with a RAM user's logon name and password, or with an AccessKey pair; the new password a
login profile with PasswordResetRequired asks for; sign-out.

The logon name is Alibaba's RAM user logon name, `<UserName>@<account>` (the account by its name or
id; opencs.services.login_profiles), and the password that of the user's login profile (RAM
CreateLoginProfile). Neither the password nor an AccessKey secret is kept in the session. A failure
answers the same message whatever was wrong, so that it tells nobody which users exist; 5 failures
of one logon name, or 30 from one address, within an hour refuse further attempts until the hour
has passed (opencs.services.failed_signins: counted in the store, by every process on the database).
Every sign-in, failed or not, the password change and the sign-out are on the audit trail
(`ConsoleSignin`, `ram:ChangePassword`, `ConsoleSignout`), never a password.
"""

from __future__ import annotations

import hmac
import secrets

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from opencs.console.web import (
    COOKIE,
    Ctx,
    console_of,
    page,
    prefix,
    principal_of,
    read_form,
    refuse,
    render,
    transport_refusal,
)
from opencs.errors import ApiError
from opencs.services.accounts import Principal
from opencs.services.console_sessions import Session

WRONG_PASSWORD = "The logon name or password is wrong."
WRONG_KEY = "The AccessKey id or secret is wrong, or the key is disabled."
LOCKED = "Too many failed sign-ins: try again in an hour."
SIGNIN = "ConsoleSignin"


def _same_origin(request: Request) -> bool:
    """A sign-in posted from another site is refused (login CSRF); browsers send Origin on POST."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def _source(request: Request) -> str:
    client = request.scope.get("client")
    return str(client[0]) if client else ""


async def _record(request: Request, who: Principal | None, action: str, resource: str, outcome: str) -> None:
    audit = console_of(request).services.audit
    rid = "CONSOLE-" + secrets.token_hex(8)
    await to_thread.run_sync(audit.record, who, action, resource, _source(request), rid, outcome)


def _user_resource(user: Principal | None) -> str:
    # an unknown name is not written down: people type passwords into the name field
    return f"acs:ram:*:{user.account_id}:user/{user.user_name}" if user else "user/(unknown)"


def _form(request: Request, error: str = "", login: str = "", access_key_id: str = "", used: str = "") -> Response:
    # 200: the page is the answer (a browser logs a 401 as a console error); no cookie is set
    return render(request, "signin.html", who=None, csrf="", error=error, used=used, login=login,
                  access_key_id=access_key_id)


async def signin_form(request: Request) -> Response:
    problem = transport_refusal(request)
    if problem:
        return refuse(request, 403, problem)
    return _form(request)


def _enter(request: Request, session: Session) -> Response:
    resp = RedirectResponse(prefix(request) + ("/password" if session.must_reset else "/clusters"), 303)
    resp.set_cookie(COOKIE, session.sid, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                    path=prefix(request) or "/")
    return resp


async def signin(request: Request) -> Response:
    problem = transport_refusal(request)
    if problem:
        return refuse(request, 403, problem)
    if not _same_origin(request):
        return refuse(request, 403, "A sign-in from another site is refused.")
    form = await read_form(request)
    if "login" in form:
        return await _with_password(request, form.get("login", "").strip(), form.get("password", ""))
    return await _with_key(request, form.get("access_key_id", "").strip(), form.get("access_key_secret", ""))


async def _with_password(request: Request, login: str, password: str) -> Response:
    services = console_of(request).services
    profiles, failures = services.login_profiles, services.failed_signins
    key = await to_thread.run_sync(profiles.throttle_key, login)
    if await to_thread.run_sync(failures.blocked, key, _source(request)):
        await _record(request, None, SIGNIN, "user/(not checked)", "429 TooManyAttempts")
        return _form(request, LOCKED, login=login, used="password")
    result = await to_thread.run_sync(profiles.sign_in, login, password)
    if result.who is None:
        await to_thread.run_sync(failures.failed, key, _source(request))
        await _record(request, result.named, SIGNIN, _user_resource(result.named), "401 InvalidCredentials")
        return _form(request, WRONG_PASSWORD, login=login, used="password")
    await to_thread.run_sync(failures.succeeded, key)
    session = await to_thread.run_sync(services.console_sessions.open, "", result.who.user_id, result.stamp,
                                       result.reset_required)
    await _record(request, result.who, SIGNIN, _user_resource(result.who), "200")
    return _enter(request, session)


def _check_key(request: Request, ak: str, secret: str) -> tuple[Principal | None, Principal | None]:
    """(the key's user when the pair is right and active, the key's user as far as it is known)."""
    services = console_of(request).services
    known = services.keys.active_secret(ak) if ak else None
    if known is not None and hmac.compare_digest(known.encode(), secret.encode()):
        who = principal_of(services, ak)
        return who, who
    return None, services.accounts.principal(ak) if ak else None


async def _with_key(request: Request, ak: str, secret: str) -> Response:
    services = console_of(request).services
    failures = services.failed_signins
    if await to_thread.run_sync(failures.blocked, ak, _source(request)):
        await _record(request, None, SIGNIN, "key/(not checked)", "429 TooManyAttempts")
        return _form(request, LOCKED, access_key_id=ak, used="key")
    who, named = await to_thread.run_sync(_check_key, request, ak, secret)
    if who is None:
        await to_thread.run_sync(failures.failed, ak, _source(request))
        await _record(request, named, SIGNIN, f"key/{ak}" if named else "key/(unknown)", "401 InvalidCredentials")
        return _form(request, WRONG_KEY, access_key_id=ak, used="key")
    await to_thread.run_sync(failures.succeeded, ak)
    session = await to_thread.run_sync(services.console_sessions.open, ak)
    await _record(request, who, SIGNIN, f"key/{ak}", "200")
    return _enter(request, session)


async def _password_form(ctx: Ctx) -> Response:
    return ctx.render("password.html", error="")


async def _change_password(ctx: Ctx) -> Response:
    new, again = ctx.form.get("new_password", ""), ctx.form.get("confirm_password", "")
    if new != again:
        return ctx.render("password.html", error="The two new passwords differ.")
    profiles, s = ctx.console.services.login_profiles, ctx.session
    try:
        stamp = await to_thread.run_sync(profiles.change_password, s.user_id, s.stamp, new)
    except ApiError as e:
        await _record(ctx.request, ctx.who, "ram:ChangePassword", _user_resource(ctx.who), f"{e.status} {e.code}")
        return ctx.render("password.html", error=e.message)
    await to_thread.run_sync(ctx.console.services.console_sessions.password_set, s, stamp)
    await _record(ctx.request, ctx.who, "ram:ChangePassword", _user_resource(ctx.who), "200")
    return RedirectResponse(prefix(ctx.request) + "/clusters", 303)


async def _signout(ctx: Ctx) -> Response:
    await to_thread.run_sync(ctx.console.services.console_sessions.close, ctx.session.sid)
    resource = _user_resource(ctx.who) if ctx.session.user_id else f"key/{ctx.session.access_key_id}"
    await _record(ctx.request, ctx.who, "ConsoleSignout", resource, "200")
    resp = RedirectResponse(prefix(ctx.request) + "/signin", 303)
    resp.delete_cookie(COOKIE, path=prefix(ctx.request) or "/", httponly=True, samesite="strict")
    return resp


async def home(request: Request) -> Response:
    return RedirectResponse(prefix(request) + "/clusters", 303)


routes = [
    Route("/", home, methods=["GET"]),
    Route("/signin", signin_form, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/password", page(_password_form, resetting=True), methods=["GET"]),
    Route("/password", page(_change_password, resetting=True), methods=["POST"]),
    Route("/signout", page(_signout, resetting=None), methods=["POST"]),
]

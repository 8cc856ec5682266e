"""Error replies: ``{"Code","Message","RequestId"}`` with the request id also in a header."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from opencs import ids
from opencs.errors import ApiError

log = logging.getLogger("opencs.api")
REQUEST_ID_HEADER = "x-acs-request-id"


def request_id_of(scope_or_request: Any) -> str:
    state = scope_or_request.get("state") if isinstance(scope_or_request, dict) else scope_or_request.scope.get("state")
    rid = (state or {}).get("request_id")
    return rid or ids.request_id()


def error_body(status: int, code: str, message: str, request_id: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"Code": code, "Message": message, "RequestId": request_id}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return body, headers


def error_response(status: int, code: str, message: str, request_id: str) -> Response:
    return JSONResponse({"Code": code, "Message": message, "RequestId": request_id}, status_code=status)


_HTTP_CODES = {404: "NotFound", 405: "MethodNotAllowed", 413: "RequestTooLarge"}


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed(request: Request) -> str:
    """Every method some route serves at this path (asked the way the router matches)."""
    scope = {k: v for k, v in request.scope.items() if k not in ("route", "endpoint", "path_params")}
    return ", ".join(m for m in _METHODS
                     if any(r.matches({**scope, "method": m})[0] == Match.FULL for r in request.app.router.routes))


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, request_id_of(request))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        msg = f"Field '{_field(tuple(first.get('loc', ())))}': {first.get('msg', 'invalid')}"
        if len(errs) > 1:
            msg += f" (and {len(errs) - 1} more)"
        return error_response(400, "InvalidParameter", msg, request_id_of(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "HttpError")
        msg = str(exc.detail)
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"No API at {request.method} {request.url.path}"
        resp = error_response(exc.status_code, code, msg, request_id_of(request))
        resp.headers.update(exc.headers or {})
        if exc.status_code == 405:  # RFC 9110 §15.5.6; Starlette names only the first route's methods
            resp.headers["allow"] = _allowed(request)
        return resp

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        rid = request_id_of(request)
        log.exception("unexpected error (request %s)", rid)
        return error_response(500, "InternalError", INTERNAL_MESSAGE, rid)


INTERNAL_MESSAGE = "The server hit an unexpected error; see its log."


class InternalErrors:
    """Outermost ASGI layer: an exception no handler answered becomes a JSON 500 with the request id,
    and is not re-raised, so the server keeps the keep-alive connection (Starlette's
    ServerErrorMiddleware re-raises, which makes uvicorn close it and drops the request id header)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            rid = request_id_of(scope)
            log.exception("unexpected error (request %s)", rid)
            if started:  # a reply half sent cannot be repaired: let the server drop the connection
                raise
            body, headers = error_body(500, "InternalError", INTERNAL_MESSAGE, rid)
            headers.append((REQUEST_ID_HEADER.encode(), rid.encode()))
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": body})

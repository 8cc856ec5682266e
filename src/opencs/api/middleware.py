"""ASGI middleware: a request id on every reply, and signature verification before any route.

Pure ASGI (not BaseHTTPMiddleware) to keep the per-request overhead small.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

from anyio import to_thread

from opencs import ids, logfmt, metrics
from opencs.api.authorize import Admission, Authorizer
from opencs.api.errors import REQUEST_ID_HEADER, error_body
from opencs.api.secure_transport import refusal
from opencs.auth.verifier import RequestVerifier, SignedRequest, replayed
from opencs.errors import ApiError, Forbidden, NotCached

log = logging.getLogger("opencs.api")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_BODY = 16 * 1024 * 1024
# an ASGI scope key no HTTP server sets: a call the console makes in-process for its signed-in user,
# whose session stands for the signature; authorization, HTTPS rules and audit apply unchanged
IN_PROCESS_CALLER = "opencs.in_process_access_key_id"
# the same for a console session signed in with a user's password: the user id, and no AccessKey
IN_PROCESS_USER = "opencs.in_process_user_id"


class SignedApiMiddleware:
    def __init__(self, app: Any, verifier: RequestVerifier, public_paths: tuple[str, ...] = (),
                 authorizer: Authorizer | None = None, only_paths: tuple[str, ...] | None = None,
                 inline_reads: Callable[[], bool] = lambda: False) -> None:
        self.app = app
        self.verifier = verifier
        self.public = public_paths
        self.authorizer = authorizer
        self.only = only_paths  # None: every route; else the rest is a 404 (the listener for the nodes)
        # SQLite: an authorization that only reads runs on the loop (opencs.api.store_reads); asked
        # at the first request (the app is made before the services are all there in some tests)
        self._inline_reads = inline_reads
        self._inline: bool | None = None
        # the nonces asked in this turn of each loop serving the app (one, unless a test shares it)
        self._nonces_due: dict[asyncio.AbstractEventLoop, list[tuple[str, str, asyncio.Future[bool]]]] = {}

    def _check(self, req: SignedRequest, scope: Scope) -> Admission | None:
        """Signature, the transport, then authorization (opencs.api.authorize), in one worker-thread
        hop. A reply carrying a secret over plain HTTP beyond loopback is refused after the signature
        (so the refused request's nonce is spent, and a captured copy cannot be replayed over HTTPS)
        and before authorization, so that every caller gets that refusal alike, whatever the cluster."""
        known, user = scope.get(IN_PROCESS_CALLER), scope.get(IN_PROCESS_USER)
        user_id = user if isinstance(user, str) else ""
        ak = "" if user_id else known if isinstance(known, str) else self.verifier.verify(req)
        scope["state"]["access_key_id"] = ak
        scope["state"]["refused_by_policy"] = True  # an error from here on is no signature failure
        insecure = refusal(scope)
        if insecure:
            raise Forbidden(insecure, code="HttpsRequired")
        if self.authorizer is None:
            if user_id:  # nothing to decide who this user is: refused rather than let through unchecked
                raise Forbidden("no authorizer for a user session", code="Forbidden.RAM")
            return None
        adm = self.authorizer.admit(scope, ak, user_id)
        scope["state"]["refused_by_policy"] = False
        return adm

    async def _admit(self, req: SignedRequest, scope: Scope) -> Admission | None:
        """`_check` on the event loop while everything it needs is in memory (the key's secret, its
        principal, the owner of the cluster or task; on SQLite also when the authorization has to
        read the store), the nonce written by the loop or the store's writer thread; else, or for a
        call that writes (audit), `_check` in a worker thread. Each hop
        to a worker thread cost 15-30 ms under bench/load.py (the queue to a free thread, then the
        loop's turn to resume), more than the check itself. The order of the refusals is `_check`'s."""
        if (scope.get(IN_PROCESS_CALLER) is not None or scope.get(IN_PROCESS_USER) is not None
                or self.authorizer is None):
            return await to_thread.run_sync(self._check, req, scope)
        try:
            ak, nonce = self.verifier.verify_cached(req)
        except NotCached:
            return await to_thread.run_sync(self._check, req, scope)
        if nonce is not None and not await self._remember(ak, nonce):
            raise replayed()
        scope["state"]["access_key_id"] = ak
        scope["state"]["refused_by_policy"] = True
        insecure = refusal(scope)
        if insecure:
            raise Forbidden(insecure, code="HttpsRequired")
        try:
            adm = self.authorizer.admit_cached(scope, ak)
        except NotCached:
            if self._inline is None:
                self._inline = self._inline_reads()
            if self._inline and not self.authorizer.may_write(scope):
                adm = self.authorizer.admit(scope, ak)
            else:
                adm = await to_thread.run_sync(self.authorizer.admit, scope, ak)
        scope["state"]["refused_by_policy"] = False
        return adm

    async def _remember(self, access_key_id: str, nonce: str) -> bool:
        """The verifier's nonce store remembers `nonce` (False: a replay) without a worker thread
        waiting for its write, when the store can take it so (NonceStore.write_now, .submit): the
        nonces of the requests read in one turn of the loop are written together at its end."""
        nonces = self.verifier.nonces
        if not hasattr(nonces, "submit"):
            return await to_thread.run_sync(nonces.remember, access_key_id, nonce)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        due = self._nonces_due.setdefault(loop, [])
        if not due:
            loop.call_soon(self._write_nonces, loop)
        due.append((access_key_id, nonce, done))
        return await done

    def _write_nonces(self, loop: asyncio.AbstractEventLoop) -> None:
        """The nonces asked in this turn of the loop: written at once when the store can without a
        wait, else submitted to its writer thread."""
        due = self._nonces_due.pop(loop, [])
        nonces = self.verifier.nonces
        try:
            write_now = getattr(nonces, "write_now", None)
            outcomes = write_now([(ak, n) for ak, n, _ in due]) if write_now is not None else None
        except Exception as e:  # every caller hears the failure as its own (a 500, as a thread's would be)
            for *_, done in due:
                if not done.done():
                    done.set_exception(e)
            return
        if outcomes is not None:
            for (*_, done), new in zip(due, outcomes, strict=True):
                if not done.done():
                    done.set_result(new)
            return
        for ak, n, done in due:
            nonces.submit(ak, n, _settle_from_thread(loop, done))  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ids.request_id()
        scope.setdefault("state", {})["request_id"] = rid
        reset = logfmt.request_id.set(rid)  # every log line of this request carries it
        try:
            await self._call(scope, receive, send, rid)
        finally:
            logfmt.request_id.reset(reset)

    async def _call(self, scope: Scope, receive: Receive, send: Send, rid: str) -> None:
        rid_header = (REQUEST_ID_HEADER.encode(), rid.encode())

        async def add_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        send_with_id: Send = add_id
        path: str = scope["path"]
        if self.only is not None and not _matches(path, self.only):
            await self._error(send_with_id, 404, "NotFound", "not served on this address", rid)
            return
        if _matches(path, self.public):
            await self.app(scope, receive, send_with_id)
            return

        body = b""
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
            if len(body) > MAX_BODY:
                await self._error(send_with_id, 413, "RequestTooLarge", f"body larger than {MAX_BODY} bytes", rid)
                return

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        raw_path = scope.get("raw_path")
        req = SignedRequest(
            method=scope["method"],
            raw_path=raw_path.decode("latin-1") if raw_path else path,
            path=unquote(path),
            query=parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True),
            headers=headers,
            body=body,
        )
        try:
            admission = await self._admit(req, scope)
        except ApiError as e:
            if not scope["state"].get("refused_by_policy"):
                metrics.signature_failures.labels(e.code).inc()
            await self._error(send_with_id, e.status, e.code, e.message, rid)
            return
        if admission is not None and self.authorizer is not None:
            send_with_id = self.authorizer.wrap(admission, scope, send_with_id, to_thread.run_sync)

        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_id)

    @staticmethod
    async def _error(send: Send, status: int, code: str, message: str, rid: str) -> None:
        log.info("refused %d %s: %s", status, code, message)  # the line carries the RequestId (JSON logs)
        body, headers = error_body(status, code, message, rid)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _settle_from_thread(loop: asyncio.AbstractEventLoop, done: asyncio.Future[bool]
                        ) -> Callable[[bool | None, BaseException | None], None]:
    def settle(new: bool | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(new is True)

    def from_thread(new: bool | None, error: BaseException | None) -> None:
        loop.call_soon_threadsafe(settle, new, error)

    return from_thread


def _matches(path: str, paths: tuple[str, ...]) -> bool:
    """`path` is one of `paths`, or under one of them that ends with '/'."""
    return path in paths or any(path.startswith(p) for p in paths if p.endswith("/"))

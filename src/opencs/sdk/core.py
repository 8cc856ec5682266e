"""The request-building core shared by the sync and the async clients (no I/O here).

A route is described once as a :class:`Call` (method, path, query, body and how to parse the reply).
A multi-step operation — a waiter, a pager — is a generator (a *flow*) that yields calls and
:class:`Sleep`/:class:`Now`/:class:`Emit` instructions; the sync and the async transports
(``runners.py``) drive the same flows, so both clients behave the same by construction.
"""

from __future__ import annotations

import json
import random
import ssl
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

import httpx

from opencs import API_VERSION, __version__
from opencs.auth.signature import ACS3, ROA, QueryPairs, sign_headers
from opencs.sdk.errors import OpencsError, TransportError, error_for_status

T = TypeVar("T")
QueryLike = Mapping[str, Any] | Sequence[tuple[str, Any]]

#: Methods that may be retried (never POST: it may create things twice).
RETRYABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})
#: Replies retried for the methods above: the request did not reach a working server.
RETRYABLE_STATUS = frozenset({502, 503, 504})
#: Transport failures that happen before any reply is read.
RETRYABLE_TRANSPORT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)

_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


# ---------------------------------------------------------------------- calls and flows


@dataclass(frozen=True)
class Reply:
    """A successful HTTP reply: status, headers and the decoded body (JSON, text or ``None``)."""

    status: int
    headers: httpx.Headers
    payload: Any
    stream: Any = None  # a streamed call's open body: read it with :class:`NextLine`


def payload_of(reply: Reply) -> Any:
    return reply.payload


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP call. ``url`` (absolute, never signed) replaces the endpoint for public URLs
    (trigger URLs); ``signed=False`` for the few unsigned routes; ``parse`` turns the reply into
    the method's return value."""

    method: str
    path: str
    parse: Callable[[Reply], T]
    query: QueryLike | None = None
    body: Any = None
    headers: Mapping[str, str] | None = None
    url: str | None = None
    signed: bool = True
    stream: bool = False  # the body is read line by line (NextLine), not at once


def single(call: Call[T]) -> Flow[T]:
    """One call as a flow."""
    result: T = yield call
    return result


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Now:
    """Asks the runner for its monotonic clock (tests replace the clock and the sleep)."""


@dataclass(frozen=True)
class Emit(Generic[T]):
    """One item of a pager."""

    item: T


@dataclass(frozen=True)
class NextLine:
    """The next line of a streamed reply's body (``None`` at its end)."""

    stream: Any


@dataclass(frozen=True)
class Send:
    """The transports' one I/O: send a request, answer a :class:`Raw` (an ``httpx.RequestError``
    is thrown back instead when no reply came)."""

    parts: RequestParts
    stream: bool = False


@dataclass(frozen=True)
class Raw:
    """A reply as the transport read it; ``stream`` is the open body of a ``Send(stream=True)``
    that succeeded (its content is then not read)."""

    status: int
    headers: httpx.Headers
    content: bytes
    reason: str = ""
    stream: Any = None


Instruction = Call[Any] | Sleep | Now | NextLine
#: What a transport executes: everything else (retries, waiters, pagers) is written once, here.
Primitive = Send | Sleep | Now | NextLine | Emit[Any]
#: A waiter: yields calls/sleeps, gets their results sent back, returns its value.
Flow = Generator[Instruction, Any, T]
#: A pager: like a flow, and yields ``Emit(item)`` for each item it produces.
Paged = Generator[Instruction | Emit[T], Any, None]


# ---------------------------------------------------------------------- replies and errors


def decode(status: int, headers: httpx.Headers, content: bytes, reason: str = "") -> Reply:
    """The reply of a successful call, or the :class:`OpencsError` of a failed one (raised)."""
    request_id = headers.get("x-acs-request-id")
    payload: Any = None
    if content:
        try:
            if headers.get("content-type", "").startswith("text/"):  # logs, scripts: text even if it parses
                raise ValueError
            payload = json.loads(content)
        except ValueError:
            payload = content.decode("utf-8", "replace")
    if status < 400:
        return Reply(status, headers, payload)
    code, message = "", ""
    if isinstance(payload, dict):
        code = str(payload.get("Code") or payload.get("code") or "")
        message = str(payload.get("Message") or payload.get("message") or "")
        request_id = str(
            payload.get("RequestId") or payload.get("request_id") or payload.get("requestId")
            or request_id or ""
        ) or None
    elif isinstance(payload, str):
        message = payload.strip()[:500]
    code = code or f"Http{status}"
    message = message or reason or f"HTTP {status}"
    raise error_for_status(status, code, message, request_id)


def cert_failure(e: BaseException) -> bool:
    """The server's certificate failed verification: retrying cannot help."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def transport_error(e: httpx.RequestError, endpoint: str, timeout: float) -> TransportError:
    if isinstance(e, httpx.TimeoutException):
        msg = f"timed out talking to {endpoint} (timeout {timeout:g}s)"
    elif cert_failure(e):
        msg = (f"the certificate of {endpoint} is not trusted ({e}); pass the server's CA "
               "(--ca-file / ca_file=, `opencs ca export` on the server) or run `opencs configure`")
    elif isinstance(e, httpx.ConnectError):
        msg = f"cannot connect to {endpoint}: {e or type(e).__name__}"
    else:
        msg = f"connection to {endpoint} failed: {e or type(e).__name__}"
    return TransportError(msg, endpoint, e)


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` extra attempts, only for GET/HEAD/PUT/DELETE, after a connection failure before
    any reply or a 502/503/504; exponential backoff with jitter, ``Retry-After`` honoured (≤ 10 s)."""

    retries: int = 2
    backoff: float = 0.3

    def attempts(self, method: str) -> int:
        return 1 + (max(0, self.retries) if method.upper() in RETRYABLE_METHODS else 0)

    def after_error(self, e: httpx.RequestError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or ``None``: give up."""
        if isinstance(e, RETRYABLE_TRANSPORT) and not cert_failure(e):
            return self.delay(attempt, None)
        return None

    def after_status(self, status: int, headers: httpx.Headers, attempt: int) -> float | None:
        return self.delay(attempt, headers.get("retry-after")) if status in RETRYABLE_STATUS else None

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), 10.0)
            except ValueError:
                pass
        base: float = min(self.backoff * 2.0**attempt, 5.0)
        return base * random.uniform(0.75, 1.25)


# ---------------------------------------------------------------------- building requests


@dataclass(frozen=True)
class RequestParts:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes


def encode_body(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, ensure_ascii=False).encode()


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def query_pairs(query: QueryLike | None) -> QueryPairs:
    if not query:
        return []
    items = query.items() if isinstance(query, Mapping) else query
    return [(str(k), _query_value(v)) for k, v in items if v is not None]


def seg(value: str) -> str:
    """One path segment, percent-encoded (ids never inject ``/`` or ``?``)."""
    return quote(str(value), safe="")


def normalize_scheme(scheme: str) -> str:
    """``"roa"``/``"acs"``/``ROA`` → :data:`ROA`; ``"acs3"``/``ACS3`` → :data:`ACS3`."""
    s = scheme.strip()
    if s.lower() in ("roa", "acs", "hmac-sha1", "v2"):
        return ROA
    if s.lower() in ("acs3", "acs3-hmac-sha256", "v3"):
        return ACS3
    raise ValueError(f"unknown signature scheme {scheme!r} (expected 'roa' or 'acs3')")


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Verifying TLS context: hostname and chain checked, trusting ``ca_file`` or the system store."""
    try:
        return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"cannot use CA file {ca_file}: {e}") from None


class Endpoint:
    """Where calls go and how they are written: ``http(s)://host:port[/prefix]``; unsigned (the
    Application API authenticates with the client certificate) unless a :class:`Signer` is used."""

    def __init__(self, endpoint: str, user_agent: str | None = None) -> None:
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        url = httpx.URL(endpoint)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"endpoint must look like http://HOST:PORT, got {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self.user_agent = user_agent or f"opencs-sdk-python/{__version__}"
        self.origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        self.host = url.netloc.decode("ascii")
        self.prefix = url.raw_path.decode("ascii").split("?", 1)[0].rstrip("/")

    def parts(self, call: Call[Any], *, date: str | None = None, nonce: str | None = None) -> RequestParts:
        method = call.method.upper()
        if call.url is not None:  # a public URL: sent as it is, never signed
            pairs = query_pairs(call.query)
            url = call.url + (("&" if "?" in call.url else "?") + urlencode(pairs) if pairs else "")
            return RequestParts(method, url, self._headers(call, b""), b"")
        path, _, raw_qs = call.path.partition("?")
        if not path.startswith("/"):
            path = "/" + path
        pairs = parse_qsl(raw_qs, keep_blank_values=True) if raw_qs else []
        pairs += query_pairs(call.query)
        sent_path = quote(self.prefix + path, safe=_PATH_SAFE)
        data = encode_body(call.body)
        hdrs = self._headers(call, data)
        if call.signed:
            self.sign(method, sent_path, pairs, hdrs, data, date=date, nonce=nonce)
        hdrs["user-agent"] = hdrs.get("user-agent", self.user_agent)
        url = self.origin + sent_path
        if pairs:
            url += "?" + urlencode(pairs, quote_via=quote, safe="~")
        return RequestParts(method, url, hdrs, data)

    @staticmethod
    def _headers(call: Call[Any], data: bytes) -> dict[str, str]:
        hdrs: dict[str, str] = {"accept": "application/json"}
        if data:
            hdrs["content-type"] = "application/json"
        for k, v in (call.headers or {}).items():
            hdrs[k.lower()] = str(v)
        return hdrs

    def sign(self, method: str, path: str, pairs: QueryPairs, hdrs: dict[str, str], data: bytes, *,
             date: str | None, nonce: str | None) -> None:
        """Unsigned: nothing to add."""


class Signer(Endpoint):
    """The signed control-plane API: ROA ``acs AK:HMAC-SHA1`` or ``ACS3-HMAC-SHA256``. Each attempt
    gets a fresh ``Date``/``x-acs-date`` and nonce, so a retried call never looks like a replay."""

    def __init__(self, endpoint: str, access_key_id: str, access_key_secret: str, scheme: str = ROA,
                 user_agent: str | None = None) -> None:
        super().__init__(endpoint, user_agent)
        if not access_key_id or not access_key_secret:
            raise ValueError("access_key_id and access_key_secret are required")
        self.access_key_id = access_key_id
        self._secret = access_key_secret
        self.scheme = normalize_scheme(scheme)

    def sign(self, method: str, path: str, pairs: QueryPairs, hdrs: dict[str, str], data: bytes, *,
             date: str | None, nonce: str | None) -> None:
        user = {k: v for k, v in hdrs.items() if k not in ("accept", "content-type")}
        hdrs.update({"x-acs-version": API_VERSION, "x-acs-signature-nonce": nonce or str(uuid.uuid4())})
        if self.scheme == ROA:
            hdrs["date"] = date or formatdate(usegmt=True)
            hdrs["x-acs-signature-method"] = "HMAC-SHA1"
            hdrs["x-acs-signature-version"] = "1.0"
        else:
            hdrs["host"] = self.host
            hdrs["x-acs-date"] = date or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        hdrs.update(user)  # the caller's headers win, as before
        hdrs.pop("authorization", None)
        sign_headers(method=method, path=path, query=pairs, headers=hdrs, body=data,
                     access_key_id=self.access_key_id, secret=self._secret, scheme=self.scheme)


# ---------------------------------------------------------------------- running calls and flows (no I/O)


def execute(call: Call[T], endpoint: Endpoint, retry: RetryPolicy, timeout: float) -> Generator[Primitive, Any, T]:
    """One call with its retries: yields :class:`Send` (re-signed per attempt) and :class:`Sleep`."""
    attempts = retry.attempts(call.method)
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            raw: Raw = yield Send(endpoint.parts(call), call.stream)
        except httpx.RequestError as e:
            delay = None if last else retry.after_error(e, attempt)
            if delay is None:
                raise transport_error(e, endpoint.endpoint, timeout) from e
            yield Sleep(delay)
            continue
        delay = None if last else retry.after_status(raw.status, raw.headers, attempt)
        if delay is not None:
            yield Sleep(delay)
            continue
        reply = decode(raw.status, raw.headers, raw.content, raw.reason)
        return call.parse(Reply(reply.status, reply.headers, reply.payload, raw.stream))
    raise AssertionError("unreachable")  # pragma: no cover


def expand(flow: Generator[Any, Any, T], endpoint: Endpoint, retry: RetryPolicy,
           timeout: float) -> Generator[Primitive, Any, T]:
    """A flow (or pager) with each of its calls executed: what is left for a transport are
    primitives. A failed call's :class:`OpencsError` is thrown into the flow, which may handle it."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            instr = flow.throw(error) if error is not None else flow.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        if isinstance(instr, Call):
            try:
                value = yield from execute(instr, endpoint, retry, timeout)
            except OpencsError as e:
                error = e
        else:
            value = yield instr

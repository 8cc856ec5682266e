"""A small synchronous client for the opencs / Container Service API (2015-12-15).

Signing reuses the pure functions of :mod:`opencs.auth.signature` (ROA HMAC-SHA1 or
ACS3-HMAC-SHA256). Each attempt carries a fresh ``Date``/``x-acs-date`` and nonce, so retried
requests are re-signed and never look like replays.

    >>> from opencs.sdk import Client
    >>> with Client("http://127.0.0.1:8990", ak, secret) as cs:
    ...     reply = cs.create_cluster({"name": "c1", "size": 2})
    ...     cs.wait_task(reply["task_id"])
"""

from __future__ import annotations

import json
import random
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode

import httpx

from opencs import API_VERSION, __version__
from opencs.auth.signature import ACS3, ROA, QueryPairs, sign_headers
from opencs.sdk.errors import (
    TaskFailed,
    TaskTimeout,
    TransportError,
    error_for_status,
)

__all__ = ["Client", "normalize_scheme", "ROA", "ACS3"]

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

TASK_SUCCESS = frozenset({"success", "succeeded", "successful"})
TASK_FAILED = frozenset({"fail", "failed", "error", "canceled", "cancelled"})

_PATH_SAFE = "/:@!$&'()*+,;=-._~%"


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


def _cert_failure(e: BaseException) -> bool:
    """The server's certificate failed verification: retrying cannot help."""
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _query_pairs(query: QueryLike | None) -> QueryPairs:
    if not query:
        return []
    items = query.items() if isinstance(query, Mapping) else query
    return [(str(k), _query_value(v)) for k, v in items if v is not None]


def _seg(value: str) -> str:
    """One path segment, percent-encoded (ids never inject ``/`` or ``?``)."""
    return quote(str(value), safe="")


class Client:
    """Signed client for an opencs endpoint such as ``http://127.0.0.1:8990``.

    ``scheme`` is :data:`ROA` (``acs AK:sig``, the default) or :data:`ACS3`. ``transport`` plugs
    in any :class:`httpx.BaseTransport`; ``http_client`` replaces the whole :class:`httpx.Client`
    (e.g. a ``starlette.testclient.TestClient``). ``retries`` extra attempts are made only for
    GET/HEAD/PUT/DELETE after a connection failure or a 502/503/504.

    An ``https://`` endpoint's certificate is always verified: against ``ca_file`` (e.g. the output
    of ``opencs ca export``) when given, else against the system's trust store.
    """

    def __init__(
        self,
        endpoint: str,
        access_key_id: str,
        access_key_secret: str,
        *,
        scheme: str = ROA,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retries: int = 2,
        backoff: float = 0.3,
        http_client: httpx.Client | None = None,
        user_agent: str | None = None,
        ca_file: str | None = None,
    ) -> None:
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        url = httpx.URL(endpoint)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"endpoint must look like http://HOST:PORT, got {endpoint!r}")
        if not access_key_id or not access_key_secret:
            raise ValueError("access_key_id and access_key_secret are required")
        self.endpoint = endpoint.rstrip("/")
        self.access_key_id = access_key_id
        self._secret = access_key_secret
        self.scheme = normalize_scheme(scheme)
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.user_agent = user_agent or f"opencs-sdk-python/{__version__}"
        self._origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        self._host = url.netloc.decode("ascii")
        self._prefix = url.raw_path.decode("ascii").split("?", 1)[0].rstrip("/")
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(transport=transport, timeout=httpx.Timeout(timeout),
                                                 verify=tls_context(ca_file))
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the underlying HTTP client (only if this object created it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.endpoint!r}, {self.access_key_id!r}, scheme={self.scheme!r})"

    # ------------------------------------------------------------------ raw requests

    def prepare_request(
        self,
        method: str,
        path: str,
        *,
        query: QueryLike | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        date: str | None = None,
        nonce: str | None = None,
    ) -> httpx.Request:
        """Build one signed :class:`httpx.Request` (fresh date and nonce unless given).

        ``path`` may carry ``?k=v`` (merged before ``query``). ``body``: ``bytes``/``str`` are
        sent as they are, anything else as JSON. ``date`` is the RFC 1123 ``Date`` (ROA) or the
        ``x-acs-date`` (ACS3) value.
        """
        method = method.upper()
        path, _, raw_qs = path.partition("?")
        if not path.startswith("/"):
            path = "/" + path
        pairs: QueryPairs = parse_qsl(raw_qs, keep_blank_values=True) if raw_qs else []
        pairs += _query_pairs(query)
        sent_path = quote(self._prefix + path, safe=_PATH_SAFE)

        data = self._encode_body(body)
        hdrs: dict[str, str] = {"accept": "application/json"}
        if data:
            hdrs["content-type"] = "application/json"
        hdrs["x-acs-version"] = API_VERSION
        hdrs["x-acs-signature-nonce"] = nonce or str(uuid.uuid4())
        if self.scheme == ROA:
            hdrs["date"] = date or formatdate(usegmt=True)
            hdrs["x-acs-signature-method"] = "HMAC-SHA1"
            hdrs["x-acs-signature-version"] = "1.0"
        else:
            hdrs["host"] = self._host
            hdrs["x-acs-date"] = date or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for k, v in (headers or {}).items():
            hdrs[k.lower()] = str(v)
        hdrs.pop("authorization", None)
        sign_headers(
            method=method,
            path=sent_path,
            query=pairs,
            headers=hdrs,
            body=data,
            access_key_id=self.access_key_id,
            secret=self._secret,
            scheme=self.scheme,
        )
        hdrs["user-agent"] = hdrs.get("user-agent", self.user_agent)
        url = self._origin + sent_path
        if pairs:
            url += "?" + urlencode(pairs, quote_via=quote, safe="~")
        return self._http.build_request(method, url, content=data or None, headers=hdrs)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: QueryLike | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send a signed call and return the decoded JSON reply (``None`` for an empty body).

        Raises an :class:`~opencs.sdk.errors.OpencsError` subclass for 4xx/5xx replies and
        :class:`~opencs.sdk.errors.TransportError` when no reply could be had.
        """
        method = method.upper()
        attempts = 1 + (self.retries if method in RETRYABLE_METHODS else 0)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            req = self.prepare_request(method, path, query=query, body=body, headers=headers)
            try:
                resp = self._http.send(req)
            except httpx.RequestError as e:
                if not last and isinstance(e, RETRYABLE_TRANSPORT) and not _cert_failure(e):
                    self._sleep(self._delay(attempt, None))
                    continue
                raise self._transport_error(e) from e
            try:
                if not last and resp.status_code in RETRYABLE_STATUS:
                    self._sleep(self._delay(attempt, resp.headers.get("retry-after")))
                    continue
                return self._decode(resp)
            finally:
                resp.close()
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ typed calls

    def version(self) -> dict[str, Any]:
        """``GET /version`` → ``{"version", "api_version"}``."""
        return cast(dict[str, Any], self.request("GET", "/version"))

    def list_clusters(self) -> list[dict[str, Any]]:
        """``GET /clusters`` → list of cluster objects."""
        return cast(list[dict[str, Any]], self.request("GET", "/clusters"))

    def list_clusters_paged(self, page_number: int = 1, page_size: int = 10) -> dict[str, Any]:
        """``GET /api/v1/clusters`` → ``{"clusters": [...], "page_info": {...}}``."""
        q = {"page_number": page_number, "page_size": page_size}
        return cast(dict[str, Any], self.request("GET", "/api/v1/clusters", query=q))

    def describe_cluster(self, cluster_id: str) -> dict[str, Any]:
        """``GET /clusters/{id}``."""
        return cast(dict[str, Any], self.request("GET", f"/clusters/{_seg(cluster_id)}"))

    def create_cluster(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /clusters`` → ``{"cluster_id", "request_id", "task_id"}``."""
        return cast(dict[str, Any], self.request("POST", "/clusters", body=dict(body)))

    def scale_cluster(self, cluster_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /clusters/{id}`` → ``{"cluster_id", "request_id", "task_id"}``."""
        return cast(dict[str, Any], self.request("PUT", f"/clusters/{_seg(cluster_id)}", body=dict(body)))

    def delete_cluster(self, cluster_id: str) -> dict[str, Any]:
        """``DELETE /clusters/{id}`` → ``{"cluster_id", "request_id", "task_id"}``."""
        return cast(dict[str, Any], self.request("DELETE", f"/clusters/{_seg(cluster_id)}") or {})

    def attach_instances(self, cluster_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /clusters/{id}/attach``."""
        path = f"/clusters/{_seg(cluster_id)}/attach"
        return cast(dict[str, Any], self.request("POST", path, body=dict(body)))

    def remove_node(self, cluster_id: str, ip: str, release_instance: bool = False) -> dict[str, Any]:
        """``DELETE /clusters/{id}/ip/{ip}?releaseInstance=true|false``."""
        path = f"/clusters/{_seg(cluster_id)}/ip/{_seg(ip)}"
        reply = self.request("DELETE", path, query={"releaseInstance": release_instance})
        return cast(dict[str, Any], reply or {})

    def reset_node(
        self, cluster_id: str, instance_id: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``POST /clusters/{id}/instances/{instance_id}/reset``."""
        path = f"/clusters/{_seg(cluster_id)}/instances/{_seg(instance_id)}/reset"
        return cast(dict[str, Any], self.request("POST", path, body=dict(body or {})))

    def cluster_certs(self, cluster_id: str) -> dict[str, Any]:
        """``GET /clusters/{id}/certs`` → ``{"ca", "cert", "key"}`` (PEM text)."""
        return cast(dict[str, Any], self.request("GET", f"/clusters/{_seg(cluster_id)}/certs"))

    def cluster_nodes(self, cluster_id: str) -> Any:
        """``GET /clusters/{id}/nodes`` → ``{"nodes": [...], "page": {...}}``."""
        return self.request("GET", f"/clusters/{_seg(cluster_id)}/nodes")

    def list_images(self) -> Any:
        """``GET /images`` → ``{RegionId: {"items": [{"text", "value"}]}}``."""
        return self.request("GET", "/images")

    def describe_task(self, task_id: str) -> dict[str, Any]:
        """``GET /tasks/{task_id}`` (DescribeTaskInfo shape: state, stages, error ...)."""
        return cast(dict[str, Any], self.request("GET", f"/tasks/{_seg(task_id)}"))

    def wait_task(
        self,
        task_id: str,
        timeout: float = 600,
        poll: float = 0.5,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll a task until it succeeds and return it.

        ``on_update`` is called with the task after every poll. Raises
        :class:`~opencs.sdk.errors.TaskFailed` when the task fails and
        :class:`~opencs.sdk.errors.TaskTimeout` (a :class:`TimeoutError`) after ``timeout`` s.
        """
        deadline = self._clock() + timeout
        while True:
            task = self.describe_task(task_id)
            if on_update is not None:
                on_update(task)
            state = str(task.get("state", "")).lower()
            if state in TASK_SUCCESS:
                return task
            if state in TASK_FAILED:
                raise TaskFailed(task)
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise TaskTimeout(task_id, timeout, task)
            self._sleep(min(poll, remaining))

    def list_instances(self, free_only: bool = False) -> Any:
        """``GET /instances``: instances (nodes); ``free_only`` keeps those in no cluster."""
        return self.request("GET", "/instances", query={"free": "true"} if free_only else None)

    def create_instances(self, count: int) -> dict[str, Any]:
        """``POST /instances`` with ``{"count": N}`` → reply with ``task_id``."""
        return cast(dict[str, Any], self.request("POST", "/instances", body={"count": int(count)}))

    def delete_instance(self, instance_id: str) -> dict[str, Any]:
        """``DELETE /instances/{id}``."""
        return cast(dict[str, Any], self.request("DELETE", f"/instances/{_seg(instance_id)}") or {})

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _encode_body(body: Any) -> bytes:
        if body is None:
            return b""
        if isinstance(body, bytes | bytearray | memoryview):
            return bytes(body)
        if isinstance(body, str):
            return body.encode()
        return json.dumps(body, ensure_ascii=False).encode()

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), 10.0)
            except ValueError:
                pass
        base: float = min(self.backoff * 2.0**attempt, 5.0)
        return base * random.uniform(0.75, 1.25)

    def _transport_error(self, e: httpx.RequestError) -> TransportError:
        if isinstance(e, httpx.TimeoutException):
            msg = f"timed out talking to {self.endpoint} (timeout {self.timeout:g}s)"
        elif _cert_failure(e):
            msg = (f"the certificate of {self.endpoint} is not trusted ({e}); pass the server's CA "
                   "(--ca-file / ca_file=, `opencs ca export` on the server) or run `opencs configure`")
        elif isinstance(e, httpx.ConnectError):
            msg = f"cannot connect to {self.endpoint}: {e or type(e).__name__}"
        else:
            msg = f"connection to {self.endpoint} failed: {e or type(e).__name__}"
        return TransportError(msg, self.endpoint, e)

    @staticmethod
    def _decode(resp: httpx.Response) -> Any:
        request_id = resp.headers.get("x-acs-request-id")
        content = resp.read()
        payload: Any = None
        if content:
            try:
                payload = json.loads(content)
            except ValueError:
                payload = content.decode("utf-8", "replace")
        if resp.status_code < 400:
            return payload
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
        code = code or f"Http{resp.status_code}"
        message = message or resp.reason_phrase or f"HTTP {resp.status_code}"
        raise error_for_status(resp.status_code, code, message, request_id)


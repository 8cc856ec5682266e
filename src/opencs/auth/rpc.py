"""The RPC-style signature (Signature in the query, HMAC-SHA1) that aliyun-python-sdk-core sends to
RPC products such as RAM.

string to sign = METHOD "&%2F&" percent(sorted "k=v" of every parameter but Signature, query and
form body alike, each percent-encoded per RFC 3986); signature = base64(HMAC-SHA1(secret + "&", it)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol
from urllib.parse import parse_qsl, quote

from opencs.errors import BadRequest, Forbidden

REQUIRED = ("AccessKeyId", "Signature", "Timestamp", "SignatureNonce")


class _Request(Protocol):  # read-only members: the verifier's SignedRequest is frozen
    @property
    def method(self) -> str: ...
    @property
    def query(self) -> list[tuple[str, str]]: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def body(self) -> bytes: ...


class _Nonces(Protocol):
    def remember(self, access_key_id: str, nonce: str) -> bool: ...


def _pe(s: str) -> str:
    return quote(s, safe="~")


def string_to_sign(method: str, params: list[tuple[str, str]]) -> str:
    canon = "&".join(f"{_pe(k)}={_pe(v)}" for k, v in sorted(params) if k != "Signature")
    return f"{method.upper()}&%2F&{_pe(canon)}"


def signature(secret: str, sts: str) -> str:
    return base64.b64encode(hmac.new((secret + "&").encode(), sts.encode(), hashlib.sha1).digest()).decode()


def is_rpc(query: list[tuple[str, str]]) -> bool:
    return any(k == "Signature" for k, _ in query)


def params_of(req: _Request) -> list[tuple[str, str]]:
    """Query and form-body parameters (the SDK signs both)."""
    params = list(req.query)
    ctype = req.headers.get("content-type", "")
    if req.body and ctype.startswith("application/x-www-form-urlencoded"):
        params += parse_qsl(req.body.decode("utf-8", "replace"), keep_blank_values=True)
    return params


def verify(req: _Request, secret_for: Callable[[str], str | None], nonces: _Nonces, window: timedelta,
           now: datetime) -> str:
    """The AccessKey id of a correctly signed RPC request, or an ApiError."""
    params = params_of(req)
    got = dict(params)
    missing = [k for k in REQUIRED if not got.get(k)]
    if missing:
        raise BadRequest(f"{', '.join(missing)} is mandatory for this action", code="MissingParameter")
    if got.get("SignatureMethod", "HMAC-SHA1") != "HMAC-SHA1":
        raise BadRequest("SignatureMethod must be HMAC-SHA1", code="InvalidParameter.SignatureMethod")
    try:
        when = datetime.strptime(got["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise BadRequest(f"Timestamp {got['Timestamp']!r} is not YYYY-MM-DDTHH:MM:SSZ",
                         code="InvalidTimeStamp.Format") from None
    if abs(now - when) > window:
        raise BadRequest("The request time is too far from the server time", code="InvalidTimeStamp.Expired")
    ak = got["AccessKeyId"]
    secret = secret_for(ak)
    if secret is None:
        raise Forbidden(f"Specified access key is not found or disabled: {ak}", code="InvalidAccessKeyId.NotFound")
    sts = string_to_sign(req.method, params)
    if not hmac.compare_digest(signature(secret, sts), got["Signature"]):
        raise Forbidden("Specified signature is not matched with our calculation. server string to sign is:" + sts,
                        code="SignatureDoesNotMatch")
    if len(got["SignatureNonce"]) > 128 or not nonces.remember(ak, got["SignatureNonce"]):
        raise BadRequest("Specified signature nonce was used already", code="SignatureNonceUsed")
    return ak

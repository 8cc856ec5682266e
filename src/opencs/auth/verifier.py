"""Server-side verification of signed requests (ROA HMAC-SHA1 and ACS3-HMAC-SHA256)."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Protocol

from opencs.auth import rpc
from opencs.auth import signature as sig
from opencs.errors import ApiError, BadRequest, Forbidden, NotCached, Unauthenticated


class Nonces(Protocol):
    """Where seen nonces are remembered (the store: opencs.store.repos.nonces.NonceStore)."""

    def remember(self, access_key_id: str, nonce: str) -> bool:
        """True for a nonce not seen before for this key; False for a replay."""
        ...


@dataclass(frozen=True)
class SignedRequest:
    method: str
    raw_path: str  # percent-encoded, as sent
    path: str  # decoded
    query: list[tuple[str, str]]  # decoded pairs
    headers: Mapping[str, str]  # lower-cased names
    body: bytes


def _parse_time(headers: Mapping[str, str], scheme: str) -> datetime:
    if scheme == sig.ACS3 or ("date" not in headers and "x-acs-date" in headers):
        raw = headers.get("x-acs-date")
        if not raw:
            raise BadRequest("x-acs-date header is required", code="MissingDate")
        try:
            return datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise BadRequest(f"x-acs-date {raw!r} is not YYYY-MM-DDTHH:MM:SSZ", code="InvalidDate") from None
    raw = headers.get("date")
    if not raw:
        raise BadRequest("Date header is required (RFC 1123 GMT)", code="MissingDate")
    try:
        d = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        d = None
    if d is None:
        raise BadRequest(f"Date {raw!r} is not an RFC 1123 GMT date", code="InvalidDate")
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def replayed() -> BadRequest:
    return BadRequest("Specified signature nonce was used already: replayed request", code="SignatureNonceUsed")


class RequestVerifier:
    def __init__(
        self,
        secret_for: Callable[[str], str | None],
        nonces: Nonces,
        window_seconds: int = 900,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cached_secret_for: Callable[[str], str | None] | None = None,
    ) -> None:
        self.secret_for = secret_for
        # the secret from memory, raising NotCached when it is not there (verify_cached)
        self.cached_secret_for = cached_secret_for
        self.nonces = nonces
        self.window = timedelta(seconds=window_seconds)
        self.clock = clock

    def verify(self, req: SignedRequest) -> str:
        """Return the AccessKey id of a correctly signed request or raise an ApiError."""
        if not req.headers.get("authorization") and rpc.is_rpc(req.query):  # RPC (RAM) as sdk-core signs it
            return rpc.verify(req, self.secret_for, self.nonces, self.window, self.clock())
        ak, nonce = self._signed(req, self.secret_for)
        if nonce is not None and not self.nonces.remember(ak, nonce):
            raise replayed()
        return ak

    def verify_cached(self, req: SignedRequest) -> tuple[str, str | None]:
        """`verify` for a caller on the event loop: the secret from memory (`cached_secret_for`, which
        raises NotCached when it is not there), and the nonce not remembered but returned, for the
        caller to remember before it acts (a replay then gets `replayed()`). RPC: NotCached."""
        if self.cached_secret_for is None or (not req.headers.get("authorization") and rpc.is_rpc(req.query)):
            raise NotCached("no secret in memory for this request")
        return self._signed(req, self.cached_secret_for)

    def _signed(self, req: SignedRequest, secret_for: Callable[[str], str | None]) -> tuple[str, str | None]:
        """(AccessKey id, its nonce or None) of a correctly signed request, or an ApiError."""
        h = req.headers
        auth_value = h.get("authorization")
        if not auth_value:
            raise Unauthenticated("Authorization header is required", code="MissingAuthorization")
        try:
            auth = sig.parse_authorization(auth_value)
        except sig.MalformedAuthorization as e:
            # 401 like a missing one: no usable credential (RFC 9110 §15.5.2; schemathesis' ignored_auth)
            raise Unauthenticated(f"Authorization header is malformed: {e}", code="InvalidAuthorization") from None

        when = _parse_time(h, auth.scheme)
        skew = abs(self.clock() - when)
        if skew > self.window:
            raise BadRequest(
                f"The request time is {int(skew.total_seconds())}s away from the server time: "
                f"at most {int(self.window.total_seconds())}s allowed",
                code="RequestTimeTooSkewed",
            )

        # digests of the body are signed as header values; check them against the real body
        if "content-md5" in h and not hmac.compare_digest(h["content-md5"], sig.content_md5(req.body)):
            raise BadRequest("Content-MD5: does not match the request body", code="InvalidContentMD5")
        body_sha = sig.sha256_hex(req.body)
        if "x-acs-content-sha256" in h and not hmac.compare_digest(h["x-acs-content-sha256"].lower(), body_sha):
            raise BadRequest(
                "x-acs-content-sha256: does not match the request body", code="InvalidContentSHA256"
            )

        secret = secret_for(auth.access_key_id)
        if secret is None:
            raise Forbidden(
                f"Specified access key is not found or disabled: {auth.access_key_id}",
                code="InvalidAccessKeyId.NotFound",
            )

        if auth.scheme == sig.ROA:
            ok, sts = self._check_roa(req, secret, auth.signature)
        else:
            ok, sts = self._check_acs3(req, secret, auth, body_sha)
        if not ok:
            # sdk-core splits this message on ':' -> keep the colon (CLIENT-COMPAT.md)
            raise Forbidden(
                "Specified signature is not matched with our calculation. server string to sign is:" + sts,
                code="SignatureDoesNotMatch",
            )

        nonce = h.get("x-acs-signature-nonce")
        if nonce is not None and (not nonce or len(nonce) > 128):
            raise BadRequest("x-acs-signature-nonce must be 1-128 characters", code="InvalidNonce")
        return auth.access_key_id, nonce

    @staticmethod
    def _check_roa(req: SignedRequest, secret: str, given: str) -> tuple[bool, str]:
        first = ""
        for resource in sig.roa_candidate_resources(req.raw_path, req.path, req.query):
            sts = sig.roa_string_to_sign(req.method, req.headers, resource)
            first = first or sts
            if hmac.compare_digest(sig.roa_signature(secret, sts), given):
                return True, sts
        return False, first

    @staticmethod
    def _check_acs3(
        req: SignedRequest, secret: str, auth: sig.ParsedAuthorization, body_sha: str
    ) -> tuple[bool, str]:
        missing = [n for n in ("host", "x-acs-date") if n not in auth.signed_headers]
        if missing:
            return False, f"(SignedHeaders must include {', '.join(missing)})"
        payload = req.headers.get("x-acs-content-sha256", body_sha)
        first = ""
        for path in dict.fromkeys((req.raw_path, req.path)):
            canon = sig.acs3_canonical_request(
                req.method, path, req.query, req.headers, list(auth.signed_headers), payload
            )
            first = first or canon
            if hmac.compare_digest(sig.acs3_signature(secret, canon), auth.signature.lower()):
                return True, canon
        return False, first


__all__ = ["ApiError", "Nonces", "RequestVerifier", "SignedRequest", "replayed"]

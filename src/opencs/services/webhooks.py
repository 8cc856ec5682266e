"""Standard Webhooks signatures (https://www.standardwebhooks.com), as signed triggers check them.

The caller sends three headers: `webhook-id` (unique per message), `webhook-timestamp` (Unix seconds)
and `webhook-signature`, a space-separated list of `v1,<base64 HMAC-SHA256>` over
`<id>.<timestamp>.<body>` keyed with the base64-decoded part of a `whsec_...` secret. A timestamp more
than five minutes away from ours is refused, so a captured call cannot be replayed later; the caller
of `verify` remembers the ids it accepted to refuse a replay within those minutes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opencs.errors import ApiError

PREFIX = "whsec_"
TOLERANCE_SECONDS = 300
MAX_ID = 128  # ids are remembered (opencs.store.repos.nonces): bounded like a signature nonce


class WebhookRefused(ApiError):
    status = 403
    code = "InvalidWebhookSignature"


@dataclass(frozen=True)
class WebhookHeaders:
    msg_id: str
    timestamp: str
    signature: str

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> WebhookHeaders | None:
        """The three headers (lower-case names), or None when none of them was sent."""
        got = [headers.get(f"webhook-{k}", "") for k in ("id", "timestamp", "signature")]
        return cls(*got) if any(got) else None


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value a sender puts on a message (for docs and tests)."""
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(keys: Sequence[str], h: WebhookHeaders | None, body: bytes, now: float | None = None) -> None:
    """Raises WebhookRefused unless `h` signs `body` with one of `keys` within the time tolerance."""
    if h is None or not (h.msg_id and h.timestamp and h.signature):
        raise WebhookRefused("this trigger needs a signed call: webhook-id, webhook-timestamp and webhook-signature "
                             "headers (Standard Webhooks, HMAC-SHA256 with the trigger's signing secret)",
                             code="WebhookSignatureRequired", status=401)
    if len(h.msg_id) > MAX_ID or not h.msg_id.isprintable():
        raise WebhookRefused(f"webhook-id: at most {MAX_ID} printable characters", code="InvalidWebhookId",
                             status=400)
    try:
        ts = int(h.timestamp)
    except ValueError:
        raise WebhookRefused("webhook-timestamp must be Unix seconds", code="InvalidWebhookTimestamp",
                             status=400) from None
    if abs((time.time() if now is None else now) - ts) > TOLERANCE_SECONDS:
        raise WebhookRefused(f"webhook-timestamp is more than {TOLERANCE_SECONDS} s from the server's clock",
                             code="WebhookTimestampStale")
    given = []
    for part in h.signature.split():
        version, _, sig = part.partition(",")
        if version == "v1":
            try:
                given.append(base64.b64decode(sig, validate=True))
            except (binascii.Error, ValueError):
                continue
    for k in keys:
        want = base64.b64decode(sign(k, h.msg_id, ts, body)[3:])
        if any(hmac.compare_digest(want, g) for g in given):
            return
    raise WebhookRefused("webhook-signature does not match this trigger's signing secret")

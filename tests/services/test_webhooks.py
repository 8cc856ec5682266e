"""Standard Webhooks signatures as signed triggers check them, against the official library."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from standardwebhooks.webhooks import Webhook

from opencs.services import webhooks
from opencs.services.webhooks import WebhookHeaders, WebhookRefused


def _headers(secret: str, body: str, msg_id: str = "msg_1", at: float | None = None) -> WebhookHeaders:
    when = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.UTC)
    return WebhookHeaders(msg_id, str(int(when.timestamp())), Webhook(secret).sign(msg_id, when, body))


def test_our_signature_is_the_librarys() -> None:
    secret = webhooks.new_secret()
    when = dt.datetime.now(dt.UTC)
    assert webhooks.sign(secret, "m", int(when.timestamp()), b"{}") == Webhook(secret).sign("m", when, "{}")


def test_verify() -> None:
    old, new = webhooks.new_secret(), webhooks.new_secret()
    h = _headers(new, '{"a": 1}')
    webhooks.verify([old, new], h, b'{"a": 1}')  # any of the keys (a rotation's grace)
    two = WebhookHeaders(h.msg_id, h.timestamp, f"v1,{'A' * 44} {h.signature}")  # several signatures: any
    webhooks.verify([new], two, b'{"a": 1}')

    def code(keys: list[str], hdr: WebhookHeaders | None, body: bytes = b'{"a": 1}') -> str:
        with pytest.raises(WebhookRefused) as e:
            webhooks.verify(keys, hdr, body)
        return e.value.code

    assert code([old], h) == "InvalidWebhookSignature"
    assert code([new], h, b'{"a": 2}') == "InvalidWebhookSignature"
    assert code([new], None) == "WebhookSignatureRequired"
    assert code([new], WebhookHeaders("m", h.timestamp, "")) == "WebhookSignatureRequired"
    assert code([new], _headers(new, '{"a": 1}', at=time.time() - 301)) == "WebhookTimestampStale"
    assert code([new], WebhookHeaders("m", "yesterday", h.signature)) == "InvalidWebhookTimestamp"
    assert code([new], WebhookHeaders("m" * 129, h.timestamp, h.signature)) == "InvalidWebhookId"
    assert code([new], WebhookHeaders("m", h.timestamp, "v2," + h.signature[3:])) == "InvalidWebhookSignature"
    assert code([], h) == "InvalidWebhookSignature"

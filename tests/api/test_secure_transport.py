"""In-process: replies carrying a secret are refused over plain HTTP to a peer beyond loopback
(the ASGI scope's scheme and client, as uvicorn fills them), after the signature was checked."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import Signer


def call(app: Any, peer: str, scheme: str, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url=f"{scheme}://testserver") as c:
            return await c.request(method, path, headers=headers)

    return asyncio.run(go())


def test_secret_replies_need_https_beyond_loopback(app: Any, signer: Signer) -> None:
    path = "/clusters/c0000000000000000000000000000000/certs"
    far = call(app, "10.9.9.9", "http", "GET", path, signer.headers("GET", path))
    assert far.status_code == 403 and far.json()["Code"] == "HttpsRequired" and far.json()["RequestId"]
    # the same route over HTTPS, or from loopback, reaches the route (no such cluster here)
    assert call(app, "10.9.9.9", "https", "GET", path, signer.headers("GET", path)).status_code == 404
    assert call(app, "127.0.0.1", "http", "GET", path, signer.headers("GET", path)).status_code == 404
    # no secret in the reply: served to anyone signed
    assert call(app, "10.9.9.9", "http", "GET", "/clusters", signer.headers("GET", "/clusters")).status_code == 200
    kubeconfig = "/k8s/c0000000000000000000000000000000/user_config"  # spec §6.8: the caller's credential
    assert call(app, "10.9.9.9", "http", "GET", kubeconfig, signer.headers("GET", kubeconfig)).json()["Code"] \
        == "HttpsRequired"
    assert call(app, "10.9.9.9", "https", "GET", kubeconfig, signer.headers("GET", kubeconfig)).status_code == 404
    trig = "/clusters/c0000000000000000000000000000000/triggers"
    refused = call(app, "10.9.9.9", "http", "POST", trig, signer.headers("POST", trig))
    assert refused.json()["Code"] == "HttpsRequired"


def test_refusal_comes_after_the_signature(app: Any, signer: Signer) -> None:
    path = "/clusters/c0000000000000000000000000000000/certs"
    assert call(app, "10.9.9.9", "http", "GET", path, {}).status_code == 401  # unsigned: as before
    captured = signer.headers("GET", path)
    assert call(app, "10.9.9.9", "http", "GET", path, captured).json()["Code"] == "HttpsRequired"
    replay = call(app, "10.9.9.9", "https", "GET", path, captured)  # its nonce was spent by the refusal
    assert replay.json()["Code"] == "SignatureNonceUsed"

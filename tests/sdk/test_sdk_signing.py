"""The SDK signs what signature.py verifies, retries only safe calls, and maps errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

import httpx
import pytest

from opencs.auth import signature as sig
from opencs.sdk import (
    ACS3,
    ROA,
    AuthError,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    OpencsError,
    ServerError,
    TaskFailed,
    TaskTimeout,
    TransportError,
)

AK, SECRET = "LTAIsdkunit", "s3cr3t-for-unit-tests"

SPEC_BODY = (
    '{"password": "Just$test","instance_type": "ecs.m2.medium","name": "my-test-cluster-97082734",'
    '"size": 1,"network_mode": "classic","data_disk_category": "cloud","data_disk_size": 10,'
    '"ecs_image_id": "m-253llee3l"}'
)


def lower(h: httpx.Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items()}


def query_pairs(req: httpx.Request) -> list[tuple[str, str]]:
    return parse_qsl(req.url.query.decode(), keep_blank_values=True)


def verify_roa(req: httpx.Request, secret: str = SECRET) -> None:
    h = lower(req.headers)
    parsed = sig.parse_authorization(h["authorization"])
    assert parsed.scheme == ROA and parsed.access_key_id == AK
    raw_path = req.url.raw_path.decode().split("?", 1)[0]
    resources = sig.roa_candidate_resources(raw_path, unquote(raw_path), query_pairs(req))
    expected = {sig.roa_signature(secret, sig.roa_string_to_sign(req.method, h, r)) for r in resources}
    assert parsed.signature in expected
    body = req.content
    if body:
        assert h["content-md5"] == sig.content_md5(body)


def verify_acs3(req: httpx.Request, secret: str = SECRET) -> None:
    h = lower(req.headers)
    parsed = sig.parse_authorization(h["authorization"])
    assert parsed.scheme == ACS3 and parsed.access_key_id == AK
    assert {"host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"} <= set(parsed.signed_headers)
    assert h["host"] == req.url.netloc.decode()
    assert h["x-acs-content-sha256"] == sig.sha256_hex(req.content)
    raw_path = req.url.raw_path.decode().split("?", 1)[0]
    canon = sig.acs3_canonical_request(
        req.method, raw_path, query_pairs(req), h, list(parsed.signed_headers), sig.sha256_hex(req.content)
    )
    assert sig.acs3_signature(secret, canon) == parsed.signature


def client_with(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> Client:
    c = Client("http://127.0.0.1:8990", AK, SECRET, transport=httpx.MockTransport(handler), **kw)
    c._sleep = lambda s: None  # no real backoff in unit tests
    return c


def ok(payload: Any = None, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=payload if payload is not None else {},
                          headers={"x-acs-request-id": "RID-1"})


# ---------------------------------------------------------------------- signing


def test_spec_test_vector() -> None:
    """Spec §3.5: the SDK reproduces `acs access_key_id:pFd8Rd58Fv0jJRUptdqrOB3YS8M=`."""
    c = Client("http://cs.aliyuncs.com", "access_key_id", "access_key_secret")
    req = c.prepare_request(
        "POST", "/clusters?param1=value1&param2=value2", body=SPEC_BODY,
        headers={"Content-Type": "application/json;charset=utf-8", "X-Acs-Region-Id": "cn-beijing"},
        date="Wed, 16 Dec 2015 12:20:18 GMT", nonce="fbf6909a-93a5-45d3-8b1c-3e03a7916799",
    )
    assert req.headers["content-md5"] == "6U4ALMkKSj0PYbeQSHqgmA=="
    assert req.headers["content-length"] == "210"
    assert req.headers["authorization"] == "acs access_key_id:pFd8Rd58Fv0jJRUptdqrOB3YS8M="
    assert req.content == SPEC_BODY.encode()
    assert str(req.url) == "http://cs.aliyuncs.com/clusters?param1=value1&param2=value2"


@pytest.mark.parametrize("body", [None, {"name": "c1", "size": 2, "tag": "ü"}])
def test_roa_headers_verify(body: Any) -> None:
    c = Client("http://127.0.0.1:8990", AK, SECRET)
    req = c.prepare_request("POST" if body else "GET", "/clusters/c-1/ip/10.0.0.7",
                            query={"releaseInstance": True, "empty": "", "skip": None, "x": "a b/c"}, body=body)
    h = lower(req.headers)
    assert h["accept"] == "application/json"
    assert h["x-acs-version"] == "2015-12-15"
    assert h["x-acs-signature-method"] == "HMAC-SHA1"
    assert h["x-acs-signature-version"] == "1.0"
    assert h["date"].endswith(" GMT")
    assert len(h["x-acs-signature-nonce"]) == 36
    if body:
        assert h["content-type"] == "application/json"
        assert json.loads(req.content) == body
    else:
        assert "content-md5" not in h and "content-type" not in h and not req.content
    assert ("skip", "None") not in query_pairs(req)
    assert ("x", "a b/c") in query_pairs(req) and ("releaseInstance", "true") in query_pairs(req)
    verify_roa(req)
    with pytest.raises(AssertionError):
        verify_roa(req, secret="wrong")


@pytest.mark.parametrize("body", [None, {"count": 3}])
def test_acs3_headers_verify(body: Any) -> None:
    c = Client("http://127.0.0.1:8990", AK, SECRET, scheme="acs3")
    assert c.scheme == ACS3
    req = c.prepare_request("PUT" if body else "GET", "/api/v1/clusters",
                            query={"page_number": 1, "page_size": "10", "name": "a b~c"}, body=body)
    h = lower(req.headers)
    assert "date" not in h and "content-md5" not in h
    assert len(h["x-acs-date"]) == 20 and h["x-acs-date"].endswith("Z")
    verify_acs3(req)
    with pytest.raises(AssertionError):
        verify_acs3(req, secret="wrong")


def test_signed_with_server_verifier() -> None:
    """The server's own RequestVerifier accepts both schemes (and rejects a replayed nonce)."""
    verifier_mod = pytest.importorskip("opencs.auth.verifier")

    class Nonces:
        def __init__(self) -> None:
            self.seen: set[tuple[str, str]] = set()

        def remember(self, ak: str, nonce: str) -> bool:
            if (ak, nonce) in self.seen:
                return False
            self.seen.add((ak, nonce))
            return True

    verifier = verifier_mod.RequestVerifier(lambda ak: SECRET if ak == AK else None, Nonces())
    for scheme in (ROA, ACS3):
        c = Client("http://127.0.0.1:8990/", AK, SECRET, scheme=scheme)
        for path, body in (("/clusters", None), ("/clusters/c 1/attach", {"instances": ["i-1"]})):
            req = c.prepare_request("POST" if body else "GET", path, query={"a": "1", "b": ""}, body=body)
            raw = req.url.raw_path.decode().split("?", 1)[0]
            signed = verifier_mod.SignedRequest(req.method, raw, unquote(raw), query_pairs(req),
                                                lower(req.headers), req.content)
            assert verifier.verify(signed) == AK
            with pytest.raises(Exception, match="nonce"):
                verifier.verify(signed)


def test_endpoint_forms() -> None:
    assert Client("127.0.0.1:8990", AK, SECRET).endpoint == "http://127.0.0.1:8990"
    c = Client("https://cs.example.com/prefix/", AK, SECRET, scheme="acs3")
    req = c.prepare_request("GET", "clusters")
    assert str(req.url) == "https://cs.example.com/prefix/clusters"
    assert req.headers["host"] == "cs.example.com"
    with pytest.raises(ValueError):
        Client("ftp://x", AK, SECRET)
    with pytest.raises(ValueError):
        Client("http://x", AK, "")
    with pytest.raises(ValueError):
        Client("http://x", AK, SECRET, scheme="hmac-md5")
    assert SECRET not in repr(Client("http://x", AK, SECRET))


def test_ids_are_one_path_segment() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        verify_roa(req)
        return ok({})

    c = client_with(handler)
    c.describe_cluster("../tasks/x?y")
    assert seen[-1].url.raw_path == b"/clusters/..%2Ftasks%2Fx%3Fy"
    c.remove_node("c-1", "10.0.0.2", release_instance=True)
    assert seen[-1].method == "DELETE"
    assert seen[-1].url.raw_path == b"/clusters/c-1/ip/10.0.0.2?releaseInstance=true"


# ---------------------------------------------------------------------- typed calls


def test_typed_calls_routes() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        verify_roa(req)
        seen.append((req.method, req.url.raw_path.decode(), json.loads(req.content) if req.content else None))
        return ok({"ok": True})

    c = client_with(handler)
    c.version()
    c.list_clusters()
    c.list_clusters_paged(2, 5)
    c.create_cluster({"name": "a"})
    c.scale_cluster("c1", {"size": 3})
    c.delete_cluster("c1")
    c.attach_instances("c1", {"instances": ["i-1"]})
    c.reset_node("c1", "i-1", {"password": "x"})
    c.cluster_certs("c1")
    c.cluster_nodes("c1")
    c.list_images()
    c.describe_task("T-1")
    c.list_instances()
    c.create_instances(2)
    c.delete_instance("i-9")
    assert seen == [
        ("GET", "/version", None),
        ("GET", "/clusters", None),
        ("GET", "/api/v1/clusters?page_number=2&page_size=5", None),
        ("POST", "/clusters", {"name": "a"}),
        ("PUT", "/clusters/c1", {"size": 3}),
        ("DELETE", "/clusters/c1", None),
        ("POST", "/clusters/c1/attach", {"instances": ["i-1"]}),
        ("POST", "/clusters/c1/instances/i-1/reset", {"password": "x"}),
        ("GET", "/clusters/c1/certs", None),
        ("GET", "/clusters/c1/nodes", None),
        ("GET", "/images", None),
        ("GET", "/tasks/T-1", None),
        ("GET", "/instances", None),
        ("POST", "/instances", {"count": 2}),
        ("DELETE", "/instances/i-9", None),
    ]


def test_empty_and_text_replies() -> None:
    replies = iter([httpx.Response(202), httpx.Response(200, text="plain")])
    c = client_with(lambda req: next(replies))
    assert c.request("DELETE", "/clusters/x") is None
    assert c.request("GET", "/x") == "plain"


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, BadRequestError), (401, AuthError), (403, AuthError), (404, NotFoundError),
     (409, ConflictError), (500, ServerError), (503, ServerError)],
)
def test_error_mapping(status: int, cls: type[OpencsError]) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"Code": "SomeCode", "Message": "went: wrong", "RequestId": "R-9"},
                              headers={"x-acs-request-id": "R-9"})

    c = client_with(handler, retries=0)
    with pytest.raises(cls) as ei:
        c.request("GET", "/clusters/x")
    e = ei.value
    assert (e.status, e.code, e.message, e.request_id) == (status, "SomeCode", "went: wrong", "R-9")


def test_error_without_json_body() -> None:
    c = client_with(lambda req: httpx.Response(502, text="<html>bad gateway</html>",
                                               headers={"x-acs-request-id": "R-2"}), retries=0)
    with pytest.raises(ServerError) as ei:
        c.request("GET", "/clusters")
    assert ei.value.code == "Http502" and "bad gateway" in ei.value.message and ei.value.request_id == "R-2"


# ---------------------------------------------------------------------- retries


def test_retry_on_503_resigns_with_fresh_nonce() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        verify_roa(req)
        return ok([]) if len(seen) == 3 else httpx.Response(503, json={"Code": "Busy", "Message": "x"})

    c = client_with(handler, retries=2)
    assert c.request("GET", "/clusters") == []
    assert len(seen) == 3
    nonces = {r.headers["x-acs-signature-nonce"] for r in seen}
    auths = {r.headers["authorization"] for r in seen}
    assert len(nonces) == 3 and len(auths) == 3


def test_retries_exhausted_raise_last_error() -> None:
    calls = []
    c = client_with(lambda req: calls.append(1) or httpx.Response(504, json={"Code": "Timeout", "Message": "m"}),
                    retries=2)
    with pytest.raises(ServerError):
        c.request("PUT", "/clusters/c1", body={"size": 1})
    assert len(calls) == 3


@pytest.mark.parametrize("status", [500, 501])
def test_no_retry_on_other_5xx(status: int) -> None:
    calls = []
    c = client_with(lambda req: calls.append(1) or httpx.Response(status, json={"Code": "E", "Message": "m"}))
    with pytest.raises(ServerError):
        c.request("GET", "/clusters")
    assert len(calls) == 1


def test_post_never_retried() -> None:
    calls = []
    c = client_with(lambda req: calls.append(1) or httpx.Response(503, json={"Code": "Busy", "Message": "m"}))
    with pytest.raises(ServerError):
        c.create_cluster({"name": "x"})
    assert len(calls) == 1

    def refuse(req: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ConnectError("refused", request=req)

    calls.clear()
    with pytest.raises(TransportError):
        client_with(refuse).create_instances(1)
    assert len(calls) == 1


def test_connection_errors_retried_for_get_then_transport_error() -> None:
    calls = []

    def refuse(req: httpx.Request) -> httpx.Response:
        calls.append(req.headers["x-acs-signature-nonce"])
        raise httpx.ConnectError("Connection refused", request=req)

    c = client_with(refuse, retries=2)
    with pytest.raises(TransportError) as ei:
        c.list_clusters()
    assert len(calls) == 3 and len(set(calls)) == 3
    assert ei.value.status == 0 and "127.0.0.1:8990" in ei.value.message
    assert ei.value.endpoint == "http://127.0.0.1:8990"


def test_read_timeout_not_retried() -> None:
    calls = []

    def slow(req: httpx.Request) -> httpx.Response:
        calls.append(1)
        raise httpx.ReadTimeout("slow", request=req)

    with pytest.raises(TransportError, match="timed out"):
        client_with(slow).list_clusters()
    assert len(calls) == 1


def test_real_closed_port_gives_transport_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = Client(f"http://127.0.0.1:{port}", AK, SECRET, retries=1, backoff=0.01)
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
        c.version()


# ---------------------------------------------------------------------- wait_task


def task(state: str, **kw: Any) -> dict[str, Any]:
    return {"task_id": "T-1", "task_type": "t", "state": state, "stages": [], "error": None, **kw}


def test_wait_task_success_and_updates() -> None:
    states = iter(["pending", "running", "running", "success"])
    c = client_with(lambda req: ok(task(next(states))))
    updates: list[str] = []
    result = c.wait_task("T-1", timeout=10, poll=0.01, on_update=lambda t: updates.append(t["state"]))
    assert result["state"] == "success"
    assert updates == ["pending", "running", "running", "success"]


def test_wait_task_failure_carries_error() -> None:
    states = iter([task("running"), task("fail", error={"code": "NodeFailed", "message": "no dockerd"})])
    c = client_with(lambda req: ok(next(states)))
    with pytest.raises(TaskFailed) as ei:
        c.wait_task("T-1", poll=0.01)
    assert ei.value.code == "NodeFailed" and ei.value.message == "no dockerd"
    assert ei.value.task["state"] == "fail" and ei.value.task_id == "T-1"


def test_wait_task_timeout() -> None:
    c = client_with(lambda req: ok(task("running")))
    now = [0.0]
    c._clock = lambda: now[0]

    def fake_sleep(s: float) -> None:
        now[0] += s

    c._sleep = fake_sleep
    with pytest.raises(TaskTimeout) as ei:
        c.wait_task("T-1", timeout=2, poll=0.5)
    assert isinstance(ei.value, TimeoutError)
    assert ei.value.task is not None and ei.value.task["state"] == "running"
    assert "T-1" in str(ei.value)

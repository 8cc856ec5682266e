"""Every bad request gets its status, Code and RequestId, and changes nothing (issue 2, item 4)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import inspect, select, text

from opencs.auth import signature as sig
from tests.conftest import Signer


def snapshot(rt: Any) -> dict[str, list[Any]]:
    """Every row of every table but the nonce log and the audit trail (refused calls are on record)."""
    out: dict[str, list[Any]] = {}
    with rt.db.engine.connect() as c:
        for t in inspect(rt.db.engine).get_table_names():
            if t in ("nonces", "alembic_version", "audit_log"):
                continue
            out[t] = sorted(map(tuple, c.execute(text(f"SELECT * FROM {t}")).fetchall()), key=repr)
    return out


def nonce_count(rt: Any) -> int:
    from opencs.store.models import Nonce

    with rt.db.session() as s:
        return len(s.scalars(select(Nonce.nonce)).all())


def assert_error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["Code"] == code, body
    assert body["RequestId"] and body["RequestId"] == r.headers["x-acs-request-id"]
    assert body["Message"]
    assert "Traceback" not in r.text
    return body


def test_good_request_both_schemes(client: Any, signer: Signer) -> None:
    r = client.get("/clusters", headers=signer.headers("GET", "/clusters"))
    assert r.status_code == 200, r.text
    assert r.json() == []
    assert r.headers["x-acs-request-id"]


def test_missing_authorization(client: Any, runtime: Any) -> None:
    before = snapshot(runtime)
    assert_error(client.get("/clusters"), 401, "MissingAuthorization")
    assert snapshot(runtime) == before


def test_malformed_authorization(client: Any, signer: Signer) -> None:
    h = signer.headers("GET", "/clusters")
    h["authorization"] = "Bearer abc"
    assert_error(client.get("/clusters", headers=h), 401, "InvalidAuthorization")


def test_unknown_key(client: Any, runtime: Any) -> None:
    s = Signer("LTAInosuchkey", "whatever")
    before, n = snapshot(runtime), nonce_count(runtime)
    assert_error(client.get("/clusters", headers=s.headers("GET", "/clusters")), 403, "InvalidAccessKeyId.NotFound")
    assert snapshot(runtime) == before and nonce_count(runtime) == n


def test_disabled_key(client: Any, runtime: Any, creds: tuple[str, str]) -> None:
    runtime.keys.set_status(creds[0], "disabled")
    s = Signer(*creds)
    assert_error(client.get("/clusters", headers=s.headers("GET", "/clusters")), 403, "InvalidAccessKeyId.NotFound")
    runtime.keys.set_status(creds[0], "active")
    assert client.get("/clusters", headers=s.headers("GET", "/clusters")).status_code == 200


def test_bad_signature(client: Any, runtime: Any, creds: tuple[str, str]) -> None:
    for scheme in (sig.ROA, sig.ACS3):
        s = Signer(creds[0], "wrong-secret", scheme)
        before, n = snapshot(runtime), nonce_count(runtime)
        body = assert_error(client.get("/clusters", headers=s.headers("GET", "/clusters")), 403,
                            "SignatureDoesNotMatch")
        assert ":" in body["Message"]  # aliyun-python-sdk-core splits on it
        assert creds[1] not in body["Message"]
        assert snapshot(runtime) == before and nonce_count(runtime) == n


def test_signature_over_other_path_is_refused(client: Any, signer: Signer) -> None:
    h = signer.headers("GET", "/clusters")
    assert_error(client.get("/api/v1/clusters", headers=h), 403, "SignatureDoesNotMatch")


def test_expired_date(client: Any, runtime: Any, signer: Signer) -> None:
    before = snapshot(runtime)
    for skew in (-16 * 60, 16 * 60):
        h = signer.headers("GET", "/clusters", date=time.time() + skew)
        assert_error(client.get("/clusters", headers=h), 400, "RequestTimeTooSkewed")
    h = signer.headers("GET", "/clusters", date=time.time() - 14 * 60)
    assert client.get("/clusters", headers=h).status_code == 200
    assert snapshot(runtime) == before


def test_missing_or_invalid_date(client: Any, creds: tuple[str, str]) -> None:
    s = Signer(*creds)
    h = s.headers("GET", "/clusters")
    del h["date"], h["x-acs-date"]
    assert_error(client.get("/clusters", headers=h), 400, "MissingDate")
    h = s.headers("GET", "/clusters")
    h["date"] = "yesterday"
    assert_error(client.get("/clusters", headers=h), 400, "InvalidDate")


def test_replayed_nonce(client: Any, runtime: Any, signer: Signer) -> None:
    h = signer.headers("GET", "/clusters", nonce="fixed-nonce-1")
    assert client.get("/clusters", headers=h).status_code == 200
    before = snapshot(runtime)
    assert_error(client.get("/clusters", headers=h), 400, "SignatureNonceUsed")
    assert snapshot(runtime) == before


def test_replayed_nonce_after_restart(tmp_path: Any, database_url: Any, creds: Any) -> None:
    """The nonce log is in the database: a new process (runtime) still refuses the replay."""
    from starlette.testclient import TestClient

    from opencs.api.app import create_app
    from opencs.composition import build
    from opencs.config import Settings

    rt2 = build(Settings(data_dir=tmp_path / "data", database_url=database_url, workers=0))
    try:
        ak, secret = rt2.keys.create("replay")
        h = Signer(ak, secret).headers("GET", "/clusters", nonce="n-restart")
        with TestClient(create_app(rt2)) as c:
            assert c.get("/clusters", headers=h).status_code == 200
    finally:
        rt2.close()
    rt3 = build(Settings(data_dir=tmp_path / "data", database_url=database_url, workers=0))
    try:
        with TestClient(create_app(rt3)) as c:
            assert_error(c.get("/clusters", headers=h), 400, "SignatureNonceUsed")
    finally:
        rt3.close()


def test_no_nonce_is_accepted(client: Any, creds: tuple[str, str]) -> None:
    # aliyun-python-sdk-core never sends a nonce (CLIENT-COMPAT.md)
    s = Signer(*creds)
    assert client.get("/clusters", headers=s.headers("GET", "/clusters", nonce=None)).status_code == 200


BODY = json.dumps({"name": "c1", "size": 1}).encode()


def test_tampered_body(client: Any, runtime: Any, signer: Signer) -> None:
    h = signer.headers("POST", "/clusters", body=BODY)
    before, n = snapshot(runtime), nonce_count(runtime)
    tampered = BODY.replace(b'"size": 1', b'"size": 9')
    code = "InvalidContentMD5" if signer.scheme == sig.ROA else "InvalidContentSHA256"
    assert_error(client.post("/clusters", content=tampered, headers=h), 400, code)
    assert snapshot(runtime) == before and nonce_count(runtime) == n


def test_tampered_body_and_digest(client: Any, runtime: Any, signer: Signer) -> None:
    h = signer.headers("POST", "/clusters", body=BODY)
    tampered = BODY.replace(b'"size": 1', b'"size": 9')
    h["content-md5"] = sig.content_md5(tampered)
    h["x-acs-content-sha256"] = sig.sha256_hex(tampered)
    before = snapshot(runtime)
    assert_error(client.post("/clusters", content=tampered, headers=h), 403, "SignatureDoesNotMatch")
    assert snapshot(runtime) == before


def test_malformed_json(client: Any, runtime: Any, signer: Signer) -> None:
    body = b'{"name": "c1", "size": '
    before = snapshot(runtime)
    r = client.post("/clusters", content=body, headers=signer.headers("POST", "/clusters", body=body))
    assert_error(r, 400, "MalformedJSON")
    body = b"[1, 2]"
    r = client.post("/clusters", content=body, headers=signer.headers("POST", "/clusters", body=body))
    assert_error(r, 400, "MalformedJSON")
    assert snapshot(runtime) == before


def test_wrong_content_type(client: Any, runtime: Any, signer: Signer) -> None:
    body = b"name=c1&size=1"
    before = snapshot(runtime)
    h = signer.headers("POST", "/clusters", body=body, content_type="application/x-www-form-urlencoded")
    body_json = assert_error(client.post("/clusters", content=body, headers=h), 415, "UnsupportedMediaType")
    assert "application/json" in body_json["Message"]
    assert snapshot(runtime) == before


def test_unknown_route(client: Any, signer: Signer) -> None:
    assert_error(client.get("/no/such/api", headers=signer.headers("GET", "/no/such/api")), 404, "NotFound")
    r = client.patch("/clusters", headers=signer.headers("PATCH", "/clusters"))
    assert_error(r, 405, "MethodNotAllowed")


def test_unknown_resource(client: Any, signer: Signer) -> None:
    p = "/clusters/c0000000000000000000000000000000"
    assert_error(client.get(p, headers=signer.headers("GET", p)), 404, "ErrorClusterNotFound")
    p = "/tasks/T-000000000000000000000000"
    assert_error(client.get(p, headers=signer.headers("GET", p)), 404, "ErrorTaskNotFound")


def test_validation_error_names_field(client: Any, runtime: Any, signer: Signer) -> None:
    q = {"page_size": "lots"}
    r = client.get("/api/v1/clusters", params=q, headers=signer.headers("GET", "/api/v1/clusters", q))
    assert "page_size" in assert_error(r, 400, "InvalidParameter")["Message"]
    body = json.dumps({"name": "ok-name", "size": "three", "instance_type": "ecs.n1.small"}).encode()
    before = snapshot(runtime)
    r = client.post("/clusters", content=body, headers=signer.headers("POST", "/clusters", body=body))
    assert "size" in assert_error(r, 400, "InvalidParameter")["Message"]
    assert snapshot(runtime) == before


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json"])
def test_public_routes(client: Any, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["x-acs-request-id"]


def test_paged_list_and_version(client: Any, signer: Signer) -> None:
    r = client.get("/api/v1/clusters", headers=signer.headers("GET", "/api/v1/clusters"))
    assert r.json() == {"clusters": [], "page_info": {"page_number": 1, "page_size": 10, "total_count": 0}}
    r = client.get("/version", headers=signer.headers("GET", "/version"))
    assert r.json()["api_version"] == "2015-12-15"

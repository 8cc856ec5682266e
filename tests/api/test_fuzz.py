"""Fuzzing the control-plane API from its OpenAPI document (issue 13, item 4), with a bounded budget:
schemathesis generates valid and invalid requests for every operation, signed and unsigned, and every
reply must pass its conformance checks and ours. bench/fuzz.py runs the same for thousands of
requests over real HTTP. No node is ever created: the runtime has no local node provider (cluster
creation answers 412) and no task workers."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from opencs.api.app import create_app
from opencs.api.openapi import UNSIGNED
from opencs.auth import signature as sig
from tests.api import fuzzkit
from tests.conftest import Signer

SIGNED_PER_OPERATION = 6  # per generation mode (positive, negative): ~270 requests
UNSIGNED_PER_OPERATION = 3  # ~130 requests


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Any]:
    with fuzzkit.local_runtime(tmp_path) as rt:
        yield rt


@pytest.fixture
def app(rt: Any) -> Any:
    return create_app(rt)


@pytest.fixture
def keys(rt: Any) -> tuple[str, str]:
    return rt.keys.create("fuzz")


def test_fuzz_signed(app: Any, keys: tuple[str, str]) -> None:
    auth = fuzzkit.SigningAuth(*keys)
    schema = fuzzkit.asgi_schema(app, signed=True)
    tally = fuzzkit.fuzz(schema, lambda case: case.call(auth=auth), SIGNED_PER_OPERATION)
    assert tally.failures == 0, tally.report()
    assert tally.requests >= 200, tally.report()
    # the signatures were accepted: reads answered, unknown ids 404, creations 412 (no provider)
    assert tally.statuses[200] and tally.statuses[404] and tally.statuses[412], tally.report()


def test_fuzz_unsigned(app: Any) -> None:
    schema = fuzzkit.asgi_schema(app, signed=False)
    tally = fuzzkit.fuzz(schema, lambda case: case.call(), UNSIGNED_PER_OPERATION)
    assert tally.failures == 0, tally.report()
    assert tally.requests >= 100, tally.report()
    assert not any(200 <= s < 300 for s in tally.statuses), tally.report()  # nothing passes unsigned
    assert tally.statuses[401], tally.report()


def test_openapi_document_says_what_routes_answer(app: Any) -> None:
    doc = app.openapi()
    ops = [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items()]
    ids = [op["operationId"] for _, _, op in ops]
    assert len(ids) == len(set(ids)), ids
    assert doc["components"]["securitySchemes"]["acsSignature"]["name"] == "Authorization"
    for method, path, op in ops:
        codes = set(op["responses"])
        assert "422" not in codes, (method, path)
        if path not in UNSIGNED:
            assert {"400", "401", "403"} <= codes, (method, path, codes)
        for code, reply in op["responses"].items():
            assert fuzzkit.REQUEST_ID in reply["headers"], (method, path, code)
            if code >= "400":
                assert reply["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    hook = doc["paths"]["/hook/trigger"]
    assert hook["get"]["security"] == [] and hook["post"]["operationId"] != hook["get"]["operationId"]
    assert "requestBody" in doc["paths"]["/clusters/{cluster_id}/triggers"]["post"]
    size = doc["paths"]["/clusters"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert size["properties"]["size"]["maximum"] == app.state.services.settings.max_cluster_size


def _signed(client: TestClient, signer: Signer, method: str, path: str, query: dict[str, str] | None = None) -> Any:
    return client.request(method, signer.url(path, query), headers=signer.headers(method, path, query))


def test_page_number_has_bounds(app: Any, keys: tuple[str, str]) -> None:
    """The fuzzer's first find: a page number of 2**62 overflowed the store's OFFSET (a 500)."""
    signer = Signer(*keys, scheme=sig.ACS3)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _signed(c, signer, "GET", "/api/v1/clusters", {"page_number": "4611686018427387904"})
        assert r.status_code == 400 and r.json()["Code"] == "InvalidParameter", r.text
        assert "page_number" in r.json()["Message"] and r.json()["RequestId"] == r.headers[fuzzkit.REQUEST_ID]
        r = _signed(c, signer, "GET", "/api/v1/clusters", {"page_number": "1000000", "page_size": "100"})
        assert r.status_code == 200 and r.json()["clusters"] == [], r.text


def test_method_not_allowed_carries_allow(app: Any, keys: tuple[str, str]) -> None:
    signer = Signer(*keys)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = _signed(c, signer, "PATCH", "/clusters")
        assert r.status_code == 405, r.text
        assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}
        assert r.json()["Code"] == "MethodNotAllowed" and r.json()["RequestId"] == r.headers[fuzzkit.REQUEST_ID]


def test_a_500_keeps_the_connection_and_the_request_id(app: Any, keys: tuple[str, str]) -> None:
    """An unexpected exception answers JSON with the request id and leaves the keep-alive
    connection usable (Starlette's ServerErrorMiddleware re-raised, so uvicorn closed it)."""

    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    signer = Signer(*keys)
    with fuzzkit.serve(app) as base:
        host = base.removeprefix("http://")
        conn = http.client.HTTPConnection(host, timeout=10)
        try:
            conn.request("GET", "/boom", headers=signer.headers("GET", "/boom", host=host))
            r = conn.getresponse()
            body = json.loads(r.read())
            assert r.status == 500 and body["Code"] == "InternalError", body
            assert body["RequestId"] and body["RequestId"] == r.getheader(fuzzkit.REQUEST_ID)
            assert "a bug" not in json.dumps(body) and "Traceback" not in json.dumps(body)
            sock = conn.sock
            conn.request("GET", "/version", headers=signer.headers("GET", "/version", host=host))
            r = conn.getresponse()
            assert r.status == 200, r.read()
            r.read()
            assert conn.sock is sock  # the same TCP connection answered
        finally:
            conn.close()

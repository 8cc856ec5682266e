"""GET /clusters gzipped for a client that asks (opencs.api.compressed): the same JSON, compressed
once per body; plain for identity, for q=0, and whenever the authorizer cuts the list."""

from __future__ import annotations

import gzip
import json
from typing import Any

from starlette.testclient import TestClient

from opencs.store.db import utcnow
from opencs.store.models import Cluster
from tests.conftest import Signer


def _seed(runtime: Any, n: int, account_id: str | None = None, prefix: str = "g") -> None:
    now = utcnow()
    with runtime.db.session() as s:
        for k in range(n):
            s.add(Cluster(cluster_id=f"c{prefix}{k:031d}", name=f"{prefix}-{k}", state="running", size=1,
                          region_id="local", spec={}, created=now, updated=now,
                          **({"account_id": account_id} if account_id else {})))


def _get(client: TestClient, signer: Signer, encoding: str) -> Any:
    return client.get("/clusters", headers={**signer.headers("GET", "/clusters"), "Accept-Encoding": encoding})


def test_gzip_when_asked_plain_otherwise(runtime: Any, client: TestClient, signer: Signer) -> None:
    _seed(runtime, 300)  # > 64 KB of JSON
    plain = _get(client, signer, "identity")
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding" and len(plain.content) > 64 * 1024
    assert len(plain.json()) == 300
    gz = _get(client, signer, "gzip, deflate")
    assert gz.headers["content-encoding"] == "gzip" and gz.json() == plain.json()
    assert int(gz.headers["content-length"]) < len(plain.content) // 5
    assert _get(client, signer, "br;q=1, gzip;q=0").headers.get("content-encoding") is None
    assert _get(client, signer, "*").headers["content-encoding"] == "gzip"
    # compressed once per body: the second reply is the same bytes of the same cached body
    body = runtime.clusters.list_json()
    from opencs.api.routes import clusters as routes

    assert routes._list_gzip.cached(body) is not None
    assert gzip.decompress(routes._list_gzip.cached(body) or b"") == body


def test_a_cut_list_is_plain(runtime: Any, client: TestClient, signer: Signer) -> None:
    _seed(runtime, 300)
    _seed(runtime, 1, account_id="1000000000000999", prefix="x")  # another account's: the list is cut
    r = _get(client, signer, "gzip")
    assert r.status_code == 200 and "content-encoding" not in r.headers
    names = {c["name"] for c in json.loads(r.content)}
    assert len(names) == 300 and "x-0" not in names

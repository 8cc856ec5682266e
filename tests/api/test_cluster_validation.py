"""Bad cluster requests get a clear 4xx and change nothing (no nodes needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from opencs.providers.base import ProviderUnavailable
from tests.api.test_auth_errors import assert_error, snapshot
from tests.conftest import Signer

GOOD = {"name": "ok-1", "size": 1, "instance_type": "ecs.n1.small", "network_mode": "vpc", "password": "TestPwd124"}


def post(client: Any, signer: Signer, path: str, body: Any, method: str = "POST") -> Any:
    raw = json.dumps(body).encode()
    return client.request(method, path, content=raw, headers=signer.headers(method, path, body=raw))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"size": 0}, "size"),
        ({"size": "three"}, "size"),
        ({"size": None}, "size"),
        ({"name": "-bad"}, "name"),
        ({"name": ""}, "name"),
        ({"name": 42}, "name"),
        ({"instance_type": "huge"}, "instance_type"),
        ({"password": "short"}, "password"),
        ({"password": "alllowercaseletters"}, "password"),
        ({"network_mode": "mesh"}, "network_mode"),
        ({"subnet_cidr": "300.1.1.0/24"}, "subnet_cidr"),
        ({"data_disk_category": "floppy"}, "data_disk_category"),
        ({"data_disk_size": -1}, "data_disk_size"),
        ({"need_slb": "maybe"}, "need_slb"),
        ({"io_optimized": "sometimes"}, "io_optimized"),
        ({"rds_instances": "rds-1"}, "rds_instances"),
    ],
)
def test_create_rejects_bad_fields(client: Any, runtime: Any, creds: Any, change: dict[str, Any],
                                  field: str) -> None:
    before = snapshot(runtime)
    r = post(client, Signer(*creds), "/clusters", {**GOOD, **change})
    body = assert_error(r, 400, "InvalidParameter")
    assert field in body["Message"]
    assert snapshot(runtime) == before


def test_create_rejects_missing_required(client: Any, runtime: Any, creds: Any) -> None:
    for missing in ("name", "size"):
        body = {k: v for k, v in GOOD.items() if k != missing}
        r = post(client, Signer(*creds), "/clusters", body)
        assert missing in assert_error(r, 400, "InvalidParameter")["Message"]


def test_create_rejects_size_over_maximum(client: Any, runtime: Any, creds: Any) -> None:
    before = snapshot(runtime)
    r = post(client, Signer(*creds), "/clusters", {**GOOD, "size": runtime.settings.max_cluster_size + 1})
    assert "size" in assert_error(r, 400, "InvalidParameter.Size")["Message"]
    assert snapshot(runtime) == before


@pytest.mark.parametrize(("ctype", "says"), [("Ask", "serverless"), ("mesos", "not offered")])
def test_cluster_types_not_offered_are_refused_clearly(client: Any, runtime: Any, creds: Any, ctype: str,
                                                       says: str) -> None:
    before = snapshot(runtime)
    r = post(client, Signer(*creds), "/clusters", {**GOOD, "cluster_type": ctype})
    assert says in assert_error(r, 400, "ClusterTypeNotSupported")["Message"]
    assert snapshot(runtime) == before


class Unavailable:
    name = "local"

    def check(self) -> None:
        raise ProviderUnavailable("local provider unavailable: no dockerd")


def test_provider_unavailable_is_a_clear_4xx(client: Any, runtime: Any, creds: Any) -> None:
    runtime.providers["local"] = Unavailable()
    before = snapshot(runtime)
    r = post(client, Signer(*creds), "/clusters", GOOD)
    assert "dockerd" in assert_error(r, 412, "ProviderUnavailable")["Message"]
    assert snapshot(runtime) == before


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("PUT", "/clusters/c00000000000000000000000000000000", {"size": 2}, 404, "ErrorClusterNotFound"),
        ("DELETE", "/clusters/c00000000000000000000000000000000", None, 404, "ErrorClusterNotFound"),
        ("POST", "/clusters/c00000000000000000000000000000000/attach", {"instances": ["i-aaaaaaaaaaaaaaaaaaaa"]},
         404, "ErrorClusterNotFound"),
        ("DELETE", "/clusters/c00000000000000000000000000000000/ip/10.0.0.1", None, 404, "ErrorClusterNotFound"),
        ("POST", "/clusters/c00000000000000000000000000000000/instances/i-aaaaaaaaaaaaaaaaaaaa/reset", {}, 404,
         "ErrorClusterNotFound"),
        ("GET", "/clusters/c00000000000000000000000000000000/certs", None, 404, "ErrorClusterNotFound"),
        ("GET", "/clusters/c00000000000000000000000000000000/nodes", None, 404, "ErrorClusterNotFound"),
        # a cluster the caller's account does not have is 404 before its body is read (so another
        # account's answers as a nonexistent one whatever the body); an existing one's body is checked
        ("PUT", "/clusters/c00000000000000000000000000000000", {"size": "x"}, 404, "ErrorClusterNotFound"),
        ("PUT", "/clusters/EXISTING", {"size": "x"}, 400, "InvalidParameter"),
        ("POST", "/clusters/c00000000000000000000000000000000/attach", {"instances": ["nope"]}, 400,
         "InvalidParameter"),
        ("POST", "/clusters/c00000000000000000000000000000000/attach", {"instances": []}, 400, "InvalidParameter"),
        ("DELETE", "/instances/i-aaaaaaaaaaaaaaaaaaaa", None, 404, "ErrorInstanceNotFound"),
        ("POST", "/instances", {"count": 0}, 400, "InvalidParameter"),
        ("POST", "/instances", {"count": 500}, 400, "InvalidParameter"),
    ],
)
def test_cluster_routes_reject_bad_requests(client: Any, runtime: Any, creds: Any, existing_cluster: str,
                                            method: str, path: str, body: Any, status: int, code: str) -> None:
    path = path.replace("EXISTING", existing_cluster)
    before = snapshot(runtime)
    s = Signer(*creds)
    if body is None:
        r = client.request(method, path, headers=s.headers(method, path))
    else:
        r = post(client, s, path, body, method)
    assert_error(r, status, code)
    assert snapshot(runtime) == before


def test_images_lists_configured_regions(client: Any, creds: Any) -> None:
    s = Signer(*creds)
    r = client.get("/images", headers=s.headers("GET", "/images"))
    assert r.status_code == 200
    body = r.json()
    assert "local" in body and body["local"]["items"][0]["value"]

"""Kubernetes bodies of spec §6 (no nodes, no root): each bad field gets a 400 naming it and changes
nothing; a good body is recorded with what it means here (and what had no effect)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from opencs.engines.kubernetes import binary
from opencs.providers.fake import FakeProvider
from tests.api.test_auth_errors import assert_error, snapshot
from tests.conftest import Signer

GOOD: dict[str, Any] = {
    "cluster_type": "Kubernetes", "name": "k8s-1", "region_id": "cn-beijing", "num_of_nodes": 2,
    "snat_entry": True, "master_instance_types": ["ecs.n1.medium"], "master_system_disk_category": "cloud_efficiency",
    "master_system_disk_size": 40, "master_vswitch_ids": ["vsw-1"], "worker_instance_types": ["ecs.n1.medium"],
    "worker_system_disk_category": "cloud_ssd", "worker_system_disk_size": 120, "worker_vswitch_ids": ["vsw-1"],
    "login_password": "Test1234!",
}  # fmt: skip
REQUIRED = ("name", "region_id", "num_of_nodes", "snat_entry", "master_instance_types", "master_system_disk_category",
            "master_system_disk_size", "master_vswitch_ids", "worker_instance_types", "worker_system_disk_category",
            "worker_system_disk_size", "worker_vswitch_ids")
CID = "c00000000000000000000000000000000"
MANAGED: dict[str, Any] = {
    "cluster_type": "ManagedKubernetes", "name": "mk-1", "region_id": "cn-beijing", "num_of_nodes": 2,
    "snat_entry": True, "vswitch_ids": ["vsw-1"], "worker_instance_types": ["ecs.n1.medium"],
    "worker_system_disk_category": "cloud_ssd", "worker_system_disk_size": 120, "login_password": "Test1234!",
}  # fmt: skip
MANAGED_REQUIRED = ("name", "region_id", "num_of_nodes", "snat_entry", "vswitch_ids", "worker_system_disk_category",
                    "worker_system_disk_size")
# spec §6.5's example body (the placeholders made real)
EDGE: dict[str, Any] = {
    "name": "edge-1", "cluster_type": "ManagedKubernetes", "profile": "Edge", "disable_rollback": True,
    "timeout_mins": 60, "region_id": "cn-beijing", "snat_entry": True, "cloud_monitor_flags": True,
    "endpoint_public_access": True, "tags": [], "worker_instance_types": ["ecs.hfc5.xlarge"], "num_of_nodes": 1,
    "worker_system_disk_category": "cloud_efficiency", "worker_system_disk_size": 40, "vpcid": "vpc-2zegvl5eta",
    "container_cidr": "172.20.0.0/16", "service_cidr": "172.21.0.0/20", "vswitch_ids": ["vsw-2ze48rkq464rsdts1"],
    "login_password": "Test@1934",
}  # fmt: skip
EDGE_REQUIRED = ("name", "region_id", "num_of_nodes", "snat_entry", "vswitch_ids", "worker_system_disk_category",
                 "worker_system_disk_size")
BODIES = {"dedicated": GOOD, "managed": MANAGED, "edge": EDGE}


def post(client: Any, signer: Signer, path: str, body: Any) -> Any:
    raw = json.dumps(body).encode()
    return client.request("POST", path, content=raw, headers=signer.headers("POST", path, body=raw))


@pytest.fixture
def database_url() -> None:
    """The body rules do not depend on the store: SQLite only (overrides conftest's two stores)."""
    return None


@pytest.mark.parametrize(("kind", "missing"), [("dedicated", f) for f in REQUIRED] + [
    ("managed", f) for f in MANAGED_REQUIRED] + [("edge", f) for f in EDGE_REQUIRED])
def test_each_required_field(client: Any, runtime: Any, creds: Any, kind: str, missing: str) -> None:
    before = snapshot(runtime)
    r = post(client, Signer(*creds), "/clusters", {k: v for k, v in BODIES[kind].items() if k != missing})
    assert f"'{missing}'" in assert_error(r, 400, "InvalidParameter")["Message"]
    assert snapshot(runtime) == before


@pytest.mark.parametrize(
    ("change", "field", "says"),
    [
        ({"num_of_nodes": 301}, "num_of_nodes", "300"),
        ({"num_of_nodes": True}, "num_of_nodes", "integer"),
        ({"num_of_nodes": "2"}, "num_of_nodes", "integer"),
        ({"snat_entry": "yes"}, "snat_entry", "boolean"),
        ({"name": "-x"}, "name", "letters"),
        ({"master_instance_types": "ecs.n1.medium"}, "master_instance_types", "list"),
        ({"master_instance_types": ["huge"]}, "master_instance_types", "instance type"),
        ({"worker_instance_types": []}, "worker_instance_types", "at least 1"),
        ({"master_system_disk_category": "floppy"}, "master_system_disk_category", "cloud_ssd"),
        ({"worker_system_disk_size": 5}, "worker_system_disk_size", "20"),
        ({"worker_vswitch_ids": []}, "worker_vswitch_ids", "at least 1"),
        ({"login_password": "short"}, "login_password", "8"),
        ({"key_pair": "kp-1"}, "key_pair", "mutually exclusive"),
        ({"login_password": None}, "login_password", "one of key_pair or login_password"),
        ({"master_count": 2}, "master_count", "1, 3 or 5"),
        ({"master_count": 4}, "master_count", "1, 3 or 5"),
        ({"proxy_mode": "ipvs"}, "proxy_mode", "IPVS"),
        ({"proxy_mode": "userspace"}, "proxy_mode", "iptables"),
        ({"kubernetes_version": "1.12.6-aliyun.1"}, "kubernetes_version", "offers Kubernetes 1.34.4"),
        ({"container_cidr": "300.0.0.0/16"}, "container_cidr", "IPv"),
        ({"container_cidr": "172.19.0.0/16"}, "container_cidr", "overlaps service_cidr"),
        ({"node_cidr_mask": "12"}, "node_cidr_mask", "16"),
        ({"node_port_range": "80-90"}, "node_port_range", "30000"),
        ({"cpu_policy": "dynamic"}, "cpu_policy", "static"),
        ({"addons": [{"name": "terway-eniip"}]}, "addons", "terway"),
        ({"addons": [{"version": "1"}]}, "addons", "name"),
        ({"tags": [{"value": "v"}]}, "tags", "key"),
        ({"timeout_mins": 0}, "timeout_mins", "1"),
        ({"disable_rollback": "no"}, "disable_rollback", "boolean"),
        ({"worker_period_unit": "Day"}, "worker_period_unit", "Month"),
    ],
)
def test_bad_fields(client: Any, runtime: Any, creds: Any, change: dict[str, Any], field: str,
                    says: str) -> None:
    before = snapshot(runtime)
    r = post(client, Signer(*creds), "/clusters", {**GOOD, **change})
    msg = assert_error(r, 400, "InvalidParameter")["Message"]
    assert field in msg and says in msg, msg
    assert snapshot(runtime) == before


def test_a_good_body_is_recorded_with_its_meaning(client: Any, runtime: Any, creds: Any) -> None:
    try:
        binary.binary()
    except binary.BinaryMissing as e:
        pytest.skip(str(e))
    runtime.providers["local"] = FakeProvider()  # the body's rules only: no machine is made (workers=0)
    s = Signer(*creds)
    body = {**GOOD, "kubernetes_version": "1.34.4-aliyun.1", "node_cidr_mask": "25", "addons": [{"name": "flannel"}],
            "tags": [{"key": "team", "value": "a"}], "os_type": "Linux", "master_count": 1}
    r = post(client, s, "/clusters", body)
    assert r.status_code == 202, r.text
    cid = r.json()["cluster_id"]
    path = f"/clusters/{cid}"
    d = client.get(path, headers=s.headers("GET", path)).json()
    assert d["cluster_type"] == "Kubernetes" and d["state"] == "launching" and d["size"] == 3
    assert d["current_version"] == "1.34.4" and d["node_cidr_mask"] == "25" and d["proxy_mode"] == "iptables"
    assert d["container_cidr"] == "172.16.0.0/16" and d["tags"] == [{"key": "team", "value": "a"}]
    no_effect = {x["field"]: x["reason"] for x in d["no_effect"]}
    assert {"snat_entry", "master_vswitch_ids", "worker_system_disk_category", "login_password"} <= set(no_effect)
    assert "flannel" in no_effect["addons.flannel"] or "bridge" in no_effect["addons.flannel"]
    assert "§6.3" in no_effect["os_type"]
    assert "Test1234!" not in json.dumps(d)
    # a second Kubernetes cluster of the same name is refused like any other
    assert_error(post(client, s, "/clusters", body), 409, "ErrorClusterNameExists")


@pytest.mark.parametrize(
    ("kind", "change", "field", "says"),
    [
        ("managed", {"num_of_nodes": 0}, "num_of_nodes", "1"),
        ("managed", {"vswitch_ids": []}, "vswitch_ids", "at least 1"),
        ("managed", {"master_count": 3}, "master_count", "1"),
        ("managed", {"proxy_mode": "ipvs"}, "proxy_mode", "IPVS"),
        ("managed", {"login_password": None}, "login_password", "one of key_pair or login_password"),
        ("edge", {"num_of_nodes": 0}, "num_of_nodes", "cloud nodes"),
        ("edge", {"num_of_nodes": 301}, "num_of_nodes", "300"),
        ("edge", {"vswitch_ids": ["a", "b", "c", "d"]}, "vswitch_ids", "at most 3"),
        ("edge", {"endpoint_public_access": False}, "endpoint_public_access", "edge nodes"),
        ("edge", {"proxy_mode": "ipvs"}, "proxy_mode", "IPVS"),
        ("edge", {"kubernetes_version": "1.12.6-aliyunedge.1"}, "kubernetes_version", "offers Kubernetes 1.34.4"),
        ("edge", {"worker_instance_types": ["huge"]}, "worker_instance_types", "instance type"),
        ("edge", {"login_password": None}, "login_password", "one of key_pair or login_password"),
        ("edge", {"profile": "edge"}, "profile", "Default"),  # the marker is case-sensitive, as the SDKs send it
        ("dedicated", {"profile": "Edge"}, "profile", "Default"),  # Edge is a managed cluster's profile only
    ],
)
def test_bad_fields_of_managed_and_edge_clusters(client: Any, runtime: Any, creds: Any, kind: str,
                                                 change: dict[str, Any], field: str, says: str) -> None:
    before = snapshot(runtime)
    msg = assert_error(post(client, Signer(*creds), "/clusters", {**BODIES[kind], **change}), 400, "InvalidParameter")
    assert field in msg["Message"] and says in msg["Message"], msg
    assert snapshot(runtime) == before


def _describe(client: Any, s: Signer, body: dict[str, Any]) -> dict[str, Any]:
    r = post(client, s, "/clusters", body)
    assert r.status_code == 202, r.text
    path = f"/clusters/{r.json()['cluster_id']}"
    out: dict[str, Any] = client.get(path, headers=s.headers("GET", path)).json()
    return out


def test_managed_and_highly_available_bodies_are_recorded(client: Any, runtime: Any, creds: Any) -> None:
    try:
        binary.binary()
    except binary.BinaryMissing as e:
        pytest.skip(str(e))
    runtime.providers["local"] = FakeProvider()  # the body's rules only
    s = Signer(*creds)
    d = _describe(client, s, {**MANAGED, "master_instance_types": ["ecs.n1.large"]})
    assert d["cluster_type"] == "ManagedKubernetes" and d["size"] == 2 and d["master_count"] == 0
    assert "managed" in d["control_plane"] and d["vswitch_ids"] == ["vsw-1"]
    no_effect = {x["field"]: x["reason"] for x in d["no_effect"]}
    assert "no masters" in no_effect["master_instance_types"] and "vswitch_ids" in no_effect
    d = _describe(client, s, {**GOOD, "name": "ha-1", "master_count": 3, "num_of_nodes": 1})
    assert d["cluster_type"] == "Kubernetes" and d["size"] == 4 and d["master_count"] == 3
    assert "load balancer" in d["control_plane"]
    d = _describe(client, s, {**EDGE, "kubernetes_version": "1.34.4-aliyunedge.1"})
    assert d["cluster_type"] == "ManagedKubernetes" and d["profile"] == "Edge" and d["size"] == 1
    assert d["master_count"] == 0 and "is-edge-worker=true" in d["control_plane"] and d["current_version"] == "1.34.4"
    assert {"cloud_monitor_flags", "endpoint_public_access", "vpcid"} <= {x["field"] for x in d["no_effect"]}
    d = _describe(client, s, {k: v for k, v in {**EDGE, "name": "edge-2"}.items() if k != "worker_instance_types"})
    assert d["instance_type"] == "ecs.n1.medium"  # the template-only field has a default
    path = "/clusters"
    listed = {c["cluster_id"]: c for c in client.get(path, headers=s.headers("GET", path)).json()}
    assert {c["cluster_type"] for c in listed.values()} >= {"ManagedKubernetes", "Kubernetes"}


def test_kubernetes_routes_reject_bad_requests(client: Any, runtime: Any, creds: Any, existing_cluster: str) -> None:
    s = Signer(*creds)
    before = snapshot(runtime)
    ok = existing_cluster  # bodies are checked on a cluster that exists; CID does not: 404 whatever the body
    cases = [
        (f"/api/v2/clusters/{ok}", {"count": 0}, 400, "count"),
        (f"/api/v2/clusters/{ok}", {"count": 1}, 400, "vswitch_ids"),
        (f"/api/v2/clusters/{CID}", {"count": 0}, 404, "not found"),
        (f"/api/v2/clusters/{CID}", {"count": 1, "vswitch_ids": ["v"], "worker_data_disk": False,
                                     "worker_instance_types": ["ecs.n1.small"]}, 404, "not found"),
        (f"/api/v2/clusters/{ok}/nodes/remove", {"nodes": []}, 400, "nodes"),
        (f"/api/v2/clusters/{ok}/nodes/remove", {"nodes": ["a", "a"]}, 400, "twice"),
        (f"/api/v2/clusters/{CID}/nodes/remove", {"nodes": ["i-x"]}, 404, "not found"),
        (f"/clusters/{ok}/nodes", {"nodes": ["i-x"], "release_node": "yes"}, 400, "release_node"),
    ]
    for path, body, status, says in cases:
        r = post(client, s, path, body)
        assert r.status_code == status and says in r.json()["Message"], (path, body, r.text)
    path = f"/k8s/{CID}/user_config"
    r = client.get(path, headers=s.headers("GET", path))
    assert_error(r, 404, "ErrorClusterNotFound")
    assert snapshot(runtime) == before


def test_swarm_clusters_have_no_user_kubeconfig(client: Any, runtime: Any, creds: Any) -> None:
    runtime.providers["local"] = FakeProvider()
    s = Signer(*creds)
    r = post(client, s, "/clusters", {"name": "sw", "size": 1})
    cid = r.json()["cluster_id"]
    runtime.clusters.repo.update(cid, state="running")
    path = f"/k8s/{cid}/user_config"
    assert_error(client.get(path, headers=s.headers("GET", path)), 400, "ErrorClusterTypeMismatch")

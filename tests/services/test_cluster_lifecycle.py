"""Issue 3 through clients we did not write: the official SDKs drive a real `opencs server` whose
clusters are real swarms of local nodes; the docker CLI with the cluster's certs checks each node."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.clusterkit import destroy_everything, node_env, require_local_nodes
from tests.conftest import ServerProcess
from tests.sdks import core_call, core_client, sdk291, tea_client

PREFIX, SUBNET = "ocq", "10.220.0.0/24"
PASSWORD = "TestPwd124"


def docker_info(certs: Path, ip: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    out = subprocess.run(
        ["docker", "--tlsverify", "--tlscacert", str(certs / "ca.pem"), "--tlscert", str(certs / "cert.pem"),
         "--tlskey", str(certs / "key.pem"), "-H", f"tcp://{ip}:2376", "info", "--format", "{{json .Swarm}}"],
        capture_output=True, text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def manager_view(certs: Path, ips: list[str]) -> dict[str, Any]:
    """docker info of a manager: only managers know the swarm's node counts."""
    for ip in ips:
        info = docker_info(certs, ip)
        if info.get("ControlAvailable"):
            return info
    raise AssertionError(f"no manager among {ips}")


def wait_task(tea: Any, task_id: str, timeout: float = 180) -> Any:
    end = time.time() + timeout
    while True:
        body = tea.describe_task_info(task_id).body
        if body.state in ("success", "fail"):
            assert body.state == "success", f"{task_id}: {body.error.code if body.error else ''} " \
                                            f"{body.error.message if body.error else ''}"
            return body
        assert time.time() < end, f"{task_id} still {body.state} at {body.current_stage}"
        time.sleep(0.3)


def node_ips(tea: Any, cid: str) -> list[str]:
    nodes = tea.describe_cluster_nodes(cid, __import__("alibabacloud_cs20151215").models
                                       .DescribeClusterNodesRequest()).body.nodes
    return sorted(ip for n in nodes for ip in n.ip_address)


@pytest.fixture
def server(tmp_path: Path) -> Any:
    require_local_nodes()
    data = tmp_path / "data"
    s = ServerProcess(data, env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "1"})
    try:
        yield s.start()
    finally:
        s.kill()
        destroy_everything(data, PREFIX, SUBNET)


@pytest.mark.docker
@pytest.mark.slow
def test_full_cluster_lifecycle_through_official_sdks(server: Any, tmp_path: Path) -> None:
    from aliyunsdkcs.request.v20151215.AttachInstancesRequest import AttachInstancesRequest
    from aliyunsdkcs.request.v20151215.CreateClusterRequest import CreateClusterRequest
    from aliyunsdkcs.request.v20151215.DescribeClusterDetailRequest import DescribeClusterDetailRequest
    from aliyunsdkcs.request.v20151215.ScaleClusterRequest import ScaleClusterRequest

    from opencs.sdk import Client

    core = core_client(server.endpoint, server.ak, server.secret)
    tea = tea_client(server.endpoint, server.ak, server.secret)

    # create (sdk-core 4.8.1) -> running
    created = core_call(core, CreateClusterRequest(), {
        "name": "lifecycle", "size": 2, "instance_type": "ecs.n1.small", "network_mode": "vpc",
        "password": PASSWORD, "data_disk_category": "cloud_ssd", "data_disk_size": 40, "region_id": "cn-beijing",
        "subnet_cidr": "172.28.1.0/24", "need_slb": True, "io_optimized": "true", "release_eip_flag": False})
    cid = created["cluster_id"]
    assert created["task_id"].startswith("T-") and len(created["request_id"]) == 36
    wait_task(tea, created["task_id"])
    req = DescribeClusterDetailRequest()
    req.set_ClusterId(cid)
    detail = core_call(core, req)
    assert detail["state"] == "running" and detail["size"] == 2 and detail["master_url"].startswith("https://")

    # certs (2.9.1 Swarm-era class) -> docker CLI sees one swarm on every node
    req = sdk291("DescribeClusterCertsRequest")()
    req.set_ClusterId(cid)
    certs = core_call(core, req)
    assert certs["key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    cdir = tmp_path / "certs"
    cdir.mkdir()
    for k in ("ca", "cert", "key"):
        (cdir / f"{k}.pem").write_text(certs[k])
    ips = node_ips(tea, cid)
    assert len(ips) == 2
    infos = [docker_info(cdir, ip) for ip in ips]
    assert {i["LocalNodeState"] for i in infos} == {"active"}
    assert len({i["Cluster"]["ID"] for i in infos if i.get("Cluster")}) <= 1  # workers do not show it
    assert manager_view(cdir, ips)["Nodes"] == 2

    # scale to 3 (sdk-core 4.8.1, PUT with the Swarm body) -> 3 managers
    req = ScaleClusterRequest()
    req.set_ClusterId(cid)
    out = core_call(core, req, {"size": 3, "password": PASSWORD, "instance_type": "ecs.n1.small",
                                "ecs_image_id": "opencs_debian12_docker2010_local.vhd"})
    wait_task(tea, out["task_id"])
    ips = node_ips(tea, cid)
    assert len(ips) == 3
    info = manager_view(cdir, ips)
    assert info["Nodes"] == 3 and info["Managers"] == 3

    # remove a node by IP (2.9.1) -> 2 nodes, one manager again
    req = sdk291("DeleteClusterNodeRequest")()
    req.set_ClusterId(cid)
    req.set_Ip(ips[-1])
    req.set_releaseInstance("true")
    out = core_call(core, req)
    wait_task(tea, out["task_id"])
    ips = node_ips(tea, cid)
    assert len(ips) == 2
    assert manager_view(cdir, ips)["Nodes"] == 2

    # attach a free instance (created with the opencs SDK; attached with sdk-core 4.8.1)
    ours = Client(f"http://{server.endpoint}", server.ak, server.secret)
    free = ours.create_instances(1)
    done = ours.wait_task(free["task_id"], timeout=120)
    (iid,) = done["outputs"]["instance_ids"]
    req = AttachInstancesRequest()
    req.set_ClusterId(cid)
    out = core_call(core, req, {"instances": [iid], "password": PASSWORD, "ecs_image_id": "x"})
    assert out["list"] == [{"code": "200", "instanceId": iid, "message": "successful"}]
    wait_task(tea, out["task_id"])
    ips = node_ips(tea, cid)
    assert len(ips) == 3
    assert manager_view(cdir, ips)["Nodes"] == 3

    # reset the attached node (2.9.1) -> it comes back into the same swarm
    req = sdk291("ResetClusterNodeRequest")()
    req.set_ClusterId(cid)
    req.set_InstanceId(iid)
    out = core_call(core, req)
    wait_task(tea, out["task_id"])
    nodes = ours.cluster_nodes(cid)["nodes"]
    assert {n["instance_id"] for n in nodes} >= {iid} and len(nodes) == 3
    attached_ip = next(n["ip_address"][0] for n in nodes if n["instance_id"] == iid)
    assert docker_info(cdir, attached_ip)["LocalNodeState"] == "active"
    assert manager_view(cdir, ips)["Nodes"] == 3

    # version (2.9.1)
    assert core_call(core, sdk291("DescribeApiVersionRequest")())["api_version"] == "2015-12-15"

    # delete (Tea: needs a JSON body back) -> gone, every node released
    r = tea.delete_cluster(cid, __import__("alibabacloud_cs20151215").models.DeleteClusterRequest())
    wait_task(tea, r.body.task_id)
    assert all(c["cluster_id"] != cid for c in ours.list_clusters())
    assert [i for i in ours.list_instances() if i["cluster_id"] == cid] == []

"""Crash safety of Kubernetes clusters (issue 9 item 5): the control plane killed (-9) in the middle of
a scale-out and of a delete; the restarted server resumes each task. Afterwards every node the store
knows is Ready (scale-out) or nothing of the cluster remains — no machine, netns, process (delete).
A kill during create is in test_k8s_control_planes.py (managed)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opencs.sdk import Client
from tests.clusterkit import destroy_everything
from tests.conftest import ServerProcess
from tests.engines.kubernetes.test_k8s_cluster import _ready_nodes, _settled, _wait, kube_env, require_kubernetes_host
from tests.engines.kubernetes.test_k8s_control_planes import _why
from tests.sdks import core_call, core_client

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX, SUBNET = "och", "10.244.0.0/24"
BODY: dict[str, Any] = {
    "cluster_type": "Kubernetes", "name": "k8s-faults", "region_id": "cn-beijing", "num_of_nodes": 1,
    "snat_entry": True, "master_instance_types": ["ecs.n1.medium"], "master_system_disk_category": "cloud_efficiency",
    "master_system_disk_size": 40, "master_vswitch_ids": ["vsw-f"], "worker_instance_types": ["ecs.n1.medium"],
    "worker_system_disk_category": "cloud_efficiency", "worker_system_disk_size": 40,
    "worker_vswitch_ids": ["vsw-f"], "login_password": "Test1234!", "container_cidr": "172.24.0.0/16",
    "service_cidr": "172.25.0.0/20",
}  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    require_kubernetes_host()
    data = tmp_path / "data"
    env = kube_env(PREFIX, SUBNET, 5035, OPENCS_TASK_LEASE_SECONDS="3")  # a killed server's task: soon retaken
    s = ServerProcess(data, env=env)
    try:
        yield s.start()
    finally:
        s.kill()
        destroy_everything(data, PREFIX, SUBNET)


def _machines(server: ServerProcess) -> set[str]:
    return {p.name for p in (server.data_dir / "nodes").glob("i-*")}


def _up(server: ServerProcess, iid: str) -> bool:
    st = server.data_dir / "nodes" / iid / "state.json"
    return st.exists() and json.loads(st.read_text()).get("desired") == "running"


def _settled_or_why(server: ServerProcess, core: Any, cid: str, busy: str) -> dict[str, Any]:
    try:
        return _settled(core, cid, busy, 240)
    except pytest.fail.Exception:
        pytest.fail(f"{cid} still {busy} after 240 s; the server said:\n{_why(server, cid)}")


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)}


def test_kill_during_scale_out_and_delete(server: ServerProcess, tmp_path: Path) -> None:
    from aliyunsdkcs.request.v20151215.CreateClusterRequest import CreateClusterRequest
    from aliyunsdkcs.request.v20151215.DeleteClusterRequest import DeleteClusterRequest
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    core = core_client(server.endpoint, server.ak, server.secret)
    cid = core_call(core, CreateClusterRequest(), BODY)["cluster_id"]
    assert _settled(core, cid, "launching", 240)["state"] == "running"
    ours = Client(server.url, server.ak, server.secret, retries=0)
    before = _machines(server)

    # scale-out by one, killed once the new machine is up (its node not yet joined)
    scale = {"count": 1, "vswitch_ids": ["vsw-f"], "worker_instance_types": ["ecs.n1.medium"],
             "login_password": "Test1234!", "worker_data_disk": False}
    ours.request("POST", f"/api/v2/clusters/{cid}", body=scale)
    new: set[str] = _wait("the new machine up", lambda: {m for m in _machines(server) - before if _up(server, m)},
                          120, 0.1)
    server.kill()
    server.start()
    assert _settled_or_why(server, core, cid, "scaling")["state"] == "running", _why(server, cid)
    assert _machines(server) == before | new  # resumed with the same machine, none made twice
    kc = ours.request("GET", f"/k8s/{cid}/user_config")
    (tmp_path / "kubeconfig").write_text(kc["config"])
    v1 = k8s.CoreV1Api(k8s_config.new_client_from_config(str(tmp_path / "kubeconfig")))
    assert _ready_nodes(v1) == before | new, _why(server, cid)

    # delete, killed once the first machine is gone
    req = DeleteClusterRequest()
    req.set_ClusterId(cid)
    core_call(core, req)
    everything = before | new
    _wait("a machine released", lambda: _machines(server) != everything, 120, 0.05)
    server.kill()
    left_then = _machines(server)
    server.start()
    _wait("cluster deleted", lambda: not _machines(server), 120)
    deadline = time.monotonic() + 30
    while _netns() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _netns(), f"netns left: {_netns()}"
    assert ours.request("GET", "/api/v1/clusters")["clusters"] == [] or all(
        c["cluster_id"] != cid for c in ours.request("GET", "/api/v1/clusters")["clusters"])
    print(json.dumps({"machines_left_at_kill": len(left_then)}))

"""A dedicated Kubernetes cluster through the official SDKs (spec §6), on real local machines.

aliyun-python-sdk-cs 4.8.1 creates it (1 master + 2 workers) and scales it out; the Tea SDK
(ACS3) fetches the kubeconfig and removes a node; the official `kubernetes` client then sees every
node Ready and runs a busybox Deployment behind a ClusterIP Service whose name CoreDNS resolves,
reached from a pod on each worker. Delete leaves no netns, process, cgroup, mount or socket.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from opencs.engines.kubernetes import binary
from opencs.engines.kubernetes.runtime import missing_host_binaries
from opencs.providers.localnet import socket_path
from opencs.sdk import Client
from tests.clusterkit import destroy_everything, node_env
from tests.conftest import ServerProcess
from tests.sdks import core_call, core_client, tea_client

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX, SUBNET = "ocy", "10.233.0.0/24"
BODY: dict[str, Any] = {
    "cluster_type": "Kubernetes", "name": "k8s-e2e", "region_id": "cn-beijing", "num_of_nodes": 2,
    "snat_entry": True, "master_instance_types": ["ecs.n1.medium"], "master_system_disk_category": "cloud_efficiency",
    "master_system_disk_size": 40, "master_vswitch_ids": ["vsw-e2e"], "worker_instance_types": ["ecs.n1.medium"],
    "worker_system_disk_category": "cloud_efficiency", "worker_system_disk_size": 40,
    "worker_vswitch_ids": ["vsw-e2e"], "login_password": "Test1234!", "kubernetes_version": "1.34.4",
    "container_cidr": "172.20.0.0/16", "service_cidr": "172.21.0.0/20", "node_cidr_mask": "25",
    "addons": [{"name": "flannel"}], "disable_rollback": False,
}  # fmt: skip


def _wait(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if result := check():
                return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached in {timeout:.0f}s")
        time.sleep(interval)


def require_kubernetes_host() -> None:
    """Skip without root or the pinned build; fail if the host lacks what bootstrap installs."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, cgroups, mounts)")
    try:
        binary.binary()
    except binary.BinaryMissing as e:
        pytest.skip(str(e))
    if missing := missing_host_binaries():
        pytest.fail(f"host lacks {missing} (scripts/bootstrap.sh installs them)")


def kube_env(prefix: str, subnet: str, registry_port: int, **extra: str) -> dict[str, str]:
    """A Kubernetes test server's environment: its own machines, registry port, fast monitor, no etcd fsync."""
    return {**node_env(prefix, subnet), "OPENCS_MONITOR_INTERVAL": "2", "OPENCS_K8S_ETCD_FSYNC": "0",
            "OPENCS_REGISTRY_PORT": str(registry_port), **extra}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    require_kubernetes_host()
    data = tmp_path / "data"
    env = kube_env(PREFIX, SUBNET, 5033)
    s = ServerProcess(data, env=env)  # loopback: nodes reach the attach paths on the bridge (loops/node_api.py)
    try:
        yield s.start()
    finally:
        s.kill()
        destroy_everything(data, PREFIX, SUBNET)
        sock_dir = socket_path(data / "nodes", "i-probe").parent
        left = sorted(p.name for p in sock_dir.glob("*")) if sock_dir.exists() else []
        with contextlib.suppress(OSError):
            sock_dir.rmdir()
        assert not left, f"sockets left behind: {left}"


def _describe(core: Any, cid: str) -> dict[str, Any]:
    from aliyunsdkcs.request.v20151215.DescribeClusterDetailRequest import DescribeClusterDetailRequest

    r = DescribeClusterDetailRequest()
    r.set_ClusterId(cid)
    out: dict[str, Any] = core_call(core, r)
    return out


def _settled(core: Any, cid: str, busy: str, timeout: float) -> dict[str, Any]:
    d: dict[str, Any] = _wait(f"{cid} past {busy}", lambda: (x := _describe(core, cid))["state"] != busy and x,
                              timeout)
    return d


def _ready_nodes(v1: Any) -> set[str]:
    return {n.metadata.name for n in v1.list_node().items
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])}


def _pod(name: str, node: str, command: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "busybox", "command": command}]}}


def _run_pod(v1: Any, name: str, node: str, command: list[str]) -> str:
    v1.create_namespaced_pod("default", _pod(name, node, command))
    phase = _wait(f"pod {name} done", lambda: (p := v1.read_namespaced_pod(name, "default").status.phase)
                  in ("Succeeded", "Failed") and p, 120)
    out: str = v1.read_namespaced_pod_log(name, "default")
    assert phase == "Succeeded", out
    return out


def _web(apps: Any, v1: Any) -> str:
    """A 3-replica busybox httpd Deployment and its ClusterIP Service; returns the ClusterIP."""
    labels = {"app": "web"}
    serve = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"
    container = {"name": "httpd", "image": "busybox", "command": ["sh", "-c", serve]}
    apps.create_namespaced_deployment("default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"terminationGracePeriodSeconds": 1, "containers": [container]}}}})
    svc = v1.create_namespaced_service("default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]}})
    _wait("3 web replicas available",
          lambda: (apps.read_namespaced_deployment("web", "default").status.available_replicas or 0) >= 3, 120)
    return str(svc.spec.cluster_ip)


def _attach_by_script(tea: Any, ours: Client, server: ServerProcess, cid: str, spare_task: str, v1: Any) -> None:
    """DescribeClusterAttachScripts (Tea): the command, run in the spare machine, joins it; run again
    it is refused."""
    from alibabacloud_cs20151215 import models

    ours.wait_task(spare_task, timeout=120)
    (iid,) = [r["instance_id"] for r in ours.request("GET", "/instances", query={"free": "true"})]
    with sqlite3.connect(server.data_dir / "opencs.db") as db:
        (details,) = db.execute("SELECT details FROM instances WHERE instance_id = ?", (iid,)).fetchone()
    netns = json.loads(details)["netns"]
    opts = json.dumps({"nodeNameStrategy": "hostname", "enabledAddons": ["kube-proxy", "flannel", "coredns"]})
    body = tea.describe_cluster_attach_scripts(cid, models.DescribeClusterAttachScriptsRequest(
        options=opts, expired=int(time.time()) + 600)).body
    cmd = json.loads(body)  # the reply is a bare JSON string (spec §6.10)
    run = subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and f"joined cluster {cid}" in run.stdout, run.stdout + run.stderr
    assert iid in _ready_nodes(v1)
    again = subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", cmd], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 1 and "used already" in again.stderr, again.stdout + again.stderr


def test_kubernetes_cluster_through_official_sdks(server: ServerProcess, tmp_path: Path) -> None:
    from alibabacloud_cs20151215 import models
    from aliyunsdkcs.request.v20151215.CreateClusterRequest import CreateClusterRequest
    from aliyunsdkcs.request.v20151215.DeleteClusterRequest import DeleteClusterRequest
    from aliyunsdkcs.request.v20151215.ScaleOutClusterRequest import ScaleOutClusterRequest
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    core = core_client(server.endpoint, server.ak, server.secret)
    tea = tea_client(server.endpoint, server.ak, server.secret)
    t0 = time.monotonic()
    created = core_call(core, CreateClusterRequest(), BODY)
    cid = created["cluster_id"]
    ours = Client(server.url, server.ak, server.secret, retries=0)
    spare = ours.request("POST", "/instances", body={"count": 1})  # a registered machine, for the attach script
    d = _settled(core, cid, "launching", 300)
    t_create = time.monotonic() - t0
    assert d["state"] == "running", tea.describe_task_info(created["task_id"]).body.to_map()
    assert d["cluster_type"] == "Kubernetes" and d["current_version"] == "1.34.4" and d["size"] == 3
    # opencs's endpoint in front of the apiserver (https://10.233.0.x:6443): it checks revocation
    assert d["master_url"].startswith("https://127.0.0.1:") and not d["master_url"].endswith(":6443")
    assert d["container_cidr"] == "172.20.0.0/16" and d["node_cidr_mask"] == "25"
    assert {"snat_entry", "worker_vswitch_ids", "addons.flannel"} <= {x["field"] for x in d["no_effect"]}

    # the kubeconfig through the Tea SDK (ACS3): the caller's own certificate, cluster-admin as owner
    kc = tea.describe_cluster_user_kubeconfig(
        cid, models.DescribeClusterUserKubeconfigRequest(temporary_duration_minutes=60)).body
    doc = yaml.safe_load(kc.config)
    assert doc["clusters"][0]["cluster"]["server"] == d["master_url"] and kc.expiration
    kc_file = tmp_path / "kubeconfig"
    kc_file.write_text(kc.config)
    api = k8s_config.new_client_from_config(str(kc_file))
    v1, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    nodes = {n.metadata.name: n for n in v1.list_node().items}
    assert len(nodes) == 3 and _ready_nodes(v1) == set(nodes)
    workers = sorted(n for n, o in nodes.items() if "node-role.kubernetes.io/worker" in o.metadata.labels)
    assert len(workers) == 2

    # GET /certs (DescribeClusterCerts, gone from the SDKs): the owner's recorded cert, also as a kubeconfig (§6.11)
    certs = ours.request("GET", f"/clusters/{cid}/certs")
    listed = ours.request("GET", f"/clusters/{cid}/certs/states")
    states = {c["serial"]: c["state"] for c in listed["certs"]}
    assert states.get(certs["serial"]) == "valid", states
    (tmp_path / "certs-kubeconfig").write_text(certs["config"])
    by_certs = k8s.CoreV1Api(k8s_config.new_client_from_config(str(tmp_path / "certs-kubeconfig")))
    assert {n.metadata.name for n in by_certs.list_node().items} == set(nodes)

    ip = _web(apps, v1)
    for i, node in enumerate(workers):  # the name resolves (CoreDNS) and the ClusterIP answers on every worker
        out = _run_pod(v1, f"client-{i}", node, [
            "sh", "-c", "nslookup web.default.svc.cluster.local && "
                        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 web.default.svc.cluster.local 80"])
        assert ip in out and out.rstrip().endswith(tuple(p.metadata.name for p in v1.list_namespaced_pod(
            "default", label_selector="app=web").items)), out

    # scale-out by one (sdk-core): a fourth node, Ready, takes pods
    t1 = time.monotonic()
    req = ScaleOutClusterRequest()
    req.set_ClusterId(cid)
    core_call(core, req, {"count": 1, "vswitch_ids": ["vsw-e2e"], "worker_data_disk": False,
                          "worker_instance_types": ["ecs.n1.medium"], "login_password": "Test1234!"})
    assert _settled(core, cid, "scaling", 240)["state"] == "running"
    t_scale = time.monotonic() - t1
    new = (_ready_nodes(v1) - set(nodes)).pop()
    assert "ok" in _run_pod(v1, "on-new", new, ["echo", "ok"])

    # remove it again (Tea RemoveClusterNodes): cordoned, drained, deleted, released
    tea.remove_cluster_nodes(cid, models.RemoveClusterNodesRequest(nodes=[new], release_node=True, drain_node=True))
    assert _settled(core, cid, "scaling", 180)["state"] == "running"
    assert new not in {n.metadata.name for n in v1.list_node().items}
    assert not (server.data_dir / "nodes" / new).exists()

    _attach_by_script(tea, ours, server, cid, spare["task_id"], v1)

    req = DeleteClusterRequest()
    req.set_ClusterId(cid)
    core_call(core, req)
    _wait("cluster deleted", lambda: not [i for i in (server.data_dir / "nodes").glob("i-*")], 120)
    print(json.dumps({"create_to_running_s": round(t_create, 1), "scale_out_s": round(t_scale, 1)}))

"""A Kubernetes worker node on an SSH-registered host (issue 9), through the API of a real server.

The "remote host" is a machine of the server's own (POST /instances: on the cluster's bridge, with
its dockerd) running an sshd (tests/providers/sshhost.py); it shares this machine's filesystem, so
the node must keep to its own directory, mount namespace and cgroup, as on a real separate host.
It is registered by SSH, attached to a 1-master cluster (probed, then booted over SSH: containerd,
kubelet, kube-proxy), becomes Ready, runs a pod that a pod on the master reaches, and once removed
leaves nothing on the host: no process, cgroup, mount, file, route, link or iptables rule; attached
again, the cluster's delete forgets the host and leaves it as clean.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opencs.providers.base import Instance, InstanceState
from opencs.providers.sshnode import NODE_ROOT
from opencs.sdk import Client, OpencsError
from tests.clusterkit import destroy_everything
from tests.conftest import ServerProcess
from tests.engines.kubernetes.test_k8s_cluster import _ready_nodes, _wait, kube_env, require_kubernetes_host
from tests.providers.sshhost import SshHost, new_tmp, skip_reason

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX, SUBNET = "okq", "10.189.0.0/24"  # this module's own claim
BODY: dict[str, Any] = {
    "cluster_type": "Kubernetes", "name": "k8s-ssh", "region_id": "cn-beijing", "num_of_nodes": 0,
    "master_instance_types": ["ecs.n1.medium"], "master_system_disk_category": "cloud_efficiency",
    "master_system_disk_size": 40, "master_vswitch_ids": ["vsw-s"], "worker_instance_types": ["ecs.n1.medium"],
    "worker_system_disk_category": "cloud_efficiency", "worker_system_disk_size": 40,
    "worker_vswitch_ids": ["vsw-s"], "login_password": "Test1234!", "container_cidr": "172.26.0.0/16",
    "service_cidr": "172.27.0.0/20", "snat_entry": True,
}  # fmt: skip


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    require_kubernetes_host()
    if reason := skip_reason():
        pytest.skip(reason)
    data = tmp_path / "data"
    s = ServerProcess(data, env=kube_env(PREFIX, SUBNET, 5083))
    try:
        yield s.start()
    finally:
        s.kill()
        destroy_everything(data, PREFIX, SUBNET)


def _in_host(netns: str, *argv: str) -> str:
    """A command in the host's network namespace (the host's own view)."""
    return subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, check=True).stdout


def _firewall(netns: str) -> list[str]:
    rules = []
    for ipt in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle", "raw"):
            rules += [f"{ipt} {table} {r}" for r in _in_host(netns, ipt, "-t", table, "-S").splitlines()]
    return sorted(rules)


def _left_on_host(iid: str, netns: str, firewall_before: list[str]) -> list[str]:
    """What a node `iid` left on the host: processes, cgroups, mounts, files, routes, links, rules."""
    cg, d = f"opencs-{iid}", NODE_ROOT / iid
    left = [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/{cg}")]
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if f"/{cg}" in (proc / "cgroup").read_text():
                left.append(f"process {proc.name}: {(proc / 'comm').read_text().strip()}")
            if any(str(d) in line for line in (proc / "mountinfo").read_text().splitlines()):
                left.append(f"a mount under {d} in the mount namespace of {proc.name}")
    left += [f"file {d}"] if d.exists() else []
    left += [f"directory {NODE_ROOT}"] if NODE_ROOT.exists() else []  # no other node on this host
    left += [f"route {r}" for r in _in_host(netns, "ip", "route", "show", "proto", "188").splitlines()]
    left += [f"link {line}" for line in _in_host(netns, "ip", "-o", "link", "show").splitlines()
             if f"ocb{iid[2:14]}" in line]
    fw = _firewall(netns)
    left += [f"rule {r}" for r in sorted(set(fw) - set(firewall_before))]
    return left


def _pod(name: str, node: str, command: list[str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "main", "image": "busybox", "command": command}]}}


def test_a_worker_node_over_ssh(server: ServerProcess, tmp_path: Path) -> None:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    ours = Client(server.url, server.ak, server.secret, retries=0)
    tmp = new_tmp()
    host: SshHost | None = None
    ssh_iid = cid = ""
    try:
        created = ours.request("POST", "/clusters", body=BODY)
        cid = created["cluster_id"]
        spare = ours.request("POST", "/instances", body={"count": 1})  # the machine the "remote host" is
        ours.wait_task(spare["task_id"], timeout=120)
        (machine,) = [r["instance_id"] for r in ours.request("GET", "/instances", query={"free": "true"})]
        with sqlite3.connect(server.data_dir / "opencs.db") as db:
            (raw,) = db.execute("SELECT details, private_ip FROM instances WHERE instance_id = ?",
                                (machine,)).fetchall()
        details, ip = json.loads(raw[0]), raw[1]
        netns = details["netns"]
        host = SshHost(tmp, owns_node=False, prefix=PREFIX, bridge=f"{PREFIX}0", subnet=SUBNET)
        host.node = Instance(machine, "local", ip, InstanceState.RUNNING, f"unix://{details['unix_socket']}",
                             details=details)
        host.start()
        reg = ours.request("POST", "/instances/register", body={
            "ssh": f"root@{ip}", "private_key": host.root_key_pem, "remote_socket": host.engine_socket})
        ssh_iid = reg["instance_id"]
        ours.wait_task(created["task_id"], timeout=300)
        kc = ours.request("GET", f"/k8s/{cid}/user_config")
        (tmp_path / "kubeconfig").write_text(kc["config"])
        v1 = k8s.CoreV1Api(k8s_config.new_client_from_config(str(tmp_path / "kubeconfig")))
        (master,) = _ready_nodes(v1)

        # the owner has not turned IP forwarding on: refused, naming it, nothing installed
        _in_host(netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        with pytest.raises(OpencsError) as e:
            ours.request("POST", f"/clusters/{cid}/attach", body={"instances": [ssh_iid]})
        assert e.value.status == 412 and "it lacks: net.ipv4.ip_forward=1" in e.value.message, e.value.message
        assert not (NODE_ROOT / ssh_iid).exists()
        _in_host(netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        firewall_before = _firewall(netns)

        t0 = time.monotonic()
        tid = ours.request("POST", f"/clusters/{cid}/attach", body={"instances": [ssh_iid]})["task_id"]
        ours.wait_task(tid, timeout=300)
        t_attach = time.monotonic() - t0
        assert _ready_nodes(v1) == {master, ssh_iid}
        node = v1.read_node(ssh_iid)
        assert node.status.addresses[0].address == ip and "node-role.kubernetes.io/worker" in node.metadata.labels
        # every process of the node is in its own cgroup, its mounts in its own mount namespace
        assert Path(f"/sys/fs/cgroup/pids/opencs-{ssh_iid}").is_dir()
        assert not [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(NODE_ROOT) in m]

        # a pod on the SSH node, reached from a pod on the master (pod routes both ways)
        serve = "mkdir -p /www && echo from-ssh-node > /www/index.html && exec httpd -f -p 8080 -h /www"
        v1.create_namespaced_pod("default", _pod("web", ssh_iid, ["sh", "-c", serve]))
        pod_ip = _wait("the pod on the SSH node running", lambda: (p := v1.read_namespaced_pod("web", "default"))
                       .status.phase == "Running" and p.status.pod_ip, 120)
        get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {pod_ip} 8080"
        v1.create_namespaced_pod("default", _pod("client", master, ["sh", "-c", get]))
        phase = _wait("the client pod done", lambda: (p := v1.read_namespaced_pod("client", "default")
                                                      .status.phase) in ("Succeeded", "Failed") and p, 120)
        out = v1.read_namespaced_pod_log("client", "default")
        assert phase == "Succeeded" and "from-ssh-node" in out, out

        # removed (kept registered): nothing of the node is left on the host
        t1 = time.monotonic()
        tid = ours.request("POST", f"/api/v2/clusters/{cid}/nodes/remove",
                           body={"nodes": [ssh_iid], "release_node": False, "drain_node": True})["task_id"]
        ours.wait_task(tid, timeout=180)
        t_remove = time.monotonic() - t1
        assert ssh_iid not in {n.metadata.name for n in v1.list_node().items}
        assert _left_on_host(ssh_iid, netns, firewall_before) == []
        (row,) = [r for r in ours.request("GET", "/instances") if r["instance_id"] == ssh_iid]
        assert row["state"] == "running" and not row.get("cluster_id"), row  # a Docker host again

        # attached again, then the cluster deleted: the host is forgotten, and clean
        tid = ours.request("POST", f"/clusters/{cid}/attach", body={"instances": [ssh_iid]})["task_id"]
        ours.wait_task(tid, timeout=300)
        assert _ready_nodes(v1) == {master, ssh_iid}
        t2 = time.monotonic()
        ours.wait_task(ours.request("DELETE", f"/clusters/{cid}")["task_id"], timeout=180)
        t_delete = time.monotonic() - t2
        assert ssh_iid not in {r["instance_id"] for r in ours.request("GET", "/instances")}
        assert _left_on_host(ssh_iid, netns, firewall_before) == []
        print(json.dumps({"attach_s": round(t_attach, 1), "remove_s": round(t_remove, 1),
                          "delete_s": round(t_delete, 1)}))
    finally:
        if ssh_iid:  # forgotten (its node, if any, removed from the host first)
            with contextlib.suppress(Exception):
                ours.wait_task(ours.request("DELETE", f"/instances/{ssh_iid}")["task_id"], timeout=120)
            _kill_node(ssh_iid)
        problems = host.close() if host is not None else []
        shutil.rmtree(tmp, ignore_errors=True)
        if cid:
            with contextlib.suppress(Exception):
                ours.wait_task(ours.request("DELETE", f"/clusters/{cid}")["task_id"], timeout=120)
        assert problems == [], problems


def _kill_node(iid: str) -> None:
    """After a failure: whatever of the node opencs did not remove, by its ids (cgroup, directory)."""
    pids = Path(f"/sys/fs/cgroup/pids/opencs-{iid}")
    for _ in range(50):
        procs = [int(p) for f in pids.rglob("cgroup.procs") for p in f.read_text().split()] if pids.exists() else []
        if not procs:
            break
        for pid in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for cg in Path("/sys/fs/cgroup").glob(f"*/opencs-{iid}"):
        for d in sorted((p for p in cg.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            cg.rmdir()
    shutil.rmtree(NODE_ROOT / iid, ignore_errors=True)

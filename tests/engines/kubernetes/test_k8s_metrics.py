"""Usage and container exits of a real Kubernetes cluster (issue 12 items 2 and 4), one master that
is its only node: opencs reads the kubelet (`/stats/summary`, `/pods`) as `opencs:monitor` and the
pods' status from the apiserver.

- A pod that burns CPU shows at GET /metrics/containers with its cluster, namespace (project), pod
  (service id), container and node, and its CPU seconds grow between two passes; the node's figures
  are there too, its filesystem included.
- A container OOM-killed under a 16 MiB limit and one that exits 3 (and is restarted) show as
  events of GET /clusters/{id}/events with their reason and exit code, each termination once.

OPENCS_TEST_K8S_METRICS_TYPE=ManagedKubernetes runs it on a managed cluster instead (its control
plane in a machine that is no node, one worker). OPENCS_RECORD_KUBELET=<dir> writes the kubelet's
replies (through the apiserver's node proxy) there: that is how tests/fixtures/kubelet/ was recorded
for the unit tests of the mapping.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from opencs.sdk import Client
from tests.clusterkit import destroy_everything
from tests.conftest import ServerProcess
from tests.engines.kubernetes.test_k8s_cluster import BODY, _settled, _wait, kube_env, require_kubernetes_host
from tests.engines.kubernetes.test_k8s_control_planes import MANAGED
from tests.sdks import core_call, core_client

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX, SUBNET = "okm", "10.208.0.0/24"  # no other test uses them
BODIES = {"Kubernetes": {**BODY, "name": "usage", "num_of_nodes": 0},  # the master is the one node
          "ManagedKubernetes": {**MANAGED, "name": "usage"}}  # one worker
TOLERATE_MASTER = [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    require_kubernetes_host()
    data = tmp_path / "data"
    s = ServerProcess(data, env=kube_env(PREFIX, SUBNET, 5061, OPENCS_USAGE_INTERVAL="2",
                                         OPENCS_CONTAINER_EVENTS_INTERVAL="2"))
    try:
        yield s.start(timeout=90)
    finally:
        s.kill()
        destroy_everything(data, PREFIX, SUBNET)


def _pod(name: str, command: str, restart: str, memory: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "busybox", "command": ["sh", "-c", command]}
    if memory:
        container["resources"] = {"limits": {"memory": memory}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 1, "tolerations": TOLERATE_MASTER,
                     "containers": [container]}}


def _samples(server: ServerProcess, cid: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    r = httpx.get(f"{server.url}/metrics/containers", params={"cluster": cid}, timeout=10, trust_env=False)
    assert r.status_code == 200, r.text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _one(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    got = [v for lv, v in samples.get(name, []) if all(lv.get(k) == x for k, x in labels.items())]
    assert len(got) <= 1, (name, labels, got)
    return got[0] if got else None


def _record(v1: Any, node: str, out: Path) -> None:
    """The kubelet's two replies (through the apiserver's node proxy) and the node's pods as the
    apiserver lists them."""
    out.mkdir(parents=True, exist_ok=True)
    replies = {name: v1.connect_get_node_proxy_with_path(node, path, _preload_content=False).data
               for path, name in (("stats/summary", "stats-summary.json"), ("pods", "kubelet-pods.json"))}
    replies["apiserver-pods.json"] = v1.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}",
                                                                    _preload_content=False).data
    for name, data in replies.items():
        out.joinpath(name).write_text(json.dumps(json.loads(data), indent=1) + "\n")


def test_kubernetes_usage_and_exits(server: ServerProcess, tmp_path: Path) -> None:
    from aliyunsdkcs.request.v20151215.CreateClusterRequest import CreateClusterRequest
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    core = core_client(server.endpoint, server.ak, server.secret)
    ours = Client(server.url, server.ak, server.secret, retries=0)
    body = BODIES[os.environ.get("OPENCS_TEST_K8S_METRICS_TYPE", "Kubernetes")]
    cid = core_call(core, CreateClusterRequest(), body)["cluster_id"]
    d = _settled(core, cid, "launching", 300)
    assert d["state"] == "running", d
    (node,) = [n["instance_id"] for n in ours.request("GET", f"/clusters/{cid}/nodes")["nodes"]]
    kc = tmp_path / "kubeconfig"
    kc.write_text(ours.kubeconfig(cid).config)
    v1 = k8s.CoreV1Api(k8s_config.new_client_from_config(str(kc)))

    v1.create_namespaced_pod("default", _pod("burn", "while :; do :; done", "Always"))
    v1.create_namespaced_pod("default", _pod("oom", "dd if=/dev/zero of=/dev/null bs=64M count=1", "Never", "16Mi"))
    v1.create_namespaced_pod("default", _pod("fail", "sleep 1; exit 3", "Always"))
    _wait("burn running", lambda: v1.read_namespaced_pod("burn", "default").status.phase == "Running", 120)

    # usage: the burner's CPU seconds at /metrics/containers, with the spec's labels, growing
    cpu = "opencs_container_cpu_usage_seconds_total"
    labels = {"aliyun_cluster": cid, "aliyun_project": "default", "aliyun_service_id": "burn", "container": "main",
              "node": node}
    first = _wait("burn's CPU at /metrics/containers", lambda: _one(_samples(server, cid), cpu, **labels), 60)
    t0 = time.monotonic()
    second = _wait("burn's CPU grows", lambda: (v := _one(_samples(server, cid), cpu, **labels)) and v > first and v,
                   30)
    assert second - first > 0.2 * (time.monotonic() - t0 - 4), (first, second)  # it burns most of a core
    s = _samples(server, cid)
    assert (_one(s, "opencs_container_memory_working_set_bytes", **labels) or 0) > 0
    assert _one(s, "opencs_container_filesystem_usage_bytes", **labels) is not None
    (dns,) = [lv for lv, _ in s[cpu] if lv["aliyun_project"] == "kube-system"]  # CoreDNS: every container
    # what the summary lacks here, from the container's cgroup and its pod's netns (talks to the apiserver)
    assert _one(s, "opencs_container_memory_limit_bytes", **dns) == 170 * 2**20
    assert (_one(s, "opencs_container_network_receive_bytes_total", **dns) or 0) > 0
    node_labels = {"aliyun_cluster": cid, "node": node}
    assert (_one(s, "opencs_node_cpu_usage_seconds_total", **node_labels) or 0) > second  # the burner is in it
    assert (_one(s, "opencs_node_memory_usage_bytes", **node_labels) or 0) > 0
    assert (_one(s, "opencs_node_filesystem_capacity_bytes", **node_labels) or 0) > 0
    assert (_one(s, "opencs_node_network_transmit_bytes_total", **node_labels) or 0) > 0
    assert _one(s, "opencs_usage_node_unreadable", **node_labels) is None

    # exits: the OOM kill and the exit code, as events, each once
    def exits() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = ours.request("GET", f"/clusters/{cid}/events",
                                                 query={"kind": "container", "limit": "100"})["events"]
        return got

    def both() -> list[dict[str, Any]] | None:
        ev = exits()
        return ev if {"oom/main", "fail/main"} <= {e["message"].split(" ", 1)[0] for e in ev} else None

    ev = _wait("the OOM kill and the exit as events", both, 90)
    (oom,) = [e for e in ev if e["message"].startswith("oom/main ")]
    assert oom["reason"] == "ContainerOOMKilled" and oom["project"] == "default", oom
    assert "exit code 137" in oom["message"] and "OOM killer" in oom["message"] and node in oom["message"], oom
    fail = [e for e in ev if e["message"].startswith("fail/main ")][0]
    assert fail["reason"] == "ContainerDied" and "exit code 3 (Error)" in fail["message"], fail
    time.sleep(6)  # three more passes of the watcher: nothing seen twice
    again = exits()
    assert [e["id"] for e in again if e["message"].startswith("oom/main ")] == [oom["id"]], again
    restarts = int(v1.read_namespaced_pod("fail", "default").status.container_statuses[0].restart_count)
    fails = [e for e in again if e["message"].startswith("fail/main ")]
    assert 1 <= len(fails) <= restarts + 1, (fails, restarts)  # one per termination, none twice
    if record := os.environ.get("OPENCS_RECORD_KUBELET"):
        _record(v1, node, Path(record))

"""Usage of a Kubernetes node and its containers (opencs.engines.usage), from its kubelet.

Two calls per node and pass on the kubelet's authenticated port, as `opencs:monitor` (monitor.py):
`/stats/summary` gives each running container's CPU, memory and writable layer; `/pods` names each
container's runtime id and its pod's QoS class, which place its cgroup on this host —
`<machine cgroup>/kubepods[/burstable|/besteffort]/pod<uid>/<container id>` (kubelet's cgroupfs
driver under the machine's cgroupRoot). What the summary leaves out comes from there, as the Swarm
reader reads it: block I/O always; the memory limit and the network bytes (of the pod's network
namespace, which its containers share) when the summary has none — the kubelet's cAdvisor here sees
neither the containers' limits nor the pods' network namespaces.

The node's own figures come from the machine's cgroup and network namespace (as for Swarm): the
kubelet runs in the machine's namespaces but not in a cgroup namespace of its own, so its summary's
node CPU, memory and interfaces are those of the whole host (recorded: tests/fixtures/kubelet/); its
node filesystem figures are the node's (the machines' state lives on the host's filesystem).

Labels: a container's project is its pod's namespace, its service id the pod's name, its name the
container's name in the pod.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from opencs.engines import cgroupv1
from opencs.engines.apps import EngineUnreachable
from opencs.engines.kubernetes.monitor import ClientsByCluster, MonitorAccess, kubelet_url
from opencs.engines.usage import ContainerUsage, NodeRef, NodeUsage, Usage

TIMEOUT = 10.0  # seconds; a node that does not answer must not hold up the others for long
QOS_DIRS = {"Guaranteed": "", "Burstable": "burstable", "BestEffort": "besteffort"}


def _int(d: dict[str, Any] | None, key: str) -> int:
    return int((d or {}).get(key) or 0)


def _net(net: dict[str, Any] | None) -> tuple[int, int]:
    """(rx, tx) over the pod's or node's interfaces (the summary leaves loopback out)."""
    if not net:
        return 0, 0
    faces = [i for i in net.get("interfaces") or [] if i.get("name") != "lo"] or [net]
    return sum(_int(i, "rxBytes") for i in faces), sum(_int(i, "txBytes") for i in faces)


def runtime_ids(pods: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    """Pod uid -> (QoS class, container name -> runtime id without its `containerd://`) from `/pods`."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for p in pods.get("items") or []:
        status = p.get("status") or {}
        ids = {c["name"]: str(c.get("containerID") or "").split("://", 1)[-1]
               for c in [*(status.get("containerStatuses") or []), *(status.get("initContainerStatuses") or [])]
               if c.get("name") and c.get("containerID")}
        out[str((p.get("metadata") or {}).get("uid", ""))] = (str(status.get("qosClass") or ""), ids)
    return out


def container_cgroup(machine_cgroup: str, qos: str, pod_uid: str, container_id: str) -> str:
    qos_dir = QOS_DIRS.get(qos, qos.lower())
    return "/".join(x for x in (machine_cgroup, "kubepods", qos_dir, f"pod{pod_uid}", container_id) if x)


def _container(c: dict[str, Any], pod_net: dict[str, Any] | None, group: str | None, root: Path,
               proc: Path) -> Usage | None:
    """One container of the summary; `group`: its cgroup on this host (None: not here)."""
    cpu, mem = c.get("cpu") or {}, c.get("memory") or {}
    if "usageCoreNanoSeconds" not in cpu or "workingSetBytes" not in mem:
        return None  # started or ended between two samples of the kubelet
    ws = _int(mem, "workingSetBytes")
    limit = ws + _int(mem, "availableBytes") if "availableBytes" in mem else None
    rx, tx = _net(pod_net)
    rd = wr = 0
    if group is not None:
        rd, wr = cgroupv1.blkio_bytes(group, root)
        if limit is None:
            limit = cgroupv1.memory_limit(group, root)
        if pod_net is None:
            rx, tx = cgroupv1.net_bytes(cgroupv1.first_pid(group, root), proc)
    rootfs = c.get("rootfs")
    return Usage(
        cpu_seconds=_int(cpu, "usageCoreNanoSeconds") / 1e9, memory_bytes=_int(mem, "usageBytes"),
        memory_working_set_bytes=ws, memory_limit_bytes=limit, net_rx_bytes=rx, net_tx_bytes=tx,
        blkio_read_bytes=rd, blkio_write_bytes=wr,
        fs_used_bytes=_int(rootfs, "usedBytes") if rootfs else None,
        fs_capacity_bytes=_int(rootfs, "capacityBytes") if rootfs else None,
    )  # fmt: skip


def _node(node: NodeRef, summary: dict[str, Any], root: Path, proc: Path) -> Usage | None:
    if node.cgroup is None:
        return None
    try:
        own = cgroupv1.usage(node.cgroup, net_pid=cgroupv1.first_pid(node.cgroup, root), root=root, proc=proc)
    except OSError:
        return None  # the machine stopped between the kubelet's answer and now
    fs = (summary.get("node") or {}).get("fs")
    return replace(own, fs_used_bytes=_int(fs, "usedBytes"), fs_capacity_bytes=_int(fs, "capacityBytes")) if fs else own


def node_usage(node: NodeRef, summary: dict[str, Any], pods: dict[str, Any],
               cgroup_root: Path = cgroupv1.CGROUP_ROOT, proc: Path = cgroupv1.PROC) -> NodeUsage:
    """The mapping of one kubelet's two replies, with what the cgroups of this host add."""
    local = node.cgroup is not None and cgroupv1.exists(node.cgroup, cgroup_root)
    ids = runtime_ids(pods)
    containers: list[ContainerUsage] = []
    for p in summary.get("pods") or []:
        ref = p.get("podRef") or {}
        uid = str(ref.get("uid", ""))
        qos, by_name = ids.get(uid, ("", {}))
        for c in p.get("containers") or []:
            cid = by_name.get(c["name"], "")
            group = container_cgroup(node.cgroup, qos, uid, cid) if local and cid and node.cgroup else None
            if (usage := _container(c, p.get("network"), group, cgroup_root, proc)) is not None:
                containers.append(ContainerUsage(cid or f"{uid}/{c['name']}", c["name"], str(ref.get("namespace", "")),
                                                 str(ref.get("name", "")), usage))
    own = _node(node, summary, cgroup_root, proc) if local else None
    return NodeUsage(node.instance_id, own, containers, "cgroup" if local else "kubelet", node.address)


class KubernetesUsageReader:
    """One kept HTTPS client per cluster (the kubelets of a cluster share its CA and our identity)."""

    def __init__(self, access: MonitorAccess, cgroup_root: Path = cgroupv1.CGROUP_ROOT,
                 proc: Path = cgroupv1.PROC) -> None:
        self.access = access
        self.cgroup_root, self.proc = cgroup_root, proc
        self._clients = ClientsByCluster(access, lambda ident: httpx.Client(verify=ident.ctx, timeout=TIMEOUT,
                                                                            trust_env=False))

    def get(self, node: NodeRef, path: str) -> dict[str, Any]:
        """One kubelet call; EngineUnreachable (and a fresh client next time) if it fails."""
        if not node.address or not node.cluster_id:
            raise EngineUnreachable(f"{node.instance_id}: no address or cluster to reach its kubelet")
        try:
            r = self._clients.get(node.cluster_id).get(kubelet_url(node.address, path))
        except httpx.HTTPError as e:
            self._clients.drop(node.cluster_id)
            raise EngineUnreachable(f"kubelet of {node.instance_id}: {e or type(e).__name__}") from None
        if r.status_code in (401, 403):
            self._clients.drop(node.cluster_id)
            self.access.forget(node.cluster_id)  # RBAC ensured again on the next pass
        if r.status_code != 200:
            raise EngineUnreachable(f"kubelet of {node.instance_id}: GET {path}: HTTP {r.status_code}: {r.text[:200]}")
        out: dict[str, Any] = r.json()
        return out

    def retain(self, nodes: Sequence[NodeRef]) -> None:
        clusters = {n.cluster_id for n in nodes if n.cluster_id}
        self._clients.retain(clusters)
        self.access.retain(clusters)

    def read(self, node: NodeRef) -> NodeUsage:
        summary = self.get(node, "/stats/summary")
        pods = self.get(node, "/pods")
        return node_usage(node, summary, pods, self.cgroup_root, self.proc)

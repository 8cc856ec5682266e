"""Usage of containers and nodes read from cgroup v1 files and /proc (a fake tree laid out like the
kernel's), and its Prometheus exposition with the spec's label names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from opencs.api import usage_metrics
from opencs.engines import cgroupv1
from opencs.engines.apps import EngineUnreachable
from opencs.engines.usage import ContainerUsage, NodeRef, NodeUsage, Usage
from opencs.services.usage import ClusterUsage, UsageService, UsageSnapshot

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier
    lo: 999 9 0 0 0 0 0 0 999 9 0 0 0 0 0 0
  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0
  eth1:  500 5 0 0 0 0 0 0 50 1 0 0 0 0 0 0
"""


BLKIO = "8:0 Read 4096\n8:0 Write 8192\n8:16 Read 1\n8:0 Total 12288\nTotal 12289\n"


def fake_group(root: Path, rel: str, *, cpu_ns: int, mem: int, inactive: int, limit: int, pid: int | None,
               blkio: str | None = BLKIO) -> None:
    for ctl in ("cpuacct", "memory", "pids", "blkio"):
        (root / ctl / rel).mkdir(parents=True, exist_ok=True)
    (root / "cpuacct" / rel / "cpuacct.usage").write_text(f"{cpu_ns}\n")
    (root / "memory" / rel / "memory.usage_in_bytes").write_text(f"{mem}\n")
    (root / "memory" / rel / "memory.limit_in_bytes").write_text(f"{limit}\n")
    (root / "memory" / rel / "memory.stat").write_text(f"cache 10\nrss 20\ntotal_inactive_file {inactive}\n")
    (root / "pids" / rel / "cgroup.procs").write_text(f"{pid}\n7\n" if pid else "")
    if blkio is not None:
        (root / "blkio" / rel / "blkio.throttle.io_service_bytes_recursive").write_text(blkio)


def test_cgroup_usage_reads_every_figure(tmp_path: Path) -> None:
    root, proc = tmp_path / "cg", tmp_path / "proc"
    fake_group(root, "ocsn1/abc", cpu_ns=2_500_000_000, mem=300, inactive=100, limit=(1 << 63) - 4096, pid=42)
    (proc / "42" / "net").mkdir(parents=True)
    (proc / "42" / "net" / "dev").write_text(NET_DEV)
    pid = cgroupv1.first_pid("ocsn1/abc", root)
    assert pid == 42
    u = cgroupv1.usage("ocsn1/abc", net_pid=pid, root=root, proc=proc)
    assert u == Usage(cpu_seconds=2.5, memory_bytes=300, memory_working_set_bytes=200, memory_limit_bytes=None,
                      net_rx_bytes=1500, net_tx_bytes=2050, blkio_read_bytes=4097, blkio_write_bytes=8192)


def test_cgroup_usage_without_blkio_or_processes(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    fake_group(root, "n", cpu_ns=0, mem=10, inactive=50, limit=1 << 30, pid=None, blkio=None)
    u = cgroupv1.usage("n", net_pid=cgroupv1.first_pid("n", root), root=root, proc=tmp_path / "proc")
    assert (u.memory_working_set_bytes, u.memory_limit_bytes, u.net_rx_bytes, u.blkio_read_bytes) == (0, 1 << 30, 0, 0)
    with pytest.raises(OSError):
        cgroupv1.usage("gone", root=root)


class FakeReader:
    def __init__(self) -> None:
        self.calls: list[NodeRef] = []
        self.retained: list[list[str]] = []

    def retain(self, nodes: list[NodeRef]) -> None:
        self.retained.append([n.instance_id for n in nodes])

    def read(self, node: NodeRef) -> NodeUsage:
        self.calls.append(node)
        if node.instance_id == "i-dead":
            raise EngineUnreachable("connection refused")
        u = Usage(1.5, 100, 80, None, 1, 2, 3, 4)
        return NodeUsage(node.instance_id, u, [ContainerUsage("c1" * 32, "web_app.1.x", "web", "web_app", u)])


class Rows:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows
        self.reads = 0

    def live(self) -> list[Any]:
        self.reads += 1
        return self.rows

    def all(self) -> list[Any]:
        self.reads += 1
        return self.rows


def row(**kw: Any) -> Any:
    return type("Row", (), {"private_ip": "", **kw})


def test_collect_reads_running_members_of_live_clusters_only() -> None:
    clusters = Rows([row(cluster_id="c1", cluster_type="swarm"), row(cluster_id="k1", cluster_type="kubernetes")])
    instances = Rows([
        row(instance_id="i-a", cluster_id="c1", state="running", docker_host="unix:///a", details={"cgroup": "ga"}),
        row(instance_id="i-dead", cluster_id="c1", state="running", docker_host="unix:///d", details={}),
        row(instance_id="i-b", cluster_id="c1", state="pending", docker_host="", details={}),
        row(instance_id="i-k", cluster_id="k1", state="running", docker_host="unix:///k", details={}),
        row(instance_id="i-free", cluster_id=None, state="running", docker_host="unix:///f", details={}),
    ])
    reader = FakeReader()
    svc = UsageService(clusters, instances, {"swarm": reader})  # type: ignore[arg-type]
    assert svc.latest.taken_at == 0
    snap = svc.collect()
    assert [n.instance_id for n in reader.calls] == ["i-a", "i-dead"]
    assert reader.calls[0].cgroup == "ga" and reader.calls[1].cgroup is None
    (c1,) = snap.clusters
    assert [n.instance_id for n in c1.nodes] == ["i-a"] and "refused" in c1.errors["i-dead"]
    assert svc.latest is snap
    assert reader.retained == [["i-a", "i-dead"]]  # what it keeps for others (deleted clusters) goes
    clusters.rows = []
    svc.collect()
    assert reader.retained[-1] == []


def test_collect_finds_the_reader_by_the_recorded_type_in_any_case() -> None:
    clusters = Rows([row(cluster_id="k1", cluster_type="ManagedKubernetes")])
    instances = Rows([row(instance_id="i-k", cluster_id="k1", state="running", docker_host="unix:///k",
                          details={"cgroup": "gk"}, private_ip="10.9.0.2")])
    reader = FakeReader()
    UsageService(clusters, instances, {"managedkubernetes": reader}).collect()  # type: ignore[arg-type]
    assert reader.calls == [NodeRef("i-k", "unix:///k", "gk", "10.9.0.2", "k1")]  # a kubelet's address, its cluster


def test_collect_without_clusters_reads_nothing_else() -> None:
    clusters, instances = Rows([]), Rows([])
    snap = UsageService(clusters, instances, {"swarm": FakeReader()}).collect()  # type: ignore[arg-type]
    assert snap.clusters == [] and clusters.reads == 1 and instances.reads == 0


def test_exposition_uses_the_spec_labels() -> None:
    u = Usage(2.0, 100, 80, 1 << 20, 10, 20, 30, 40)
    node = NodeUsage("i-a", u, [ContainerUsage("ab" * 32, "web_app.1.x", "web", "web_app", u)])
    snap = UsageSnapshot(1700000000.0, 0.01, [ClusterUsage("c1", [node], {"i-dead": "refused"})])
    fams = {f.name: f for f in text_string_to_metric_families(usage_metrics.exposition(snap).decode())}
    (cpu,) = fams["opencs_container_cpu_usage_seconds"].samples
    assert cpu.name == "opencs_container_cpu_usage_seconds_total" and cpu.value == 2.0
    assert cpu.labels == {"aliyun_cluster": "c1", "aliyun_project": "web", "aliyun_service_id": "web_app",
                          "container": "web_app.1.x", "node": "i-a"}
    assert fams["opencs_container_memory_limit_bytes"].samples[0].value == 1 << 20
    assert fams["opencs_node_network_receive_bytes"].samples[0].labels == {"aliyun_cluster": "c1", "node": "i-a"}
    assert fams["opencs_node_containers"].samples[0].value == 1
    assert fams["opencs_usage_node_unreadable"].samples[0].labels["node"] == "i-dead"
    assert fams["opencs_usage_collected_timestamp_seconds"].samples[0].value == 1700000000.0

"""The usage snapshot (opencs.services.usage) as Prometheus text, through prometheus_client.

Labels carry the spec's monitoring names (§11.6, §13: `aliyun.cluster`, `aliyun.service.id`) with
the dots Prometheus does not allow as underscores; `node` is the instance id the API shows. On a
Kubernetes cluster a container's project is its pod's namespace, its service id the pod's name.
CPU is cumulative seconds: `rate(opencs_container_cpu_usage_seconds_total[1m]) * 100` is the
percentage of one core, the `usage_percent` of the seed's walkthrough.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from opencs.engines.usage import Usage
from opencs.services.usage import UsageSnapshot

CONTAINER_LABELS = ["aliyun_cluster", "aliyun_project", "aliyun_service_id", "container", "node"]
NODE_LABELS = ["aliyun_cluster", "node"]

# (name suffix, help, counter?, value)
_FIGURES: list[tuple[str, str, bool, Callable[[Usage], float | None]]] = [
    ("cpu_usage_seconds", "CPU time used", True, lambda u: u.cpu_seconds),
    ("memory_usage_bytes", "Memory charged, page cache included", False, lambda u: u.memory_bytes),
    ("memory_working_set_bytes", "Memory minus inactive file pages", False, lambda u: u.memory_working_set_bytes),
    ("memory_limit_bytes", "Memory limit of the group (absent: unlimited)", False, lambda u: u.memory_limit_bytes),
    ("network_receive_bytes", "Bytes received, loopback excluded", True, lambda u: u.net_rx_bytes),
    ("network_transmit_bytes", "Bytes sent, loopback excluded", True, lambda u: u.net_tx_bytes),
    ("blkio_read_bytes", "Bytes read from block devices", True, lambda u: u.blkio_read_bytes),
    ("blkio_write_bytes", "Bytes written to block devices", True, lambda u: u.blkio_write_bytes),
    ("filesystem_usage_bytes", "Bytes used on its filesystem (a container's writable layer; absent: not "
     "reported by the engine)", False, lambda u: u.fs_used_bytes),
    ("filesystem_capacity_bytes", "Size of that filesystem", False, lambda u: u.fs_capacity_bytes),
]


def _families(kind: str, labels: list[str], rows: list[tuple[list[str], Usage]]) -> Iterator[Metric]:
    for suffix, help_text, counter, value in _FIGURES:
        name = f"opencs_{kind}_{suffix}"
        fam: CounterMetricFamily | GaugeMetricFamily
        if counter:
            fam = CounterMetricFamily(name.removesuffix("_total"), f"{kind.capitalize()}: {help_text}", labels=labels)
        else:
            fam = GaugeMetricFamily(name, f"{kind.capitalize()}: {help_text}", labels=labels)
        for lv, u in rows:
            v = value(u)
            if v is not None:
                fam.add_metric(lv, float(v))
        yield fam


class _Snapshot:
    """A registry-shaped object over one snapshot (generate_latest only calls collect())."""

    def __init__(self, snap: UsageSnapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterable[Metric]:
        containers: list[tuple[list[str], Usage]] = []
        nodes: list[tuple[list[str], Usage]] = []
        errors = GaugeMetricFamily("opencs_usage_node_unreadable", "1 when a node's engine did not answer the "
                                   "last pass", labels=NODE_LABELS)
        count = GaugeMetricFamily("opencs_node_containers", "Running containers read on the node", labels=NODE_LABELS)
        for c in self.snap.clusters:
            for n in c.nodes:
                count.add_metric([c.cluster_id, n.instance_id], len(n.containers))
                if n.usage is not None:
                    nodes.append(([c.cluster_id, n.instance_id], n.usage))
                containers += [([c.cluster_id, x.project, x.service_id, x.name, n.instance_id], x.usage)
                               for x in n.containers]
            for iid in sorted(c.errors):
                errors.add_metric([c.cluster_id, iid], 1)
        yield from _families("container", CONTAINER_LABELS, containers)
        yield from _families("node", NODE_LABELS, nodes)
        yield count
        yield errors
        yield GaugeMetricFamily("opencs_usage_collected_timestamp_seconds", "Unix time of the pass shown",
                                value=self.snap.taken_at)
        yield GaugeMetricFamily("opencs_usage_collect_duration_seconds", "Wall time of the pass shown",
                                value=self.snap.duration)


def exposition(snap: UsageSnapshot, cluster_id: str | None = None) -> bytes:
    if cluster_id is not None:
        snap = replace(snap, clusters=[c for c in snap.clusters if c.cluster_id == cluster_id])
    return generate_latest(_Snapshot(snap))  # duck-typed registry: generate_latest only calls collect()

"""Resource usage of containers and nodes (issue 12, item 2): what a cluster engine reports and the
interface the collector (opencs.services.usage) reads it through.

Counters (CPU seconds, network and block I/O bytes) are cumulative since the container or machine
started, as the kernel keeps them; a restart resets them, which Prometheus' rate() understands.
No engine library object crosses this seam: readers return these values or raise
EngineUnreachable (opencs.engines.apps).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    memory_bytes: int  # everything charged to the group, page cache included
    memory_working_set_bytes: int  # minus inactive file pages: what the OOM killer looks at
    memory_limit_bytes: int | None  # None: unlimited
    net_rx_bytes: int
    net_tx_bytes: int
    blkio_read_bytes: int
    blkio_write_bytes: int
    fs_used_bytes: int | None = None  # the filesystem it writes to (a container's writable layer, a node's
    fs_capacity_bytes: int | None = None  # root filesystem): None where the engine does not say


@dataclass(frozen=True)
class NodeRef:
    """A cluster member as the collector hands it to a reader."""

    instance_id: str
    endpoint: str  # the engine's API (docker host URL)
    cgroup: str | None = None  # the machine's cgroup on this host (local machines); None: remote host
    address: str = ""  # the machine's address (where its published ports are; a kubelet's)
    cluster_id: str = ""  # the cluster it is a member of (whose credentials a reader may need)


@dataclass(frozen=True)
class ContainerUsage:
    container_id: str
    name: str
    project: str  # "" for containers no project made
    service_id: str  # <project>_<service> (spec §13), "" outside a service
    usage: Usage
    influxdb: str = ""  # its `aliyun.monitoring.addon.influxdb` label (spec §13): an InfluxDB to export to
    ports: tuple[tuple[int, int], ...] = ()  # (container port, published node port), TCP


@dataclass(frozen=True)
class NodeUsage:
    instance_id: str
    usage: Usage | None  # None when the machine's own figures cannot be read from here
    containers: list[ContainerUsage] = field(default_factory=list)
    source: str = "cgroup"  # where the container figures came from: cgroup | engine
    address: str = ""  # NodeRef.address


class Retains(Protocol):
    def retain(self, nodes: Sequence[NodeRef]) -> None: ...


R = TypeVar("R", bound=Retains)


def retain_asked(readers: Iterable[R], asked: Iterable[tuple[R, NodeRef]]) -> None:
    """After a pass: tell each reader once (several cluster types may share one) the nodes the pass
    asked it about, none for a reader it did not ask."""
    by_reader: dict[int, tuple[R, list[NodeRef]]] = {id(r): (r, []) for r in readers}
    for reader, node in asked:
        by_reader[id(reader)][1].append(node)
    for reader, nodes in by_reader.values():
        reader.retain(nodes)


class UsageReader(Protocol):
    def read(self, node: NodeRef) -> NodeUsage:
        """The node's usage and its running containers' (raises EngineUnreachable)."""
        ...

    def retain(self, nodes: Sequence[NodeRef]) -> None:
        """After each pass, the nodes it read: whatever is kept for other nodes or clusters (clients,
        identities) goes, so that deleted clusters leave nothing behind."""
        ...

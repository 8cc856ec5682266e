"""Container and node usage of every cluster (issue 12, item 2), collected by opencs.loops.usage.

One pass reads the live clusters and their members from the store (two queries; nothing more when
there is no cluster) and asks the reader of each cluster's engine for the node's and its containers'
figures. The last pass is kept whole, so a scrape of GET /metrics/containers never touches an engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from opencs.engines.apps import AppEngineError
from opencs.engines.usage import NodeRef, NodeUsage, UsageReader, retain_asked
from opencs.store.repos.clusters import ClusterRepo
from opencs.store.repos.instances import InstanceRepo

log = logging.getLogger("opencs.usage")


@dataclass(frozen=True)
class ClusterUsage:
    cluster_id: str
    nodes: list[NodeUsage]
    errors: dict[str, str] = field(default_factory=dict)  # instance id -> why its engine was not read


@dataclass(frozen=True)
class UsageSnapshot:
    taken_at: float  # unix time the pass ended (0: no pass yet)
    duration: float  # seconds the pass took
    clusters: list[ClusterUsage]


EMPTY = UsageSnapshot(0.0, 0.0, [])


class UsageService:
    def __init__(self, clusters: ClusterRepo, instances: InstanceRepo, readers: Mapping[str, UsageReader]) -> None:
        self.clusters = clusters
        self.instances = instances
        self.readers = readers  # by cluster type in lower case (DriverSet.by_type); others are not read
        self._latest = EMPTY
        self._lock = threading.Lock()
        # told each pass (on the loop's thread; they must not block it): the InfluxDB add-on
        self.sinks: list[Callable[[UsageSnapshot], None]] = []

    @property
    def latest(self) -> UsageSnapshot:
        with self._lock:
            return self._latest

    def collect(self) -> UsageSnapshot:
        """One pass over every live cluster; keeps and returns it."""
        start = time.perf_counter()
        live = [(c.cluster_id, reader) for c in self.clusters.live()
                if (reader := self.readers.get(c.cluster_type.lower())) is not None]
        out: list[ClusterUsage] = []
        members: dict[str, list[NodeRef]] = {}
        if live:
            for r in self.instances.all():
                if r.cluster_id and r.state == "running" and r.docker_host:
                    members.setdefault(r.cluster_id, []).append(NodeRef(
                        r.instance_id, r.docker_host, (r.details or {}).get("cgroup"), r.private_ip, r.cluster_id))
            for cluster_id, reader in live:
                out.append(self._cluster(cluster_id, reader, members.get(cluster_id, [])))
        # a deleted cluster's kept clients go
        retain_asked(self.readers.values(), ((reader, n) for cid, reader in live for n in members.get(cid, [])))
        snap = UsageSnapshot(time.time(), time.perf_counter() - start, out)
        with self._lock:
            self._latest = snap
        for sink in self.sinks:
            try:
                sink(snap)
            except Exception:
                log.exception("usage sink %r failed", sink)
        return snap

    @staticmethod
    def _cluster(cluster_id: str, reader: UsageReader, nodes: list[NodeRef]) -> ClusterUsage:
        read: list[NodeUsage] = []
        errors: dict[str, str] = {}
        for n in nodes:
            try:
                read.append(reader.read(n))
            except AppEngineError as e:
                errors[n.instance_id] = e.message
                log.debug("usage of %s (%s): %s", n.instance_id, cluster_id, e.message)
        return ClusterUsage(cluster_id, read, errors)

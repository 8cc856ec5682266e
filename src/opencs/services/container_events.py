"""Containers that died, as cluster events (issue 12 item 4): each pass asks every running member
of every live cluster's engine for the deaths since the previous pass (opencs.loops.usage runs it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from opencs.engines.apps import AppEngineError
from opencs.engines.container_events import DeathReader
from opencs.engines.usage import NodeRef, retain_asked
from opencs.services.events import EventLog
from opencs.store.repos.clusters import ClusterRepo
from opencs.store.repos.instances import InstanceRepo

log = logging.getLogger("opencs.events")


class DeathWatcher:
    def __init__(self, clusters: ClusterRepo, instances: InstanceRepo, readers: Mapping[str, DeathReader],
                 events: EventLog) -> None:
        # readers by cluster type in lower case (DriverSet.by_type)
        self.clusters, self.instances, self.readers, self.events = clusters, instances, readers, events
        self._since = time.time()

    def collect(self) -> int:
        """One pass; returns how many deaths it recorded."""
        until = time.time()
        live = {c.cluster_id: reader for c in self.clusters.live()
                if (reader := self.readers.get(c.cluster_type.lower())) is not None}
        n = 0
        asked: list[tuple[DeathReader, NodeRef]] = []
        if live:
            for r in self.instances.all():
                if r.cluster_id in live and r.state == "running" and r.docker_host:
                    node = NodeRef(r.instance_id, r.docker_host, address=r.private_ip, cluster_id=r.cluster_id)
                    asked.append((live[r.cluster_id], node))
                    n += self._node(r.cluster_id, live[r.cluster_id], node, until)
        retain_asked(self.readers.values(), asked)  # a deleted cluster's kept clients and marks go
        self._since = until
        return n

    def _node(self, cluster_id: str, reader: DeathReader, node: NodeRef, until: float) -> int:
        try:
            deaths = reader.deaths(node, self._since, until)
        except AppEngineError as e:
            log.debug("events of %s: %s", node.instance_id, e.message)
            return 0
        for d in deaths:
            self.events.record(cluster_id, "container", "ContainerOOMKilled" if d.oom_killed else "ContainerDied",
                               f"{d.container} on {node.instance_id} died: {d.reason}", d.project)
        return len(deaths)

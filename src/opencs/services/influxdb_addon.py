"""The InfluxDB monitoring add-on (spec §11.6, §13): a service labelled
`aliyun.monitoring.addon.influxdb: "http://influxdb:8086"` registers that InfluxDB, and every pass of
the usage collector is written there under the measurement names of the seed's walkthrough,
telegraf's docker input shapes: `docker_container_cpu` (`usage_percent`, `usage_total`),
`docker_container_mem`, `docker_container_net`, `docker_container_blkio`, tagged `aliyun.cluster`,
`aliyun.project`, `aliyun.service.id`, `container_name`, `node`.

What is written: every container of the cluster the labelled container runs in (the walkthrough's
monitoring application watches the `wordpress` application's service, not only itself).

Where: a URL host that names a service of the labelled container's project (the seed's
`influxdb:8086`, a name only the project's network resolves) is where that service publishes the
port: the node's address and published port, as the collector reaches it from the control plane;
any other host (a DNS name, an address) is used as written.

`offer()` runs on the usage loop and does no I/O: it queues one batch per target in a bounded queue
(a full queue drops the batch and counts it); the writer thread (`drain()`, opencs.loops.usage)
writes them. A target that fails is left alone for a while (1 s, doubling up to `backoff`: an
InfluxDB deployed with its label is usually not listening yet on the first pass); its batches
meanwhile are dropped and counted, and nothing else waits on it.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from prometheus_client import Counter, Gauge

from opencs import metrics
from opencs.engines.usage import ContainerUsage, NodeUsage
from opencs.monitoring.influxdb import InfluxError, InfluxTarget, InfluxWriter, parse_addon_url
from opencs.services.usage import ClusterUsage, UsageSnapshot

log = logging.getLogger("opencs.influxdb")

points_total = Counter("opencs_influxdb_points", "Points of the InfluxDB add-on, by outcome "
                       "(written; dropped: queue full or target backing off; failed: the write failed)",
                       ["outcome"], registry=metrics.REGISTRY)
write_failures = Counter("opencs_influxdb_write_failures", "Batches an InfluxDB add-on refused or did not answer",
                         registry=metrics.REGISTRY)
queue_depth = Gauge("opencs_influxdb_queue_batches", "Batches waiting for the InfluxDB writer",
                    registry=metrics.REGISTRY)
targets_gauge = Gauge("opencs_influxdb_targets", "InfluxDB add-ons the last pass found", registry=metrics.REGISTRY)


class Writer(Protocol):
    def write(self, points: list[dict[str, Any]]) -> None: ...  # raises InfluxError

    def close(self) -> None: ...


@dataclass(frozen=True)
class Batch:
    target: InfluxTarget
    points: list[dict[str, Any]]


def _tags(cluster_id: str, node: NodeUsage, c: ContainerUsage) -> dict[str, str]:
    return {"aliyun.cluster": cluster_id, "aliyun.project": c.project, "aliyun.service.id": c.service_id,
            "container_name": c.name, "node": node.instance_id}


class InfluxExport:
    def __init__(self, writer: Callable[[InfluxTarget], Writer] = InfluxWriter, queue_size: int = 32,
                 backoff: float = 60.0) -> None:
        self.make_writer = writer
        self.queue: queue.Queue[Batch] = queue.Queue(maxsize=queue_size)
        self.backoff = backoff
        self._writers: dict[InfluxTarget, Writer] = {}  # writer thread only
        self._retry_at: dict[InfluxTarget, float] = {}  # writer thread only
        self._failures: dict[InfluxTarget, int] = {}  # writer thread only: failures in a row
        self._cpu: dict[str, tuple[float, float]] = {}  # container id -> (cpu seconds, taken at); loop thread only
        self._warned: set[str] = set()

    # ------------------------------------------------------------ the usage loop's side

    def offer(self, snap: UsageSnapshot) -> None:
        targets = self.targets(snap)
        targets_gauge.set(len(targets))
        percents = self._cpu_percents(snap)
        by_id = {c.cluster_id: c for c in snap.clusters}
        for target, cluster_ids in targets.items():
            pts = [p for cid in sorted(cluster_ids) for p in self.points(by_id[cid], snap.taken_at, percents)]
            if not pts:
                continue
            try:
                self.queue.put_nowait(Batch(target, pts))
            except queue.Full:
                points_total.labels("dropped").inc(len(pts))
        queue_depth.set(self.queue.qsize())

    def targets(self, snap: UsageSnapshot) -> dict[InfluxTarget, set[str]]:
        """Every add-on the containers' labels name, resolved: target -> the clusters it receives."""
        out: dict[InfluxTarget, set[str]] = {}
        for cl in snap.clusters:
            for _node, c in _containers(cl):
                if c.influxdb and (t := self._resolve(cl, c)) is not None:
                    out.setdefault(t, set()).add(cl.cluster_id)
        return out

    def _resolve(self, cl: ClusterUsage, carrier: ContainerUsage) -> InfluxTarget | None:
        try:
            t = parse_addon_url(carrier.influxdb)
        except ValueError as e:
            self._warn_once(f"bad:{carrier.influxdb}", "%s: aliyun.monitoring.addon.influxdb is %s; ignored",
                            carrier.service_id or carrier.name, e)
            return None
        if not carrier.project:
            return t
        service_id = f"{carrier.project}_{t.host}"
        named = [(n, c) for n, c in _containers(cl) if c.service_id == service_id]
        if not named:
            return t  # not a service of the project: a name or address as written
        for n, c in named:
            for private, public in c.ports:
                if private == t.port and n.address:
                    return replace(t, host=n.address, port=public)
        self._warn_once(f"unpublished:{cl.cluster_id}:{service_id}:{t.port}",
                        "the InfluxDB add-on %s:%d of %s is not reachable from the control plane: publish port %d "
                        "of service %s", t.host, t.port, carrier.project, t.port, service_id)
        return None

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def _cpu_percents(self, snap: UsageSnapshot) -> dict[str, float]:
        """Percent of one core since the previous pass (the walkthrough's `usage_percent`)."""
        out: dict[str, float] = {}
        seen: dict[str, tuple[float, float]] = {}
        for cl in snap.clusters:
            for _n, c in _containers(cl):
                now = (c.usage.cpu_seconds, snap.taken_at)
                seen[c.container_id] = now
                prev = self._cpu.get(c.container_id)
                if prev is not None and now[1] > prev[1] and now[0] >= prev[0]:
                    out[c.container_id] = (now[0] - prev[0]) / (now[1] - prev[1]) * 100.0
        self._cpu = seen  # containers that ended are forgotten
        return out

    @staticmethod
    def points(cl: ClusterUsage, taken_at: float, percents: dict[str, float]) -> list[dict[str, Any]]:
        ms = int(taken_at * 1000)
        out: list[dict[str, Any]] = []
        for n, c in _containers(cl):
            tags, u = _tags(cl.cluster_id, n, c), c.usage
            cpu: dict[str, Any] = {"usage_total": int(u.cpu_seconds * 1e9)}  # ns, as telegraf's
            if c.container_id in percents:
                cpu["usage_percent"] = percents[c.container_id]
            mem: dict[str, Any] = {"usage": u.memory_bytes, "working_set": u.memory_working_set_bytes}
            if u.memory_limit_bytes:
                mem["limit"] = u.memory_limit_bytes
                mem["usage_percent"] = u.memory_working_set_bytes / u.memory_limit_bytes * 100.0
            out += [
                {"measurement": "docker_container_cpu", "tags": {**tags, "cpu": "cpu-total"}, "fields": cpu,
                 "time": ms},
                {"measurement": "docker_container_mem", "tags": tags, "fields": mem, "time": ms},
                {"measurement": "docker_container_net", "tags": {**tags, "network": "total"},
                 "fields": {"rx_bytes": u.net_rx_bytes, "tx_bytes": u.net_tx_bytes}, "time": ms},
                {"measurement": "docker_container_blkio", "tags": {**tags, "device": "total"},
                 "fields": {"io_service_bytes_recursive_read": u.blkio_read_bytes,
                            "io_service_bytes_recursive_write": u.blkio_write_bytes}, "time": ms},
            ]
        return out

    # ------------------------------------------------------------ the writer thread's side

    def drain(self, timeout: float) -> bool:
        """Write one queued batch (waiting up to `timeout` for one); False when there was none."""
        try:
            b = self.queue.get(timeout=timeout)
        except queue.Empty:
            return False
        queue_depth.set(self.queue.qsize())
        if time.monotonic() < self._retry_at.get(b.target, 0.0):
            points_total.labels("dropped").inc(len(b.points))
            return True
        w = self._writers.get(b.target)
        try:
            if w is None:
                w = self._writers[b.target] = self.make_writer(b.target)
            w.write(b.points)
        except InfluxError as e:
            write_failures.inc()
            points_total.labels("failed").inc(len(b.points))
            n = self._failures[b.target] = self._failures.get(b.target, 0) + 1
            delay = min(self.backoff, 2.0 ** (n - 1))
            self._retry_at[b.target] = time.monotonic() + delay
            # said once per outage (then at debug level), so that a long one does not flood the log
            log.log(logging.WARNING if n == 1 else logging.DEBUG, "InfluxDB add-on: %s (failure %d; next try in "
                    "%.0f s)", e, n, delay)
            return True
        self._retry_at.pop(b.target, None)
        if self._failures.pop(b.target, 0):
            log.info("InfluxDB add-on %s: writing again", b.target.url)
        points_total.labels("written").inc(len(b.points))
        return True

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
        self._writers.clear()


def _containers(cl: ClusterUsage) -> Iterator[tuple[NodeUsage, ContainerUsage]]:
    for n in cl.nodes:
        for c in n.containers:
            yield n, c

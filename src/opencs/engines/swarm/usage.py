"""Usage of a Swarm node and its running containers (opencs.engines.usage).

One `GET /containers/json` per node and pass names the containers and their labels; their figures
come from the kernel: DockerEngine starts every node's dockerd with `--cgroup-parent /<machine
cgroup>`, so container <id> of a local machine is cgroup `<machine cgroup>/<id>` in each hierarchy
and its network namespace is that of any process in it. Containers whose group is not on this host
(nodes reached over SSH) are read through the engine's stats API instead, one call each.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from docker.errors import APIError, DockerException, NotFound

from opencs.compose.normalize import NAMESPACE_LABEL
from opencs.engines import cgroupv1
from opencs.engines.apps import EngineUnreachable
from opencs.engines.swarm import client
from opencs.engines.usage import ContainerUsage, NodeRef, NodeUsage, Usage

SERVICE_NAME_LABEL = "com.docker.swarm.service.name"  # <project>_<service>: the spec's service id
INFLUXDB_LABEL = "aliyun.monitoring.addon.influxdb"  # spec §13: the service's containers carry it
LIST_TIMEOUT = 10  # seconds; a node that does not answer must not hold up the others for long


class SwarmUsageReader:
    def __init__(self, cgroup_root: Path = cgroupv1.CGROUP_ROOT, proc: Path = cgroupv1.PROC) -> None:
        self.cgroup_root = cgroup_root
        self.proc = proc

    def read(self, node: NodeRef) -> NodeUsage:
        try:
            with closing(client(node.endpoint, timeout=LIST_TIMEOUT)) as c:
                listed = c.api.containers()  # running ones
                local = node.cgroup is not None and cgroupv1.exists(node.cgroup, self.cgroup_root)
                containers = [u for raw in listed if (u := self._container(c, node, raw, local)) is not None]
        except (DockerException, OSError) as e:
            raise EngineUnreachable(str(e)) from None
        own = self._cgroup_usage(node.cgroup) if node.cgroup else None
        return NodeUsage(node.instance_id, own, containers, "cgroup" if local else "engine", node.address)

    def retain(self, nodes: Sequence[NodeRef]) -> None:
        """Nothing is kept between passes: one client per read."""

    def _container(self, c: Any, node: NodeRef, raw: dict[str, Any], local: bool) -> ContainerUsage | None:
        labels: dict[str, str] = raw.get("Labels") or {}
        cid: str = raw["Id"]
        names = raw.get("Names") or [cid[:12]]
        usage = self._cgroup_usage(f"{node.cgroup}/{cid}") if local and node.cgroup else _from_stats(c, cid)
        if usage is None:
            return None  # it ended between the list and the read
        ports = tuple(sorted({(int(p["PrivatePort"]), int(p["PublicPort"])) for p in raw.get("Ports") or []
                              if p.get("PublicPort") and p.get("Type", "tcp") == "tcp"}))
        return ContainerUsage(cid, names[0].lstrip("/"), labels.get(NAMESPACE_LABEL, ""),
                              labels.get(SERVICE_NAME_LABEL, ""), usage, labels.get(INFLUXDB_LABEL, ""), ports)

    def _cgroup_usage(self, rel: str) -> Usage | None:
        try:
            pid = cgroupv1.first_pid(rel, self.cgroup_root)
            return cgroupv1.usage(rel, net_pid=pid, root=self.cgroup_root, proc=self.proc)
        except OSError:
            return None


def _from_stats(c: Any, cid: str) -> Usage | None:
    """The engine's own sample (`docker stats --no-stream`), for containers of remote hosts."""
    try:
        s = c.api.stats(cid, stream=False, one_shot=True)
    except NotFound:
        return None
    except APIError as e:
        raise EngineUnreachable(str(e)) from None
    mem = s.get("memory_stats") or {}
    stats = mem.get("stats") or {}
    used = int(mem.get("usage") or 0)
    inactive = int(stats.get("total_inactive_file", stats.get("inactive_file", 0)) or 0)
    nets = (s.get("networks") or {}).values()
    blk = (s.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    limit = int(mem.get("limit") or 0)
    return Usage(
        cpu_seconds=int(((s.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0) / 1e9,
        memory_bytes=used,
        memory_working_set_bytes=max(0, used - inactive),
        memory_limit_bytes=limit or None,
        net_rx_bytes=sum(int(n.get("rx_bytes", 0)) for n in nets),
        net_tx_bytes=sum(int(n.get("tx_bytes", 0)) for n in nets),
        blkio_read_bytes=sum(int(b.get("value", 0)) for b in blk if str(b.get("op")).lower() == "read"),
        blkio_write_bytes=sum(int(b.get("value", 0)) for b in blk if str(b.get("op")).lower() == "write"),
    )

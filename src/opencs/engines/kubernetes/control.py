"""Starting a cluster's control plane in each of its forms (topology.py says who runs what): writes
the plans into the machines and waits until the cluster's endpoint answers. Idempotent, like the
driver: plans are written only where missing, machines are found by id before they are made.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from opencs.engines.driver import DriverError, EngineMachines, NodeBook
from opencs.engines.kubernetes import plans
from opencs.engines.kubernetes.api import KubeError, connect, wait_for
from opencs.engines.kubernetes.box import Box
from opencs.engines.kubernetes.config import ClusterNetwork
from opencs.engines.kubernetes.pki import ClusterPKI
from opencs.engines.kubernetes.topology import (
    CONTROL_PLANE_ROLE,
    LB_ROLE,
    Member,
    choose_masters,
    engine_machine_id,
    server_url,
)

API_READY_TIMEOUT = 180.0
MASTERS_UP_TIMEOUT = 180.0


@dataclass(frozen=True)
class Started:
    """A control plane that answers: its endpoint, the machines holding its admin credentials, the
    masters that are also nodes of the cluster (none in the managed form), the namespace uid."""

    server: str
    admin: Box
    masters: list[Box]
    uid: str


class ControlPlanes:
    def __init__(self, book: NodeBook, etcd_fsync: bool = True) -> None:
        self.book = book
        self.etcd_fsync = etcd_fsync
        self.pool: EngineMachines | None = None  # set by the composition root

    # ------------------------------------------------------------ engine machines

    def _pool(self) -> EngineMachines:
        if self.pool is None:
            raise DriverError("this server has no machines for a cluster's own control plane", "EngineUnavailable")
        return self.pool

    def engine_box(self, cluster_id: str, role: str, create: bool = False) -> Box | None:
        iid = engine_machine_id(cluster_id, role)
        if create:
            return Box.of(self._pool().ensure(cluster_id, iid))
        m = self.pool.find(iid) if self.pool is not None else None
        return Box.of(m) if m is not None else None

    def release(self, cluster_id: str) -> None:
        """Destroy the cluster's engine machines (whichever form it had: ids are derived)."""
        if self.pool is not None:
            for role in (LB_ROLE, CONTROL_PLANE_ROLE):
                self.pool.destroy(engine_machine_id(cluster_id, role))

    # ------------------------------------------------------------ the three forms

    def start(self, cluster_id: str, kind: str, first: str, count: int, pki: ClusterPKI,
              net: ClusterNetwork) -> Started:
        if kind == "managed":
            cp = self.engine_box(cluster_id, CONTROL_PLANE_ROLE, create=True)
            assert cp is not None
            plans.install(cp.k, plans.control_plane(cp.k, pki, Member(cp.name, cp.ip), [Member(cp.name, cp.ip)],
                                                    net, self.etcd_fsync))
            return self._ready(server_url(cp.ip), cp, [], [cp])
        if kind == "single":
            m = self._box(first)
            plans.install(m.k, plans.control_plane(m.k, pki, Member(m.name, m.ip), [Member(m.name, m.ip)], net,
                                                   self.etcd_fsync))
            return self._ready(server_url(m.ip), m, [m], [m])
        # ha: the load balancer first (it boots while the other masters' machines do), then the masters
        lb = self.engine_box(cluster_id, LB_ROLE, create=True)
        assert lb is not None
        masters = sorted((self._box(i) for i in self.reserve_masters(cluster_id, first, count)), key=lambda b: b.name)
        members = [Member(b.name, b.ip) for b in masters]  # by name: the same etcd membership on every re-run
        plans.install(lb.k, plans.load_balancer(lb.k, lb.ip, members))
        for b in masters:
            plans.install(b.k, plans.control_plane(b.k, pki, Member(b.name, b.ip), members, net, self.etcd_fsync,
                                                   endpoint_ip=lb.ip))
        return self._ready(server_url(lb.ip), masters[0], masters, [lb, *masters])

    def _box(self, instance_id: str) -> Box:
        r = self.book.get(instance_id)
        if r is None:
            raise DriverError(f"instance {instance_id} vanished", "InstanceNotFound")
        return Box.of(r)

    def reserve_masters(self, cluster_id: str, first: str, count: int,
                        timeout: float = MASTERS_UP_TIMEOUT) -> list[str]:
        """The `count` instances that become masters, once that many machines run. The choice is
        recorded at once (role manager, no member id yet) so that a re-run keeps it."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.book.of_cluster(cluster_id)
            reserved = [r.instance_id for r in rows if r.role == "manager"]
            running = [r.instance_id for r in rows if r.state == "running" and not r.role]
            picked = choose_masters(reserved, first, running, count)
            if picked is not None:
                break
            if time.monotonic() > deadline:
                raise DriverError(f"{count} masters need {count} running machines: {len(running) + len(reserved)} "
                                  f"of the cluster's run after {timeout:.0f}s", "MastersNotRunning")
            time.sleep(0.5)
        for iid in picked:
            if iid not in reserved:
                self.book.set_membership(iid, "manager", "")
        return picked

    def _ready(self, server: str, admin: Box, masters: list[Box], running: list[Box]) -> Started:
        units = plans.CONTROL_PLANE_UNITS + ("haproxy",)
        detail: Callable[[], str] = lambda: "; ".join(  # noqa: E731
            f"{b.name}: {b.log_tail(u, 2)}" for b in running for u in units if (b.k / "units" / f"{u}.sh").exists())
        try:
            with connect(server, admin.k / "pki") as api:
                wait_for(f"apiserver {server} ready", api.ready, API_READY_TIMEOUT, detail)
                ns = wait_for("namespace kube-system", lambda: api.get("/api/v1/namespaces/kube-system"), 60)
        except KubeError as e:
            raise DriverError(str(e), "ControlPlaneFailed") from e
        return Started(server, admin, masters, str(ns["metadata"]["uid"]))

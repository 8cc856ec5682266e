"""FakeClusterDriver: a cluster engine that lives in memory (and in the NodeBook), for unit tests
of the cluster rules without dockerd. It keeps the engine's own view (members by id, roles,
leader) apart from the store's, so that a test can check that the two agree."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opencs.engines.driver import (
    CLUSTER_LABEL,
    ClusterDriver,
    ClusterPKI,
    Credentials,
    DriverError,
    MemberHealth,
    NodeBook,
    NodeConfig,
    NoManager,
    TLSFiles,
)
from opencs.machine import NodeRuntime, RegistryAuth

if TYPE_CHECKING:
    from opencs.engines.apps import AppEngine


@dataclass
class FakeMember:
    member_id: str
    instance_id: str
    role: str
    state: str = "ready"


@dataclass
class FakeEngineCluster:
    engine_id: str
    leader: str  # member id
    members: dict[str, FakeMember] = field(default_factory=dict)


class FakeClusterDriver(ClusterDriver):
    cluster_type = "swarm"
    accepts = ("swarm", "aliyun")

    def __init__(self, book: NodeBook) -> None:
        self.book = book
        self.engines: dict[str, FakeEngineCluster] = {}
        self.fail: dict[str, DriverError] = {}  # method name -> error raised once (fault injection)
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._seq = 0

    def _enter(self, method: str, arg: str) -> None:
        self.calls.append((method, arg))
        if (err := self.fail.pop(method, None)) is not None:
            raise err

    def _new_member(self, cluster_id: str, instance_id: str, role: str) -> str:
        with self._lock:
            self._seq += 1
            mid = f"m{self._seq:04d}"
        self.engines[cluster_id].members[mid] = FakeMember(mid, instance_id, role)
        self.book.set_membership(instance_id, role, mid)
        return mid

    @property
    def node_runtime(self) -> NodeRuntime:
        raise DriverError("the fake cluster driver runs on fake machines (providers.fake)", "NoRuntime")

    def managers_for(self, cluster_id: str, size: int) -> int:
        return 3 if size >= 3 else 1

    def node_config(self, pki: ClusterPKI | None, instance_id: str, registry: str | None,
                    pull_auth: RegistryAuth | None = None) -> NodeConfig:
        cfg = NodeConfig(labels={"opencs.instance": instance_id})
        if pki is not None:
            cfg.labels[CLUSTER_LABEL] = pki.cluster_id
            cfg.tls_for_ip = lambda ip: TLSFiles(pki.ca_cert_pem, f"cert for {ip}", "key")
        return cfg

    def create(self, cluster_id: str, first_instance_id: str) -> str:
        self._enter("create", cluster_id)
        if cluster_id not in self.engines:
            self.engines[cluster_id] = FakeEngineCluster(engine_id=f"fake-{cluster_id}", leader="")
            self.engines[cluster_id].leader = self._new_member(cluster_id, first_instance_id, "manager")
        return self.engines[cluster_id].engine_id

    def _engine(self, cluster_id: str) -> FakeEngineCluster:
        if cluster_id not in self.engines:
            raise NoManager(cluster_id)
        return self.engines[cluster_id]

    def join(self, cluster_id: str, size: int) -> None:
        self._enter("join", cluster_id)
        eng = self._engine(cluster_id)
        want = self.managers_for(cluster_id, size)
        for r in self.book.of_cluster(cluster_id):
            if r.state != "running" or (r.swarm_node_id and r.role):
                continue
            n_mgr = sum(1 for m in eng.members.values() if m.role == "manager")
            self._new_member(cluster_id, r.instance_id, "manager" if n_mgr < want else "worker")
        self.set_managers(cluster_id, want)

    def set_managers(self, cluster_id: str, want: int) -> None:
        self._enter("set_managers", cluster_id)
        eng = self._engine(cluster_id)
        mgrs = [m for m in eng.members.values() if m.role == "manager"]
        workers = [m for m in eng.members.values() if m.role == "worker"]
        while len(mgrs) < want and workers:
            w = workers.pop(0)
            w.role = "manager"
            self.book.set_membership(w.instance_id, "manager", w.member_id)
            mgrs.append(w)
        for m in reversed(list(mgrs)):
            if len(mgrs) <= want:
                break
            if m.member_id == eng.leader:
                continue
            m.role = "worker"
            self.book.set_membership(m.instance_id, "worker", m.member_id)
            mgrs.remove(m)

    def remove_node(self, cluster_id: str, instance_id: str) -> None:
        self._enter("remove_node", instance_id)
        eng = self.engines.get(cluster_id)
        if eng is not None:
            for mid, m in list(eng.members.items()):
                if m.instance_id == instance_id:
                    del eng.members[mid]
        if self.book.get(instance_id) is not None:
            self.book.set_membership(instance_id, "", "")

    def reset_node(self, cluster_id: str, instance_id: str) -> None:
        self.remove_node(cluster_id, instance_id)

    def delete(self, cluster_id: str) -> None:
        self._enter("delete", cluster_id)
        self.engines.pop(cluster_id, None)

    def credentials(self, pki: ClusterPKI, user_cert_pem: str, user_key_pem: str) -> Credentials:
        return Credentials(kind="certs", ca_pem=pki.ca_cert_pem, cert_pem=user_cert_pem, key_pem=user_key_pem)

    def health(self, cluster_id: str) -> dict[str, MemberHealth] | None:
        eng = self.engines.get(cluster_id)
        if eng is None:
            return None
        return {m.member_id: MemberHealth(m.member_id, m.state) for m in eng.members.values()}

    def api_url(self, cluster_id: str) -> str:
        return f"https://fake-{cluster_id}:2376"

    def manager_endpoints(self, cluster_id: str) -> list[str]:
        eng = self._engine(cluster_id)
        return [f"fake://{m.instance_id}" for m in eng.members.values() if m.role == "manager"]

    def app_engine(self, cluster_id: str) -> AppEngine:
        raise DriverError("the fake cluster driver has no application engine; use engines.fake.apps",
                          "NoAppEngine")

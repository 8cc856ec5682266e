"""Machines for clusters: instances from providers, set up the way the cluster engine asks.

Every method is idempotent: a task re-run after a crash calls them again with the same ids.
The store records an instance *before* its provider creates it, so nothing is ever orphaned.
What the engine makes of a machine (membership, roles) is the ClusterDriver's business.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from opencs import ids
from opencs.engines.driver import (
    CLUSTER_LABEL,
    ENGINE_MACHINE_LABEL,
    ClusterDriver,
    ClusterPKI,
    DriverError,
    EngineMachine,
    run_parallel,
)
from opencs.machine import RegistryAuth
from opencs.providers.base import (
    Instance,
    InstanceNotFound,
    InstanceSpec,
    InstanceState,
    Provider,
    TLSMaterial,
)
from opencs.secretbox import SecretBox
from opencs.services.instance_types import resources_for
from opencs.store.models import Cluster, InstanceRow
from opencs.store.repos.clusters import ClusterRepo
from opencs.store.repos.instances import InstanceRepo
from opencs.tasks.engine import StageFailed

log = logging.getLogger("opencs.nodes")


class Machines:
    """Instances of the providers, recorded in the store, configured for the cluster's engine."""

    def __init__(self, providers: Mapping[str, Provider], instances: InstanceRepo, clusters: ClusterRepo,
                 box: SecretBox, driver: ClusterDriver, registry_endpoint: Callable[[], str | None],
                 pull_auth: Callable[[str, str], RegistryAuth | None] | None = None) -> None:
        self.providers = providers  # shared with the composition root (tests swap entries)
        self.instances = instances
        self.clusters = clusters
        self.box = box
        self.driver = driver
        self.registry_endpoint = registry_endpoint
        # (cluster id, instance id) -> the machine's node credential for the bundled registry
        # (opencs.services.registry_access.NodeCredentials.node_auth)
        self.pull_auth = pull_auth

    def provider(self, name: str) -> Provider:
        try:
            return self.providers[name]
        except KeyError:
            raise StageFailed(f"provider {name!r} is not configured", "ProviderUnavailable") from None

    def cluster(self, cluster_id: str) -> Cluster:
        c = self.clusters.get(cluster_id)
        if c is None:
            raise StageFailed(f"cluster {cluster_id} vanished", "ErrorClusterNotFound")
        return c

    def pki(self, c: Cluster) -> ClusterPKI:
        assert c.ca_cert_pem and c.ca_key_enc
        return ClusterPKI(c.cluster_id, c.ca_cert_pem, self.box.decrypt(c.ca_key_enc))

    def spec_for(self, c: Cluster | None, instance_id: str) -> InstanceSpec:
        """The node runtime settings the engine wants, limits from instance_type. Free instances
        get no TLS endpoint."""
        registry = self.registry_endpoint()
        auth = self.pull_auth(c.cluster_id, instance_id) if c is not None and registry and self.pull_auth else None
        cfg = self.driver.node_config(self.pki(c) if c is not None else None, instance_id, registry, auth)
        spec = InstanceSpec(instance_id=instance_id, labels=dict(cfg.labels), registry_mirror=cfg.registry_mirror,
                            insecure_registries=list(cfg.insecure_registries), runtime=cfg.runtime,
                            registry_auth=cfg.registry_auth)
        if c is not None and c.instance_type:
            res = resources_for(c.instance_type)
            spec.cpus, spec.memory_bytes = res.cpus, res.memory_bytes
        if (tls_for_ip := cfg.tls_for_ip) is not None:

            def tls_for(ip: str) -> TLSMaterial:
                t = tls_for_ip(ip)
                return TLSMaterial(ca_pem=t.ca_pem, cert_pem=t.cert_pem, key_pem=t.key_pem)

            spec.tls_factory = tls_for
        return spec

    # ------------------------------------------------------------ provisioning

    @staticmethod
    def plan_ids(n: int) -> list[str]:
        return [ids.instance_id() for _ in range(n)]

    def ensure(self, cluster_id: str | None, planned: list[str], provider_name: str = "local",
               after_create: Callable[[str], None] | None = None) -> None:
        """Create each planned instance unless it already runs. The store row comes first.
        `after_create(instance_id)` runs in the creating thread as soon as that instance is up
        (cluster creation starts the swarm on the first node while the others still boot)."""
        prov = self.provider(provider_name)
        prov.check()
        c = self.cluster(cluster_id) if cluster_id else None
        self.instances.add_pending(planned, provider_name, cluster_id)

        def one(iid: str) -> None:
            try:
                inst = prov.inspect(iid)
                # made whole for this cluster before a crash (its engine labels it): keep it and what it runs
                mine = c is None or (inst.details.get("labels") or {}).get(CLUSTER_LABEL) == c.cluster_id
                if inst.state == InstanceState.RUNNING and mine:
                    self.record(inst)
                    return
                prov.destroy(iid)  # half-made before a crash: start clean
            except InstanceNotFound:
                pass
            # a fresh machine: whatever membership its row recorded was the destroyed one's
            self.record(prov.create(self.spec_for(c, iid)), role="", swarm_node_id="")
            if after_create is not None:
                after_create(iid)

        run_parallel(one, planned)

    def record(self, inst: Instance, **extra: object) -> None:
        self.instances.update(inst.instance_id, private_ip=inst.private_ip, state=str(inst.state),
                              docker_host=inst.docker_host, details=dict(inst.details), health="unknown", **extra)

    def destroy(self, instance_ids: list[str]) -> None:
        def one(iid: str) -> None:
            r = self.instances.get(iid)
            self.provider(r.provider if r else "local").destroy(iid)
            self.instances.delete(iid)

        run_parallel(one, instance_ids)

    def reimage(self, r: InstanceRow, c: Cluster | None) -> Instance:
        """"The system disk is replaced": a fresh node runtime for the cluster (or for the pool)."""
        return self.provider(r.provider).reset(r.instance_id, self.spec_for(c, r.instance_id))

    def release_to_pool(self, r: InstanceRow) -> None:
        """Return an instance to the free pool: fresh engine, no cluster certificate."""
        inst = self.reimage(r, None)
        self.instances.update(r.instance_id, cluster_id=None, role="", swarm_node_id="", state=str(inst.state),
                              docker_host=inst.docker_host, details=dict(inst.details), health="unknown")


def _engine_machine(inst: Instance) -> EngineMachine:
    return EngineMachine(inst.instance_id, inst.private_ip, dict(inst.details), inst.docker_host)


class EngineMachines:
    """Machines a cluster engine owns besides the cluster's nodes (engines.driver.EngineMachines):
    provider machines set up like the cluster's nodes and labelled with their cluster, but never
    instance rows — not listed, not counted in its size. Start-up reconciliation keeps them while
    their cluster lives (services.monitor); the engine releases them when the cluster goes."""

    def __init__(self, machines: Machines, provider_name: str = "local") -> None:
        self.machines = machines
        self.provider_name = provider_name

    def ensure(self, cluster_id: str, instance_id: str) -> EngineMachine:
        prov = self.machines.provider(self.provider_name)
        try:
            inst = prov.inspect(instance_id)
            if inst.state in (InstanceState.RUNNING, InstanceState.UNHEALTHY):
                return _engine_machine(inst)  # unhealthy: its supervisor is restarting something; keep its data
            if inst.state == InstanceState.STOPPED:
                return _engine_machine(prov.start(instance_id))
            prov.destroy(instance_id)  # half-made before a crash: start clean
        except InstanceNotFound:
            pass
        spec = self.machines.spec_for(self.machines.cluster(cluster_id), instance_id)
        spec.labels[ENGINE_MACHINE_LABEL] = cluster_id
        spec.registry_auth = None  # no member, so no node credential: it pulls the shared images only
        return _engine_machine(prov.create(spec))

    def find(self, instance_id: str) -> EngineMachine | None:
        try:
            return _engine_machine(self.machines.provider(self.provider_name).inspect(instance_id))
        except (InstanceNotFound, StageFailed):
            return None

    def destroy(self, instance_id: str) -> None:
        self.machines.provider(self.provider_name).destroy(instance_id)


class ClusterBook:
    """What cluster engines read of a cluster in the store (engines.kubernetes.driver.ClusterBook):
    its type, its CA with the key decrypted, its settings (the create body as stored)."""

    def __init__(self, clusters: ClusterRepo, box: SecretBox) -> None:
        self.clusters = clusters
        self.box = box

    def _row(self, cluster_id: str) -> Cluster:
        c = self.clusters.get(cluster_id)
        if c is None:
            raise DriverError(f"cluster {cluster_id} vanished", "ErrorClusterNotFound")
        return c

    def cluster_type(self, cluster_id: str) -> str | None:
        c = self.clusters.get(cluster_id)
        return c.cluster_type if c is not None else None

    def pki(self, cluster_id: str) -> ClusterPKI:
        c = self._row(cluster_id)
        if not (c.ca_cert_pem and c.ca_key_enc):
            raise DriverError(f"cluster {cluster_id} has no CA", "ErrorCertsNotFound")
        return ClusterPKI(cluster_id, c.ca_cert_pem, self.box.decrypt(c.ca_key_enc))

    def settings(self, cluster_id: str) -> dict[str, Any]:
        return dict(self._row(cluster_id).spec or {})


class MemberSource(Protocol):
    """What the transitional NodeOps reads: the member rows and the cluster driver."""

    @property
    def instance_repo(self) -> InstanceRepo: ...

    @property
    def cluster_driver(self) -> ClusterDriver: ...


class NodeOps:
    """Transitional read access to a cluster's members for the project code, until it reaches the
    managers through the AppEngine the cluster driver makes (engines/apps.py)."""

    def __init__(self, rt: MemberSource) -> None:
        self.instances = rt.instance_repo
        self.driver = rt.cluster_driver

    def rows(self, cluster_id: str) -> list[InstanceRow]:
        return self.instances.of_cluster(cluster_id)

    def managers(self, cluster_id: str) -> list[InstanceRow]:
        return [r for r in self.rows(cluster_id) if r.role == "manager" and r.swarm_node_id]

    def reachable_manager(self, cluster_id: str) -> InstanceRow:
        try:
            first = self.driver.manager_endpoints(cluster_id)[0]
        except DriverError as e:
            raise StageFailed(e.message, e.code) from None
        return next(r for r in self.managers(cluster_id) if r.docker_host == first)

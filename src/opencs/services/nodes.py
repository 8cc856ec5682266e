"""Node operations used by the cluster tasks: instances from providers, joined into swarms.

Every function is idempotent: a task re-run after a crash calls them again with the same ids.
The store records an instance *before* its provider creates it, so nothing is ever orphaned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from opencs import ids
from opencs.engines import swarm
from opencs.pki.ca import CertAuthority
from opencs.providers.base import (
    Instance,
    InstanceNotFound,
    InstanceSpec,
    InstanceState,
    Provider,
    TLSMaterial,
)
from opencs.services.instance_types import resources_for
from opencs.store.db import utcnow
from opencs.store.models import Cluster, InstanceRow
from opencs.tasks.engine import StageFailed

if TYPE_CHECKING:
    from opencs.runtime import Runtime

log = logging.getLogger("opencs.nodes")

MANAGERS_FROM_SIZE_3 = 3


def desired_managers(size: int) -> int:
    """One manager for 1–2 nodes; three (raft quorum survives one loss) from size 3."""
    return MANAGERS_FROM_SIZE_3 if size >= MANAGERS_FROM_SIZE_3 else 1


class NodeOps:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    # ------------------------------------------------------------ store helpers

    def provider(self, name: str) -> Provider:
        try:
            return self.rt.providers[name]
        except KeyError:
            raise StageFailed(f"provider {name!r} is not configured", "ProviderUnavailable") from None

    def rows(self, cluster_id: str) -> list[InstanceRow]:
        with self.rt.db.session() as s:
            q = select(InstanceRow).where(InstanceRow.cluster_id == cluster_id).order_by(InstanceRow.created)
            return list(s.scalars(q))

    def row(self, instance_id: str) -> InstanceRow | None:
        with self.rt.db.session() as s:
            return s.get(InstanceRow, instance_id)

    def update_row(self, instance_id: str, **values: Any) -> None:
        with self.rt.db.session() as s:
            r = s.get(InstanceRow, instance_id)
            if r is not None:
                for k, v in values.items():
                    setattr(r, k, v)
                r.updated = utcnow()

    def cluster(self, cluster_id: str) -> Cluster:
        with self.rt.db.session() as s:
            c = s.get(Cluster, cluster_id)
            if c is None:
                raise StageFailed(f"cluster {cluster_id} vanished", "ErrorClusterNotFound")
            return c

    # ------------------------------------------------------------ instance specs

    def cluster_ca(self, c: Cluster) -> CertAuthority:
        assert c.ca_cert_pem and c.ca_key_enc
        return CertAuthority(cert_pem=c.ca_cert_pem, key_pem=self.rt.box.decrypt(c.ca_key_enc))

    def spec_for(self, c: Cluster | None, instance_id: str) -> InstanceSpec:
        """The engine settings of a node: a server cert of the cluster's CA for its IP, the
        bundled registry as mirror, limits from instance_type. Free instances get no TLS endpoint."""
        reg = self.rt.registry_endpoint()
        spec = InstanceSpec(
            instance_id=instance_id,
            labels={"opencs.instance": instance_id},
            registry_mirror=f"http://{reg}" if reg else None,
            insecure_registries=[reg] if reg else [],
        )
        if c is not None:
            spec.labels["opencs.cluster"] = c.cluster_id
            res = resources_for(c.instance_type) if c.instance_type else None
            if res:
                spec.cpus, spec.memory_bytes = res.cpus, res.memory_bytes
            ca = self.cluster_ca(c)

            def tls_for(ip: str) -> TLSMaterial:
                server = ca.issue_server(instance_id, ips=[ip], dns_names=[instance_id])
                return TLSMaterial(ca_pem=ca.cert_pem, cert_pem=server.cert_pem, key_pem=server.key_pem)

            spec.tls_factory = tls_for
        return spec

    # ------------------------------------------------------------ provisioning

    def plan_ids(self, n: int) -> list[str]:
        return [ids.instance_id() for _ in range(n)]

    def ensure_instances(self, cluster_id: str | None, planned: list[str], provider_name: str = "local",
                         after_create: Callable[[str], None] | None = None) -> None:
        """Create each planned instance unless it already runs. The store row comes first.
        `after_create(instance_id)` runs in the creating thread as soon as that instance is up
        (cluster creation starts the swarm on the first node while the others still boot)."""
        prov = self.provider(provider_name)
        prov.check()
        c = self.cluster(cluster_id) if cluster_id else None
        now = utcnow()
        with self.rt.db.session() as s:
            for iid in planned:
                if s.get(InstanceRow, iid) is None:
                    s.add(InstanceRow(instance_id=iid, provider=provider_name, cluster_id=cluster_id,
                                      state="pending", created=now, updated=now, details={}))

        def one(iid: str) -> None:
            try:
                inst = prov.inspect(iid)
                if inst.state == InstanceState.RUNNING and (c is None or inst.details.get("tls")):
                    self._record(inst)
                    return
                prov.destroy(iid)  # half-made before a crash: start clean
            except InstanceNotFound:
                pass
            self._record(prov.create(self.spec_for(c, iid)))
            if after_create is not None:
                after_create(iid)

        self._parallel(one, planned)

    def _record(self, inst: Instance) -> None:
        self.update_row(inst.instance_id, private_ip=inst.private_ip, state=str(inst.state),
                        docker_host=inst.docker_host, details=dict(inst.details), health="unknown")

    @staticmethod
    def _parallel(fn: Any, items: list[str]) -> None:
        if not items:
            return
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
            for iid, fut in [(i, pool.submit(fn, i)) for i in items]:
                try:
                    fut.result()
                except Exception as e:  # collect all, fail once with every reason
                    log.warning("instance %s: %s", iid, e)
                    errors.append(f"{iid}: {e}")
        if errors:
            raise StageFailed("; ".join(errors), "InstanceFailed")

    def destroy_instances(self, instance_ids: list[str]) -> None:
        def one(iid: str) -> None:
            r = self.row(iid)
            prov = self.provider(r.provider if r else "local")
            prov.destroy(iid)
            with self.rt.db.session() as s:
                row = s.get(InstanceRow, iid)
                if row is not None:
                    s.delete(row)

        self._parallel(one, instance_ids)

    # ------------------------------------------------------------ swarm membership

    def managers(self, cluster_id: str) -> list[InstanceRow]:
        return [r for r in self.rows(cluster_id) if r.role == "manager" and r.swarm_node_id]

    def reachable_manager(self, cluster_id: str) -> InstanceRow:
        for r in self.managers(cluster_id):
            try:
                if swarm.local_state(r.docker_host)["is_manager"]:
                    return r
            except Exception as e:
                log.info("manager %s not reachable: %s", r.private_ip, e)
        raise StageFailed(f"no reachable swarm manager in cluster {cluster_id}", "NoManager")

    def form_swarm(self, cluster_id: str, size: int) -> None:
        """Make every instance of the cluster a ready member with the right number of managers."""
        rows = [r for r in self.rows(cluster_id) if r.state == "running"]
        if not rows:
            raise StageFailed("cluster has no running instance", "NoInstances")
        if not any(r.role == "manager" and r.swarm_node_id for r in rows):
            self.init_swarm(cluster_id, rows[0].instance_id)
            rows = [r for r in self.rows(cluster_id) if r.state == "running"]  # re-read: first is a manager now
        leader = self.reachable_manager(cluster_id)
        tokens = swarm.join_tokens(leader.docker_host)
        swarm_id = swarm.local_state(leader.docker_host)["swarm_id"]
        want = desired_managers(size)
        n_mgr = len(self.managers(cluster_id))
        # managers join one at a time (each changes the raft quorum); workers all at once
        workers: list[InstanceRow] = []
        for r in rows:
            if r.swarm_node_id and r.role:
                continue
            if n_mgr < want:
                node_id = swarm.join(r.docker_host, r.private_ip, [leader.private_ip], tokens["manager"], swarm_id)
                self.update_row(r.instance_id, role="manager", swarm_node_id=node_id)
                n_mgr += 1
            else:
                workers.append(r)

        def join_worker(iid: str) -> None:
            r = next(w for w in workers if w.instance_id == iid)
            node_id = swarm.join(r.docker_host, r.private_ip, [leader.private_ip], tokens["worker"], swarm_id)
            self.update_row(iid, role="worker", swarm_node_id=node_id)

        self._parallel(join_worker, [w.instance_id for w in workers])
        self.converge_managers(cluster_id, want)
        ids_ = [r.swarm_node_id for r in self.rows(cluster_id) if r.swarm_node_id]
        swarm.wait_ready(leader.docker_host, ids_, timeout=60)

    def init_swarm(self, cluster_id: str, instance_id: str) -> None:
        """The swarm starts on one node, which becomes the first manager (idempotent)."""
        r = self.row(instance_id)
        assert r is not None
        swarm.init(r.docker_host, r.private_ip)
        st = swarm.local_state(r.docker_host)
        self.update_row(instance_id, role="manager", swarm_node_id=st["node_id"])
        self.update_row_cluster_swarm(cluster_id, st["swarm_id"])

    def update_row_cluster_swarm(self, cluster_id: str, swarm_id: str) -> None:
        with self.rt.db.session() as s:
            c = s.get(Cluster, cluster_id)
            if c is not None:
                c.spec = {**(c.spec or {}), "swarm_id": swarm_id}

    def converge_managers(self, cluster_id: str, want: int) -> None:
        """Promote or demote so that exactly `want` members are managers (never the leader)."""
        leader = self.reachable_manager(cluster_id)
        rows = [r for r in self.rows(cluster_id) if r.swarm_node_id]
        mgrs = [r for r in rows if r.role == "manager"]
        workers = [r for r in rows if r.role == "worker"]
        while len(mgrs) < want and workers:
            w = workers.pop(0)
            swarm.set_role(leader.docker_host, w.swarm_node_id, "manager")
            self.update_row(w.instance_id, role="manager")
            mgrs.append(w)
        leader_ids = {m.node_id for m in swarm.members(leader.docker_host) if m.leader}
        for m in reversed(mgrs):
            if len(mgrs) <= want:
                break
            if m.swarm_node_id in leader_ids:
                continue
            swarm.set_role(leader.docker_host, m.swarm_node_id, "worker")
            self.update_row(m.instance_id, role="worker")
            mgrs.remove(m)
        swarm.wait_managers(leader.docker_host, [m.swarm_node_id for m in mgrs], timeout=60)

    def leave_swarm(self, cluster_id: str, r: InstanceRow) -> None:
        """Drain, demote, leave and `docker node rm` one member (idempotent)."""
        others = [m for m in self.managers(cluster_id) if m.instance_id != r.instance_id]
        if r.swarm_node_id and others:
            mgr = None
            for m in others:
                try:
                    if swarm.local_state(m.docker_host)["is_manager"]:
                        mgr = m
                        break
                except Exception:
                    continue
            if mgr is not None:
                try:
                    if r.role == "manager":
                        swarm.set_role(mgr.docker_host, r.swarm_node_id, "worker")
                    swarm.drain(mgr.docker_host, r.swarm_node_id)
                except Exception as e:
                    log.info("drain/demote of %s: %s", r.private_ip, e)
                swarm.leave(r.docker_host)
                swarm.remove(mgr.docker_host, r.swarm_node_id)
        else:
            swarm.leave(r.docker_host)
        self.update_row(r.instance_id, role="", swarm_node_id="")

    def release_to_pool(self, r: InstanceRow) -> None:
        """Return an instance to the free pool: fresh engine, no cluster certificate."""
        prov = self.provider(r.provider)
        inst = prov.reset(r.instance_id, self.spec_for(None, r.instance_id))
        self.update_row(r.instance_id, cluster_id=None, role="", swarm_node_id="", state=str(inst.state),
                        docker_host=inst.docker_host, details=dict(inst.details), health="unknown")

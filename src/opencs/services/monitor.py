"""Health: the real state of every node (machine running, member of its cluster's engine),
and the start-up reconciliation between the providers' inventory and the store. The periodic
refresh runs in opencs.loops.health."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from opencs.engines.driver import ENGINE_MACHINE_LABEL, ClusterDriver, MemberHealth
from opencs.providers.base import Instance, InstanceNotFound, Provider
from opencs.store.repos.clusters import ClusterRepo
from opencs.store.repos.instances import InstanceRepo

log = logging.getLogger("opencs.monitor")

_SETTLING = ("pending", "deleting")  # a task owns these rows: the monitor leaves them alone


class HealthService:
    def __init__(self, providers: Mapping[str, Provider], instances: InstanceRepo, clusters: ClusterRepo,
                 driver: ClusterDriver) -> None:
        self.providers = providers
        self.instances = instances
        self.clusters = clusters
        self.driver = driver
        # told of each node whose health changed: (cluster id, instance id, old health, new health)
        self.on_change: list[Callable[[str, str, str, str], None]] = []

    def refresh(self) -> None:
        """One pass: provider state per instance, the engine's view of the members per cluster."""
        rows = self.instances.all()
        members: dict[str, dict[str, MemberHealth]] = {}
        for c in self.clusters.live():
            view = self.driver.health(c.cluster_id)
            if view is not None:
                members[c.cluster_id] = view
        updates: dict[str, tuple[str, str]] = {}
        for r in rows:
            if r.state in _SETTLING:
                continue
            prov = self.providers.get(r.provider)
            if prov is None:
                continue
            try:
                state = str(prov.inspect(r.instance_id).state)
            except InstanceNotFound:
                state = "lost"
            except Exception as e:
                log.debug("inspect %s: %s", r.instance_id, e)
                state = "unhealthy"
            if state != "running":
                health = f"unhealthy: engine {state}"
            elif r.cluster_id and r.swarm_node_id:
                m = members.get(r.cluster_id, {}).get(r.swarm_node_id)
                sw = m.state if m is not None else "unknown"
                health = "healthy" if sw == "ready" else f"unhealthy: swarm node {sw}"
            else:
                health = "healthy"
            if (state, health) != (r.state, r.health):
                updates[r.instance_id] = (state, health)
        self.instances.set_health(updates, skip_states=_SETTLING)
        for r in rows:
            new = updates.get(r.instance_id)
            if new is not None and r.cluster_id and new[1] != r.health:
                for f in self.on_change:
                    f(r.cluster_id, r.instance_id, r.health or "", new[1])

    def _engine_owned(self, inst: Instance) -> bool:
        """A machine a cluster engine owns besides the nodes (a managed control plane, a load
        balancer) belongs to its cluster, not to the instance rows, while that cluster lives."""
        owner = (inst.details.get("labels") or {}).get(ENGINE_MACHINE_LABEL)
        c = self.clusters.get(owner) if owner else None
        return c is not None and c.state != "deleted"

    def reconcile_inventory(self) -> None:
        """At start-up: restart crashed engines (reboot semantics) and destroy provider instances the
        store does not know (made by a process killed before it recorded them — cannot happen with the
        record-first order, but a manual leftover can)."""
        for name, prov in self.providers.items():
            try:
                prov.check()
            except Exception as e:
                log.info("provider %s unavailable: %s", name, e)
                continue
            try:
                found = prov.adopt()
            except Exception:
                log.exception("provider %s: adopt failed", name)
                continue
            known = self.instances.ids_of_provider(name)
            for inst in found:
                if inst.instance_id not in known and not self._engine_owned(inst):
                    log.warning("destroying instance %s unknown to the store", inst.instance_id)
                    prov.destroy(inst.instance_id)

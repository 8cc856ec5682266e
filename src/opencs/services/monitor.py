"""Health: the real state of every node (machine running, member of its cluster's engine),
and the start-up reconciliation between the providers' inventory and the store. The periodic
refresh runs in opencs.loops.health."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from opencs.engines.driver import ENGINE_MACHINE_LABEL, ClusterDriver
from opencs.providers.base import Instance, InstanceNotFound, Provider
from opencs.store.repos.clusters import ClusterRepo
from opencs.store.repos.instances import InstanceRepo

if TYPE_CHECKING:
    from opencs.store.models import InstanceRow

log = logging.getLogger("opencs.monitor")
_T = TypeVar("_T")
_R = TypeVar("_R")

_SETTLING = ("pending", "deleting")  # a task owns these rows: the monitor leaves them alone

# A pass runs flat out for its first YIELD_AFTER seconds (1,000 nodes take about half of that);
# beyond, it probes SLICE nodes at a time and then sleeps as long as the slice took, so that the
# API sharing the process gets the interpreter between slices: at 10,000 nodes 16 probing threads
# took the GIL from the event loop for seconds, and a GET /clusters waited behind them.
YIELD_AFTER = 1.0
SLICE = 256


class HealthService:
    def __init__(self, providers: Mapping[str, Provider], instances: InstanceRepo, clusters: ClusterRepo,
                 driver: ClusterDriver, concurrency: int = 16) -> None:
        self.providers = providers
        self.instances = instances
        self.clusters = clusters
        self.driver = driver
        self.concurrency = concurrency
        # told of each node whose health changed: (cluster id, instance id, old health, new health)
        self.on_change: list[Callable[[str, str, str, str], None]] = []

    def refresh(self) -> None:
        """One pass: the provider's state of every instance and the engine's view of the members of
        every cluster that has any. Two store reads per pass whatever the size (the member rows go to
        the driver), and the engines are asked `concurrency` at a time: at 1,000 nodes a pass is
        1,000 machine probes and a members query per cluster, each a round trip to another machine."""
        rows = self.instances.all()
        live = self.clusters.live_ids()
        by_cluster: dict[str, list[InstanceRow]] = {}
        for r in rows:
            if r.cluster_id in live:
                by_cluster.setdefault(r.cluster_id, []).append(r)
        probed = [r for r in rows if r.state not in _SETTLING and r.provider in self.providers]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="opencs-health") as pool:

            def sliced(f: Callable[[_T], _R], items: list[_T]) -> list[_R]:
                out: list[_R] = []
                for i in range(0, len(items), SLICE):
                    t = time.monotonic()
                    out.extend(pool.map(f, items[i:i + SLICE]))
                    if t - started > YIELD_AFTER:
                        time.sleep(time.monotonic() - t)
                return out

            views = sliced(lambda cid: (cid, self.driver.member_health(cid, by_cluster[cid])), list(by_cluster))
            states = sliced(self._machine_state, probed)
            members = {cid: view for cid, view in views if view is not None}
        updates: dict[str, tuple[str, str]] = {}
        for r, state in zip(probed, states, strict=True):
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

    def _machine_state(self, r: InstanceRow) -> str:
        try:
            return str(self.providers[r.provider].inspect(r.instance_id).state)
        except InstanceNotFound:
            return "lost"
        except Exception as e:
            log.debug("inspect %s: %s", r.instance_id, e)
            return "unhealthy"

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

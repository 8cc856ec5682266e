"""Health: the real state of every node (engine reachable, swarm status), refreshed periodically,
and the start-up reconciliation between the providers' inventory and the store."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from sqlalchemy import select

from opencs.engines import swarm
from opencs.providers.base import InstanceNotFound
from opencs.store.db import utcnow
from opencs.store.models import Cluster, InstanceRow

if TYPE_CHECKING:
    from opencs.runtime import Runtime

log = logging.getLogger("opencs.monitor")


def refresh(rt: Runtime) -> None:
    """One pass: provider state per instance, swarm view per cluster."""
    with rt.db.session() as s:
        rows = list(s.scalars(select(InstanceRow)))
        clusters = {c.cluster_id: c for c in s.scalars(select(Cluster).where(Cluster.state != "deleted"))}
    swarm_view: dict[str, dict[str, str]] = {}
    for cid in clusters:
        for r in rows:
            if r.cluster_id == cid and r.role == "manager" and r.state == "running":
                try:
                    swarm_view[cid] = {m.node_id: m.state for m in swarm.members(r.docker_host)}
                    break
                except Exception:
                    continue
    updates: dict[str, tuple[str, str]] = {}
    for r in rows:
        if r.state in ("pending", "deleting"):
            continue
        prov = rt.providers.get(r.provider)
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
            sw = swarm_view.get(r.cluster_id, {}).get(r.swarm_node_id, "unknown")
            health = "healthy" if sw == "ready" else f"unhealthy: swarm node {sw}"
        else:
            health = "healthy"
        if (state, health) != (r.state, r.health):
            updates[r.instance_id] = (state, health)
    if updates:
        with rt.db.session() as s:
            for iid, (state, health) in updates.items():
                row = s.get(InstanceRow, iid)
                if row is not None and row.state not in ("pending", "deleting"):
                    row.state, row.health, row.updated = state, health, utcnow()


def reconcile_inventory(rt: Runtime) -> None:
    """At start-up: restart crashed engines (reboot semantics) and destroy provider instances the
    store does not know (made by a process killed before it recorded them — cannot happen with the
    record-first order, but a manual leftover can)."""
    for name, prov in rt.providers.items():
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
        with rt.db.session() as s:
            known = {r.instance_id for r in s.scalars(select(InstanceRow).where(InstanceRow.provider == name))}
        for inst in found:
            if inst.instance_id not in known:
                log.warning("destroying instance %s unknown to the store", inst.instance_id)
                prov.destroy(inst.instance_id)


class Monitor:
    def __init__(self, rt: Runtime, interval: float = 3.0) -> None:
        self.rt = rt
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="opencs-monitor", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                refresh(self.rt)
            except Exception:
                log.exception("health refresh failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)

"""What the router (opencs.routing) reads and writes: the clusters to route, the blue-green splits of
their projects, and each cluster's frontend port and routing_url (kept in Cluster.spec)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from opencs.store.db import Database
from opencs.store.models import Cluster, InstanceRow, Project

SERVE_STATES = ("running", "scaling", "updating")


@dataclass(frozen=True)
class RoutedCluster:
    """A cluster whose applications may be routed: its id and its persisted frontend port."""

    cluster_id: str
    routing_port: int | None


class RouteRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def routed_clusters(self) -> list[RoutedCluster]:
        with self.db.session() as s:
            rows = s.execute(select(Cluster.cluster_id, Cluster.spec).where(
                Cluster.state.in_(SERVE_STATES), Cluster.cluster_type == "swarm")).all()
            ids = [r.cluster_id for r in rows]
            with_members = set(s.scalars(select(InstanceRow.cluster_id).where(
                InstanceRow.cluster_id.in_(ids), InstanceRow.swarm_node_id != "", InstanceRow.private_ip != "")
                .distinct())) if ids else set()
        out = []
        for r in rows:
            if r.cluster_id in with_members:
                port = (r.spec or {}).get("routing_port")
                out.append(RoutedCluster(r.cluster_id, port if isinstance(port, int) else None))
        return out

    def release_slots(self, cluster_ids: list[str]) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        with self.db.session() as s:
            rows = s.execute(select(Project.cluster_id, Project.name, Project.state)
                             .where(Project.cluster_id.in_(cluster_ids))).all()
        for p in rows:
            bg = p.state.blue_green
            if bg is not None:
                out.setdefault(p.cluster_id, {})[p.name] = bg.slots.model_dump()
        return out

    def save_route(self, cluster_id: str, port: int, url: str) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id, with_for_update=True)
            if c is None or c.state not in SERVE_STATES:
                return
            spec = c.spec or {}
            if spec.get("routing_port") != port or spec.get("routing_url") != url:
                c.spec = {**spec, "routing_port": port, "routing_url": url}  # a new dict: SQLAlchemy sees it

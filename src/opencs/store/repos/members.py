"""The members of a cluster as the application engines need them (node id, address, engine, role).

Transitional: the cluster side's driver (opencs.engines.driver) will hand the application engines
their members; until then the composition root reads them here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from opencs.store.db import Database
from opencs.store.models import InstanceRow


@dataclass(frozen=True)
class MemberRow:
    node_id: str
    ip: str
    endpoint: str
    role: str
    state: str
    details: dict[str, Any] = field(default_factory=dict)


class MemberRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def of_cluster(self, cluster_id: str) -> list[MemberRow]:
        """Oldest first (the first manager is the one asked first)."""
        with self.db.session() as s:
            rows = s.execute(select(InstanceRow.swarm_node_id, InstanceRow.private_ip, InstanceRow.docker_host,
                                    InstanceRow.role, InstanceRow.state, InstanceRow.details)
                             .where(InstanceRow.cluster_id == cluster_id).order_by(InstanceRow.created)).all()
        return [MemberRow(r.swarm_node_id or "", r.private_ip or "", r.docker_host or "", r.role or "", r.state or "",
                          dict(r.details or {})) for r in rows]

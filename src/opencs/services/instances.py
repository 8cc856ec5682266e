"""Free instances: nodes that exist outside any cluster, ready to be attached (spec §5.6)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from opencs.errors import Conflict, NotFound
from opencs.services.clusters import ClusterService, node_view
from opencs.store.db import Database
from opencs.store.models import InstanceRow
from opencs.tasks.engine import TaskEngine


class InstanceService:
    def __init__(self, db: Database, tasks: TaskEngine, clusters: ClusterService) -> None:
        self.db = db
        self.tasks = tasks
        self.clusters = clusters

    def list(self, free_only: bool = False) -> list[dict[str, Any]]:
        with self.db.session() as s:
            q = select(InstanceRow).order_by(InstanceRow.created)
            if free_only:
                q = q.where(InstanceRow.cluster_id.is_(None))
            return [node_view(r, None) | {"cluster_id": r.cluster_id or ""} for r in s.scalars(q)]

    def create(self, count: int, provider: str = "local") -> str:
        self.clusters.check_provider(provider)
        return self.tasks.submit("instances_create", {"count": count, "provider": provider},
                                 target_type="instances")

    def delete(self, instance_id: str) -> str:
        with self.db.session() as s:
            r = s.get(InstanceRow, instance_id)
            if r is None:
                raise NotFound(f"Instance {instance_id} not found", code="ErrorInstanceNotFound")
            if r.cluster_id:
                raise Conflict(f"Instance {instance_id} belongs to cluster {r.cluster_id}: remove it from the "
                               "cluster first", code="ErrorInstanceBusy")
            r.state = "deleting"
            return self.tasks.submit("instance_delete", {"instance_id": instance_id}, session=s,
                                     target_type="instance", target_id=instance_id)

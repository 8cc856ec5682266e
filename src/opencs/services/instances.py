"""Free instances: nodes that exist outside any cluster, ready to be attached (spec §5.6)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from opencs.errors import ApiError, Conflict, NotFound, ProviderNotAvailable
from opencs.services.clusters import ClusterService, node_view
from opencs.store.db import Database, utcnow
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

    def register_ssh(self, target: str, *, password: str | None = None, private_key: str | None = None,
                     known_host_key: str | None = None, remote_socket: str | None = None) -> dict[str, Any]:
        """Register an existing Docker host reached by SSH as a free instance (provider "ssh")."""
        from opencs.providers.ssh import DEFAULT_REMOTE_SOCKET, SshError, SshProvider

        self.clusters.check_provider("ssh")
        prov = self.clusters.providers["ssh"]
        if not isinstance(prov, SshProvider):
            raise ProviderNotAvailable("the configured \"ssh\" provider cannot register hosts")
        try:
            inst = prov.register(target, password=password, private_key=private_key, known_host_key=known_host_key,
                                 remote_socket=remote_socket or DEFAULT_REMOTE_SOCKET)
        except SshError as e:
            # the message names what failed (auth, no docker, permission) and never holds a secret
            status = 409 if e.code == "InstanceAlreadyRegistered" else 400
            raise ApiError(e.message, code=e.code, status=status) from None
        now = utcnow()
        try:
            with self.db.session() as s:
                row = InstanceRow(instance_id=inst.instance_id, provider="ssh", cluster_id=None,
                                  private_ip=inst.private_ip, state=str(inst.state), health="unknown",
                                  docker_host=inst.docker_host, details=dict(inst.details), created=now, updated=now)
                s.add(row)
                s.flush()
                # the pinned host key's fingerprint lets the user check what was trusted on first use
                view = node_view(row, None) | {"cluster_id": "", "ssh": inst.details.get("ssh", ""),
                                               "host_key": inst.details.get("host_key", "")}
        except Exception:
            prov.destroy(inst.instance_id)  # not recorded: forget it now (start-up reconciliation would anyway)
            raise
        return view

"""Free instances: nodes that exist outside any cluster, ready to be attached (spec §5.6)."""

from __future__ import annotations

from typing import Any

from opencs.errors import ApiError, Conflict, NotFound, ProviderNotAvailable
from opencs.providers.base import RegistrationFailed
from opencs.services.clusters import ClusterService, TaskSubmitter, node_view
from opencs.store.repos.instances import InstanceRepo


class InstanceService:
    def __init__(self, instances: InstanceRepo, tasks: TaskSubmitter, clusters: ClusterService) -> None:
        self.repo = instances
        self.tasks = tasks
        self.clusters = clusters

    def list(self, free_only: bool = False) -> list[dict[str, Any]]:
        return [node_view(r, None) | {"cluster_id": r.cluster_id or ""} for r in self.repo.all(free_only)]

    def create(self, count: int, provider: str = "local") -> str:
        self.clusters.check_provider(provider)
        return self.tasks.submit("instances_create", {"count": count, "provider": provider},
                                 target_type="instances")

    def _check_free(self, instance_id: str) -> None:
        r = self.repo.get(instance_id)
        if r is None:
            raise NotFound(f"Instance {instance_id} not found", code="ErrorInstanceNotFound")
        if r.cluster_id:
            raise Conflict(f"Instance {instance_id} belongs to cluster {r.cluster_id}: remove it from the "
                           "cluster first", code="ErrorInstanceBusy")

    def delete(self, instance_id: str) -> str:
        """Start deleting a free instance; a repeated DELETE while that runs gets the same task."""
        self._check_free(instance_id)
        tid = self.repo.start_delete(
            instance_id, "instance_delete",
            lambda s: self.tasks.submit("instance_delete", {"instance_id": instance_id}, session=s,
                                        target_type="instance", target_id=instance_id))
        if tid is None:  # attached or deleted meanwhile: answer what is true now
            self._check_free(instance_id)
            raise NotFound(f"Instance {instance_id} not found", code="ErrorInstanceNotFound")
        return tid

    def register_ssh(self, target: str, *, password: str | None = None, private_key: str | None = None,
                     known_host_key: str | None = None, remote_socket: str | None = None) -> dict[str, Any]:
        """Register an existing host reached by SSH as a free instance (provider "ssh")."""
        self.clusters.check_provider("ssh")
        prov = self.clusters.providers["ssh"]
        if not prov.capabilities.registers:
            raise ProviderNotAvailable("the configured \"ssh\" provider cannot register hosts")
        try:
            inst = prov.register(target, password=password, private_key=private_key,
                                 known_host_key=known_host_key, remote_socket=remote_socket)
        except RegistrationFailed as e:
            # the message names what failed (auth, no docker, permission) and never holds a secret
            status = 409 if e.code == "InstanceAlreadyRegistered" else 400
            raise ApiError(e.message, code=e.code, status=status) from None
        try:
            row = self.repo.add_registered(inst.instance_id, "ssh", inst.private_ip, str(inst.state),
                                           inst.docker_host, dict(inst.details))
        except Exception:
            prov.destroy(inst.instance_id)  # not recorded: forget it now (start-up reconciliation would anyway)
            raise
        # the pinned host key's fingerprint lets the user check what was trusted on first use
        return node_view(row, None) | {"cluster_id": "", "ssh": inst.details.get("ssh", ""),
                                       "host_key": inst.details.get("host_key", "")}

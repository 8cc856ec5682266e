"""Instance rows (the spec's ECS instances: free machines or cluster members)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from opencs.store.db import Database, utcnow
from opencs.store.models import InstanceRow, Task
from opencs.store.repos.tasks import ACTIVE

Submit = Callable[[Session], str]  # submits a task inside the caller's unit of work

_FIELDS = frozenset(("cluster_id", "private_ip", "role", "state", "health", "docker_host", "swarm_node_id",
                     "details", "provider"))


class InstanceRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------ reads

    def get(self, instance_id: str) -> InstanceRow | None:
        with self.db.session() as s:
            return s.get(InstanceRow, instance_id)

    def of_cluster(self, cluster_id: str) -> list[InstanceRow]:
        """Members in the order they were created."""
        with self.db.read() as s:
            q = select(InstanceRow).where(InstanceRow.cluster_id == cluster_id).order_by(InstanceRow.created)
            return list(s.scalars(q))

    def all(self, free_only: bool = False) -> list[InstanceRow]:
        with self.db.read() as s:
            q = select(InstanceRow).order_by(InstanceRow.created)
            if free_only:
                q = q.where(InstanceRow.cluster_id.is_(None))
            return list(s.scalars(q))

    def by_address(self, account_id: str, private_ip: str) -> InstanceRow | None:
        """The account's machine with this address (an attach script finds its machine by the caller's address)."""
        with self.db.session() as s:
            q = select(InstanceRow).where(InstanceRow.private_ip == private_ip, InstanceRow.account_id == account_id)
            return s.scalars(q.order_by(InstanceRow.created).limit(1)).first()

    def by_ids(self, instance_ids: Sequence[str]) -> dict[str, InstanceRow]:
        with self.db.session() as s:
            return {r.instance_id: r for r in s.scalars(
                select(InstanceRow).where(InstanceRow.instance_id.in_(list(instance_ids))))}

    def ids_of_provider(self, provider: str) -> set[str]:
        with self.db.session() as s:
            return set(s.scalars(select(InstanceRow.instance_id).where(InstanceRow.provider == provider)))

    # ------------------------------------------------------------ writes

    def add_pending(self, instance_ids: Sequence[str], provider: str, cluster_id: str | None) -> None:
        """Record planned instances before their provider creates anything (never an orphan)."""
        now = utcnow()
        with self.db.session() as s:
            for iid in instance_ids:
                if s.get(InstanceRow, iid) is None:
                    s.add(InstanceRow(instance_id=iid, provider=provider, cluster_id=cluster_id,
                                      state="pending", created=now, updated=now, details={}))

    def add_registered(self, instance_id: str, provider: str, private_ip: str, state: str, docker_host: str,
                       details: dict[str, Any]) -> InstanceRow:
        now = utcnow()
        with self.db.session() as s:
            row = InstanceRow(instance_id=instance_id, provider=provider, cluster_id=None, private_ip=private_ip,
                              state=state, health="unknown", docker_host=docker_host, details=details,
                              created=now, updated=now)
            s.add(row)
            s.flush()
            return row

    def update(self, instance_id: str, **values: Any) -> None:
        unknown = set(values) - _FIELDS
        if unknown:
            raise ValueError(f"not an instance field: {sorted(unknown)}")
        with self.db.session() as s:
            r = s.get(InstanceRow, instance_id)
            if r is not None:
                for k, v in values.items():
                    setattr(r, k, v)
                r.updated = utcnow()

    def set_membership(self, instance_id: str, role: str, member_id: str) -> None:
        """What the cluster engine made of the machine ("" and "": not a member)."""
        self.update(instance_id, role=role, swarm_node_id=member_id)

    def delete(self, instance_id: str) -> None:
        with self.db.session() as s:
            row = s.get(InstanceRow, instance_id)
            if row is not None:
                s.delete(row)

    def set_health(self, updates: dict[str, tuple[str, str]], skip_states: tuple[str, ...]) -> None:
        """Write (state, health) per instance, except rows meanwhile in `skip_states`."""
        if not updates:
            return
        with self.db.session() as s:
            for iid, (state, health) in updates.items():
                row = s.get(InstanceRow, iid)
                if row is not None and row.state not in skip_states:
                    row.state, row.health, row.updated = state, health, utcnow()

    def start_delete(self, instance_id: str, task_type: str, submit: Submit) -> str | None:
        """Mark a free instance `deleting` and submit its delete task, unless a delete task for it
        is already active: then that task's id (two DELETEs in a row start one task). None when
        the row is not a free instance any more."""
        with self.db.session() as s:
            res = s.execute(update(InstanceRow)
                            .where(InstanceRow.instance_id == instance_id, InstanceRow.cluster_id.is_(None),
                                   InstanceRow.state != "deleting")
                            .values(state="deleting", updated=utcnow()))
            if res.rowcount == 1:  # type: ignore[attr-defined]
                return submit(s)  # the compare-and-set won: this request owns the delete
        active = self._active_task(task_type, instance_id)
        if active is not None:
            return active
        with self.db.session() as s:  # deleting, but its task ended (failed): try again
            r = s.get(InstanceRow, instance_id)
            if r is None or r.cluster_id:
                return None
            return submit(s)

    def _active_task(self, task_type: str, target_id: str) -> str | None:
        with self.db.session() as s:
            return s.scalar(select(Task.task_id).where(Task.task_type == task_type, Task.target_id == target_id,
                                                       Task.state.in_(ACTIVE)).order_by(Task.created.desc()))

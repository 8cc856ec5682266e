"""Projects (spec §10.4) as the store keeps them: rows with their typed state, and the one
transaction that starts an operation (idle check, state change and task submission together)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from opencs.store.db import Database, utcnow
from opencs.store.models import Cluster, Project, Task
from opencs.store.project_state import ProjectState
from opencs.store.repos.tasks import ACTIVE, TaskRepo


class ProjectMissing(Exception):
    pass


class ProjectExists(Exception):
    pass


class ProjectContended(Exception):
    """Another request changed the row's task between the read and the write."""


@dataclass
class Plan:
    """What a request does to a project whose task may still run (desired state wins)."""

    values: dict[str, Any]  # the row's new desired state
    reuse: bool = False  # the running task already does exactly this: answer with its id
    fold: dict[str, Any] | None = None  # new params for the running task if no worker claimed it yet
    supersede: bool = True  # else the new task only follows it (it runs to its end)


# (the locked row, its task while that runs) -> the plan (raises to refuse)
Prepare = Callable[[Project, Task | None], Plan]
# (the unit of work, the task to queue behind or None) -> the id of the task submitted in it
Submit = Callable[[Any, str | None], str]


class ProjectRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def cluster(self, cluster_id: str) -> Cluster | None:
        with self.db.session() as s:
            return s.get(Cluster, cluster_id)

    def get(self, cluster_id: str, name: str) -> Project | None:
        with self.db.session() as s:
            return s.get(Project, (cluster_id, name))

    def of_cluster(self, cluster_id: str) -> list[Project]:
        with self.db.session() as s:
            return list(s.scalars(select(Project).where(Project.cluster_id == cluster_id).order_by(Project.created)))

    def task_running(self, task_id: str | None) -> bool:
        if not task_id:
            return False
        with self.db.session() as s:
            t = s.get(Task, task_id)
        return t is not None and t.state in ACTIVE

    def settled(self, row: Project) -> Project:
        """The row as its last task left it (a task that ended after `row` was read wrote a newer one)."""
        if not row.task_id:
            return row
        with self.db.session() as s:
            t = s.get(Task, row.task_id)
            if t is not None and t.state in ACTIVE:
                return row
            fresh = s.get(Project, (row.cluster_id, row.name))
        return fresh if fresh is not None else row

    def insert(self, row: Project, submit: Submit) -> None:
        """Add the row and submit its first task in one transaction (ProjectExists if taken)."""
        try:
            with self.db.session() as s:
                s.add(row)
                s.flush()
                row.task_id = submit(s, None)
        except IntegrityError:
            raise ProjectExists(row.name) from None

    def begin(self, cluster_id: str, name: str, prepare: Prepare, submit: Submit) -> str:
        """`prepare` the row and write its new desired state with the task that converges to it —
        one transaction, guarded by a compare-and-set on the row's task id against concurrent
        requests. While the row's task runs, the plan says whether that task is reused, given the
        new params (nobody claimed it yet: it will read the new row) or followed by a new task
        queued behind it (and superseded: it stops at its next stage boundary)."""
        with self.db.session() as s:
            row = s.get(Project, (cluster_id, name))
            if row is None:
                raise ProjectMissing(name)
            old_tid = row.task_id
            t = s.get(Task, old_tid) if old_tid else None
            active = t if t is not None and t.state in ACTIVE else None
            plan = prepare(row, active)
            if active is not None and (plan.reuse or plan.fold is not None
                                       and TaskRepo.fold(s, active.task_id, plan.fold)):
                tid = active.task_id
            else:
                tid = submit(s, active.task_id if active is not None else None)
                if active is not None and plan.supersede:
                    TaskRepo.supersede(s, active.task_id, tid)
            guard = Project.task_id.is_(None) if old_tid is None else Project.task_id == old_tid
            # and the row as read: a fold keeps the task id, so two requests folding at once would
            # otherwise both win and the first one's change be lost
            res = s.execute(update(Project).where(Project.cluster_id == cluster_id, Project.name == name, guard,
                                                  Project.updated == row.updated)
                            .values(task_id=tid, updated=utcnow(), **plan.values)
                            .execution_options(synchronize_session=False))
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise ProjectContended(name)
        return tid

    def change_state(self, cluster_id: str, name: str,
                     change: Callable[[Project, bool], ProjectState]) -> Project | None:
        """Replace the row's state by `change(row, busy)` (which raises to refuse)."""
        with self.db.session() as s:
            r = s.get(Project, (cluster_id, name))
            if r is None:
                return None
            t = s.get(Task, r.task_id) if r.task_id else None
            r.state = change(r, t is not None and t.state in ACTIVE)
            r.updated = utcnow()
            return r

    def write(self, cluster_id: str, name: str, state: dict[str, Any] | None = None, *, task: str | None = None,
              **values: Any) -> None:
        """Set column `values` and replace the named fields of the state (a vanished row: nothing).
        `task`: the writer; once the row belongs to a newer task, the status it reports
        (current_state, last_error) is that task's to write and is left alone."""
        with self.db.session() as s:
            row = s.get(Project, (cluster_id, name))
            if row is None:
                return
            if task is not None and row.task_id not in (None, task):
                values.pop("current_state", None)
                state = {k: v for k, v in state.items() if k != "last_error"} if state is not None else None
            for k, v in values.items():
                setattr(row, k, v)
            if state is not None:
                row.state = row.state.changed(**state)
            row.updated = utcnow()

    def delete(self, cluster_id: str, name: str) -> None:
        with self.db.session() as s:
            row = s.get(Project, (cluster_id, name))
            if row is not None:
                s.delete(row)

"""Durable task rows: creation, compare-and-set claims, lease-guarded writes.

On PostgreSQL a new task, and a task that ended (its queued successor becomes claimable), is told
to every process sharing the database (NOTIFY, delivered at commit): workers of another process
(`opencs worker` beside `opencs server --workers 0`) claim it at once instead of at their next poll.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import event, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from opencs.store.db import Database, utcnow
from opencs.store.models import Task

ACTIVE = ("pending", "running")
CHANNEL = "opencs_tasks"  # NOTIFY channel: something became claimable

log = logging.getLogger("opencs.tasks")


class TaskRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, row: Task, session: Session | None, on_commit: Callable[[], None]) -> None:
        """Insert `row`, in the caller's unit of work when given (atomic with a state change);
        `on_commit` runs once the row is visible to other sessions."""
        if session is not None:
            session.add(row)
            self._notify(session)
            event.listen(session, "after_commit", lambda _s: on_commit(), once=True)
            return
        with self.db.session() as s:
            s.add(row)
            self._notify(s)
        on_commit()

    def _notify(self, session: Session) -> None:
        """Tell the other processes' workers at commit (PostgreSQL; SQLite has one process)."""
        if not self.db.is_sqlite:
            session.execute(select(func.pg_notify(CHANNEL, "")))

    def listen(self, on_wake: Callable[[], None], stop: threading.Event) -> threading.Thread | None:
        """On PostgreSQL: a thread that calls `on_wake` whenever any process made a task claimable
        (and once each time it (re)connects: what came meanwhile); None on SQLite."""
        if self.db.is_sqlite:
            return None
        t = threading.Thread(target=self._listen, args=(on_wake, stop), name="opencs-task-wakeups", daemon=True)
        t.start()
        return t

    def _listen(self, on_wake: Callable[[], None], stop: threading.Event) -> None:
        import psycopg

        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    on_wake()
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            on_wake()
                            if stop.is_set():
                                break
            except psycopg.Error as e:  # the workers still poll meanwhile
                log.warning("task wake-ups: %s; listening again in 2s", type(e).__name__)
                stop.wait(2.0)

    def get(self, task_id: str) -> Task | None:
        with self.db.read() as s:
            return s.get(Task, task_id)

    def claimable(self, now: float, limit: int = 8) -> Sequence[str]:
        """Active tasks nobody holds, except those queued behind a task that has not ended."""
        before = aliased(Task)
        waiting = select(before.task_id).where(before.task_id == Task.after, before.state.in_(ACTIVE)).exists()
        with self.db.read() as s:
            return s.scalars(
                select(Task.task_id)
                .where(Task.state.in_(ACTIVE), or_(Task.owner.is_(None), Task.lease_until < now), ~waiting)
                .order_by(Task.created)
                .limit(limit)
            ).all()

    def claim(self, task_id: str, owner: str, now: float, lease: float) -> Task | None:
        """Compare-and-set: take the task if it is still free (or its lease ran out)."""
        with self.db.session() as s:
            res = s.execute(
                update(Task)
                .where(Task.task_id == task_id, Task.state.in_(ACTIVE),
                       or_(Task.owner.is_(None), Task.lease_until < now))
                .values(owner=owner, lease_until=now + lease, attempts=Task.attempts + 1,
                        state="running", updated=utcnow())
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return None  # someone else won the race
            return s.get(Task, task_id)

    @staticmethod
    def fold(session: Session, task_id: str, params: dict[str, Any]) -> bool:
        """Give a task nobody has claimed yet new params, in the caller's unit of work. False when a
        worker claimed it meanwhile (compare-and-set: it may already read the old desired state)."""
        res = session.execute(
            update(Task).where(Task.task_id == task_id, Task.state == "pending", Task.owner.is_(None),
                               Task.attempts == 0, Task.superseded_by.is_(None))
            .values(params=params, updated=utcnow()).execution_options(synchronize_session=False))
        return bool(res.rowcount == 1)  # type: ignore[attr-defined]

    @staticmethod
    def supersede(session: Session, task_id: str, by: str) -> None:
        """Mark `task_id` superseded by `by` (in the caller's unit of work, with `by`'s submission)."""
        session.execute(update(Task).where(Task.task_id == task_id).values(superseded_by=by, updated=utcnow())
                        .execution_options(synchronize_session=False))

    @staticmethod
    def active_of(session: Session, target_type: str, target_id: str, cluster_id: str | None) -> Task | None:
        """The newest task of a target that has not ended (the head of its chain), in the caller's
        unit of work."""
        return session.scalars(
            select(Task).where(Task.target_type == target_type, Task.target_id == target_id,
                               Task.cluster_id == cluster_id, Task.state.in_(ACTIVE))
            .order_by(Task.created.desc(), Task.task_id.desc()).limit(1)).first()

    def update_owned(self, task_id: str, owner: str, values: dict[str, Any]) -> bool:
        """Write only while `owner` holds the lease; False when it no longer does. A task that ends
        is told to the other processes (a successor queued behind it is claimable now)."""
        with self.db.session() as s:
            res = s.execute(
                update(Task).where(Task.task_id == task_id, Task.owner == owner).values(updated=utcnow(), **values)
            )
            ok = bool(res.rowcount == 1)  # type: ignore[attr-defined]
            if ok and values.get("state", "running") not in ACTIVE:
                self._notify(s)
            return ok

    def active_counts(self) -> dict[str, int]:
        """Tasks not yet ended, by state (pending, running)."""
        with self.db.read() as s:
            rows = s.execute(select(Task.state, func.count()).where(Task.state.in_(ACTIVE)).group_by(Task.state))
            found = {str(state): int(n) for state, n in rows}
        return {state: found.get(state, 0) for state in ACTIVE}

    def release_dead_local_owners(self, host: str) -> int:
        """Tasks owned by a process of this host that no longer exists become free at once."""
        n = 0
        with self.db.session() as s:
            for row in s.scalars(select(Task).where(Task.state.in_(ACTIVE), Task.owner.like(f"{host}:%"))):
                try:
                    pid = int((row.owner or "").split(":")[1])
                except (IndexError, ValueError):
                    continue
                if pid != os.getpid() and not os.path.exists(f"/proc/{pid}"):
                    row.owner, row.lease_until = None, 0.0
                    n += 1
            if n:
                self._notify(s)
        return n

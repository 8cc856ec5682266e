"""Events of clusters and projects (opencs.services.events): appended, read after an id, pruned by age."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select

from opencs.store.db import Database
from opencs.store.models import Event


class EventRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, row: Event) -> None:
        with self.db.session() as s:
            s.add(row)

    def after(self, cluster_id: str, after_id: int, project: str | None, kind: str | None,
              limit: int) -> list[Event]:
        with self.db.session() as s:
            q = select(Event).where(Event.cluster_id == cluster_id, Event.event_id > after_id)
            if project:
                q = q.where(Event.project == project)
            if kind:
                q = q.where(Event.kind == kind)
            return list(s.scalars(q.order_by(Event.event_id).limit(limit)))

    def newest(self, cluster_id: str, project: str | None, kind: str | None, limit: int) -> list[Event]:
        with self.db.session() as s:
            q = select(Event).where(Event.cluster_id == cluster_id)
            if project:
                q = q.where(Event.project == project)
            if kind:
                q = q.where(Event.kind == kind)
            return list(reversed(list(s.scalars(q.order_by(Event.event_id.desc()).limit(limit)))))

    def prune(self, before: datetime) -> int:
        with self.db.session() as s:
            return int(s.execute(delete(Event).where(Event.at < before)).rowcount or 0)  # type: ignore[attr-defined]

"""Triggers (spec §11): rows with hashed secrets, found by id or by token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from opencs.store.db import Database, utcnow
from opencs.store.models import Trigger


class TriggerRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, row: Trigger) -> None:
        with self.db.session() as s:
            s.add(row)

    def of_cluster(self, cluster_id: str, project: str | None = None) -> list[Trigger]:
        with self.db.session() as s:
            q = select(Trigger).where(Trigger.cluster_id == cluster_id).order_by(Trigger.created)
            if project:
                q = q.where(Trigger.project == project)
            return list(s.scalars(q))

    def get(self, trigger_id: str) -> Trigger | None:
        with self.db.session() as s:
            return s.get(Trigger, trigger_id)

    def delete(self, trigger_id: str) -> None:
        with self.db.session() as s:
            t = s.get(Trigger, trigger_id)
            if t is not None:
                s.delete(t)

    def update(self, trigger_id: str, **values: Any) -> Trigger | None:
        with self.db.session() as s:
            t = s.get(Trigger, trigger_id)
            if t is None:
                return None
            for k, v in values.items():
                setattr(t, k, v)
            return t

    def by_tokens(self, tokens: list[str]) -> Trigger | None:
        with self.db.session() as s:
            for token in tokens:
                t = s.scalars(select(Trigger).where(Trigger.token == token)).first()
                if t is not None:
                    return t
        return None

    def invoked(self, tokens: list[str], check: Callable[[Trigger], None]) -> Trigger | None:
        """The trigger with the first of `tokens` that exists, after `check` (which raises to refuse)
        accepted it; its last_invoked is written in the same transaction (afterwards it would wait
        for the SQLite write lock that the woken task worker holds)."""
        with self.db.session() as s:
            for token in tokens:
                t = s.scalars(select(Trigger).where(Trigger.token == token)).first()
                if t is not None:
                    check(t)
                    t.last_invoked = utcnow()
                    return t
        return None

    def following_images(self) -> list[Trigger]:
        with self.db.session() as s:
            return list(s.scalars(select(Trigger).where(Trigger.image_update.is_(True))))

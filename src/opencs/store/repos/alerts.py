"""Scaling alert rules (opencs.services.alerts)."""

from __future__ import annotations

from sqlalchemy import select

from opencs.store.db import Database
from opencs.store.models import AlertRule


class AlertRuleRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, row: AlertRule) -> None:
        with self.db.session() as s:
            s.add(row)

    def get(self, rule_id: str) -> AlertRule | None:
        with self.db.session() as s:
            return s.get(AlertRule, rule_id)

    def of_cluster(self, cluster_id: str) -> list[AlertRule]:
        with self.db.session() as s:
            return list(s.scalars(select(AlertRule).where(AlertRule.cluster_id == cluster_id)
                                  .order_by(AlertRule.created)))

    def all(self) -> list[AlertRule]:
        with self.db.session() as s:
            return list(s.scalars(select(AlertRule).order_by(AlertRule.created)))

    def delete(self, rule_id: str) -> None:
        with self.db.session() as s:
            row = s.get(AlertRule, rule_id)
            if row is not None:
                s.delete(row)

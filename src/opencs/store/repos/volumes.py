"""Cluster data volumes (spec §10.25) as the store keeps them (secrets encrypted by the caller)."""

from __future__ import annotations

from sqlalchemy import select

from opencs.store.db import Database
from opencs.store.models import AppVolume


class VolumeRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, cluster_id: str, name: str) -> AppVolume | None:
        with self.db.session() as s:
            return s.get(AppVolume, (cluster_id, name))

    def of_cluster(self, cluster_id: str) -> list[AppVolume]:
        with self.db.session() as s:
            return list(s.scalars(select(AppVolume).where(AppVolume.cluster_id == cluster_id)))

    def names(self, cluster_id: str) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(AppVolume.name).where(AppVolume.cluster_id == cluster_id)))

    def add(self, row: AppVolume) -> None:
        with self.db.session() as s:
            s.add(row)

    def delete(self, cluster_id: str, name: str) -> None:
        with self.db.session() as s:
            r = s.get(AppVolume, (cluster_id, name))
            if r is not None:
                s.delete(r)

"""Attach-script tokens by hash: issued, claimed once by the machine that runs the script."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update

from opencs.store.db import Database, utcnow
from opencs.store.models import AttachToken


@dataclass(frozen=True)
class AttachTokenRecord:
    token_hash: str
    cluster_id: str
    account_id: str
    options: dict[str, Any]
    created: datetime
    expires: datetime
    used_at: datetime | None
    instance_id: str
    task_id: str


def _rec(r: AttachToken) -> AttachTokenRecord:
    return AttachTokenRecord(r.token_hash, r.cluster_id, r.account_id, dict(r.options or {}), r.created, r.expires,
                             r.used_at, r.instance_id, r.task_id)


class AttachTokenRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, token_hash: str, cluster_id: str, account_id: str, options: dict[str, Any],
            expires: datetime) -> None:
        with self.db.session() as s:
            s.add(AttachToken(token_hash=token_hash, cluster_id=cluster_id, account_id=account_id,
                              options=options, created=utcnow(), expires=expires))

    def get(self, token_hash: str) -> AttachTokenRecord | None:
        with self.db.session() as s:
            r = s.get(AttachToken, token_hash)
            return _rec(r) if r is not None else None

    def claim(self, token_hash: str, instance_id: str) -> bool:
        """Mark the token used by `instance_id`: True for the one caller that finds it unused and
        unexpired (a conditional UPDATE, so two machines racing get one winner in any database)."""
        now = utcnow()
        with self.db.session() as s:
            res = s.execute(update(AttachToken)
                            .where(AttachToken.token_hash == token_hash, AttachToken.used_at.is_(None),
                                   AttachToken.expires > now)
                            .values(used_at=now, instance_id=instance_id))
            return bool(getattr(res, "rowcount", 0) == 1)

    def set_task(self, token_hash: str, task_id: str) -> None:
        with self.db.session() as s:
            s.execute(update(AttachToken).where(AttachToken.token_hash == token_hash).values(task_id=task_id))

    def release(self, token_hash: str) -> None:
        """Undo a claim whose join could not even be submitted (the token stays usable)."""
        with self.db.session() as s:
            s.execute(update(AttachToken).where(AttachToken.token_hash == token_hash, AttachToken.task_id == "")
                      .values(used_at=None, instance_id=""))

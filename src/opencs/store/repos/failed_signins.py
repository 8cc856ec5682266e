"""Failed console sign-ins (opencs.services.failed_signins): a row per key and failure, by wall clock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, func, insert, select

from opencs.store.db import Database
from opencs.store.models import FailedSignIn


class FailedSignInRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def counts(self, key_hashes: Sequence[str], since: datetime) -> dict[str, int]:
        """The failures of each key after `since` (a key without any is absent)."""
        with self.db.session() as s:
            rows = s.execute(select(FailedSignIn.key_hash, func.count())
                             .where(FailedSignIn.key_hash.in_(key_hashes), FailedSignIn.at > since)
                             .group_by(FailedSignIn.key_hash)).all()
            return {k: int(n) for k, n in rows}

    def add(self, key_hashes: Sequence[str], at: datetime, prune_before: datetime) -> None:
        """A failure against each key; failures from before `prune_before` go."""
        with self.db.session() as s:
            s.execute(delete(FailedSignIn).where(FailedSignIn.at <= prune_before))
            s.execute(insert(FailedSignIn), [{"key_hash": k, "at": at} for k in key_hashes])

    def clear(self, key_hash: str) -> None:
        with self.db.session() as s:
            s.execute(delete(FailedSignIn).where(FailedSignIn.key_hash == key_hash))

    def count(self) -> int:
        """Every row kept (the tests' check that old ones go)."""
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(FailedSignIn)) or 0

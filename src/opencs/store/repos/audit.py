"""The audit log: appended under a lock so that each entry chains onto the one before it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text

from opencs.store.db import Database
from opencs.store.models import AuditEntry


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: datetime
    account_id: str
    user_name: str
    access_key_id: str
    action: str
    resource: str
    source: str
    request_id: str
    outcome: str
    prev_hash: str
    hash: str


def _rec(r: AuditEntry) -> AuditRecord:
    return AuditRecord(r.seq, r.at, r.account_id, r.user_name, r.access_key_id, r.action, r.resource, r.source,
                       r.request_id, r.outcome, r.prev_hash, r.hash)


class AuditRepo:
    GENESIS = "0" * 64

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()  # this process; other processes: the database's lock below

    def append(self, make: Callable[[int, str], AuditRecord]) -> AuditRecord:
        """Insert `make(seq, prev_hash)` after the last entry, in one transaction."""
        with self._lock, self.db.session() as s:
            if self.db.is_sqlite:
                s.execute(text("UPDATE audit_log SET seq = seq WHERE 0"))  # take the write lock first
            else:
                s.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
            last = s.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)).first()
            seq, prev = (last[0] + 1, last[1]) if last else (1, self.GENESIS)
            rec = make(seq, prev)
            s.add(AuditEntry(seq=rec.seq, at=rec.at, account_id=rec.account_id, user_name=rec.user_name,
                             access_key_id=rec.access_key_id, action=rec.action, resource=rec.resource,
                             source=rec.source, request_id=rec.request_id, outcome=rec.outcome,
                             prev_hash=rec.prev_hash, hash=rec.hash))
            return rec

    def query(self, account_id: str | None = None, action: str | None = None, user_name: str | None = None,
              since: datetime | None = None, limit: int = 100) -> list[AuditRecord]:
        q = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(limit)
        if account_id is not None:
            q = q.where(AuditEntry.account_id == account_id)
        if action:
            q = q.where(AuditEntry.action == action)
        if user_name:
            q = q.where(AuditEntry.user_name == user_name)
        if since is not None:
            q = q.where(AuditEntry.at >= since)
        with self.db.session() as s:
            return [_rec(r) for r in s.scalars(q)][::-1]

    def all(self, batch: int = 1000) -> Iterator[AuditRecord]:
        last = 0
        while True:
            with self.db.session() as s:
                rows = [_rec(r) for r in s.scalars(select(AuditEntry).where(AuditEntry.seq > last)
                                                   .order_by(AuditEntry.seq).limit(batch))]
            if not rows:
                return
            yield from rows
            last = rows[-1].seq

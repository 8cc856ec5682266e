"""Console sessions (opencs.services.console_sessions): rows keyed by the SHA-256 of the cookie's id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update

from opencs.store.db import Database
from opencs.store.models import ConsoleSession


@dataclass(frozen=True)
class SessionRecord:
    sid_hash: str
    access_key_id: str
    user_id: str
    stamp: str
    must_reset: bool
    expires: datetime


class ConsoleSessionRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, rec: SessionRecord, now: datetime, max_rows: int) -> None:
        """Insert a session; the lapsed ones go first, and while `max_rows` are still there the
        ones closest to lapsing."""
        with self.db.session() as s:
            s.execute(delete(ConsoleSession).where(ConsoleSession.expires < now))
            extra = (s.scalar(select(func.count()).select_from(ConsoleSession)) or 0) - max_rows + 1
            if extra > 0:
                oldest = select(ConsoleSession.sid_hash).order_by(ConsoleSession.expires).limit(extra)
                s.execute(delete(ConsoleSession).where(ConsoleSession.sid_hash.in_(oldest.scalar_subquery())))
            s.add(ConsoleSession(sid_hash=rec.sid_hash, access_key_id=rec.access_key_id, user_id=rec.user_id,
                                 stamp=rec.stamp, must_reset=rec.must_reset, created=now, expires=rec.expires))

    def get(self, sid_hash: str) -> SessionRecord | None:
        with self.db.session() as s:
            r = s.get(ConsoleSession, sid_hash)
            return SessionRecord(r.sid_hash, r.access_key_id, r.user_id, r.stamp, r.must_reset, r.expires) \
                if r is not None else None

    def extend(self, sid_hash: str, expires: datetime) -> None:
        """Slide the idle window (a closed session stays closed: nothing is inserted)."""
        with self.db.session() as s:
            s.execute(update(ConsoleSession).where(ConsoleSession.sid_hash == sid_hash).values(expires=expires))

    def password_set(self, sid_hash: str, stamp: str) -> None:
        """The session's user set a new password: its new stamp, no reset required any more."""
        with self.db.session() as s:
            s.execute(update(ConsoleSession).where(ConsoleSession.sid_hash == sid_hash)
                      .values(stamp=stamp, must_reset=False))

    def delete(self, sid_hash: str) -> None:
        with self.db.session() as s:
            s.execute(delete(ConsoleSession).where(ConsoleSession.sid_hash == sid_hash))

    def count(self) -> int:
        with self.db.session() as s:
            return s.scalar(select(func.count()).select_from(ConsoleSession)) or 0

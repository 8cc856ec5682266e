"""Seen signature nonces: a replay is refused across restarts and across every process sharing the
database (the primary key does the work)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from opencs.store.db import Database, utcnow
from opencs.store.models import Nonce


class NonceStore:
    """Remembers nonces per AccessKey in the database, so a replay is refused across restarts and
    across every process sharing the database (the primary key does the work)."""

    def __init__(self, db: Database, retain: timedelta) -> None:
        self.db = db
        self.retain = retain
        self._last_purge = datetime.min
        # One statement in autocommit: a single round trip (no BEGIN/COMMIT around it), and a
        # duplicate returns no row, not an exception. The commit stays durable.
        dialect = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
        # RETURNING tells a new row from a duplicate (psycopg reports no rowcount here)
        self._insert = (dialect(Nonce).on_conflict_do_nothing(index_elements=["access_key_id", "nonce"])
                        .returning(Nonce.nonce))
        self._engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")

    def remember(self, access_key_id: str, nonce: str) -> bool:
        now = utcnow()
        # Core, not the ORM: this insert is on the path of every request that carries a nonce
        with self._engine.connect() as conn:
            added = conn.execute(self._insert, {"access_key_id": access_key_id, "nonce": nonce, "seen_at": now})
            new = added.first() is not None
        if not new:
            return False
        if now - self._last_purge > timedelta(seconds=60):
            self._last_purge = now
            with self.db.session() as s:
                s.execute(delete(Nonce).where(Nonce.seen_at < now - self.retain))
        return True

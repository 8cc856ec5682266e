"""Seen signature nonces: a replay is refused across restarts and across every process sharing the
database (the primary key does the work).

Every signed request carries a nonce, so every signed request is a write. Concurrent callers share
one write (group commit): the first caller writes the nonces of all callers waiting meanwhile in
one statement, the others wait for its commit. Under load on SQLite, one write transaction per
request made the requests queue on the database's write lock, each waiter polling it with the
busy handler's growing sleeps (bench/load.py: INSERT mean 38 ms, p99 up to 1 s, 45 readers).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from opencs.store.db import Database, utcnow
from opencs.store.models import Nonce

MAX_BATCH = 500  # nonces written in one statement at most


@dataclass
class _Ask:
    access_key_id: str
    nonce: str
    new: bool | None = None  # set once its batch committed
    error: BaseException | None = None


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
                        .returning(Nonce.access_key_id, Nonce.nonce))
        self._engine = db.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._cv = threading.Condition()
        self._waiting: list[_Ask] = []
        self._writing = False
        self.writes = 0  # statements issued (group commit: fewer than the calls under concurrency)

    def remember(self, access_key_id: str, nonce: str) -> bool:
        """True for a nonce not seen before for this key; False for a replay. Returns once the
        nonce is committed."""
        ask = _Ask(access_key_id, nonce)
        with self._cv:
            self._waiting.append(ask)
            while ask.new is None and ask.error is None:
                if self._writing:
                    self._cv.wait()
                    continue
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                self._writing = True
                self._cv.release()
                try:
                    self._write(batch)
                finally:
                    self._cv.acquire()
                    self._writing = False
                    self._cv.notify_all()
        if ask.error is not None:
            raise ask.error
        if ask.new:
            self._purge()
        return ask.new is True

    def _write(self, batch: list[_Ask]) -> None:
        """One statement for the batch; each ask gets its outcome (or the error)."""
        now = utcnow()
        rows: dict[tuple[str, str], _Ask] = {}
        for a in batch:
            if (a.access_key_id, a.nonce) in rows:
                a.new = False  # the same nonce twice in one batch: the second is the replay
            else:
                rows[(a.access_key_id, a.nonce)] = a
        try:
            # Core, not the ORM: this insert is on the path of every request that carries a nonce
            with self._engine.connect() as conn:
                added = conn.execute(self._insert, [{"access_key_id": ak, "nonce": n, "seen_at": now}
                                                    for ak, n in rows])
                new = {(r[0], r[1]) for r in added}
            self.writes += 1
        except BaseException as e:  # every caller of the batch sees the failure as its own
            for a in rows.values():
                a.error = e
            return
        for key, a in rows.items():
            a.new = key in new

    def _purge(self) -> None:
        now = utcnow()
        if now - self._last_purge > timedelta(seconds=60):
            self._last_purge = now
            with self.db.session() as s:
                s.execute(delete(Nonce).where(Nonce.seen_at < now - self.retain))

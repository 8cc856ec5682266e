"""Seen signature nonces: a replay is refused across restarts and across every process sharing the
database (the primary key does the work).

Every signed request carries a nonce, so every signed request is a write. Concurrent callers share
one write (group commit): the first caller writes the nonces of all callers waiting meanwhile in
one statement, the others wait for its commit. Under load on SQLite, one write transaction per
request made the requests queue on the database's write lock, each waiter polling it with the
busy handler's growing sleeps (bench/load.py: INSERT mean 38 ms, p99 up to 1 s, 45 readers).

A caller on an event loop does not wait in a thread of its own: `submit` queues the nonce with a
callback, and a writer thread of the store writes it with the others waiting (bench/load.py: 7-8
of the API's worker threads were blocked here on average, each one a thread the next request's
hop queued behind). On SQLite it first tries `write_now`: the loop writes the nonces of the
requests it read meanwhile itself when the write lock is free, on a connection of its own that
never waits for the lock, never checkpoints and never syncs (WAL, synchronous=NORMAL: a commit is a
write into the WAL file), which spares the GIL's hand-overs to the writer thread and back (up to
the 5 ms switch interval each while the loop is busy).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, create_engine, delete, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from opencs.store.db import Database, utcnow
from opencs.store.models import Nonce

log = logging.getLogger("opencs.store")

MAX_BATCH = 500  # nonces written in one statement at most


@dataclass
class _Ask:
    access_key_id: str
    nonce: str
    new: bool | None = None  # set once its batch committed
    error: BaseException | None = None
    done: Callable[[bool | None, BaseException | None], None] | None = None  # submit's callback


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
        self._writer: threading.Thread | None = None  # started by the first submit
        self._purge_wanted = False  # write_now's callers leave the purge to the writer thread
        self._now = _no_wait_engine(db.url) if db.is_sqlite else None
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
                    self._write_and_tell(batch)
                finally:
                    self._cv.acquire()
                    self._writing = False
                    self._cv.notify_all()
        if ask.error is not None:
            raise ask.error
        if ask.new:
            self._purge()
        return ask.new is True

    def submit(self, access_key_id: str, nonce: str,
               done: Callable[[bool | None, BaseException | None], None]) -> None:
        """`remember` without waiting: `done(new, error)` is called once the nonce's batch committed
        (new: True for a nonce not seen before, False for a replay) or failed (error), from the thread
        that wrote it; it must be quick and must not raise (an event loop's call_soon_threadsafe)."""
        with self._cv:
            self._waiting.append(_Ask(access_key_id, nonce, done=done))
            self._wake_writer()

    def _wake_writer(self) -> None:
        """(With self._cv held.) The writer thread sees what waits for it; started the first time."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_submitted, name="opencs-nonces", daemon=True)
            self._writer.start()
        self._cv.notify_all()

    def _write_submitted(self) -> None:
        """The writer of submitted nonces: each batch with whatever else waits meanwhile (a caller of
        `remember` that finds no write under way writes the batch itself, as before)."""
        while True:
            with self._cv:
                while self._writing or not (self._waiting or self._purge_wanted):
                    self._cv.wait()
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                self._writing, purge, self._purge_wanted = True, self._purge_wanted, False
            try:
                if batch:
                    self._write_and_tell(batch)
            finally:
                with self._cv:
                    self._writing = False
                    self._cv.notify_all()
            if purge or any(a.new for a in batch):
                try:
                    self._purge()
                except Exception:  # the next batch purges again; the nonces are written
                    self._last_purge = datetime.min

    def write_now(self, nonces: list[tuple[str, str]]) -> list[bool] | None:
        """The (AccessKey id, nonce) pairs written by the calling thread (an event loop) if that needs
        no wait: on SQLite while the write lock is free, their outcomes in order (False: a replay,
        also for the second of a nonce asked twice); None when the lock is taken, and always on
        PostgreSQL (a round trip to wait for): then `submit` them. A failed write raises."""
        if self._now is None:
            return None
        now, out = utcnow(), []
        rows: dict[tuple[str, str], dict[str, object]] = {}
        for key in nonces:
            out.append(key not in rows)
            rows.setdefault(key, {"access_key_id": key[0], "nonce": key[1], "seen_at": now})
        try:
            with self._now.connect() as conn:
                new = {(r[0], r[1]) for r in conn.execute(self._insert, list(rows.values()))}
        except PoolTimeout:
            return None  # another caller has the connection (one loop has it at a time)
        except OperationalError as e:
            if "locked" in str(e.orig) or "busy" in str(e.orig):
                return None
            raise
        self.writes += 1
        if utcnow() - self._last_purge > timedelta(seconds=60):
            with self._cv:  # the purge waits for the lock: the writer thread's
                self._purge_wanted = True
                self._wake_writer()
        return [first and key in new for first, key in zip(out, nonces, strict=True)]

    def _write_and_tell(self, batch: list[_Ask]) -> None:
        self._write(batch)
        for a in batch:
            if a.done is not None:
                try:
                    a.done(a.new, a.error)
                except Exception:  # its caller is gone (a closed event loop): the others still hear
                    log.warning("a nonce's caller could not be told its outcome", exc_info=True)

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


def _no_wait_engine(url: str) -> Engine:
    """One SQLite connection that gives up at once when the write lock is taken (busy_timeout 0),
    never runs a checkpoint (the other connections do) and never syncs (WAL, synchronous=NORMAL)."""
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 0},
                           pool_size=1, max_overflow=0, pool_timeout=0)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: object, _record: object) -> None:
        cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
        for pragma in ("busy_timeout=0", "wal_autocheckpoint=0", "synchronous=NORMAL", "foreign_keys=ON"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    return engine.execution_options(isolation_level="AUTOCOMMIT")

"""Engine and sessions; SQLite in WAL mode by default, PostgreSQL by URL.

On PostgreSQL every round trip counts: each one is a wake-up of the calling thread, which on a busy
machine waits for a CPU and then for the GIL (bench/load.py measured 19-35 ms per statement with
45 readers, PostgreSQL itself well under 1 ms). So a read-only unit of work (`Database.read()`,
`Database.reader`) runs in autocommit: one round trip per statement instead of BEGIN, the
statement and COMMIT (under READ COMMITTED each statement reads its own snapshot either way); and
a pooled connection is pinged only when it was idle for a while, not on every checkout.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from opencs import metrics
from opencs.store.changes import TableChanges

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    """Naive UTC (stored as such on both SQLite and PostgreSQL)."""
    return datetime.now(UTC).replace(tzinfo=None)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # pool: as many kept connections as threads read at once under load (the API's worker
        # threads, task workers, loops); with SQLAlchemy's default 5 each connection beyond them was
        # opened (the pragmas below, the schema read again) and closed around a single statement
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=20, max_overflow=40)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return _timed(engine)
    return _timed(_ping_when_idle(create_engine(url, pool_size=10, max_overflow=20)))


IDLE_PING_SECONDS = 10.0  # a pooled connection unused this long is pinged before it is handed out


def _ping_when_idle(engine: Engine) -> Engine:
    """Pessimistic disconnect handling for connections that sat in the pool (a database restarted
    meanwhile), without pool_pre_ping's extra round trip on every checkout. A connection in steady
    use that the server dropped fails its next statement; SQLAlchemy then invalidates the pool, so
    the connections after it are new."""

    @event.listens_for(engine.pool, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["opencs_idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("opencs_idle_since", None)
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return  # new, or back in the pool a moment ago
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as e:  # the pool replaces it with a new connection and tries again
            raise DisconnectionError(f"pooled connection idle {time.monotonic() - since:.0f}s is gone: {e}") from e

    return engine


def _timed(engine: Engine) -> Engine:
    """Observe every statement's latency, labelled by its verb (SELECT, INSERT, ...)."""

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, _cursor: Any, _stmt: str, _params: Any, _ctx: Any, _many: bool) -> None:
        conn.info.setdefault("opencs_t0", []).append(time.perf_counter())

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, _cursor: Any, stmt: str, _params: Any, _ctx: Any, _many: bool) -> None:
        starts = conn.info.get("opencs_t0")
        if starts:
            verb = stmt.lstrip().split(None, 1)[0].upper() if stmt.strip() else "OTHER"
            elapsed = time.perf_counter() - starts.pop()
            metrics.store_latency.labels(verb if verb in _VERBS else "OTHER").observe(elapsed)

    return engine


_VERBS = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "BEGIN", "COMMIT", "ROLLBACK", "PRAGMA", "WITH"})


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the store to `revision` (an older one: the upgrade tests, which start from a past schema)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.changes = TableChanges(self.engine)  # what this process wrote, for cached hot reads
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # reads only: autocommit on PostgreSQL (no BEGIN/COMMIT round trips); SQLite as it was
        self.reader: Engine = self.engine if self.is_sqlite else self.engine.execution_options(
            isolation_level="AUTOCOMMIT")
        self._reads = sessionmaker(self.reader, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commit on success, roll back on error."""
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A unit of work that only reads (on PostgreSQL in autocommit: a write in it would commit
        at once, statement by statement, so never write in it)."""
        with self._reads() as s:
            yield s

    def close(self) -> None:
        self.engine.dispose()

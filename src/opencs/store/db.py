"""Engine and sessions; SQLite in WAL mode by default, PostgreSQL by URL."""

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
from sqlalchemy.orm import Session, sessionmaker

from opencs import metrics
from opencs.store.changes import TableChanges

MIGRATIONS = Path(__file__).parent / "migrations"


def utcnow() -> datetime:
    """Naive UTC (stored as such on both SQLite and PostgreSQL)."""
    return datetime.now(UTC).replace(tzinfo=None)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return _timed(engine)
    return _timed(create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True))


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

    def close(self) -> None:
        self.engine.dispose()

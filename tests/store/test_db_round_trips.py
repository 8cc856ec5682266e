"""What the store costs in round trips on PostgreSQL (bench/load.py: each one is a thread's wake-up
on a busy machine): read-only units of work run in autocommit (no BEGIN/COMMIT), a pooled
connection is pinged only after it sat idle, and a process that does not hold a duty's lease only
reads the lease row."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import event, select, text

from opencs.config import Settings
from opencs.store import db as dbmod
from opencs.store.db import Database
from opencs.store.models import Lease
from opencs.store.repos.leases import LeaseRepo
from opencs.tasks.leases import DutyLease, LeaseTiming


def _statements(d: Database) -> list[str]:
    seen: list[str] = []
    event.listen(d.engine, "before_cursor_execute", lambda _c, _cur, stmt, *_a: seen.append(stmt.split()[0].upper()))
    return seen


def test_a_read_on_postgresql_opens_no_transaction(db: Database) -> None:
    with db.read() as s:
        assert s.scalar(select(Lease.duty).limit(1)) is None
        dbapi = s.connection().connection.dbapi_connection
        if not db.is_sqlite:
            assert isinstance(dbapi, psycopg.Connection)
            assert dbapi.autocommit  # no BEGIN before the statement, no COMMIT after it
            assert dbapi.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with db.session() as s:  # a unit of work that may write still is a transaction
        s.scalar(select(Lease.duty).limit(1))
        dbapi = s.connection().connection.dbapi_connection
        if not db.is_sqlite:
            assert not dbapi.autocommit
            assert dbapi.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


@pytest.mark.postgres
def test_a_pooled_connection_the_server_dropped_is_replaced(pg_url: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    d = Database(Settings(data_dir=tmp_path, database_url=pg_url).resolved_database_url)
    try:
        with d.read() as s:
            pid = s.scalar(text("SELECT pg_backend_pid()"))
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        monkeypatch.setattr(dbmod, "IDLE_PING_SECONDS", 0.0)  # it sat idle: pinged, found gone, replaced
        with d.read() as s:
            assert s.scalar(text("SELECT pg_backend_pid()")) != pid
    finally:
        d.close()


def test_a_connection_in_steady_use_is_not_pinged(db: Database) -> None:
    if db.is_sqlite:
        pytest.skip("SQLite has no server to ping")
    pings: list[int] = []
    orig = db.engine.dialect.do_ping
    db.engine.dialect.do_ping = lambda c: (pings.append(1), orig(c))[1]  # type: ignore[method-assign]
    for _ in range(5):
        with db.read() as s:
            s.scalar(text("SELECT 1"))
    assert pings == []


def test_a_process_without_the_lease_only_reads_it(db: Database) -> None:
    repo = LeaseRepo(db)
    timing = LeaseTiming(30.0, 1.0)
    holder = DutyLease(repo, "router", "h:1:a", timing)
    assert holder.tick()
    other = DutyLease(repo, "router", "h:2:b", timing)
    seen = _statements(db)
    for _ in range(3):
        assert not other.tick()
    assert seen == ["SELECT"] * 3  # no conditional UPDATE while a live holder's lease runs
    # once it expired, the other process takes it over
    repo.renew("router", "h:1:a", holder.token or 0, -1.0, time.time())
    assert other.tick() and other.token == (holder.token or 0) + 1

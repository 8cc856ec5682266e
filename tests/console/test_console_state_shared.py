"""Issue 13: two API processes on one database share the console's sessions and failed sign-ins,
and a process started later (a restart) still knows them — on SQLite and PostgreSQL. Each
"process" is its own Database (engine, connection pool) and services over the same store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opencs.config import Settings
from opencs.services.console_sessions import ConsoleSessions
from opencs.services.failed_signins import FailedSignIns
from opencs.store.db import Database, migrate
from opencs.store.repos.console_sessions import ConsoleSessionRepo
from opencs.store.repos.failed_signins import FailedSignInRepo


class Process:
    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.sessions = ConsoleSessions(ConsoleSessionRepo(self.db))
        self.failures = FailedSignIns(FailedSignInRepo(self.db), per_login=5, per_address=30)


@pytest.fixture
def url(tmp_path: Path, database_url: str | None) -> Iterator[str]:
    u = Settings(data_dir=tmp_path, database_url=database_url).resolved_database_url
    d = Database(u)
    migrate(d.engine)
    d.close()
    yield u


def test_two_processes_share_sessions_and_failures_and_a_restart_keeps_them(url: str) -> None:
    a, b = Process(url), Process(url)
    try:
        s = a.sessions.open("", "u-1", "stamp-1")
        on_b = b.sessions.get(s.sid)
        assert on_b is not None and on_b.user_id == "u-1" and on_b.csrf_ok(s.csrf)  # b checks a's CSRF token
        ended = a.sessions.open("AK1")
        b.sessions.close(ended.sid)  # signed out through b: a knows it
        assert a.sessions.get(ended.sid) is None
        for n in range(3):
            a.failures.failed("dev@default", f"10.0.0.{n}")
        for n in range(2):
            b.failures.failed("dev@default", f"10.0.1.{n}")
        assert a.failures.blocked("dev@default", "10.0.2.1") and b.failures.blocked("dev@default", "10.0.2.1")
        for n in range(29):
            a.failures.failed(f"user{n}", "10.9.9.9")
        assert not b.failures.blocked("x", "10.9.9.9")
        b.failures.failed("user29", "10.9.9.9")
        assert a.failures.blocked("x", "10.9.9.9")  # 30 from one address, over both processes
    finally:
        a.db.close()
        b.db.close()
    restarted = Process(url)
    try:
        again = restarted.sessions.get(s.sid)
        assert again is not None and again.user_id == "u-1" and again.csrf_ok(s.csrf)
        assert restarted.sessions.get(ended.sid) is None
        assert restarted.failures.blocked("dev@default", "10.0.3.1")
        assert restarted.failures.blocked("x", "10.9.9.9")
        restarted.failures.succeeded("dev@default")
        assert not restarted.failures.blocked("dev@default", "10.0.3.1")
    finally:
        restarted.db.close()

"""Console sessions in the store (opencs.services.console_sessions): idle expiry that slides without
a write per request, sign-out for good, the bound on rows, only a hash of the id stored — on SQLite
and PostgreSQL."""

from __future__ import annotations

import time

from opencs.services.console_sessions import ConsoleSessions, csrf_of, sid_hash
from opencs.store.db import Database
from opencs.store.models import ConsoleSession
from opencs.store.repos.console_sessions import ConsoleSessionRepo


def test_a_session_is_found_by_its_cookie_value_and_only_its_hash_is_stored(db: Database) -> None:
    sessions = ConsoleSessions(ConsoleSessionRepo(db))
    s = sessions.open("", "u-1", "stamp-1", must_reset=True)
    got = sessions.get(s.sid)
    assert got is not None and (got.user_id, got.stamp, got.must_reset, got.access_key_id) == ("u-1", "stamp-1",
                                                                                                True, "")
    assert got.csrf == s.csrf == csrf_of(s.sid) and got.csrf_ok(s.csrf) and not got.csrf_ok("x") and \
        not got.csrf_ok(None)
    assert sessions.get(s.sid + "x") is None and sessions.get("") is None and sessions.get(None) is None
    with db.session() as q:
        rows = [(r.sid_hash, r.stamp) for r in q.query(ConsoleSession)]
    assert rows == [(sid_hash(s.sid), "stamp-1")]
    assert s.sid not in rows[0][0] and s.csrf != rows[0][0]  # neither the id nor the token is stored
    sessions.password_set(got, "stamp-2")
    again = sessions.get(s.sid)
    assert again is not None and (again.stamp, again.must_reset) == ("stamp-2", False)


def test_sign_out_ends_it_for_good(db: Database) -> None:
    sessions = ConsoleSessions(ConsoleSessionRepo(db))
    s = sessions.open("AK1")
    sessions.close(s.sid)
    assert sessions.get(s.sid) is None
    ConsoleSessionRepo(db).extend(sid_hash(s.sid), s.expires)  # a late slide of another process: no revival
    assert sessions.get(s.sid) is None


def test_the_idle_window_slides_but_a_request_writes_only_when_it_moved_enough(db: Database) -> None:
    repo = ConsoleSessionRepo(db)
    sessions = ConsoleSessions(repo, idle_seconds=2.0)  # refresh: idle/10 = 0.2 s
    s = sessions.open("AK1")
    first = sessions.get(s.sid)
    assert first is not None and first.expires == s.expires  # moved by less than the refresh: no write
    for _ in range(4):  # 2.4 s of use, longer than the idle window: each request slides it
        time.sleep(0.6)
        assert sessions.get(s.sid) is not None
    rec = repo.get(sid_hash(s.sid))
    assert rec is not None and rec.expires > s.expires
    time.sleep(2.1)
    assert sessions.get(s.sid) is None  # idle too long
    assert repo.get(sid_hash(s.sid)) is None  # and its row is gone


def test_the_rows_are_bounded_lapsed_ones_go_first(db: Database) -> None:
    repo = ConsoleSessionRepo(db)
    short = ConsoleSessions(repo, idle_seconds=0.3, max_sessions=5)
    lapsed = [short.open(f"AK{n}") for n in range(3)]
    time.sleep(0.4)
    sessions = ConsoleSessions(repo, max_sessions=5)
    kept = [sessions.open(f"AK-new{n}") for n in range(5)]
    assert repo.count() == 5
    assert all(repo.get(sid_hash(s.sid)) is None for s in lapsed)
    newest = sessions.open("AK-newest")  # full of live ones: the one closest to lapsing goes
    assert repo.count() == 5 and sessions.get(kept[0].sid) is None and sessions.get(newest.sid) is not None

"""Seen signature nonces: a replay is refused, across a restart and across a second store on the
database, and concurrent callers share one write (group commit) without losing or mixing outcomes."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from opencs.store.db import Database
from opencs.store.repos.nonces import NonceStore


def test_a_replay_is_refused_by_this_store_and_by_another_on_the_database(db: Database) -> None:
    a, b = NonceStore(db, timedelta(minutes=30)), NonceStore(db, timedelta(minutes=30))
    assert a.remember("AK1", "n-1") is True
    assert a.remember("AK1", "n-1") is False
    assert b.remember("AK1", "n-1") is False  # another process sharing the database
    assert b.remember("AK2", "n-1") is True  # per AccessKey


def test_concurrent_callers_share_writes_and_each_gets_its_own_outcome(db: Database) -> None:
    store = NonceStore(db, timedelta(minutes=30))
    threads, per = 24, 20
    # every nonce is asked twice, by two threads at once: exactly one of them may get True
    outcomes: dict[tuple[int, int], list[bool]] = {}
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def caller(t: int) -> None:
        start.wait()
        for i in range(per):
            key = (t // 2, i)  # threads 2k and 2k+1 ask the same nonces
            got = store.remember("AK", f"n-{key[0]}-{i}")
            with lock:
                outcomes.setdefault(key, []).append(got)

    ts = [threading.Thread(target=caller, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(outcomes) == threads // 2 * per
    assert all(sorted(v) == [False, True] for v in outcomes.values()), outcomes
    calls = threads * per
    assert store.writes < calls  # the callers waiting on one write were written together
    assert NonceStore(db, timedelta(minutes=30)).remember("AK", "n-0-0") is False  # committed


def test_a_failed_write_fails_every_caller_of_its_batch_and_the_next_write_works(db: Database) -> None:
    store = NonceStore(db, timedelta(minutes=30))
    good = store._insert
    store._insert = good.values(no_such_column=1)  # a statement the database refuses, for one write
    try:
        with pytest.raises(Exception, match="no_such_column"):
            store.remember("AK", "broken")
    finally:
        store._insert = good
    assert store.remember("AK", "after") is True
    assert store.remember("AK", "broken") is True  # the failed write kept nothing


def test_submitted_nonces_are_written_by_the_store_and_their_callers_told(db: Database) -> None:
    store = NonceStore(db, timedelta(minutes=30))
    told: dict[str, list[tuple[bool | None, BaseException | None]]] = {}
    done = threading.Semaphore(0)

    def tell(name: str) -> Any:
        def f(new: bool | None, error: BaseException | None) -> None:
            told.setdefault(name, []).append((new, error))
            done.release()
        return f

    for i in range(50):  # submitted together: written in fewer statements, each told once
        store.submit("AK", f"s-{i}", tell(f"s-{i}"))
    for _ in range(50):
        assert done.acquire(timeout=30)
    assert all(told[f"s-{i}"] == [(True, None)] for i in range(50)), told
    assert store.writes < 50
    store.submit("AK", "s-0", tell("again"))  # a replay of a submitted nonce
    assert done.acquire(timeout=30) and told["again"] == [(False, None)]
    assert store.remember("AK", "s-1") is False  # the same store, the blocking way
    assert NonceStore(db, timedelta(minutes=30)).remember("AK", "s-2") is False  # committed
    store.submit("AK", "mixed", tell("mixed"))  # whoever writes it (a caller of remember may): told
    assert store.remember("AK", "mixed") is False  # asked after it: the replay
    assert done.acquire(timeout=30) and told["mixed"] == [(True, None)]

    good = store._insert
    store._insert = good.values(no_such_column=1)  # the database refuses the write: the caller hears it
    try:
        store.submit("AK", "broken", tell("broken"))
        assert done.acquire(timeout=30)
    finally:
        store._insert = good
    (new, error), = told["broken"]
    assert new is None and error is not None and "no_such_column" in str(error)
    store.submit("AK", "broken", tell("retried"))
    assert done.acquire(timeout=30) and told["retried"] == [(True, None)]  # the failed write kept nothing


def test_write_now_writes_without_waiting_or_gives_the_nonces_back(db: Database) -> None:
    store = NonceStore(db, timedelta(minutes=30))
    if not db.is_sqlite:
        assert store.write_now([("AK", "w-1")]) is None  # a round trip: the writer thread's
        return
    assert store.write_now([("AK", "w-1"), ("AK", "w-2"), ("AK", "w-1")]) == [True, True, False]
    assert store.write_now([("AK", "w-2"), ("AK2", "w-2")]) == [False, True]
    assert store.remember("AK", "w-1") is False  # committed, seen by the other ways too
    with db.engine.connect() as other:  # another connection holds the write lock
        other.exec_driver_sql("BEGIN IMMEDIATE")
        t = time.monotonic()
        assert store.write_now([("AK", "w-3")]) is None  # at once, not after the busy timeout
        assert time.monotonic() - t < 1.0
        other.exec_driver_sql("ROLLBACK")
    assert store.write_now([("AK", "w-3")]) == [True]  # the refused attempt kept nothing
    with store._now.connect() as conn:  # type: ignore[union-attr]
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL: no fsync on the loop
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 0

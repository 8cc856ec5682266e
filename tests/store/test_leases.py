"""Leases of singleton duties (issue 13 item 2): compare-and-set takeover, fencing tokens, renewal,
release, a dead local holder taken over at once; and a loop that runs only while its lease is held."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencs.config import Settings
from opencs.loops.leased import LeasedLoop
from opencs.store.db import Database, migrate
from opencs.store.repos.leases import LeaseLost, LeaseRepo
from opencs.tasks.leases import DutyLease, LeaseTiming


@pytest.fixture
def repo(tmp_path: Path, database_url: str | None) -> Iterator[LeaseRepo]:
    db = Database(Settings(data_dir=tmp_path, database_url=database_url).resolved_database_url)
    migrate(db.engine)
    try:
        yield LeaseRepo(db)
    finally:
        db.close()


def test_takeover_only_after_expiry_and_the_token_grows(repo: LeaseRepo) -> None:
    now = time.time()
    t1 = repo.acquire("router", "h:1:a", 5.0, now, {})
    assert t1 == 1
    assert repo.acquire("router", "h:2:b", 5.0, now + 1, {}) is None  # still held
    assert repo.renew("router", "h:1:a", t1, 5.0, now + 4)
    assert repo.acquire("router", "h:2:b", 5.0, now + 6, {}) is None  # renewed until now + 9
    t2 = repo.acquire("router", "h:2:b", 5.0, now + 10, {"api": "x"})
    assert t2 == 2
    assert not repo.renew("router", "h:1:a", t1, 5.0, now + 10)  # the old holder learns it lost
    with pytest.raises(LeaseLost), repo.fence("router", t1, now + 10):
        pass  # the old token fences nothing any more
    with repo.fence("router", t2, now + 10):
        pass
    st = repo.get("router")
    assert st is not None and (st.holder, st.token, st.info) == ("h:2:b", 2, {"api": "x"})


def test_release_frees_at_once_and_dead_holders_are_taken(repo: LeaseRepo) -> None:
    now = time.time()
    t1 = repo.acquire("endpoints", "h:1:a", 60.0, now, {})
    assert t1 is not None
    repo.release("endpoints", "h:1:a", t1)
    t2 = repo.acquire("endpoints", "h:2:b", 60.0, now, {})
    assert t2 == t1 + 1
    assert repo.acquire("endpoints", "h:3:c", 60.0, now, {}, dead=("h:9:z",)) is None  # not the holder
    assert repo.acquire("endpoints", "h:3:c", 60.0, now, {}, dead=("h:2:b",)) == t2 + 1
    with pytest.raises(LeaseLost), repo.fence("endpoints", t2, now):
        pass


def test_racing_holders_one_wins(repo: LeaseRepo) -> None:
    """Eight threads (own connections) race for one free lease: exactly one gets it."""
    now = time.time()
    got: list[int | None] = []
    start = threading.Barrier(8)

    def take(i: int) -> None:
        start.wait()
        got.append(repo.acquire("health", f"h:{i}:x", 5.0, now, {}))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(g for g in got if g is not None) == [1], got


def test_duty_lease_takes_over_from_a_killed_process(repo: LeaseRepo) -> None:
    """A holder whose PID is gone (kill -9) on this host is replaced at the next tick, not at expiry."""
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = os.uname().nodename
        dead = f"{host}:{victim.pid}:dead"
        assert repo.acquire("monitoring", dead, 60.0, time.time(), {}) == 1
        mine = DutyLease(repo, "monitoring", timing=LeaseTiming(60.0, 0.2))
        assert not mine.tick()  # alive: wait
        victim.kill()
        victim.wait()
        assert mine.tick() and mine.token == 2
    finally:
        victim.kill()


class _Duty:
    name = "router"

    def __init__(self) -> None:
        self.running = False
        self.starts = 0

    def start(self) -> None:
        self.running, self.starts = True, self.starts + 1

    def stop(self) -> None:
        self.running = False


def _until(cond: object, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while not cond():  # type: ignore[operator]
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)
    return time.monotonic() - t0


class _Unreachable:
    def __init__(self, repo: LeaseRepo) -> None:
        self.repo = repo

    def renew(self, *_a: object) -> bool:
        raise ConnectionError("database unreachable")

    def __getattr__(self, name: str) -> object:
        return getattr(self.repo, name)


def test_leased_loop_runs_in_one_process_and_moves_on_loss(repo: LeaseRepo) -> None:
    timing = LeaseTiming(ttl=1.0, renew=0.2)
    a, b = _Duty(), _Duty()
    la = LeasedLoop(a, DutyLease(repo, "router", "h:1:a", timing))
    lb = LeasedLoop(b, DutyLease(repo, "router", "h:2:b", timing))
    la.start()
    assert a.running  # the first holder starts in the caller's thread (SQLite: as before leases)
    lb.start()
    try:
        time.sleep(0.6)
        assert not b.running
        # the holder loses the database: it gives the duty up by itself once its last renewal ran
        # out, and b takes over once the lease expired
        la.lease.repo = _Unreachable(repo)  # type: ignore[assignment]
        took = _until(lambda: b.running and not a.running)
        assert took < 2.5, took
        la.lease.repo = repo
        with pytest.raises(LeaseLost), la.lease.fence():
            pass
        with lb.lease.fence():
            pass
    finally:
        la.stop()
        lb.stop()
    assert not a.running and not b.running
    st = repo.get("router")
    assert st is not None and st.holder == ""  # a clean stop releases


def test_wait_pass(repo: LeaseRepo) -> None:
    holder = DutyLease(repo, "router", "h:1:a", LeaseTiming(5.0, 1.0))
    other = DutyLease(repo, "router", "h:2:b", LeaseTiming(5.0, 1.0))
    assert holder.tick()
    since = time.time()
    assert not other.wait_pass(since, 0.2)
    threading.Timer(0.3, lambda: holder.mark_pass(time.time())).start()
    assert other.wait_pass(since, 3.0)


def test_an_earlier_process_with_our_pid_is_dead(repo: LeaseRepo) -> None:
    """A restarted container's PID 1 finds its previous self's lease under its own PID: taken at once."""
    before = f"{os.uname().nodename}:{os.getpid()}:earlier"
    assert repo.acquire("health", before, 60.0, time.time(), {}) == 1
    mine = DutyLease(repo, "health", timing=LeaseTiming(60.0, 0.2))
    assert mine.tick() and mine.token == 2


def test_a_newcomer_never_waits_on_a_fenced_lease(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL: while its holder acts under fence() longer than the TTL, the row reads expired
    (the holder's renewal waits on its own fence). A process starting then (a restarted server's
    first tick runs before its API answers) must neither block until the side effect ends nor take
    the lease from the live holder afterwards."""
    db = Database(Settings(data_dir=tmp_path, database_url=pg_url).resolved_database_url)
    migrate(db.engine)
    repo = LeaseRepo(db)
    timing = LeaseTiming(ttl=1.0, renew=0.2)
    holder = DutyLease(repo, "router", "h:1:a", timing)
    inside, done = threading.Event(), threading.Event()

    def side_effect() -> None:
        with holder.fence():
            inside.set()
            done.wait(10)

    assert holder.tick()
    t = threading.Thread(target=side_effect)
    t.start()
    try:
        assert inside.wait(5)
        time.sleep(timing.ttl + 0.5)  # expired in the table
        newcomer = DutyLease(repo, "router", "h:2:b", timing)
        t0 = time.monotonic()
        assert not newcomer.tick()
        took = time.monotonic() - t0
        done.set()
        t.join(10)
        assert took < 1.0, f"the newcomer's tick waited {took:.1f}s on the holder's fence"
        st = repo.get("router")
        assert st is not None and (st.holder, st.token) == ("h:1:a", holder.token)
        assert holder.tick()  # still the holder's, renewed from now
    finally:
        done.set()
        t.join(10)
        db.close()

"""The failed sign-in limit (opencs.services.failed_signins): per logon name and per address, within
a window, counted in the store — on SQLite and PostgreSQL."""

from __future__ import annotations

import time

from opencs.services.failed_signins import FailedSignIns
from opencs.store.db import Database
from opencs.store.models import FailedSignIn
from opencs.store.repos.failed_signins import FailedSignInRepo


def test_a_name_locks_after_its_limit_and_a_success_clears_it(db: Database) -> None:
    t = FailedSignIns(FailedSignInRepo(db), window=60, per_login=2, per_address=100)
    t.failed("Dev@default", "10.0.0.1")
    assert not t.blocked("dev@default", "10.0.0.2")
    t.failed("dev@default", "10.0.0.2")
    assert t.blocked("dev@default", "10.0.0.3")  # the name, from anywhere, case-insensitively
    assert not t.blocked("other@default", "10.0.0.1")
    t.succeeded("dev@default")
    assert not t.blocked("dev@default", "10.0.0.1")


def test_an_address_locks_after_its_limit_whatever_the_names_and_the_window_ends_it(db: Database) -> None:
    t = FailedSignIns(FailedSignInRepo(db), window=0.5, per_login=100, per_address=3)
    for n in range(3):
        t.failed(f"user{n}@default", "10.0.0.9")
    assert t.blocked("fresh@default", "10.0.0.9") and not t.blocked("fresh@default", "10.0.0.8")
    time.sleep(0.6)
    assert not t.blocked("fresh@default", "10.0.0.9")


def test_failures_older_than_the_window_are_deleted_and_no_name_is_stored(db: Database) -> None:
    repo = FailedSignInRepo(db)
    t = FailedSignIns(repo, window=0.5)
    for n in range(10):
        t.failed(f"typed-a-password-{n}", f"10.0.1.{n}")
    assert repo.count() == 20  # one row for the name, one for the address
    with db.session() as s:
        keys = {r.key_hash for r in s.query(FailedSignIn)}
    assert not any("typed" in k or "10.0" in k for k in keys) and all(len(k) == 64 for k in keys)
    time.sleep(0.6)
    t.failed("later", "10.0.2.1")
    assert repo.count() == 2  # the stale rows went with the next failure

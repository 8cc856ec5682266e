"""The failed sign-in limit (console.throttle): per logon name and per address, within a window."""

from __future__ import annotations

import time

from opencs.console.throttle import FailedSignIns


def test_a_name_locks_after_its_limit_and_a_success_clears_it() -> None:
    t = FailedSignIns(window=60, per_login=2, per_address=100)
    t.failed("Dev@default", "10.0.0.1")
    assert not t.blocked("dev@default", "10.0.0.2")
    t.failed("dev@default", "10.0.0.2")
    assert t.blocked("dev@default", "10.0.0.3")  # the name, from anywhere, case-insensitively
    assert not t.blocked("other@default", "10.0.0.1")
    t.succeeded("dev@default")
    assert not t.blocked("dev@default", "10.0.0.1")


def test_an_address_locks_after_its_limit_whatever_the_names_and_the_window_ends_it() -> None:
    t = FailedSignIns(window=0.3, per_login=100, per_address=3)
    for n in range(3):
        t.failed(f"user{n}@default", "10.0.0.9")
    assert t.blocked("fresh@default", "10.0.0.9") and not t.blocked("fresh@default", "10.0.0.8")
    time.sleep(0.35)
    assert not t.blocked("fresh@default", "10.0.0.9")


def test_what_it_tracks_is_bounded() -> None:
    t = FailedSignIns(window=60)
    t.MAX_TRACKED = 10
    for n in range(50):
        t.failed(f"u{n}", f"10.0.1.{n}")
    assert len(t._fails) <= 12  # the bound, plus the two keys of the newest failure

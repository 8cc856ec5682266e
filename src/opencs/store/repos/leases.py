"""Leases of singleton duties: compare-and-set acquisition, renewal, release, and fencing.

A lease row per duty (`leases`): holder, expiry (unix time), and a fencing token that grows by one
each time the lease changes hands. Taking a lease is one conditional UPDATE (free, expired, or held
by a holder known to be dead) of a row nobody has locked (`SKIP LOCKED`), so on PostgreSQL two
processes racing for it cannot both win, and neither waits: a row locked by another taker or by
its holder's fence is not free now. `fence()` locks the row
(`SELECT ... FOR UPDATE`) while a side effect runs, so a takeover cannot slip between the token
check and the effect; on SQLite (one writer, one process) the lock is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencs.store.db import Database, utcnow
from opencs.store.models import Lease


class LeaseLost(Exception):
    """The caller's token is no longer the duty's current one: another holder took over."""


@dataclass(frozen=True)
class LeaseState:
    duty: str
    holder: str
    token: int
    expires: float
    passed: float
    info: dict[str, Any]


class LeaseRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _ensure_row(self, duty: str) -> None:
        with self.db.read() as s:
            if s.get(Lease, duty) is not None:
                return
        try:
            with self.db.session() as s:
                s.add(Lease(duty=duty, holder="", token=0, expires=0.0, passed=0.0, info={}, acquired=utcnow()))
        except IntegrityError:
            pass  # another process made it meanwhile

    def acquire(self, duty: str, holder: str, ttl: float, now: float, info: dict[str, Any],
                dead: tuple[str, ...] = ()) -> int | None:
        """Take the lease if it is free, expired or held by one of `dead`; the new token, or None."""
        self._ensure_row(duty)
        free = or_(Lease.holder == "", Lease.expires < now, Lease.holder.in_(dead)) if dead else \
            or_(Lease.holder == "", Lease.expires < now)
        # SKIP LOCKED: a row locked by its holder's fence is held (the holder is acting under its
        # token right now, whatever `expires` says while its renewal waits on that lock). Waiting on
        # it would block the caller until the holder's side effect ends (a restarted server's start,
        # for as long as a sibling reloads HAProxy), and then take the lease from a live holder
        # on a `now` read before the wait. SQLite renders no FOR UPDATE: one writer, no such wait.
        free_row = select(Lease.duty).where(Lease.duty == duty, Lease.holder != holder, free) \
            .with_for_update(skip_locked=True).scalar_subquery()
        with self.db.session() as s:
            res = s.execute(update(Lease).where(Lease.duty == free_row)
                            .values(holder=holder, token=Lease.token + 1, expires=now + ttl, passed=0.0,
                                    info=info, acquired=utcnow()))
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return None
            return int(s.scalars(select(Lease.token).where(Lease.duty == duty)).one())

    def renew(self, duty: str, holder: str, token: int, ttl: float, now: float) -> bool:
        """Extend the lease; False when `token` is not the current one any more."""
        with self.db.session() as s:
            res = s.execute(update(Lease).where(Lease.duty == duty, Lease.holder == holder, Lease.token == token)
                            .values(expires=now + ttl))
            return bool(res.rowcount == 1)  # type: ignore[attr-defined]

    def release(self, duty: str, holder: str, token: int) -> None:
        """Give the lease up at once (a clean stop), so the next holder need not wait for it to expire."""
        with self.db.session() as s:
            s.execute(update(Lease).where(Lease.duty == duty, Lease.holder == holder, Lease.token == token)
                      .values(holder="", expires=0.0))

    def mark_pass(self, duty: str, token: int, when: float) -> None:
        """The holder finished a pass of its duty at `when` (what non-holders wait for)."""
        with self.db.session() as s:
            s.execute(update(Lease).where(Lease.duty == duty, Lease.token == token).values(passed=when))

    def check(self, session: Session, duty: str, token: int, now: float) -> None:
        """In `session`: lock the duty's row and raise LeaseLost unless `token` is current and unexpired."""
        row = session.scalars(select(Lease).where(Lease.duty == duty).with_for_update()).one_or_none()
        if row is None or row.token != token or row.expires < now:
            raise LeaseLost(f"{duty}: token {token} is not current")

    @contextmanager
    def fence(self, duty: str, token: int, now: float) -> Iterator[Session]:
        """A unit of work in which `token` stays the current one (its row is locked until the end)."""
        with self.db.session() as s:
            self.check(s, duty, token, now)
            yield s

    def get(self, duty: str) -> LeaseState | None:
        with self.db.read() as s:
            r = s.get(Lease, duty)
            return None if r is None else LeaseState(r.duty, r.holder, r.token, r.expires, r.passed, dict(r.info or {}))

    def all(self) -> list[LeaseState]:
        with self.db.read() as s:
            return [LeaseState(r.duty, r.holder, r.token, r.expires, r.passed, dict(r.info or {}))
                    for r in s.scalars(select(Lease).order_by(Lease.duty))]

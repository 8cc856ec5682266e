"""Singleton duties of the control plane held by leases with fencing (issue 13 item 2).

Any number of `opencs server` / `opencs worker` processes may share one database; a duty that must
run once (the endpoint manager's listeners, the router's HAProxy, the monitors) is held by one of
them through a lease row (`store/repos/leases.py`). The holder renews it every `renew` seconds in
the background; when it dies (kill -9: no release) another process takes the lease over once it
expired (`ttl`), or at once when the dead holder was a process of this host (its PID is gone). A
clean stop releases it, so the next holder need not wait.

Every side effect of a duty runs under `fence()`: the lease row is locked and its token checked, so
a holder that lost the lease without noticing (stalled, cut off from the database) acts no more.
Without the database, a holder also gives its duty up once `ttl` passed since its last renewal.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opencs.store.repos.leases import LeaseLost, LeaseRepo

log = logging.getLogger("opencs.leases")

__all__ = ["DutyLease", "LeaseLost", "LeaseTiming", "process_holder"]

_HOLDERS: dict[int, str] = {}


def process_holder() -> str:
    """This process's holder id (host:pid:nonce), shared by all its duties (a fork gets its own)."""
    pid = os.getpid()
    return _HOLDERS.setdefault(pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}")


def _env(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class LeaseTiming:
    """A holder renews every `renew` s and others take over `ttl` s after its last renewal (a dead
    holder on the same host: at the next `renew` tick). Measured takeover: README, "High availability"."""

    ttl: float = 5.0
    renew: float = 1.0

    @classmethod
    def from_env(cls) -> LeaseTiming:
        ttl = max(1.0, _env("OPENCS_LEASE_TTL", 5.0))
        return cls(ttl, max(0.1, min(_env("OPENCS_LEASE_RENEW", ttl / 5), ttl / 2)))


def _dead_local(holder: str) -> bool:
    """Whether `holder` (host:pid:nonce) is a process of this host that no longer exists."""
    parts = holder.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname():
        return False
    try:
        pid = int(parts[1])
    except ValueError:
        return False
    if pid == os.getpid():  # our PID under another id: an earlier process (a container's PID 1 restarted)
        return holder != process_holder()
    return not os.path.exists(f"/proc/{pid}")


class DutyLease:
    """This process's claim on one duty; `run()` keeps it (or tries to get it) in a thread."""

    def __init__(self, repo: LeaseRepo, duty: str, holder: str | None = None, timing: LeaseTiming | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.repo = repo
        self.duty = duty
        self.holder = holder or process_holder()
        self.timing = timing or LeaseTiming.from_env()
        self.info = {"pid": os.getpid(), "host": socket.gethostname(), **(info or {})}
        self.token: int | None = None
        self.changed = threading.Event()  # set when the lease was gained or lost
        self._valid_until = 0.0  # monotonic: when, without a renewal, this holder must stop acting
        self._fencing = 0  # side effects under way under fence() (the lease row locked)
        self._count = threading.Lock()
        self._lock = threading.Lock()

    def held(self) -> bool:
        # inside our own fence the row is locked: nobody can take the lease over meanwhile
        return self.token is not None and (self._fencing > 0 or time.monotonic() < self._valid_until)

    def tick(self) -> bool:
        """Renew the lease, or try to take it; whether it is held afterwards. Never raises."""
        started = time.monotonic()
        try:
            with self._lock:
                if self.token is not None:
                    renewed = self.repo.renew(self.duty, self.holder, self.token, self.timing.ttl, time.time())
                    if renewed and time.monotonic() - started > self.timing.ttl / 2:
                        # it waited (on our own fence's row lock, or a slow database): renew from now
                        started = time.monotonic()
                        renewed = self.repo.renew(self.duty, self.holder, self.token, self.timing.ttl, time.time())
                    if renewed:
                        self._valid_until = started + self.timing.ttl
                    else:
                        log.warning("lease %s: token %d was taken over", self.duty, self.token)
                        self._drop()
                    return self.held()
                current = self.repo.get(self.duty)
                dead = (current.holder,) if current is not None and current.holder and _dead_local(current.holder) \
                    else ()
                if current is not None and current.holder and not dead and current.expires >= time.time():
                    # a live holder's unexpired lease: only a read. Every process that holds no lease
                    # ticks each duty every `renew` seconds, and trying the conditional UPDATE each
                    # time made 2 API + 2 worker processes write ~18 transactions a second idle
                    return False
                token = self.repo.acquire(self.duty, self.holder, self.timing.ttl, time.time(), self.info, dead)
                if token is not None:
                    self.token, self._valid_until = token, started + self.timing.ttl
                    log.info("lease %s: held by this process (token %d)", self.duty, token)
                    self.changed.set()
        except Exception as e:  # the database is away: keep acting only while the last renewal lasts
            log.warning("lease %s: %s", self.duty, e)
            if self.token is not None and not self.held():
                with self._lock:
                    self._drop()
        return self.held()

    def _drop(self) -> None:
        self.token, self._valid_until = None, 0.0
        self.changed.set()

    def release(self) -> None:
        with self._lock:
            token = self.token
            if token is None:
                return
            self._drop()
        try:
            self.repo.release(self.duty, self.holder, token)
            log.info("lease %s: released (token %d)", self.duty, token)
        except Exception as e:
            log.warning("lease %s: release failed (%s); it expires in %.0fs", self.duty, e, self.timing.ttl)

    @contextmanager
    def fence(self) -> Iterator[None]:
        """Run a side effect of the duty only while this process's token is current (LeaseLost if not)."""
        token = self.token
        if token is None or not self.held():
            raise LeaseLost(f"{self.duty}: not held by this process")
        with self.repo.fence(self.duty, token, time.time()):
            with self._count:
                self._fencing += 1
            try:
                yield
            finally:
                with self._count:
                    self._fencing -= 1

    def mark_pass(self, started: float) -> None:
        """A pass of the duty that began at `started` (unix time) is done: processes waiting for it go on."""
        token = self.token
        if token is not None:
            self.repo.mark_pass(self.duty, token, started)

    def wait_pass(self, since: float, timeout: float) -> bool:
        """For a process that does not hold the duty: wait until its holder began a pass at or after
        `since` (unix time); False after `timeout`."""
        end = time.monotonic() + timeout
        while True:
            st = self.repo.get(self.duty)
            if st is not None and st.holder and st.passed >= since:
                return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.1)

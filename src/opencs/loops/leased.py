"""A loop that runs only while this process holds its duty's lease (opencs.tasks.leases).

`start()` makes the first attempt in the caller's thread, so a lone process (the SQLite default)
starts its loops at once, as before leases. Then two threads: one renews the lease (or tries to
take it) every `renew` seconds and does nothing else, so a slow start of the loop never delays a
renewal; the other starts the loop when the lease is gained and stops it when it is lost.
"""

from __future__ import annotations

import logging
import threading

from opencs import metrics
from opencs.loops import Loop
from opencs.tasks.leases import DutyLease

log = logging.getLogger("opencs.leases")


class LeasedLoop:
    def __init__(self, inner: Loop, lease: DutyLease) -> None:
        self.name = inner.name
        self.inner = inner
        self.lease = lease
        self._running = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        if self.lease.tick():
            self._converge()
        for target, what in ((self._renew, "lease"), (self._supervise, "duty")):
            t = threading.Thread(target=target, name=f"opencs-{what}-{self.name}", daemon=True)
            t.start()
            self._threads.append(t)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease.timing.renew):
            self.lease.tick()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            # woken by a change, or at the renew period to notice a lease that ran out unrenewed
            self.lease.changed.wait(self.lease.timing.renew)
            self.lease.changed.clear()
            if not self._stop.is_set():
                self._converge()

    def _converge(self) -> None:
        held = self.lease.held()
        if held and not self._running:
            try:
                self.inner.start()
                self._running = True
            except Exception:
                log.exception("%s: start failed; releasing the lease", self.name)
                self.lease.release()
        elif not held and self._running:
            log.warning("%s: lease lost; stopping the duty", self.name)
            self._running = False
            self.inner.stop()
        metrics.duty_held(self.name, self._running)

    @property
    def running(self) -> bool:
        return self._running

    def stop(self) -> None:
        self._stop.set()
        self.lease.changed.set()
        for t in self._threads:
            t.join(30)
        self._threads.clear()
        if self._running:
            self._running = False
            self.inner.stop()
        self.lease.release()
        metrics.duty_held(self.name, False)

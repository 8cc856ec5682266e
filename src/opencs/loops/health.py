"""The health monitor loop: refreshes every node's state and health every `interval` seconds."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from opencs import metrics

log = logging.getLogger("opencs.monitor")

DUTY_PAUSE = 2.0  # after a pass, wait at least this many times as long as it took


class Refresher(Protocol):
    def refresh(self) -> None: ...


class HealthLoop:
    """Owns one thread; the state it converges is the instances' state/health columns."""

    name = "health"

    def __init__(self, health: Refresher, interval: float = 3.0) -> None:
        self.health = health
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="opencs-monitor", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        pause = self.interval
        while not self._stop.wait(pause):
            t = time.monotonic()
            try:
                self.health.refresh()
                metrics.loop_pass(self.name, True)
            except Exception:
                log.exception("health refresh failed")
                metrics.loop_pass(self.name, False)
            # a pass longer than the interval (10,000 nodes: tens of seconds) must not keep the
            # process busy for good: the API shares it, so the monitor takes a third of the time at most
            pause = max(self.interval, DUTY_PAUSE * (time.monotonic() - t))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

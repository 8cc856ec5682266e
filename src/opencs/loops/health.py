"""The health monitor loop: refreshes every node's state and health every `interval` seconds."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from opencs import metrics

log = logging.getLogger("opencs.monitor")


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
        while not self._stop.wait(self.interval):
            try:
                self.health.refresh()
                metrics.loop_pass(self.name, True)
            except Exception:
                log.exception("health refresh failed")
                metrics.loop_pass(self.name, False)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

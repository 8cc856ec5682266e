"""The monitoring loop: keeps the stack (when enabled) in line with the store — clusters to scrape,
alert rules to render — every `interval`, and at once when a rule changed."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from opencs import metrics

log = logging.getLogger("opencs.monitoring")


class Converger(Protocol):
    wake: threading.Event

    def converge(self) -> None: ...


class MonitoringLoop:
    name = "monitoring"

    def __init__(self, service: Converger, interval: float = 5.0) -> None:
        self.service = service
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="opencs-monitoring", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.service.wake.clear()
            try:
                self.service.converge()
                metrics.loop_pass(self.name, True)
            except Exception as e:  # the stack is optional: a failed pass is logged and retried
                log.warning("monitoring stack: %s", e)
                metrics.loop_pass(self.name, False)
            self.service.wake.wait(self.interval)

    def stop(self) -> None:
        """Stops the loop only: Prometheus and Alertmanager keep running (adopted by the next start)."""
        self._stop.set()
        self.service.wake.set()
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None

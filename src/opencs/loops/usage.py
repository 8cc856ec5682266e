"""The usage collector loop: one pass over every cluster's containers and nodes each `interval`."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from opencs import metrics

log = logging.getLogger("opencs.usage")


class Collector(Protocol):
    def collect(self) -> object: ...


class UsageLoop:
    """Owns one thread; what it converges is the usage snapshot that GET /metrics/containers shows."""

    name = "usage"

    def __init__(self, usage: Collector, interval: float = 15.0, name: str = "usage") -> None:
        self.name = name
        self.usage = usage
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"opencs-{self.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                self.usage.collect()
                metrics.loop_pass(self.name, True)
            except Exception:
                log.exception("%s collection failed", self.name)
                metrics.loop_pass(self.name, False)
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None

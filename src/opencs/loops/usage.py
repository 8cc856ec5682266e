"""The usage collector loop: one pass over every cluster's containers and nodes each `interval`;
and the InfluxDB add-on's writer, which writes what the passes queued."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from opencs import metrics

log = logging.getLogger("opencs.usage")


class Collector(Protocol):
    def collect(self) -> object: ...


class Drainer(Protocol):
    def drain(self, timeout: float) -> bool: ...

    def close(self) -> None: ...


class _Threaded:
    """One daemon thread running `_loop` until `stop()`."""

    name = "loop"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"opencs-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None


class UsageLoop(_Threaded):
    """What it converges is the usage snapshot that GET /metrics/containers shows."""

    def __init__(self, usage: Collector, interval: float = 15.0, name: str = "usage") -> None:
        super().__init__()
        self.name = name
        self.usage = usage
        self.interval = interval

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


class ExportLoop(_Threaded):
    """The InfluxDB add-on's writer thread: one batch at a time, so that a slow or absent InfluxDB
    holds up nothing but itself."""

    name = "influxdb-export"

    def __init__(self, export: Drainer) -> None:
        super().__init__()
        self.export = export

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.export.drain(0.5)
            except Exception:
                log.exception("InfluxDB export failed")
                self._stop.wait(1.0)

    def stop(self) -> None:
        super().stop()
        self.export.close()

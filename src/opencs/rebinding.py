"""A listener that keeps trying to bind in the background until it can, then serves until stopped.

Used for what the control plane serves on the nodes' bridge (the registry's token realm, the API's
node-facing paths): the bridge may come up after the server starts, and a second server process
sharing the data dir finds the address taken and waits to take over.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

Bound = TypeVar("Bound")


class RebindingListener(ABC, Generic[Bound]):
    """`_bind()` until it returns something, then `_serve()` it on a thread of its own."""

    name = "listener"

    def __init__(self, retry: float = 0.5, join_timeout: float = 5.0) -> None:
        self.retry = retry
        self.join_timeout = join_timeout
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def _bind(self) -> Bound | None:
        """The bound server or socket, or None while the address is missing or taken."""

    @abstractmethod
    def _serve(self, bound: Bound) -> None:
        """Serve until `_shutdown()` makes it return."""

    @abstractmethod
    def _shutdown(self) -> None:
        """Make a running `_serve()` return and release what it bound (safe when nothing is bound)."""

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"opencs-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            bound = self._bind()
            if bound is None:
                self._stop.wait(self.retry)
                continue
            self._serve(bound)
            return

    def stop(self) -> None:
        self._stop.set()
        self._shutdown()
        if self._thread is not None:
            self._thread.join(self.join_timeout)
            self._thread = None

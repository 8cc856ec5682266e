"""The health loop's pause: its interval, or twice a long pass, so that the monitor never keeps the
process (and the API in it) busy for good."""

from __future__ import annotations

import threading
import time

from opencs.loops.health import HealthLoop


class _Refresher:
    def __init__(self, took: float) -> None:
        self.took = took
        self.starts: list[float] = []
        self.enough = threading.Event()

    def refresh(self) -> None:
        self.starts.append(time.monotonic())
        time.sleep(self.took)
        if len(self.starts) >= 3:
            self.enough.set()


def test_short_passes_keep_the_interval_and_long_ones_pause_twice_as_long() -> None:
    fast = _Refresher(0.0)
    loop = HealthLoop(fast, interval=0.05)
    loop.start()
    assert fast.enough.wait(5)
    loop.stop()
    assert max(b - a for a, b in zip(fast.starts, fast.starts[1:], strict=False)) < 0.5

    slow = _Refresher(0.3)
    loop = HealthLoop(slow, interval=0.05)
    loop.start()
    assert slow.enough.wait(10)
    loop.stop()
    gaps = [b - a for a, b in zip(slow.starts, slow.starts[1:], strict=False)]
    assert min(gaps) >= 0.3 + 2 * 0.3 * 0.9, gaps  # the pass, then at least twice its length

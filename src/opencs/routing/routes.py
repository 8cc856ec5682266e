"""What the project tasks call so that a deploy, a scale or a blue-green weight change is routed
when the task says so (``opencs.routing.router``'s RouterService, or its lease holder's next pass)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from opencs.routing.haproxy import HAProxyError
from opencs.routing.router import RouterService

log = logging.getLogger("opencs.routing")


class Routes:
    """What the project tasks call so that a deploy, a scale or a weight change is live when the
    task says so: one pass of the loop's router when this process holds the router lease; else,
    with ``follow``, wait for the holder's next pass (only the holder writes HAProxy); else (no
    lease known) one pass of a non-owning router against the same HAProxy (made on first use)."""

    FOLLOW_TIMEOUT = 10.0

    def __init__(self, oneshot: Callable[[], RouterService] | None,
                 follow: Callable[[float, float], bool] | None = None) -> None:
        self._oneshot = oneshot
        self._follow = follow
        self._cached: RouterService | None = None
        self.active: RouterService | None = None  # set by the router loop while it runs

    def _local(self) -> RouterService | None:
        if self._oneshot is None:
            return None
        if self._cached is None:
            self._cached = self._oneshot()
        return self._cached

    def sync(self, *, drain: bool = False) -> bool:
        """Make the routes current now. With ``drain``, also wait until no request is served under
        the previous routes. Never raises: routing problems must not fail an application operation
        (they are logged)."""
        router = self.active
        try:
            if router is None and self._follow is not None:
                if not self._follow(time.time(), self.FOLLOW_TIMEOUT):
                    log.warning("routing: no router pass within %.0fs (is a router lease holder running?)",
                                self.FOLLOW_TIMEOUT)
                    return False
                local = self._local()  # the holder's HAProxy, when it is this host's (one data dir)
                if drain and local is not None and not local.drain():
                    log.warning("routing: HAProxy workers of the previous routes still have connections after 10s")
                return True
            router = router or self._local()
            if router is None:
                return False
            action = router.sync()
            if drain and not router.drain():
                log.warning("routing: HAProxy workers of the previous routes still have connections after 10s")
            return action not in ("off", "fenced")
        except (HAProxyError, OSError) as e:
            log.warning("routing sync failed: %s", e)
        except Exception:
            log.exception("routing sync failed")
        return False

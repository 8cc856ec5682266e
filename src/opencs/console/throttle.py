"""Failed sign-ins counted per login name and per source address (RAM's password policy: 5 failed
attempts within an hour lock the logon for an hour).

Beyond a limit, further attempts are refused without checking the password until the oldest failure
of the window has aged out; a success clears the login's count. The counts are this process's (a
restart forgets them), and they are kept for any name, known or not, so that a lock says nothing
about whether the user exists.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class FailedSignIns:
    WINDOW_SECONDS = 3600.0
    PER_LOGIN = 5
    PER_ADDRESS = 30
    MAX_TRACKED = 20_000

    def __init__(self, window: float | None = None, per_login: int | None = None,
                 per_address: int | None = None) -> None:
        self.window = window or self.WINDOW_SECONDS
        self.per_login = per_login or self.PER_LOGIN
        self.per_address = per_address or self.PER_ADDRESS
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(login: str, address: str) -> tuple[str, str]:
        return "login:" + login.strip().lower(), "addr:" + address

    def _recent(self, key: str, now: float) -> int:
        q = self._fails.get(key)
        if q is None:
            return 0
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            del self._fails[key]
            return 0
        return len(q)

    def blocked(self, login: str, address: str) -> bool:
        now = time.monotonic()
        by_login, by_addr = self._keys(login, address)
        with self._lock:
            return self._recent(by_login, now) >= self.per_login or self._recent(by_addr, now) >= self.per_address

    def failed(self, login: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._fails) >= self.MAX_TRACKED:
                for key in list(self._fails):
                    self._recent(key, now)
                while len(self._fails) >= self.MAX_TRACKED:  # still full: the stalest go
                    del self._fails[min(self._fails, key=lambda k: self._fails[k][-1])]
            for key in self._keys(login, address):
                self._fails.setdefault(key, deque()).append(now)

    def succeeded(self, login: str) -> None:
        with self._lock:
            self._fails.pop(self._keys(login, "")[0], None)

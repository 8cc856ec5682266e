"""Console sessions: a random id in an HttpOnly, SameSite=Strict cookie, the rest on the server.

The cookie carries nothing but 256 random bits; the session (whose AccessKey it stands for — or,
signed in with a password, which user and a stamp of the password it was checked against — its CSRF
token, when it lapses) stays in this process, so signing out or an idle timeout ends it for
good and a stolen cookie cannot be extended by its holder beyond the idle window. Sessions do not
outlive the process: a restart signs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

COOKIE = "opencs_console"


@dataclass
class Session:
    sid: str
    access_key_id: str  # "" for a password session
    csrf: str
    expires: float = field(default=0.0)
    user_id: str = ""  # a password session's user (RAM login profile)
    stamp: str = ""  # of the password hash it was opened with (opencs.services.login_profiles.stamp_of)
    must_reset: bool = False  # PasswordResetRequired: no page but the new-password form until it is set

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf.encode(), (token or "").encode())


class Sessions:
    IDLE_SECONDS = 8 * 3600
    MAX_SESSIONS = 10_000

    def __init__(self, idle_seconds: float | None = None) -> None:
        self.idle = idle_seconds or self.IDLE_SECONDS
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, access_key_id: str, user_id: str = "", stamp: str = "", must_reset: bool = False) -> Session:
        s = Session(secrets.token_urlsafe(32), access_key_id, secrets.token_urlsafe(32), time.monotonic() + self.idle,
                    user_id, stamp, must_reset)
        with self._lock:
            if len(self._by_id) >= self.MAX_SESSIONS:
                self._expire()
            self._by_id[s.sid] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session of a cookie value (its idle window starts again), or None."""
        if not sid:
            return None
        now = time.monotonic()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if s.expires < now:
                del self._by_id[sid]
                return None
            s.expires = now + self.idle
            return s

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._by_id.pop(sid or "", None)

    def close_key(self, access_key_id: str) -> None:
        """End every session of a key (it was disabled or deleted from the console)."""
        with self._lock:
            for sid in [k for k, s in self._by_id.items() if s.access_key_id == access_key_id]:
                del self._by_id[sid]

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [k for k, s in self._by_id.items() if s.expires < now]:
            del self._by_id[sid]
        while len(self._by_id) >= self.MAX_SESSIONS:  # still full: the oldest go
            del self._by_id[min(self._by_id, key=lambda k: self._by_id[k].expires)]

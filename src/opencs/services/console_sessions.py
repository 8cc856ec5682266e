"""Console sessions: a random id in an HttpOnly, SameSite=Strict cookie, the rest in the store.

The cookie carries nothing but 256 random bits. The session (whose AccessKey it stands for — or,
signed in with a password, which user and a stamp of the password it was checked against — whether
a new password is due, when it lapses) is a row of the store keyed by the SHA-256 of that id, never
the id: every API process on the database knows it (issue 13: any of them may answer the browser),
a restart keeps it, and signing out or an idle timeout ends it for good in all of them. A stolen
cookie cannot be extended by its holder beyond the idle window; a copy of the database opens no
session.

The CSRF token is derived, not stored: an HMAC keyed by the session id. Any process holding the
cookie computes it, so nothing is shared but the row; the stored hash does not give it (nor the
id), and the token, seen in a page, does not give the id.

The idle window slides with every request, but the row is written only when it would move by more
than a minute (`REFRESH_SECONDS`): a page load reads the store, it does not write it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from opencs.store.db import utcnow
from opencs.store.repos.console_sessions import ConsoleSessionRepo, SessionRecord

_CSRF_LABEL = b"opencs console CSRF token"


def sid_hash(sid: str) -> str:
    """What the store keeps of a session id."""
    return hashlib.sha256(sid.encode()).hexdigest()


def csrf_of(sid: str) -> str:
    """The session's CSRF token: HMAC-SHA256 keyed by its id (distinct from the stored hash)."""
    mac = hmac.new(sid.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


@dataclass
class Session:
    sid: str  # the cookie's value: only ever in this request's memory
    access_key_id: str  # "" for a password session
    csrf: str
    expires: datetime = field(default=datetime.min)
    user_id: str = ""  # a password session's user (RAM login profile)
    stamp: str = ""  # of the password hash it was opened with (opencs.services.login_profiles.stamp_of)
    must_reset: bool = False  # PasswordResetRequired: no page but the new-password form until it is set

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf.encode(), (token or "").encode())


class ConsoleSessions:
    IDLE_SECONDS = 8 * 3600
    MAX_SESSIONS = 10_000
    REFRESH_SECONDS = 60.0

    def __init__(self, repo: ConsoleSessionRepo, idle_seconds: float | None = None,
                 max_sessions: int | None = None) -> None:
        self.repo = repo
        self.idle = timedelta(seconds=idle_seconds or self.IDLE_SECONDS)
        self.max_sessions = max_sessions or self.MAX_SESSIONS
        self.refresh = timedelta(seconds=min(self.REFRESH_SECONDS, self.idle.total_seconds() / 10))

    def open(self, access_key_id: str, user_id: str = "", stamp: str = "", must_reset: bool = False) -> Session:
        now, sid = utcnow(), secrets.token_urlsafe(32)
        s = Session(sid, access_key_id, csrf_of(sid), now + self.idle, user_id, stamp, must_reset)
        self.repo.add(SessionRecord(sid_hash(sid), access_key_id, user_id, stamp, must_reset, s.expires), now,
                      self.max_sessions)
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session of a cookie value (its idle window starts again), or None."""
        if not sid:
            return None
        key, now = sid_hash(sid), utcnow()
        rec = self.repo.get(key)
        if rec is None:
            return None
        if rec.expires < now:
            self.repo.delete(key)
            return None
        expires = rec.expires
        if now + self.idle - expires > self.refresh:
            expires = now + self.idle
            self.repo.extend(key, expires)
        return Session(sid, rec.access_key_id, csrf_of(sid), expires, rec.user_id, rec.stamp, rec.must_reset)

    def password_set(self, session: Session, stamp: str) -> None:
        """The session's user chose a new password: the session goes on with it, no reset due."""
        self.repo.password_set(sid_hash(session.sid), stamp)
        session.stamp, session.must_reset = stamp, False

    def close(self, sid: str | None) -> None:
        if sid:
            self.repo.delete(sid_hash(sid))

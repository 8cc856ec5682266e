"""Failed console sign-ins counted per login name and per source address (RAM's password policy: 5
failed attempts within an hour lock the logon for an hour).

Beyond a limit, further attempts are refused without checking the password until the oldest failure
of the window has aged out; a success clears the login's count. The failures are rows of the store
with their wall-clock time, so every API process on the database counts the same ones (N processes
do not allow N times the attempts) and a restart forgets none. They are kept for any name, known or
not, so that a lock says nothing about whether the user exists; a key is stored as its SHA-256 (a
password typed into the name field is not written down). Failures older than the window are
deleted with each new one.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from opencs.store.db import utcnow
from opencs.store.repos.failed_signins import FailedSignInRepo


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class FailedSignIns:
    WINDOW_SECONDS = 3600.0
    PER_LOGIN = 5
    PER_ADDRESS = 30

    def __init__(self, repo: FailedSignInRepo, window: float | None = None, per_login: int | None = None,
                 per_address: int | None = None) -> None:
        self.repo = repo
        self.window = timedelta(seconds=window or self.WINDOW_SECONDS)
        self.per_login = per_login or self.PER_LOGIN
        self.per_address = per_address or self.PER_ADDRESS

    @staticmethod
    def _keys(login: str, address: str) -> tuple[str, str]:
        return _hash("login:" + login.strip().lower()), _hash("addr:" + address)

    def blocked(self, login: str, address: str) -> bool:
        by_login, by_addr = self._keys(login, address)
        n = self.repo.counts([by_login, by_addr], utcnow() - self.window)
        return n.get(by_login, 0) >= self.per_login or n.get(by_addr, 0) >= self.per_address

    def failed(self, login: str, address: str) -> None:
        now = utcnow()
        self.repo.add(self._keys(login, address), now, now - self.window)

    def succeeded(self, login: str) -> None:
        self.repo.clear(self._keys(login, "")[0])

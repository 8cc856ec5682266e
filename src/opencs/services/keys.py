"""AccessKeys: the credentials that sign control-plane requests."""

from __future__ import annotations

import builtins
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime

from opencs import ids
from opencs.errors import Conflict, NotCached, NotFound
from opencs.secretbox import SecretBox
from opencs.store.db import utcnow
from opencs.store.repos.keys import KeyRecord, KeyRepo
from opencs.store.tenancy import ROOT_OWNER_USER_ID


@dataclass(frozen=True)
class KeyInfo:
    access_key_id: str
    description: str
    status: str
    is_admin: bool
    created: datetime
    user_id: str = ROOT_OWNER_USER_ID


def _info(rec: KeyRecord) -> KeyInfo:
    return KeyInfo(rec.access_key_id, rec.description, rec.status, rec.is_admin, rec.created, rec.user_id)


def _not_found(access_key_id: str) -> NotFound:
    return NotFound(f"AccessKey {access_key_id} not found", code="AccessKeyNotFound")


class KeyService:
    # how long a verified secret is reused before the store is asked again: a key disabled or
    # deleted in another process stops working within this time (in this process: at once)
    CACHE_SECONDS = 2.0

    def __init__(self, repo: KeyRepo, box: SecretBox) -> None:
        self.repo = repo
        self.box = box
        self._cache: dict[str, tuple[float, str | None]] = {}

    def create(self, description: str = "", *, admin: bool = True,
               user_id: str = ROOT_OWNER_USER_ID) -> tuple[str, str]:
        """Returns (id, secret). The secret is shown to the caller once and stored encrypted.
        Without a user: a key of the first account's owner."""
        ak, secret = ids.access_key_id(), ids.access_key_secret()
        if not self.repo.add(self._record(ak, secret, description, admin, user_id)):
            raise Conflict(f"AccessKey {ak} already exists")
        return ak, secret

    def ensure(self, access_key_id: str, secret: str, description: str = "bootstrap") -> bool:
        """Idempotent bootstrap: make sure this admin key exists with this secret and is active.
        Returns True when it was created or changed."""
        if not access_key_id or not secret:
            raise ValueError("bootstrap AccessKey id and secret must both be non-empty")
        rec = self.repo.get(access_key_id)
        if rec is None:
            return self.repo.add(self._record(access_key_id, secret, description, True))
        changed = self.box.decrypt(rec.secret_enc) != secret or rec.status != "active" or not rec.is_admin
        if changed:
            self.repo.update(access_key_id, secret_enc=self.box.encrypt(secret), status="active", is_admin=True)
            self._cache.pop(access_key_id, None)
        return changed

    def _record(self, ak: str, secret: str, description: str, admin: bool,
                user_id: str = ROOT_OWNER_USER_ID) -> KeyRecord:
        return KeyRecord(ak, self.box.encrypt(secret), description, "active", admin, utcnow(), user_id)

    def list(self, user_id: str | None = None) -> builtins.list[KeyInfo]:
        return [_info(r) for r in self.repo.list(user_id)]

    def get(self, access_key_id: str) -> KeyInfo | None:
        rec = self.repo.get(access_key_id)
        return _info(rec) if rec is not None else None

    def set_status(self, access_key_id: str, status: str) -> KeyInfo:
        rec = self.repo.update(access_key_id, status=status)
        self._cache.pop(access_key_id, None)
        if rec is None:
            raise _not_found(access_key_id)
        return _info(rec)

    def delete(self, access_key_id: str) -> None:
        if not self.repo.delete(access_key_id):
            raise _not_found(access_key_id)
        self._cache.pop(access_key_id, None)

    def active_secret(self, access_key_id: str) -> str | None:
        """The secret of an active key, or None (unknown or disabled)."""
        with contextlib.suppress(NotCached):
            return self.cached_secret(access_key_id)
        now = time.monotonic()
        rec = self.repo.get(access_key_id)
        secret = None if rec is None or rec.status != "active" else self.box.decrypt(rec.secret_enc)
        if len(self._cache) > 10_000:  # unknown ids must not grow it without bound
            self._cache.clear()
        self._cache[access_key_id] = (now, secret)
        return secret

    def cached_secret(self, access_key_id: str) -> str | None:
        """`active_secret` from memory, for a caller on the event loop: raises NotCached when the
        answer is unknown or older than CACHE_SECONDS (the caller then asks `active_secret`)."""
        hit = self._cache.get(access_key_id)
        if hit is None or time.monotonic() - hit[0] >= self.CACHE_SECONDS:
            raise NotCached(access_key_id)
        return hit[1]

    def count(self) -> int:
        return self.repo.count()

"""AccessKeys: the credentials that sign control-plane requests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from opencs import ids
from opencs.errors import Conflict, NotFound
from opencs.secretbox import SecretBox
from opencs.store.db import Database, utcnow
from opencs.store.models import AccessKey


@dataclass(frozen=True)
class KeyInfo:
    access_key_id: str
    description: str
    status: str
    is_admin: bool
    created: datetime


def _info(row: AccessKey) -> KeyInfo:
    return KeyInfo(row.access_key_id, row.description, row.status, row.is_admin, row.created)


class KeyService:
    # how long a verified secret is reused before the store is asked again: a key disabled or
    # deleted in another process stops working within this time (in this process: at once)
    CACHE_SECONDS = 2.0

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box
        self._cache: dict[str, tuple[float, str | None]] = {}

    def create(self, description: str = "", *, admin: bool = True) -> tuple[str, str]:
        """Returns (id, secret). The secret is shown to the caller once and stored encrypted."""
        ak, secret = ids.access_key_id(), ids.access_key_secret()
        self._insert(ak, secret, description, admin)
        return ak, secret

    def ensure(self, access_key_id: str, secret: str, description: str = "bootstrap") -> bool:
        """Idempotent bootstrap: make sure this admin key exists with this secret and is active.
        Returns True when it was created or changed."""
        if not access_key_id or not secret:
            raise ValueError("bootstrap AccessKey id and secret must both be non-empty")
        with self.db.session() as s:
            row = s.get(AccessKey, access_key_id)
            if row is None:
                s.add(self._row(access_key_id, secret, description, True))
                return True
            changed = self.box.decrypt(row.secret_enc) != secret or row.status != "active" or not row.is_admin
            if changed:
                row.secret_enc, row.status, row.is_admin = self.box.encrypt(secret), "active", True
                self._cache.pop(access_key_id, None)
            return changed

    def _row(self, ak: str, secret: str, description: str, admin: bool) -> AccessKey:
        return AccessKey(
            access_key_id=ak,
            secret_enc=self.box.encrypt(secret),
            description=description,
            status="active",
            is_admin=admin,
            created=utcnow(),
        )

    def _insert(self, ak: str, secret: str, description: str, admin: bool) -> None:
        with self.db.session() as s:
            if s.get(AccessKey, ak) is not None:
                raise Conflict(f"AccessKey {ak} already exists")
            s.add(self._row(ak, secret, description, admin))

    def list(self) -> list[KeyInfo]:
        with self.db.session() as s:
            return [_info(r) for r in s.scalars(select(AccessKey).order_by(AccessKey.created))]

    def set_status(self, access_key_id: str, status: str) -> KeyInfo:
        with self.db.session() as s:
            row = s.get(AccessKey, access_key_id)
            if row is None:
                raise NotFound(f"AccessKey {access_key_id} not found", code="AccessKeyNotFound")
            row.status = status
            self._cache.pop(access_key_id, None)
            return _info(row)

    def delete(self, access_key_id: str) -> None:
        with self.db.session() as s:
            row = s.get(AccessKey, access_key_id)
            if row is None:
                raise NotFound(f"AccessKey {access_key_id} not found", code="AccessKeyNotFound")
            s.delete(row)
        self._cache.pop(access_key_id, None)

    def active_secret(self, access_key_id: str) -> str | None:
        """The secret of an active key, or None (unknown or disabled)."""
        now = time.monotonic()
        hit = self._cache.get(access_key_id)
        if hit is not None and now - hit[0] < self.CACHE_SECONDS:
            return hit[1]
        with self.db.session() as s:
            row = s.get(AccessKey, access_key_id)
            secret = None if row is None or row.status != "active" else self.box.decrypt(row.secret_enc)
        if len(self._cache) > 10_000:  # unknown ids must not grow it without bound
            self._cache.clear()
        self._cache[access_key_id] = (now, secret)
        return secret

    def count(self) -> int:
        with self.db.session() as s:
            return len(s.scalars(select(AccessKey.access_key_id)).all())

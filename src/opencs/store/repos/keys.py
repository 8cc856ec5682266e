"""AccessKey rows (secrets stay encrypted here; decrypting is the key service's business)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from opencs.store.db import Database
from opencs.store.models import AccessKey
from opencs.store.tenancy import ROOT_OWNER_USER_ID


@dataclass(frozen=True)
class KeyRecord:
    access_key_id: str
    secret_enc: str
    description: str
    status: str
    is_admin: bool
    created: datetime
    user_id: str = ROOT_OWNER_USER_ID


def _record(row: AccessKey) -> KeyRecord:
    return KeyRecord(row.access_key_id, row.secret_enc, row.description, row.status, row.is_admin, row.created,
                     row.user_id)


class KeyRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, access_key_id: str) -> KeyRecord | None:
        with self.db.read() as s:
            row = s.get(AccessKey, access_key_id)
            return _record(row) if row is not None else None

    def add(self, rec: KeyRecord) -> bool:
        """Insert; False when the id exists already."""
        with self.db.session() as s:
            if s.get(AccessKey, rec.access_key_id) is not None:
                return False
            s.add(AccessKey(access_key_id=rec.access_key_id, secret_enc=rec.secret_enc, description=rec.description,
                            status=rec.status, is_admin=rec.is_admin, created=rec.created, user_id=rec.user_id))
            return True

    def update(self, access_key_id: str, *, secret_enc: str | None = None, status: str | None = None,
               is_admin: bool | None = None) -> KeyRecord | None:
        with self.db.session() as s:
            row = s.get(AccessKey, access_key_id)
            if row is None:
                return None
            if secret_enc is not None:
                row.secret_enc = secret_enc
            if status is not None:
                row.status = status
            if is_admin is not None:
                row.is_admin = is_admin
            return _record(row)

    def delete(self, access_key_id: str) -> bool:
        with self.db.session() as s:
            row = s.get(AccessKey, access_key_id)
            if row is None:
                return False
            s.delete(row)
            return True

    def list(self, user_id: str | None = None) -> list[KeyRecord]:
        with self.db.session() as s:
            q = select(AccessKey).order_by(AccessKey.created)
            if user_id is not None:
                q = q.where(AccessKey.user_id == user_id)
            return [_record(r) for r in s.scalars(q)]

    def count(self) -> int:
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(AccessKey)) or 0)

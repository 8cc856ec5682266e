"""Client certificates of clusters by serial, and each cluster's CA for sub-users' certificates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from opencs.store.db import Database, utcnow
from opencs.store.models import AccessKey, Cluster, ClusterCert, LoginProfile, User


@dataclass(frozen=True)
class CertRecord:
    serial: str
    cluster_id: str
    account_id: str
    user_id: str
    user_name: str
    access_key_id: str
    created: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    revoked_by: str = ""


@dataclass(frozen=True)
class CertHolder:
    """A certificate with what decides whether it still counts: its user and its AccessKey as they are."""

    cert: CertRecord
    user_exists: bool
    is_owner: bool
    key_status: str | None  # "active" | "disabled" | None (no such key, or the cert names none)
    # issued to a console session signed in with a password (no key): whether that logon still exists
    has_login_profile: bool = False


@dataclass(frozen=True)
class ClusterCa:
    cluster_id: str
    account_id: str
    ca_cert_pem: str
    ca_key_enc: str


def _rec(r: ClusterCert) -> CertRecord:
    return CertRecord(r.serial, r.cluster_id, r.account_id, r.user_id, r.user_name, r.access_key_id, r.created,
                      r.not_after, r.revoked_at, r.revoked_by)


# () -> (CA certificate PEM, its key encrypted): called only when the cluster has no such CA yet
CaFactory = Callable[[], tuple[str, str]]


class CertRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, rec: CertRecord) -> None:
        with self.db.session() as s:
            s.add(ClusterCert(serial=rec.serial, cluster_id=rec.cluster_id, account_id=rec.account_id,
                              user_id=rec.user_id, user_name=rec.user_name, access_key_id=rec.access_key_id,
                              created=rec.created, not_after=rec.not_after, revoked_at=None, revoked_by=""))

    def get(self, serial: str) -> CertRecord | None:
        with self.db.session() as s:
            r = s.get(ClusterCert, serial)
            return _rec(r) if r is not None else None

    def holder(self, serial: str) -> CertHolder | None:
        """The certificate and the current state of its user and key, in one read."""
        with self.db.session() as s:
            r = s.get(ClusterCert, serial)
            if r is None:
                return None
            user = s.get(User, r.user_id)
            key = s.get(AccessKey, r.access_key_id) if r.access_key_id else None
            status = key.status if key is not None and key.user_id == r.user_id else None
            logon = not r.access_key_id and s.get(LoginProfile, r.user_id) is not None
            return CertHolder(_rec(r), user is not None, bool(user and user.is_owner), status, logon)

    def of_cluster(self, cluster_id: str) -> list[CertRecord]:
        with self.db.session() as s:
            q = select(ClusterCert).where(ClusterCert.cluster_id == cluster_id).order_by(ClusterCert.created)
            return [_rec(r) for r in s.scalars(q)]

    def revoke(self, serials: list[str], by: str) -> list[str]:
        """Mark these certificates revoked (once: the first revocation's time stays); the ones changed."""
        if not serials:
            return []
        with self.db.session() as s:
            rows = list(s.scalars(select(ClusterCert).where(ClusterCert.serial.in_(serials),
                                                            ClusterCert.revoked_at.is_(None))))
            now = utcnow()
            for r in rows:
                r.revoked_at, r.revoked_by = now, by
            return [r.serial for r in rows]

    def cluster_ca(self, cluster_id: str) -> ClusterCa | None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            if c is None or not (c.ca_cert_pem and c.ca_key_enc):
                return None
            return ClusterCa(cluster_id, c.account_id, c.ca_cert_pem, c.ca_key_enc)

    def user_ca(self, cluster_id: str, make: CaFactory) -> tuple[str, str] | None:
        """The cluster's CA for sub-users' certificates, made by `make` the first time. Two processes
        making it at once: the first write wins and both use that one."""
        with self.db.session() as s:
            row = s.execute(select(Cluster.user_ca_cert_pem, Cluster.user_ca_key_enc)
                            .where(Cluster.cluster_id == cluster_id)).first()
        if row is None:
            return None
        if row[0] and row[1]:
            return str(row[0]), str(row[1])
        cert, key_enc = make()
        with self.db.session() as s:
            s.execute(update(Cluster).where(Cluster.cluster_id == cluster_id, Cluster.user_ca_cert_pem.is_(None))
                      .values(user_ca_cert_pem=cert, user_ca_key_enc=key_enc))
        with self.db.session() as s:
            row = s.execute(select(Cluster.user_ca_cert_pem, Cluster.user_ca_key_enc)
                            .where(Cluster.cluster_id == cluster_id)).first()
        return (str(row[0]), str(row[1])) if row is not None and row[0] and row[1] else None

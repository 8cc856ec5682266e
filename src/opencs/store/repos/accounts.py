"""Accounts, RAM users, policies and their attachments; who a key belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from opencs.store.db import Database, utcnow
from opencs.store.models import (
    AccessKey,
    Account,
    Cluster,
    InstanceRow,
    LoginProfile,
    Policy,
    PolicyAttachment,
    Task,
    User,
)
from opencs.store.tenancy import ROOT_ACCOUNT_ID


@dataclass(frozen=True)
class AccountRecord:
    account_id: str
    name: str
    created: datetime


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    account_id: str
    user_name: str
    display_name: str
    comments: str
    is_owner: bool
    created: datetime
    updated: datetime
    last_login: datetime | None = None


@dataclass(frozen=True)
class PolicyRecord:
    account_id: str
    policy_name: str
    description: str
    document: str
    created: datetime
    updated: datetime
    attachments: int = 0


@dataclass(frozen=True)
class KeyOwner:
    """The identity behind an AccessKey, as authorization needs it."""

    access_key_id: str
    account_id: str
    user_id: str
    user_name: str
    is_owner: bool


def user_record(r: User) -> UserRecord:
    return UserRecord(r.user_id, r.account_id, r.user_name, r.display_name, r.comments, r.is_owner,
                      r.created, r.updated, r.last_login)


def _policy(r: Policy, n: int = 0) -> PolicyRecord:
    return PolicyRecord(r.account_id, r.policy_name, r.description, r.document, r.created, r.updated, n)


class AccountRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ accounts
    def add_account(self, account_id: str, name: str, owner_id: str, owner_name: str) -> bool:
        """The account with its owner user; False when the name is taken."""
        now = utcnow()
        try:
            with self.db.session() as s:
                if s.scalar(select(Account).where(Account.name == name)) is not None:
                    return False
                s.add(Account(account_id=account_id, name=name, created=now))
                s.add(User(user_id=owner_id, account_id=account_id, user_name=owner_name, display_name=owner_name,
                           comments="account owner", is_owner=True, created=now, updated=now))
        except IntegrityError:
            return False
        return True

    def accounts(self) -> list[AccountRecord]:
        with self.db.session() as s:
            return [AccountRecord(a.account_id, a.name, a.created)
                    for a in s.scalars(select(Account).order_by(Account.created))]

    # ------------------------------------------------------------------ users
    def add_user(self, rec: UserRecord) -> bool:
        try:
            with self.db.session() as s:
                if self._user_row(s, rec.account_id, rec.user_name) is not None:
                    return False
                s.add(User(user_id=rec.user_id, account_id=rec.account_id, user_name=rec.user_name,
                           display_name=rec.display_name, comments=rec.comments, is_owner=rec.is_owner,
                           created=rec.created, updated=rec.updated))
        except IntegrityError:
            return False
        return True

    @staticmethod
    def _user_row(s: object, account_id: str, user_name: str) -> User | None:
        q = select(User).where(User.account_id == account_id, User.user_name == user_name)
        return s.scalar(q)  # type: ignore[attr-defined,no-any-return]

    def user(self, account_id: str, user_name: str) -> UserRecord | None:
        with self.db.session() as s:
            r = self._user_row(s, account_id, user_name)
            return user_record(r) if r is not None else None

    def user_by_id(self, user_id: str) -> UserRecord | None:
        with self.db.session() as s:
            r = s.get(User, user_id)
            return user_record(r) if r is not None else None

    def owner(self, account_id: str) -> UserRecord | None:
        with self.db.session() as s:
            r = s.scalar(select(User).where(User.account_id == account_id, User.is_owner.is_(True)))
            return user_record(r) if r is not None else None

    def users(self, account_id: str) -> list[UserRecord]:
        with self.db.session() as s:
            q = select(User).where(User.account_id == account_id).order_by(User.created, User.user_name)
            return [user_record(r) for r in s.scalars(q)]

    def delete_user(self, user_id: str) -> None:
        """The user with its keys, attachments and login profile (the caller checked it may go)."""
        with self.db.session() as s:
            s.execute(delete(AccessKey).where(AccessKey.user_id == user_id))
            s.execute(delete(LoginProfile).where(LoginProfile.user_id == user_id))
            s.execute(delete(PolicyAttachment).where(PolicyAttachment.user_id == user_id))
            s.execute(delete(User).where(User.user_id == user_id))

    # ------------------------------------------------------------------ registry passwords
    def set_registry_password(self, user_id: str, password_hash: str) -> bool:
        """False when the user is gone."""
        with self.db.session() as s:
            row = s.get(User, user_id)
            if row is None:
                return False
            row.registry_password, row.updated = password_hash, utcnow()
            return True

    def registry_login(self, account_name: str, user_name: str) -> tuple[UserRecord, str] | None:
        """The user `user_name` of the account named `account_name` and its password hash, when set."""
        with self.db.session() as s:
            row = s.execute(select(User).join(Account, Account.account_id == User.account_id)
                            .where(Account.name == account_name, User.user_name == user_name)).scalar()
            if row is None or not row.registry_password:
                return None
            return user_record(row), row.registry_password

    def account_name(self, account_id: str) -> str | None:
        with self.db.session() as s:
            return s.scalar(select(Account.name).where(Account.account_id == account_id))

    def key_owner(self, access_key_id: str) -> KeyOwner | None:
        with self.db.session() as s:
            row = s.execute(select(User).join(AccessKey, AccessKey.user_id == User.user_id)
                            .where(AccessKey.access_key_id == access_key_id)).scalar()
            if row is None:
                return None
            return KeyOwner(access_key_id, row.account_id, row.user_id, row.user_name, row.is_owner)

    # ------------------------------------------------------------------ policies
    def add_policy(self, rec: PolicyRecord) -> bool:
        try:
            with self.db.session() as s:
                if s.get(Policy, (rec.account_id, rec.policy_name)) is not None:
                    return False
                s.add(Policy(account_id=rec.account_id, policy_name=rec.policy_name, description=rec.description,
                             document=rec.document, created=rec.created, updated=rec.updated))
        except IntegrityError:
            return False
        return True

    def policy(self, account_id: str, name: str) -> PolicyRecord | None:
        with self.db.session() as s:
            r = s.get(Policy, (account_id, name))
            return _policy(r, self._attached_count(s, account_id, name)) if r is not None else None

    @staticmethod
    def _attached_count(s: object, account_id: str, name: str) -> int:
        q = select(func.count()).select_from(PolicyAttachment).where(
            PolicyAttachment.account_id == account_id, PolicyAttachment.policy_name == name)
        return int(s.scalar(q) or 0)  # type: ignore[attr-defined]

    def policies(self, account_id: str) -> list[PolicyRecord]:
        with self.db.session() as s:
            q = select(Policy).where(Policy.account_id == account_id).order_by(Policy.created, Policy.policy_name)
            return [_policy(r, self._attached_count(s, account_id, r.policy_name)) for r in s.scalars(q)]

    def delete_policy(self, account_id: str, name: str) -> bool:
        with self.db.session() as s:
            return bool(s.execute(delete(Policy).where(Policy.account_id == account_id,
                                                       Policy.policy_name == name)).rowcount)  # type: ignore[attr-defined]

    def attach(self, account_id: str, user_id: str, name: str) -> bool:
        """False when it was attached already."""
        with self.db.session() as s:
            if s.get(PolicyAttachment, (user_id, name)) is not None:
                return False
            s.add(PolicyAttachment(user_id=user_id, policy_name=name, account_id=account_id, attached=utcnow()))
            return True

    def detach(self, user_id: str, name: str) -> bool:
        with self.db.session() as s:
            return bool(s.execute(delete(PolicyAttachment).where(
                PolicyAttachment.user_id == user_id, PolicyAttachment.policy_name == name)).rowcount)  # type: ignore[attr-defined]

    def user_policies(self, user_id: str) -> list[tuple[PolicyRecord, datetime]]:
        with self.db.session() as s:
            q = (select(Policy, PolicyAttachment.attached)
                 .join(PolicyAttachment, (PolicyAttachment.account_id == Policy.account_id)
                       & (PolicyAttachment.policy_name == Policy.policy_name))
                 .where(PolicyAttachment.user_id == user_id).order_by(PolicyAttachment.attached))
            return [(_policy(p), at) for p, at in s.execute(q).all()]

    # ------------------------------------------------------------------ resources
    def cluster_accounts(self) -> dict[str, str]:
        """cluster_id -> owning account, for every cluster (small: one row per cluster)."""
        with self.db.session() as s:
            return {cid: acct for cid, acct in s.execute(select(Cluster.cluster_id, Cluster.account_id))}

    def instance_account(self, instance_id: str) -> str | None:
        with self.db.session() as s:
            return s.scalar(select(InstanceRow.account_id).where(InstanceRow.instance_id == instance_id))

    def instance_cluster(self, instance_id: str) -> str | None:
        with self.db.session() as s:
            return s.scalar(select(InstanceRow.cluster_id).where(InstanceRow.instance_id == instance_id))

    def cluster_account(self, cluster_id: str) -> str | None:
        with self.db.session() as s:
            return s.scalar(select(Cluster.account_id).where(Cluster.cluster_id == cluster_id))

    def task_account(self, task_id: str) -> str | None:
        """The account of the task's cluster (tasks of no cluster: the first account's)."""
        with self.db.session() as s:
            row = s.execute(select(Task.cluster_id).where(Task.task_id == task_id)).first()
            if row is None:
                return None
            if row[0] is None:
                return ROOT_ACCOUNT_ID
            return s.scalar(select(Cluster.account_id).where(Cluster.cluster_id == row[0])) or ROOT_ACCOUNT_ID

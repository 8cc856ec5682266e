"""RAM login profiles (a user's console logon): rows keyed by the user, found by `user@account`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select, update

from opencs.store.db import Database, utcnow
from opencs.store.models import Account, LoginProfile, User
from opencs.store.repos.accounts import UserRecord, user_record


@dataclass(frozen=True)
class LoginProfileRecord:
    user_id: str
    password_hash: str
    password_reset_required: bool
    mfa_bind_required: bool
    created: datetime
    updated: datetime


def _rec(r: LoginProfile) -> LoginProfileRecord:
    return LoginProfileRecord(r.user_id, r.password_hash, r.password_reset_required, r.mfa_bind_required,
                              r.created, r.updated)


class LoginProfileRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, user_id: str, password_hash: str, reset_required: bool, mfa_required: bool) -> bool:
        """False when the user has one already, or is gone."""
        now = utcnow()
        with self.db.session() as s:
            if s.get(User, user_id) is None or s.get(LoginProfile, user_id) is not None:
                return False
            s.add(LoginProfile(user_id=user_id, password_hash=password_hash, password_reset_required=reset_required,
                               mfa_bind_required=mfa_required, created=now, updated=now))
        return True

    def get(self, user_id: str) -> LoginProfileRecord | None:
        with self.db.session() as s:
            r = s.get(LoginProfile, user_id)
            return _rec(r) if r is not None else None

    def update(self, user_id: str, password_hash: str | None, reset_required: bool | None,
               mfa_required: bool | None) -> LoginProfileRecord | None:
        """The changed profile; None when there is none. A None value is left as it is."""
        with self.db.session() as s:
            r = s.get(LoginProfile, user_id)
            if r is None:
                return None
            given = {"password_hash": password_hash, "password_reset_required": reset_required,
                     "mfa_bind_required": mfa_required}
            for column, value in given.items():
                if value is not None:
                    setattr(r, column, value)
            r.updated = utcnow()
            s.flush()
            return _rec(r)

    def delete(self, user_id: str) -> bool:
        with self.db.session() as s:
            return bool(s.execute(delete(LoginProfile).where(LoginProfile.user_id == user_id)).rowcount)  # type: ignore[attr-defined]

    def signed_in(self, user_id: str) -> None:
        """Record a console sign-in with the password (GetUser's LastLoginDate)."""
        with self.db.session() as s:
            s.execute(update(User).where(User.user_id == user_id).values(last_login=utcnow()))

    def find(self, account: str, user_name: str) -> tuple[UserRecord, LoginProfileRecord] | None:
        """The user `user_name` of the account whose name or id is `account`, with its login profile."""
        with self.db.session() as s:
            row = s.execute(select(User, LoginProfile)
                            .join(Account, Account.account_id == User.account_id)
                            .join(LoginProfile, LoginProfile.user_id == User.user_id)
                            .where(or_(Account.name == account, Account.account_id == account),
                                   User.user_name == user_name)).first()
            return (user_record(row[0]), _rec(row[1])) if row is not None else None

    def account_id(self, account: str) -> str | None:
        """The id of the account whose name or id is `account`."""
        with self.db.session() as s:
            return s.scalar(select(Account.account_id).where(or_(Account.name == account,
                                                                 Account.account_id == account)))

    def of_user(self, user_id: str) -> tuple[UserRecord, LoginProfileRecord] | None:
        """The user and its login profile, when both exist (a console session's check)."""
        with self.db.session() as s:
            row = s.execute(select(User, LoginProfile).join(LoginProfile, LoginProfile.user_id == User.user_id)
                            .where(User.user_id == user_id)).first()
            return (user_record(row[0]), _rec(row[1])) if row is not None else None

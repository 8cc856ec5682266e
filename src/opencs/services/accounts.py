"""Accounts, RAM users and their AccessKeys, policies and attachments; who is calling.

An account is a tenant; its owner user (made with it) is not subject to policies, every other
user gets exactly what its attached policies allow. A user has at most two AccessKeys, so that a
rotation keeps the old key valid while the user switches (RAM's rule).
"""

from __future__ import annotations

import builtins
import contextlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from opencs.errors import BadRequest, Conflict, NotCached, NotFound
from opencs.services.keys import KeyInfo, KeyService
from opencs.services.policies import Statement, parse_document
from opencs.store.db import utcnow
from opencs.store.repos.accounts import AccountRepo, PolicyRecord, UserRecord

MAX_KEYS_PER_USER = 2
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_POLICY_NAME = re.compile(r"^[A-Za-z0-9-]{1,128}$")


@dataclass(frozen=True)
class Principal:
    """The caller of a signed request."""

    access_key_id: str
    account_id: str
    user_id: str
    user_name: str
    is_owner: bool
    statements: tuple[Statement, ...]  # of the attached policies (empty for an owner)


def _numeric_id() -> str:
    return str(10**15 + secrets.randbelow(9 * 10**15))


def _check_name(name: str, what: str = "UserName") -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest(f"{what} {name!r} must be 1-64 characters of letters, digits, '.', '_', '@', '-'",
                         code=f"InvalidParameter.{what}.InvalidChars")


class AccountService:
    # a principal (its key's user and policies) is reused this long before the store is asked again;
    # changes made in this process take effect at once
    CACHE_SECONDS = 2.0

    def __init__(self, repo: AccountRepo, keys: KeyService) -> None:
        self.repo = repo
        self.keys = keys
        self._cache: dict[str, tuple[float, int, Principal | None]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def _changed(self) -> None:
        with self._lock:
            self._generation += 1

    # ------------------------------------------------------------------ accounts
    def create_account(self, name: str) -> tuple[str, str, str]:
        """(account_id, owner's access_key_id, its secret); the secret is shown once."""
        _check_name(name, "AccountName")
        account_id, owner_id = _numeric_id(), _numeric_id()
        if not self.repo.add_account(account_id, name, owner_id, "owner"):
            raise Conflict(f"account {name!r} exists already", code="EntityAlreadyExists.Account")
        ak, secret = self.keys.create(f"owner of account {name}", admin=True, user_id=owner_id)
        return account_id, ak, secret

    def accounts(self) -> builtins.list[tuple[str, str, datetime]]:
        return [(a.account_id, a.name, a.created) for a in self.repo.accounts()]

    # ------------------------------------------------------------------ who calls
    def principal(self, access_key_id: str) -> Principal | None:
        with contextlib.suppress(NotCached):
            return self.cached_principal(access_key_id)
        now = time.monotonic()
        gen = self._generation  # before the read: a change made meanwhile makes this entry stale
        owner = self.repo.key_owner(access_key_id)
        p = None
        if owner is not None:
            p = Principal(access_key_id, owner.account_id, owner.user_id, owner.user_name, owner.is_owner,
                          self._statements(owner.user_id, owner.is_owner))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[access_key_id] = (now, gen, p)
        return p

    def cached_principal(self, access_key_id: str) -> Principal | None:
        """`principal` from memory, for a caller on the event loop: raises NotCached when it is
        unknown, older than CACHE_SECONDS or from before a change made in this process."""
        hit = self._cache.get(access_key_id)
        if hit is None or hit[1] != self._generation or time.monotonic() - hit[0] >= self.CACHE_SECONDS:
            raise NotCached(access_key_id)
        return hit[2]

    def _statements(self, user_id: str, is_owner: bool) -> tuple[Statement, ...]:
        if is_owner:
            return ()
        return tuple(s for rec, _ in self.repo.user_policies(user_id) for s in parse_document(rec.document))

    def user_principal(self, rec: UserRecord) -> Principal:
        """The user as a caller without an AccessKey (a registry password login): its policies apply."""
        return Principal("", rec.account_id, rec.user_id, rec.user_name, rec.is_owner,
                         self._statements(rec.user_id, rec.is_owner))

    def principal_of_user(self, user_id: str) -> Principal | None:
        rec = self.repo.user_by_id(user_id)
        return self.user_principal(rec) if rec is not None else None

    # ------------------------------------------------------------------ users
    def create_user(self, account_id: str, user_name: str, display_name: str = "",
                    comments: str = "") -> UserRecord:
        _check_name(user_name)
        now = utcnow()
        rec = UserRecord(_numeric_id(), account_id, user_name, display_name or user_name, comments, False, now, now)
        if not self.repo.add_user(rec):
            raise Conflict(f"The user {user_name!r} already exists", code="EntityAlreadyExists.User")
        return rec

    def user(self, account_id: str, user_name: str) -> UserRecord:
        rec = self.repo.user(account_id, user_name) if isinstance(user_name, str) else None
        if rec is None:
            raise NotFound(f"The user does not exist: {user_name}", code="EntityNotExist.User")
        return rec

    def owner(self, account_id: str) -> UserRecord | None:
        return self.repo.owner(account_id)

    def users(self, account_id: str) -> builtins.list[UserRecord]:
        return self.repo.users(account_id)

    def delete_user(self, account_id: str, user_name: str) -> None:
        rec = self.user(account_id, user_name)
        if rec.is_owner:
            raise Conflict("The account owner cannot be deleted", code="DeleteConflict.User.Owner")
        if self.keys.list(rec.user_id):
            raise Conflict("The user has AccessKeys: delete them first", code="DeleteConflict.User.AccessKey")
        if self.repo.user_policies(rec.user_id):
            raise Conflict("The user has policies attached: detach them first", code="DeleteConflict.User.Policy")
        self.repo.delete_user(rec.user_id)
        self._changed()

    # ------------------------------------------------------------------ keys
    def create_key(self, account_id: str, user_name: str) -> tuple[KeyInfo, str]:
        rec = self.user(account_id, user_name)
        if len(self.keys.list(rec.user_id)) >= MAX_KEYS_PER_USER:
            raise Conflict(f"A user has at most {MAX_KEYS_PER_USER} AccessKeys", code="LimitExceeded.User.AccessKey")
        ak, secret = self.keys.create(f"user {user_name}", admin=rec.is_owner, user_id=rec.user_id)
        info = self.keys.get(ak)
        assert info is not None
        return info, secret

    def user_keys(self, account_id: str, user_name: str) -> builtins.list[KeyInfo]:
        return self.keys.list(self.user(account_id, user_name).user_id)

    def _user_key(self, account_id: str, user_name: str, access_key_id: str) -> KeyInfo:
        uid = self.user(account_id, user_name).user_id
        info = self.keys.get(access_key_id) if isinstance(access_key_id, str) else None
        if info is None or info.user_id != uid:
            raise NotFound(f"The AccessKey does not exist: {access_key_id}", code="EntityNotExist.User.AccessKey")
        return info

    def set_key_status(self, account_id: str, user_name: str, access_key_id: str, active: bool) -> KeyInfo:
        self._user_key(account_id, user_name, access_key_id)
        info = self.keys.set_status(access_key_id, "active" if active else "disabled")
        self._changed()
        return info

    def delete_key(self, account_id: str, user_name: str, access_key_id: str) -> None:
        self._user_key(account_id, user_name, access_key_id)
        self.keys.delete(access_key_id)
        self._changed()

    # ------------------------------------------------------------------ policies
    def create_policy(self, account_id: str, name: str, document: str, description: str = "") -> PolicyRecord:
        if not isinstance(name, str) or not _POLICY_NAME.match(name):
            raise BadRequest(f"PolicyName {name!r} must be 1-128 letters, digits or '-'",
                             code="InvalidParameter.PolicyName.InvalidChars")
        parse_document(document)
        now = utcnow()
        rec = PolicyRecord(account_id, name, description, document, now, now)
        if not self.repo.add_policy(rec):
            raise Conflict(f"The policy {name!r} already exists", code="EntityAlreadyExists.Policy")
        return rec

    def policy(self, account_id: str, name: str) -> PolicyRecord:
        rec = self.repo.policy(account_id, name) if isinstance(name, str) else None
        if rec is None:
            raise NotFound(f"The policy does not exist: {name}", code="EntityNotExist.Policy")
        return rec

    def policies(self, account_id: str) -> builtins.list[PolicyRecord]:
        return self.repo.policies(account_id)

    def delete_policy(self, account_id: str, name: str) -> None:
        if self.policy(account_id, name).attachments:
            raise Conflict("The policy is attached to users: detach it first", code="DeleteConflict.Policy.User")
        self.repo.delete_policy(account_id, name)
        self._changed()

    def attach(self, account_id: str, user_name: str, policy_name: str) -> None:
        self.policy(account_id, policy_name)
        if not self.repo.attach(account_id, self.user(account_id, user_name).user_id, policy_name):
            raise Conflict("The policy is attached to the user already", code="EntityAlreadyExists.User.Policy")
        self._changed()

    def detach(self, account_id: str, user_name: str, policy_name: str) -> None:
        self.policy(account_id, policy_name)
        if not self.repo.detach(self.user(account_id, user_name).user_id, policy_name):
            raise NotFound("The policy is not attached to the user", code="EntityNotExist.User.Policy")
        self._changed()

    def user_policies(self, account_id: str, user_name: str) -> builtins.list[tuple[PolicyRecord, datetime]]:
        return self.repo.user_policies(self.user(account_id, user_name).user_id)

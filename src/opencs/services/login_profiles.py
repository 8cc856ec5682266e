"""RAM login profiles (RAM 2015-05-01 CreateLoginProfile ... DeleteLoginProfile): a user's password
for the console, and the check of a sign-in with it.

The login name is Alibaba's RAM user logon name, `<UserName>@<account>`: the account by its name (the
alias RAM users sign in with, e.g. `dev@default`) or by its id (`dev@1000000000000001`); Alibaba's
default domain suffix (`dev@default.onaliyun.com`) is accepted too. Only an Argon2id hash of the
password is kept (opencs.services.passwords); it is never stored, logged or returned.

A console session signed in with a password holds a stamp of the hash it was checked against: a new
password (UpdateLoginProfile), a deleted profile or a deleted user ends it at its next request.
`PasswordResetRequired` makes the console ask for a new password before it opens a session. opencs
has no MFA devices, so `MFABindRequired=true` is refused instead of stored without effect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from opencs.errors import BadRequest, Conflict, NotFound
from opencs.services.accounts import AccountService, Principal
from opencs.services.passwords import PasswordHashes, check_password
from opencs.store.repos.accounts import UserRecord
from opencs.store.repos.login_profiles import LoginProfileRecord, LoginProfileRepo

DEFAULT_DOMAIN = ".onaliyun.com"


def stamp_of(rec: LoginProfileRecord) -> str:
    """What a session remembers of the password it was opened with (not the hash itself)."""
    return hashlib.sha256(rec.password_hash.encode()).hexdigest()[:32]


def flag(params: Mapping[str, str], name: str) -> bool | None:
    """A Boolean parameter as the SDKs send it (`true`/`false`; aliyun-python-sdk-core: `True`)."""
    v = params.get(name)
    if v is None or v == "":
        return None
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    raise BadRequest(f"{name} must be true or false", code=f"InvalidParameter.{name}")


@dataclass(frozen=True)
class SignIn:
    """The outcome of a password sign-in. `named` is the user the name matched, if any (without its
    policies: for the audit trail), `who` is set only when the password matched too."""

    who: Principal | None
    named: Principal | None
    stamp: str = ""
    reset_required: bool = False


class LoginProfiles:
    def __init__(self, repo: LoginProfileRepo, accounts: AccountService, hashes: PasswordHashes | None = None) -> None:
        self.repo = repo
        self.accounts = accounts
        self.hashes = hashes or PasswordHashes()

    # ------------------------------------------------------------------ the RAM actions
    def create(self, account_id: str, user_name: str, password: object, reset_required: bool | None,
               mfa_required: bool | None) -> tuple[UserRecord, LoginProfileRecord]:
        user = self.accounts.user(account_id, user_name)
        _no_mfa(mfa_required)
        digest = self.hashes.hash(check_password(password))
        if not self.repo.add(user.user_id, digest, bool(reset_required), False):
            raise Conflict(f"The login profile of user {user_name!r} exists already",
                           code="EntityAlreadyExists.User.LoginProfile")
        return user, self._profile(user)

    def get(self, account_id: str, user_name: str) -> tuple[UserRecord, LoginProfileRecord]:
        user = self.accounts.user(account_id, user_name)
        return user, self._profile(user)

    def update(self, account_id: str, user_name: str, password: object | None, reset_required: bool | None,
               mfa_required: bool | None) -> LoginProfileRecord:
        user = self.accounts.user(account_id, user_name)
        self._profile(user)
        _no_mfa(mfa_required)
        digest = self.hashes.hash(check_password(password)) if password is not None else None
        rec = self.repo.update(user.user_id, digest, reset_required, None)
        if rec is None:
            raise _no_profile(user_name)
        return rec

    def delete(self, account_id: str, user_name: str) -> None:
        user = self.accounts.user(account_id, user_name)
        if not self.repo.delete(user.user_id):
            raise _no_profile(user_name)

    def _profile(self, user: UserRecord) -> LoginProfileRecord:
        rec = self.repo.get(user.user_id)
        if rec is None:
            raise _no_profile(user.user_name)
        return rec

    # ------------------------------------------------------------------ signing in
    def sign_in(self, login: str, password: str) -> SignIn:
        """Check `<UserName>@<account>` and its password (a miss costs what a wrong password does)."""
        found = self._find(login)
        named = Principal("", found[0].account_id, found[0].user_id, found[0].user_name, found[0].is_owner, ()) \
            if found else None
        if not self.hashes.verify(found[1].password_hash if found else None, password) or found is None:
            return SignIn(None, named)
        user, rec = found
        self.repo.signed_in(user.user_id)
        return SignIn(self.accounts.user_principal(user), named, stamp_of(rec), rec.password_reset_required)

    def _find(self, login: str) -> tuple[UserRecord, LoginProfileRecord] | None:
        user, sep, account = login.strip().rpartition("@")
        if not sep or not user:
            return None
        return self.repo.find(account.removesuffix(DEFAULT_DOMAIN), user)

    def throttle_key(self, login: str) -> str:
        """One name for every way of writing a logon name (account by name, by id, with the domain), so
        that failures add up per user; it reads accounts only, so it says nothing about users."""
        user, sep, account = login.strip().lower().rpartition("@")
        if not sep:
            return login.strip().lower()
        return f"{user}@{self.repo.account_id(account.removesuffix(DEFAULT_DOMAIN)) or account}"

    def session_principal(self, user_id: str, stamp: str) -> Principal | None:
        """The user of a password session while its profile and password are those it was opened with."""
        found = self.repo.of_user(user_id)
        if found is None or stamp_of(found[1]) != stamp:
            return None
        return self.accounts.user_principal(found[0])

    def change_password(self, user_id: str, stamp: str, new_password: object) -> str:
        """The user's own new password (the console's reset at sign-in); the new stamp."""
        found = self.repo.of_user(user_id)
        if found is None or stamp_of(found[1]) != stamp:
            raise NotFound("The login profile changed meanwhile: sign in again",
                           code="EntityNotExist.User.LoginProfile")
        password = check_password(new_password, "The new password")
        if self.hashes.verify(found[1].password_hash, password):
            raise BadRequest("The new password must differ from the old one", code="InvalidParameter.Password.Reused")
        rec = self.repo.update(user_id, self.hashes.hash(password), False, None)
        if rec is None:
            raise _no_profile(found[0].user_name)
        return stamp_of(rec)


def _no_mfa(mfa_required: bool | None) -> None:
    if mfa_required:
        raise BadRequest("opencs has no MFA devices: MFABindRequired=true cannot be honoured",
                         code="InvalidParameter.MFABindRequired")


def _no_profile(user_name: str) -> NotFound:
    return NotFound(f"The login profile of user {user_name!r} does not exist", code="EntityNotExist.User.LoginProfile")

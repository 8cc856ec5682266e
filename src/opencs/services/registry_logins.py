"""Registry passwords: what a user sets for `docker login` besides its AccessKey (issue 10 item 4).

Alibaba's Container Registry lets a user set a password of its own for `docker login`
(CreateUserInfo/UpdateUserInfo, cr 2016-06-07, `{"User": {"Password": …}}`); the login name is the
user's: `<user>@<account>`, and for an account's owner its account name alone. Only an Argon2id hash
is kept (opencs.services.passwords, shared with the console's login profiles); the password is never
stored, logged or returned. A user deleted takes its password with it; disabling the user's
AccessKeys does not (as with Alibaba's registry password, which is independent of the keys).
"""

from __future__ import annotations

from opencs.errors import NotFound
from opencs.services.accounts import AccountService, Principal
from opencs.services.passwords import PasswordHashes, check_password
from opencs.store.repos.accounts import AccountRepo, UserRecord


class RegistryLogins:
    def __init__(self, repo: AccountRepo, accounts: AccountService, hashes: PasswordHashes | None = None) -> None:
        self.repo = repo
        self.accounts = accounts
        self.hashes = hashes or PasswordHashes()

    def login_name(self, who: Principal) -> str:
        account = self.repo.account_name(who.account_id) or who.account_id
        return f"{who.user_name}@{account}"

    def set_password(self, who: Principal, password: object) -> str:
        """Set (or replace) the caller's registry password; its login name."""
        digest = self.hashes.hash(check_password(password, "User.Password"))
        if not self.repo.set_registry_password(who.user_id, digest):
            raise NotFound("The user does not exist", code="EntityNotExist.User")
        return self.login_name(who)

    def verify(self, login: str, password: str) -> Principal | None:
        """The user logging in with `<user>@<account>` (or an owner's `<account>`) and its password."""
        user, sep, account = login.rpartition("@")
        found = self.repo.registry_login(account, user) if sep else None
        if found is None and not sep:
            found = self._owner_login(login)
        if not self.hashes.verify(found[1] if found else None, password):
            return None
        return self.accounts.user_principal(found[0]) if found else None

    def _owner_login(self, account_name: str) -> tuple[UserRecord, str] | None:
        for account_id, name, _ in self.accounts.accounts():
            if name == account_name:
                owner = self.accounts.owner(account_id)
                return self.repo.registry_login(account_name, owner.user_name) if owner else None
        return None

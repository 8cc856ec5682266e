"""Registry passwords: what a user sets for `docker login` besides its AccessKey (issue 10 item 4).

Alibaba's Container Registry lets a user set a password of its own for `docker login`
(CreateUserInfo/UpdateUserInfo, cr 2016-06-07, `{"User": {"Password": …}}`); the login name is the
user's: `<user>@<account>`, and for an account's owner its account name alone. Only an Argon2id hash
(argon2-cffi, its RFC 9106 low-memory profile) is kept; the password is never stored, logged or
returned. A user deleted takes its password with it; disabling the user's AccessKeys does not
(as with Alibaba's registry password, which is independent of the keys).
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from opencs.errors import BadRequest, NotFound
from opencs.services.accounts import AccountService, Principal
from opencs.store.repos.accounts import AccountRepo, UserRecord

MIN_LENGTH, MAX_LENGTH = 8, 32
# the same rule as a JSON-schema pattern (the OpenAPI document; check_password is what enforces it)
PATTERN = r"^(?![a-z]+$)(?![A-Z]+$)(?![0-9]+$)(?![^a-zA-Z0-9]+$)[!-~]{8,32}$"
_KINDS = (str.islower, str.isupper, str.isdigit)


def check_password(password: object) -> str:
    """Alibaba's rule for registry passwords: 8-32 printable ASCII characters, of at least two kinds
    (lower case, upper case, digits, other characters)."""
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise BadRequest(f"User.Password must be {MIN_LENGTH}-{MAX_LENGTH} characters",
                         code="InvalidParameter.Password.Length")
    if not all(" " < c <= "~" for c in password):
        raise BadRequest("User.Password must be printable ASCII without spaces",
                         code="InvalidParameter.Password.InvalidChars")
    kinds = sum(any(k(c) for c in password) for k in _KINDS) + any(not c.isalnum() for c in password)
    if kinds < 2:
        raise BadRequest("User.Password needs at least two of: lower case, upper case, digits, other characters",
                         code="InvalidParameter.Password.TooWeak")
    return password


class RegistryLogins:
    def __init__(self, repo: AccountRepo, accounts: AccountService, hasher: PasswordHasher | None = None) -> None:
        self.repo = repo
        self.accounts = accounts
        self.hasher = hasher or PasswordHasher()
        self._decoy_hash = ""

    @property
    def _decoy(self) -> str:
        """Verified when the login name is unknown, so that a miss costs what a wrong password does
        (made on first use: hashing is deliberately slow)."""
        if not self._decoy_hash:
            self._decoy_hash = self.hasher.hash("opencs-no-such-login")
        return self._decoy_hash

    def login_name(self, who: Principal) -> str:
        account = self.repo.account_name(who.account_id) or who.account_id
        return f"{who.user_name}@{account}"

    def set_password(self, who: Principal, password: object) -> str:
        """Set (or replace) the caller's registry password; its login name."""
        digest = self.hasher.hash(check_password(password))
        if not self.repo.set_registry_password(who.user_id, digest):
            raise NotFound("The user does not exist", code="EntityNotExist.User")
        return self.login_name(who)

    def verify(self, login: str, password: str) -> Principal | None:
        """The user logging in with `<user>@<account>` (or an owner's `<account>`) and its password."""
        user, sep, account = login.rpartition("@")
        found = self.repo.registry_login(account, user) if sep else None
        if found is None and not sep:
            found = self._owner_login(login)
        try:
            self.hasher.verify(found[1] if found else self._decoy, password)
        except (VerificationError, InvalidHashError):
            return None
        return self.accounts.user_principal(found[0]) if found else None

    def _owner_login(self, account_name: str) -> tuple[UserRecord, str] | None:
        for account_id, name, _ in self.accounts.accounts():
            if name == account_name:
                owner = self.accounts.owner(account_id)
                return self.repo.registry_login(account_name, owner.user_name) if owner else None
        return None

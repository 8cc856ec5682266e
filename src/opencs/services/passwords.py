"""Passwords users set — for `docker login` (registry passwords) and for the console (RAM login
profiles): Alibaba's strength rule and Argon2id hashes (argon2-cffi, its RFC 9106 low-memory profile).

Only the hash is kept; a password is never stored, logged or returned. `verify` of an unknown login
checks a decoy hash, so that a miss costs what a wrong password does (no user enumeration by time).
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from opencs.errors import BadRequest

MIN_LENGTH, MAX_LENGTH = 8, 32
# the same rule as a JSON-schema pattern (the OpenAPI document; check_password is what enforces it)
PATTERN = r"^(?![a-z]+$)(?![A-Z]+$)(?![0-9]+$)(?![^a-zA-Z0-9]+$)[!-~]{8,32}$"
_KINDS = (str.islower, str.isupper, str.isdigit)


def check_password(password: object, field: str = "Password") -> str:
    """Alibaba's rule: 8-32 printable ASCII characters, of at least two kinds (lower case, upper case,
    digits, other characters). `field` names the parameter in the message."""
    if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise BadRequest(f"{field} must be {MIN_LENGTH}-{MAX_LENGTH} characters",
                         code="InvalidParameter.Password.Length")
    if not all(" " < c <= "~" for c in password):
        raise BadRequest(f"{field} must be printable ASCII without spaces",
                         code="InvalidParameter.Password.InvalidChars")
    kinds = sum(any(k(c) for c in password) for k in _KINDS) + any(not c.isalnum() for c in password)
    if kinds < 2:
        raise BadRequest(f"{field} needs at least two of: lower case, upper case, digits, other characters",
                         code="InvalidParameter.Password.TooWeak")
    return password


class PasswordHashes:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._decoy_hash = ""

    @property
    def _decoy(self) -> str:
        """Made on first use: hashing is deliberately slow."""
        if not self._decoy_hash:
            self._decoy_hash = self.hasher.hash("opencs-no-such-login")
        return self._decoy_hash

    def hash(self, password: str) -> str:
        return self.hasher.hash(password)

    def verify(self, digest: str | None, password: str) -> bool:
        """Whether `password` matches `digest`; None (no such login) verifies the decoy and is False."""
        try:
            self.hasher.verify(digest or self._decoy, password)
        except (VerificationError, InvalidHashError):
            return False
        return digest is not None

"""Docker token authentication for the bundled registry: the key that signs its bearer tokens.

distribution (`auth: token:`) trusts a JWT whose `x5c` header holds a certificate found in its
`rootcertbundle`; the token says who (`sub`) may do what (`access`: repository, actions) for a few
minutes. The key is an EC P-256 key with a self-signed certificate, both in the registry's data dir
(the key 0600), so every process of a data dir signs with the same key and a restart keeps tokens
valid. Signing is PyJWT's (ES256), the certificate `cryptography`'s.
"""

from __future__ import annotations

import base64
import datetime as _dt
import os
import re
import secrets
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVICE = "opencs-registry"  # the token's audience, the registry's `service`
ISSUER = "opencs"
TOKEN_SECONDS = 300


@dataclass(frozen=True)
class Access:
    """One grant of a token: `repository:<name>:<actions>` as the Docker token spec writes it."""

    name: str
    actions: tuple[str, ...]
    type: str = "repository"

    def claim(self) -> dict[str, object]:
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


@dataclass(frozen=True)
class TokenAuthConfig:
    """The registry config's `auth: token:` section."""

    realm: str
    rootcertbundle: Path
    service: str = SERVICE
    issuer: str = ISSUER

    def render(self) -> dict[str, object]:
        return {"token": {"realm": self.realm, "service": self.service, "issuer": self.issuer,
                          "rootcertbundle": str(self.rootcertbundle)}}


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class TokenSigner:
    """Signs the registry's bearer tokens; `cert_path` is the registry's rootcertbundle."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key_path = directory / "token-signing.key"
        self.cert_path = directory / "token-signing.crt"
        self._lock = threading.Lock()
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._x5c: str = ""

    def _load(self) -> ec.EllipticCurvePrivateKey:
        with self._lock:
            if self._key is None:
                if not self.key_path.exists() or not self.cert_path.exists():
                    self._generate()
                key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise ValueError(f"{self.key_path} is not an EC key")
                cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
                self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
                self._key = key
            return self._key

    def _generate(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "opencs registry token signer")])
        now = _dt.datetime.now(_dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(days=1))
                .not_valid_after(now + _dt.timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        _write_private(self.key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        _write_private(self.cert_path, cert.public_bytes(serialization.Encoding.PEM))

    def ensure(self) -> Path:
        """Make the key and certificate if there are none; the certificate's path."""
        self._load()
        return self.cert_path

    def issue(self, subject: str, access: Sequence[Access], seconds: int = TOKEN_SECONDS) -> str:
        key = self._load()
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "iat": now, "nbf": now - 10,
                  "exp": now + seconds, "jti": secrets.token_hex(16), "access": [a.claim() for a in access]}
        return jwt.encode(claims, key, algorithm="ES256", headers={"x5c": [self._x5c]})


_REPO_PATH = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags)/")


class RegistryBearer(httpx.Auth):
    """httpx auth of opencs's own pushes (seeding library/* and opencs/*): a token for the request's
    repository, signed locally (no round trip to the realm)."""

    def __init__(self, signer: TokenSigner, subject: str = "opencs") -> None:
        self.signer = signer
        self.subject = subject

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        m = _REPO_PATH.match(request.url.path)
        if m:
            token = self.signer.issue(self.subject, [Access(m.group(1), ("pull", "push"))], seconds=120)
            request.headers["Authorization"] = f"Bearer {token}"
        yield request

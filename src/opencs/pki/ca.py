"""Per-cluster certificate authority (real X.509 via `cryptography`, no openssl subprocess).

Each cluster has its own CA. The CA signs:
  * server certs for the cluster's engines (tcp://NODE_IP:2376) and its Application API endpoint;
  * client certs handed to users by `GET /clusters/{id}/certs`.

Key types: ECDSA P-256 generation takes ~0.05 ms versus ~50 ms (and up to ~100 ms on a busy
2-core box) for RSA-2048, so the CA and server certs default to EC P-256 — Docker engines (Go TLS),
the Docker CLI and Python's `ssl` all accept it. The user's client key defaults to RSA-2048 in
PKCS#1 ("BEGIN RSA PRIVATE KEY") because that is what the API spec shows clients receiving.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]

# Backdate notBefore so a node whose clock is slightly behind the control plane still accepts
# a certificate issued "now".
_CLOCK_SKEW = _dt.timedelta(minutes=5)

_PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class IssuedCert:
    """A leaf certificate and its private key, both PEM text."""

    cert_pem: str
    key_pem: str


def _new_key(key_type: KeyType) -> _PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r}")


def _key_to_pem(key: _PrivateKey) -> str:
    # TraditionalOpenSSL: "RSA PRIVATE KEY" (PKCS#1) / "EC PRIVATE KEY" (SEC1). Both are
    # accepted by Go's tls.X509KeyPair, the Docker CLI and Python's ssl.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")


def _cert_to_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _name(common_name: str, org_unit: str = "", uid: str = "", orgs: Sequence[str] = ("opencs",)) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    if org_unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, org_unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    if uid:
        attrs.append(x509.NameAttribute(NameOID.USER_ID, uid))
    return x509.Name(attrs)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def load_cert(cert_pem: str) -> x509.Certificate:
    """Parse the first certificate of a PEM string."""
    return x509.load_pem_x509_certificate(cert_pem.encode("ascii"))


def _key_usage(*, cert_sign: bool, key_encipherment: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class CertAuthority:
    """A cluster CA: its self-signed certificate and private key (PEM text, store them as-is)."""

    cert_pem: str
    key_pem: str

    @classmethod
    def create(cls, common_name: str, days: int = 3650, key_type: KeyType = "ec") -> CertAuthority:
        key = _new_key(key_type)
        name = _name(common_name)
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(now + _dt.timedelta(days=days))
            # path_length=0: this CA only signs leaves, never intermediate CAs.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True, key_encipherment=False), critical=True)
            .add_extension(ski, critical=False)
            # AKI on the root too: OpenSSL 3 / Python 3.13 strict verification wants it.
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert_pem=_cert_to_pem(cert), key_pem=_key_to_pem(key))

    # -- issuing --------------------------------------------------------------------------------

    def _private_key(self) -> _PrivateKey:
        key = serialization.load_pem_private_key(self.key_pem.encode("ascii"), password=None)
        if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            raise TypeError(f"unsupported CA key type {type(key).__name__}")
        return key

    def _issue(
        self,
        subject: x509.Name,
        lifetime: _dt.timedelta,
        key_type: KeyType,
        eku: x509.ObjectIdentifier,
        san: list[x509.GeneralName],
    ) -> IssuedCert:
        ca_cert = load_cert(self.cert_pem)
        ca_key = self._private_key()
        key = _new_key(key_type)
        now = _now()
        # Never outlive the CA: verifiers would reject the leaf after the CA expires anyway.
        not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _CLOCK_SKEW)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            # keyEncipherment only matters for RSA key exchange (TLS 1.2 RSA kx).
            .add_extension(_key_usage(cert_sign=False, key_encipherment=key_type == "rsa"), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return IssuedCert(cert_pem=_cert_to_pem(cert), key_pem=_key_to_pem(key))

    def issue_server(
        self,
        common_name: str,
        ips: Iterable[str] = (),
        dns_names: Iterable[str] = (),
        days: int = 825,
        key_type: KeyType = "ec",
    ) -> IssuedCert:
        """Server cert (serverAuth) for an engine or API endpoint.

        127.0.0.1 and "localhost" are always added so the control plane can reach a node
        through a local tunnel/port-forward with hostname verification still on.
        """
        ip_list: list[str] = []
        for ip in [*ips, "127.0.0.1"]:
            norm = str(ipaddress.ip_address(ip))  # raises ValueError on garbage
            if norm not in ip_list:
                ip_list.append(norm)
        dns_list: list[str] = []
        for dns in [*dns_names, "localhost"]:
            if dns and dns not in dns_list:
                dns_list.append(dns)
        san: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_list]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_list]
        return self._issue(_name(common_name), _dt.timedelta(days=days), key_type, ExtendedKeyUsageOID.SERVER_AUTH,
                           san)

    def issue_client(self, common_name: str, days: int = 825, rsa: bool = True, *,
                     lifetime: _dt.timedelta | None = None, org_unit: str = "", uid: str = "",
                     orgs: Sequence[str] = ("opencs",)) -> IssuedCert:
        """Client cert (clientAuth). RSA-2048/PKCS#1 by default: the user-facing format. `org_unit` and
        `uid` name the holder beyond the CN (a user's certificate: its account and AccessKey); `orgs`
        are its O attributes (Kubernetes reads them as the user's groups)."""
        return self._issue(_name(common_name, org_unit, uid, orgs), lifetime or _dt.timedelta(days=days),
                           "rsa" if rsa else "ec", ExtendedKeyUsageOID.CLIENT_AUTH, [])

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert_pem)


def verify_chain(cert_pem: str, ca_pem: str, at: _dt.datetime | None = None) -> bool:
    """True if `cert_pem` was signed by `ca_pem`'s key and both are within their validity window.

    Malformed input returns False rather than raising: callers use this as a yes/no check.
    """
    try:
        cert = load_cert(cert_pem)
        ca = load_cert(ca_pem)
    except ValueError:
        return False
    when = at or _now()
    for c in (cert, ca):
        if not (c.not_valid_before_utc <= when <= c.not_valid_after_utc):
            return False
    try:
        # Checks issuer name == CA subject and the signature.
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def fingerprint(cert_pem: str) -> str:
    """SHA-256 of the DER certificate, lowercase hex without separators."""
    return load_cert(cert_pem).fingerprint(hashes.SHA256()).hex()


def spki_pin(cert_pem: str) -> str:
    """base64 SHA-256 of the certificate's public key (SubjectPublicKeyInfo): curl's --pinnedpubkey."""
    import base64

    spki = load_cert(cert_pem).public_key().public_bytes(serialization.Encoding.DER,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(spki)
    return base64.b64encode(digest.finalize()).decode()


def serial_hex(cert_pem: str) -> str:
    """The serial number as lowercase hex without leading zeros (how the store keys certificates)."""
    return format(load_cert(cert_pem).serial_number, "x")


def not_after(cert_pem: str) -> _dt.datetime:
    """Expiry (UTC) — for deciding when to re-issue."""
    return load_cert(cert_pem).not_valid_after_utc

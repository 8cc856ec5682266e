"""A Kubernetes cluster's PKI: its CA (opencs.pki.CertAuthority), service-account keys and the
certificates of every component, each with the identity Kubernetes' authorizers expect.

Kubernetes reads a client certificate's subject as the user (CN) and its groups (O), so components
get e.g. CN=system:node:<name>, O=system:nodes (the Node authorizer) or CN=system:kube-scheduler
(bound by the default RBAC policy); the opencs CA's own leaves carry O=opencs and cannot serve.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opencs.pki import CertAuthority, IssuedCert, load_cert

CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER = ExtendedKeyUsageOID.SERVER_AUTH
_SKEW = _dt.timedelta(minutes=5)  # a node whose clock is a little behind still accepts "now"
FRONT_PROXY_CLIENT = "front-proxy-client"  # the one name --requestheader-allowed-names admits


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _pem_pub(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def issue(
    ca: CertAuthority,
    user: str,
    groups: Sequence[str] = (),
    usages: Sequence[x509.ObjectIdentifier] = (CLIENT,),
    ips: Iterable[str] = (),
    dns_names: Iterable[str] = (),
    days: int = 365,
    minutes: int | None = None,
) -> IssuedCert:
    """A leaf signed by the cluster CA: subject CN=user, one O per group, EC P-256 key."""
    ca_cert = load_cert(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode("ascii"), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the cluster CA must have an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _dt.datetime.now(_dt.UTC)
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        + [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(min(now + (_dt.timedelta(minutes=minutes) if minutes else _dt.timedelta(days=days)),
                             ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    san: list[x509.GeneralName] = [x509.DNSName(d) for d in dict.fromkeys(dns_names) if d]
    san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ips)]
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return IssuedCert(cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), _pem_key(key))


def _derived_key(ca_key_pem: str, info: bytes) -> ec.EllipticCurvePrivateKey:
    """A P-256 key derived from the cluster CA's key (HKDF): the same on every master, every restart."""
    secret = serialization.load_pem_private_key(ca_key_pem.encode("ascii"), password=None)
    der = secret.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    okm = HKDF(algorithm=hashes.SHA256(), length=48, salt=None, info=info).derive(der)
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # of P-256
    return ec.derive_private_key(int.from_bytes(okm, "big") % (order - 1) + 1, ec.SECP256R1())


@dataclass(frozen=True)
class ClusterPKI:
    """What a cluster keeps for its life (store it as-is): the CA and the service-account key pair.
    Every other certificate is issued from these when a component is started."""

    ca: CertAuthority
    sa_key_pem: str
    sa_pub_pem: str

    @classmethod
    def create(cls, cluster_id: str) -> ClusterPKI:
        sa = ec.generate_private_key(ec.SECP256R1())
        return cls(CertAuthority.create(f"kubernetes-{cluster_id}"), _pem_key(sa), _pem_pub(sa))

    @classmethod
    def from_ca(cls, ca_cert_pem: str, ca_key_pem: str) -> ClusterPKI:
        """The PKI of a cluster whose store keeps only its CA: the service-account key is derived
        from the CA key (HKDF), so every master and every restart signs tokens with the same key."""
        sa = _derived_key(ca_key_pem, b"opencs kubernetes service-account key")
        return cls(CertAuthority(cert_pem=ca_cert_pem, key_pem=ca_key_pem), _pem_key(sa), _pem_pub(sa))

    def etcd_ca(self) -> CertAuthority:
        """etcd's own CA (kubeadm keeps one too): a client certificate of the cluster CA — which users
        get — must not open the datastore. Derived from the cluster CA's key, with a fixed serial and
        the cluster CA's validity, so every master (and a re-run after a crash) gets the same CA."""
        return self._derived_ca(b"opencs kubernetes etcd ca", "etcd-ca")

    def _derived_ca(self, info: bytes, common_name: str, serial_offset: int = 0) -> CertAuthority:
        key = _derived_key(self.ca.key_pem, info)
        parent = load_cert(self.ca.cert_pem)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number((int.from_bytes(parent.fingerprint(hashes.SHA256())[:16], "big") >> 1) + serial_offset)
            .not_valid_before(parent.not_valid_before_utc).not_valid_after(parent.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return CertAuthority(cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode("ascii"),
                             key_pem=_pem_key(key))

    def front_proxy_ca(self) -> CertAuthority:
        """The CA the apiserver trusts for front-proxy requests (`--requestheader-client-ca-file`):
        opencs's kubeconfig endpoint authenticates to the apiserver with a leaf of it and names the
        user in X-Remote-User. A CA of its own (kubeadm's front-proxy-ca), derived like etcd's, so
        that no user certificate of the cluster CA can pass for the proxy."""
        return self._derived_ca(b"opencs kubernetes front-proxy ca", "front-proxy-ca", 1)

    def front_proxy_client(self) -> IssuedCert:
        return issue(self.front_proxy_ca(), FRONT_PROXY_CLIENT)

    def etcd_member(self, name: str, ip: str) -> IssuedCert:
        """One etcd member's certificate: serves clients and peers, and is a client of its peers."""
        return issue(self.etcd_ca(), name, usages=(SERVER, CLIENT), ips=[ip, "127.0.0.1"],
                     dns_names=[name, "localhost"])

    def etcd_client(self, user: str) -> IssuedCert:
        return issue(self.etcd_ca(), user)

    def apiserver(self, ips: Iterable[str], service_ip: str, dns_domain: str = "cluster.local") -> IssuedCert:
        names = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{dns_domain}"]
        return issue(
            self.ca, "kube-apiserver", usages=(SERVER,), ips=[*ips, service_ip, "127.0.0.1"],
            dns_names=[*names, "localhost"],
        )  # fmt: skip

    def client(self, user: str, groups: Sequence[str] = (), minutes: int | None = None) -> IssuedCert:
        return issue(self.ca, user, groups, minutes=minutes)

    def admin(self, user: str = "kubernetes-admin") -> IssuedCert:
        return issue(self.ca, user, ["system:masters"])

    def kubelet_client(self, node_name: str) -> IssuedCert:
        return issue(self.ca, f"system:node:{node_name}", ["system:nodes"])

    def kubelet_serving(self, node_name: str, node_ip: str) -> IssuedCert:
        return issue(
            self.ca, f"system:node:{node_name}", ["system:nodes"], usages=(SERVER,), ips=[node_ip],
            dns_names=[node_name],
        )  # fmt: skip

"""Fixtures for real local nodes: a test-only prefix/bridge/subnet so a running server never collides."""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from opencs.engines.swarm.node import DockerEngine
from opencs.providers.base import Instance, InstanceSpec, ProviderUnavailable, TLSMaterial
from opencs.providers.local import LocalProvider, local_provider_leftovers

TEST_PREFIX = "oct"
TEST_BRIDGE = "oct0"
TEST_SUBNET = "10.214.0.0/24"


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "local provider tests need root (netns, cgroups, dockerd)"
    if shutil.which("dockerd") is None:
        return "local provider tests need dockerd on PATH"
    try:
        LocalProvider(Path("/nonexistent"), TEST_BRIDGE, TEST_SUBNET, TEST_PREFIX).check()
    except ProviderUnavailable as e:
        return str(e)
    return None


@pytest.fixture(scope="session")
def local_host() -> None:
    if reason := _skip_reason():
        pytest.skip(reason)


def make_provider(root: Path) -> LocalProvider:
    return LocalProvider(root, bridge=TEST_BRIDGE, subnet=TEST_SUBNET, prefix=TEST_PREFIX, stop_grace=5.0,
                         runtime=DockerEngine())


def wait_clean(root: Path, timeout: float = 3.0) -> list[str]:
    """Leftovers after teardown; the kernel frees a netns' veth asynchronously, so poll briefly."""
    deadline = time.monotonic() + timeout
    while (left := local_provider_leftovers(TEST_PREFIX, TEST_BRIDGE, root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.fixture(scope="module")
def provider(local_host: None, tmp_path_factory: pytest.TempPathFactory) -> LocalProvider:
    return make_provider(tmp_path_factory.mktemp("lp"))


@dataclass
class Nodes:
    """Creates nodes for one test and remembers their ids for teardown."""

    provider: LocalProvider
    ids: list[str]

    def create(self, spec: InstanceSpec | None = None) -> Instance:
        inst = self.provider.create(spec or InstanceSpec())
        self.ids.append(inst.instance_id)
        return inst


@pytest.fixture
def nodes(provider: LocalProvider) -> Iterator[Nodes]:
    n = Nodes(provider, [])
    yield n
    # by id, even when the test failed; plus anything a test made through another provider object
    errors = []
    for iid in n.ids + [i.instance_id for i in provider.list()]:
        try:
            provider.destroy(iid)
        except Exception as e:  # keep tearing down the others
            errors.append(f"{iid}: {e!r}")
    assert not errors, errors
    assert wait_clean(provider.root_dir) == []


# --- TLS material ------------------------------------------------------------------------------------


@dataclass
class CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def make_ca(cn: str = "opencs-test-ca") -> CA:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return CA(key, cert)


def issue(ca: CA, cn: str, *, server: bool, ips: tuple[str, ...] = ()) -> TLSMaterial:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        sans: list[x509.GeneralName] = [x509.DNSName(cn)]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca.key, hashes.SHA256())
    return TLSMaterial(ca.pem, cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def write_client_files(tls: TLSMaterial, d: Path) -> tuple[str, str, str]:
    """(ca, cert, key) paths for a docker client."""
    d.mkdir(parents=True, exist_ok=True)
    paths = (d / "ca.pem", d / "cert.pem", d / "key.pem")
    for p, text in zip(paths, (tls.ca_pem, tls.cert_pem, tls.key_pem), strict=True):
        p.write_text(text)
    paths[2].chmod(0o600)
    return str(paths[0]), str(paths[1]), str(paths[2])


# --- a tiny image without any registry ---------------------------------------------------------------


def busybox_rootfs_tar() -> bytes | None:
    """A rootfs tar with the host's static busybox (`docker import` input), or None if unavailable."""
    bb = Path("/bin/busybox")
    if not bb.exists() or b"ld-linux" in bb.read_bytes()[:4096]:
        return None
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(bb, arcname="bin/busybox")
        for applet in ("sh", "sleep", "cat"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    return buf.getvalue()

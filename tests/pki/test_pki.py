from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from opencs.pki import CertAuthority, IssuedCert, fingerprint, load_cert, not_after, verify_chain


@pytest.fixture(scope="module")
def ca1() -> CertAuthority:
    return CertAuthority.create("cluster-1")


@pytest.fixture(scope="module")
def ca2() -> CertAuthority:
    return CertAuthority.create("cluster-2")


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.ExtensionType:
    return cert.extensions.get_extension_for_class(cls).value


def test_ca_certificate(ca1: CertAuthority) -> None:
    cert = load_cert(ca1.cert_pem)
    bc = _ext(cert, x509.BasicConstraints)
    assert isinstance(bc, x509.BasicConstraints) and bc.ca
    assert cert.issuer == cert.subject
    assert verify_chain(ca1.cert_pem, ca1.cert_pem)  # self-signed
    assert ca1.key_pem.startswith("-----BEGIN EC PRIVATE KEY-----")


def test_server_cert_chain_and_sans(ca1: CertAuthority) -> None:
    issued = ca1.issue_server("node-1", ips=["10.213.0.5"], dns_names=["node-1.opencs"])
    assert verify_chain(issued.cert_pem, ca1.cert_pem)
    cert = load_cert(issued.cert_pem)
    san = _ext(cert, x509.SubjectAlternativeName)
    assert isinstance(san, x509.SubjectAlternativeName)
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.213.0.5"),
        ipaddress.ip_address("127.0.0.1"),
    }
    assert set(san.get_values_for_type(x509.DNSName)) == {"node-1.opencs", "localhost"}
    eku = _ext(cert, x509.ExtendedKeyUsage)
    assert isinstance(eku, x509.ExtendedKeyUsage)
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert not_after(issued.cert_pem) <= not_after(ca1.cert_pem)


def test_client_cert_is_rsa_pkcs1(ca1: CertAuthority) -> None:
    issued = ca1.issue_client("user-42")
    assert issued.key_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    cert = load_cert(issued.cert_pem)
    pub = cert.public_key()
    assert isinstance(pub, rsa.RSAPublicKey) and pub.key_size == 2048
    eku = _ext(cert, x509.ExtendedKeyUsage)
    assert isinstance(eku, x509.ExtendedKeyUsage)
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert verify_chain(issued.cert_pem, ca1.cert_pem)

    ec_client = ca1.issue_client("user-ec", rsa=False)
    assert ec_client.key_pem.startswith("-----BEGIN EC PRIVATE KEY-----")
    assert verify_chain(ec_client.cert_pem, ca1.cert_pem)


def test_cert_from_other_ca_fails(ca1: CertAuthority, ca2: CertAuthority) -> None:
    other = ca2.issue_server("node-x", ips=["10.0.0.1"])
    assert verify_chain(other.cert_pem, ca2.cert_pem)
    assert not verify_chain(other.cert_pem, ca1.cert_pem)
    # Same subject name, different key: only the signature check can tell them apart.
    impostor = CertAuthority.create("cluster-1")
    assert not verify_chain(impostor.issue_client("u").cert_pem, ca1.cert_pem)


def test_validity_window_and_garbage(ca1: CertAuthority) -> None:
    issued = ca1.issue_server("node-1", days=1)
    now = dt.datetime.now(dt.UTC)
    assert verify_chain(issued.cert_pem, ca1.cert_pem, at=now)
    assert not verify_chain(issued.cert_pem, ca1.cert_pem, at=now + dt.timedelta(days=2))
    assert not verify_chain(issued.cert_pem, ca1.cert_pem, at=now - dt.timedelta(days=1))
    assert not verify_chain("not a cert", ca1.cert_pem)
    assert not verify_chain(issued.cert_pem, "")


def test_fingerprint(ca1: CertAuthority, ca2: CertAuthority) -> None:
    fp = fingerprint(ca1.cert_pem)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert fp == ca1.fingerprint
    assert fp != fingerprint(ca2.cert_pem)


def test_rsa_ca_works() -> None:
    ca = CertAuthority.create("rsa-ca", key_type="rsa")
    assert ca.key_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert verify_chain(ca.issue_server("n", ips=["10.1.1.1"]).cert_pem, ca.cert_pem)


# -- real TLS handshake ---------------------------------------------------------------------------


def _write(tmp: Path, name: str, issued: IssuedCert) -> tuple[str, str]:
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert.write_text(issued.cert_pem)
    key.write_text(issued.key_pem)
    return str(cert), str(key)


class _TLSServer:
    """Accepts connections on 127.0.0.1, requires a client cert from `ca`, answers b"ok"."""

    def __init__(self, ca: CertAuthority, tmp: Path, max_version: ssl.TLSVersion) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.maximum_version = max_version
        self.ctx.load_cert_chain(*_write(tmp, "server", ca.issue_server("api", ips=["127.0.0.1"])))
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(cadata=ca.cert_pem)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.results: list[str] = []  # "ok" or the server-side error per connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(4)
                    tls.sendall(b"ok")
                    self.results.append("ok")
            except (ssl.SSLError, OSError) as e:
                self.results.append(f"refused: {e}")
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(params=[ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def tls_server(request: pytest.FixtureRequest, ca1: CertAuthority, tmp_path: Path) -> Iterator[_TLSServer]:
    server = _TLSServer(ca1, tmp_path, request.param)
    try:
        yield server
    finally:
        server.close()


def _client_exchange(
    port: int, server_ca: CertAuthority, client: IssuedCert | None, tmp: Path
) -> bytes | Exception:
    ctx = ssl.create_default_context(cadata=server_ca.cert_pem)  # hostname check on the SAN IP
    if client is not None:
        ctx.load_cert_chain(*_write(tmp, "client", client))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"ping")
            return tls.recv(2)
    except (ssl.SSLError, OSError) as e:  # TLS 1.3 reports a refused client cert at first read
        return e


def _wait_results(server: _TLSServer, n: int) -> list[str]:
    for _ in range(100):
        if len(server.results) >= n:
            break
        threading.Event().wait(0.05)
    return server.results


def test_tls_client_cert_from_same_ca_accepted(
    tls_server: _TLSServer, ca1: CertAuthority, tmp_path: Path
) -> None:
    for client in (ca1.issue_client("user"), ca1.issue_client("user-ec", rsa=False)):
        assert _client_exchange(tls_server.port, ca1, client, tmp_path) == b"ok"
    assert _wait_results(tls_server, 2) == ["ok", "ok"]


def test_tls_client_cert_from_other_ca_refused(
    tls_server: _TLSServer, ca1: CertAuthority, ca2: CertAuthority, tmp_path: Path
) -> None:
    result = _client_exchange(tls_server.port, ca1, ca2.issue_client("intruder"), tmp_path)
    assert result != b"ok"
    results = _wait_results(tls_server, 1)
    assert len(results) == 1 and "CERTIFICATE_VERIFY_FAILED" in results[0]


def test_tls_without_client_cert_refused(tls_server: _TLSServer, ca1: CertAuthority, tmp_path: Path) -> None:
    result = _client_exchange(tls_server.port, ca1, None, tmp_path)
    assert result != b"ok"
    results = _wait_results(tls_server, 1)
    assert len(results) == 1 and "PEER_DID_NOT_RETURN_A_CERTIFICATE" in results[0]


def test_tls_client_rejects_server_from_other_ca(
    tls_server: _TLSServer, ca1: CertAuthority, ca2: CertAuthority, tmp_path: Path
) -> None:
    # The client trusts CA2 only, so CA1's server cert must fail on the client side.
    result = _client_exchange(tls_server.port, ca2, ca2.issue_client("u"), tmp_path)
    assert isinstance(result, ssl.SSLCertVerificationError)
